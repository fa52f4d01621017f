//! Work that may block runs off the event loop (issue #17): a cluster node named by a host name
//! in MOVED is resolved on the helper thread while the loop keeps serving, and the redirected
//! request is then answered by that node; PROXY RELOAD answers once the reload, read off the
//! loop, is applied.
//!
//! The cluster node here is a small scripted backend (a real Redis Cluster announces IPs unless
//! configured with hostnames); the data node behind the redirection is a real redis-server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A scripted cluster node on a free port: CLUSTER SLOTS says it owns every slot, every
/// GET is answered `-MOVED <slot> localhost:<target>`, anything else `+OK`. Stops when dropped.
struct FakeNode {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl FakeNode {
    fn start(target: u16) -> FakeNode {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            // Bounded: at most 60 s, and only while the test runs.
            for _ in 0..6000 {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                match l.accept() {
                    Ok((c, _)) => {
                        std::thread::spawn(move || serve(c, port, target));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeNode { port, stop }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answer one connection's commands (RESP arrays of bulk strings) until it closes.
fn serve(c: TcpStream, me: u16, target: u16) {
    c.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut w = c.try_clone().expect("clone");
    let mut r = BufReader::new(c);
    let mut line = String::new();
    for _ in 0..10_000 {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Some(n) = line
            .trim_end()
            .strip_prefix('*')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let mut args = Vec::new();
        for _ in 0..n {
            line.clear();
            r.read_line(&mut line).ok();
            line.clear();
            r.read_line(&mut line).ok();
            args.push(line.trim_end().to_ascii_uppercase());
        }
        let reply = match args.first().map(String::as_str) {
            Some("CLUSTER") => {
                format!("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{me}\r\n")
            }
            Some("GET") => format!("-MOVED 1234 localhost:{target}\r\n"),
            _ => "+OK\r\n".to_string(),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn moved_to_a_host_name_is_resolved_off_the_loop_and_followed() {
    let data = Redis::start();
    let mut d = data.client();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("from-data-node")
        .query(&mut d)
        .unwrap();
    let fake = FakeNode::start(data.port);
    let proxy = Proxy::start_conf(
        "conf",
        |port| {
            format!(
                "pool main\n    listen 127.0.0.1:{port}\n    cluster yes\n    server 127.0.0.1:{}:1\n",
                fake.port
            )
        },
        &[],
    );
    let mut c = proxy.raw();
    // The first GET is redirected to localhost:<data>; the name is resolved on the helper
    // thread and the request resent there. Meanwhile the loop still answers others.
    c.cmd(&[b"GET", b"k"]);
    let mut other = proxy.raw();
    assert_eq!(other.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(c.reply(), bulk(b"from-data-node"));
    // Pipelined GETs after it (the map now points slot 1234 at the new node; other slots
    // still at the fake one, which redirects again) all arrive, in order.
    let mut stream = Vec::new();
    for _ in 0..20 {
        stream.extend_from_slice(&enc(&[b"GET", b"k"]));
    }
    c.send(&stream);
    for i in 0..20 {
        assert_eq!(c.reply(), bulk(b"from-data-node"), "reply {i}");
    }
    let log = proxy.log();
    assert!(!log.contains("cannot resolve"), "{log}");
}

#[test]
fn proxy_reload_answers_after_the_off_loop_load() {
    let servers = redises(2);
    let proxy = Proxy::start_conf(
        "conf",
        |port| {
            format!(
                "pool main\n    listen 127.0.0.1:{port}\n    server {}:1 a\n    server {}:1 b\n",
                servers[0].addr(),
                servers[1].addr()
            )
        },
        &[],
    );
    let mut c = proxy.raw();
    // Same file: nothing changes, and the answer says so (after the helper thread read it).
    let r = c.call(&[b"PROXY", b"RELOAD", b"DRYRUN"]);
    assert!(r.starts_with(b"$"), "{}", String::from_utf8_lossy(&r));
    // Commands pipelined behind a reload keep their order.
    let mut stream = enc(&[b"SET", b"x", b"1"]);
    stream.extend_from_slice(&enc(&[b"PROXY", b"RELOAD"]));
    stream.extend_from_slice(&enc(&[b"GET", b"x"]));
    c.send(&stream);
    assert_eq!(c.reply(), b"+OK\r\n");
    let r = c.reply();
    assert!(r.starts_with(b"$"), "{}", String::from_utf8_lossy(&r));
    assert_eq!(c.reply(), bulk(b"1"));
}
