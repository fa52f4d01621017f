//! Adversarial review of the hot-key cache (issue 21). Each test drives a real redis-server
//! through the proxy with the cache on (sampling 1, threshold 1/s, so a key read a few times
//! is cached), makes sure the key is served from the cache, then does something the cache
//! must not hide: the GET that follows must answer what Redis itself answers (read back with a
//! direct client of the backend afterwards, with no other writer). Waits are bounded polls.

mod common;

use std::time::Duration;

use common::{enc_many, ms, poll_until, redises, refs, show, text, Proxy, Raw, Redis};

const QUICK: Duration = Duration::from_secs(5);

fn raw(port: u16) -> Raw {
    let mut r = Raw::connect(port);
    r.set_timeout(QUICK);
    r
}

/// A proxy over `servers` whose cache takes every key read once (sampling 1, threshold 1/s).
fn cache_proxy(servers: &[Redis], extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--hotkeys-sample",
        "1",
        "--hotkeys-window",
        "1000",
        "--hotkey-cache",
        "1mb",
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
    line.split_once(':')
        .map(|(_, rest)| rest)
        .and_then(|rest| {
            rest.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == field).then(|| v.parse().ok()).flatten()
            })
        })
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}

/// Read `key` through the proxy until a read of it is a cache hit giving `want`.
fn warm(c: &mut Raw, key: &[u8], want: &[u8]) {
    poll_until(
        &format!("{} served from the cache", show(key)),
        QUICK,
        ms(10),
        || {
            let before = cache_field(c, "hits");
            let got = c.call(&[b"GET", key]);
            if got != want {
                return Err(format!("GET = {}", show(&got)));
            }
            if cache_field(c, "hits") > before {
                Ok(())
            } else {
                Err("a miss".to_string())
            }
        },
    );
}

fn direct(r: &Redis, args: &[&[u8]]) -> Vec<u8> {
    raw(r.port).call(args)
}

fn s(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// PFCOUNT is not flagged `write` (Redis 7 marks it read-only + may-replicate), but it writes
/// the sketch's cached cardinality into the string value and Redis signals the key as
/// modified. In a pipeline `PFCOUNT h` + `GET h`, Redis answers the GET with the updated bytes;
/// the proxy must not answer it from the cache with the bytes from before the PFCOUNT.
#[test]
fn pfcount_then_get_in_one_pipeline_reads_the_updated_sketch() {
    let servers = redises(1);
    let r = &servers[0];
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["PFADD", "h", "a", "b", "c"]), b":1\r\n");
    let before = direct(r, &[b"GET", b"h"]);
    warm(&mut c, b"h", &before);
    let replies = c.exchange(enc_many(&[vec!["PFCOUNT", "h"], vec!["GET", "h"]]), 2);
    assert_eq!(replies[0], b":3\r\n");
    let after = direct(r, &[b"GET", b"h"]);
    assert_ne!(before, after, "PFCOUNT changed the sketch's bytes in Redis");
    assert_eq!(
        show(&replies[1]),
        show(&after),
        "GET after PFCOUNT in the same pipeline: Redis answers the updated sketch"
    );
}

/// A transaction whose writes carry a `hash=` routing hint: the proxy drops the command's own
/// keys when each is queued, but at EXEC it drops the transaction's *routing* keys (the hint),
/// so a value fetched into the cache between the queueing and EXEC survives the EXEC. With
/// one backend every hint routes to the same Redis: `EXEC` then `GET m` must read `new`.
#[test]
fn a_transaction_with_hash_hints_drops_the_keys_it_writes_at_exec() {
    let servers = redises(1);
    let proxy = cache_proxy(&servers, &["--hash-override", "yes"]);
    let mut c = raw(proxy.port);
    let mut other = raw(proxy.port);
    assert_eq!(c.call_str(&["SET", "m", "old"]), b"+OK\r\n");
    warm(&mut c, b"m", b"$3\r\nold\r\n");
    assert_eq!(c.call_str(&["MULTI"]), b"+OK\r\n");
    assert_eq!(
        c.call_str(&["SET", "m", "new", "hash=group"]),
        b"+QUEUED\r\n"
    );
    // Another client reads the (still old) key meanwhile: it is cached again.
    warm(&mut other, b"m", b"$3\r\nold\r\n");
    let replies = c.exchange(enc_many(&[vec!["EXEC"], vec!["GET", "m"]]), 2);
    assert_eq!(show(&replies[0]), show(b"*1\r\n+OK\r\n"));
    assert_eq!(
        show(&replies[1]),
        show(b"$3\r\nnew\r\n"),
        "GET right after the EXEC that wrote it"
    );
    assert_eq!(
        show(&other.call_str(&["GET", "m"])),
        show(b"$3\r\nnew\r\n"),
        "another client after the EXEC's reply was sent"
    );
}

