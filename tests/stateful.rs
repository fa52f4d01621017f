//! End-to-end tests of the proxy's stateful commands: blocking commands on private backend
//! connections, MULTI/EXEC/WATCH queued in the proxy, and pub/sub (channels routed by name,
//! patterns on every backend, RESP2 subscribe mode and RESP3 pushes). Real redis-server
//! processes and the real binary; every wait is a bounded poll; no test asserts a duration.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Shutdown;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{arr, bulk, enc, int, ms, poll_until, redises, refs, secs, show, Proxy, Raw};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A (p|s)(un)subscribe confirmation: `*3 kind name :count` (`>3` in RESP3).
fn confirmation(head: &str, kind: &str, name: &str, count: i64) -> Vec<u8> {
    let mut out = format!("{head}3\r\n").into_bytes();
    out.extend_from_slice(&bulk(kind.as_bytes()));
    out.extend_from_slice(&bulk(name.as_bytes()));
    out.extend_from_slice(format!(":{count}\r\n").as_bytes());
    out
}

fn backendnum(proxy: &Proxy, key: &str) -> usize {
    let mut c = proxy.client();
    let n: i64 = redis::cmd("BACKENDNUM")
        .arg(key)
        .query(&mut c)
        .expect("backendnum");
    n as usize
}

/// `count` names `prefix<i>` whose BACKENDNUM satisfies `want`.
fn names_where(
    proxy: &Proxy,
    prefix: &str,
    count: usize,
    want: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut c = proxy.client();
    let mut out = Vec::new();
    for i in 0..100_000 {
        let k = format!("{prefix}{i}");
        let n: i64 = redis::cmd("BACKENDNUM")
            .arg(&k)
            .query(&mut c)
            .expect("backendnum");
        if want(n as usize) {
            out.push(k);
            if out.len() == count {
                return out;
            }
        }
    }
    panic!("not enough names for prefix {prefix}");
}

/// `per` names `prefix<i>` on each of the 4 backends, in backend order.
fn spread(proxy: &Proxy, prefix: &str, per: usize) -> Vec<String> {
    (0..4)
        .flat_map(|b| names_where(proxy, prefix, per, move |n| n == b))
        .collect()
}

/// Two names with the given prefix on different backends.
fn two_backends(proxy: &Proxy, prefix: &str) -> (String, String) {
    let a = format!("{prefix}0");
    let na = backendnum(proxy, &a);
    let b = names_where(proxy, prefix, 1, |n| n != na).remove(0);
    (a, b)
}

/// `FORWARD n CLIENT LIST` through the proxy: the backend's client lines.
fn backend_clients(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut c = proxy.client();
    let text: String = redis::cmd("FORWARD")
        .arg(n)
        .arg("CLIENT")
        .arg("LIST")
        .query(&mut c)
        .expect("forward client list");
    text.lines().map(|l| l.to_string()).collect()
}

/// How many of the client `lines` run `cmd`.
fn running(lines: &[String], cmd: &str) -> usize {
    let pat = format!(" cmd={cmd} ");
    lines.iter().filter(|l| l.contains(&pat)).count()
}

fn count_cmd(proxy: &Proxy, n: usize, cmd: &str) -> usize {
    running(&backend_clients(proxy, n), cmd)
}

/// Wait (bounded: 15 s, every 20 ms) until `ok` holds for the client lines of backend `n`;
/// the failure names `what` and shows the lines last seen.
fn wait_clients(proxy: &Proxy, n: usize, what: &str, ok: impl Fn(&[String]) -> bool) {
    poll_until(what, secs(15), ms(20), || {
        let lines = backend_clients(proxy, n);
        if ok(&lines) {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    });
}

/// Receive from a worker thread with a bounded wait.
fn recv<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{what}: no result within 20 s ({e})"))
}

fn set(proxy: &Proxy, k: &str, v: &str) {
    let mut c = proxy.client();
    let _: () = redis::cmd("SET").arg(k).arg(v).query(&mut c).expect("set");
}

fn python_ok() -> bool {
    Command::new("python3")
        .args(["-c", "import redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// 1-5. Blocking commands
// ---------------------------------------------------------------------------

#[test]
fn blpop_answered_by_lpush_from_another_client() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let key = "blk:list";
    let n = backendnum(&proxy, key);
    let before = count_cmd(&proxy, n, "blpop");
    assert_eq!(before, 0);

    let port = proxy.port;
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut raw = Raw::connect(port);
        let r = raw.call(&[b"BLPOP", key.as_bytes(), b"0"]);
        // The connection works normally afterwards.
        let p = raw.call(&[b"PING"]);
        let _ = tx.send((r, p));
    });
    wait_clients(&proxy, n, &format!("the BLPOP to reach backend {n}"), |l| {
        running(l, "blpop") == 1
    });
    let mut c = proxy.client();
    let pushed: i64 = redis::cmd("LPUSH")
        .arg(key)
        .arg("hello")
        .query(&mut c)
        .unwrap();
    assert_eq!(pushed, 1);
    let (r, p) = recv(&rx, "blocked client");
    t.join().unwrap();
    assert_eq!(show(&r), show(&arr(&[key.as_bytes(), b"hello"])));
    assert_eq!(p, b"+PONG\r\n");
    let len: i64 = redis::cmd("LLEN").arg(key).query(&mut c).unwrap();
    assert_eq!(len, 0, "the value was consumed exactly once");
}

