//! End-to-end command coverage: real redis-servers behind a real rustproxy.
//! Every reply the proxy assembles (split, fan-out, local) is checked against what the
//! backends hold, read over direct connections.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::{holder, ms, redises, refs, secs, wait_until, Proxy, Raw, Redis};
use redis::{Connection, Value};

// ---------------------------------------------------------------- helpers

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// Run a command, any reply (errors as `Err`).
fn run(c: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    cmd(args).query(c)
}

fn ok_val(c: &mut Connection, args: &[&str]) -> Value {
    run(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn int(c: &mut Connection, args: &[&str]) -> i64 {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn s(c: &mut Connection, args: &[&str]) -> Option<String> {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn strings(c: &mut Connection, args: &[&str]) -> Vec<String> {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_raw(r: &mut Raw, args: &[&str], want: &str) {
    let got = r.call_str(args);
    assert_eq!(show(&got), want, "{args:?}");
}

fn assert_pong(r: &mut Raw, after: &str) {
    let got = r.call_str(&["PING"]);
    assert_eq!(show(&got), "+PONG\r\n", "PING after {after}");
}

/// key -> index of the backend holding it (KEYS * on every backend). Panics on a key held twice.
fn placement(servers: &[Redis]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (i, srv) in servers.iter().enumerate() {
        let mut c = srv.client();
        for k in strings(&mut c, &["KEYS", "*"]) {
            if let Some(prev) = m.insert(k.clone(), i) {
                panic!("key {k} on backends {prev} and {i}");
            }
        }
    }
    m
}

fn dbsizes(servers: &[Redis]) -> Vec<i64> {
    servers
        .iter()
        .map(|srv| int(&mut srv.client(), &["DBSIZE"]))
        .collect()
}

/// Probe keys `prefix0..prefixN` through the proxy and return (key, backend) for each.
fn probe(
    proxy: &mut Connection,
    servers: &[Redis],
    prefix: &str,
    n: usize,
) -> Vec<(String, usize)> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for k in &keys {
        ok_val(proxy, &["SET", k, "probe"]);
    }
    let out: Vec<(String, usize)> = keys
        .iter()
        .map(|k| (k.clone(), holder(servers, k.as_bytes())))
        .collect();
    for k in &keys {
        ok_val(proxy, &["DEL", k]);
    }
    out
}

/// One key per backend (from probing), in backend order.
fn key_per_backend(proxy: &mut Connection, servers: &[Redis], prefix: &str) -> Vec<String> {
    let p = probe(proxy, servers, prefix, 64);
    (0..servers.len())
        .map(|b| {
            p.iter()
                .find(|(_, h)| *h == b)
                .unwrap_or_else(|| panic!("no probe key on backend {b}"))
                .0
                .clone()
        })
        .collect()
}

/// A proxy hashing with md5: the default `fnv1a_64` (truncated to 32 bits, as twemproxy does)
/// puts short similar keys such as `k1..k300` mostly on one or two backends, and these tests
/// need keys on every backend.
fn spread_proxy(servers: &[Redis], extra: &[&str]) -> Proxy {
    // hash_override: some of these tests route with a trailing hash=KEY.
    let mut args = vec!["--hash", "md5", "--hash-override", "yes"];
    args.extend_from_slice(extra);
    Proxy::start(&refs(servers), &args)
}

// ---------------------------------------------------------------- 1. split commands

#[test]
fn split_commands_match_backends() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &[]);
    let mut c = proxy.client();

    for &n in &[1usize, 2, 10, 100, 500] {
        let keys: Vec<String> = (0..n).map(|i| format!("mk:{n}:{i}")).collect();
        let vals: Vec<String> = (0..n).map(|i| format!("v{n}-{i}")).collect();

        // MSET
        let mut args = vec!["MSET"];
        for (k, v) in keys.iter().zip(&vals) {
            args.push(k);
            args.push(v);
        }
        assert_eq!(ok_val(&mut c, &args), Value::Okay, "MSET {n}");

        // Backends hold exactly these keys, each once, with the right value.
        let place = placement(&servers);
        assert_eq!(place.len(), n, "n={n}");
        for (k, v) in keys.iter().zip(&vals) {
            let b = *place.get(k).unwrap_or_else(|| panic!("{k} missing"));
            let got = s(&mut servers[b].client(), &["GET", k]);
            assert_eq!(got.as_deref(), Some(v.as_str()));
        }
        if n >= 100 {
            let used: HashSet<usize> = place.values().copied().collect();
            assert_eq!(used.len(), 4, "{n} keys should spread over all 4 backends");
        }

        // MGET in key order with nils for missing keys (interleaved).
        let mut margs = vec!["MGET".to_string()];
        let mut want: Vec<Option<String>> = Vec::new();
        for (i, (k, v)) in keys.iter().zip(&vals).enumerate() {
            margs.push(k.clone());
            want.push(Some(v.clone()));
            if i % 3 == 0 {
                margs.push(format!("missing:{n}:{i}"));
                want.push(None);
            }
        }
        let margs_ref: Vec<&str> = margs.iter().map(String::as_str).collect();
        let got: Vec<Option<String>> = cmd(&margs_ref).query(&mut c).unwrap();
        assert_eq!(got, want, "MGET n={n}");

        // EXISTS with missing and repeated keys.
        let mut eargs: Vec<&str> = vec!["EXISTS"];
        eargs.extend(keys.iter().map(String::as_str));
        eargs.push("nope:1");
        eargs.push(&keys[0]);
        eargs.push(&keys[n - 1]);
        assert_eq!(int(&mut c, &eargs), n as i64 + 2, "EXISTS n={n}");

        // TOUCH
        let mut targs: Vec<&str> = vec!["TOUCH"];
        targs.extend(keys.iter().map(String::as_str));
        targs.push("nope:2");
        assert_eq!(int(&mut c, &targs), n as i64, "TOUCH n={n}");

        // UNLINK the first half, DEL the rest (with repeats and a missing key).
        let half = n / 2;
        if half > 0 {
            let mut uargs: Vec<&str> = vec!["UNLINK"];
            uargs.extend(keys[..half].iter().map(String::as_str));
            uargs.push(&keys[0]);
            assert_eq!(int(&mut c, &uargs), half as i64, "UNLINK n={n}");
        }
        let mut dargs: Vec<&str> = vec!["DEL"];
        dargs.extend(keys[half..].iter().map(String::as_str));
        dargs.push(&keys[half]);
        dargs.push("nope:3");
        assert_eq!(int(&mut c, &dargs), (n - half) as i64, "DEL n={n}");
        assert_eq!(dbsizes(&servers), vec![0, 0, 0, 0], "n={n}");
    }

    // Repeated keys behave as in Redis.
    assert_eq!(ok_val(&mut c, &["SET", "a", "1"]), Value::Okay);
    assert_eq!(int(&mut c, &["EXISTS", "a", "a"]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "a", "zz", "a", "a"]), 3);
    let got: Vec<Option<String>> = cmd(&["MGET", "a", "zz", "a"]).query(&mut c).unwrap();
    assert_eq!(got, vec![Some("1".into()), None, Some("1".into())]);
    assert_eq!(int(&mut c, &["DEL", "a", "a"]), 1);
    // MSET with a repeated key: the last value wins, as in Redis.
    assert_eq!(
        ok_val(
            &mut c,
            &["MSET", "r1", "x", "r2", "y", "r1", "z", "r3", "w"]
        ),
        Value::Okay
    );
    assert_eq!(s(&mut c, &["GET", "r1"]).as_deref(), Some("z"));
    assert_eq!(int(&mut c, &["DEL", "r1", "r2", "r3"]), 3);

    // MSET whose keys all live on one backend: forwarded, still correct.
    let p = probe(&mut c, &servers, "one:", 64);
    let b = p[0].1;
    let same: Vec<&str> = p
        .iter()
        .filter(|(_, h)| *h == b)
        .map(|(k, _)| k.as_str())
        .take(3)
        .collect();
    assert!(same.len() >= 2, "need 2 keys on one backend: {p:?}");
    let mut args = vec!["MSET"];
    for k in &same {
        args.push(k);
        args.push("same");
    }
    assert_eq!(ok_val(&mut c, &args), Value::Okay);
    let mut direct = servers[b].client();
    for k in &same {
        assert_eq!(s(&mut direct, &["GET", k]).as_deref(), Some("same"));
    }
    let mut margs = vec!["MGET"];
    margs.extend(same.iter().copied());
    let got: Vec<String> = cmd(&margs).query(&mut c).unwrap();
    assert_eq!(got, vec!["same".to_string(); same.len()]);
    let total: i64 = dbsizes(&servers).iter().sum();
    assert_eq!(total, same.len() as i64);
}

// ---------------------------------------------------------------- 2. same-backend commands

#[test]
fn multi_key_commands_need_one_backend() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &["--hash-tag", "{}"]);
    let mut c = proxy.client();
    let mut r = proxy.raw();

    let per = key_per_backend(&mut c, &servers, "x");
    let (ka, kb) = (per[0].as_str(), per[1].as_str());

    // RENAME across backends: exact error, connection still usable, nothing changed.
    assert_raw(&mut r, &["SET", ka, "1"], "+OK\r\n");
    assert_raw(
        &mut r,
        &["RENAME", ka, kb],
        "-PROXYERROR keys are on different backends\r\n",
    );
    assert_pong(&mut r, "RENAME error");
    assert_raw(&mut r, &["GET", ka], "$1\r\n1\r\n");
    assert_raw(&mut r, &["DEL", ka], ":1\r\n");

    // Same tag: works.
    assert_raw(&mut r, &["SET", "{u}a", "1"], "+OK\r\n");
    assert_raw(&mut r, &["RENAME", "{u}a", "{u}b"], "+OK\r\n");
    assert_raw(&mut r, &["GET", "{u}b"], "$1\r\n1\r\n");
    assert_raw(&mut r, &["EXISTS", "{u}a"], ":0\r\n");

    // SMOVE / SINTERSTORE
    assert_raw(&mut r, &["SADD", "{s}a", "m", "n", "o"], ":3\r\n");
    assert_raw(&mut r, &["SADD", "{s}b", "o"], ":1\r\n");
    assert_raw(&mut r, &["SMOVE", "{s}a", "{s}b", "m"], ":1\r\n");
    assert_raw(&mut r, &["SINTERSTORE", "{s}d", "{s}a", "{s}b"], ":1\r\n");
    assert_raw(&mut r, &["SMEMBERS", "{s}d"], "*1\r\n$1\r\no\r\n");
    // LMOVE
    assert_raw(&mut r, &["RPUSH", "{l}a", "1", "2"], ":2\r\n");
    assert_raw(
        &mut r,
        &["LMOVE", "{l}a", "{l}b", "LEFT", "RIGHT"],
        "$1\r\n1\r\n",
    );
    assert_raw(&mut r, &["LRANGE", "{l}b", "0", "-1"], "*1\r\n$1\r\n1\r\n");
    // BITOP
    assert_raw(&mut r, &["SET", "{b}a", "ab"], "+OK\r\n");
    assert_raw(&mut r, &["SET", "{b}b", "ac"], "+OK\r\n");
    assert_raw(&mut r, &["BITOP", "AND", "{b}d", "{b}a", "{b}b"], ":2\r\n");
    assert_raw(&mut r, &["GET", "{b}d"], "$2\r\nab\r\n");
    // MSETNX
    assert_raw(&mut r, &["MSETNX", "{m}a", "1", "{m}b", "2"], ":1\r\n");
    assert_raw(&mut r, &["MSETNX", "{m}a", "1", "{m}c", "2"], ":0\r\n");
    // PFMERGE
    assert_raw(&mut r, &["PFADD", "{h}a", "x", "y"], ":1\r\n");
    assert_raw(&mut r, &["PFADD", "{h}b", "y", "z"], ":1\r\n");
    assert_raw(&mut r, &["PFMERGE", "{h}d", "{h}a", "{h}b"], "+OK\r\n");
    assert_raw(&mut r, &["PFCOUNT", "{h}d"], ":3\r\n");
    // Each of those across backends is refused.
    for args in [
        vec!["SMOVE", ka, kb, "m"],
        vec!["SINTERSTORE", ka, kb],
        vec!["LMOVE", ka, kb, "LEFT", "RIGHT"],
        vec!["BITOP", "AND", ka, kb],
        vec!["MSETNX", ka, "1", kb, "2"],
        vec!["PFMERGE", ka, kb],
    ] {
        assert_raw(
            &mut r,
            &args,
            "-PROXYERROR keys are on different backends\r\n",
        );
    }
    assert_pong(&mut r, "cross-backend errors");

    // EVAL with keys on two backends: refused. Keyless EVAL: backend 0.
    assert_raw(
        &mut r,
        &["EVAL", "return redis.call('GET', KEYS[1])", "2", ka, kb],
        "-PROXYERROR keys are on different backends\r\n",
    );
    assert_raw(&mut r, &["EVAL", "return 1", "0"], ":1\r\n");
    assert_raw(
        &mut r,
        &["EVAL", "return redis.call('SET', 'evalzero', 'here')", "0"],
        "+OK\r\n",
    );
    assert_eq!(holder(&servers, b"evalzero"), 0);
    assert_raw(
        &mut r,
        &[
            "EVAL",
            "return redis.call('GET', KEYS[1])",
            "2",
            "{e}1",
            "{e}2",
        ],
        "$-1\r\n",
    );

    // hash= co-locates keys that would otherwise be on different backends.
    assert_raw(&mut r, &["SET", "x", "hx"], "+OK\r\n");
    let hx = holder(&servers, b"x");
    assert_raw(&mut r, &["SET", ka, "1", "hash=x"], "+OK\r\n");
    assert_eq!(holder(&servers, ka.as_bytes()), hx);
    assert_raw(&mut r, &["RENAME", ka, kb, "hash=x"], "+OK\r\n");
    assert_eq!(holder(&servers, kb.as_bytes()), hx);
    assert_raw(&mut r, &["GET", kb, "hash=x"], "$1\r\n1\r\n");
    assert_pong(&mut r, "hash=");
}

