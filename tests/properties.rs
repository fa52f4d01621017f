//! Property tests (proptest), kept small so the file runs in seconds:
//! - RESP level: any split of a valid pipelined byte stream into reads yields the same commands.
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
