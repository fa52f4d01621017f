//! What Redis's own test suite found (issue #23, "Also found by Redis's own suite"): behaviour
//! of a real Redis 7.0 that the proxy must match. Real redis-server processes; every wait is
//! bounded; no duration is asserted.
//!
//! 1. RANDOMKEY can return every key (a backend picked at random, weighted by its key count).
//! 2. FUNCTION LIST / FUNCTION DUMP agree whatever order each backend lists its libraries in.
//! 3. Error texts: no-multi commands inside MULTI, FCALL's bad numkeys.
//! 4. CLIENT LIST / CLIENT INFO carry Redis 7.0's fields with the proxy's values.
//! 5. CLIENT REPLY ON|OFF|SKIP, suppressed by the proxy, in order.
//! 6. INFO fields tools read: used_memory, mem_allocator, errorstats.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

fn call(r: &mut Raw, args: &[&str]) -> Vec<u8> {
    let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
    r.call(&a)
}

fn send(r: &mut Raw, args: &[&str]) {
    let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
    r.cmd(&a);
}

fn assert_call(r: &mut Raw, args: &[&str], want: &str) {
    let got = call(r, args);
    assert_eq!(show(&got), show(want.as_bytes()), "{args:?}");
}

/// The text of a bulk or verbatim reply (verbatim: without its `txt:` prefix).
fn text(reply: &[u8]) -> String {
    let s = String::from_utf8_lossy(reply).into_owned();
    let body = s.split_once("\r\n").map_or("", |(_, b)| b);
    let body = body.strip_suffix("\r\n").unwrap_or(body);
    body.strip_prefix("txt:").unwrap_or(body).to_string()
}

/// `k=v k=v ...` as ordered pairs.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(line: &'a [(String, String)], name: &str) -> &'a str {
    line.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// The CLIENT LIST line (as fields) of the connection whose local port is `port`.
fn client_of(r: &mut Raw, port: u16) -> Vec<(String, String)> {
    let list = text(&call(r, &["CLIENT", "LIST"]));
    let needle = format!("addr=127.0.0.1:{port} ");
    let line = list
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no client from port {port} in {list}"));
    fields(line)
}

fn local_port(r: &Raw) -> u16 {
    r.stream.local_addr().expect("local addr").port()
}

/// A proxy hashing with md5 (spreads short keys over every backend).
fn spread_proxy(servers: &[Redis]) -> Proxy {
    Proxy::start(&refs(servers), &["--hash", "md5"])
}

/// `n` keys with `prefix` on each backend, by BACKENDNUM through the proxy.
fn keys_per_backend(r: &mut Raw, nbackends: usize, prefix: &str, n: usize) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); nbackends];
    for i in 0..100_000 {
        if out.iter().all(|v| v.len() >= n) {
            return out;
        }
        let k = format!("{prefix}{i}");
        let b: usize = text_int(&call(r, &["BACKENDNUM", &k])) as usize;
        if out[b].len() < n {
            out[b].push(k);
        }
    }
    panic!("could not find {n} keys per backend");
}

fn text_int(reply: &[u8]) -> i64 {
    let s = String::from_utf8_lossy(reply);
    s.trim()
        .strip_prefix(':')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {s:?}"))
}

/// The key of a RANDOMKEY reply (None for nil).
fn random_key(r: &mut Raw) -> Option<String> {
    let got = call(r, &["RANDOMKEY"]);
    if got == b"$-1\r\n" || got == b"_\r\n" {
        return None;
    }
    assert!(got.starts_with(b"$"), "RANDOMKEY: {}", show(&got));
    Some(text(&got))
}

// ------------------------------------------------------------------------------ 1. RANDOMKEY

