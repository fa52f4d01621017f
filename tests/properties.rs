//! Property tests (proptest), kept small so the file runs in seconds:
//! - RESP level: any split of a valid pipelined byte stream into reads yields the same commands;
//!   deep (up to 12,000 levels of mixed RESP3 aggregates and attributes) and wide (up to 20,000
//!   elements) replies back to back, scanned in any split into reads, measure the same as in
//!   one read.
//! - Proxy level: random key sets through MGET equal what the backends hold (asked directly),
//!   and a random pipeline written in random pieces gets the replies a plain Redis gives.
//!
//! Findings of the fuzz targets (fuzz/) that concern the parser land here as fixed cases.

mod common;

use common::{Proxy, Raw, Redis};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rustproxy::resp::{self, Args, Limits, ParseError, Reply};

/// One command as it goes on the wire: multibulk, or inline when every argument allows it.
#[derive(Clone, Debug)]
struct Cmd {
    args: Vec<Vec<u8>>,
    inline: bool,
}

fn encode(cmds: &[Cmd]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        if c.inline {
            let words: Vec<&[u8]> = c.args.iter().map(|a| &a[..]).collect();
            out.extend_from_slice(&words.join(&b' '));
            out.extend_from_slice(b"\r\n");
        } else {
            resp::write_command(&mut out, c.args.iter().map(|a| &a[..]));
        }
    }
    out
}

/// Feed `stream` as the reads delimited by `cuts` (sorted offsets), like the proxy does: append
/// each read to a buffer, parse every complete command, keep the rest.
fn feed(stream: &[u8], cuts: &[usize]) -> Result<Vec<Vec<Vec<u8>>>, ParseError> {
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let mut args = Args::default();
    let mut prev = 0;
    for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
        let c = c.clamp(prev, stream.len());
        buf.extend_from_slice(&stream[prev..c]);
        prev = c;
        loop {
            match resp::parse_command(&buf, &Limits::default(), &mut args) {
                Ok(n) => {
                    if !args.is_empty() {
                        got.push(args.iter(&buf).map(<[u8]>::to_vec).collect());
                    }
                    buf.drain(..n);
                }
                Err(ParseError::Incomplete) => break,
                Err(e) => return Err(e),
            }
        }
    }
    assert!(buf.is_empty(), "leftover bytes {buf:?}");
    Ok(got)
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Binary: CR, LF, quotes, NUL, '*' and '$' included.
        prop::collection::vec(any::<u8>(), 0..24),
        "[a-zA-Z0-9{}:_-]{1,12}".prop_map(String::into_bytes),
        // Long enough to cross several reads.
        (0usize..3000).prop_map(|n| vec![b'x'; n]),
    ]
}

fn inline_word() -> impl Strategy<Value = Vec<u8>> {
    "[a-zA-Z0-9{}:_-]{1,12}".prop_map(String::into_bytes)
}

fn command() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        3 => prop::collection::vec(arg(), 1..6).prop_map(|args| Cmd { args, inline: false }),
        1 => prop::collection::vec(inline_word(), 1..5).prop_map(|args| Cmd { args, inline: true }),
    ]
}

#[test]
fn any_split_of_a_pipeline_yields_the_same_commands() {
    let mut runner = TestRunner::new(Config::with_cases(256));
    let strategy = (
        prop::collection::vec(command(), 1..12),
        prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    );
    runner
        .run(&strategy, |(cmds, cut_idx)| {
            let stream = encode(&cmds);
            let want: Vec<Vec<Vec<u8>>> = cmds.iter().map(|c| c.args.clone()).collect();
            let mut cuts: Vec<usize> = cut_idx.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(feed(&stream, &[]), Ok(want.clone()));
            prop_assert_eq!(feed(&stream, &cuts), Ok(want.clone()));
            // And byte by byte for short streams.
            if stream.len() <= 2048 {
                let every: Vec<usize> = (0..stream.len()).collect();
                prop_assert_eq!(feed(&stream, &every), Ok(want));
            }
            Ok(())
        })
        .unwrap();
}

/// One level of a generated nested reply: what kind of aggregate, how many elements (or
/// pairs), and which element holds the next level (see `nest`).
type Level = (u8, usize, usize);

/// Level kinds that are attributes: what they hold is skipped when a tree is built.
fn is_attr_level(kind: u8) -> bool {
    matches!(kind % 8, 5 | 6)
}