// ---------------------------------------------------------------- 3. SCAN

fn wait_no_rehash(servers: &[Redis]) {
    for srv in servers {
        let mut c = srv.client();
        let what = format!("backend {} to finish rehashing", srv.port);
        wait_until(&what, secs(5), ms(5), || {
            let st: String = cmd(&["DEBUG", "HTSTATS", "0"]).query(&mut c).unwrap();
            !st.contains("rehashing")
        });
    }
}

fn scan_all(c: &mut Connection, extra: &[&str]) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut all = Vec::new();
    for _ in 0..50_000 {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let (next, keys): (String, Vec<String>) = cmd(&args).query(c).unwrap();
        all.extend(keys);
        if next == "0" {
            return all;
        }
        cursor = next;
    }
    panic!("SCAN did not finish");
}

#[test]
fn scan_visits_every_key_once() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &[]);
    let mut c = proxy.client();

    let keys: BTreeSet<String> = (0..10_000).map(|i| format!("key:{i}")).collect();
    let list: Vec<&String> = keys.iter().collect();
    for chunk in list.chunks(1000) {
        let mut args = vec!["MSET"];
        for k in chunk {
            args.push(k);
            args.push("v");
        }
        assert_eq!(ok_val(&mut c, &args), Value::Okay);
    }
    let sizes = dbsizes(&servers);
    assert_eq!(sizes.iter().sum::<i64>(), 10_000);
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    wait_no_rehash(&servers);

    for count in ["10", "100", "1000"] {
        let got = scan_all(&mut c, &["COUNT", count]);
        let set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(set.len(), got.len(), "duplicates with COUNT {count}");
        assert_eq!(set, keys, "COUNT {count}");
    }
    let got = scan_all(&mut c, &["MATCH", "key:1*", "COUNT", "500"]);
    let set: BTreeSet<String> = got.iter().cloned().collect();
    let want: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("key:1"))
        .cloned()
        .collect();
    assert_eq!(set.len(), got.len(), "duplicates with MATCH");
    assert_eq!(set, want);
    let got = scan_all(&mut c, &["MATCH", "nomatch*"]);
    assert!(got.is_empty());

    // Cursor shape: the low 10 bits name the backend.
    let (next, _): (String, Vec<String>) =
        cmd(&["SCAN", "0", "COUNT", "10"]).query(&mut c).unwrap();
    let n: u64 = next.parse().unwrap();
    assert!(n & 1023 < 4, "cursor {n}");

    let mut r = proxy.raw();
    for bad in ["1023", "4", "abc", "-1", "99999999999999999999999"] {
        let got = r.call_str(&["SCAN", bad]);
        assert!(got.starts_with(b"-ERR"), "SCAN {bad}: {}", show(&got));
        assert_pong(&mut r, "bad SCAN cursor");
    }
}

