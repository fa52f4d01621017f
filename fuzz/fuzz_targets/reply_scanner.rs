//! Reply side: ReplyScanner / reply_len / parse_reply agree on every input; a scanner fed the
//! same bytes in two chunks (as a backend socket would deliver them) gives the same result.
//! The input is also read as a recipe for a valid deep and/or wide reply (`recipe`: up to
//! 60,000 levels of mixed RESP3 aggregates and attributes, arrays of up to 8,000 elements),
//! which must measure as one reply in one read and in reads of any size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustproxy::resp::{self, ReplyScanner};

fuzz_target!(|input: &[u8]| {
    // First byte chooses the split point; the rest is the backend stream.
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    check(cut, data);
    let built = recipe(data);
    assert_eq!(
        resp::reply_len(&built),
        Ok(Some(built.len())),
        "recipe reply"
    );
    check(cut, &built);
    // In reads of (cut + 1) bytes (times 64 for a reply over 64 KiB).
    let step = if built.len() <= 64 * 1024 {
        cut as usize + 1
    } else {
        cut as usize * 64 + 1
    };
    let mut sc = ReplyScanner::default();
    let mut got = Ok(None);
    let mut end = 0;
    while matches!(got, Ok(None)) && end < built.len() {
        end = (end + step).min(built.len());
        got = sc.scan(&built[..end]);
    }
    assert_eq!(
        got,
        Ok(Some(built.len())),
        "recipe reply in reads of {step}"
    );
});

fn check(cut: u8, data: &[u8]) {
    let len = resp::reply_len(data);
    if let Ok(Some(n)) = len {
        assert!(n >= 3 && n <= data.len(), "n={n}");
    }
    let parsed = resp::parse_reply(data);
    match (&parsed, &len) {
        // Too deep to build a tree from, though well formed: fine.
        (Err(resp::RE_DEPTH), Ok(Some(_))) => {}
        _ => assert_eq!(
            parsed.as_ref().map(|o| o.as_ref().map(|(_, n)| *n)),
            len.as_ref().map(|o| *o),
            "parse_reply and reply_len disagree"
        ),
    }
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
    if two.is_err() {
        assert!(sc.error_context(data).is_some());
    }
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
}

const LEAVES: [&[u8]; 8] = [
    b":1\r\n",
    b"$3\r\nabc\r\n",
    b"+OK\r\n",
    b"_\r\n",
    b"#t\r\n",
    b"$-1\r\n",
    b"=7\r\ntxt:abc\r\n",
    b"*0\r\n",
];

/// A valid reply built from `data`: one group of levels per byte, outermost first. Bits 0-2:
/// kind (array, map, set, push, attribute then array, inside an attribute's value, attribute
/// of several pairs, wide array); bits 3-4: levels in the group (1, 16, 256, 4096); bits 5-7:
/// element count (1..=8; the wide array: 1,000..=8,000), the nested part in the middle.
/// At most 60,000 levels, and no new level once the reply passes 256 KiB.
fn recipe(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tails: Vec<Vec<u8>> = Vec::new();
    let (mut levels, mut size, mut tail_bytes) = (0usize, 0usize, 0usize);
    for (i, &b) in data.iter().enumerate() {
        let kind = b & 7;
        let reps = 1usize << (4 * ((b >> 3) & 3));
        let mut n = usize::from(b >> 5) + 1;
        if kind == 7 {
            n *= 1000;
        }
        for r in 0..reps {
            if levels >= 60_000 || size >= 256 << 10 || (kind == 7 && r > 0) {
                break;
            }
            levels += 1;
            let (head, elements, after): (String, usize, &[u8]) = match kind {
                0 | 7 => (format!("*{n}\r\n"), n, b""),
                1 => (format!("%{n}\r\n"), 2 * n, b""),
                2 => (format!("~{n}\r\n"), n, b""),
                3 => (format!(">{n}\r\n"), n, b""),
                4 => (format!("|1\r\n+a\r\n:1\r\n*{n}\r\n"), n, b""),
                5 => ("|1\r\n+k\r\n".to_string(), 1, b":7\r\n"),
                _ => (format!("|{n}\r\n"), 2 * n, b"+decorated\r\n"),
            };
            out.extend_from_slice(head.as_bytes());
            let at = if kind == 5 { 0 } else { elements / 2 };
            for j in 0..at {
                out.extend_from_slice(LEAVES[(i + j) % LEAVES.len()]);
            }
            let mut tail = Vec::new();
            for j in at + 1..elements {
                tail.extend_from_slice(LEAVES[(i + j) % LEAVES.len()]);
            }
            tail.extend_from_slice(after);
            tail_bytes += tail.len();
            size = out.len() + tail_bytes;
            tails.push(tail);
        }
    }
    out.extend_from_slice(b"-ERR reached lua stack limit\r\n");
    for t in tails.iter().rev() {
        out.extend_from_slice(t);
    }
    out
}
