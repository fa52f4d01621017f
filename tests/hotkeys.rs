//! Issue 21: hot keys. Detection (HOTKEYS, INFO hotkeys, /metrics) finds the planted hot keys
//! of a Zipf workload; the hot-key cache answers a hot key without a backend request and every
//! change (a write through the proxy, a write from a direct client of the backend, an EXPIRE
//! that fires, DEL, FLUSHALL, a killed tracking connection) is seen by the next reads; memory
//! stays under the configured size with large values.
//!
//! Every test runs real redis-servers on free loopback ports and the real binary. Waits are
//! bounded polls; no duration is asserted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{
    enc_many, free_port, ms, poll_until, redises, refs, text, tmp_dir, wait_listening, Proxy, Raw,
    Redis,
};

const QUICK: Duration = Duration::from_secs(5);

fn raw(port: u16) -> Raw {
    let mut r = Raw::connect(port);
    r.set_timeout(QUICK);
    r
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Zipf(s) over 0..n: cumulative distribution, drawn by inversion.
fn zipf(n: usize, s: f64) -> Vec<f64> {
    let mut c = Vec::with_capacity(n);
    let mut sum = 0.0;
    for i in 1..=n {
        sum += 1.0 / (i as f64).powf(s);
        c.push(sum);
    }
    c.into_iter().map(|x| x / sum).collect()
}

/// The value of `field` in an INFO line `name:a=1,b=2`.
fn info_field(info: &str, line: &str, field: &str) -> Option<String> {
    let rest = info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{line}:")))?;
    rest.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == field).then(|| v.to_string())
    })
}