// ---------------------------------------------------------------- 4. keyspace fan-outs

#[test]
fn keyspace_fan_outs() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &[]);
    let mut c = proxy.client();
    let mut r = proxy.raw();

    assert_raw(&mut r, &["DBSIZE"], ":0\r\n");
    assert_raw(&mut r, &["RANDOMKEY"], "$-1\r\n");
    assert_raw(&mut r, &["KEYS", "*"], "*0\r\n");

    let keys: BTreeSet<String> = (0..300).map(|i| format!("k{i}")).collect();
    for k in &keys {
        ok_val(&mut c, &["SET", k, "1"]);
    }
    let sizes = dbsizes(&servers);
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    assert_eq!(int(&mut c, &["DBSIZE"]), sizes.iter().sum::<i64>());
    assert_eq!(int(&mut c, &["DBSIZE"]), 300);

    let got = strings(&mut c, &["KEYS", "*"]);
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len());
    assert_eq!(set, keys);
    let place: BTreeSet<String> = placement(&servers).into_keys().collect();
    assert_eq!(set, place);
    let got = strings(&mut c, &["KEYS", "k1?"]);
    let want: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.len() == 3 && k.starts_with("k1"))
        .cloned()
        .collect();
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);

    for _ in 0..20 {
        let k = s(&mut c, &["RANDOMKEY"]).expect("a key");
        assert!(keys.contains(&k), "{k}");
    }
    // Only one backend has keys: RANDOMKEY still finds them.
    assert_raw(&mut r, &["FLUSHALL"], "+OK\r\n");
    let only = key_per_backend(&mut c, &servers, "rk")[3].clone();
    ok_val(&mut c, &["SET", &only, "1"]);
    for _ in 0..5 {
        assert_eq!(s(&mut c, &["RANDOMKEY"]).as_deref(), Some(only.as_str()));
    }

    assert_raw(&mut r, &["FLUSHALL"], "+OK\r\n");
    assert_eq!(dbsizes(&servers), vec![0, 0, 0, 0]);
    assert_raw(&mut r, &["RANDOMKEY"], "$-1\r\n");
    for k in &keys {
        ok_val(&mut c, &["SET", k, "1"]);
    }
    assert_raw(&mut r, &["FLUSHDB"], "+OK\r\n");
    assert_eq!(dbsizes(&servers), vec![0, 0, 0, 0]);
    for k in keys.iter().take(50) {
        ok_val(&mut c, &["SET", k, "1"]);
    }
    assert_raw(&mut r, &["FLUSHALL", "SYNC"], "+OK\r\n");
    assert_eq!(dbsizes(&servers), vec![0, 0, 0, 0]);
    assert_raw(&mut r, &["DBSIZE"], ":0\r\n");
}

