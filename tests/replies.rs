//! Replies Redis really sends, however deep or large, pass through the proxy byte for byte,
//! and never disturb other clients of the same backend connection (issue #23):
//! - the recursive-table script of Redis's own suite ("Script return recursive object"), which
//!   Redis 7.0 answers with an array nested 7,995 levels deep, RESP2 and RESP3, and its map and
//!   set variants;
//! - meanwhile another client's 500 pipelined GETs on the same backend all get their values;
//! - a corrupt stream does close the backend connection, and the log shows the bytes around the
//!   error.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{Proxy, Raw, Redis};
use rustproxy::resp::{self, Args, Limits};

const RECURSIVE: &str = "local a = {}; local b = {a}; a[1] = b; return a";
const RECURSIVE_MAP: &str =
    "redis.setresp(3); local a = {}; local m = {}; a['map'] = m; m['k'] = a; return a";
const RECURSIVE_SET: &str =
    "redis.setresp(3); local a = {}; local s = {}; a['set'] = s; s[a] = true; return a";

fn eval(c: &mut Raw, script: &str) -> Vec<u8> {
    c.call(&[b"EVAL", script.as_bytes(), b"0"])
}

/// Nesting depth of a reply made of `*1`/`%1`/`~1` headers (and map keys) around errors.
fn leading_headers(reply: &[u8]) -> usize {
    reply
        .windows(4)
        .filter(|w| matches!(*w, b"*1\r\n" | b"%1\r\n" | b"~1\r\n"))
        .count()
}

fn hello3(c: &mut Raw) {
    let r = c.call(&[b"HELLO", b"3"]);
    assert_eq!(r.first(), Some(&b'%'), "{}", String::from_utf8_lossy(&r));
}

#[test]
fn recursive_script_reply_is_byte_identical_to_redis() {
    let redis = Redis::start();
    let proxy = Proxy::start(&[&redis], &[]);
    let mut direct = Raw::connect(redis.port);
    let mut via = proxy.raw();
    let want = eval(&mut direct, RECURSIVE);
    assert!(
        want.starts_with(&b"*1\r\n".repeat(1000))
            && want.ends_with(b"-ERR reached lua stack limit\r\n"),
        "redis-server's answer is not the deep array this test is about"
    );
    println!(
        "redis nests the reply {} levels deep",
        leading_headers(&want)
    );
    let got = eval(&mut via, RECURSIVE);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the proxy changed the reply");
    // The connection (and the shared backend connection) still work.
    assert_eq!(via.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(via.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(via.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");

    // RESP3 clients (served from HELLO 3 backend connections): the array and the RESP3 map and
    // set variants.
    hello3(&mut direct);
    hello3(&mut via);
    for script in [RECURSIVE, RECURSIVE_MAP, RECURSIVE_SET] {
        let want = eval(&mut direct, script);
        assert!(leading_headers(&want) > 1000, "{script}: not deep");
        let got = eval(&mut via, script);
        assert!(got == want, "{script}: the proxy changed the reply");
        assert_eq!(via.call(&[b"PING"]), b"+PONG\r\n");
    }
    let log = proxy.log();
    assert!(!log.contains("protocol error"), "{log}");
}

#[test]
fn deep_reply_leaves_another_clients_pipeline_untouched() {
    const GETS: usize = 500;
    let redis = Redis::start();
    let proxy = Proxy::start(&[&redis], &[]);
    let mut setup = proxy.raw();
    for i in 0..GETS {
        let (k, v) = (format!("pk:{i}"), format!("value-{i}"));
        assert_eq!(
            setup.call(&[b"SET", k.as_bytes(), v.as_bytes()]),
            b"+OK\r\n"
        );
    }
    let want = eval(&mut Raw::connect(redis.port), RECURSIVE);

    let mut pipeline = Vec::new();
    for i in 0..GETS {
        pipeline.extend_from_slice(&common::enc(&[b"GET", format!("pk:{i}").as_bytes()]));
    }
    let expected: Vec<Vec<u8>> = (0..GETS)
        .map(|i| common::bulk(format!("value-{i}").as_bytes()))
        .collect();
    let start = Arc::new(Barrier::new(2));
    let port = proxy.port;
    let scripts = {
        let start = start.clone();
        let want = want.clone();
        thread::spawn(move || {
            let mut a = Raw::connect(port);
            start.wait();
            // Several deep replies, pipelined, while B's GETs are in flight.
            let mut reqs = Vec::new();
            for _ in 0..10 {
                reqs.extend_from_slice(&common::enc(&[b"EVAL", RECURSIVE.as_bytes(), b"0"]));
            }
            for _ in 0..3 {
                a.send(&reqs);
                for n in 0..10 {
                    assert!(
                        a.reply() == want,
                        "client A: reply {n} differs from Redis's"
                    );
                }
            }
        })
    };
    let mut b = proxy.raw();
    start.wait();
    for round in 0..5 {
        b.send(&pipeline);
        for (i, want) in expected.iter().enumerate() {
            let got = b.reply();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want),
                "client B: round {round}, GET {i}"
            );
        }
    }
    scripts.join().expect("client A");
    let log = proxy.log();
    assert!(!log.contains("protocol error"), "{log}");
}

/// A backend that answers every command with a corrupt reply: 3 good headers, then garbage.
fn corrupt_backend() -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        listener.set_nonblocking(true).unwrap();
        while Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (mut buf, mut args) = (Vec::new(), Args::default());
            let mut tmp = [0u8; 4096];
            while let Ok(n) = s.read(&mut tmp) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
                while let Ok(n) = resp::parse_command(&buf, &Limits::default(), &mut args) {
                    buf.drain(..n);
                    if s.write_all(b"*2\r\n*1\r\n:1\r\n\x01garbage\r\n").is_err() {
                        break;
                    }
                }
            }
            return;
        }
    });
    (port, handle)
}

#[test]
fn corrupt_stream_closes_the_connection_and_logs_the_bytes() {
    let (port, fake) = corrupt_backend();
    let listen = common::free_port();
    let args: Vec<String> = [
        "-l",
        &format!("127.0.0.1:{listen}"),
        "-b",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proxy = Proxy::spawn(listen, &args);
    let mut c = proxy.raw();
    let r = c.call(&[b"GET", b"k"]);
    let text = String::from_utf8_lossy(&r);
    assert!(
        text.starts_with("-ERR backend") && text.contains("unknown reply type"),
        "{text}"
    );
    // The client's error does not carry the stream's bytes (they may be other clients' data).
    assert!(!text.contains("garbage"), "{text}");
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = proxy.log();
    while !log.contains("bytes around it") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        log = proxy.log();
    }
    assert!(
        log.contains(r#"bytes around it: byte 12 of 22: "*2\r\n*1\r\n:1\r\n" ^ "\x01garbage\r\n""#),
        "{log}"
    );
    drop(proxy);
    fake.join().unwrap();
}
