//! End-to-end tests of failure handling and limits: backends killed, stopped, restarted, ejected
//! and misbehaving; partial split replies; slow readers and memory; client limits; oversized
//! requests; graceful shutdown; idle timeouts on both sides. Real redis-server processes (and a
//! scripted fake backend) on free loopback ports; every loop is bounded in count and time; no
//! test asserts a duration (timings are printed with eprintln only).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    brief as show, bulk, enc, free_port, ms, poll_until, redises, refs, rss_kib, secs, signal,
    try_poll_until, wait_until, Proxy, Raw, Redis,
};

// ---------------------------------------------------------------------------
// Helpers (local to this file)
// ---------------------------------------------------------------------------

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The name the proxy gives a backend configured without a name, and the start of every error
/// that names it: `-ERR backend 127.0.0.1:P (127.0.0.1:P) `.
fn backend_err_prefix(port: u16) -> String {
    format!("-ERR backend 127.0.0.1:{port} (127.0.0.1:{port}) ")
}

fn assert_backend_err(reply: &[u8], port: u16, what: &str) {
    let prefix = backend_err_prefix(port);
    assert!(
        reply.starts_with(prefix.as_bytes()) && reply.ends_with(b"\r\n"),
        "{what}: expected an error starting with {prefix:?}, got {}",
        show(reply)
    );
}