// ---------------------------------------------------------------- 5. scripts

#[test]
fn scripts_on_every_backend() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &[]);
    let mut c = proxy.client();

    let body = "return redis.call('GET', KEYS[1])";
    let sha = s(&mut c, &["SCRIPT", "LOAD", body]).unwrap();
    assert_eq!(sha.len(), 40);
    for srv in &servers {
        let mut d = srv.client();
        let e: Vec<i64> = cmd(&["SCRIPT", "EXISTS", &sha]).query(&mut d).unwrap();
        assert_eq!(e, vec![1]);
        assert_eq!(
            s(&mut d, &["SCRIPT", "LOAD", body]).as_deref(),
            Some(sha.as_str())
        );
    }
    for (i, k) in key_per_backend(&mut c, &servers, "sk").iter().enumerate() {
        let v = format!("val{i}");
        ok_val(&mut c, &["SET", k, &v]);
        assert_eq!(s(&mut c, &["EVALSHA", &sha, "1", k]), Some(v.clone()));
        assert_eq!(s(&mut c, &["EVALSHA_RO", &sha, "1", k]), Some(v));
    }
    let unknown = "0000000000000000000000000000000000000000";
    let e: Vec<i64> = cmd(&["SCRIPT", "EXISTS", &sha, unknown])
        .query(&mut c)
        .unwrap();
    assert_eq!(e, vec![1, 0]);

    // Loaded on one backend only: not "existing" through the proxy.
    let body2 = "return 2";
    let sha2 = s(&mut servers[0].client(), &["SCRIPT", "LOAD", body2]).unwrap();
    let e: Vec<i64> = cmd(&["SCRIPT", "EXISTS", &sha2]).query(&mut c).unwrap();
    assert_eq!(e, vec![0]);

    let mut r = proxy.raw();
    assert_raw(&mut r, &["SCRIPT", "FLUSH"], "+OK\r\n");
    let e: Vec<i64> = cmd(&["SCRIPT", "EXISTS", &sha, &sha2])
        .query(&mut c)
        .unwrap();
    assert_eq!(e, vec![0, 0]);
    for srv in &servers {
        let e: Vec<i64> = cmd(&["SCRIPT", "EXISTS", &sha])
            .query(&mut srv.client())
            .unwrap();
        assert_eq!(e, vec![0]);
    }
    let got = r.call_str(&["EVALSHA", &sha, "1", "k"]);
    assert!(got.starts_with(b"-NOSCRIPT"), "{}", show(&got));
    assert_pong(&mut r, "NOSCRIPT");
}

// ---------------------------------------------------------------- 6. CONFIG

