//! parse_command on arbitrary bytes: never panics; a parsed command re-encoded with
//! write_command parses back to the same arguments and consumes exactly the encoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustproxy::resp::{self, Args, Limits, ParseError};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    // Small limits too, so the "too big" paths are reachable with small inputs.
    let small = Limits {
        max_multibulk_len: 16,
        max_bulk_len: 64,
        max_inline_len: 32,
    };
    let mut a = Args::default();
    let mut b = Args::default();
    for lim in [&limits, &small] {
        let mut rest = data;
        // Walk the whole pipeline (bounded by the input length: each step consumes >= 1 byte).
        while !rest.is_empty() {
            match resp::parse_command(rest, lim, &mut a) {
                Ok(n) => {
                    assert!(n >= 1 && n <= rest.len(), "n={n} len={}", rest.len());
                    for x in a.iter(rest) {
                        assert!(x.len() <= rest.len());
                    }
                    if !a.is_empty() {
                        let mut enc = Vec::new();
                        resp::write_command(&mut enc, a.iter(rest));
                        let m = resp::parse_command(&enc, &limits, &mut b)
                            .unwrap_or_else(|e| panic!("re-encoded command fails: {e:?}"));
                        assert_eq!(m, enc.len());
                        assert!(
                            a.iter(rest).eq(b.iter(&enc)),
                            "args differ after re-encoding"
                        );
                        // A multibulk frame is forwarded verbatim: it must be canonical except
                        // for Redis's unchecked terminator bytes, so compare lengths only.
                        if !a.is_inline() {
                            assert_eq!(n, enc.len(), "multibulk frame length != re-encoding");
                        }
                        // Every proper prefix of a complete frame is Incomplete (inline: or
                        // "too big inline request" past the limit), never a command, so any
                        // split of a stream into reads yields the same commands.
                        if n <= 256 {
                            for i in 0..n {
                                let r = resp::parse_command(&rest[..i], lim, &mut b);
                                let ok = match r {
                                    Err(ParseError::Incomplete) => true,
                                    Err(ParseError::Protocol(m)) => {
                                        a.is_inline() && m == resp::ERR_INLINE_TOO_BIG
                                    }
                                    Ok(_) => false,
                                };
                                assert!(ok, "prefix {i} of a {n}-byte frame gives {r:?}");
                            }
                        }
                    }
                    rest = &rest[n..];
                }
                Err(ParseError::Incomplete) => break,
                Err(ParseError::Protocol(msg)) => {
                    assert!(msg.starts_with("Protocol error: "));
                    break;
                }
            }
        }
    }
});