fn http_metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats port");
    s.set_read_timeout(Some(QUICK)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The key, backend and read rate of each HOTKEYS GET entry (RESP2 flat arrays).
fn hotkeys(c: &mut Raw) -> Vec<(String, String, i64)> {
    let reply = c.call_str(&["HOTKEYS", "GET"]);
    let rustproxy::resp::Reply::Array(entries) = common::parsed(&reply) else {
        panic!("not an array: {}", common::show(&reply));
    };
    entries
        .iter()
        .map(|e| {
            let rustproxy::resp::Reply::Array(kv) = e else {
                panic!("entry {e:?}");
            };
            let field = |name: &str| {
                kv.chunks(2)
                    .find(|p| p[0] == rustproxy::resp::Reply::Bulk(name.as_bytes()))
                    .map(|p| p[1].clone())
                    .unwrap_or_else(|| panic!("no {name} in {kv:?}"))
            };
            let s = |r: rustproxy::resp::Reply| match r {
                rustproxy::resp::Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            };
            let n = |r: rustproxy::resp::Reply| match r {
                rustproxy::resp::Reply::Integer(i) => i,
                other => panic!("{other:?}"),
            };
            (s(field("key")), s(field("backend")), n(field("reads")))
        })
        .collect()
}

#[test]
fn detection_finds_the_planted_hot_keys_of_a_zipf_workload() {
    let servers = redises(3);
    let sp = free_port();
    let proxy = Proxy::start(
        &refs(&servers),
        &[
            "--hotkeys",
            "8",
            "--hotkeys-sample",
            "4",
            "-s",
            &sp.to_string(),
            "-a",
            "127.0.0.1",
        ],
    );
    wait_listening(sp, "the stats port");
    let mut c = raw(proxy.port);
    // Zipf(1.1) over 10,000 keys, with the ranks shuffled so the hottest keys are not the
    // lowest numbers: the planted ones are the five hottest ranks.
    let cdf = zipf(10_000, 1.1);
    let name = |rank: usize| format!("user:{}", (rank * 7919) % 10_000);
    let mut r = Rng(0x2545f4914f6cdd1d);
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for i in 0..40_000 {
        let u = (r.next() >> 11) as f64 / (1u64 << 53) as f64;
        let rank = cdf.partition_point(|&x| x < u);
        if i % 10 == 0 {
            cmds.push(vec!["SET".into(), name(rank), "v".into()]);
        } else {
            cmds.push(vec!["GET".into(), name(rank)]);
        }
    }
    for chunk in cmds.chunks(2000) {
        let n = chunk.len();
        c.exchange(enc_many(chunk), n);
    }
    let top = hotkeys(&mut c);
    let keys: Vec<&str> = top.iter().map(|(k, _, _)| k.as_str()).collect();
    for rank in 0..5 {
        assert!(
            keys[..8].contains(&name(rank).as_str()),
            "{} not in {keys:?}",
            name(rank)
        );
    }
    assert_eq!(keys[0], name(0), "{keys:?}");
    // Each names the backend its key lives on.
    for (key, backend, reads) in &top {
        let b = c.call_str(&["BACKEND", key]);
        assert_eq!(&text(&b), backend, "{key}");
        assert!(*reads > 0, "{key}");
    }
    // INFO hotkeys shows the same top, with rates and backends.
    let info = text(&c.call_str(&["INFO", "hotkeys"]));
    assert!(info.starts_with("# Hotkeys\r\n"), "{info}");
    let pool_line = info
        .lines()
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let pool = pool_line.strip_prefix("hotkeys_").unwrap();
    assert_eq!(
        info_field(&info, &format!("hotkey_{pool}_0"), "key").as_deref(),
        Some(name(0).as_str()),
        "{info}"
    );
    assert_eq!(
        info_field(&info, &format!("hotkey_{pool}_0"), "backend"),
        Some(top[0].1.clone())
    );
    // /metrics: the top entries only (bounded labels), reads and writes apart.
    let m = http_metrics(sp);
    let samples: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("rustproxy_hotkey_requests_per_second{"))
        .collect();
    assert!(
        !samples.is_empty() && samples.len() <= 2 * 10,
        "{samples:?}"
    );
    assert!(
        samples
            .iter()
            .any(|l| l.contains(&format!("key=\"{}\"", name(0))) && l.contains("op=\"write\"")),
        "{samples:?}"
    );
    // RESET forgets; the default INFO does not show the section.
    assert_eq!(c.call_str(&["HOTKEYS", "RESET"]), b"+OK\r\n");
    assert!(hotkeys(&mut c).is_empty());
    assert!(!text(&c.call_str(&["INFO"])).contains("# Hotkeys"));
    // Wrong usage is an error, not a crash.
    assert!(common::is_error(
        &c.call_str(&["HOTKEYS", "GET", "COUNT", "x"])
    ));
    assert!(common::is_error(&c.call_str(&["HOTKEYS", "NOPE"])));
    assert_eq!(c.call_str(&["PING"]), b"+PONG\r\n");
    drop(servers);
}

#[test]
fn hotkeys_reply_is_a_map_per_entry_in_resp3() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--hotkeys-sample", "1"]);
    let mut c = raw(proxy.port);
    let _ = c.call_str(&["HELLO", "3"]);
    for _ in 0..20 {
        assert_eq!(c.call_str(&["GET", "k"]), b"_\r\n");
    }
    let reply = c.call_str(&["HOTKEYS", "GET", "COUNT", "1"]);
    assert!(
        reply.starts_with(b"*1\r\n%6\r\n$3\r\nkey\r\n$1\r\nk\r\n$2\r\ndb\r\n:0\r\n"),
        "{}",
        common::show(&reply)
    );
    let off = Proxy::start(&refs(&servers), &["--hotkeys", "0"]);
    let mut c = raw(off.port);
    assert_eq!(c.call_str(&["GET", "k"]), b"$-1\r\n");
    assert_eq!(c.call_str(&["HOTKEYS", "GET"]), b"*0\r\n");
}

// ---------------------------------------------------------------------------------------------
// The cache

/// A proxy over `servers` whose cache takes every key read once (sampling 1, threshold 1/s).
fn cache_proxy(servers: &[Redis], size: &str, extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--hotkeys-sample",
        "1",
        "--hotkeys-window",
        "1000",
        "--hotkey-cache",
        size,
        "--hotkey-cache-threshold",
        "1",
    ];
    args.extend_from_slice(extra);
    Proxy::start(&refs(servers), &args)
}