#[test]
fn blpop_timeout_and_pipelined_ping() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut raw = proxy.raw();
    assert_eq!(
        show(&raw.call(&[b"BLPOP", b"blk:empty", b"0.2"])),
        "*-1\\r\\n"
    );
    // Pipelined: the PING waits behind the blocked BLPOP and both come back in order.
    let mut bytes = enc(&[b"BLPOP", b"blk:empty2", b"0.2"]);
    bytes.extend_from_slice(&enc(&[b"PING"]));
    bytes.extend_from_slice(&enc(&[b"ECHO", b"after"]));
    raw.send(&bytes);
    assert_eq!(show(&raw.reply()), "*-1\\r\\n");
    assert_eq!(show(&raw.reply()), "+PONG\\r\\n");
    assert_eq!(show(&raw.reply()), show(&bulk(b"after")));
    // Other blocking commands time out the same way.
    assert_eq!(show(&raw.call(&[b"BRPOP", b"blk:e3", b"0.1"])), "*-1\\r\\n");
    assert_eq!(
        show(&raw.call(&[b"BZPOPMIN", b"blk:z", b"0.1"])),
        "*-1\\r\\n"
    );
    assert_eq!(
        show(&raw.call(&[b"XREAD", b"BLOCK", b"100", b"STREAMS", b"blk:s", b"$"])),
        "*-1\\r\\n"
    );
}

#[test]
fn blocked_client_disconnect_closes_its_private_connection() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let key = "blk:ghost";
    let n = backendnum(&proxy, key);
    let baseline = backend_clients(&proxy, n).len();

    let mut raw = proxy.raw();
    raw.cmd(&[b"BLPOP", key.as_bytes(), b"0"]);
    wait_clients(&proxy, n, &format!("BLPOP to reach backend {n}"), |l| {
        running(l, "blpop") == 1
    });
    assert_eq!(backend_clients(&proxy, n).len(), baseline + 1);
    raw.stream.shutdown(Shutdown::Both).unwrap();
    drop(raw);
    wait_clients(
        &proxy,
        n,
        "the private connection to close after its client left",
        |l| running(l, "blpop") == 0 && l.len() == baseline,
    );
    let mut c = proxy.client();
    let _: i64 = redis::cmd("LPUSH").arg(key).arg("v").query(&mut c).unwrap();
    // Give a ghost BLPOP (if any) every chance to take it: a round trip to that backend.
    let _: String = redis::cmd("FORWARD")
        .arg(n)
        .arg("PING")
        .query(&mut c)
        .unwrap();
    let len: i64 = redis::cmd("LLEN").arg(key).query(&mut c).unwrap();
    assert_eq!(len, 1, "a ghost BLPOP consumed the value");
    let v: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec!["v".to_string()]);
}

#[test]
fn private_connection_cap_and_other_clients_unaffected() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--private-connections", "5"]);
    let keys = names_where(&proxy, "cap:", 6, |n| n == 0);
    let mut blocked: Vec<Raw> = Vec::new();
    for k in &keys[..5] {
        let mut r = proxy.raw();
        r.cmd(&[b"BLPOP", k.as_bytes(), b"0"]);
        blocked.push(r);
    }
    wait_clients(&proxy, 0, "5 BLPOPs to block on backend 0", |l| {
        running(l, "blpop") == 5
    });
    // The sixth on the same backend gets a clear error, and its connection stays usable.
    let mut sixth = proxy.raw();
    let e = sixth.call(&[b"BLPOP", keys[5].as_bytes(), b"0"]);
    let es = String::from_utf8_lossy(&e).to_string();
    assert!(
        es.starts_with("-ERR too many private connections to backend ") && es.ends_with("\r\n"),
        "{es:?}"
    );
    assert!(es.contains("5"), "{es:?}");
    assert_eq!(sixth.call(&[b"PING"]), b"+PONG\r\n");
    // A blocking command on another backend is still allowed (the cap is per backend).
    let other = names_where(&proxy, "capo:", 1, |n| n != 0).remove(0);
    assert_eq!(
        show(&sixth.call(&[b"BLPOP", other.as_bytes(), b"0.1"])),
        "*-1\\r\\n"
    );
    // Other clients keep working on every backend, including the one with 5 blocked clients.
    let mut c = proxy.client();
    for i in 0..200 {
        let k = format!("cap:other:{i}");
        let _: () = redis::cmd("SET").arg(&k).arg(i).query(&mut c).unwrap();
        let v: i64 = redis::cmd("GET").arg(&k).query(&mut c).unwrap();
        assert_eq!(v, i);
    }
    let on0 = names_where(&proxy, "cap:zero:", 20, |n| n == 0);
    for (i, k) in on0.iter().enumerate() {
        let _: () = redis::cmd("SET").arg(k).arg(i).query(&mut c).unwrap();
        let v: i64 = redis::cmd("GET").arg(k).query(&mut c).unwrap();
        assert_eq!(v, i as i64);
    }
    // Unblock all: each gets its own value.
    for (i, k) in keys[..5].iter().enumerate() {
        let _: i64 = redis::cmd("RPUSH")
            .arg(k)
            .arg(format!("v{i}"))
            .query(&mut c)
            .unwrap();
    }
    for (i, r) in blocked.iter_mut().enumerate() {
        let got = r.reply();
        let v = format!("v{i}");
        assert_eq!(show(&got), show(&arr(&[keys[i].as_bytes(), v.as_bytes()])));
    }
    // The connections came back: the sixth client can now block (and time out) on backend 0.
    assert_eq!(
        show(&sixth.call(&[b"BLPOP", keys[5].as_bytes(), b"0.1"])),
        "*-1\\r\\n"
    );
}

