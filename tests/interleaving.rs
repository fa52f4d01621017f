//! Regression tests for issue 16 ("correct under every interleaving"): one test (or a few) per
//! numbered defect of the issue, each named after the behaviour it protects. They drive the proxy
//! the way real clients do (pipelines written in one go, a second command written while a first
//! one blocks, several clients interleaved, reloads and membership changes in the middle of a
//! transaction or a subscription, slow readers) and check every reply. Where "what Redis does"
//! is the expectation, the same byte stream is also written to one plain redis-server and the
//! replies are compared byte for byte.
//!
//! Defect #6 (sharded pub/sub in cluster pools) lives in tests/cluster.rs, which has the 6-node
//! cluster harness (`sharded_pubsub_follows_the_slot_map`).
//!
//! Rules kept here: real redis-server processes and the real binary on free loopback ports,
//! killed by PID in `Drop`; every wait is a bounded poll or a socket read timeout, so a defect
//! fails a test instead of hanging it; no test asserts a duration (sleeps only create the
//! interleaving under test: a stall, a client that reads late).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{
    arr, brief as show, bulk, enc, enc_many, int, is_error, ms, poll_until, redises, refs, rss_kib,
    signal, strings, text, tmp_dir, Proxy, Raw, Redis,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Read timeout for replies that should come at once.
const QUICK: Duration = Duration::from_secs(5);
/// Limit of every bounded poll.
const WAIT: Duration = Duration::from_secs(10);

/// A raw connection to `port` whose reads give up after `QUICK`.
fn raw(port: u16) -> Raw {
    let mut r = Raw::connect(port);
    r.set_timeout(QUICK);
    r
}

/// Concatenated encodings of several commands (one write).
fn pipeline(cmds: &[&[&[u8]]]) -> Vec<u8> {
    enc_many(cmds)
}

/// Poll `f` every 10 ms until it holds; panic naming `what` after `WAIT`.
fn wait_until(what: &str, f: impl FnMut() -> bool) {
    common::wait_until(what, WAIT, ms(10), f)
}

/// BACKENDNUM of `key` through the proxy.
fn backendnum(port: u16, key: &str) -> usize {
    let mut c = raw(port);
    int(&c.call(&[b"BACKENDNUM", key.as_bytes()])) as usize
}

/// The first name `prefix<i>` whose BACKENDNUM satisfies `want`.
fn key_where(port: u16, prefix: &str, want: impl Fn(usize) -> bool) -> String {
    let mut c = raw(port);
    for i in 0..10_000 {
        let k = format!("{prefix}{i}");
        let n = int(&c.call(&[b"BACKENDNUM", k.as_bytes()])) as usize;
        if want(n) {
            return k;
        }
    }
    panic!("no name {prefix}<i> on the wanted backend");
}

/// Clients of a redis-server (direct connection) blocked in `cmd` (CLIENT LIST: `flags=b`).
fn blocked_in(server: &Redis, cmd: &str) -> usize {
    let mut c = raw(server.port);
    let list = text(&c.call(&[b"CLIENT", b"LIST"]));
    let cmd = format!(" cmd={cmd} ");
    list.lines()
        .filter(|l| l.contains(" flags=b ") && l.contains(&cmd))
        .count()
}

/// A direct command to a redis-server.
fn direct(server: &Redis, args: &[&[u8]]) -> Vec<u8> {
    let mut c = raw(server.port);
    c.call(args)
}

/// One plain redis-server and a connection to it: the reference for "what Redis does".
struct Plain {
    server: Redis,
    conn: Raw,
}

impl Plain {
    fn start() -> Plain {
        let server = Redis::start();
        let conn = raw(server.port);
        Plain { server, conn }
    }

    /// Start over on a new connection to the same server.
    fn reconnect(&mut self) {
        self.conn = raw(self.server.port);
    }

    /// Write `bytes` in one write and read `n` replies.
    fn run(&mut self, bytes: &[u8], n: usize) -> Vec<Vec<u8>> {
        self.conn.send(bytes);
        self.conn.expect_replies(n, "plain redis-server")
    }
}

fn show_all(v: &[Vec<u8>]) -> Vec<String> {
    v.iter().map(|r| show(r)).collect()
}

/// A native config file for named servers `s0`, `s1`, ... (the file can be rewritten later).
struct Conf {
    path: PathBuf,
    port: u16,
    extra: Vec<String>,
}

impl Conf {
    fn new(extra: &[&str]) -> Conf {
        let dir = tmp_dir("interleaving-conf");
        Conf {
            path: dir.join("proxy.conf"),
            port: common::free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Write the file with the servers `(index, server)`: server `i` is named `s<i>`.
    fn write(&self, servers: &[(usize, &Redis)]) {
        let mut t = format!(
            "pool main\n    listen 127.0.0.1:{}\n    distribution ketama\n    timeout 5000\n",
            self.port
        );
        for l in &self.extra {
            t.push_str(&format!("    {l}\n"));
        }
        for (i, s) in servers {
            t.push_str(&format!("    server 127.0.0.1:{}:1 s{i}\n", s.port));
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, t).expect("write config");
        std::fs::rename(&tmp, &self.path).expect("rename config");
    }

    fn start(&self, servers: &[Redis]) -> Proxy {
        let all: Vec<(usize, &Redis)> = servers.iter().enumerate().collect();
        self.write(&all);
        Proxy::spawn(
            self.port,
            &["-c".into(), self.path.to_string_lossy().into_owned()],
        )
    }
}

/// `PROXY BACKENDS` lines.
fn proxy_backends(port: u16) -> Vec<String> {
    let mut c = raw(port);
    strings(&c.call(&[b"PROXY", b"BACKENDS"]))
}

/// Wait until `PROXY BACKENDS` no longer lists server `name`.
fn wait_removed(port: u16, name: &str) {
    let what = format!("PROXY BACKENDS to stop listing {name}");
    poll_until(&what, WAIT, ms(10), || {
        let last = proxy_backends(port);
        if last
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some(name))
        {
            Err(format!("{last:?}"))
        } else {
            Ok(())
        }
    });
}

/// Samples the RSS of a process every 10 ms on a thread; `stop` returns the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes of samples even if `stop` is never called.
            for _ in 0..60_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak_kib()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A value of `len` bytes unique to `tag`.
fn value(tag: usize, len: usize) -> Vec<u8> {
    let mut v = vec![b'a' + (tag % 26) as u8; len];
    let head = format!("{tag:010}:");
    v[..head.len()].copy_from_slice(head.as_bytes());
    v
}

/// Connect, write `bytes`, close at once (a client that hangs up).
fn write_and_hang_up(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(bytes).expect("write");
    drop(s);
}

// ---------------------------------------------------------------------------------------------
// 1. Pipelined blocking commands
// ---------------------------------------------------------------------------------------------

/// #1: `BLPOP q 1; BLPOP q 1; PING` in one write with q = [a, b] answers `[q,a]`, `[q,b]`,
/// `+PONG`, as one redis-server does, and nothing is lost.
#[test]
fn pipelined_blocking_pops_all_answer_in_order() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let setup = enc(&[b"RPUSH", b"q", b"a", b"b"]);
    let stream = pipeline(&[&[b"BLPOP", b"q", b"1"], &[b"BLPOP", b"q", b"1"], &[b"PING"]]);
    let mut plain = Plain::start();
    plain.run(&setup, 1);
    let want = plain.run(&stream, 3);