/// A field of the pool's `hotcache_<pool>` INFO line.
fn cache_field(c: &mut Raw, field: &str) -> u64 {
    let info = text(&c.call_str(&["INFO", "hotkeys"]));
    let line = info
        .lines()
        .find(|l| l.starts_with("hotcache_"))
        .unwrap_or_else(|| panic!("no hotcache line in {info}"));
    let name = line.split(':').next().unwrap();
    info_field(&info, name, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}

/// Read `key` through the proxy until a read of it is a cache hit; each read must be `want`.
fn warm(c: &mut Raw, key: &str, want: &[u8]) {
    poll_until(
        &format!("{key} served from the cache"),
        QUICK,
        ms(10),
        || {
            let before = cache_field(c, "hits");
            let got = c.call_str(&["GET", key]);
            if got != want {
                return Err(format!("GET {key} = {}", common::show(&got)));
            }
            if cache_field(c, "hits") > before {
                Ok(())
            } else {
                Err("a miss".to_string())
            }
        },
    );
}

/// Poll GET `key` through the proxy until it gives `want`.
fn until_read(c: &mut Raw, key: &str, want: &[u8], what: &str) {
    poll_until(what, QUICK, ms(10), || {
        let got = c.call_str(&["GET", key]);
        if got == want {
            Ok(())
        } else {
            Err(format!("GET {key} = {}", common::show(&got)))
        }
    });
}

/// `cmdstat_get` calls of a backend (its own INFO commandstats).
fn backend_gets(r: &Redis) -> u64 {
    let mut d = raw(r.port);
    let info = text(&d.call_str(&["INFO", "commandstats"]));
    info_field(&info, "cmdstat_get", "calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn direct(r: &Redis, args: &[&str]) -> Vec<u8> {
    raw(r.port).call_str(args)
}

#[test]
fn the_cache_serves_a_hot_key_with_no_backend_request() {
    let servers = redises(2);
    let sp = free_port();
    let sps = sp.to_string();
    let proxy = cache_proxy(&servers, "1mb", &["-s", &sps, "-a", "127.0.0.1"]);
    wait_listening(sp, "the stats port");
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["SET", "hot", "value"]), b"+OK\r\n");
    warm(&mut c, "hot", b"$5\r\nvalue\r\n");
    let gets: Vec<u64> = servers.iter().map(backend_gets).collect();
    let hits = cache_field(&mut c, "hits");
    // A pipeline of GETs, interleaved with other commands: replies stay in request order.
    let mut cmds: Vec<Vec<&str>> = Vec::new();
    for i in 0..200 {
        cmds.push(vec!["GET", "hot"]);
        if i % 50 == 0 {
            cmds.push(vec!["ECHO", "between"]);
        }
    }
    let replies = c.exchange(enc_many(&cmds), cmds.len());
    for (cmd, r) in cmds.iter().zip(&replies) {
        let want: &[u8] = if cmd[0] == "GET" {
            b"$5\r\nvalue\r\n"
        } else {
            b"$7\r\nbetween\r\n"
        };
        assert_eq!(r, want);
    }
    assert_eq!(
        servers.iter().map(backend_gets).collect::<Vec<_>>(),
        gets,
        "no backend GET"
    );
    assert!(cache_field(&mut c, "hits") >= hits + 200);
    // The same figures in /metrics.
    let m = http_metrics(sp);
    let metric = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{pool=")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {m}"))
    };
    assert!(metric("rustproxy_hotcache_hits_total") >= hits + 200);
    assert!(metric("rustproxy_hotcache_entries") >= 1);
    assert!(metric("rustproxy_hotcache_bytes") > 0);
    // RESP3 clients get the same bulk string.
    let mut c3 = raw(proxy.port);
    let _ = c3.call_str(&["HELLO", "3"]);
    assert_eq!(c3.call_str(&["GET", "hot"]), b"$5\r\nvalue\r\n");
    // A hot missing key is cached too, and answered as nil in each client's protocol.
    warm(&mut c, "nothing", b"$-1\r\n");
    let gets: Vec<u64> = servers.iter().map(backend_gets).collect();
    for _ in 0..50 {
        assert_eq!(c3.call_str(&["GET", "nothing"]), b"_\r\n");
        assert_eq!(c.call_str(&["GET", "nothing"]), b"$-1\r\n");
    }
    assert_eq!(servers.iter().map(backend_gets).collect::<Vec<_>>(), gets);
    // Created by a direct client: Redis's invalidation makes it visible.
    let owner = servers
        .iter()
        .find(|r| {
            let b = text(&c.call_str(&["BACKEND", "nothing"]));
            b.ends_with(&format!(":{}", r.port))
        })
        .expect("the owner of the key");
    assert_eq!(direct(owner, &["SET", "nothing", "now"]), b"+OK\r\n");
    until_read(&mut c, "nothing", b"$3\r\nnow\r\n", "a created key seen");
    assert_eq!(c.call_str(&["DEL", "nothing"]), b":1\r\n");
    assert_eq!(c.call_str(&["GET", "nothing"]), b"$-1\r\n");
    // At most one tracking connection per backend (the missing key's may have opened one).
    let tracking = cache_field(&mut c, "tracking_connections");
    assert!((1..=2).contains(&tracking), "{tracking}");
}

