//! Reply side: ReplyScanner / reply_len / parse_reply agree on every input; a scanner fed the
//! same bytes in two chunks (as a backend socket would deliver them) gives the same result.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustproxy::resp::{self, ReplyScanner};

fuzz_target!(|input: &[u8]| {
    // First byte chooses the split point; the rest is the backend stream.
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let len = resp::reply_len(data);
    if let Ok(Some(n)) = len {
        assert!(n >= 3 && n <= data.len(), "n={n}");
    }
    let parsed = resp::parse_reply(data);
    assert_eq!(
        parsed.as_ref().map(|o| o.as_ref().map(|(_, n)| *n)),
        len.as_ref().map(|o| *o),
        "parse_reply and reply_len disagree"
    );
    if let Ok(Some((r, n))) = &parsed {
        // Re-encoding a parsed reply gives a complete reply (RESP2 and RESP3).
        for resp3 in [false, true] {
            let mut out = Vec::new();
            r.write(&mut out, resp3);
            assert_eq!(
                resp::reply_len(&out),
                Ok(Some(out.len())),
                "re-encoded reply"
            );
        }
        // Trailing bytes do not change the measured length.
        let mut more = data[..*n].to_vec();
        more.extend_from_slice(b"+x\r\n");
        assert_eq!(resp::reply_len(&more), Ok(Some(*n)));
    }
    // Two chunks into a fresh scanner: the same result as one read.
    let c = if data.is_empty() {
        0
    } else {
        cut as usize % (data.len() + 1)
    };
    let mut sc = ReplyScanner::default();
    let two = match sc.scan(&data[..c]) {
        Ok(Some(n)) => Ok(Some(n)),
        Err(e) => Err(e),
        Ok(None) => sc.scan(data),
    };
    // A complete reply inside the first chunk is reported at once; otherwise the second call
    // must reach the same verdict as the one-shot scan.
    assert_eq!(two, len, "split at {c} gives a different result");
    // Byte by byte (bounded input size) as well.
    if data.len() <= 512 {
        let mut sc = ReplyScanner::default();
        let mut got = Ok(None);
        for i in 0..=data.len() {
            got = sc.scan(&data[..i]);
            if !matches!(got, Ok(None)) {
                break;
            }
        }
        assert_eq!(got, len, "byte-by-byte scan differs");
    }
    let mut ranges = Vec::new();
    if let Ok(Some(_)) = resp::aggregate_elements(data, &mut ranges) {
        assert!(ranges.iter().all(|&(s, e)| s <= e && e <= data.len()));
    }
});