/// README: "Values above `hotkey_cache_max_value` are never cached", so a value of exactly
/// that size is cacheable (the limit must count the value, not its RESP framing).
#[test]
fn a_value_of_exactly_hotkey_cache_max_value_bytes_is_cached() {
    let servers = redises(1);
    let proxy = cache_proxy(&servers, &["--hotkey-cache-max-value", "1kb"]);
    let mut c = raw(proxy.port);
    let v = "x".repeat(1024);
    assert_eq!(c.call_str(&["SET", "k", &v]), b"+OK\r\n");
    warm(&mut c, b"k", format!("$1024\r\n{v}\r\n").as_bytes());
    // One byte more: never cached, always right.
    let v = "y".repeat(1025);
    assert_eq!(c.call_str(&["SET", "k2", &v]), b"+OK\r\n");
    let want = format!("$1025\r\n{v}\r\n").into_bytes();
    let hits = cache_field(&mut c, "hits");
    for _ in 0..50 {
        assert_eq!(c.call_str(&["GET", "k2"]), want);
    }
    assert_eq!(cache_field(&mut c, "hits"), hits);
}

/// Writes whose key sits at an unusual position, or that create a key of another type over a
/// cached nil, each pipelined with a GET of the cached key: the GET must answer what Redis
/// answers afterwards. All run on one backend with no other writer, so the direct read after
/// the pipeline is what Redis answered to the GET.
#[test]
fn every_write_pipelined_with_a_get_of_its_cached_key_reads_redis_answer() {
    let servers = redises(1);
    let r = &servers[0];
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    assert!(text(&direct(
        r,
        &[
            b"FUNCTION",
            b"LOAD",
            b"#!lua name=rv\nredis.register_function('rvset', function(k, a) return redis.call('SET', k[1], a[1]) end)",
        ],
    ))
    .contains("rv"));
    // (setup run directly on the backend, the write through the proxy)
    type Case = (&'static [&'static str], &'static [&'static str]);
    let string_t: &[&str] = &["SET", "t", "old"];
    let cases: Vec<Case> = vec![
        (string_t, &["SET", "t", "new", "GET"]),
        (string_t, &["GETDEL", "t"]),
        (string_t, &["GETEX", "t", "PX", "1"]),
        (string_t, &["SETRANGE", "t", "0", "N"]),
        (string_t, &["APPEND", "t", "x"]),
        (string_t, &["MSET", "a", "1", "t", "new"]),
        (string_t, &["DEL", "a", "t"]),
        (string_t, &["UNLINK", "t"]),
        (string_t, &["PEXPIREAT", "t", "1"]),
        (string_t, &["EXPIRE", "t", "0"]),
        (string_t, &["MOVE", "t", "1"]),
        (string_t, &["RENAME", "t", "u"]),
        (string_t, &["SETBIT", "t", "0", "1"]),
        (string_t, &["BITFIELD", "t", "SET", "u8", "0", "65"]),
        (string_t, &["BITOP", "NOT", "t", "t"]),
        (string_t, &["COPY", "t", "t2"]),
        (string_t, &["LPUSH", "t", "x"]),
        (string_t, &["PFADD", "t", "x"]),
        (
            string_t,
            &["EVAL", "return redis.call('SET', KEYS[1], 'new')", "1", "t"],
        ),
        (string_t, &["FCALL", "rvset", "1", "t", "new"]),
        (&["SET", "s", "src"], &["COPY", "s", "t", "REPLACE"]),
        (&["SET", "s", "src"], &["RENAME", "s", "t"]),
        (&["SET", "s", "src"], &["RENAMENX", "s", "t"]),
        (&["SET", "s", "src"], &["BITOP", "OR", "t", "s"]),
        (&["SET", "s", "src"], &["MSETNX", "x", "1", "t", "new"]),
        (&["RPUSH", "l", "3", "1", "2"], &["SORT", "l", "STORE", "t"]),
        (
            &["RPUSH", "l", "3", "1", "2"],
            &["SORT", "l", "BY", "nosort", "LIMIT", "0", "2", "STORE", "t"],
        ),
        (&["RPUSH", "l", "x"], &["LMOVE", "l", "t", "LEFT", "RIGHT"]),
        (&["RPUSH", "l", "x"], &["RPOPLPUSH", "l", "t"]),
        (&["SADD", "st", "m"], &["SMOVE", "st", "t", "m"]),
        (&["SADD", "st", "m"], &["SUNIONSTORE", "t", "st"]),
        (&["ZADD", "z", "1", "m"], &["ZUNIONSTORE", "t", "1", "z"]),
        (
            &["ZADD", "z", "1", "m"],
            &["ZRANGESTORE", "t", "z", "0", "-1"],
        ),
        (
            &["GEOADD", "g", "13.36", "38.11", "p"],
            &["GEORADIUS", "g", "13", "38", "500", "km", "STORE", "t"],
        ),
        (
            &["GEOADD", "g", "13.36", "38.11", "p"],
            &[
                "GEOSEARCHSTORE",
                "t",
                "g",
                "FROMLONLAT",
                "13",
                "38",
                "BYRADIUS",
                "500",
                "km",
                "ASC",
            ],
        ),
        (&["PFADD", "p1", "a"], &["PFMERGE", "t", "p1"]),
        (&["SET", "s", "src"], &["XADD", "t", "*", "f", "v"]),
        (&["SET", "s", "src"], &["HSET", "t", "f", "v"]),
        (&["SET", "s", "src"], &["SET", "t", "new", "NX"]),
        (&["SET", "s", "src"], &["LMPOP", "2", "nolist", "t", "LEFT"]),
    ];
    let mut wrong = Vec::new();
    for (i, (setup, write)) in cases.iter().enumerate() {
        assert_eq!(direct(r, &[b"FLUSHALL"]), b"+OK\r\n");
        assert_eq!(direct(r, &[b"SELECT", b"1"]), b"+OK\r\n");
        let mut d = raw(r.port);
        assert_eq!(d.call_str(&["SELECT", "1"]), b"+OK\r\n");
        assert_eq!(d.call_str(&["FLUSHDB"]), b"+OK\r\n");
        drop(d);
        let setup: Vec<&[u8]> = setup.iter().map(|a| a.as_bytes()).collect();
        assert!(!common::is_error(&direct(r, &setup)), "setup of case {i}");
        let before = direct(r, &[b"GET", b"t"]);
        warm(&mut c, b"t", &before);
        let replies = c.exchange(enc_many(&[s(write), s(&["GET", "t"])]), 2);
        let after = direct(r, &[b"GET", b"t"]);
        if replies[1] != after {
            wrong.push(format!(
                "{write:?} ({}) then GET t: proxy {} but Redis {}",
                show(&replies[0]),
                show(&replies[1]),
                show(&after)
            ));
        }
    }
    assert!(wrong.is_empty(), "stale GETs:\n{}", wrong.join("\n"));
}