/// A valid reply nesting one level per `(kind, count, at)`, outermost first, around `leaf`;
/// at each level the nested part is element `at % elements`, the others are `fill` leaves.
/// Kinds (mod 8): array, map (`count` pairs), set, push, an attribute then an array, the value
/// of an attribute (the decorated reply follows), an attribute of `count` pairs holding the
/// nested part (then the decorated reply), array.
fn nest(levels: &[Level], leaf: &[u8], fill: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tails: Vec<Vec<u8>> = Vec::with_capacity(levels.len());
    let mut f = 0;
    let mut next_fill = || {
        f += 1;
        fill[f % fill.len()].clone()
    };
    for &(kind, count, at) in levels {
        let c = count.max(1);
        let (ty, after): (char, &[u8]) = match kind % 8 {
            0 | 7 => ('*', b""),
            1 => ('%', b""),
            2 => ('~', b""),
            3 => ('>', b""),
            4 => {
                out.extend_from_slice(b"|1\r\n+ttl\r\n:3600\r\n");
                ('*', b"")
            }
            5 => ('|', b":7\r\n"),
            _ => ('|', b"$1\r\nx\r\n"),
        };
        let n = if kind % 8 == 5 { 1 } else { c };
        out.extend_from_slice(format!("{ty}{n}\r\n").as_bytes());
        let elements = if matches!(ty, '%' | '|') { 2 * n } else { n };
        let at = if kind % 8 == 5 { 1 } else { at % elements };
        for _ in 0..at {
            out.extend_from_slice(&next_fill());
        }
        let mut tail = Vec::new();
        for _ in at + 1..elements {
            tail.extend_from_slice(&next_fill());
        }
        tail.extend_from_slice(after);
        tails.push(tail);
    }
    out.extend_from_slice(leaf);
    for t in tails.iter().rev() {
        out.extend_from_slice(t);
    }
    out
}

/// Any non-aggregate RESP2/RESP3 element, encoded.
fn reply_leaf() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<i64>().prop_map(|v| format!(":{v}\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| common::bulk(&b)),
        "[ -~]{0,20}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[ -~]{0,20}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        Just(b"$-1\r\n".to_vec()),
        Just(b"*-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
        any::<bool>().prop_map(|b| if b {
            b"#t\r\n".to_vec()
        } else {
            b"#f\r\n".to_vec()
        }),
        any::<f64>().prop_map(|v| format!(",{v}\r\n").into_bytes()),
        "[0-9]{1,60}".prop_map(|s| format!("({s}\r\n").into_bytes()),
        "[ -~]{0,20}".prop_map(|s| format!("={}\r\ntxt:{s}\r\n", s.len() + 4).into_bytes()),
        "[ -~]{0,20}".prop_map(|s| format!("!{}\r\n{s}\r\n", s.len()).into_bytes()),
    ]
}

/// A generated reply and how many aggregates its tree nests (attribute contents excluded).
#[derive(Clone, Debug)]
struct GenReply {
    bytes: Vec<u8>,
    tree_depth: usize,
}

fn level_kind() -> impl Strategy<Value = u8> {
    prop_oneof![
        200 => prop::sample::select(vec![0u8, 1, 2, 3, 4, 7]),
        1 => 5u8..7,
    ]
}

/// Deep: up to 12,000 levels of mixed RESP3 aggregates and attributes (Redis's own deepest
/// reply is 7,995 levels).
fn deep_reply() -> impl Strategy<Value = GenReply> {
    (
        // Attribute levels rare enough that trees both within and beyond MAX_TREE_DEPTH
        // come up.
        prop::collection::vec((level_kind(), 1usize..4, 0usize..8), 0..12_000),
        reply_leaf(),
        prop::collection::vec(reply_leaf(), 1..8),
    )
        .prop_map(|(levels, leaf, fill)| GenReply {
            bytes: nest(&levels, &leaf, &fill),
            tree_depth: levels.iter().take_while(|l| !is_attr_level(l.0)).count(),
        })
}

/// Wide: aggregates of up to 20,000 elements, a few levels of them.
fn wide_reply() -> impl Strategy<Value = GenReply> {
    let tree = reply_leaf()
        .prop_map(|b| (b, 0usize))
        .prop_recursive(4, 4_000, 200, |inner| {
            (0u8..5, prop::collection::vec(inner, 0..200)).prop_map(|(kind, items)| {
                let depth = 1 + items.iter().map(|i| i.1).max().unwrap_or(0);
                let n = items.len();
                let mut out = match kind {
                    0 => format!("*{n}\r\n"),
                    1 => format!("~{n}\r\n"),
                    2 => format!(">{n}\r\n"),
                    3 => format!("%{}\r\n", n / 2),
                    _ => format!("|1\r\n+a\r\n:1\r\n*{n}\r\n"),
                }
                .into_bytes();
                let take = if kind == 3 { n / 2 * 2 } else { n };
                for (b, _) in &items[..take] {
                    out.extend_from_slice(b);
                }
                (out, depth)
            })
        });
    prop_oneof![
        tree.prop_map(|(bytes, tree_depth)| GenReply { bytes, tree_depth }),
        (0usize..20_000, prop::collection::vec(reply_leaf(), 1..16)).prop_map(|(n, fill)| {
            let mut bytes = format!("*{n}\r\n").into_bytes();
            for i in 0..n {
                bytes.extend_from_slice(&fill[i % fill.len()]);
            }
            GenReply {
                bytes,
                tree_depth: 1,
            }
        }),
    ]
}

/// Scans `stream` fed as the reads delimited by `cuts`, like the event loop: the lengths of
/// the replies in it.
fn scan_in_reads(stream: &[u8], cuts: &[usize]) -> Result<Vec<usize>, &'static str> {
    let (mut start, mut end, mut got) = (0, 0, Vec::new());
    let mut sc = resp::ReplyScanner::default();
    for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
        end = c.clamp(end, stream.len());
        while let Some(n) = sc.scan(&stream[start..end])? {
            got.push(n);
            start += n;
        }
    }
    assert_eq!(start, stream.len(), "leftover bytes");
    Ok(got)
}