#[test]
fn randomkey_returns_keys_of_every_backend() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers);
    let mut r = proxy.raw();
    assert_call(&mut r, &["RANDOMKEY"], "$-1\r\n");

    // Every backend holds keys: every backend's keys come back (bounded number of tries).
    let per = keys_per_backend(&mut r, 4, "rk:", 5);
    let mut home = HashMap::new();
    for (b, keys) in per.iter().enumerate() {
        for k in keys {
            assert_call(&mut r, &["SET", k, "1"], "+OK\r\n");
            home.insert(k.clone(), b);
        }
    }
    let mut seen = BTreeSet::new();
    let mut tries = 0;
    while seen.len() < 4 && tries < 2000 {
        let k = random_key(&mut r).expect("a key");
        seen.insert(*home.get(&k).unwrap_or_else(|| panic!("unknown key {k}")));
        tries += 1;
    }
    assert_eq!(
        seen.len(),
        4,
        "backends seen after {tries} RANDOMKEYs: {seen:?}"
    );

    // Weighted by key count: 200 keys on backend 0, 2 on backend 1. Uniform over backends
    // would give backend 1 about half the answers; by key count about 1%. Both still come back.
    assert_call(&mut r, &["FLUSHALL"], "+OK\r\n");
    let per = keys_per_backend(&mut r, 4, "wk:", 200);
    let mut home = HashMap::new();
    for k in &per[0] {
        home.insert(k.clone(), 0);
    }
    for k in &per[1][..2] {
        home.insert(k.clone(), 1);
    }
    for k in home.keys() {
        assert_call(&mut r, &["SET", k, "1"], "+OK\r\n");
    }
    let mut counts = [0usize; 2];
    let mut tries = 0;
    while tries < 400 || (counts[1] == 0 && tries < 20_000) {
        let k = random_key(&mut r).expect("a key");
        counts[*home.get(&k).unwrap_or_else(|| panic!("unknown key {k}"))] += 1;
        tries += 1;
        if tries == 400 {
            // Expected about 396 of 400 from backend 0; uniform over backends: about 200.
            assert!(
                counts[0] > 320,
                "RANDOMKEY not weighted by key count: {counts:?} of 400"
            );
        }
    }
    assert!(
        counts[1] > 0,
        "backend 1's keys never came back in {tries} tries"
    );

    // Nil when no backend has keys, in RESP3 too.
    assert_call(&mut r, &["FLUSHALL"], "+OK\r\n");
    assert_call(&mut r, &["RANDOMKEY"], "$-1\r\n");
    let _ = call(&mut r, &["HELLO", "3"]);
    assert_call(&mut r, &["RANDOMKEY"], "_\r\n");
}

// --------------------------------------------------------------- 2. FUNCTION LIST / DUMP

fn library(name: &str, functions: &[&str]) -> String {
    let mut code = format!("#!lua name={name}\n");
    for f in functions {
        code.push_str(&format!(
            "redis.register_function('{f}', function(keys, args) return '{f}' end)\n"
        ));
    }
    code
}