/// CLIENT REPLY SKIP / OFF: a GET answered from the cache is silenced like any reply, and the
/// replies that are sent stay in request order.
#[test]
fn client_reply_skip_and_off_silence_cached_gets_too() {
    let servers = redises(1);
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["SET", "k", "v"]), b"+OK\r\n");
    warm(&mut c, b"k", b"$1\r\nv\r\n");
    c.send(&enc_many(&[
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["GET", "k"],
        vec!["ECHO", "one"],
        vec!["CLIENT", "REPLY", "OFF"],
        vec!["GET", "k"],
        vec!["GET", "k"],
        vec!["CLIENT", "REPLY", "ON"],
        vec!["GET", "k"],
    ]));
    assert_eq!(show(&c.reply()), show(b"$3\r\none\r\n"));
    assert_eq!(show(&c.reply()), show(b"+OK\r\n"));
    assert_eq!(show(&c.reply()), show(b"$1\r\nv\r\n"));
    c.assert_quiet(ms(200), "nothing more");
}

/// Empty values, binary keys and RESP3 clients: the cache answers what Redis answers, in each
/// client's protocol, and a pipeline mixing writes and reads of the hot key in odd chunks
/// reads every write.
#[test]
fn empty_values_binary_keys_and_odd_pipeline_chunks() {
    let servers = redises(2);
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    let key: &[u8] = b"bin\x00\r\n\xff key";
    assert_eq!(c.call(&[b"SET", key, b""]), b"+OK\r\n");
    warm(&mut c, key, b"$0\r\n\r\n");
    let mut c3 = raw(proxy.port);
    let _ = c3.call_str(&["HELLO", "3"]);
    assert_eq!(show(&c3.call(&[b"GET", key])), show(b"$0\r\n\r\n"));
    assert_eq!(c.call(&[b"DEL", key]), b":1\r\n");
    warm(&mut c, key, b"$-1\r\n");
    assert_eq!(show(&c3.call(&[b"GET", key])), show(b"_\r\n"));
    // SET/GET pairs sent in chunks that split commands at every few bytes.
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
    for i in 0..60 {
        cmds.push(vec![
            b"SET".to_vec(),
            key.to_vec(),
            format!("v{i}").into_bytes(),
        ]);
        cmds.push(vec![b"GET".to_vec(), key.to_vec()]);
        cmds.push(vec![b"GET".to_vec(), key.to_vec()]);
    }
    let bytes = enc_many(&cmds);
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for (n, chunk) in bytes.chunks(7).enumerate() {
            w.write_all(chunk).unwrap();
            if n % 5 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    for i in 0..60 {
        assert_eq!(c.reply(), b"+OK\r\n");
        let v = format!("v{i}");
        let want = format!("${}\r\n{v}\r\n", v.len()).into_bytes();
        assert_eq!(show(&c.reply()), show(&want), "first GET after write {i}");
        assert_eq!(show(&c.reply()), show(&want), "second GET after write {i}");
    }
    writer.join().unwrap();
}

/// A backend killed and restarted (empty) on the same port: the tracking connection is lost
/// with it, so the cached value goes and reads see the restarted server's state.
#[test]
fn a_restarted_backend_is_not_served_from_the_old_cache() {
    let mut servers = redises(1);
    let port = servers[0].port;
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["SET", "k", "before"]), b"+OK\r\n");
    warm(&mut c, b"k", b"$6\r\nbefore\r\n");
    servers[0].kill();
    servers[0] = Redis::start_on(port, &[]);
    poll_until(
        "the restarted backend's (empty) state",
        QUICK,
        ms(20),
        || match c.try_call(&[b"GET", b"k"]) {
            Ok(r) if r == b"$-1\r\n" => Ok(()),
            Ok(r) => Err(show(&r)),
            Err(e) => {
                c = raw(proxy.port);
                Err(e)
            }
        },
    );
    assert_eq!(c.call_str(&["SET", "k", "after"]), b"+OK\r\n");
    warm(&mut c, b"k", b"$5\r\nafter\r\n");
    assert_eq!(direct(&servers[0], &[b"SET", b"k", b"direct"]), b"+OK\r\n");
    poll_until("a direct write after the restart", QUICK, ms(10), || {
        let r = c.call_str(&["GET", "k"]);
        if r == b"$6\r\ndirect\r\n" {
            Ok(())
        } else {
            Err(show(&r))
        }
    });
}