/// Deep and wide replies back to back, scanned in random reads (and byte by byte when
/// short): the same lengths as scanning each reply in one go; a tree is built exactly when it
/// is shallow enough.
#[test]
fn deep_and_wide_replies_scan_the_same_in_any_chunking() {
    let mut runner = TestRunner::new(Config::with_cases(48));
    let strategy = (
        prop::collection::vec(prop_oneof![deep_reply(), wide_reply()], 1..4),
        prop::collection::vec(any::<prop::sample::Index>(), 0..64),
    );
    runner
        .run(&strategy, |(replies, cut_idx)| {
            let stream: Vec<u8> = replies.iter().flat_map(|r| r.bytes.clone()).collect();
            let want: Vec<usize> = replies.iter().map(|r| r.bytes.len()).collect();
            for r in &replies {
                prop_assert_eq!(resp::reply_len(&r.bytes), Ok(Some(r.bytes.len())));
                let parsed = resp::parse_reply(&r.bytes).map(|o| o.map(|(_, n)| n));
                if r.tree_depth <= resp::MAX_TREE_DEPTH {
                    prop_assert_eq!(parsed, Ok(Some(r.bytes.len())));
                } else {
                    prop_assert_eq!(parsed, Err(resp::RE_DEPTH));
                }
            }
            let mut cuts: Vec<usize> = cut_idx.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(scan_in_reads(&stream, &cuts), Ok(want.clone()));
            if stream.len() <= 16 * 1024 {
                let every: Vec<usize> = (0..stream.len()).collect();
                prop_assert_eq!(scan_in_reads(&stream, &every), Ok(want));
            }
            Ok(())
        })
        .unwrap();
}

/// GET `key` on every backend directly: the value, or None; panics if two backends hold it.
fn truth(backends: &mut [Raw], key: &[u8]) -> Option<Vec<u8>> {
    let mut found = None;
    for (i, b) in backends.iter_mut().enumerate() {
        let r = b.call(&[b"GET", key]);
        match resp::parse_reply(&r) {
            Ok(Some((Reply::Bulk(v), _))) => {
                assert!(found.is_none(), "key {key:?} on two backends (second: {i})");
                found = Some(v.to_vec());
            }
            Ok(Some((Reply::Nil, _))) => {}
            other => panic!("backend {i} GET: {other:?}"),
        }
    }
    found
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u8..48).prop_map(|i| format!("pk:{i}").into_bytes()),
        "[a-z{}]{0,6}".prop_map(|s| format!("pk:{s}").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..10),
    ]
}