#[test]
fn function_list_and_dump_agree_whatever_the_order() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let libs = [
        library("liba", &["a1", "a2", "a3", "a4"]),
        library("libb", &["b1", "b2", "b3", "b4"]),
    ];
    // Loaded on every backend, in different orders (and each server lists its libraries and
    // functions in its own hash-table order anyway).
    let mut direct: Vec<Raw> = servers.iter().map(|s| Raw::connect(s.port)).collect();
    for lib in &libs {
        assert!(call(&mut direct[0], &["FUNCTION", "LOAD", lib]).starts_with(b"$"));
    }
    for lib in libs.iter().rev() {
        assert!(call(&mut direct[1], &["FUNCTION", "LOAD", lib]).starts_with(b"$"));
    }
    let mut r = proxy.raw();
    for args in [
        &["FUNCTION", "LIST"][..],
        &["FUNCTION", "LIST", "WITHCODE"],
        &["FUNCTION", "LIST", "LIBRARYNAME", "lib*"],
        &["FUNCTION", "DUMP"],
    ] {
        let own: Vec<Vec<u8>> = direct.iter_mut().map(|d| call(d, args)).collect();
        eprintln!(
            "{args:?}: the backends' own replies {}",
            if own[0] == own[1] {
                "are identical"
            } else {
                "differ"
            }
        );
        let got = call(&mut r, args);
        // The first backend's reply, whatever order the second one lists things in.
        assert_eq!(show(&got), show(&own[0]), "{args:?}");
    }
    // RESP3: maps instead of arrays, same rule.
    let mut r3 = proxy.raw();
    assert!(call(&mut r3, &["HELLO", "3"]).starts_with(b"%"));
    let got = call(&mut r3, &["FUNCTION", "LIST"]);
    assert!(got.starts_with(b"*2\r\n%"), "{}", show(&got));
    // FCALL works on either backend.
    assert_call(&mut r, &["FCALL", "b3", "0"], "$2\r\nb3\r\n");

    // The dump restores on a fresh server and lists the same libraries.
    let dump = call(&mut r, &["FUNCTION", "DUMP"]);
    let fresh = Redis::start();
    let mut f = Raw::connect(fresh.port);
    let mut req = Vec::new();
    let blob = &dump[dump.iter().position(|&b| b == b'\n').unwrap() + 1..dump.len() - 2];
    rustproxy::resp::write_command(&mut req, [&b"FUNCTION"[..], b"RESTORE", blob]);
    f.send(&req);
    assert_eq!(show(&f.reply()), "+OK\\r\\n");
    let names = call(&mut f, &["FUNCTION", "LIST"]);
    for lib in ["liba", "libb"] {
        assert!(show(&names).contains(lib), "{}", show(&names));
    }

    // Backends that really differ: an error, for LIST and DUMP alike.
    assert!(call(
        &mut direct[1],
        &["FUNCTION", "LOAD", &library("libc", &["c1"])]
    )
    .starts_with(b"$"));
    for args in [&["FUNCTION", "LIST"][..], &["FUNCTION", "DUMP"]] {
        assert_call(&mut r, args, "-ERR backends returned different replies\r\n");
    }
    // Same library names, different code: still a difference.
    assert_call(&mut direct[1], &["FUNCTION", "DELETE", "libc"], "+OK\r\n");
    let other = library("libb", &["b1", "b2", "b3", "b5"]);
    assert!(call(&mut direct[1], &["FUNCTION", "LOAD", "REPLACE", &other]).starts_with(b"$"));
    for args in [&["FUNCTION", "LIST"][..], &["FUNCTION", "DUMP"]] {
        assert_call(&mut r, args, "-ERR backends returned different replies\r\n");
    }
}

// ------------------------------------------------------------------------- 3. error texts

#[test]
fn no_multi_commands_and_fcall_numkeys_use_redis_texts() {
    let servers = redises(2);
    let proxy = spread_proxy(&servers);
    let mut r = proxy.raw();
    let mut direct = Raw::connect(servers[0].port);
    const REFUSED: &str = "-ERR Command not allowed inside a transaction\r\n";
    const ABORT: &str = "-EXECABORT Transaction discarded because of previous errors.\r\n";

    // Redis 7.0's no-multi commands: Redis's text, then EXECABORT, and the client is out of
    // MULTI (its queued SET never ran).
    for cmd in [
        &["SAVE"][..],
        &["SHUTDOWN"],
        &["SHUTDOWN", "NOSAVE"],
        &["SYNC"],
        &["PSYNC", "?", "-1"],
    ] {
        assert_call(&mut direct, &["MULTI"], "+OK\r\n");
        let want = call(&mut direct, cmd);
        assert_call(&mut direct, &["DISCARD"], "+OK\r\n");
        assert_eq!(show(&want), show(REFUSED.as_bytes()), "redis: {cmd:?}");

        assert_call(&mut r, &["MULTI"], "+OK\r\n");
        assert_call(&mut r, &["SET", "nm", "1"], "+QUEUED\r\n");
        assert_call(&mut r, cmd, REFUSED);
        // Still in MULTI until EXEC: more commands queue.
        assert_call(&mut r, &["INCR", "nm"], "+QUEUED\r\n");
        assert_call(&mut r, &["EXEC"], ABORT);
        assert_call(&mut r, &["EXEC"], "-ERR EXEC without MULTI\r\n");
        assert_call(&mut r, &["GET", "nm"], "$-1\r\n");
    }
    // A consistent MULTI state afterwards: a transaction runs.
    assert_call(&mut r, &["MULTI"], "+OK\r\n");
    assert_call(&mut r, &["SET", "nm", "1"], "+QUEUED\r\n");
    assert_call(&mut r, &["INCR", "nm"], "+QUEUED\r\n");
    assert_call(&mut r, &["EXEC"], "*2\r\n+OK\r\n:2\r\n");

    // Commands Redis queues but the proxy cannot (they run on every backend): the same text
    // with the proxy's reason, and the same EXECABORT.
    for cmd in [
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"][..],
        &["BGSAVE"],
        &["FLUSHALL"],
    ] {
        assert_call(&mut r, &["MULTI"], "+OK\r\n");
        let got = call(&mut r, cmd);
        assert!(
            got.starts_with(b"-ERR Command not allowed inside a transaction: "),
            "{cmd:?}: {}",
            show(&got)
        );
        assert_call(&mut r, &["EXEC"], ABORT);
    }
    // Outside MULTI they run.
    assert_call(&mut r, &["SAVE"], "+OK\r\n");

    // FCALL with a numkeys that is not a number: the function exists on every backend.
    let lib = library("nk", &["f"]);
    assert_call(&mut r, &["FUNCTION", "LOAD", &lib], "$2\r\nnk\r\n");
    for (args, want) in [
        (
            &["FCALL", "f", "notanumber"][..],
            "-ERR Bad number of keys provided\r\n",
        ),
        (
            &["FCALL_RO", "f", "notanumber"],
            "-ERR Bad number of keys provided\r\n",
        ),
        (
            &["FCALL", "f", "-1"],
            "-ERR Number of keys can't be negative\r\n",
        ),
        (
            &["FCALL", "f", "3", "a"],
            "-ERR Number of keys can't be greater than number of args\r\n",
        ),
    ] {
        if args[0] == "FCALL" {
            assert_eq!(
                show(&call(&mut direct, args)),
                show(want.as_bytes()),
                "redis"
            );
        }
        assert_call(&mut r, args, want);
    }
    assert_call(&mut r, &["FCALL", "f", "0"], "$1\r\nf\r\n");
}