#[test]
fn every_change_is_seen_by_the_next_reads() {
    let servers = redises(1);
    let proxy = cache_proxy(&servers, "1mb", &[]);
    let mut c = raw(proxy.port);
    let r = &servers[0];
    let v = |s: &str| format!("${}\r\n{s}\r\n", s.len()).into_bytes();

    // A write through the proxy: the very next read sees it.
    c.call_str(&["SET", "k", "one"]);
    warm(&mut c, "k", &v("one"));
    assert_eq!(c.call_str(&["SET", "k", "two"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["GET", "k"]), v("two"));

    // A write by a direct client of the backend: Redis's invalidation drops the entry.
    warm(&mut c, "k", &v("two"));
    assert_eq!(direct(r, &["SET", "k", "three"]), b"+OK\r\n");
    until_read(&mut c, "k", &v("three"), "a direct write seen");

    // An EXPIRE that fires (set directly): gone when Redis expires it.
    warm(&mut c, "k", &v("three"));
    assert_eq!(direct(r, &["PEXPIRE", "k", "300"]), b":1\r\n");
    until_read(&mut c, "k", b"$-1\r\n", "the expiry seen");

    // A TTL fetched with the value bounds the entry (no invalidation needed to stop serving).
    c.call_str(&["SET", "t", "short", "PX", "400"]);
    until_read(&mut c, "t", b"$-1\r\n", "the TTL respected");

    // DEL through the proxy.
    c.call_str(&["SET", "k", "four"]);
    warm(&mut c, "k", &v("four"));
    assert_eq!(c.call_str(&["DEL", "k"]), b":1\r\n");
    assert_eq!(c.call_str(&["GET", "k"]), b"$-1\r\n");

    // FLUSHALL through the proxy, and from a direct client.
    c.call_str(&["SET", "k", "five"]);
    warm(&mut c, "k", &v("five"));
    assert_eq!(c.call_str(&["FLUSHALL"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["GET", "k"]), b"$-1\r\n");
    c.call_str(&["SET", "k", "six"]);
    warm(&mut c, "k", &v("six"));
    assert_eq!(direct(r, &["FLUSHALL"]), b"+OK\r\n");
    until_read(&mut c, "k", b"$-1\r\n", "a direct FLUSHALL seen");

    // Clients of another database bypass the cache.
    c.call_str(&["SET", "k", "seven"]);
    warm(&mut c, "k", &v("seven"));
    let mut d1 = raw(proxy.port);
    assert_eq!(d1.call_str(&["SELECT", "1"]), b"+OK\r\n");
    assert_eq!(d1.call_str(&["GET", "k"]), b"$-1\r\n");
    d1.call_str(&["SET", "k", "db1"]);
    assert_eq!(d1.call_str(&["GET", "k"]), v("db1"));

    // The tracking connection killed on the backend: every entry of the backend goes, so a
    // write Redis can no longer report is still seen.
    warm(&mut c, "k", &v("seven"));
    let list = text(&direct(r, &["CLIENT", "LIST"]));
    let id = list
        .lines()
        .find(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no tracking client in {list}"))
        .to_string();
    assert_eq!(direct(r, &["CLIENT", "KILL", "ID", &id]), b":1\r\n");
    assert_eq!(direct(r, &["SET", "k", "eight"]), b"+OK\r\n");
    until_read(
        &mut c,
        "k",
        &v("eight"),
        "a write after the tracking connection died",
    );
    // A new tracking connection takes over.
    warm(&mut c, "k", &v("eight"));
    assert_eq!(direct(r, &["SET", "k", "nine"]), b"+OK\r\n");
    until_read(
        &mut c,
        "k",
        &v("nine"),
        "a direct write with the new tracking connection",
    );
}

#[test]
fn memory_stays_under_the_limit_with_large_values() {
    let servers = redises(2);
    let proxy = cache_proxy(
        &servers,
        "64kb",
        &["--hotkey-cache-max-value", "16kb", "--hotkeys", "64"],
    );
    let mut c = raw(proxy.port);
    let big = "x".repeat(10_000);
    let keys: Vec<String> = (0..40).map(|i| format!("large:{i}")).collect();
    for k in &keys {
        assert_eq!(c.call_str(&["SET", k, &big]), b"+OK\r\n");
    }
    let want = format!("${}\r\n{big}\r\n", big.len()).into_bytes();
    let max = cache_field(&mut c, "max_bytes");
    assert_eq!(max, 64 * 1024);
    for round in 0..5 {
        for k in &keys {
            assert_eq!(c.call_str(&["GET", k]), want, "round {round}");
        }
        let bytes = cache_field(&mut c, "bytes");
        assert!(bytes <= max, "{bytes} > {max}");
    }
    assert!(
        cache_field(&mut c, "entries") > 0,
        "large values are cached"
    );
    assert!(cache_field(&mut c, "evictions") > 0);
    // Above the value limit: never cached, always right.
    let huge = "y".repeat(20_000);
    c.call_str(&["SET", "huge", &huge]);
    let want = format!("${}\r\n{huge}\r\n", huge.len()).into_bytes();
    let hits = cache_field(&mut c, "hits");
    for _ in 0..20 {
        assert_eq!(c.call_str(&["GET", "huge"]), want);
    }
    assert_eq!(cache_field(&mut c, "hits"), hits);
    assert!(cache_field(&mut c, "bytes") <= max);
}

#[test]
fn a_writer_always_reads_its_own_write_of_a_cached_key() {
    let servers = redises(2);
    let proxy = cache_proxy(&servers, "1mb", &[]);
    let mut w = raw(proxy.port);
    w.call_str(&["SET", "rw", "0"]);
    warm(&mut w, "rw", b"$1\r\n0\r\n");
    // Readers keep the key hot (and re-fetched) while the writer writes and reads back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (port, stop) = (proxy.port, stop.clone());
            std::thread::spawn(move || {
                let mut r = raw(port);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = r.call_str(&["GET", "rw"]);
                    assert!(got.starts_with(b"$"), "{}", common::show(&got));
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 1..=500 {
        let v = i.to_string();
        assert_eq!(w.call_str(&["SET", "rw", &v]), b"+OK\r\n");
        let want = format!("${}\r\n{v}\r\n", v.len()).into_bytes();
        assert_eq!(w.call_str(&["GET", "rw"]), want, "write {i}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(reads > 0);
    assert!(cache_field(&mut w, "hits") > 0);
}

#[test]
fn a_backend_that_refuses_tracking_is_served_uncached() {
    let r = Redis::start_with(&["--rename-command", "HELLO", ""]);
    let proxy = cache_proxy(std::slice::from_ref(&r), "1mb", &[]);
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["SET", "k", "v"]), b"+OK\r\n");
    for _ in 0..200 {
        assert_eq!(c.call_str(&["GET", "k"]), b"$1\r\nv\r\n");
    }
    proxy.wait_log("tracking refused", QUICK);
    assert_eq!(cache_field(&mut c, "hits"), 0);
    assert_eq!(cache_field(&mut c, "tracking_connections"), 0);
    // One attempt, not one per read: the backend saw few connections.
    let info = text(&direct(&r, &["INFO", "stats"]));
    let conns: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(conns < 10, "{conns} connections");
    assert_eq!(c.call_str(&["SET", "k", "w"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["GET", "k"]), b"$1\r\nw\r\n");
}

/// Tracking clients (flag `t`) connected to a backend.
fn tracking_clients(r: &Redis) -> usize {
    let list = text(&direct(r, &["CLIENT", "LIST"]));
    list.lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .count()
}

#[test]
fn a_reload_turns_the_cache_off_and_on() {
    let r = Redis::start();
    let port = free_port();
    let conf = |cache: &str| {
        format!(
            "pool p\n  listen 127.0.0.1:{port}\n  hotkeys_sample 1\n  hotkeys_window 1000\n  hotkey_cache {cache}\n  hotkey_cache_threshold 1\n  server 127.0.0.1:{}:1 b0\n",
            r.port
        )
    };
    let path = tmp_dir("hotkeys-reload").join("proxy.conf");
    std::fs::write(&path, conf("1mb")).unwrap();
    let _proxy = Proxy::spawn(port, &["-c".into(), path.to_string_lossy().into_owned()]);
    let mut c = raw(port);
    c.call_str(&["SET", "k", "v1"]);
    warm(&mut c, "k", b"$2\r\nv1\r\n");
    assert_eq!(tracking_clients(&r), 1);
    // Off: no cache section, the tracking connection closes, reads go to the backend.
    std::fs::write(&path, conf("0")).unwrap();
    let reloaded = text(&c.call_str(&["PROXY", "RELOAD"]));
    assert!(reloaded.contains("settings changed"), "{reloaded}");
    let info = text(&c.call_str(&["INFO", "hotkeys"]));
    assert!(!info.contains("hotcache_"), "{info}");
    poll_until(
        "the tracking connection closed",
        QUICK,
        ms(10),
        || match tracking_clients(&r) {
            0 => Ok(()),
            n => Err(format!("{n} tracking clients")),
        },
    );
    assert_eq!(direct(&r, &["SET", "k", "v2"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["GET", "k"]), b"$2\r\nv2\r\n");
    // On again: cached anew.
    std::fs::write(&path, conf("1mb")).unwrap();
    let _ = c.call_str(&["PROXY", "RELOAD"]);
    warm(&mut c, "k", b"$2\r\nv2\r\n");
    assert_eq!(direct(&r, &["SET", "k", "v3"]), b"+OK\r\n");
    until_read(
        &mut c,
        "k",
        b"$2\r\nv3\r\n",
        "a direct write after the reload",
    );
}

#[test]
fn odd_keys_are_counted_and_shown_safely() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--hotkeys-sample", "1"]);
    let mut c = raw(proxy.port);
    let odd: &[u8] = b"a,b\r\nc=d:\x00\xff";
    let long = vec![b'L'; 100_000];
    for _ in 0..30 {
        assert_eq!(c.call(&[b"SET", odd, b"v"]), b"+OK\r\n");
        assert_eq!(c.call(&[b"GET", &long]), b"$-1\r\n");
        assert_eq!(c.call(&[b"GET", b""]), b"$-1\r\n");
    }
    // HOTKEYS gives the key's bytes (counted on its first 512 for the long one).
    let reply = c.call_str(&["HOTKEYS", "GET"]);
    let rustproxy::resp::Reply::Array(entries) = common::parsed(&reply) else {
        panic!("{}", common::show(&reply));
    };
    assert_eq!(entries.len(), 3);
    let keys: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| match e {
            rustproxy::resp::Reply::Array(kv) => match &kv[1] {
                rustproxy::resp::Reply::Bulk(b) => b.to_vec(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(keys.contains(&odd.to_vec()));
    assert!(keys.contains(&vec![b'L'; 512]));
    assert!(keys.contains(&Vec::new()));
    // INFO: one line per entry, no raw CR/LF or commas from the keys.
    let info = text(&c.call_str(&["INFO", "hotkeys"]));
    let lines: Vec<&str> = info.lines().filter(|l| l.starts_with("hotkey_")).collect();
    assert_eq!(lines.len(), 3, "{info}");
    assert!(
        info.contains("key=a\\x2cb\\x0d\\x0ac=d:\\x00\\xff,"),
        "{info}"
    );
    assert!(lines.iter().all(|l| l.split(',').count() == 6), "{lines:?}");
}

#[test]
fn a_transaction_drops_what_it_writes() {
    let servers = redises(1);
    let proxy = cache_proxy(&servers, "1mb", &[]);
    let mut c = raw(proxy.port);
    c.call_str(&["SET", "m", "old"]);
    warm(&mut c, "m", b"$3\r\nold\r\n");
    assert_eq!(c.call_str(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["SET", "m", "new"]), b"+QUEUED\r\n");
    assert_eq!(c.call_str(&["GET", "m"]), b"+QUEUED\r\n");
    assert_eq!(c.call_str(&["EXEC"]), b"*2\r\n+OK\r\n$3\r\nnew\r\n");
    assert_eq!(c.call_str(&["GET", "m"]), b"$3\r\nnew\r\n");
    // With readers re-fetching the key all along, the writer still reads each transaction's
    // write.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (port, stop) = (proxy.port, stop.clone());
            std::thread::spawn(move || {
                let mut r = raw(port);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = r.call_str(&["GET", "m"]);
                    assert!(got.starts_with(b"$"), "{}", common::show(&got));
                }
            })
        })
        .collect();
    for i in 0..300 {
        let v = format!("t{i}");
        assert_eq!(c.call_str(&["MULTI"]), b"+OK\r\n");
        assert_eq!(c.call_str(&["SET", "m", &v]), b"+QUEUED\r\n");
        assert_eq!(c.call_str(&["EXEC"]), b"*1\r\n+OK\r\n");
        let want = format!("${}\r\n{v}\r\n", v.len()).into_bytes();
        assert_eq!(c.call_str(&["GET", "m"]), want, "transaction {i}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in readers {
        t.join().unwrap();
    }
}

#[test]
fn blocked_writers_do_not_stop_the_cache() {
    let servers = redises(1);
    let proxy = cache_proxy(&servers, "1mb", &[]);
    let mut blocked = raw(proxy.port);
    blocked.send(&common::enc(&[
        b"BLMOVE", b"q1", b"q2", b"LEFT", b"RIGHT", b"0",
    ]));
    let mut blocked2 = raw(proxy.port);
    blocked2.send(&common::enc(&[b"BLPOP", b"q3", b"0"]));
    let mut c = raw(proxy.port);
    poll_until("both blocked", QUICK, ms(10), || {
        let info = text(&c.call_str(&["INFO", "clients"]));
        match info.contains("blocked_clients:2") {
            true => Ok(()),
            false => Err(info),
        }
    });
    c.call_str(&["SET", "k", "v"]);
    warm(&mut c, "k", b"$1\r\nv\r\n");
    // The blocked writes complete, and what they wrote is read back.
    assert_eq!(c.call_str(&["RPUSH", "q1", "x"]), b":1\r\n");
    assert_eq!(blocked.reply(), b"$1\r\nx\r\n");
    assert_eq!(c.call_str(&["RPUSH", "q3", "y"]), b":1\r\n");
    assert_eq!(blocked2.reply(), b"*2\r\n$2\r\nq3\r\n$1\r\ny\r\n");
    assert_eq!(
        c.call_str(&["LRANGE", "q2", "0", "-1"]),
        b"*1\r\n$1\r\nx\r\n"
    );
    assert_eq!(c.call_str(&["SET", "k", "w"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["GET", "k"]), b"$1\r\nw\r\n");
}