#[test]
fn blocking_keys_must_share_a_backend() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--hash-tag", "{}"]);
    let (a, b) = two_backends(&proxy, "xb:");
    let mut raw = proxy.raw();
    let want = "-PROXYERROR keys are on different backends\\r\\n";
    assert_eq!(
        show(&raw.call(&[b"BLPOP", a.as_bytes(), b.as_bytes(), b"0"])),
        want
    );
    assert_eq!(
        show(&raw.call(&[b"BRPOP", a.as_bytes(), b.as_bytes(), b"0"])),
        want
    );
    assert_eq!(
        show(&raw.call(&[
            b"BLMOVE",
            a.as_bytes(),
            b.as_bytes(),
            b"LEFT",
            b"RIGHT",
            b"0"
        ])),
        want
    );
    assert_eq!(
        show(&raw.call(&[
            b"XREAD",
            b"BLOCK",
            b"0",
            b"STREAMS",
            a.as_bytes(),
            b.as_bytes(),
            b"$",
            b"$"
        ])),
        want
    );
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    // Same tag: one backend, works.
    assert_eq!(raw.call(&[b"RPUSH", b"{t}b", b"x"]), b":1\r\n");
    assert_eq!(
        show(&raw.call(&[b"BLPOP", b"{t}a", b"{t}b", b"1"])),
        show(&arr(&[b"{t}b", b"x"]))
    );
    assert_eq!(
        show(&raw.call(&[b"BLPOP", b"{t}a", b"{t}b", b"0.1"])),
        "*-1\\r\\n"
    );
    assert_eq!(raw.call(&[b"RPUSH", b"{t}src", b"y"]), b":1\r\n");
    assert_eq!(
        show(&raw.call(&[b"BLMOVE", b"{t}src", b"{t}dst", b"LEFT", b"RIGHT", b"1"])),
        show(&bulk(b"y"))
    );
    assert_eq!(
        show(&raw.call(&[b"LRANGE", b"{t}dst", b"0", b"-1"])),
        show(&arr(&[b"y"]))
    );
    // WAIT stays refused.
    let w = raw.call(&[b"WAIT", b"0", b"0"]);
    assert!(w.starts_with(b"-"), "{}", show(&w));
}

// ---------------------------------------------------------------------------
// 6. MULTI / EXEC / WATCH
// ---------------------------------------------------------------------------

#[test]
fn multi_exec_is_atomic_for_a_concurrent_reader() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--hash-tag", "{}"]);
    set(&proxy, "{t}a", "0");
    const ROUNDS: i64 = 20;
    let port = proxy.port;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut c = common::connect(port);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let v: i64 = redis::cmd("GET").arg("{t}a").query(&mut c).unwrap();
            seen.push(v);
            if v >= ROUNDS * 100 {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    let mut raw = proxy.raw();
    for round in 0..ROUNDS {
        let mut bytes = enc(&[b"MULTI"]);
        for _ in 0..100 {
            bytes.extend_from_slice(&enc(&[b"INCR", b"{t}a"]));
        }
        bytes.extend_from_slice(&enc(&[b"EXEC"]));
        raw.send(&bytes);
        assert_eq!(raw.reply(), b"+OK\r\n");
        for _ in 0..100 {
            assert_eq!(raw.reply(), b"+QUEUED\r\n");
        }
        let mut want = b"*100\r\n".to_vec();
        for i in 1..=100 {
            want.extend_from_slice(format!(":{}\r\n", round * 100 + i).as_bytes());
        }
        assert_eq!(
            show(&raw.reply()),
            show(&want),
            "EXEC reply of round {round}"
        );
    }
    let seen = recv(&rx, "reader");
    reader.join().unwrap();
    let torn: Vec<i64> = seen.iter().copied().filter(|v| v % 100 != 0).collect();
    assert!(
        torn.is_empty(),
        "reader saw a transaction half done: {torn:?}"
    );
    assert_eq!(seen.last().copied(), Some(ROUNDS * 100));
}