/// SWAPDB through the proxy drops everything; SWAPDB by a direct client of the backend changes
/// what every key of the pool's database holds, so reads must see it once Redis reports it
/// (README: the cache drops a key "as soon as anyone changes it"). Redis 7.0 sends no
/// invalidation for SWAPDB: the direct half fails (the old database's value is served until
/// the entry's 30 s age limit); the README now says so, hence ignored.
#[test]
#[ignore = "Redis 7.0 sends no tracking invalidation on SWAPDB; documented: stale up to 30 s"]
fn swapdb_through_the_proxy_and_directly_is_seen() {
    let servers = redises(1);
    let r = &servers[0];
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["SET", "k", "zero"]), b"+OK\r\n");
    let mut d = raw(r.port);
    assert_eq!(d.call_str(&["SELECT", "1"]), b"+OK\r\n");
    assert_eq!(d.call_str(&["SET", "k", "one"]), b"+OK\r\n");
    warm(&mut c, b"k", b"$4\r\nzero\r\n");
    // Through the proxy: the very next read.
    let swap = c.call_str(&["SWAPDB", "0", "1"]);
    if swap == b"+OK\r\n" {
        assert_eq!(show(&c.call_str(&["GET", "k"])), show(b"$3\r\none\r\n"));
        warm(&mut c, b"k", b"$3\r\none\r\n");
    } else {
        // Refused by the proxy: swap directly to the same state.
        assert_eq!(d.call_str(&["SWAPDB", "0", "1"]), b"+OK\r\n");
        poll_until("the swap seen", QUICK, ms(10), || {
            let got = c.call_str(&["GET", "k"]);
            if got == b"$3\r\none\r\n" {
                Ok(())
            } else {
                Err(show(&got))
            }
        });
        warm(&mut c, b"k", b"$3\r\none\r\n");
    }
    // Directly: Redis must report it (or the proxy must not serve the old database's value).
    assert_eq!(d.call_str(&["SWAPDB", "0", "1"]), b"+OK\r\n");
    poll_until("a direct SWAPDB seen", QUICK, ms(10), || {
        let got = c.call_str(&["GET", "k"]);
        if got == b"$4\r\nzero\r\n" {
            Ok(())
        } else {
            Err(show(&got))
        }
    });
}