// ------------------------------------------------------------------- 4. CLIENT LIST fields

#[test]
fn client_list_has_redis_fields_with_proxy_values() {
    let server = Redis::start();
    let proxy = Proxy::start_conf(
        "conf",
        {
            let addr = server.addr();
            move |port| {
                format!(
                    "pool p\nlisten 127.0.0.1:{port}\nserver {addr}\nrequirepass pw0\n\
                     user alice secret readwrite\n"
                )
            }
        },
        &[],
    );

    // The field names, in Redis 7.0's order, then lib-name and lib-ver (where 7.2 puts them).
    let mut direct = Raw::connect(server.port);
    let theirs: Vec<String> = fields(text(&call(&mut direct, &["CLIENT", "INFO"])).trim())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // Clients authenticated as the default user, unless said otherwise.
    let login = || {
        let mut c = proxy.raw();
        assert_call(&mut c, &["AUTH", "pw0"], "+OK\r\n");
        c
    };
    let mut r = login();
    let raw_info = call(&mut r, &["CLIENT", "INFO"]);
    let info = text(&raw_info);
    assert!(raw_info.starts_with(b"$"), "{}", show(&raw_info));
    let ours = fields(info.trim());
    let mut want = theirs.clone();
    want.retain(|k| k != "lib-name" && k != "lib-ver");
    want.extend(["lib-name".to_string(), "lib-ver".to_string()]);
    assert_eq!(
        ours.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        want,
        "proxy: {info}"
    );
    // The proxy's own values for this client.
    assert_eq!(get(&ours, "laddr"), format!("127.0.0.1:{}", proxy.port));
    assert_eq!(get(&ours, "addr"), format!("127.0.0.1:{}", local_port(&r)));
    assert!(get(&ours, "fd").parse::<i32>().unwrap() > 2);
    assert_eq!(get(&ours, "flags"), "N");
    assert_eq!(get(&ours, "user"), "default");
    assert_eq!(get(&ours, "multi"), "-1");
    assert_eq!(get(&ours, "cmd"), "client|info");
    assert_eq!(get(&ours, "events"), "r");
    assert_eq!(get(&ours, "redir"), "-1");
    assert_eq!(get(&ours, "resp"), "2");
    assert!(get(&ours, "tot-mem").parse::<u64>().unwrap() > 0);
    // The caller's qbuf holds the command being run, as in Redis (CLIENT LIST: 26 bytes).
    assert_eq!(get(&ours, "qbuf"), "26");
    for n in ["sub", "psub", "ssub", "argv-mem", "multi-mem", "obl", "oll"] {
        assert_eq!(get(&ours, n), "0", "{n}");
    }

    // A subscriber: its counts and P.
    let mut sub = login();
    sub.send(&enc(&[b"SUBSCRIBE", b"c1", b"c2"]));
    sub.send(&enc(&[b"PSUBSCRIBE", b"p*"]));
    sub.send(&enc(&[b"SSUBSCRIBE", b"s1"]));
    for _ in 0..4 {
        assert!(sub.reply().starts_with(b"*3\r\n"));
    }
    let line = client_of(&mut r, local_port(&sub));
    assert_eq!(
        (get(&line, "sub"), get(&line, "psub"), get(&line, "ssub")),
        ("2", "1", "1")
    );
    assert_eq!(get(&line, "flags"), "P");
    assert_eq!(get(&line, "cmd"), "ssubscribe");

    // MULTI with queued commands: x, the count, its memory.
    let mut m = login();
    assert_call(&mut m, &["MULTI"], "+OK\r\n");
    assert_call(&mut m, &["SET", "a", "1"], "+QUEUED\r\n");
    assert_call(&mut m, &["INCR", "a"], "+QUEUED\r\n");
    let line = client_of(&mut r, local_port(&m));
    assert_eq!(get(&line, "flags"), "x");
    assert_eq!(get(&line, "multi"), "2");
    assert!(get(&line, "multi-mem").parse::<u64>().unwrap() > 0);
    assert_call(&mut m, &["DISCARD"], "+OK\r\n");

    // Blocked: b.
    let mut b = login();
    send(&mut b, &["BLPOP", "q", "0"]);
    let port = local_port(&b);
    let mut blocked = false;
    for _ in 0..500 {
        if get(&client_of(&mut r, port), "flags") == "b" {
            blocked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(blocked, "BLPOP client never shown blocked");
    assert_call(&mut r, &["RPUSH", "q", "x"], ":1\r\n");
    assert_eq!(show(&b.reply()), "*2\\r\\n$1\\r\\nq\\r\\n$1\\r\\nx\\r\\n");

    // The authenticated user, name, library, protocol.
    let mut u = proxy.raw();
    assert_call(&mut u, &["AUTH", "alice", "secret"], "+OK\r\n");
    assert_call(&mut u, &["CLIENT", "SETNAME", "worker"], "+OK\r\n");
    assert_call(
        &mut u,
        &["CLIENT", "SETINFO", "lib-name", "redis-py"],
        "+OK\r\n",
    );
    assert_call(&mut u, &["CLIENT", "SETINFO", "lib-ver", "5.0"], "+OK\r\n");
    assert!(call(&mut u, &["HELLO", "3"]).starts_with(b"%"));
    let line = client_of(&mut r, local_port(&u));
    assert_eq!(get(&line, "user"), "alice");
    assert_eq!(get(&line, "name"), "worker");
    assert_eq!(get(&line, "lib-name"), "redis-py");
    assert_eq!(get(&line, "lib-ver"), "5.0");
    assert_eq!(get(&line, "resp"), "3");
    let own = fields(text(&call(&mut u, &["CLIENT", "INFO"])).trim());
    assert_eq!(get(&own, "user"), "alice");
}

// ------------------------------------------------------------------------- 5. CLIENT REPLY

/// Nothing more arrives on `r` (within a short bounded wait).
fn assert_silent(r: &mut Raw, what: &str) {
    r.set_timeout(Duration::from_millis(300));
    if let Ok(extra) = r.next_reply() {
        panic!("{what}: unexpected reply {}", show(&extra));
    }
    r.set_timeout(Duration::from_secs(20));
}

#[test]
fn client_reply_off_skip_on_suppress_in_order() {
    let servers = redises(3);
    let proxy = spread_proxy(&servers);
    let mut r = proxy.raw();
    let per = keys_per_backend(&mut r, 3, "cr:", 1);
    let (k0, k1, k2) = (per[0][0].as_str(), per[1][0].as_str(), per[2][0].as_str());
    for k in [k0, k1, k2] {
        assert_call(&mut r, &["SET", k, k], "+OK\r\n");
    }

    // OFF: nothing (its own +OK neither) until ON, whose +OK is sent; backend replies, local
    // ones, errors, splits and fan-outs are all consumed in order, none sent.
    let mut req = Vec::new();
    for args in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["GET", k0],
        &["GET", k1],
        &["MGET", k0, k1, k2],
        &["PING"],
        &["NOSUCHCOMMAND"],
        &["GET"],
        &["INCR", k2],
        &["DBSIZE"],
        &["CLIENT", "REPLY", "SKIP"],
        &["SET", k1, "v1"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", k1],
    ] {
        req.extend(enc(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()));
    }
    r.send(&req);
    assert_eq!(show(&r.reply()), "+OK\\r\\n");
    assert_eq!(show(&r.reply()), show(&bulk(b"v1")));
    assert_silent(&mut r, "after CLIENT REPLY ON");

    // SKIP: only the next command's reply is dropped, whichever backend answers first.
    let mut req = Vec::new();
    for args in [
        &["SET", k0, "a"][..],
        &["CLIENT", "REPLY", "SKIP"],
        &["GET", k1],
        &["GET", k0],
        &["CLIENT", "REPLY", "SKIP"],
        &["MGET", k0, k1, k2],
        &["CLIENT", "REPLY", "SKIP"],
        &["CLIENT", "REPLY", "ON"],
        &["PING"],
    ] {
        req.extend(enc(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()));
    }
    r.send(&req);
    assert_eq!(show(&r.reply()), "+OK\\r\\n");
    assert_eq!(show(&r.reply()), show(&bulk(b"a")));
    // SKIP then ON: ON's own +OK is sent (ON clears SKIP, as in Redis).
    assert_eq!(show(&r.reply()), "+OK\\r\\n");
    assert_eq!(show(&r.reply()), "+PONG\\r\\n");
    assert_silent(&mut r, "after SKIP");

    // Bad argument: Redis's syntax error. RESET turns replies back on.
    assert_call(
        &mut r,
        &["CLIENT", "REPLY", "MAYBE"],
        "-ERR syntax error\r\n",
    );
    send(&mut r, &["CLIENT", "REPLY", "OFF"]);
    send(&mut r, &["GET", k0]);
    assert_call(&mut r, &["RESET"], "+RESET\r\n");
    assert_call(&mut r, &["GET", k0], "$1\r\na\r\n");

    // The suppressed requests ran and were counted; another client's view is intact.
    let mut other = proxy.raw();
    let want = bulk(k2.as_bytes());
    assert_eq!(show(&call(&mut other, &["GET", k2])), show(&want));
    let info = text(&call(&mut other, &["INFO", "commandstats"]));
    let incr = info
        .lines()
        .find(|l| l.starts_with("cmdstat_incr:"))
        .unwrap_or_else(|| panic!("{info}"));
    assert!(incr.contains("calls=1,"), "{incr}");
}

// ------------------------------------------------------------------------------ 6. INFO

#[test]
fn info_has_the_fields_tools_read() {
    let servers = redises(2);
    let proxy = spread_proxy(&servers);
    let mut r = proxy.raw();
    let map = |t: &str| -> BTreeMap<String, String> {
        t.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    };

    let mem = map(&text(&call(&mut r, &["INFO", "memory"])));
    let used: u64 = mem["used_memory"].parse().unwrap();
    assert!(used > 0);
    assert!(mem.contains_key("used_memory_human"));
    assert!(mem.contains_key("used_memory_rss"));
    assert!(mem["used_memory_peak"].parse::<u64>().unwrap() > 0);
    assert_eq!(mem["mem_allocator"], "libc");
    assert_eq!(mem["maxmemory"], "0");
    // Documented as absent: the backends' script caches are theirs (INFO <backend> memory).
    assert!(!mem.contains_key("number_of_cached_scripts"));

    // errorstats: every error reply by code, the backends' included.
    assert_call(&mut r, &["CONFIG", "RESETSTAT"], "+OK\r\n");
    assert_call(&mut r, &["SET", "s", "x"], "+OK\r\n");
    assert!(call(&mut r, &["LPUSH", "s", "x"]).starts_with(b"-WRONGTYPE "));
    assert!(call(&mut r, &["INCR", "s"]).starts_with(b"-ERR "));
    assert!(call(&mut r, &["NOSUCH"]).starts_with(b"-ERR "));
    assert!(call(&mut r, &["GET"]).starts_with(b"-ERR "));
    assert!(call(
        &mut r,
        &["EVAL", "return redis.error_reply('MYCODE oops')", "0"]
    )
    .starts_with(b"-MYCODE oops"));
    let all = text(&call(&mut r, &["INFO"]));
    assert!(all.contains("# Errorstats\r\n"), "{all}");
    let errs = map(&text(&call(&mut r, &["INFO", "errorstats"])));
    assert_eq!(
        errs.get("errorstat_ERR").map(String::as_str),
        Some("count=3")
    );
    assert_eq!(
        errs.get("errorstat_WRONGTYPE").map(String::as_str),
        Some("count=1")
    );
    assert_eq!(
        errs.get("errorstat_MYCODE").map(String::as_str),
        Some("count=1")
    );
    // Suppressed replies (CLIENT REPLY OFF) are still counted, as Redis counts them.
    send(&mut r, &["CLIENT", "REPLY", "OFF"]);
    send(&mut r, &["INCR", "s"]);
    assert_call(&mut r, &["CLIENT", "REPLY", "ON"], "+OK\r\n");
    let errs = map(&text(&call(&mut r, &["INFO", "errorstats"])));
    assert_eq!(
        errs.get("errorstat_ERR").map(String::as_str),
        Some("count=4")
    );
    assert_call(&mut r, &["CONFIG", "RESETSTAT"], "+OK\r\n");
    let errs = text(&call(&mut r, &["INFO", "errorstats"]));
    assert_eq!(errs.trim_end(), "# Errorstats", "{errs}");
}

/// #18: PING with more than one argument is an arity error, as in Redis (it used to echo the
/// first), in and out of subscribe mode; answered like one redis-server, byte for byte.
#[test]
fn ping_arity_matches_redis() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    for args in [
        vec!["PING"],
        vec!["PING", "x"],
        vec!["PING", "x", "y"],
        vec!["PING", "x", "y", "z"],
    ] {
        assert_eq!(
            show(&call(&mut p, &args)),
            show(&call(&mut d, &args)),
            "{args:?}"
        );
    }
    // In RESP2 subscribe mode too.
    for r in [&mut p, &mut d] {
        let _ = call(r, &["SUBSCRIBE", "ch"]);
    }
    for args in [vec!["PING", "x"], vec!["PING", "x", "y"]] {
        assert_eq!(
            show(&call(&mut p, &args)),
            show(&call(&mut d, &args)),
            "{args:?}"
        );
    }
}

/// #18: COMMAND LIST [FILTERBY MODULE|ACLCAT|PATTERN] with Redis's replies and errors.
#[test]
fn command_list_filterby_matches_redis() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    let sorted = |reply: Vec<u8>| -> Vec<String> {
        let mut v = strings(&reply);
        v.sort();
        v
    };
    for args in [
        vec!["COMMAND", "LIST", "FILTERBY", "PATTERN", "xa*"],
        vec!["COMMAND", "LIST", "FILTERBY", "PATTERN", "pf*"],
        vec!["COMMAND", "LIST", "FILTERBY", "ACLCAT", "hyperloglog"],
        vec!["COMMAND", "LIST", "FILTERBY", "ACLCAT", "nosuch"],
        vec!["COMMAND", "LIST", "FILTERBY", "MODULE", "foo"],
    ] {
        assert_eq!(
            sorted(call(&mut p, &args)),
            sorted(call(&mut d, &args)),
            "{args:?}"
        );
    }
    for args in [
        vec!["COMMAND", "LIST", "FILTERBY"],
        vec!["COMMAND", "LIST", "FILTERBY", "PATTERN"],
        vec!["COMMAND", "LIST", "FILTERBY", "FOO", "x"],
        vec!["COMMAND", "LIST", "extra"],
    ] {
        assert_eq!(
            show(&call(&mut p, &args)),
            show(&call(&mut d, &args)),
            "{args:?}"
        );
    }
}