#[test]
fn multi_exec_results_discard_and_errors() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--hash-tag", "{}"]);
    let mut raw = proxy.raw();
    // EXEC returns the array of results.
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"{t}x", b"1"]), b"+QUEUED\r\n");
    assert_eq!(raw.call(&[b"INCR", b"{t}x"]), b"+QUEUED\r\n");
    assert_eq!(raw.call(&[b"GET", b"{t}x"]), b"+QUEUED\r\n");
    assert_eq!(raw.call(&[b"PING"]), b"+QUEUED\r\n");
    assert_eq!(
        show(&raw.call(&[b"EXEC"])),
        show(b"*4\r\n+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n")
    );
    // Empty transaction.
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(show(&raw.call(&[b"EXEC"])), "*0\\r\\n");

    // Errors without / nested MULTI.
    assert_eq!(show(&raw.call(&[b"EXEC"])), "-ERR EXEC without MULTI\\r\\n");
    assert_eq!(
        show(&raw.call(&[b"DISCARD"])),
        "-ERR DISCARD without MULTI\\r\\n"
    );
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(
        show(&raw.call(&[b"MULTI"])),
        "-ERR MULTI calls can not be nested\\r\\n"
    );
    assert_eq!(raw.call(&[b"DISCARD"]), b"+OK\r\n");

    // DISCARD drops the queued commands.
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"{t}d", b"1"]), b"+QUEUED\r\n");
    assert_eq!(raw.call(&[b"DISCARD"]), b"+OK\r\n");
    assert_eq!(show(&raw.call(&[b"GET", b"{t}d"])), "$-1\\r\\n");
    assert_eq!(show(&raw.call(&[b"EXEC"])), "-ERR EXEC without MULTI\\r\\n");

    // Keys on different backends: the command's error, then EXECABORT; nothing ran.
    let (a, b) = two_backends(&proxy, "mx:");
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", a.as_bytes(), b"1"]), b"+QUEUED\r\n");
    assert_eq!(
        show(&raw.call(&[b"SET", b.as_bytes(), b"1"])),
        "-PROXYERROR keys are on different backends\\r\\n"
    );
    assert_eq!(
        show(&raw.call(&[b"EXEC"])),
        "-EXECABORT Transaction discarded because of previous errors.\\r\\n"
    );
    assert_eq!(show(&raw.call(&[b"GET", a.as_bytes()])), "$-1\\r\\n");
    assert_eq!(show(&raw.call(&[b"GET", b.as_bytes()])), "$-1\\r\\n");
    // A multi-key command spanning backends inside MULTI: same.
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    let e = raw.call(&[b"MGET", a.as_bytes(), b.as_bytes()]);
    assert!(e.starts_with(b"-"), "{}", show(&e));
    assert!(raw.call(&[b"EXEC"]).starts_with(b"-EXECABORT"));

    // An unknown command inside MULTI: its error, then EXECABORT.
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"{t}u", b"1"]), b"+QUEUED\r\n");
    let e = raw.call(&[b"NOSUCHCMD", b"x"]);
    assert!(
        e.starts_with(b"-ERR unknown command 'NOSUCHCMD'"),
        "{}",
        show(&e)
    );
    // Wrong arity too.
    let e = raw.call(&[b"GET"]);
    assert!(
        e.starts_with(b"-ERR wrong number of arguments"),
        "{}",
        show(&e)
    );
    assert_eq!(
        show(&raw.call(&[b"EXEC"])),
        "-EXECABORT Transaction discarded because of previous errors.\\r\\n"
    );
    assert_eq!(show(&raw.call(&[b"GET", b"{t}u"])), "$-1\\r\\n");
    // The connection is back to normal.
    assert_eq!(raw.call(&[b"SET", b"{t}u", b"2"]), b"+OK\r\n");
    assert_eq!(show(&raw.call(&[b"GET", b"{t}u"])), show(&bulk(b"2")));
}

