//! Regression tests for the review fixes of commit 7c392ce: subscriptions exempt from the request
//! timeout, late pub/sub messages never taken as replies, idle private connections of a removed
//! server closed on reload, a failed SUBSCRIBE leaving no phantom channel, and a late handshake
//! refusal still seen. Real redis-server processes where the behaviour can be produced with one;
//! small scripted fake backends (std TcpListener threads) where a backend must misbehave.
//! All waits are bounded; processes are killed by PID (common::Redis / common::Proxy drops).

mod common;

use common::{free_port, ms, poll_until, secs, tmp_dir, try_poll_until, Proxy, Raw, Redis};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

/// `BACKENDNUM key` through the proxy.
fn backend_num(raw: &mut Raw, key: &str) -> i64 {
    let r = raw.call(&[b"BACKENDNUM", key.as_bytes()]);
    let s = show(&r);
    s.strip_prefix(':')
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("BACKENDNUM {key}: {s}"))
}

/// The first key `{prefix}{i}` that the proxy places on backend `idx`.
fn key_on(raw: &mut Raw, prefix: &str, idx: i64) -> String {
    for i in 0..1000 {
        let k = format!("{prefix}{i}");
        if backend_num(raw, &k) == idx {
            return k;
        }
    }
    panic!("no key with prefix {prefix} on backend {idx}");
}

// ---------------------------------------------------------------------------------------------
// A scripted fake backend
// ---------------------------------------------------------------------------------------------

/// Parse one RESP array of bulk strings from `buf`: (args, bytes consumed).
fn parse_cmd(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let rel = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[at..at + rel], at + rel + 2))
    }
    if buf.first() != Some(&b'*') {
        // Inline command (not expected from the proxy): up to the line end.
        let (l, next) = line(buf, 0)?;
        let args = l
            .split(|&b| b == b' ')
            .filter(|a| !a.is_empty())
            .map(|a| a.to_vec())
            .collect();
        return Some((args, next));
    }
    let (l, mut at) = line(buf, 0)?;
    let n: usize = std::str::from_utf8(&l[1..]).ok()?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let (l, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(l.get(1..)?).ok()?.parse().ok()?;
        let end = next + len;
        if buf.len() < end + 2 {
            return None;
        }
        args.push(buf[next..end].to_vec());
        at = end + 2;
    }
    Some((args, at))
}