    let mut c = raw(proxy.port);
    c.send(&setup);
    assert_eq!(c.expect_reply("RPUSH"), b":2\r\n");
    c.send(&stream);
    let got = c.expect_replies(3, "BLPOP; BLPOP; PING in one write");
    assert_eq!(show_all(&got), show_all(&want));
    let mut d = raw(proxy.port);
    assert_eq!(
        d.call(&[b"LLEN", b"q"]),
        b":0\r\n",
        "both elements popped, by this client"
    );
}

/// #1: 1,500 pipelined GETs (more than `max_pending`) followed by a BLPOP in one write: every
/// GET is answered and the BLPOP pops, in order.
#[test]
fn pipelined_gets_past_max_pending_then_blocking_pop_all_answered() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let setup = pipeline(&[&[b"SET", b"k", b"v"], &[b"RPUSH", b"q", b"a"]]);
    let mut stream = Vec::new();
    for _ in 0..1500 {
        stream.extend_from_slice(&enc(&[b"GET", b"k"]));
    }
    stream.extend_from_slice(&enc(&[b"BLPOP", b"q", b"1"]));
    stream.extend_from_slice(&enc(&[b"PING"]));
    let mut plain = Plain::start();
    plain.run(&setup, 2);
    let want = plain.run(&stream, 1502);

    let mut c = raw(proxy.port);
    c.send(&setup);
    c.expect_replies(2, "SET; RPUSH");
    c.send(&stream);
    let got = c.expect_replies(1502, "1,500 GETs; BLPOP; PING in one write");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(show(g), show(w), "reply {} of 1502", i + 1);
    }
    let mut d = raw(proxy.port);
    assert_eq!(d.call(&[b"LLEN", b"q"]), b":0\r\n");
}

/// #1: a second BLPOP written while the first one is blocked (how ioredis and Lettuce
/// multiplex): both are answered in order and no element is lost.
#[test]
fn blocking_pop_written_while_another_blocks_both_answered_in_order() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let owner = &servers[backendnum(proxy.port, "q")];

    let mut c = raw(proxy.port);
    c.cmd(&[b"BLPOP", b"q", b"5"]);
    wait_until("the first BLPOP blocks on q's backend", || {
        blocked_in(owner, "blpop") == 1
    });
    c.cmd(&[b"BLPOP", b"q", b"5"]);
    let mut other = raw(proxy.port);
    assert_eq!(other.call(&[b"RPUSH", b"q", b"a", b"b"]), b":2\r\n");
    let got = c.expect_replies(2, "two BLPOPs in separate writes");
    assert_eq!(
        show_all(&got),
        show_all(&[arr(&[b"q", b"a"]), arr(&[b"q", b"b"])])
    );
    assert_eq!(c.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(
        strings(&other.call(&[b"LRANGE", b"q", b"0", b"-1"])),
        Vec::<String>::new(),
        "nothing left and nothing lost"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. One client's order on a backend, whichever connection carries it
// ---------------------------------------------------------------------------------------------

/// #2: with `server_connections 4`, `SET k <300 KB>; GET k` in one write returns that value,
/// every one of 300 rounds.
#[test]
fn get_after_large_set_sees_it_with_four_server_connections() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--server-connections", "4"]);
    let mut c = raw(proxy.port);
    c.set_timeout(WAIT);
    let mut stale = Vec::new();
    for round in 0..300 {
        let v = value(round, 300 * 1024);
        c.send(&pipeline(&[&[b"SET", b"k", &v], &[b"GET", b"k"]]));
        let got = c.expect_replies(2, &format!("round {round}"));
        assert_eq!(got[0], b"+OK\r\n", "round {round}: SET");
        if got[1] != bulk(&v) {
            stale.push((round, show(&got[1][..got[1].len().min(24)])));
        }
    }
    assert!(
        stale.is_empty(),
        "GET k did not return the value SET just before it in {} of 300 rounds: {:?}",
        stale.len(),
        stale.iter().take(10).collect::<Vec<_>>()
    );
}

/// #2: `SET k v; HELLO 3; GET k` in one write: the GET (now over a RESP3 connection) sees v.
#[test]
fn get_after_set_and_hello3_in_one_write_sees_the_write() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--server-connections", "4"]);
    let mut wrong = Vec::new();
    for round in 0..150 {
        let key = format!("hello3:{round}");
        let v = value(round, 300 * 1024);
        let mut c = raw(proxy.port);
        c.send(&pipeline(&[
            &[b"SET", key.as_bytes(), &v],
            &[b"HELLO", b"3"],
            &[b"GET", key.as_bytes()],
        ]));
        let got = c.expect_replies(3, &format!("round {round}: SET; HELLO 3; GET"));
        assert_eq!(got[0], b"+OK\r\n", "round {round}: SET");
        assert!(
            got[1].starts_with(b"%"),
            "round {round}: HELLO 3 {}",
            show(&got[1])
        );
        if got[2] != bulk(&v) {
            wrong.push((round, show(&got[2][..got[2].len().min(24)])));
        }
    }
    assert!(
        wrong.is_empty(),
        "GET after SET; HELLO 3 missed the write in {} of 150 rounds: {wrong:?}",
        wrong.len()
    );
}