#[test]
fn watch_conflict_and_no_conflict() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--hash-tag", "{}"]);
    let mut a = proxy.raw();
    let mut b = proxy.raw();
    // Conflict: B writes the watched key between WATCH and EXEC.
    assert_eq!(a.call(&[b"WATCH", b"{t}w"]), b"+OK\r\n");
    assert_eq!(b.call(&[b"SET", b"{t}w", b"from-b"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"SET", b"{t}w", b"from-a"]), b"+QUEUED\r\n");
    assert_eq!(show(&a.call(&[b"EXEC"])), "*-1\\r\\n");
    assert_eq!(show(&b.call(&[b"GET", b"{t}w"])), show(&bulk(b"from-b")));
    // No conflict.
    assert_eq!(a.call(&[b"WATCH", b"{t}w", b"{t}w2"]), b"+OK\r\n");
    assert_eq!(show(&a.call(&[b"GET", b"{t}w"])), show(&bulk(b"from-b")));
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"SET", b"{t}w", b"from-a"]), b"+QUEUED\r\n");
    assert_eq!(show(&a.call(&[b"EXEC"])), "*1\\r\\n+OK\\r\\n");
    assert_eq!(show(&b.call(&[b"GET", b"{t}w"])), show(&bulk(b"from-a")));
    // EXEC ended the watch: a later write by B does not abort a new transaction.
    assert_eq!(b.call(&[b"SET", b"{t}w", b"b2"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"INCR", b"{t}n"]), b"+QUEUED\r\n");
    assert_eq!(show(&a.call(&[b"EXEC"])), "*1\\r\\n:1\\r\\n");
    // UNWATCH ends it too.
    assert_eq!(a.call(&[b"WATCH", b"{t}w"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"UNWATCH"]), b"+OK\r\n");
    assert_eq!(b.call(&[b"SET", b"{t}w", b"b3"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"SET", b"{t}w", b"a3"]), b"+QUEUED\r\n");
    assert_eq!(show(&a.call(&[b"EXEC"])), "*1\\r\\n+OK\\r\\n");
    // DISCARD ends it too.
    assert_eq!(a.call(&[b"WATCH", b"{t}w"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"DISCARD"]), b"+OK\r\n");
    assert_eq!(b.call(&[b"SET", b"{t}w", b"b4"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(a.call(&[b"GET", b"{t}w"]), b"+QUEUED\r\n");
    assert_eq!(show(&a.call(&[b"EXEC"])), show(b"*1\r\n$2\r\nb4\r\n"));
    // WATCH of keys on different backends is refused; WATCH inside MULTI is an error.
    let (x, y) = two_backends(&proxy, "wx:");
    assert_eq!(
        show(&a.call(&[b"WATCH", x.as_bytes(), y.as_bytes()])),
        "-PROXYERROR keys are on different backends\\r\\n"
    );
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    assert!(a
        .call(&[b"WATCH", b"{t}w"])
        .starts_with(b"-ERR WATCH inside MULTI"));
    assert_eq!(a.call(&[b"DISCARD"]), b"+OK\r\n");
    // Transaction on a key of another backend than the watched one: conflict with the pin.
    assert_eq!(a.call(&[b"WATCH", b"{t}w"]), b"+OK\r\n");
    let other = names_where(&proxy, "wo:", 1, |n| n != backendnum(&proxy, "{t}w")).remove(0);
    assert_eq!(a.call(&[b"MULTI"]), b"+OK\r\n");
    let e = a.call(&[b"SET", other.as_bytes(), b"1"]);
    assert_eq!(show(&e), "-PROXYERROR keys are on different backends\\r\\n");
    assert!(a.call(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(a.call(&[b"PING"]), b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// 7. Pub/sub
// ---------------------------------------------------------------------------

#[test]
fn subscribe_publish_counts_and_resp2_subscribe_mode() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    // Three channels on at least two backends.
    let a = "chan:0".to_string();
    let na = backendnum(&proxy, &a);
    let b = names_where(&proxy, "chan:", 1, |n| n != na).remove(0);
    let nb = backendnum(&proxy, &b);
    let c = names_where(&proxy, "chanc:", 1, |n| n != na && n != nb).remove(0);
    set(&proxy, "plain", "value");

    let mut sub = proxy.raw();
    sub.cmd(&[b"SUBSCRIBE", a.as_bytes(), b.as_bytes(), c.as_bytes()]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "subscribe", &a, 1))
    );
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "subscribe", &b, 2))
    );
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "subscribe", &c, 3))
    );
    // Subscribing again to one already held keeps the total.
    sub.cmd(&[b"SUBSCRIBE", b.as_bytes()]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "subscribe", &b, 3))
    );

    // Restrictions and PING in RESP2 subscribe mode.
    assert_eq!(
        show(&sub.call(&[b"GET", b"plain"])),
        show(b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n")
    );
    assert_eq!(
        show(&sub.call(&[b"PING"])),
        show(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    );
    assert_eq!(
        show(&sub.call(&[b"PING", b"hi"])),
        show(b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n")
    );

    // Messages from another client connection, on each channel.
    let mut publisher = proxy.raw();
    for (i, ch) in [&a, &b, &c].iter().enumerate() {
        let msg = format!("m{i}");
        assert_eq!(
            publisher.call(&[b"PUBLISH", ch.as_bytes(), msg.as_bytes()]),
            b":1\r\n",
            "PUBLISH {ch}"
        );
        assert_eq!(
            show(&sub.reply()),
            show(&arr(&[b"message", ch.as_bytes(), msg.as_bytes()]))
        );
    }
    // A second subscriber on one channel: PUBLISH counts both.
    let mut sub2 = proxy.raw();
    sub2.cmd(&[b"SUBSCRIBE", a.as_bytes()]);
    assert_eq!(
        show(&sub2.reply()),
        show(&confirmation("*", "subscribe", &a, 1))
    );
    assert_eq!(
        publisher.call(&[b"PUBLISH", a.as_bytes(), b"both"]),
        b":2\r\n"
    );
    assert_eq!(
        show(&sub.reply()),
        show(&arr(&[b"message", a.as_bytes(), b"both"]))
    );
    assert_eq!(
        show(&sub2.reply()),
        show(&arr(&[b"message", a.as_bytes(), b"both"]))
    );

    // Unsubscribe one, then all: counts are totals, then normal mode again.
    sub.cmd(&[b"UNSUBSCRIBE", b.as_bytes()]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "unsubscribe", &b, 2))
    );
    assert_eq!(
        publisher.call(&[b"PUBLISH", b.as_bytes(), b"gone"]),
        b":0\r\n"
    );
    sub.cmd(&[b"UNSUBSCRIBE"]);
    let mut left = BTreeSet::new();
    let mut counts = Vec::new();
    for _ in 0..2 {
        let r = sub.reply();
        let text = String::from_utf8_lossy(&r).to_string();
        let parts: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(&parts[..3], &["*3", "$11", "unsubscribe"], "{text:?}");
        left.insert(parts[4].to_string());
        counts.push(int(format!("{}\r\n", parts[5]).as_bytes()));
    }
    assert_eq!(left, BTreeSet::from([a.clone(), c.clone()]));
    assert_eq!(counts, vec![1, 0]);
    assert_eq!(show(&sub.call(&[b"GET", b"plain"])), show(&bulk(b"value")));
    assert_eq!(sub.call(&[b"PING"]), b"+PONG\r\n");
    // Nothing subscribed: UNSUBSCRIBE answers Redis's nil-name confirmation.
    assert_eq!(
        show(&sub.call(&[b"UNSUBSCRIBE"])),
        show(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n")
    );
    assert_eq!(show(&sub.call(&[b"GET", b"plain"])), show(&bulk(b"value")));
    // sub2 still gets messages; sub does not.
    assert_eq!(
        publisher.call(&[b"PUBLISH", a.as_bytes(), b"last"]),
        b":1\r\n"
    );
    assert_eq!(
        show(&sub2.reply()),
        show(&arr(&[b"message", a.as_bytes(), b"last"]))
    );
    // The subscription connections went back: no backend client of sub's is subscribed
    // except sub2's one.
    poll_until(
        "one subscribed backend connection (sub2's)",
        secs(15),
        ms(20),
        || {
            let lines: Vec<Vec<String>> = (0..4).map(|n| backend_clients(&proxy, n)).collect();
            let subscribed = lines
                .iter()
                .flatten()
                .filter(|l| !l.contains(" sub=0 ") || !l.contains(" psub=0 "))
                .count();
            if subscribed == 1 {
                Ok(())
            } else {
                Err(format!("{lines:?}"))
            }
        },
    );
}

/// Confirmation counts follow request order even when channels live on different backends
/// (whose confirmations can arrive in any order): `SUBSCRIBE c1..c40` answers 1..40.
#[test]
fn subscribe_counts_follow_request_order_across_backends() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let per = spread(&proxy, "ord:", 10);
    // Round-robin over the backends: b0, b1, b2, b3, b0, ...
    let chans: Vec<String> = (0..10)
        .flat_map(|i| (0..4).map(move |b| (b, i)))
        .map(|(b, i)| per[b * 10 + i].clone())
        .collect();
    for kind in ["subscribe", "ssubscribe"] {
        let mut sub = proxy.raw();
        for round in 0..5 {
            let cmd = kind.to_ascii_uppercase();
            let args: Vec<&[u8]> = std::iter::once(cmd.as_bytes())
                .chain(chans.iter().map(|c| c.as_bytes()))
                .collect();
            sub.cmd(&args);
            let got: Vec<String> = (0..chans.len()).map(|_| show(&sub.reply())).collect();
            let want: Vec<String> = chans
                .iter()
                .enumerate()
                .map(|(i, ch)| show(&confirmation("*", kind, ch, i as i64 + 1)))
                .collect();
            assert_eq!(got, want, "{kind} round {round}");
            let (un, un_kind) = if kind == "ssubscribe" {
                ("SUNSUBSCRIBE".to_string(), "sunsubscribe".to_string())
            } else {
                ("UNSUBSCRIBE".to_string(), "unsubscribe".to_string())
            };
            let args: Vec<&[u8]> = std::iter::once(un.as_bytes())
                .chain(chans.iter().map(|c| c.as_bytes()))
                .collect();
            sub.cmd(&args);
            let got: Vec<String> = (0..chans.len()).map(|_| show(&sub.reply())).collect();
            let want: Vec<String> = chans
                .iter()
                .enumerate()
                .map(|(i, ch)| {
                    show(&confirmation(
                        "*",
                        &un_kind,
                        ch,
                        (chans.len() - i - 1) as i64,
                    ))
                })
                .collect();
            assert_eq!(got, want, "{un_kind} round {round}");
            assert_eq!(sub.call(&[b"PING"]), b"+PONG\r\n");
        }
    }
}