/// A fake backend on a free port: every connection is served by its own thread, one command at
/// a time, in order; `handler(args, per_connection_counter)` returns (delay ms, reply bytes).
/// The threads end when the proxy closes its connections (or with the test process).
fn fake_backend<F>(handler: F) -> u16
where
    F: Fn(&[Vec<u8>], &mut u32) -> (u64, Vec<u8>) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let handler = handler.clone();
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut state = 0u32;
                let mut buf: Vec<u8> = Vec::new();
                let mut tmp = [0u8; 16384];
                loop {
                    while let Some((args, used)) = parse_cmd(&buf) {
                        buf.drain(..used);
                        if args.is_empty() {
                            continue;
                        }
                        let (delay, reply) = handler(&args, &mut state);
                        if delay > 0 {
                            sleep_ms(delay);
                        }
                        if s.write_all(&reply).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    port
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// A (un)subscribe confirmation for each channel, as Redis sends them (RESP2).
fn sub_confirm(kind: &str, chans: &[Vec<u8>], first_count: i64, step: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, ch) in chans.iter().enumerate() {
        out.extend_from_slice(b"*3\r\n");
        bulk(&mut out, kind.as_bytes());
        bulk(&mut out, ch);
        out.extend_from_slice(format!(":{}\r\n", first_count + step * i as i64).as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Subscriptions are exempt from the request timeout
// ---------------------------------------------------------------------------------------------

/// Before the fix a SUBSCRIBE confirmation slower than `timeout` was answered with a timeout
/// error and its late confirmation dropped, leaving the client's subscribe state waiting for it
/// forever (every later command refused with "Can't execute ..."). Now it waits.
#[test]
fn subscribe_slower_than_timeout_keeps_client_usable() {
    let first_sub = Arc::new(AtomicBool::new(true));
    let fs = first_sub.clone();
    let port_b = fake_backend(move |args, _| {
        let cmd = upper(&args[0]);
        match cmd.as_str() {
            "SUBSCRIBE" => {
                let delay = if fs.swap(false, Ordering::SeqCst) {
                    1200
                } else {
                    0
                };
                (delay, sub_confirm("subscribe", &args[1..], 1, 1))
            }
            "UNSUBSCRIBE" => (0, sub_confirm("unsubscribe", &args[1..], 0, 0)),
            "GET" => (0, b"$-1\r\n".to_vec()),
            "PING" => (0, b"+PONG\r\n".to_vec()),
            _ => (0, b"+OK\r\n".to_vec()),
        }
    });
    let port = free_port();
    let proxy = Proxy::spawn(
        port,
        &[
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "-b".into(),
            format!("127.0.0.1:{port_b}"),
            "--timeout".into(),
            "300".into(),
        ],
    );
    let mut raw = proxy.raw();
    let r = raw.call(&[b"SUBSCRIBE", b"ch"]);
    assert_eq!(
        show(&r),
        "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
        "slow SUBSCRIBE must get its confirmation, not a timeout; log: {}",
        proxy.log()
    );
    let r = raw.call(&[b"UNSUBSCRIBE", b"ch"]);
    assert_eq!(
        show(&r),
        "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n",
        "UNSUBSCRIBE after a slow SUBSCRIBE"
    );
    let r = raw.call(&[b"GET", b"x"]);
    assert_eq!(
        show(&r),
        "$-1\r\n",
        "client must be back in normal mode; log: {}",
        proxy.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Late messages after the last unsubscribe are never replies
// ---------------------------------------------------------------------------------------------

/// Before the fix, when a client's last PUNSUBSCRIBE was confirmed (by backend 0), its
/// subscription connections went back to the private pool with `pubsub` off while another
/// backend could still be sending messages published before it processed the PUNSUBSCRIBE:
/// those were then taken as replies (the next BLPOP borrowing the connection got a pmessage, and
/// the leftovers were logged as "reply to no request"). Backend 1 is made late deterministically:
/// a direct connection pipelines DEBUG SLEEP then PUBLISHes, which Redis runs right after the
/// sleep, before it reads the proxy's PUNSUBSCRIBE.
#[test]
fn late_messages_after_punsubscribe_are_not_replies() {
    let r0 = Redis::start();
    let r1 = Redis::start();
    let proxy = Proxy::start(&[&r0, &r1], &[]);

    let mut a = proxy.raw();
    let r = a.call(&[b"PSUBSCRIBE", b"p*"]);
    assert_eq!(show(&r), "*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:1\r\n");

    // Backend 1's subscription is in place once a direct PUBLISH there reaches a subscriber.
    let mut d1 = Raw::connect(r1.port);
    d1.call_until(
        "the pattern subscription to reach backend 1",
        secs(5),
        ms(10),
        &[b"PUBLISH", b"pz", b"probe"],
        b":1\r\n",
    );
    let m = a.reply();
    assert!(show(&m).contains("probe"), "probe message: {}", show(&m));

    // A publisher floods through the proxy (channels on both backends) while A is subscribed.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (stop, published, port) = (stop.clone(), published.clone(), proxy.port);
        thread::spawn(move || {
            let mut p = Raw::connect(port);
            for round in 0..500 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut out = Vec::new();
                for i in 0..20 {
                    let ch = format!("p{}", (round * 20 + i) % 64);
                    rustproxy::resp::write_command(
                        &mut out,
                        [b"PUBLISH".as_slice(), ch.as_bytes(), b"flood-payload"],
                    );
                }
                p.send(&out);
                for _ in 0..20 {
                    let r = p.reply();
                    assert!(r.starts_with(b":"), "PUBLISH reply: {}", show(&r));
                }
                published.fetch_add(20, Ordering::SeqCst);
            }
        })
    };
    // Let some flood through (bounded; the test goes on either way).
    let _ = try_poll_until(ms(2500), ms(5), || match published.load(Ordering::SeqCst) {
        n if n >= 200 => Ok(()),
        n => Err(n),
    });

    // Backend 1 sleeps, then publishes 100 messages matching p* before reading anything else.
    let mut late = Vec::new();
    rustproxy::resp::write_command(&mut late, [b"DEBUG".as_slice(), b"SLEEP", b"0.8"]);
    for i in 0..100 {
        let payload = format!("late-{i}");
        rustproxy::resp::write_command(
            &mut late,
            [
                b"PUBLISH".as_slice(),
                format!("p{i}").as_bytes(),
                payload.as_bytes(),
            ],
        );
    }
    d1.send(&late);
    sleep_ms(150); // backend 1 has read the pipeline and is asleep

    // A leaves: backend 0 confirms at once, backend 1 only after its late messages.
    a.cmd(&[b"PUNSUBSCRIBE", b"p*"]);
    let mut confirmed = false;
    for _ in 0..100_000 {
        let r = a.reply();
        if r.windows(12).any(|w| w == b"punsubscribe") {
            assert_eq!(show(&r), "*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n");
            confirmed = true;
            break;
        }
        assert!(show(&r).contains("pmessage"), "while leaving: {}", show(&r));
    }
    assert!(confirmed, "no PUNSUBSCRIBE confirmation");
    stop.store(true, Ordering::SeqCst);

    // Clients borrowing private connections of backend 1 while its late messages arrive.
    let mut probe = proxy.raw();
    let lists: Vec<String> = (0..3)
        .map(|i| key_on(&mut probe, &format!("l{i}-"), 1))
        .collect();
    let mut blockers: Vec<Raw> = (0..3).map(|_| proxy.raw()).collect();
    for (c, l) in blockers.iter_mut().zip(&lists) {
        c.cmd(&[b"BLPOP", l.as_bytes(), b"0.1"]);
    }
    for (c, l) in blockers.iter_mut().zip(&lists) {
        let r = c.reply();
        assert_eq!(
            show(&r),
            "*-1\r\n",
            "BLPOP {l} got something else than its timeout; log: {}",
            proxy.log()
        );
    }
    // More rounds, on both backends, plus plain commands.
    for round in 0..3 {
        for (i, c) in blockers.iter_mut().enumerate() {
            let l = format!("list-{round}-{i}");
            let r = c.call(&[b"BLPOP", l.as_bytes(), b"0.1"]);
            assert_eq!(show(&r), "*-1\r\n", "BLPOP {l}");
            let k = format!("key-{round}-{i}");
            let v = format!("val-{round}-{i}");
            assert_eq!(c.call(&[b"SET", k.as_bytes(), v.as_bytes()]), b"+OK\r\n");
            let r = c.call(&[b"GET", k.as_bytes()]);
            assert_eq!(show(&r), format!("${}\r\n{v}\r\n", v.len()), "GET {k}");
        }
    }
    // A is a normal client again.
    assert_eq!(a.call(&[b"SET", b"ka", b"va"]), b"+OK\r\n");
    assert_eq!(show(&a.call(&[b"GET", b"ka"])), "$2\r\nva\r\n");

    // Backend 1 is awake (its direct pipeline answered): +OK then 100 PUBLISH counts.
    assert_eq!(d1.reply(), b"+OK\r\n");
    for _ in 0..100 {
        let r = d1.reply();
        assert!(r.starts_with(b":"), "late PUBLISH: {}", show(&r));
    }
    publisher.join().expect("publisher thread");
    // One more round trip through backend 1's private connections after the late messages.
    for (c, l) in blockers.iter_mut().zip(&lists) {
        let r = c.call(&[b"BLPOP", l.as_bytes(), b"0.05"]);
        assert_eq!(show(&r), "*-1\r\n", "BLPOP {l} after the late messages");
    }
    let log = proxy.log();
    assert!(
        !log.contains("reply to no request"),
        "late messages were taken as replies; log: {log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A removed server's idle private connections are closed
// ---------------------------------------------------------------------------------------------

fn client_count(r: &Redis) -> usize {
    let mut c = r.client();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut c)
        .expect("CLIENT LIST");
    list.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Before the fix a reload that removed a server closed only its shared connections: the idle
/// private ones (left by blocking commands) stayed open to the removed server forever.
#[test]
fn removed_server_idle_private_connections_close() {
    let a = Redis::start();
    let b = Redis::start();
    let port = free_port();
    let text = |servers: &[(&Redis, &str)]| {
        let mut t = format!(
            "pool main\n    listen 127.0.0.1:{port}\n    distribution ketama\n    timeout 5000\n"
        );
        for (r, name) in servers {
            t.push_str(&format!("    server 127.0.0.1:{}:1 {name}\n", r.port));
        }
        t
    };
    let dir = tmp_dir("regress-reload");
    let path = dir.join("proxy.conf");
    std::fs::write(&path, text(&[(&a, "a"), (&b, "b")])).expect("write config");
    let proxy = Proxy::spawn(port, &["-c".into(), path.to_string_lossy().into_owned()]);

    // Keys of backend b (its position is 1: servers in file order).
    let mut probe = proxy.raw();
    let keys: Vec<String> = (0..3)
        .map(|i| key_on(&mut probe, &format!("bk{i}-"), 1))
        .collect();
    // Sanity: really on b.
    let mut c = proxy.client();
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut c).unwrap();
        let _: () = redis::cmd("DEL").arg(k).query(&mut c).unwrap();
    }
    let mut direct_b = b.client();
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut c).unwrap();
        let n: i64 = redis::cmd("EXISTS").arg(k).query(&mut direct_b).unwrap();
        assert_eq!(n, 1, "{k} is not on backend b");
        let _: () = redis::cmd("DEL").arg(k).query(&mut c).unwrap();
    }
    drop(direct_b);

    // Concurrent BLPOPs: several private connections to b, idle afterwards.
    let mut blockers: Vec<Raw> = (0..3).map(|_| proxy.raw()).collect();
    for (r, k) in blockers.iter_mut().zip(&keys) {
        r.cmd(&[b"BLPOP", k.as_bytes(), b"0.05"]);
    }
    for r in blockers.iter_mut() {
        assert_eq!(show(&r.reply()), "*-1\r\n");
    }
    // b now has: our CLIENT LIST connection, the proxy's shared one(s), the idle private ones.
    let before = client_count(&b);
    assert!(
        before >= 3,
        "expected idle private connections on b, {before} clients"
    );

    // Reload without b.
    std::fs::write(&path, text(&[(&a, "a")])).expect("rewrite config");
    let r = probe.call(&[b"PROXY", b"RELOAD"]);
    assert!(
        r.starts_with(b"$") || r.starts_with(b"+"),
        "reload: {}",
        show(&r)
    );

    // Bounded wait until only our own direct connection is left on b.
    let what = format!(
        "the proxy's connections to the removed server b to close ({before} before the reload)"
    );
    poll_until(&what, secs(10), ms(50), || match client_count(&b) {
        1 => Ok(()),
        n => Err(format!("{n} clients on b")),
    });
    // The proxy still serves (everything on a now).
    assert_eq!(probe.call(&[b"SET", b"after", b"1"]), b"+OK\r\n");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 4. A SUBSCRIBE that could not be sent leaves no phantom channel
// ---------------------------------------------------------------------------------------------

/// Before the fix a SUBSCRIBE whose backend was down got its error, but the channel stayed in
/// the client's subscription set: the client stayed in subscribe mode (RESP2: every later GET
/// refused) with a subscription that did not exist.
#[test]
fn failed_subscribe_leaves_no_phantom_channel() {
    let live = Redis::start();
    let dead_port = free_port(); // nothing listens there
    let port = free_port();
    let proxy = Proxy::spawn(
        port,
        &[
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "-b".into(),
            format!("{},127.0.0.1:{dead_port}", live.addr()),
        ],
    );
    let mut raw = proxy.raw();
    let ch = key_on(&mut raw, "ch", 1);
    let dead_key = key_on(&mut raw, "dk", 1);
    let live_key = key_on(&mut raw, "x", 0);

    let mut failed_once = false;
    for _ in 0..5 {
        // Mark the dead backend down (a few failures lengthen its backoff) so the SUBSCRIBE
        // right after is refused at once.
        for _ in 0..4 {
            let r = raw.call(&[b"GET", dead_key.as_bytes()]);
            assert!(r.starts_with(b"-"), "GET on a dead backend: {}", show(&r));
        }
        let r = raw.call(&[b"SUBSCRIBE", ch.as_bytes()]);
        assert!(
            r.starts_with(b"-"),
            "SUBSCRIBE on a dead backend: {}",
            show(&r)
        );
        failed_once = true;
        // Not in subscribe mode: a plain GET works.
        let r = raw.call(&[b"GET", live_key.as_bytes()]);
        assert_eq!(
            show(&r),
            "$-1\r\n",
            "after a failed SUBSCRIBE the client must not be in subscribe mode"
        );
        let r = raw.call(&[b"PING"]);
        assert_eq!(show(&r), "+PONG\r\n", "PING after a failed SUBSCRIBE");
    }
    assert!(failed_once);
}

// ---------------------------------------------------------------------------------------------
// 5. A handshake refusal arriving after the timeout is still seen
// ---------------------------------------------------------------------------------------------

/// Before the fix the proxy's own AUTH was marked as an orphan when it timed out, so a late
/// `-WRONGPASS` was dropped and the connection kept being used unauthenticated: every request
/// got `-NOAUTH` forever. Now the refusal marks the backend down ("handshake refused").
#[test]
fn late_handshake_refusal_is_seen() {
    let port_b = fake_backend(|args, _| {
        let cmd = upper(&args[0]);
        match cmd.as_str() {
            "AUTH" | "HELLO" => (
                1000,
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n".to_vec(),
            ),
            "PING" => (0, b"-NOAUTH Authentication required.\r\n".to_vec()),
            _ => (0, b"-NOAUTH Authentication required.\r\n".to_vec()),
        }
    });
    let port = free_port();
    let proxy = Proxy::spawn(
        port,
        &[
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "-b".into(),
            format!("127.0.0.1:{port_b}"),
            "--timeout".into(),
            "300".into(),
            "--redis-auth".into(),
            "pw".into(),
        ],
    );
    let mut raw = proxy.raw();
    assert_eq!(show(&raw.call(&[b"AUTH", b"pw"])), "+OK\r\n");
    let mut seen = Vec::new();
    let refused = try_poll_until(secs(3), ms(50), || {
        let r = show(&raw.call(&[b"GET", b"k"]));
        if r.contains("handshake refused") {
            return Ok(());
        }
        seen.push(r);
        Err("no refusal yet")
    });
    assert!(
        refused.is_ok(),
        "never saw the late handshake refusal; replies: {seen:?}; log: {}",
        proxy.log()
    );
}

/// Commands held at a fence (SELECT waits for the replies before it) still run when the client
/// closes right after sending them, as one Redis runs everything it read: half-closed (FIN)
/// and closed without reading (the replies then meet a reset). The same stream to one
/// redis-server is the reference.
#[test]
fn commands_held_at_a_fence_run_after_the_client_closes() {
    use std::io::Write as _;
    let servers = common::redises(2);
    let reference = common::Redis::start();
    let proxy = common::Proxy::start(&[&servers[0], &servers[1]], &[]);
    let stream = |tag: &str| -> Vec<u8> {
        let mut cmds: Vec<Vec<String>> = Vec::new();
        for i in 0..40 {
            let db = (i % 3).to_string();
            cmds.push(vec!["SELECT".into(), db]);
            cmds.push(vec!["SET".into(), format!("{tag}:{i}"), format!("v{i}")]);
            cmds.push(vec!["INCR".into(), format!("{tag}:n")]);
        }
        common::enc_many(&cmds)
    };
    for (port, is_proxy) in [(reference.port, false), (proxy.port, true)] {
        for tag in ["fin", "drop"] {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&stream(tag)).unwrap();
            if tag == "fin" {
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }
            drop(s);
        }
        // Every write lands, in its database, as on one Redis.
        let mut c = common::Raw::connect(port);
        for tag in ["fin", "drop"] {
            common::poll_until(
                "the closed client's commands",
                std::time::Duration::from_secs(10),
                common::ms(20),
                || {
                    let mut seen = Vec::new();
                    for db in 0..3 {
                        c.call_str(&["SELECT", &db.to_string()]);
                        seen.push(c.call_str(&["GET", &format!("{tag}:n")]));
                        for i in (db..40).step_by(3) {
                            let got = c.call_str(&["GET", &format!("{tag}:{i}")]);
                            if got != common::bulk(format!("v{i}").as_bytes()) {
                                return Err(format!(
                                    "{tag}:{i} in db {db}: {got:?} (proxy {is_proxy})"
                                ));
                            }
                        }
                    }
                    let want: Vec<Vec<u8>> = ["14", "13", "13"]
                        .iter()
                        .map(|n| common::bulk(n.as_bytes()))
                        .collect();
                    if seen == want {
                        Ok(())
                    } else {
                        Err(format!("{tag}:n per db {seen:?} (proxy {is_proxy})"))
                    }
                },
            );
        }
    }
}