/// #2: a RESP3 client writing `SUBSCRIBE ch; PUBLISH ch hello` in one write is subscribed
/// before its PUBLISH runs: PUBLISH answers 1 and the `>` message push arrives (the push and
/// the PUBLISH reply may come in either order; a plain redis-server gives the reference).
#[test]
fn resp3_subscribe_then_publish_in_one_write_delivers_to_itself() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--server-connections", "4"]);
    let mut plain = Plain::start();
    for round in 0..30 {
        let ch = format!("ch{round}");
        plain.reconnect();
        plain.run(&enc(&[b"HELLO", b"3"]), 1);
        let stream = pipeline(&[
            &[b"SUBSCRIBE", ch.as_bytes()],
            &[b"PUBLISH", ch.as_bytes(), b"hello"],
        ]);
        let want = plain.run(&stream, 3);
        let want_rest: BTreeSet<String> = show_all(&want[1..]).into_iter().collect();
        assert!(want_rest.contains(":1\\r\\n"), "plain redis: {want_rest:?}");

        let mut c = raw(proxy.port);
        assert!(c.call(&[b"HELLO", b"3"]).starts_with(b"%"));
        c.send(&stream);
        let got = c.expect_replies(3, &format!("round {round}: SUBSCRIBE; PUBLISH"));
        assert_eq!(show(&got[0]), show(&want[0]), "round {round}: confirmation");
        let rest: BTreeSet<String> = show_all(&got[1..]).into_iter().collect();
        assert_eq!(
            rest, want_rest,
            "round {round}: PUBLISH reply and the message push (any order)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Transactions refer to their server by identity, not config position
// ---------------------------------------------------------------------------------------------

/// MULTI; SET key v1 on `c`, answered +OK, +QUEUED.
fn queue_set(c: &mut Raw, key: &str, v: &[u8]) {
    assert_eq!(c.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(c.call(&[b"SET", key.as_bytes(), v]), b"+QUEUED\r\n");
}

/// Check the outcome of EXEC for a transaction on server 1 after server 0 left the pool.
fn check_exec_on_kept_server(proxy: &Proxy, servers: &[Redis], c: &mut Raw, key: &str) {
    assert_eq!(
        show(&c.call(&[b"EXEC"])),
        show(b"*1\r\n+OK\r\n"),
        "EXEC after the membership change"
    );
    let mut d = raw(proxy.port);
    assert_eq!(
        show(&d.call(&[b"GET", key.as_bytes()])),
        show(&bulk(b"v1")),
        "GET through the proxy"
    );
    assert_eq!(
        show(&direct(&servers[1], &[b"GET", key.as_bytes()])),
        show(&bulk(b"v1")),
        "the value is on the server that held the key (s1)"
    );
    for i in [0, 2] {
        assert_eq!(
            direct(&servers[i], &[b"EXISTS", key.as_bytes()]),
            b":0\r\n",
            "the transaction wrote on s{i}"
        );
    }
}

/// #3: `MULTI; SET key v1`, then `PROXY REMOVEBACKEND` of a server listed before the key's
/// server, then `EXEC`: `[OK]`, and the value is on the key's server.
#[test]
fn queued_transaction_survives_removal_of_another_backend() {
    let servers = redises(3);
    let conf = Conf::new(&["membership_commands yes"]);
    let proxy = conf.start(&servers);
    let key = key_where(proxy.port, "txkey:", |n| n == 1);
    let mut c = raw(proxy.port);
    queue_set(&mut c, &key, b"v1");

    let mut admin = raw(proxy.port);
    let r = admin.call(&[b"PROXY", b"REMOVEBACKEND", b"s0"]);
    assert!(!is_error(&r), "REMOVEBACKEND s0: {}", show(&r));
    wait_removed(proxy.port, "s0");
    check_exec_on_kept_server(&proxy, &servers, &mut c, &key);
}

/// #3: the same across a SIGHUP reload of a config file without that server.
#[test]
fn queued_transaction_survives_reload_without_another_backend() {
    let servers = redises(3);
    let conf = Conf::new(&["membership_commands yes"]);
    let proxy = conf.start(&servers);
    let key = key_where(proxy.port, "txkey:", |n| n == 1);
    let mut c = raw(proxy.port);
    queue_set(&mut c, &key, b"v1");

    conf.write(&[(1, &servers[1]), (2, &servers[2])]);
    signal(proxy.pid(), "HUP");
    wait_removed(proxy.port, "s0");
    check_exec_on_kept_server(&proxy, &servers, &mut c, &key);
}

/// #3: when the server of a queued transaction is removed, EXEC answers `-EXECABORT` and
/// nothing is written anywhere (not on the key's new owner either).
#[test]
fn queued_transaction_on_removed_backend_aborts() {
    let servers = redises(3);
    let conf = Conf::new(&["membership_commands yes"]);
    let proxy = conf.start(&servers);
    let key = key_where(proxy.port, "txkey:", |n| n == 1);
    let mut c = raw(proxy.port);
    queue_set(&mut c, &key, b"v1");

    let mut admin = raw(proxy.port);
    let r = admin.call(&[b"PROXY", b"REMOVEBACKEND", b"s1"]);
    assert!(!is_error(&r), "REMOVEBACKEND s1: {}", show(&r));
    wait_removed(proxy.port, "s1");
    let exec = c.call(&[b"EXEC"]);
    assert!(
        exec.starts_with(b"-EXECABORT"),
        "EXEC whose server was removed: {}",
        show(&exec)
    );
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(
            direct(s, &[b"EXISTS", key.as_bytes()]),
            b":0\r\n",
            "the aborted transaction wrote on s{i}"
        );
    }
    assert_eq!(
        admin.call(&[b"GET", key.as_bytes()]),
        b"$-1\r\n",
        "GET through the proxy after the aborted transaction"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A client's hang-up is not a backend failure
// ---------------------------------------------------------------------------------------------

/// #4: 20 clients each write `BLPOP q 0` and hang up at once (while their private connection
/// is still connecting). With `auto_eject_hosts yes` and `server_failure_limit 2`, another
/// client's WATCH on q's backend right after each hang-up answers `+OK`, every backend stays
/// up, and no key moves.
#[test]
fn client_hangups_during_private_connect_do_not_eject_the_backend() {
    let servers = redises(3);
    let proxy = Proxy::start(
        &refs(&servers),
        &["--auto-eject-hosts", "yes", "--server-failure-limit", "2"],
    );
    let keys: Vec<String> = (0..30).map(|i| format!("ej:{i}")).collect();
    let before: Vec<usize> = keys.iter().map(|k| backendnum(proxy.port, k)).collect();
    let qn = backendnum(proxy.port, "q");
    let watched = key_where(proxy.port, "watched:", |n| n == qn);

    let blpop = enc(&[b"BLPOP", b"q", b"0"]);
    let mut problems = Vec::new();
    for i in 0..20 {
        write_and_hang_up(proxy.port, &blpop);
        // Right after the hang-up: another client WATCHes a key on q's backend.
        let mut c = raw(proxy.port);
        let r = c.call(&[b"WATCH", watched.as_bytes()]);
        if r != b"+OK\r\n" {
            problems.push(format!(
                "after hang-up {}: WATCH answered {}",
                i + 1,
                show(&r)
            ));
        }
        let lines = proxy_backends(proxy.port);
        if !lines.iter().all(|l| l.contains("state=up")) {
            problems.push(format!("after hang-up {}: PROXY BACKENDS {lines:?}", i + 1));
        }
    }
    // Let the proxy see every hang-up: no BLPOP left blocked on q's backend, then a moment
    // more for connects still in progress to finish or fail.
    wait_until("the hung-up clients' BLPOPs are gone", || {
        blocked_in(&servers[qn], "blpop") == 0
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines = proxy_backends(proxy.port);
    if !lines.iter().all(|l| l.contains("state=up")) {
        problems.push(format!("at the end: PROXY BACKENDS {lines:?}"));
    }
    let after: Vec<usize> = keys.iter().map(|k| backendnum(proxy.port, k)).collect();
    if after != before {
        problems.push(format!("keys moved: BACKENDNUM {before:?} -> {after:?}"));
    }
    let mut c = raw(proxy.port);
    let r = c.call(&[b"WATCH", watched.as_bytes()]);
    if r != b"+OK\r\n" {
        problems.push(format!("at the end: WATCH answered {}", show(&r)));
    }
    assert!(
        problems.is_empty(),
        "client hang-ups counted against a healthy backend ({} problems, the first 4): {:#?}",
        problems.len(),
        &problems[..problems.len().min(4)]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A private connection is not lent while a reply is in flight on it
// ---------------------------------------------------------------------------------------------

/// #5: client A WATCHes k (private connection), queues `MULTI; SET k <round>` and sends EXEC
/// while the backend is paused (`DEBUG SLEEP 0.3` sent to it directly: the proxy does not
/// forward DEBUG), so A's EXEC is in flight; meanwhile client B (same backend) writes
/// `BLPOP <key> 0` and hangs up. A's EXEC answers `[OK]` every round.
#[test]
fn watch_exec_in_flight_keeps_its_private_connection() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let k = key_where(proxy.port, "wk:", |n| n == 0);
    let bq = key_where(proxy.port, "bq:", |n| n == 0);
    let blpop = enc(&[b"BLPOP", bq.as_bytes(), b"0"]);
    for round in 0..5 {
        let v = round.to_string();
        let mut a = raw(proxy.port);
        a.send(&pipeline(&[
            &[b"WATCH", k.as_bytes()],
            &[b"MULTI"],
            &[b"SET", k.as_bytes(), v.as_bytes()],
        ]));
        let head = a.expect_replies(3, &format!("round {round}: WATCH; MULTI; SET"));
        assert_eq!(
            show_all(&head),
            ["+OK\\r\\n", "+OK\\r\\n", "+QUEUED\\r\\n"],
            "round {round}"
        );
        // Pause the backend, then EXEC: it waits on the backend while B borrows and hangs up.
        let mut pause = raw(servers[0].port);
        pause.cmd(&[b"DEBUG", b"SLEEP", b"0.3"]);
        std::thread::sleep(Duration::from_millis(50));
        a.cmd(&[b"EXEC"]);
        std::thread::sleep(Duration::from_millis(50));
        write_and_hang_up(proxy.port, &blpop);
        let exec = a.expect_reply(&format!("round {round}: EXEC"));
        assert_eq!(
            show(&exec),
            "*1\\r\\n+OK\\r\\n",
            "round {round}: EXEC of a WATCHed transaction while another client hung up"
        );
        assert_eq!(pause.expect_reply("DEBUG SLEEP"), b"+OK\r\n");
        assert_eq!(
            show(&a.call(&[b"GET", k.as_bytes()])),
            show(&bulk(v.as_bytes()))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. A subscriber that lost its backend connection is closed
// ---------------------------------------------------------------------------------------------

/// SUBSCRIBE `ch` on a fresh connection; confirmation checked.
fn subscriber(port: u16, ch: &str) -> Raw {
    let mut s = raw(port);
    let r = s.call(&[b"SUBSCRIBE", ch.as_bytes()]);
    assert_eq!(
        show(&r),
        show(
            &[
                b"*3\r\n".to_vec(),
                bulk(b"subscribe"),
                bulk(ch.as_bytes()),
                b":1\r\n".to_vec()
            ]
            .concat()
        ),
        "SUBSCRIBE {ch}"
    );
    s
}

/// `message ch payload` as RESP2.
fn message(ch: &str, payload: &str) -> Vec<u8> {
    arr(&[b"message", ch.as_bytes(), payload.as_bytes()])
}

/// A fresh subscriber on `ch` gets what another client publishes through the proxy.
fn fresh_subscriber_works(port: u16, ch: &str) {
    let mut s = subscriber(port, ch);
    let mut p = raw(port);
    assert_eq!(
        p.call(&[b"PUBLISH", ch.as_bytes(), b"again"]),
        b":1\r\n",
        "PUBLISH to a fresh subscriber"
    );
    assert_eq!(
        show(&s.expect_reply("message to the fresh subscriber")),
        show(&message(ch, "again"))
    );
}

/// #7: `CLIENT KILL TYPE pubsub` on the backend: the proxy closes the subscriber's connection
/// (so its client library resubscribes); a fresh subscriber works.
#[test]
fn subscriber_is_closed_when_its_backend_connection_is_killed() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let ch = "news";
    let owner = &servers[backendnum(proxy.port, ch)];
    let mut s = subscriber(proxy.port, ch);
    let killed = int(&direct(owner, &[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]));
    assert!(killed >= 1, "CLIENT KILL TYPE pubsub killed {killed}");
    s.wait_eof(WAIT).unwrap_or_else(|e| {
        panic!("subscriber whose backend connection was killed: not closed: {e}")
    });
    fresh_subscriber_works(proxy.port, ch);
}

/// #7: the subscriber's backend restarts: the proxy closes the subscriber; once the backend is
/// back, a fresh subscriber works.
#[test]
fn subscriber_is_closed_when_its_backend_restarts() {
    let mut servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let ch = "news";
    let n = backendnum(proxy.port, ch);
    let mut s = subscriber(proxy.port, ch);
    let port = servers[n].port;
    servers[n].kill();
    servers[n] = Redis::start_on(port, &[]);
    s.wait_eof(WAIT)
        .unwrap_or_else(|e| panic!("subscriber whose backend restarted: not closed: {e}"));
    // The proxy may take a moment to reconnect: retry (bounded) until a subscription works.
    poll_until("SUBSCRIBE to work after the restart", WAIT, ms(50), || {
        let r = raw(proxy.port).call(&[b"SUBSCRIBE", ch.as_bytes()]);
        if is_error(&r) {
            Err(show(&r))
        } else {
            Ok(())
        }
    });
    fresh_subscriber_works(proxy.port, ch);
}

// ---------------------------------------------------------------------------------------------
// 8. Subscriptions and blocked clients follow their key's new owner
// ---------------------------------------------------------------------------------------------

/// #8: a subscriber on channel Y whose server is removed from the pool still receives what
/// is published to Y through the proxy afterwards.
#[test]
fn subscription_follows_its_channel_to_the_new_owner_after_removal() {
    let servers = redises(3);
    let conf = Conf::new(&["membership_commands yes"]);
    let proxy = conf.start(&servers);
    let ch = "chan:y";
    let n = backendnum(proxy.port, ch);
    let mut s = subscriber(proxy.port, ch);
    let mut admin = raw(proxy.port);
    let name = format!("s{n}");
    let r = admin.call(&[b"PROXY", b"REMOVEBACKEND", name.as_bytes()]);
    assert!(!is_error(&r), "REMOVEBACKEND {name}: {}", show(&r));
    wait_removed(proxy.port, &name);

    // The subscription may move asynchronously: publish (bounded) until someone receives.
    let mut sent = 0;
    let what = format!("PUBLISH {ch} after removing {name} to reach a subscriber");
    let received = poll_until(&what, WAIT, ms(20), || {
        sent += 1;
        match int(&admin.call(&[b"PUBLISH", ch.as_bytes(), format!("m{sent}").as_bytes()])) {
            0 => Err("0 receivers"),
            n => Ok(n),
        }
    });
    assert_eq!(received, 1);
    assert_eq!(
        show(&s.expect_reply("the message published after the removal")),
        show(&message(ch, &format!("m{sent}"))),
    );
}

/// #8: a client blocked in `BLPOP q 0` whose server is removed does not wait forever: after
/// `LPUSH q x` through the proxy it gets `[q, x]`, or an error with x still in the list.
#[test]
fn blocked_pop_on_removed_backend_is_reissued_or_errored() {
    let servers = redises(3);
    let conf = Conf::new(&["membership_commands yes"]);
    let proxy = conf.start(&servers);
    let n = backendnum(proxy.port, "q");
    let mut b = raw(proxy.port);
    b.cmd(&[b"BLPOP", b"q", b"0"]);
    wait_until("BLPOP q 0 blocks on q's server", || {
        blocked_in(&servers[n], "blpop") == 1
    });
    let mut admin = raw(proxy.port);
    let name = format!("s{n}");
    let r = admin.call(&[b"PROXY", b"REMOVEBACKEND", name.as_bytes()]);
    assert!(!is_error(&r), "REMOVEBACKEND {name}: {}", show(&r));
    wait_removed(proxy.port, &name);
    assert_eq!(admin.call(&[b"LPUSH", b"q", b"x"]), b":1\r\n");

    b.set_timeout(WAIT);
    let got = b.expect_reply("the client blocked on the removed server");
    if is_error(&got) {
        assert_eq!(
            admin.call(&[b"LLEN", b"q"]),
            b":1\r\n",
            "BLPOP answered {} but x is gone",
            show(&got)
        );
    } else {
        assert_eq!(show(&got), show(&arr(&[b"q", b"x"])));
        assert_eq!(admin.call(&[b"LLEN", b"q"]), b":0\r\n");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Subscribe mode ends in stream order
// ---------------------------------------------------------------------------------------------

/// #9: `SUBSCRIBE ch; UNSUBSCRIBE ch; SET k v; GET k; PING` in one RESP2 write: byte for byte
/// what a plain redis-server answers, and the SET was done.
#[test]
fn commands_pipelined_after_unsubscribe_run_as_in_redis() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let stream = pipeline(&[
        &[b"SUBSCRIBE", b"ch"],
        &[b"UNSUBSCRIBE", b"ch"],
        &[b"SET", b"k", b"v"],
        &[b"GET", b"k"],
        &[b"PING"],
    ]);
    let want = Plain::start().run(&stream, 5);
    let mut c = raw(proxy.port);
    c.send(&stream);
    let got = c.expect_replies(5, "SUBSCRIBE; UNSUBSCRIBE; SET; GET; PING");
    assert_eq!(show_all(&got), show_all(&want));
    let mut d = raw(proxy.port);
    assert_eq!(show(&d.call(&[b"GET", b"k"])), show(&bulk(b"v")));
}

// ---------------------------------------------------------------------------------------------
// 10. The idle timeout spares subscribers and blocked clients
// ---------------------------------------------------------------------------------------------

/// #10: with `client_idle_timeout 300` (ms), a subscriber silent for 1.5 s is still connected
/// and receives a message published then.
#[test]
fn idle_timeout_spares_a_silent_subscriber() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--client-idle-timeout", "300"]);
    let mut s = subscriber(proxy.port, "quiet");
    std::thread::sleep(Duration::from_millis(1500));
    let mut p = raw(proxy.port);
    assert_eq!(
        show(&p.call(&[b"PUBLISH", b"quiet", b"late"])),
        ":1\\r\\n",
        "PUBLISH to a subscriber silent for 1.5 s (0: the proxy closed it)"
    );
    assert_eq!(
        show(&s.expect_reply("the message to the silent subscriber")),
        show(&message("quiet", "late"))
    );
}

/// #10: with `client_idle_timeout 300`, a client in `BLPOP q 2` gets its nil after the block
/// and stays usable.
#[test]
fn idle_timeout_spares_a_blocked_client() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--client-idle-timeout", "300"]);
    let mut c = raw(proxy.port);
    c.cmd(&[b"BLPOP", b"q", b"2"]);
    assert_eq!(show(&c.expect_reply("BLPOP q 2")), "*-1\\r\\n");
    assert_eq!(c.call(&[b"PING"]), b"+PONG\r\n");
}

// ---------------------------------------------------------------------------------------------
// 11. HELLO 2 on a private connection
// ---------------------------------------------------------------------------------------------

/// #11: a RESP3 client that WATCHes (private connection) then switches back with `HELLO 2`
/// gets RESP2 replies from it: HGETALL is a flat `*` array, as from a plain redis-server.
#[test]
fn hello2_after_watch_under_resp3_gives_resp2_replies() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let k = "wk";
    let kn = backendnum(proxy.port, k);
    let h = key_where(proxy.port, "h:", |n| n == kn);
    let hset = enc(&[b"HSET", h.as_bytes(), b"f1", b"v1", b"f2", b"v2"]);
    let watch = enc(&[b"WATCH", k.as_bytes()]);
    let hgetall = enc(&[b"HGETALL", h.as_bytes()]);

    let mut plain = Plain::start();
    plain.run(&hset, 1);
    plain.run(&enc(&[b"HELLO", b"3"]), 1);
    let want_watch = plain.run(&watch, 1);
    plain.run(&enc(&[b"HELLO", b"2"]), 1);
    let want = plain.run(&hgetall, 1);
    assert!(want[0].starts_with(b"*4\r\n"), "plain: {}", show(&want[0]));

    let mut c = raw(proxy.port);
    c.send(&hset);
    assert_eq!(c.expect_reply("HSET"), b":2\r\n");
    assert!(c.call(&[b"HELLO", b"3"]).starts_with(b"%"));
    c.send(&watch);
    assert_eq!(show(&c.expect_reply("WATCH")), show(&want_watch[0]));
    let hello2 = c.call(&[b"HELLO", b"2"]);
    assert!(hello2.starts_with(b"*"), "HELLO 2: {}", show(&hello2));
    c.send(&hgetall);
    assert_eq!(
        show(&c.expect_reply("HGETALL after HELLO 2")),
        show(&want[0]),
        "HGETALL on the WATCH connection after HELLO 2"
    );
}

/// #11: a RESP3 subscriber that switches back with `HELLO 2` receives messages as RESP2
/// arrays (`*3 message ch payload`), as from a plain redis-server.
#[test]
fn hello2_after_subscribe_under_resp3_gives_resp2_messages() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let sub = enc(&[b"SUBSCRIBE", b"ch"]);

    let mut plain = Plain::start();
    plain.run(&enc(&[b"HELLO", b"3"]), 1);
    let want_sub = plain.run(&sub, 1);
    plain.run(&enc(&[b"HELLO", b"2"]), 1);
    let mut plain_pub = raw(plain.server.port);
    assert_eq!(plain_pub.call(&[b"PUBLISH", b"ch", b"hello"]), b":1\r\n");
    let want = plain.conn.expect_reply("plain: message after HELLO 2");
    assert_eq!(show(&want), show(&message("ch", "hello")));

    let mut c = raw(proxy.port);
    assert!(c.call(&[b"HELLO", b"3"]).starts_with(b"%"));
    c.send(&sub);
    assert_eq!(show(&c.expect_reply("SUBSCRIBE")), show(&want_sub[0]));
    let hello2 = c.call(&[b"HELLO", b"2"]);
    assert!(hello2.starts_with(b"*"), "HELLO 2: {}", show(&hello2));
    let mut p = raw(proxy.port);
    assert_eq!(p.call(&[b"PUBLISH", b"ch", b"hello"]), b":1\r\n");
    assert_eq!(
        show(&c.expect_reply("message after HELLO 2")),
        show(&want),
        "message to a subscriber that switched to RESP2"
    );
}

// ---------------------------------------------------------------------------------------------
// 12. RESET and ACL WHOAMI follow the authenticated user
// ---------------------------------------------------------------------------------------------

fn auth_proxy(servers: &[Redis]) -> Proxy {
    let lines: String = servers
        .iter()
        .map(|s| format!("    server 127.0.0.1:{}:1\n", s.port))
        .collect();
    Proxy::start_conf(
        "conf",
        move |port| {
            format!(
                "pool main\n    listen 127.0.0.1:{port}\n    requirepass pw\n    \
                 user admin adminpw admin\n    default_level readonly\n{lines}"
            )
        },
        &[],
    )
}

/// #12: `AUTH admin adminpw; RESET` goes back to the default user, not authenticated when a
/// password is required: SET and FLUSHALL get `-NOAUTH`.
#[test]
fn reset_drops_the_authenticated_user() {
    let servers = redises(2);
    let proxy = auth_proxy(&servers);
    let mut c = raw(proxy.port);
    assert_eq!(c.call(&[b"AUTH", b"admin", b"adminpw"]), b"+OK\r\n");
    assert_eq!(c.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(c.call(&[b"RESET"]), b"+RESET\r\n");
    let set = c.call(&[b"SET", b"k", b"v2"]);
    assert!(
        set.starts_with(b"-NOAUTH"),
        "SET after RESET: {}",
        show(&set)
    );
    let flush = c.call(&[b"FLUSHALL"]);
    assert!(
        flush.starts_with(b"-NOAUTH"),
        "FLUSHALL after RESET: {}",
        show(&flush)
    );
    let mut d = raw(proxy.port);
    assert_eq!(d.call(&[b"AUTH", b"pw"]), b"+OK\r\n");
    assert_eq!(
        show(&d.call(&[b"GET", b"k"])),
        show(&bulk(b"v")),
        "nothing written or flushed after RESET"
    );
}

/// #12: `ACL WHOAMI` names the authenticated user.
#[test]
fn acl_whoami_names_the_authenticated_user() {
    let servers = redises(2);
    let proxy = auth_proxy(&servers);
    let mut c = raw(proxy.port);
    assert_eq!(c.call(&[b"AUTH", b"admin", b"adminpw"]), b"+OK\r\n");
    assert_eq!(show(&c.call(&[b"ACL", b"WHOAMI"])), show(&bulk(b"admin")));
    let mut d = raw(proxy.port);
    assert_eq!(d.call(&[b"AUTH", b"pw"]), b"+OK\r\n");
    assert_eq!(show(&d.call(&[b"ACL", b"WHOAMI"])), show(&bulk(b"default")));
}

// ---------------------------------------------------------------------------------------------
// 13. FORWARD cannot change a shared connection's state
// ---------------------------------------------------------------------------------------------

/// #13: `FORWARD 0 MULTI` is refused, and another client's `SET` on backend 0 is executed
/// (`+OK`, not `+QUEUED`).
#[test]
fn forward_multi_is_refused_and_does_not_leak_into_other_clients() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let k = key_where(proxy.port, "fk:", |n| n == 0);
    let mut c = raw(proxy.port);
    let r = c.call(&[b"FORWARD", b"0", b"MULTI"]);
    assert!(r.starts_with(b"-ERR"), "FORWARD 0 MULTI: {}", show(&r));
    let mut d = raw(proxy.port);
    assert_eq!(
        show(&d.call(&[b"SET", k.as_bytes(), b"v"])),
        "+OK\\r\\n",
        "another client's SET on backend 0"
    );
    assert_eq!(show(&d.call(&[b"GET", k.as_bytes()])), show(&bulk(b"v")));
}

/// #13: every FORWARD of a command that changes connection state is refused with the proxy's
/// own error (not the backend's answer to the command), and backend 0 keeps serving other
/// clients normally afterwards.
#[test]
fn forward_of_connection_state_commands_is_refused() {
    let servers = redises(2);
    let cases: &[&[&[u8]]] = &[
        &[b"SELECT", b"1"],
        &[b"SUBSCRIBE", b"x"],
        &[b"CLIENT", b"REPLY", b"OFF"],
        &[b"HELLO", b"3"],
        &[b"RESET"],
        &[b"READONLY"],
        &[b"WATCH", b"k"],
    ];
    let mut plain = Plain::start();
    let mut problems = Vec::new();
    for args in cases {
        let name = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        plain.reconnect();
        plain.conn.set_timeout(Duration::from_millis(300));
        plain.conn.cmd(args);
        let backend_answer = plain.conn.next_reply().unwrap_or_default();

        // A fresh proxy per case, so that one leak cannot hide or cause another.
        let proxy = Proxy::start(&refs(&servers), &[]);
        let k = key_where(proxy.port, "fk:", |n| n == 0);
        let mut c = raw(proxy.port);
        c.set_timeout(Duration::from_secs(3));
        let mut fwd: Vec<&[u8]> = vec![b"FORWARD", b"0"];
        fwd.extend_from_slice(args);
        c.cmd(&fwd);
        match c.next_reply() {
            Ok(r)
                if r.starts_with(b"-ERR")
                    && !r.starts_with(b"-ERR timeout")
                    && r != backend_answer => {}
            Ok(r) => problems.push(format!("FORWARD 0 {name}: answered {}", show(&r))),
            Err(e) => problems.push(format!("FORWARD 0 {name}: {e}")),
        }
        let mut d = raw(proxy.port);
        d.set_timeout(Duration::from_secs(3));
        d.cmd(&[b"SET", k.as_bytes(), b"v"]);
        d.cmd(&[b"GET", k.as_bytes()]);
        let after: Vec<String> = (0..2)
            .map(|_| d.next_reply().map(|r| show(&r)).unwrap_or_else(|e| e))
            .collect();
        if after != ["+OK\\r\\n".to_string(), show(&bulk(b"v"))] {
            problems.push(format!(
                "after FORWARD 0 {name}, another client's SET; GET on backend 0: {after:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// #13: `FORWARD 0 BLPOP q 1` works (nil after its timeout) and does not hold up another
/// client's GET on backend 0: the GET is answered before the BLPOP's nil.
#[test]
fn forward_blpop_does_not_hold_up_other_clients() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let k = key_where(proxy.port, "fk:", |n| n == 0);
    let mut d = raw(proxy.port);
    assert_eq!(d.call(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");

    let mut a = raw(proxy.port);
    a.cmd(&[b"FORWARD", b"0", b"BLPOP", b"fq", b"1"]);
    wait_until("the forwarded BLPOP blocks on backend 0", || {
        blocked_in(&servers[0], "blpop") == 1
    });
    let get = d.call(&[b"GET", k.as_bytes()]);
    assert_eq!(show(&get), show(&bulk(b"v")));
    // Order of arrival: when the GET's reply is in, the BLPOP's must not be yet.
    a.stream.set_nonblocking(true).expect("nonblocking");
    let mut one = [0u8; 1];
    let early = a.stream.peek(&mut one);
    a.stream.set_nonblocking(false).expect("blocking");
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the BLPOP's reply arrived before another client's GET on backend 0 was answered \
         ({early:?})"
    );
    assert_eq!(show(&a.expect_reply("FORWARD 0 BLPOP fq 1")), "*-1\\r\\n");
}

// ---------------------------------------------------------------------------------------------
// 14. A `hash=` value is data unless the pool opts in
// ---------------------------------------------------------------------------------------------

/// #14: by default `SADD tags red hash=blue` adds both members, as Redis does.
#[test]
fn hash_argument_is_a_value_by_default_in_sadd() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let sadd = enc(&[b"SADD", b"tags", b"red", b"hash=blue"]);
    let want = Plain::start().run(&sadd, 1);
    let mut c = raw(proxy.port);
    c.send(&sadd);
    assert_eq!(show(&c.expect_reply("SADD")), show(&want[0]));
    let members: BTreeSet<String> = strings(&c.call(&[b"SMEMBERS", b"tags"]))
        .into_iter()
        .collect();
    assert_eq!(
        members,
        ["hash=blue".to_string(), "red".to_string()].into(),
        "SMEMBERS tags"
    );
    assert_eq!(
        common::holder(&servers, b"tags"),
        backendnum(proxy.port, "tags"),
        "tags stored on its own backend"
    );
}

/// #14: by default `RPUSH q job1 hash=job2` pushes both values onto q on q's own backend.
#[test]
fn hash_argument_is_a_value_by_default_in_rpush() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let other = backendnum(proxy.port, "job2");
    let q = key_where(proxy.port, "jobs:", |n| n != other);
    let mut c = raw(proxy.port);
    assert_eq!(
        show(&c.call(&[b"RPUSH", q.as_bytes(), b"job1", b"hash=job2"])),
        ":2\\r\\n"
    );
    assert_eq!(
        common::holder(&servers, q.as_bytes()),
        backendnum(proxy.port, &q),
        "the list is on its own backend"
    );
    assert_eq!(
        strings(&c.call(&[b"LRANGE", q.as_bytes(), b"0", b"-1"])),
        ["job1", "hash=job2"]
    );
}

/// #14: by default `MGET a hash=b` reads both keys, as Redis does.
#[test]
fn hash_argument_is_a_key_by_default_in_mget() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let stream = pipeline(&[&[b"SET", b"a", b"1"], &[b"MGET", b"a", b"hash=b"]]);
    let want = Plain::start().run(&stream, 2);
    let mut c = raw(proxy.port);
    c.send(&stream);
    let got = c.expect_replies(2, "SET a 1; MGET a hash=b");
    assert_eq!(show_all(&got), show_all(&want));
}

/// #14: with `hash_override yes` the trailing `hash=KEY` still routes by KEY and is removed
/// (jupiter's form, for those who opt in).
#[test]
fn hash_override_yes_routes_by_the_trailing_hash_argument() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--hash-override", "yes"]);
    let target = backendnum(proxy.port, "user42");
    let a = key_where(proxy.port, "ov:", |n| n != target);
    let mut c = raw(proxy.port);
    assert_eq!(
        show(&c.call(&[b"SET", a.as_bytes(), b"1", b"hash=user42"])),
        "+OK\\r\\n"
    );
    assert_eq!(
        show(&direct(&servers[target], &[b"GET", a.as_bytes()])),
        show(&bulk(b"1")),
        "SET ... hash=user42 stored on user42's backend, without the argument"
    );
    assert_eq!(
        show(&c.call(&[b"GET", a.as_bytes(), b"hash=user42"])),
        show(&bulk(b"1"))
    );
    let blue = backendnum(proxy.port, "blue");
    let tags = key_where(proxy.port, "tags:", |n| n != blue);
    assert_eq!(
        show(&c.call(&[b"SADD", tags.as_bytes(), b"red", b"hash=blue"])),
        ":1\\r\\n"
    );
    assert_eq!(
        direct(&servers[blue], &[b"SCARD", tags.as_bytes()]),
        b":1\r\n",
        "SADD ... hash=blue on blue's backend, one member"
    );
}

// ---------------------------------------------------------------------------------------------
// 15. Output limits cover all output
// ---------------------------------------------------------------------------------------------

/// #15: with `max_output 4mb`, a subscriber that never reads while ~100 MB of 1 KiB messages
/// are published is disconnected (pub/sub limit, default 32mb), and the proxy's RSS stays under
/// 32 MiB of messages + 64 MiB margin.
#[test]
fn unread_subscriber_is_disconnected_at_the_pubsub_limit() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--max-output", "4mb"]);
    let mut s = subscriber(proxy.port, "flood");
    let sampler = RssSampler::start(proxy.pid());
    let mut p = raw(proxy.port);
    p.set_timeout(WAIT);
    let payload = vec![b'm'; 1024];
    let batch: Vec<u8> = (0..500)
        .flat_map(|_| enc(&[b"PUBLISH", b"flood", &payload]))
        .collect();
    let mut delivered = 0;
    for round in 0..200 {
        p.send(&batch);
        for r in p.expect_replies(500, &format!("PUBLISH batch {round}")) {
            delivered += int(&r);
        }
    }
    let peak = sampler.stop();
    eprintln!(
        "unread subscriber: {delivered} of 100000 messages delivered to it, proxy RSS peak \
         {} MiB",
        peak / 1024
    );
    let left = s.wait_eof(WAIT).unwrap_or_else(|e| {
        panic!(
            "a subscriber that never read ~100 MB of messages was not disconnected: {e} \
             (RSS peak {} MiB)",
            peak / 1024
        )
    });
    eprintln!("unread subscriber: {left} bytes were readable before EOF");
    assert!(
        peak < (32 + 64) * 1024,
        "proxy RSS peak {} MiB with an unread subscriber (bound 96 MiB)",
        peak / 1024
    );
    fresh_subscriber_works(proxy.port, "flood");
}

/// #15: 60,000 pipelined `INFO` written while nothing is read: once read, all 60,000 replies
/// are complete INFO bulk strings, and the proxy's RSS stays bounded. Bound: 64 MiB = a 4 MiB
/// `max_output` high-water mark (plus one reply past it), doubled for buffer growth, plus the
/// process's own ~10-20 MiB, with the rest as margin; the defect queued ~78 MiB of output.
#[test]
fn unread_pipelined_info_replies_are_flow_controlled() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--max-output", "4mb"]);
    let mut c = raw(proxy.port);
    c.set_timeout(WAIT);
    let sampler = RssSampler::start(proxy.pid());
    let mut w = c.stream.try_clone().expect("clone stream");
    w.set_write_timeout(Some(Duration::from_secs(60)))
        .expect("write timeout");
    let (tx, rx) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let chunk: Vec<u8> = (0..1000).flat_map(|_| enc(&[b"INFO"])).collect();
        let mut res = Ok(());
        for _ in 0..60 {
            if let Err(e) = w.write_all(&chunk) {
                res = Err(e.to_string());
                break;
            }
        }
        let _ = tx.send(res);
    });
    // Nothing is read for a while: the replies pile up (or the proxy holds the requests back).
    std::thread::sleep(Duration::from_millis(1500));
    let mut bad = 0;
    let mut first_bad = String::new();
    for i in 0..60_000 {
        let r = c.expect_reply(&format!("INFO reply {} of 60000", i + 1));
        let ok = r.starts_with(b"$") && r.windows(8).any(|w| w == b"# Server");
        if !ok {
            if bad == 0 {
                first_bad = format!("reply {}: {}", i + 1, show(&r));
            }
            bad += 1;
        }
    }
    let wrote = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("writer thread did not finish: {e}"));
    let _ = writer.join();
    let peak = sampler.stop();
    eprintln!("60,000 unread INFO: proxy RSS peak {} MiB", peak / 1024);
    assert_eq!(wrote, Ok(()), "writing 60,000 INFO");
    assert_eq!(
        bad, 0,
        "{bad} INFO replies were not INFO; first {first_bad}"
    );
    assert!(
        peak < 64 * 1024,
        "proxy RSS peak {} MiB for 60,000 unread INFO replies with max_output 4mb (bound 64 MiB)",
        peak / 1024
    );
}

// ---------------------------------------------------------------------------------------------
// 16. Flow control instead of dropping a reading client
// ---------------------------------------------------------------------------------------------

/// #16: backend A stalls 0.5 s (`DEBUG SLEEP`, below the 1 s timeout) at the head of a
/// pipeline `GET <key on A>; 100 x GET <1 MiB key on B>`: all 101 replies arrive, correct.
#[test]
fn stalled_head_of_pipeline_does_not_drop_a_reading_client() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let ka = key_where(proxy.port, "head:", |n| n == 0);
    let kb = key_where(proxy.port, "big:", |n| n == 1);
    let big = value(7, 1 << 20);
    let mut c = raw(proxy.port);
    c.set_timeout(WAIT);
    assert_eq!(c.call(&[b"SET", ka.as_bytes(), b"head"]), b"+OK\r\n");
    assert_eq!(c.call(&[b"SET", kb.as_bytes(), &big]), b"+OK\r\n");

    let sampler = RssSampler::start(proxy.pid());
    let mut a = raw(servers[0].port);
    a.cmd(&[b"DEBUG", b"SLEEP", b"0.5"]);
    std::thread::sleep(Duration::from_millis(50));
    let mut stream = enc(&[b"GET", ka.as_bytes()]);
    for _ in 0..100 {
        stream.extend_from_slice(&enc(&[b"GET", kb.as_bytes()]));
    }
    c.send(&stream);
    let head = c.expect_reply("GET of the stalled backend's key (reply 1 of 101)");
    assert_eq!(show(&head), show(&bulk(b"head")));
    let want = bulk(&big);
    for i in 0..100 {
        let r = c.next_reply().unwrap_or_else(|e| {
            panic!(
                "reply {} of 101 missing ({e}); the {i} 1 MiB replies before it were correct",
                i + 2
            )
        });
        assert!(r == want, "reply {} of 101: {}", i + 2, show(&r));
    }
    assert_eq!(a.expect_reply("DEBUG SLEEP"), b"+OK\r\n");
    eprintln!(
        "stalled head of pipeline: 101 of 101 replies, proxy RSS peak {} MiB",
        sampler.stop() / 1024
    );
}

/// #16: 20 pipelined GETs of a 4 MiB value, read 0.3 s later: all 20 replies arrive, correct
/// (Redis has no output limit for normal clients; the proxy slows the client down instead).
#[test]
fn slow_reader_of_large_pipelined_replies_is_served() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let big = value(4, 4 << 20);
    let mut c = raw(proxy.port);
    c.set_timeout(WAIT);
    assert_eq!(c.call(&[b"SET", b"big", &big]), b"+OK\r\n");
    let sampler = RssSampler::start(proxy.pid());
    let stream: Vec<u8> = (0..20).flat_map(|_| enc(&[b"GET", b"big"])).collect();
    c.send(&stream);
    std::thread::sleep(Duration::from_millis(300));
    let want = bulk(&big);
    for i in 0..20 {
        let r = c
            .next_reply()
            .unwrap_or_else(|e| panic!("reply {} of 20 missing: {e}", i + 1));
        assert!(r == want, "reply {} of 20: {}", i + 1, show(&r));
    }
    eprintln!(
        "20 x 4 MiB read late: 20 of 20 replies, proxy RSS peak {} MiB",
        sampler.stop() / 1024
    );
}