/// CONFIG GET's documented shape (Merge::ConfigGet, note 37): Redis's, `[param, value]` (the
/// first backend's), byte-identical to a plain redis-server's reply; and the per-backend values
/// through FORWARD n.
fn config_get(c: &mut Connection, servers: &[Redis], param: &str) -> Vec<String> {
    let v = ok_val(c, &["CONFIG", "GET", param]);
    let direct = ok_val(&mut servers[0].client(), &["CONFIG", "GET", param]);
    assert_eq!(v, direct, "CONFIG GET {param}: Redis's shape");
    (0..servers.len())
        .map(|i| {
            let v = ok_val(c, &["FORWARD", &i.to_string(), "CONFIG", "GET", param]);
            let Value::Array(kv) = v else {
                panic!("FORWARD {i} CONFIG GET: {v:?}")
            };
            match &kv[1] {
                Value::BulkString(b) => show(b),
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn config_get_and_set() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = proxy.client();
    let mut r = proxy.raw();

    assert_raw(&mut r, &["CONFIG", "SET", "maxmemory", "100mb"], "+OK\r\n");
    for srv in &servers {
        let v: Vec<String> = cmd(&["CONFIG", "GET", "maxmemory"])
            .query(&mut srv.client())
            .unwrap();
        assert_eq!(v, vec!["maxmemory".to_string(), "104857600".to_string()]);
    }
    assert_raw(
        &mut r,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
        "+OK\r\n",
    );
    for srv in &servers {
        let v: Vec<String> = cmd(&["CONFIG", "GET", "maxmemory-policy"])
            .query(&mut srv.client())
            .unwrap();
        assert_eq!(v[1], "allkeys-lru");
    }
    // A failing CONFIG SET is an error.
    let got = r.call_str(&["CONFIG", "SET", "maxmemory", "lots"]);
    assert!(got.starts_with(b"-"), "{}", show(&got));
    assert_pong(&mut r, "CONFIG SET error");

    assert_eq!(
        config_get(&mut c, &servers, "maxmemory"),
        vec!["104857600".to_string(); 4]
    );
    assert_raw(&mut r, &["CONFIG", "SET", "maxmemory", "0"], "+OK\r\n");
    assert_eq!(
        config_get(&mut c, &servers, "maxmemory"),
        vec!["0".to_string(); 4]
    );
    // Read then write back, as tools do: the value read is a valid argument.
    let v: Vec<String> = cmd(&["CONFIG", "GET", "maxmemory-policy"])
        .query(&mut c)
        .unwrap();
    assert_eq!(v[0], "maxmemory-policy");
    assert_raw(&mut r, &["CONFIG", "SET", &v[0], &v[1]], "+OK\r\n");
    // Several parameters (a pattern): the parameter -> value pairs, as one Redis answers.
    let got = r.call_str(&["CONFIG", "GET", "maxmemory*"]);
    let want = Raw::connect(servers[0].port).call_str(&["CONFIG", "GET", "maxmemory*"]);
    assert_eq!(show(&got), show(&want));
}

// ---------------------------------------------------------------- 7. refused commands

#[test]
fn refused_commands_keep_connection() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut r = proxy.raw();

    // (Transactions, blocking commands and pub/sub are supported: tests/stateful.rs.)
    let refused: &[&[&str]] = &[
        &["WAIT", "0", "0"],
        &["WAITAOF", "0", "0", "0"],
        &["MONITOR"],
        &["SYNC"],
        &["REPLICAOF", "no", "one"],
        &["CLUSTER", "INFO"],
        &["SHUTDOWN"],
    ];
    for args in refused {
        let got = r.call_str(args);
        let text = show(&got);
        assert!(text.starts_with("-ERR"), "{args:?}: {text}");
        assert!(
            text.contains("not supported"),
            "{args:?} should say 'not supported': {text}"
        );
        assert!(
            text.ends_with("\r\n") && text.matches("\r\n").count() == 1,
            "{text}"
        );
        assert_pong(&mut r, &args.join(" "));
    }
    // Pipelined: every refused command gets exactly one reply, in order.
    let mut out = Vec::new();
    for args in refused {
        let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
        rustproxy::resp::write_command(&mut out, a.iter().copied());
    }
    rustproxy::resp::write_command(&mut out, [b"PING".as_slice()]);
    r.send(&out);
    for args in refused {
        let got = r.reply();
        assert!(got.starts_with(b"-ERR"), "{args:?}: {}", show(&got));
    }
    assert_eq!(r.reply(), b"+PONG\r\n");

    // The backends survived SHUTDOWN / REPLICAOF and are still masters.
    for srv in &servers {
        let mut d = srv.client();
        assert_eq!(s(&mut d, &["PING"]).as_deref(), Some("PONG"));
        let role = ok_val(&mut d, &["ROLE"]);
        let Value::Array(items) = role else { panic!() };
        assert_eq!(items[0], Value::BulkString(b"master".to_vec()));
    }
    assert_raw(&mut r, &["SELECT", "0"], "+OK\r\n");

    // XREAD without BLOCK on one stream works.
    assert_raw(&mut r, &["XADD", "s", "1-1", "f", "v"], "$3\r\n1-1\r\n");
    assert_raw(
        &mut r,
        &["XREAD", "COUNT", "10", "STREAMS", "s", "0"],
        "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
    );
    assert_pong(&mut r, "XREAD");
}

// ---------------------------------------------------------------- 8. unknown commands

#[test]
fn unknown_commands_and_case() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut r = proxy.raw();

    assert_raw(
        &mut r,
        &["foo", "a", "b"],
        "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
    );
    assert_raw(
        &mut r,
        &["foo"],
        "-ERR unknown command 'foo', with args beginning with: \r\n",
    );
    // Same text as redis-server itself.
    let mut d = Raw::connect(servers[0].port);
    for args in [
        &["foo", "a", "b"][..],
        &["CONFIG", "FOO"],
        &["config", "foo", "x"],
    ] {
        assert_eq!(show(&r.call_str(args)), show(&d.call_str(args)), "{args:?}");
    }
    assert_raw(
        &mut r,
        &["CONFIG", "FOO"],
        "-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n",
    );
    assert_pong(&mut r, "unknown");

    assert_raw(&mut r, &["sEt", "a", "1"], "+OK\r\n");
    assert_raw(&mut r, &["set", "b", "2"], "+OK\r\n");
    assert_raw(&mut r, &["gEt", "a"], "$1\r\n1\r\n");
    assert_raw(
        &mut r,
        &["mGeT", "a", "b", "c"],
        "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n",
    );
    assert_raw(&mut r, &["dBsIzE"], ":2\r\n");
}

// ---------------------------------------------------------------- 9. arity

#[test]
fn wrong_arity_uses_redis_text() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut r = proxy.raw();
    let mut d = Raw::connect(servers[0].port);

    let cases: &[(&[&str], &str)] = &[
        (&["GET"], "get"),
        (&["GET", "a", "b"], "get"),
        (&["SET", "k"], "set"),
        (&["MSET", "a"], "mset"),
        (&["MSET", "a", "1", "b"], "mset"),
        (&["MGET"], "mget"),
        (&["DEL"], "del"),
        (&["HSET", "h", "f"], "hset"),
        (&["CONFIG", "GET"], "config|get"),
        (&["CONFIG", "SET", "maxmemory"], "config|set"),
        (&["RENAME", "a"], "rename"),
        (&["SCAN"], "scan"),
        (&["DBSIZE", "x"], "dbsize"),
        (&["EVAL", "return 1"], "eval"),
    ];
    for (args, name) in cases {
        let want = format!("-ERR wrong number of arguments for '{name}' command\r\n");
        assert_eq!(show(&r.call_str(args)), want, "proxy {args:?}");
        assert_eq!(show(&d.call_str(args)), want, "redis {args:?}");
        assert_pong(&mut r, &args.join(" "));
    }
    // Nothing was created on any backend.
    assert_eq!(dbsizes(&servers), vec![0, 0, 0, 0]);
}

// ---------------------------------------------------------------- 10. disable_commands