/// Reloads turning the cache off and on while clients write and read back their own keys in
/// pipelines: every read returns the reader's last write, and the proxy stays up.
#[test]
fn reloads_mid_traffic_keep_read_your_writes() {
    let r = Redis::start();
    let port = common::free_port();
    let conf = |cache: &str| {
        format!(
            "pool p\n  listen 127.0.0.1:{port}\n  hotkeys_sample 1\n  hotkeys_window 1000\n  hotkey_cache {cache}\n  hotkey_cache_threshold 1\n  server 127.0.0.1:{}:1 b0\n",
            r.port
        )
    };
    let path = common::tmp_dir("review-hot-reload").join("proxy.conf");
    std::fs::write(&path, conf("1mb")).unwrap();
    let _proxy = Proxy::spawn(port, &["-c".into(), path.to_string_lossy().into_owned()]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = raw(port);
                let key = format!("rw{w}");
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let v = format!("{w}-{i}");
                    let mut cmds = vec![vec!["SET".to_string(), key.clone(), v.clone()]];
                    for _ in 0..5 {
                        cmds.push(vec!["GET".to_string(), key.clone()]);
                    }
                    let replies = c.exchange(enc_many(&cmds), cmds.len());
                    assert_eq!(replies[0], b"+OK\r\n");
                    let want = format!("${}\r\n{v}\r\n", v.len()).into_bytes();
                    for got in &replies[1..] {
                        assert_eq!(show(got), show(&want), "worker {w} write {i}");
                    }
                }
                i
            })
        })
        .collect();
    let mut admin = raw(port);
    for n in 0..20 {
        let size = if n % 2 == 0 { "0" } else { "1mb" };
        std::fs::write(&path, conf(size)).unwrap();
        let reply = admin.call_str(&["PROXY", "RELOAD"]);
        assert!(!common::is_error(&reply), "{}", show(&reply));
        std::thread::sleep(ms(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        assert!(w.join().expect("worker") > 0);
    }
    assert_eq!(admin.call_str(&["PING"]), b"+PONG\r\n");
}

/// SWAPDB through the proxy: the very next read of a cached key sees the other database.
#[test]
fn swapdb_through_the_proxy_is_seen_by_the_next_read() {
    let servers = redises(1);
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    let mut d = raw(servers[0].port);
    assert_eq!(d.call_str(&["SELECT", "1"]), b"+OK\r\n");
    assert_eq!(d.call_str(&["SET", "k", "one"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["SET", "k", "zero"]), b"+OK\r\n");
    warm(&mut c, b"k", b"$4\r\nzero\r\n");
    let replies = c.exchange(enc_many(&[vec!["SWAPDB", "0", "1"], vec!["GET", "k"]]), 2);
    assert_eq!(show(&replies[0]), show(b"+OK\r\n"));
    assert_eq!(show(&replies[1]), show(b"$3\r\none\r\n"));
}

/// `cmdstat_get` calls of a backend (its own INFO commandstats).
fn backend_gets(r: &Redis) -> u64 {
    let info = text(&direct(r, &[b"INFO", b"commandstats"]));
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A hot key whose value is above `hotkey_cache_max_value` is never cached, so it must cost
/// the backend no more than without the cache: one GET per client GET. Each miss of a hot key
/// starts a fetch (GET + PTTL on the tracking connection) whose value is then thrown away,
/// so every client GET of a large hot value is read from the backend twice.
#[test]
fn a_hot_value_above_the_limit_is_not_fetched_again_on_every_read() {
    let servers = redises(1);
    let r = &servers[0];
    let proxy = cache_proxy(&servers, &["--hotkey-cache-max-value", "1kb"]);
    let mut c = raw(proxy.port);
    let big = "z".repeat(100_000);
    assert_eq!(c.call_str(&["SET", "big", &big]), b"+OK\r\n");
    let want = format!("${}\r\n{big}\r\n", big.len()).into_bytes();
    let before = backend_gets(r);
    let n = 200;
    for _ in 0..n {
        assert_eq!(c.call_str(&["GET", "big"]), want);
    }
    let gets = backend_gets(r) - before;
    assert!(
        gets <= n + n / 10,
        "{n} GETs of a value too large to cache cost the backend {gets} GETs"
    );
    // Once it shrinks (through the proxy, or directly), it is cached again.
    assert_eq!(c.call_str(&["SET", "big", "small"]), b"+OK\r\n");
    warm(&mut c, b"big", b"$5\r\nsmall\r\n");
    assert_eq!(c.call_str(&["SET", "big", &big]), b"+OK\r\n");
    for _ in 0..20 {
        assert_eq!(c.call_str(&["GET", "big"]), want);
    }
    assert_eq!(direct(r, &[b"SET", b"big", b"tiny"]), b"+OK\r\n");
    warm(&mut c, b"big", b"$4\r\ntiny\r\n");
}

/// Two pools of one proxy over the same backend, the cache on in one: a write through the
/// other pool is a write through this proxy process, so once its reply is in, a read through
/// the cached pool must see it (README: "every client of the proxy sees a write once its reply
/// was sent").
#[test]
fn a_write_through_another_pool_of_the_proxy_is_read_back() {
    let r = Redis::start();
    let (pa, pb) = (common::free_port(), common::free_port());
    let text_conf = format!(
        "pool a\n  listen 127.0.0.1:{pa}\n  hotkeys_sample 1\n  hotkeys_window 1000\n  hotkey_cache 1mb\n  hotkey_cache_threshold 1\n  server 127.0.0.1:{}:1 b0\n\npool b\n  listen 127.0.0.1:{pb}\n  server 127.0.0.1:{}:1 b0\n",
        r.port, r.port
    );
    let path = common::tmp_dir("review-hot-pools").join("proxy.conf");
    std::fs::write(&path, text_conf).unwrap();
    let _proxy = Proxy::spawn(pa, &["-c".into(), path.to_string_lossy().into_owned()]);
    common::wait_listening(pb, "pool b");
    let mut a = raw(pa);
    let mut b = raw(pb);
    assert_eq!(b.call_str(&["SET", "x", "0"]), b"+OK\r\n");
    warm(&mut a, b"x", b"$1\r\n0\r\n");
    // Other readers of pool a keep the key hot and re-fetched all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut r = raw(pa);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    r.call_str(&["GET", "x"]);
                }
            })
        })
        .collect();
    let mut stale = Vec::new();
    for i in 1..=2000 {
        let v = i.to_string();
        assert_eq!(b.call_str(&["SET", "x", &v]), b"+OK\r\n");
        let got = a.call_str(&["GET", "x"]);
        let want = format!("${}\r\n{v}\r\n", v.len()).into_bytes();
        if got != want {
            stale.push(format!("write {i}: read {}", show(&got)));
        }
        // Keep it cached: a few more reads.
        for _ in 0..2 {
            a.call_str(&["GET", "x"]);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in readers {
        t.join().unwrap();
    }
    assert!(
        cache_field(&mut a, "hits") > 1000,
        "the key was served from the cache"
    );
    assert!(
        stale.is_empty(),
        "{} stale reads: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}

/// A hot key that is not a string (GET answers WRONGTYPE) is never cached: it must cost the
/// backend no more than without the cache (one GET per client GET), not a fetch per miss too.
#[test]
fn a_hot_key_of_another_type_is_not_fetched_on_every_read() {
    let servers = redises(1);
    let r = &servers[0];
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["HSET", "h", "f", "v"]), b":1\r\n");
    let before = backend_gets(r);
    let n = 200;
    for _ in 0..n {
        assert!(common::is_error(&c.call_str(&["GET", "h"])));
    }
    let gets = backend_gets(r) - before;
    assert!(
        gets <= n + n / 10,
        "{n} GETs of a hash cost the backend {gets} GETs"
    );
    // Replaced by a string (directly, or through the proxy): cached again.
    assert_eq!(direct(r, &[b"DEL", b"h"]), b":1\r\n");
    assert_eq!(direct(r, &[b"SET", b"h", b"now"]), b"+OK\r\n");
    warm(&mut c, b"h", b"$3\r\nnow\r\n");
    assert_eq!(c.call_str(&["DEL", "h"]), b":1\r\n");
    assert_eq!(c.call_str(&["LPUSH", "h", "x"]), b":1\r\n");
    assert!(common::is_error(&c.call_str(&["GET", "h"])));
    assert_eq!(c.call_str(&["DEL", "h"]), b":1\r\n");
    assert_eq!(c.call_str(&["SET", "h", "again"]), b"+OK\r\n");
    warm(&mut c, b"h", b"$5\r\nagain\r\n");
}

/// Clients of another database write into the pool's database with `COPY ... DB n` and
/// `MOVE key n`: a client of the default database reads the result right after their replies.
#[test]
fn writes_from_another_database_into_the_cached_one_are_read_back() {
    let servers = redises(2);
    let proxy = cache_proxy(&servers, &[]);
    let mut c = raw(proxy.port);
    let mut d1 = raw(proxy.port);
    assert_eq!(d1.call_str(&["SELECT", "1"]), b"+OK\r\n");
    // COPY in database 1 into database 0 (same key: one backend).
    assert_eq!(d1.call_str(&["SET", "{t}s", "copied"]), b"+OK\r\n");
    warm(&mut c, b"{t}d", b"$-1\r\n");
    assert_eq!(d1.call_str(&["COPY", "{t}s", "{t}d", "DB", "0"]), b":1\r\n");
    assert_eq!(
        show(&c.call_str(&["GET", "{t}d"])),
        show(b"$6\r\ncopied\r\n")
    );
    // MOVE from database 1 into database 0.
    assert_eq!(d1.call_str(&["SET", "mv", "moved"]), b"+OK\r\n");
    warm(&mut c, b"mv", b"$-1\r\n");
    assert_eq!(d1.call_str(&["MOVE", "mv", "0"]), b":1\r\n");
    assert_eq!(show(&c.call_str(&["GET", "mv"])), show(b"$5\r\nmoved\r\n"));
}