// ---------------------------------------------------------------------------------------------
// 17. BACKEND and BACKENDS agree
// ---------------------------------------------------------------------------------------------

/// BACKEND key == BACKENDS[BACKENDNUM key] for 50 keys; BACKENDS == `names`; PROXY BACKENDS
/// lines still show each server's host:port.
fn check_backend_names(proxy: &Proxy, servers: &[Redis], names: &[String]) {
    let mut c = raw(proxy.port);
    let list = strings(&c.call(&[b"BACKENDS"]));
    assert_eq!(list, names, "BACKENDS");
    for i in 0..50 {
        let k = format!("name:{i}");
        let name = text(&c.call(&[b"BACKEND", k.as_bytes()]));
        let n = int(&c.call(&[b"BACKENDNUM", k.as_bytes()])) as usize;
        assert_eq!(
            Some(&name),
            list.get(n),
            "BACKEND {k} vs BACKENDS[BACKENDNUM {k} = {n}]"
        );
    }
    let lines = proxy_backends(proxy.port);
    assert_eq!(lines.len(), servers.len(), "PROXY BACKENDS {lines:?}");
    for (line, s) in lines.iter().zip(servers) {
        assert!(
            line.contains(&format!("127.0.0.1:{}", s.port)),
            "PROXY BACKENDS line {line:?} lacks the server's address"
        );
    }
}

/// #17: named servers: `BACKEND key` and `BACKENDS` both give the names.
#[test]
fn backend_equals_backends_at_backendnum_with_named_servers() {
    let servers = redises(4);
    let proxy = Conf::new(&[]).start(&servers);
    let names: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    check_backend_names(&proxy, &servers, &names);
}

/// #17: unnamed servers (`-b`): the names are `host:port`, in both commands.
#[test]
fn backend_equals_backends_at_backendnum_with_unnamed_servers() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let names: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    check_backend_names(&proxy, &servers, &names);
}