#[test]
fn psubscribe_receives_from_every_backend() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    // Four channels on each backend; news:0 is the first on backend 0.
    let mut chans = spread(&proxy, "news:", 4);
    if let Some(i) = chans.iter().position(|c| c == "news:0") {
        chans.swap(0, i);
    } else {
        chans.insert(0, "news:0".into());
    }

    let mut sub = proxy.raw();
    sub.cmd(&[b"PSUBSCRIBE", b"news:*"]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "psubscribe", "news:*", 1))
    );
    sub.cmd(&[b"SUBSCRIBE", b"news:0"]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "subscribe", "news:0", 2))
    );
    sub.cmd(&[b"PSUBSCRIBE", b"other:*"]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "psubscribe", "other:*", 3))
    );

    let mut publisher = proxy.client();
    let mut want = BTreeSet::new();
    for (i, ch) in chans.iter().enumerate() {
        let msg = format!("n{i}");
        let n: i64 = redis::cmd("PUBLISH")
            .arg(ch)
            .arg(&msg)
            .query(&mut publisher)
            .unwrap();
        let receivers = if i == 0 { 2 } else { 1 };
        assert_eq!(
            n,
            receivers,
            "PUBLISH {ch} (backend {})",
            backendnum(&proxy, ch)
        );
        want.insert(show(&{
            let mut m = b"*4\r\n".to_vec();
            for p in [
                b"pmessage".as_slice(),
                b"news:*",
                ch.as_bytes(),
                msg.as_bytes(),
            ] {
                m.extend_from_slice(&bulk(p));
            }
            m
        }));
        if i == 0 {
            want.insert(show(&arr(&[b"message", ch.as_bytes(), msg.as_bytes()])));
        }
    }
    let mut got = BTreeSet::new();
    for _ in 0..want.len() {
        got.insert(show(&sub.reply()));
    }
    assert_eq!(got, want);
    // PUNSUBSCRIBE all patterns, then UNSUBSCRIBE: back to normal.
    sub.cmd(&[b"PUNSUBSCRIBE"]);
    // (Names in sorted order; counts are the client's totals: 1 channel + patterns left.)
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "punsubscribe", "news:*", 2))
    );
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "punsubscribe", "other:*", 1))
    );
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news:5")
        .arg("x")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(n, 0);
    sub.cmd(&[b"UNSUBSCRIBE", b"news:0"]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "unsubscribe", "news:0", 0))
    );
    assert_eq!(sub.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
}