#[test]
fn mget_equals_backends_truth() {
    let servers: Vec<Redis> = common::redises(3);
    let refs: Vec<&Redis> = servers.iter().collect();
    let proxy = Proxy::start(&refs, &[]);
    // TestRunner::run takes a Fn closure: the connections live in RefCells.
    let p = std::cell::RefCell::new(proxy.raw());
    let direct = std::cell::RefCell::new(
        servers
            .iter()
            .map(|s| Raw::connect(s.port))
            .collect::<Vec<Raw>>(),
    );
    let mut runner = TestRunner::new(Config::with_cases(32));
    let strategy = (
        prop::collection::vec(key(), 1..24),
        prop::collection::vec(
            (
                key(),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            ),
            0..24,
        ),
    );
    runner
        .run(&strategy, |(keys, writes)| {
            let mut p = p.borrow_mut();
            let mut direct = direct.borrow_mut();
            // Writes through the proxy: a value (MSET, split over backends) or a delete.
            let mut mset: Vec<&[u8]> = vec![b"MSET"];
            let mut del: Vec<&[u8]> = vec![b"DEL"];
            for (k, v) in &writes {
                match v {
                    Some(v) => {
                        mset.push(k);
                        mset.push(v);
                    }
                    None => del.push(k),
                }
            }
            if mset.len() > 1 {
                prop_assert_eq!(p.call(&mset), b"+OK\r\n".to_vec());
            }
            if del.len() > 1 {
                let r = p.call(&del);
                prop_assert_eq!(r[0], b':', "DEL: {:?}", String::from_utf8_lossy(&r));
            }
            let mut mget: Vec<&[u8]> = vec![b"MGET"];
            mget.extend(keys.iter().map(|k| &k[..]));
            let r = p.call(&mget);
            let got: Vec<Option<Vec<u8>>> = match resp::parse_reply(&r) {
                Ok(Some((Reply::Array(items), n))) if n == r.len() => items
                    .into_iter()
                    .map(|it| match it {
                        Reply::Bulk(v) => Some(v.to_vec()),
                        Reply::Nil => None,
                        other => panic!("MGET element {other:?}"),
                    })
                    .collect(),
                other => panic!("MGET reply {other:?}: {:?}", String::from_utf8_lossy(&r)),
            };
            let want: Vec<Option<Vec<u8>>> = keys.iter().map(|k| truth(&mut direct, k)).collect();
            prop_assert_eq!(got, want);
            Ok(())
        })
        .unwrap();
}

/// A random pipeline written to the proxy in random pieces gets byte-identical replies to the
/// same pipeline sent to a single Redis in one write (commands chosen so placement cannot
/// matter: single-key commands and MGET/DEL/EXISTS over the same keys on both sides).
#[test]
fn pipeline_in_pieces_matches_plain_redis() {
    let servers: Vec<Redis> = common::redises(2);
    let refs: Vec<&Redis> = servers.iter().collect();
    let proxy = Proxy::start(&refs, &[]);
    let plain = Redis::start();
    let mut runner = TestRunner::new(Config::with_cases(32));
    let op = (0u8..7, 0u8..12, 0u8..12, "[a-z0-9]{0,8}");
    let strategy = (
        prop::collection::vec(op, 1..40),
        prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    );
    runner
        .run(&strategy, |(ops, cut_idx)| {
            let cmds: Vec<Cmd> = ops
                .iter()
                .map(|(o, a, b, v)| {
                    let ka = format!("pp:{a}").into_bytes();
                    let kb = format!("pp:{b}").into_bytes();
                    let args: Vec<Vec<u8>> = match o {
                        0 => vec![b"SET".to_vec(), ka, v.clone().into_bytes()],
                        1 => vec![b"GET".to_vec(), ka],
                        2 => vec![b"INCR".to_vec(), format!("pn:{a}").into_bytes()],
                        3 => vec![b"DEL".to_vec(), ka, kb],
                        4 => vec![b"MGET".to_vec(), ka, kb, b"pp:x".to_vec()],
                        5 => vec![b"EXISTS".to_vec(), ka, kb],
                        _ => vec![b"APPEND".to_vec(), ka, v.clone().into_bytes()],
                    };
                    Cmd {
                        args,
                        inline: *o == 1,
                    }
                })
                .collect();
            let stream = encode(&cmds);
            let mut cuts: Vec<usize> = cut_idx.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut a = proxy.raw();
            let mut b = Raw::connect(plain.port);
            let _ = a.stream.set_nodelay(true);
            let mut prev = 0;
            for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
                if c > prev {
                    a.send(&stream[prev..c]);
                    prev = c;
                }
            }
            b.send(&stream);
            for (i, c) in cmds.iter().enumerate() {
                let ra = a.reply();
                let rb = b.reply();
                prop_assert_eq!(
                    String::from_utf8_lossy(&ra),
                    String::from_utf8_lossy(&rb),
                    "command {} {:?}",
                    i,
                    c.args
                        .iter()
                        .map(|x| String::from_utf8_lossy(x))
                        .collect::<Vec<_>>()
                );
            }
            // Clean slate for the next case, on both sides.
            let del: Vec<Vec<u8>> = std::iter::once(b"DEL".to_vec())
                .chain((0..12).flat_map(|i| {
                    [
                        format!("pp:{i}").into_bytes(),
                        format!("pn:{i}").into_bytes(),
                    ]
                }))
                .collect();
            let del: Vec<&[u8]> = del.iter().map(|x| &x[..]).collect();
            a.call(&del);
            b.call(&del);
            Ok(())
        })
        .unwrap();
}