/// BACKENDNUM of `key` as the proxy sees it now.
fn backend_num(raw: &mut Raw, key: &str) -> i64 {
    let r = raw.call(&[b"BACKENDNUM", key.as_bytes()]);
    assert!(r.starts_with(b":"), "BACKENDNUM {key}: {}", show(&r));
    std::str::from_utf8(&r[1..r.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

/// `per` keys `prefix:i` for each of `n` backends, found with the proxy's BACKENDNUM.
fn keys_by_backend(port: u16, n: usize, prefix: &str, per: usize) -> Vec<Vec<String>> {
    let mut raw = Raw::connect(port);
    let mut out: Vec<Vec<String>> = vec![Vec::new(); n];
    for i in 0..100_000 {
        if out.iter().all(|v| v.len() >= per) {
            return out;
        }
        let key = format!("{prefix}:{i}");
        let b = backend_num(&mut raw, &key) as usize;
        if out[b].len() < per {
            out[b].push(key);
        }
    }
    panic!("could not find {per} keys per backend for {n} backends");
}

/// VmRSS of a process, in KiB.
fn rss_kb(pid: u32) -> u64 {
    rss_kib(pid).unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Is the redis-server on `port` busy (e.g. in DEBUG SLEEP)? A fresh connection's PING gets
/// no answer within a short read timeout.
fn redis_busy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(_n) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Wait (bounded) until the redis-server on `port` is busy.
fn wait_busy(port: u16) {
    wait_until(
        &format!("redis on {port} to be busy (DEBUG SLEEP forwarded)"),
        ms(500),
        ms(5),
        || redis_busy(port),
    );
}

/// Does `server` hold `key` (EXISTS on a direct connection)?
fn exists_on(server: &Redis, key: &str) -> bool {
    let mut c = server.client();
    let n: i64 = redis::cmd("EXISTS").arg(key).query(&mut c).expect("exists");
    n == 1
}

// ---------------------------------------------------------------------------
// 1. Backend killed with requests in flight
// ---------------------------------------------------------------------------

#[test]
fn kill_backend_mid_pipeline_then_restart_on_same_port() {
    let mut servers = redises(4);
    // A generous request timeout, so only the kill can fail the DEBUG SLEEP.
    let proxy = Proxy::start(&refs(&servers), &["--timeout", "5000"]);
    let per = 5;
    let keys = keys_by_backend(proxy.port, 4, "kill", per);
    let mut c = proxy.client();
    for ks in &keys {
        for k in ks {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg(format!("v-{k}"))
                .query(&mut c)
                .unwrap();
        }
    }
    let dead = 2;
    let dead_port = servers[dead].port;

    // Make the doomed backend busy, then pipeline GETs over all four behind it.
    let mut raw = proxy.raw();
    let mut bytes = enc(&[
        b"FORWARD",
        dead.to_string().as_bytes(),
        b"DEBUG",
        b"SLEEP",
        b"1",
    ]);
    let mut order = Vec::new();
    for i in 0..per {
        for (b, ks) in keys.iter().enumerate() {
            bytes.extend_from_slice(&enc(&[b"GET", ks[i].as_bytes()]));
            order.push((b, ks[i].clone()));
        }
    }
    raw.send(&bytes);
    wait_busy(dead_port);
    servers[dead].kill();

    let first = raw.reply();
    assert_backend_err(
        &first,
        dead_port,
        "FORWARD DEBUG SLEEP on the killed backend",
    );
    eprintln!("in-flight request on killed backend: {}", show(&first));
    for (b, k) in &order {
        let r = raw.reply();
        if *b == dead {
            assert_backend_err(&r, dead_port, &format!("GET {k} on the killed backend"));
        } else {
            assert_eq!(
                r,
                bulk(format!("v-{k}").as_bytes()),
                "GET {k} on live backend {b}"
            );
        }
    }

    // New requests for the dead backend fail at once (an error, not a hang); others work.
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for attempt in 0..3 {
        let t = Instant::now();
        let r = raw.call(&[b"GET", keys[dead][0].as_bytes()]);
        eprintln!(
            "new request #{attempt} to dead backend failed after {:?}: {}",
            t.elapsed(),
            show(&r)
        );
        assert_backend_err(&r, dead_port, "new GET for the dead backend");
        let r = raw.call(&[b"GET", keys[0][0].as_bytes()]);
        assert_eq!(r, bulk(format!("v-{}", keys[0][0]).as_bytes()));
    }

    // Restart on the same port: the proxy reconnects by itself (bounded retry).
    servers[dead] = Redis::start_on(dead_port, &[]);
    let key = keys[dead][0].as_bytes();
    poll_until(
        "the backend to come back through the proxy",
        secs(5),
        ms(50),
        || {
            let r = raw.call(&[b"SET", key, b"again"]);
            if r == b"+OK\r\n" {
                return Ok(());
            }
            assert_backend_err(&r, dead_port, "SET while the backend restarts");
            Err(show(&r))
        },
    );
    assert_eq!(raw.call(&[b"GET", key]), bulk(b"again"));
    assert!(exists_on(&servers[dead], &keys[dead][0]));
    for (b, ks) in keys.iter().enumerate() {
        if b != dead {
            assert_eq!(
                raw.call(&[b"GET", ks[1].as_bytes()]),
                bulk(format!("v-{}", ks[1]).as_bytes())
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Stopped backend: request timeout
// ---------------------------------------------------------------------------

#[test]
fn stopped_backend_times_out_others_unaffected() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &["--timeout", "300"]);
    let keys = keys_by_backend(proxy.port, 3, "stop", 2);
    let mut setup = proxy.raw();
    for ks in &keys {
        for k in ks {
            assert_eq!(
                setup.call(&[b"SET", k.as_bytes(), format!("v-{k}").as_bytes()]),
                b"+OK\r\n"
            );
        }
    }
    let (a, b, c) = (&keys[0][0], &keys[1][0], &keys[2][0]);
    let val = |k: &str| bulk(format!("v-{k}").as_bytes());
    let p0 = servers[0].port;
    let timeout_err = format!(
        "-ERR timeout: backend 127.0.0.1:{p0} (127.0.0.1:{p0}) did not answer within 300 ms\r\n"
    );

    signal(servers[0].pid(), "STOP");

    // GET a waits; meanwhile another connection is served normally.
    let mut r1 = proxy.raw();
    r1.cmd(&[b"GET", a.as_bytes()]);
    let mut r2 = proxy.raw();
    assert_eq!(r2.call(&[b"GET", b.as_bytes()]), val(b));
    assert_eq!(r2.call(&[b"GET", c.as_bytes()]), val(c));
    let reply = r1.reply();
    assert_eq!(
        show(&reply),
        show(timeout_err.as_bytes()),
        "GET of a stopped backend"
    );

    // Pipelined on one connection: GET a (stopped), GET b, GET c -> in order.
    let mut bytes = enc(&[b"GET", a.as_bytes()]);
    bytes.extend_from_slice(&enc(&[b"GET", b.as_bytes()]));
    bytes.extend_from_slice(&enc(&[b"GET", c.as_bytes()]));
    let replies = r1.exchange(bytes, 3);
    assert_eq!(show(&replies[0]), show(timeout_err.as_bytes()));
    assert_eq!(replies[1], val(b));
    assert_eq!(replies[2], val(c));

    // Measurement (not asserted): a request to a stopped backend at the default timeout.
    {
        let default_proxy = Proxy::start(&refs(&servers), &[]);
        let mut r = default_proxy.raw();
        let t = Instant::now();
        let reply = r.call(&[b"GET", a.as_bytes()]);
        eprintln!(
            "MEASURE default timeout (1000 ms): request to stopped backend failed after {:?}: {}",
            t.elapsed(),
            show(&reply)
        );
        assert!(
            reply.starts_with(b"-ERR timeout: backend ")
                && reply.ends_with(b" did not answer within 1000 ms\r\n"),
            "{}",
            show(&reply)
        );
    }

    signal(servers[0].pid(), "CONT");
    r1.call_until(
        "the stopped backend to answer again after SIGCONT",
        secs(5),
        ms(50),
        &[b"GET", a.as_bytes()],
        &val(a),
    );
    // Late replies to the timed-out requests were dropped: replies stay in step.
    for k in [a, b, c, &keys[0][1]] {
        assert_eq!(r1.call(&[b"GET", k.as_bytes()]), val(k));
        assert_eq!(r2.call(&[b"GET", k.as_bytes()]), val(k));
    }
}

// ---------------------------------------------------------------------------
// 3. Ejection
// ---------------------------------------------------------------------------

#[test]
fn auto_eject_moves_keys_and_brings_them_back() {
    let mut servers = redises(3);
    let eject = Proxy::start(
        &refs(&servers),
        &[
            "--auto-eject-hosts",
            "yes",
            "--server-failure-limit",
            "2",
            "--server-retry-timeout",
            "1500",
        ],
    );
    let plain = Proxy::start(&refs(&servers), &[]);
    let x = 1;
    let x_port = servers[x].port;
    let keys = keys_by_backend(eject.port, 3, "eject", 4);
    // Same placement in both proxies (same servers, same defaults).
    let mut pr = plain.raw();
    for (b, ks) in keys.iter().enumerate() {
        for k in ks {
            assert_eq!(backend_num(&mut pr, k), b as i64);
        }
    }
    let xkey = keys[x][0].clone();
    let mut er = eject.raw();
    // Connections exist before the kill.
    for ks in &keys {
        assert_eq!(er.call(&[b"SET", ks[0].as_bytes(), b"before"]), b"+OK\r\n");
    }

    servers[x].kill();

    // Without auto_eject: the key keeps mapping to X and every request gets an error.
    for _ in 0..30 {
        let r = pr.call(&[b"GET", xkey.as_bytes()]);
        assert_backend_err(&r, x_port, "GET without auto_eject");
        assert_eq!(
            backend_num(&mut pr, &xkey),
            x as i64,
            "BACKENDNUM changed without auto_eject"
        );
        sleep_ms(20);
    }

    // With auto_eject: requests fail until X is ejected, then its keys live elsewhere.
    let mut errors = 0;
    let moved = poll_until("backend X to be ejected", secs(4), ms(20), || {
        let r = er.call(&[b"GET", xkey.as_bytes()]);
        if r.starts_with(b"-") {
            assert_backend_err(&r, x_port, "GET before ejection");
            errors += 1;
        }
        match backend_num(&mut er, &xkey) {
            now if now != x as i64 => Ok(now as usize),
            now => Err(format!("{xkey} still maps to backend {now}")),
        }
    });
    eprintln!("ejected after {errors} failed requests; {xkey} now maps to backend {moved}");
    assert!(errors >= 1, "no request failed before ejection");
    for k in &keys[x] {
        let to = backend_num(&mut er, k) as usize;
        assert_ne!(to, x);
        assert_eq!(er.call(&[b"SET", k.as_bytes(), b"moved"]), b"+OK\r\n");
        assert_eq!(er.call(&[b"GET", k.as_bytes()]), bulk(b"moved"));
        assert!(exists_on(&servers[to], k), "{k} not on backend {to}");
    }
    // Keys of the other backends stay where they were (ketama).
    for (b, ks) in keys.iter().enumerate() {
        if b != x {
            for k in ks {
                assert_eq!(backend_num(&mut er, k), b as i64);
            }
        }
    }
    // The plain proxy still maps to X.
    assert_eq!(backend_num(&mut pr, &xkey), x as i64);

    // X comes back; after the retry timeout its keys map to it again.
    servers[x] = Redis::start_on(x_port, &[]);
    wait_until(
        "the ejected backend to come back into the ring",
        secs(5),
        ms(50),
        || backend_num(&mut er, &xkey) == x as i64,
    );
    er.call_until(
        "SET on the returned backend",
        secs(5),
        ms(50),
        &[b"SET", xkey.as_bytes(), b"home"],
        b"+OK\r\n",
    );
    assert_eq!(er.call(&[b"GET", xkey.as_bytes()]), bulk(b"home"));
    assert!(exists_on(&servers[x], &xkey));
}

// ---------------------------------------------------------------------------
// 4. split_failure partial
// ---------------------------------------------------------------------------

#[test]
fn split_failure_partial_vs_error() {
    let mut servers = redises(3);
    let partial = Proxy::start(&refs(&servers), &["--split-failure", "partial"]);
    let strict = Proxy::start(&refs(&servers), &[]);
    let keys = keys_by_backend(partial.port, 3, "split", 2);
    let mut pr = partial.raw();
    let mut all = Vec::new();
    for i in 0..2 {
        for ks in &keys {
            all.push(ks[i].clone());
        }
    }
    for k in &all {
        assert_eq!(
            pr.call(&[b"SET", k.as_bytes(), format!("v-{k}").as_bytes()]),
            b"+OK\r\n"
        );
    }
    let dead = 1;
    let dead_port = servers[dead].port;
    servers[dead].kill();

    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(all.iter().map(|k| k.as_bytes()));
    let mut expect = format!("*{}\r\n", all.len()).into_bytes();
    for k in &all {
        if keys[dead].contains(k) {
            expect.extend_from_slice(b"$-1\r\n");
        } else {
            expect.extend_from_slice(&bulk(format!("v-{k}").as_bytes()));
        }
    }
    // Twice: once while the connection to the dead backend breaks/connects, once while down.
    for round in 0..2 {
        let r = pr.call(&mget);
        assert_eq!(show(&r), show(&expect), "partial MGET round {round}");
    }

    // The default mode: one error naming the backend.
    let mut sr = strict.raw();
    for round in 0..2 {
        let r = sr.call(&mget);
        assert_backend_err(&r, dead_port, &format!("strict MGET round {round}"));
        eprintln!("strict MGET with a dead backend: {}", show(&r));
    }
    // Partial DEL counts what answered (the 4 keys on the live backends).
    let mut del: Vec<&[u8]> = vec![b"DEL"];
    del.extend(all.iter().map(|k| k.as_bytes()));
    let r = pr.call(&del);
    assert_eq!(show(&r), show(b":4\r\n"), "partial DEL");
    // Strict DEL: one error (the live backends' parts still ran: atomic per backend only).
    for k in &all {
        if !keys[dead].contains(k) {
            assert_eq!(pr.call(&[b"SET", k.as_bytes(), b"again"]), b"+OK\r\n");
        }
    }
    let r = sr.call(&del);
    assert_backend_err(&r, dead_port, "strict DEL");
    let left = all
        .iter()
        .filter(|k| !keys[dead].contains(k) && pr.call(&[b"EXISTS", k.as_bytes()]) == b":1\r\n")
        .count();
    eprintln!("strict DEL answered an error; live keys left afterwards: {left}");
    let r = pr.call(&mget);
    let mut expect = format!("*{}\r\n", all.len()).into_bytes();
    for _ in &all {
        expect.extend_from_slice(b"$-1\r\n");
    }
    assert_eq!(show(&r), show(&expect));
}

// ---------------------------------------------------------------------------
// 5. Slow reader: backpressure and memory
// ---------------------------------------------------------------------------

/// How the slow writer ended (fields are for the Debug output).
#[allow(dead_code)]
#[derive(Debug)]
enum WriterEnd {
    /// Every byte was written.
    Done,
    /// A write blocked past the write timeout: the proxy stopped reading.
    Blocked,
    /// A write failed (the proxy closed the connection).
    Failed(std::io::ErrorKind),
}

/// Write `total` copies of `GET key` as fast as possible, counting bytes written.
fn slow_writer(
    mut s: TcpStream,
    key: &'static [u8],
    total: usize,
    written: Arc<AtomicU64>,
) -> std::thread::JoinHandle<WriterEnd> {
    std::thread::spawn(move || {
        let one = enc(&[b"GET", key]);
        let per_chunk = 10_000;
        let chunk: Vec<u8> = one.repeat(per_chunk);
        let mut sent = 0;
        while sent < total {
            let mut pos = 0;
            while pos < chunk.len() {
                match s.write(&chunk[pos..]) {
                    Ok(0) => return WriterEnd::Failed(std::io::ErrorKind::WriteZero),
                    Ok(n) => {
                        pos += n;
                        written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return WriterEnd::Blocked
                    }
                    Err(e) => return WriterEnd::Failed(e.kind()),
                }
            }
            sent += per_chunk;
        }
        WriterEnd::Done
    })
}

/// The CLIENT LIST line of the client connected from `local_port`, as key=value pairs.
fn client_line(raw: &mut Raw, local_port: u16) -> Option<Vec<(String, String)>> {
    let r = raw.call(&[b"CLIENT", b"LIST"]);
    let text = String::from_utf8_lossy(&r).into_owned();
    let needle = format!("addr=127.0.0.1:{local_port} ");
    let line = text.lines().find(|l| l.contains(&needle))?;
    Some(
        line.split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn field(line: &[(String, String)], name: &str) -> u64 {
    line.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {line:?}"))
}

#[test]
fn slow_reader_is_paused_memory_bounded() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--max-output", "32mb"]);
    let pid = proxy.child.id();
    let value = vec![b'x'; 1024];
    let mut other = proxy.raw();
    assert_eq!(other.call(&[b"SET", b"k", &value]), b"+OK\r\n");
    let baseline = rss_kb(pid);
    eprintln!("MEASURE slow reader: proxy RSS baseline {baseline} kB");

    let slow = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    slow.set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    let written = Arc::new(AtomicU64::new(0));
    let total = 1_000_000;
    let total_bytes = (enc(&[b"GET", b"k"]).len() * total) as u64;
    let writer = slow_writer(slow.try_clone().unwrap(), b"k", total, written.clone());

    // Meanwhile: round trips on another connection stay correct; sample RSS.
    let mut peak = baseline;
    let mut i = 0u64;
    wait_until("the slow writer to end", secs(40), ms(10), || {
        if writer.is_finished() {
            return true;
        }
        let v = format!("round-{i}");
        assert_eq!(other.call(&[b"SET", b"rt", v.as_bytes()]), b"+OK\r\n");
        assert_eq!(other.call(&[b"GET", b"rt"]), bulk(v.as_bytes()));
        assert_eq!(other.call(&[b"GET", b"k"]), bulk(&value));
        peak = peak.max(rss_kb(pid));
        i += 1;
        false
    });
    let end = writer.join().expect("writer thread");
    let sent = written.load(Ordering::Relaxed);
    let now = rss_kb(pid);
    peak = peak.max(now);
    eprintln!(
        "MEASURE slow reader: writer ended {end:?} after {sent} of {total_bytes} bytes; \
         {i} round trips meanwhile; proxy RSS peak {peak} kB, now {now} kB"
    );
    // With max_output 32mb the proxy stops reading the client (max_pending, then output over
    // max_output/2 keeps it paused) rather than disconnecting it.
    assert!(
        matches!(end, WriterEnd::Blocked),
        "expected the proxy to stop reading the slow client, writer ended {end:?}"
    );
    assert!(
        sent < total_bytes,
        "every byte was accepted: no backpressure"
    );
    let line = client_line(&mut other, slow_port).expect("slow client still connected");
    let obl = field(&line, "obl");
    let oll = field(&line, "oll");
    eprintln!("slow client: obl={obl} oll={oll}");
    assert!(
        obl > 0 && obl <= 32 * 1024 * 1024,
        "unread output {obl} outside (0, 32 MiB]"
    );
    assert!(oll <= 1024, "{oll} replies pending, over max_pending");
    assert!(peak < 300 * 1024, "proxy RSS {peak} kB over 300 MB");
    // Still serving others, still paused (the writer's bytes stay unread).
    for _ in 0..20 {
        assert_eq!(other.call(&[b"GET", b"k"]), bulk(&value));
    }
    let line = client_line(&mut other, slow_port).expect("slow client still connected");
    assert_eq!(field(&line, "obl"), obl, "paused client's output changed");

    // The slow client goes: memory comes back near the baseline (bounded poll).
    let _ = slow.shutdown(Shutdown::Both);
    drop(slow);
    wait_until(
        "the slow client to leave CLIENT LIST after it closed",
        secs(5),
        ms(50),
        || client_line(&mut other, slow_port).is_none(),
    );
    let limit = baseline + 40 * 1024;
    // Poll (bounded) for the RSS to come down; the assertion below says what it was.
    let mut after = rss_kb(pid);
    let _ = try_poll_until(secs(5), ms(50), || {
        after = rss_kb(pid);
        if after <= limit {
            Ok(())
        } else {
            Err(format!("{after} kB"))
        }
    });
    eprintln!("MEASURE slow reader: proxy RSS after the slow client left {after} kB");
    assert!(
        after <= limit,
        "RSS {after} kB did not come back near baseline {baseline} kB"
    );
    assert_eq!(other.call(&[b"GET", b"k"]), bulk(&value));
}

#[test]
fn slow_reader_over_small_max_output_is_paused_not_dropped() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--max-output", "256kb"]);
    let value = vec![b'y'; 1024];
    let mut other = proxy.raw();
    assert_eq!(other.call(&[b"SET", b"k", &value]), b"+OK\r\n");
    let slow = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    slow.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    let written = Arc::new(AtomicU64::new(0));
    let writer = slow_writer(slow.try_clone().unwrap(), b"k", 1_000_000, written.clone());
    let end = writer.join().expect("writer thread");
    eprintln!(
        "small max_output: writer ended {end:?} after {} bytes",
        written.load(Ordering::Relaxed)
    );
    // Flow control, not disconnection: the proxy stopped reading the client once 256 KiB of
    // replies waited for it, so the writer blocked; the client is still there.
    assert!(
        matches!(end, WriterEnd::Blocked),
        "expected the proxy to stop reading the slow client, writer ended {end:?}"
    );
    let line = client_line(&mut other, slow_port).expect("slow client still connected");
    let field = |name: &str| -> usize {
        line.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    // Bound: max_output plus the replies already requested when reading stopped (at most
    // max_pending, 1024 by default, of ~1 KiB each). `obl` is the unread bytes; `omem` the
    // output buffer's allocation (a Vec may hold up to twice what it holds).
    let bound = 256 * 1024 + 1024 * (value.len() + 16) + 64 * 1024;
    let (obl, omem) = (field("obl"), field("omem"));
    assert!(
        obl < bound,
        "unread output not bounded: obl={obl} > {bound}"
    );
    assert!(
        omem < 2 * bound,
        "output buffer not bounded: omem={omem} > {}",
        2 * bound
    );
    assert_eq!(other.call(&[b"GET", b"k"]), bulk(&value));
    // Once it reads, every reply it asked for arrives, in order and whole.
    let sent = written.load(Ordering::Relaxed) as usize;
    let one = enc(&[b"GET", b"k"]).len();
    let complete = sent / one;
    let mut reader = std::io::BufReader::new(slow);
    let want = bulk(&value);
    let mut got = vec![0u8; want.len()];
    for i in 0..complete {
        std::io::Read::read_exact(&mut reader, &mut got)
            .unwrap_or_else(|e| panic!("reply {i} of {complete}: {e}"));
        assert_eq!(got, want, "reply {i}");
    }
}

// ---------------------------------------------------------------------------
// 6. max_clients
// ---------------------------------------------------------------------------

#[test]
fn max_clients_rejects_then_admits_after_close() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--max-clients", "3"]);
    // The harness's readiness probe (connect + close) may still hold a slot for a moment:
    // admit the first client with a bounded retry, then wait until it is the only one.
    let mut first = poll_until("the first client to be admitted", secs(2), ms(20), || {
        let mut c = proxy.raw();
        c.cmd(&[b"PING"]);
        match c.try_reply() {
            Some(r) if r == b"+PONG\r\n" => Ok(c),
            Some(r) => Err(show(&r)),
            None => Err("closed".into()),
        }
    });
    wait_until(
        "the first client to be the only one counted",
        secs(2),
        ms(20),
        || {
            let info = first.call(&[b"INFO"]);
            String::from_utf8_lossy(&info).contains("connected_clients:1\r\n")
        },
    );
    let mut cs: Vec<Raw> = vec![first, proxy.raw(), proxy.raw()];
    for c in cs.iter_mut() {
        assert_eq!(c.call(&[b"PING"]), b"+PONG\r\n");
    }
    let mut fourth = proxy.raw();
    assert_eq!(
        show(&fourth.reply()),
        show(b"-ERR max number of clients reached\r\n")
    );
    assert!(fourth.closed(), "rejected client not closed");
    for c in cs.iter_mut() {
        assert_eq!(c.call(&[b"PING"]), b"+PONG\r\n");
    }

    drop(cs.remove(0));
    let mut c = poll_until(
        "a client to be admitted after one closed",
        secs(2),
        ms(20),
        || {
            let mut c = proxy.raw();
            c.cmd(&[b"PING"]);
            match c.try_reply() {
                Some(r) if r == b"+PONG\r\n" => Ok(c),
                Some(r) => {
                    assert_eq!(show(&r), show(b"-ERR max number of clients reached\r\n"));
                    Err(show(&r))
                }
                None => Err("closed".into()),
            }
        },
    );
    assert_eq!(c.call(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    let mut fifth = proxy.raw();
    assert_eq!(
        show(&fifth.reply()),
        show(b"-ERR max number of clients reached\r\n")
    );
    assert!(fifth.closed());
    for c in cs.iter_mut() {
        assert_eq!(c.call(&[b"GET", b"a"]), b"$1\r\n1\r\n");
    }
}

// ---------------------------------------------------------------------------
// 7. Oversized requests
// ---------------------------------------------------------------------------

#[test]
fn oversized_bulk_and_huge_multibulk_count() {
    let servers = redises(2);
    let mut proxy = Proxy::start(&refs(&servers), &["--max-request", "1kb"]);
    let pid = proxy.child.id();
    let mut other = proxy.raw();
    assert_eq!(other.call(&[b"SET", b"small", b"v"]), b"+OK\r\n");
    let baseline = rss_kb(pid);

    let mut big = proxy.raw();
    let value = vec![b'z'; 2048];
    big.cmd(&[b"SET", b"k", &value]);
    assert_eq!(
        show(&big.reply()),
        show(b"-ERR Protocol error: invalid bulk length\r\n")
    );
    assert!(big.closed(), "client not closed after an oversized bulk");
    // Exactly at the limit is fine.
    let mut ok = proxy.raw();
    assert_eq!(ok.call(&[b"SET", b"k", &vec![b'z'; 1024]]), b"+OK\r\n");
    assert_eq!(other.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");

    // Huge declared counts: compare with Redis itself.
    let cases: [&[u8]; 2] = [b"*2000000000\r\n*1\r\n$4\r\nPING\r\n", b"*3000000000\r\n"];
    for case in cases {
        let mut direct = Raw::connect(servers[0].port);
        direct.send(case);
        let want = direct.reply();
        assert!(direct.closed());
        let mut p = proxy.raw();
        p.send(case);
        let got = p.reply();
        eprintln!(
            "{} -> redis {} / proxy {}",
            show(case),
            show(&want),
            show(&got)
        );
        assert_eq!(show(&got), show(&want), "reply to {}", show(case));
        assert!(p.closed(), "client not closed after {}", show(case));
    }
    // A huge count followed by a stream of small arguments: nothing allocated up front.
    let mut p = proxy.raw();
    let mut bytes = b"*2000000000\r\n".to_vec();
    bytes.extend_from_slice(&b"$1\r\na\r\n".repeat(100_000));
    p.send(&bytes);
    assert_eq!(other.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");
    let rss = rss_kb(pid);
    eprintln!("RSS baseline {baseline} kB, with a 2e9-count request pending {rss} kB");
    assert!(
        rss < baseline + 50 * 1024,
        "RSS grew from {baseline} to {rss} kB"
    );
    drop(p);
    assert!(proxy.alive());
    assert_eq!(other.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");
}

// ---------------------------------------------------------------------------
// 8. Graceful shutdown
// ---------------------------------------------------------------------------

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let servers = redises(2);
    let mut proxy = Proxy::start(&refs(&servers), &["--timeout", "5000"]);
    let keys = keys_by_backend(proxy.port, 2, "term", 1);
    let k = keys[1][0].as_bytes();
    let mut raw = proxy.raw();
    assert_eq!(raw.call(&[b"SET", k, b"kept"]), b"+OK\r\n");

    let mut bytes = enc(&[b"FORWARD", b"0", b"DEBUG", b"SLEEP", b"0.5"]);
    bytes.extend_from_slice(&enc(&[b"GET", k]));
    raw.send(&bytes);
    wait_busy(servers[0].port);
    signal(proxy.child.id(), "TERM");

    // New connections are refused (bounded poll).
    let alive_when_refused = poll_until(
        "new connections to be refused after SIGTERM",
        secs(2),
        ms(10),
        || match TcpStream::connect(("127.0.0.1", proxy.port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(proxy.alive()),
            Err(e) => panic!("connect after SIGTERM: {e}"),
            Ok(_) => Err("accepted"),
        },
    );
    eprintln!("after SIGTERM: refused new connections while still running: {alive_when_refused}");

    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), bulk(b"kept"));
    assert!(raw.closed(), "client not closed after its replies");

    let status = proxy.wait_exit("exit after SIGTERM", secs(10));
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        proxy.log()
    );
}

// ---------------------------------------------------------------------------
// 9. Client idle timeout
// ---------------------------------------------------------------------------

#[test]
fn client_idle_timeout_closes_idle_not_active() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--client-idle-timeout", "200"]);
    let mut idle = proxy.raw();
    assert_eq!(idle.call(&[b"PING"]), b"+PONG\r\n");
    let mut active = proxy.raw();
    for i in 0..20 {
        let v = i.to_string();
        assert_eq!(
            active.call(&[b"SET", b"a", v.as_bytes()]),
            b"+OK\r\n",
            "active client, command {i}"
        );
        sleep_ms(50);
    }
    assert!(idle.closed(), "idle client not closed");
    assert_eq!(active.call(&[b"GET", b"a"]), b"$2\r\n19\r\n");
}

// ---------------------------------------------------------------------------
// 10. Backend closes idle connections
// ---------------------------------------------------------------------------

/// Number of connections to `server` whose last command was not our own CLIENT LIST probe
/// (i.e. the proxy's connections).
fn proxy_conns_on(server: &Redis) -> usize {
    let mut c = server.client();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut c)
        .expect("client list");
    list.lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" cmd=client|list "))
        .count()
}

#[test]
fn backend_idle_close_is_transparent() {
    let server = Redis::start_with(&["--timeout", "1"]);
    let proxy = Proxy::start(&[&server], &[]);
    let mut raw = proxy.raw();
    assert_eq!(raw.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    for round in 0..2 {
        assert_eq!(
            proxy_conns_on(&server),
            1,
            "the proxy's connection, round {round}"
        );
        wait_until(
            "redis to close the proxy's idle connection",
            secs(10),
            ms(100),
            || proxy_conns_on(&server) == 0,
        );
        let r = raw.call(&[b"GET", b"k"]);
        assert_eq!(
            show(&r),
            show(b"$1\r\nv\r\n"),
            "first request after idle close, round {round}"
        );
        assert_eq!(raw.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    }
}

// ---------------------------------------------------------------------------
// 11. Misbehaving backend
// ---------------------------------------------------------------------------

/// A scripted fake backend: `+OK` to every request, except for keys starting with `garbage`
/// (answered `$x\r\n garbage`) and `trunc` (answered `$10\r\nabc`, then the connection is closed).
fn fake_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || fake_serve(s));
        }
    });
    port
}

fn fake_serve(mut s: TcpStream) {
    let limits = rustproxy::resp::Limits::default();
    let mut args = rustproxy::resp::Args::default();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        let n = match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        let mut pos = 0;
        let mut out = Vec::new();
        while let Ok(n) = rustproxy::resp::parse_command(&buf[pos..], &limits, &mut args) {
            let frame = &buf[pos..pos + n];
            let key = args.get(frame, 1).to_vec();
            pos += n;
            if key.starts_with(b"garbage") {
                out.extend_from_slice(b"$x\r\n garbage");
            } else if key.starts_with(b"trunc") {
                out.extend_from_slice(b"$10\r\nabc");
                let _ = s.write_all(&out);
                let _ = s.shutdown(Shutdown::Both);
                return;
            } else {
                out.extend_from_slice(b"+OK\r\n");
            }
        }
        buf.drain(..pos);
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

/// A key named `prefix:i` that the proxy places on backend `b`.
fn key_on(raw: &mut Raw, prefix: &str, b: i64) -> String {
    for i in 0..100_000 {
        let k = format!("{prefix}:{i}");
        if backend_num(raw, &k) == b {
            return k;
        }
    }
    panic!("no {prefix} key on backend {b}");
}

#[test]
fn garbage_and_truncated_backend_replies() {
    let fake = fake_backend();
    let servers = redises(2);
    let port = free_port();
    let list = format!(
        "127.0.0.1:{fake},{},{}",
        servers[0].addr(),
        servers[1].addr()
    );
    let mut proxy = Proxy::spawn(
        port,
        &["-l".into(), format!("127.0.0.1:{port}"), "-b".into(), list],
    );
    let mut raw = proxy.raw();
    let garbage = key_on(&mut raw, "garbage", 0);
    let trunc = key_on(&mut raw, "trunc", 0);
    let fine = key_on(&mut raw, "fine", 0);
    let real1 = key_on(&mut raw, "real", 1);
    let real2 = key_on(&mut raw, "real", 2);

    assert_eq!(raw.call(&[b"SET", fine.as_bytes(), b"x"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", real1.as_bytes(), b"r1"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", real2.as_bytes(), b"r2"]), b"+OK\r\n");

    // Garbage: that request gets an error naming the fake; others in the pipeline are fine.
    let mut bytes = enc(&[b"GET", real1.as_bytes()]);
    bytes.extend_from_slice(&enc(&[b"GET", garbage.as_bytes()]));
    bytes.extend_from_slice(&enc(&[b"GET", real2.as_bytes()]));
    let replies = raw.exchange(bytes, 3);
    assert_eq!(replies[0], bulk(b"r1"));
    assert_backend_err(&replies[1], fake, "GET of a key answered with garbage");
    eprintln!("garbage reply -> {}", show(&replies[1]));
    assert_eq!(replies[2], bulk(b"r2"));
    assert!(proxy.alive(), "proxy died on a garbage reply");
    let mut other = proxy.raw();
    assert_eq!(other.call(&[b"GET", real1.as_bytes()]), bulk(b"r1"));
    // The fake is used again (new connection).
    raw.call_until(
        "the fake backend to be usable again after a garbage reply",
        secs(5),
        ms(50),
        &[b"SET", fine.as_bytes(), b"x"],
        b"+OK\r\n",
    );

    // Truncated reply, then close: the request gets "connection closed by the backend" (not a
    // timeout: the close is seen), then a reconnect works. Several rounds, since the fake's
    // bytes and its FIN may reach the proxy separately or together.
    let closed_err = format!(
        "-ERR backend 127.0.0.1:{fake} (127.0.0.1:{fake}) connection closed by the backend\r\n"
    );
    for round in 0..10 {
        let t = Instant::now();
        let r = raw.call(&[b"GET", trunc.as_bytes()]);
        eprintln!(
            "truncated reply round {round} -> {} after {:?}",
            show(&r),
            t.elapsed()
        );
        assert_eq!(
            show(&r),
            show(closed_err.as_bytes()),
            "round {round}: GET of a key answered with `$10\\r\\nabc` then close"
        );
        assert!(proxy.alive(), "proxy died on a truncated reply");
        raw.call_until(
            "the fake backend to be usable after a truncated reply",
            secs(5),
            ms(50),
            &[b"SET", fine.as_bytes(), b"x"],
            b"+OK\r\n",
        );
    }
    assert_eq!(other.call(&[b"GET", real2.as_bytes()]), bulk(b"r2"));
    assert_eq!(raw.call(&[b"GET", real1.as_bytes()]), bulk(b"r1"));
}

// ---------------------------------------------------------------------------
// 12. Half-closed client
// ---------------------------------------------------------------------------

/// A client that sends its requests and half-closes (shutdown(Write)) at once gets every reply,
/// then EOF. Several rounds: the request bytes and the FIN often reach the proxy together.
#[test]
fn half_closed_client_gets_replies_then_eof() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    for round in 0..20 {
        let mut raw = proxy.raw();
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        raw.send(b"PING\r\n");
        raw.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown(Write)");
        assert_eq!(raw.reply(), b"+PONG\r\n", "round {round}");
        assert!(
            raw.closed(),
            "round {round}: half-closed client got its reply but no EOF within 3 s"
        );
    }
}