#[test]
fn disable_commands_option() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--disable-commands", "FLUSHALL,KEYS"]);
    let mut r = proxy.raw();

    assert_raw(&mut r, &["SET", "a", "1"], "+OK\r\n");
    for args in [
        &["FLUSHALL"][..],
        &["flushall", "ASYNC"],
        &["KEYS", "*"],
        &["keys", "a"],
    ] {
        let got = show(&r.call_str(args));
        assert!(got.starts_with("-ERR"), "{args:?}: {got}");
        assert!(got.contains("disabled"), "{args:?}: {got}");
        assert!(
            got.to_uppercase().contains(&args[0].to_uppercase()),
            "{got}"
        );
        assert_pong(&mut r, &args.join(" "));
    }
    assert_eq!(
        dbsizes(&servers).iter().sum::<i64>(),
        1,
        "FLUSHALL must not have run"
    );
    assert_raw(&mut r, &["GET", "a"], "$1\r\n1\r\n");
    assert_raw(&mut r, &["DBSIZE"], ":1\r\n");
    let mut c = proxy.client();
    assert_eq!(scan_all(&mut c, &["COUNT", "1000"]), vec!["a".to_string()]);
    assert_raw(&mut r, &["FLUSHDB"], "+OK\r\n");
    assert_raw(&mut r, &["DBSIZE"], ":0\r\n");
}

// ---------------------------------------------------------------- 11. RESP3

#[test]
fn resp3_aggregated_replies() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &[]);
    let mut c = proxy.client();
    let per = key_per_backend(&mut c, &servers, "r3:");
    for (i, k) in per.iter().enumerate() {
        ok_val(&mut c, &["SET", k, &format!("v{i}")]);
    }

    let mut r = proxy.raw();
    let hello = r.call_str(&["HELLO", "3"]);
    assert!(hello.starts_with(b"%"), "{}", show(&hello));

    // MGET across all backends with missing keys: `_` for each missing one.
    let got = r.call_str(&["MGET", &per[0], "nope1", &per[1], &per[2], "nope2", &per[3]]);
    assert_eq!(
        show(&got),
        "*6\r\n$2\r\nv0\r\n_\r\n$2\r\nv1\r\n$2\r\nv2\r\n_\r\n$2\r\nv3\r\n"
    );
    assert_raw(&mut r, &["GET", "nope"], "_\r\n");
    assert_raw(&mut r, &["DBSIZE"], ":4\r\n");
    assert_raw(
        &mut r,
        &["EXISTS", &per[0], &per[1], &per[2], &per[3], "x"],
        ":4\r\n",
    );

    let keys_reply = r.call_str(&["KEYS", "*"]);
    let parsed = rustproxy::resp::parse_reply(&keys_reply)
        .unwrap()
        .unwrap()
        .0;
    let mut got: Vec<String> = match parsed {
        rustproxy::resp::Reply::Array(items) => items
            .into_iter()
            .map(|it| match it {
                rustproxy::resp::Reply::Bulk(b) => show(b),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("KEYS: {other:?}"),
    };
    got.sort();
    let mut want = per.clone();
    want.sort();
    assert_eq!(got, want);

    // SCAN: full iteration.
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    for _ in 0..100 {
        let reply = r.call_str(&["SCAN", &cursor]);
        let parsed = rustproxy::resp::parse_reply(&reply).unwrap().unwrap().0;
        let rustproxy::resp::Reply::Array(items) = parsed else {
            panic!("SCAN: {}", show(&reply))
        };
        assert_eq!(items.len(), 2);
        let rustproxy::resp::Reply::Bulk(cur) = &items[0] else {
            panic!()
        };
        let rustproxy::resp::Reply::Array(ks) = &items[1] else {
            panic!()
        };
        for k in ks {
            let rustproxy::resp::Reply::Bulk(b) = k else {
                panic!()
            };
            seen.push(show(b));
        }
        cursor = show(cur);
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0");
    seen.sort();
    assert_eq!(seen, want);

    // MSET, DEL in RESP3; RANDOMKEY on an empty keyspace is `_`.
    assert_raw(&mut r, &["MSET", &per[0], "a", &per[1], "b"], "+OK\r\n");
    assert_raw(
        &mut r,
        &["DEL", &per[0], &per[1], &per[2], &per[3]],
        ":4\r\n",
    );
    assert_raw(&mut r, &["RANDOMKEY"], "_\r\n");
    assert_raw(&mut r, &["MGET", &per[0], &per[1]], "*2\r\n_\r\n_\r\n");
    assert_pong(&mut r, "RESP3");
}

// ---------------------------------------------------------------- 12. README table

#[test]
fn readme_command_table_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("README.md not readable ({e}); it must embed the command table")
    });
    let begin = "<!-- commands:begin -->";
    let end = "<!-- commands:end -->";
    let lines: Vec<&str> = readme.split_inclusive('\n').collect();
    let b = lines
        .iter()
        .position(|l| l.trim_end() == begin)
        .expect("README.md: no `<!-- commands:begin -->` line");
    let e = lines
        .iter()
        .position(|l| l.trim_end() == end)
        .expect("README.md: no `<!-- commands:end -->` line");
    assert!(b < e, "markers out of order");
    assert_eq!(
        lines.iter().filter(|l| l.trim_end() == begin).count(),
        1,
        "one begin marker"
    );
    let between: String = lines[b + 1..e].concat();
    // Blank lines right after/before the markers are allowed (Markdown needs them).
    assert!(
        between.trim_matches('\n') == rustproxy::commands::markdown_table().trim_matches('\n'),
        "README.md command table is stale: replace the text between the markers with \
         rustproxy::commands::markdown_table() (docs/commands.md)"
    );
}

// ---------------------------------------------------------------- 13. single-key commands