#[test]
fn ssubscribe_spublish() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let (a, b) = two_backends(&proxy, "shard:");
    let mut sub = proxy.raw();
    sub.cmd(&[b"SSUBSCRIBE", a.as_bytes(), b.as_bytes()]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "ssubscribe", &a, 1))
    );
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "ssubscribe", &b, 2))
    );
    let mut publisher = proxy.raw();
    for ch in [&a, &b] {
        assert_eq!(
            publisher.call(&[b"SPUBLISH", ch.as_bytes(), b"hi"]),
            b":1\r\n"
        );
        assert_eq!(
            show(&sub.reply()),
            show(&arr(&[b"smessage", ch.as_bytes(), b"hi"]))
        );
    }
    sub.cmd(&[b"SUNSUBSCRIBE", a.as_bytes(), b.as_bytes()]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "sunsubscribe", &a, 1))
    );
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation("*", "sunsubscribe", &b, 0))
    );
    assert_eq!(sub.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
}

#[test]
fn resp3_subscriber_gets_pushes_and_runs_commands() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    set(&proxy, "r3:key", "val");
    let mut sub = proxy.raw();
    let hello = sub.call(&[b"HELLO", b"3"]);
    assert!(hello.starts_with(b"%"), "{}", show(&hello));
    let (a, b) = two_backends(&proxy, "r3ch:");
    // One SUBSCRIBE per channel: the counts then do not depend on which backend answers
    // first (see subscribe_counts_follow_request_order_across_backends).
    sub.cmd(&[b"SUBSCRIBE", a.as_bytes()]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation(">", "subscribe", &a, 1))
    );
    sub.cmd(&[b"SUBSCRIBE", b.as_bytes()]);
    assert_eq!(
        show(&sub.reply()),
        show(&confirmation(">", "subscribe", &b, 2))
    );
    // Normal commands while subscribed.
    assert_eq!(show(&sub.call(&[b"GET", b"r3:key"])), show(&bulk(b"val")));
    assert_eq!(sub.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(sub.call(&[b"SET", b"r3:other", b"x"]), b"+OK\r\n");
    let mut publisher = proxy.raw();
    for ch in [&a, &b] {
        assert_eq!(
            publisher.call(&[b"PUBLISH", ch.as_bytes(), b"pushed"]),
            b":1\r\n"
        );
        let mut want = b">3\r\n".to_vec();
        for p in [b"message".as_slice(), ch.as_bytes(), b"pushed"] {
            want.extend_from_slice(&bulk(p));
        }
        assert_eq!(show(&sub.reply()), show(&want));
    }
    assert_eq!(show(&sub.call(&[b"GET", b"r3:other"])), show(&bulk(b"x")));
    sub.cmd(&[b"UNSUBSCRIBE"]);
    let r1 = sub.reply();
    let r2 = sub.reply();
    assert!(
        r1.starts_with(b">3\r\n$11\r\nunsubscribe\r\n"),
        "{}",
        show(&r1)
    );
    assert!(
        r2.starts_with(b">3\r\n$11\r\nunsubscribe\r\n"),
        "{}",
        show(&r2)
    );
    // Totals 1 and 0 (their order across backends: see
    // subscribe_counts_follow_request_order_across_backends).
    let tails: BTreeSet<bool> = [&r1, &r2].iter().map(|r| r.ends_with(b":0\r\n")).collect();
    assert_eq!(
        tails,
        BTreeSet::from([false, true]),
        "{} {}",
        show(&r1),
        show(&r2)
    );
    assert_eq!(show(&sub.call(&[b"GET", b"r3:key"])), show(&bulk(b"val")));
}

// ---------------------------------------------------------------------------
// 8. PUBSUB introspection
// ---------------------------------------------------------------------------