#[test]
fn single_key_commands_of_every_group() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &["--hash-tag", "{}"]);
    let reference = Redis::start();
    let mut p = proxy.client();
    let mut d = reference.client();

    // Each command runs through the proxy and on a plain redis-server; replies must match.
    let script: &[&[&str]] = &[
        // string
        &["SET", "str", "hello"],
        &["APPEND", "str", " world"],
        &["GETRANGE", "str", "0", "4"],
        &["STRLEN", "str"],
        &["SETRANGE", "str", "0", "J"],
        &["GET", "str"],
        &["INCR", "cnt"],
        &["INCRBY", "cnt", "10"],
        &["INCRBYFLOAT", "flt", "1.5"],
        &["DECRBY", "cnt", "3"],
        &["SETNX", "cnt", "0"],
        &["GETSET", "cnt", "100"],
        &["SET", "gx", "1"],
        &["GETEX", "gx", "EX", "1000"],
        &["GETDEL", "gx"],
        &["EXISTS", "gx"],
        &["LCS", "str", "str"],
        // hash
        &["HSET", "h", "f1", "1", "f2", "2"],
        &["HGET", "h", "f1"],
        &["HMGET", "h", "f1", "zz", "f2"],
        &["HINCRBY", "h", "f1", "5"],
        &["HLEN", "h"],
        &["HEXISTS", "h", "f2"],
        &["HDEL", "h", "f2"],
        &["HGETALL", "h"],
        // list
        &["RPUSH", "lst", "a", "b", "c", "b"],
        &["LPUSH", "lst", "z"],
        &["LRANGE", "lst", "0", "-1"],
        &["LPOS", "lst", "b"],
        &["LPOS", "lst", "b", "COUNT", "0"],
        &["LINDEX", "lst", "1"],
        &["LLEN", "lst"],
        &["LPOP", "lst"],
        &["RPOP", "lst", "2"],
        // set
        &["SADD", "st", "a", "b", "c"],
        &["SISMEMBER", "st", "a"],
        &["SMISMEMBER", "st", "a", "q"],
        &["SCARD", "st"],
        &["SREM", "st", "b"],
        // sorted set
        &["ZADD", "zs", "1", "a", "2", "b", "3", "c"],
        &["ZSCORE", "zs", "b"],
        &["ZRANGE", "zs", "0", "-1", "WITHSCORES"],
        &["ZRANK", "zs", "c"],
        &["ZINCRBY", "zs", "10", "a"],
        &["ZCOUNT", "zs", "0", "5"],
        &["ZPOPMIN", "zs"],
        &["ZCARD", "zs"],
        // hyperloglog
        &["PFADD", "hll", "a", "b", "c"],
        &["PFCOUNT", "hll"],
        // bitmap
        &["SETBIT", "bm", "7", "1"],
        &["GETBIT", "bm", "7"],
        &["BITCOUNT", "bm"],
        &["BITPOS", "bm", "1"],
        &["BITFIELD", "bm", "GET", "u8", "0"],
        // geo
        &[
            "GEOADD",
            "geo",
            "13.361389",
            "38.115556",
            "Palermo",
            "15.087269",
            "37.502669",
            "Catania",
        ],
        &["GEODIST", "geo", "Palermo", "Catania", "km"],
        &["GEOHASH", "geo", "Palermo"],
        &["GEOPOS", "geo", "Catania"],
        &[
            "GEOSEARCH",
            "geo",
            "FROMLONLAT",
            "15",
            "37",
            "BYRADIUS",
            "200",
            "km",
            "ASC",
        ],
        // stream
        &["XADD", "stream", "1-1", "a", "1"],
        &["XADD", "stream", "2-1", "b", "2"],
        &["XLEN", "stream"],
        &["XRANGE", "stream", "-", "+"],
        &["XREVRANGE", "stream", "+", "-", "COUNT", "1"],
        // expiry
        &["SET", "ex", "1"],
        &["EXPIRE", "ex", "1000"],
        &["PERSIST", "ex"],
        &["TTL", "ex"],
        &["TTL", "nokey"],
        &["PEXPIRE", "ex", "100000000"],
        &["PERSIST", "ex"],
        // generic
        &["TYPE", "lst"],
        &["TYPE", "zs"],
        &["TYPE", "stream"],
        &["TYPE", "nokey"],
        &["OBJECT", "ENCODING", "cnt"],
        &["OBJECT", "ENCODING", "lst"],
        &["OBJECT", "REFCOUNT", "str"],
        &["RPUSH", "nums", "3", "1", "2"],
        &["SORT", "nums"],
        &["SORT", "nums", "DESC", "LIMIT", "0", "2"],
        &["SORT_RO", "nums"],
        // same-tag multi-key commands
        &["RPUSH", "{t}nums", "3", "1", "2"],
        &["SORT", "{t}nums", "STORE", "{t}sorted"],
        &["LRANGE", "{t}sorted", "0", "-1"],
        &["SET", "{c}a", "copy"],
        &["COPY", "{c}a", "{c}b"],
        &["GET", "{c}b"],
        &["ZADD", "{z}src", "1", "a", "2", "b", "3", "c"],
        &["ZRANGESTORE", "{z}dst", "{z}src", "0", "1"],
        &["ZRANGE", "{z}dst", "0", "-1"],
    ];
    for args in script {
        let a = run(&mut p, args);
        let b = run(&mut d, args);
        match (&a, &b) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "{args:?}"),
            _ => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{args:?}"),
        }
    }

    // TTL after GETEX/EXPIRE (a range, not a duration assertion).
    ok_val(&mut p, &["SET", "ttlk", "v"]);
    assert_eq!(
        s(&mut p, &["GETEX", "ttlk", "EX", "500"]).as_deref(),
        Some("v")
    );
    let ttl = int(&mut p, &["TTL", "ttlk"]);
    assert!(ttl > 0 && ttl <= 500, "{ttl}");
    assert_eq!(int(&mut p, &["PERSIST", "ttlk"]), 1);
    assert_eq!(int(&mut p, &["TTL", "ttlk"]), -1);

    // DUMP / RESTORE (the copy may land on another backend).
    let dump: Vec<u8> = cmd(&["DUMP", "lst"]).query(&mut p).unwrap();
    let mut rc = redis::cmd("RESTORE");
    rc.arg("lst-copy").arg(0).arg(&dump);
    let _: () = rc.query(&mut p).unwrap();
    let a: Vec<String> = cmd(&["LRANGE", "lst-copy", "0", "-1"])
        .query(&mut p)
        .unwrap();
    let b: Vec<String> = cmd(&["LRANGE", "lst", "0", "-1"]).query(&mut p).unwrap();
    assert_eq!(a, b);
    assert!(!a.is_empty());

    // DEBUG OBJECT is routed by key.
    let dbg: String = cmd(&["DEBUG", "OBJECT", "str"]).query(&mut p).unwrap();
    assert!(dbg.contains("encoding:"), "{dbg}");
    let e = run(&mut p, &["DEBUG", "OBJECT", "nokey"]).unwrap_err();
    assert!(format!("{e:?}").contains("no such key"), "{e:?}");
    let e = run(&mut p, &["DEBUG", "SLEEP", "0"]).unwrap_err();
    assert!(format!("{e:?}").contains("not supported"), "{e:?}");

    // Each key sits on exactly one backend, the one its hash (or tag) picks; the tagged
    // keys share one.
    let place = placement(&servers);
    let used: HashSet<usize> = place.values().copied().collect();
    assert!(used.len() >= 3, "keys should spread: {place:?}");
    assert_eq!(place["{t}nums"], place["{t}sorted"]);
    assert_eq!(place["{c}a"], place["{c}b"]);
    assert_eq!(place["{z}src"], place["{z}dst"]);
}