#[test]
fn pubsub_channels_numsub_numpat_aggregate() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    // Two channels on each backend.
    let chans = spread(&proxy, "agg:", 2);
    let mut s1 = proxy.raw();
    let args: Vec<&[u8]> = std::iter::once(b"SUBSCRIBE".as_slice())
        .chain(chans.iter().map(|c| c.as_bytes()))
        .collect();
    s1.cmd(&args);
    // (Names in request order; the counts' order is checked by
    // subscribe_counts_follow_request_order_across_backends, here only that they are totals.)
    let mut counts = BTreeSet::new();
    for ch in &chans {
        let r = s1.reply();
        let head = confirmation("*", "subscribe", ch, 0);
        assert!(r.starts_with(&head[..head.len() - 4]), "{}", show(&r));
        counts.insert(int(&r[head.len() - 4..]));
    }
    assert_eq!(counts, (1..=8).collect::<BTreeSet<i64>>());
    // A second subscriber on one channel of backend 0 and one of backend 1.
    let mut s2 = proxy.raw();
    s2.cmd(&[b"SUBSCRIBE", chans[0].as_bytes(), chans[2].as_bytes()]);
    s2.reply();
    s2.reply();
    let mut s3 = proxy.raw();
    s3.cmd(&[b"PSUBSCRIBE", b"p:*", b"q:*"]);
    assert_eq!(
        show(&s3.reply()),
        show(&confirmation("*", "psubscribe", "p:*", 1))
    );
    assert_eq!(
        show(&s3.reply()),
        show(&confirmation("*", "psubscribe", "q:*", 2))
    );

    let mut c = proxy.client();
    let mut got: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query(&mut c).unwrap();
    got.sort();
    let mut all = chans.clone();
    all.sort();
    assert_eq!(got, all);
    let mut got: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("agg:*")
        .query(&mut c)
        .unwrap();
    got.sort();
    assert_eq!(got, all);
    let got: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(&chans[7])
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec![chans[7].clone()]);
    let num: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&chans[0])
        .arg(&chans[2])
        .arg(&chans[4])
        .arg(&chans[7])
        .arg("nochan")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        num,
        vec![
            (chans[0].clone(), 2),
            (chans[2].clone(), 2),
            (chans[4].clone(), 1),
            (chans[7].clone(), 1),
            ("nochan".to_string(), 0),
        ]
    );
    let np: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut c).unwrap();
    assert_eq!(np, 2);
    // After everyone leaves, all empty.
    drop(s1);
    drop(s2);
    drop(s3);
    poll_until(
        "the subscriptions to end with their clients",
        secs(15),
        ms(20),
        || {
            let ch: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query(&mut c).unwrap();
            let np: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut c).unwrap();
            if ch.is_empty() && np == 0 {
                Ok(())
            } else {
                Err(format!("channels {ch:?}, {np} patterns"))
            }
        },
    );
}

// ---------------------------------------------------------------------------
// 9. redis-py
// ---------------------------------------------------------------------------

#[test]
fn redis_py_pubsub_and_transactions() {
    assert!(
        python_ok(),
        "python3 with the `redis` module is required (pip install redis)"
    );
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--hash-tag", "{}"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/stateful.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(proxy.port.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "redis-py script failed ({}):\nstdout:\n{}\nstderr:\n{}\nproxy log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
}

// ---------------------------------------------------------------------------
// 10. Throughput with 100 blocked clients
// ---------------------------------------------------------------------------

/// Run redis-benchmark; assert it is clean; return its output's "requests per second" lines.
fn benchmark(port: u16) -> String {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "get,set", "-n", "20000", "-c", "20", "-q"])
        .output()
        .expect("run redis-benchmark");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "redis-benchmark failed: {text}");
    let bad: Vec<&str> = text
        .split(['\n', '\r'])
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("err ")
        })
        .collect();
    assert!(bad.is_empty(), "error lines: {bad:?}\nfull output: {text}");
    let rps: Vec<&str> = text
        .split(['\n', '\r'])
        .filter(|l| l.contains("requests per second"))
        .collect();
    assert!(
        rps.iter().any(|l| l.starts_with("SET:")) && rps.iter().any(|l| l.starts_with("GET:")),
        "{text}"
    );
    rps.join(" | ")
}

#[test]
fn throughput_with_100_blocked_clients() {
    let servers = redises(4);
    let mut proxy = Proxy::start(&refs(&servers), &["--private-connections", "200"]);
    let without = benchmark(proxy.port);

    // 25 lists on each backend.
    let keys = spread(&proxy, "tp:list:", 25);
    let mut blocked: Vec<Raw> = Vec::new();
    for k in &keys {
        let mut r = proxy.raw();
        r.cmd(&[b"BLPOP", k.as_bytes(), b"0"]);
        blocked.push(r);
    }
    poll_until("all 100 BLPOPs to block", secs(15), ms(20), || {
        let counts: Vec<usize> = (0..4).map(|n| count_cmd(&proxy, n, "blpop")).collect();
        if counts.iter().sum::<usize>() == 100 {
            Ok(())
        } else {
            Err(format!("blocked per backend: {counts:?}"))
        }
    });
    let with = benchmark(proxy.port);
    eprintln!("redis-benchmark without blocked clients: {without}");
    eprintln!("redis-benchmark with 100 blocked clients: {with}");
    // Still all blocked (the benchmark neither consumed nor disturbed them).
    assert_eq!(
        (0..4).map(|n| count_cmd(&proxy, n, "blpop")).sum::<usize>(),
        100
    );

    let mut c = proxy.client();
    let mut p = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        p.cmd("LPUSH").arg(k).arg(format!("val{i}")).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    for (i, r) in blocked.iter_mut().enumerate() {
        let v = format!("val{i}");
        assert_eq!(
            show(&r.reply()),
            show(&arr(&[keys[i].as_bytes(), v.as_bytes()]))
        );
    }
    for k in &keys {
        let n: i64 = redis::cmd("LLEN").arg(k).query(&mut c).unwrap();
        assert_eq!(n, 0, "{k}");
    }
    assert!(proxy.alive());
    let _ = std::io::stderr().flush();
}