// ---------------------------------------------------------------- extra: byte-exact vs one redis

/// Split and keyed commands through a 4-backend proxy give the same bytes as one plain
/// redis-server: binary and empty keys, repeats, big values, numkeys errors, pipelining.
#[test]
fn split_replies_byte_identical_to_single_redis() {
    let servers = redises(4);
    let proxy = spread_proxy(&servers, &[]);
    let reference = Redis::start();
    let mut p = proxy.raw();
    let mut d = Raw::connect(reference.port);

    let big = "x".repeat(1 << 20);
    let mid = "y".repeat(70_000);
    let keys: Vec<String> = (0..40).map(|i| format!("bk{i}")).collect();
    let mut script: Vec<Vec<String>> = Vec::new();
    let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    script.push(v(&[
        "MSET",
        "",
        "empty-key",
        "a\r\nb",
        "crlf",
        "\u{e9}t\u{e9}",
        "utf8",
    ]));
    script.push(v(&["MGET", "", "a\r\nb", "\u{e9}t\u{e9}", "nope", ""]));
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in keys.iter().enumerate() {
        mset.push(k.clone());
        mset.push(if i % 7 == 0 {
            big.clone()
        } else if i % 5 == 0 {
            mid.clone()
        } else {
            format!("val{i}")
        });
    }
    script.push(mset);
    let mut mget = vec!["MGET".to_string()];
    for k in keys.iter().rev() {
        mget.push(k.clone());
        mget.push(format!("{k}-missing"));
    }
    script.push(mget);
    script.push(v(&["RPUSH", "bk1-list", "a"]));
    script.push(v(&["MGET", "bk1-list", "bk2", "bk1-list"])); // wrong type -> nil, like Redis
    script.push(v(&["EXISTS", "", "a\r\nb", "bk3", "bk3", "nope"]));
    script.push(v(&["TOUCH", "bk4", "bk5", "nope"]));
    script.push(v(&["EVAL", "return 1", "x", "a"]));
    script.push(v(&["EVAL", "return 1", "-1", "a"]));
    script.push(v(&["EVAL", "return 1", "3", "a", "b"]));
    script.push(v(&["EVAL", "return #KEYS", "1", "bk6"]));
    script.push(v(&["ZUNIONSTORE", "d", "0", "a"]));
    script.push(v(&["XREAD", "STREAMS", "s1", "s2", "0"]));
    script.push(v(&["INCR", "bk7"]));
    script.push(v(&["SCRIPT", "LOAD", "return +"]));
    let mut del = vec!["DEL".to_string()];
    del.extend(keys.iter().cloned());
    del.extend(keys.iter().take(5).cloned());
    del.extend(v(&["", "a\r\nb", "\u{e9}t\u{e9}", "bk1-list", "nope"]));
    script.push(del);
    script.push(v(&["DBSIZE"]));

    // One at a time.
    for args in &script {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let want = d.call_str(&a);
        let got = p.call_str(&a);
        let head: Vec<&str> = a
            .iter()
            .take(4)
            .map(|x| if x.len() > 20 { "<long>" } else { x })
            .collect();
        assert!(
            got == want,
            "{head:?}: proxy {:?} redis {:?}",
            show(&got[..got.len().min(200)]),
            show(&want[..want.len().min(200)])
        );
    }
    // The same script pipelined in one write, 3 times over.
    let mut out = Vec::new();
    for _ in 0..3 {
        for args in &script {
            rustproxy::resp::write_command(&mut out, args.iter().map(|x| x.as_bytes()));
        }
    }
    p.send(&out);
    d.send(&out);
    for round in 0..3 {
        for args in &script {
            let want = d.reply();
            let got = p.reply();
            assert!(got == want, "pipelined round {round} {:?}", &args[0]);
        }
    }
    // Inline commands are split too.
    p.send(b"MSET ia 1 ib 2 ic 3 id 4\r\nMGET ia ib ic id ie\r\nDEL ia ib ic id ie\r\nPING\r\n");
    assert_eq!(show(&p.reply()), "+OK\r\n");
    assert_eq!(
        show(&p.reply()),
        "*5\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n4\r\n$-1\r\n"
    );
    assert_eq!(show(&p.reply()), ":4\r\n");
    assert_eq!(show(&p.reply()), "+PONG\r\n");
    // hash= sends a split command whole to one backend.
    assert_raw(&mut p, &["SET", "hx", "anchor"], "+OK\r\n");
    let hb = holder(&servers, b"hx");
    assert_raw(
        &mut p,
        &["MSET", "h1", "1", "h2", "2", "h3", "3", "hash=hx"],
        "+OK\r\n",
    );
    for k in ["h1", "h2", "h3"] {
        assert_eq!(holder(&servers, k.as_bytes()), hb, "{k}");
    }
    assert_raw(
        &mut p,
        &["MGET", "h1", "h2", "h3", "hash=hx"],
        "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n",
    );
    assert_raw(
        &mut p,
        &["DEL", "h1", "h2", "h3", "hx", "hash=hx"],
        ":4\r\n",
    );
    assert_raw(&mut p, &["DBSIZE"], ":0\r\n");
}
