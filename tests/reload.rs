//! End-to-end tests of hot reload (SIGHUP, PROXY RELOAD [DRYRUN]), runtime membership commands
//! and the zero-downtime upgrade (reuseport + SIGTERM). Real redis-server processes and the real
//! rustproxy binary on free loopback ports; every wait is bounded; no test asserts a duration.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    enc, free_port, ms, owns_port, parsed, poll_until, redises, secs, show, signal, text, tmp_dir,
    wait_until, Proxy, Raw, Redis,
};
use rustproxy::resp::Reply;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One backend line of a pool: (name, redis port, weight).
#[derive(Clone)]
struct Srv {
    name: String,
    port: u16,
    weight: u32,
}

fn srv(name: &str, r: &Redis, weight: u32) -> Srv {
    Srv {
        name: name.into(),
        port: r.port,
        weight,
    }
}

/// Native config text of one pool.
fn pool_text(name: &str, port: u16, servers: &[Srv], extra: &str) -> String {
    let mut t = format!(
        "pool {name}\n    listen 127.0.0.1:{port}\n    distribution ketama\n    timeout 5000\n"
    );
    if !extra.contains("hash_tag") {
        // These tests start from whole-key hashing and change the tag themselves.
        t.push_str("    hash_tag none\n");
    }
    for l in extra.lines() {
        t.push_str(&format!("    {}\n", l.trim()));
    }
    for s in servers {
        t.push_str(&format!(
            "    server 127.0.0.1:{}:{} {}\n",
            s.port, s.weight, s.name
        ));
    }
    t
}

/// A config file we own (so we can rewrite it) and a proxy started with `-c` on it.
fn start_with_file(tag: &str, text: &str, port: u16) -> (Proxy, PathBuf) {
    let dir = tmp_dir(tag);
    let path = dir.join("proxy.conf");
    std::fs::write(&path, text).expect("write config");
    let p = Proxy::spawn(port, &["-c".into(), path.to_string_lossy().into_owned()]);
    (p, path)
}

fn rewrite(path: &Path, text: &str) {
    // Write a temp file and rename so a concurrent reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// `PROXY BACKENDS` as "name weight" strings (state and position dropped).
fn proxy_backends(c: &mut redis::Connection) -> Vec<String> {
    let lines: Vec<String> = redis::cmd("PROXY")
        .arg("BACKENDS")
        .query(c)
        .expect("PROXY BACKENDS");
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "<pos> <name> <host:port> weight=<w> state=<s>"
            format!("{} {}", f[1], f[3])
        })
        .collect()
}

fn expect_backends(servers: &[Srv]) -> Vec<String> {
    servers
        .iter()
        .map(|s| format!("{} weight={}", s.name, s.weight))
        .collect()
}

/// Wait (bounded) until PROXY BACKENDS shows exactly `servers`.
fn wait_backends(port: u16, servers: &[Srv]) {
    let want = expect_backends(servers);
    let mut c = common::connect(port);
    let what = format!("PROXY BACKENDS to become {want:?}");
    poll_until(&what, secs(10), ms(10), || {
        let got = proxy_backends(&mut c);
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
}

/// The backend name of every key (BACKEND k1 k2 ... answers an array when given > 1 key).
fn backend_of(c: &mut redis::Connection, keys: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut cmd = redis::cmd("BACKEND");
        for k in chunk {
            cmd.arg(k);
        }
        if chunk.len() == 1 {
            // Pad with a copy so the answer is always an array.
            cmd.arg(&chunk[0]);
            let v: Vec<String> = cmd.query(c).expect("BACKEND");
            out.push(v[0].clone());
        } else {
            let v: Vec<String> = cmd.query(c).expect("BACKEND");
            assert_eq!(v.len(), chunk.len());
            out.extend(v);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 1. Reload under continuous pipelined load
// ---------------------------------------------------------------------------

const THREADS: usize = 4;
const KEYS_PER_THREAD: usize = 600;
const PAIRS_PER_PIPELINE: usize = 25; // 25 x (GET, SET) = 50 commands

fn key_name(t: usize, i: usize) -> String {
    // The {g..} part only matters once hash_tag "{}" is configured (change d).
    format!("t{t}:k{i}:{{g{}}}", i % 40)
}

/// Something a load thread saw that was not the model value.
#[derive(Debug, Clone)]
#[allow(dead_code)] // `what` is read through Debug in failure messages
struct Event {
    phase: usize,
    thread: usize,
    key: usize,
    what: String,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    phase: AtomicUsize,
    requests: AtomicU64,
    /// Completed pipelines per thread.
    rounds: Vec<AtomicU64>,
    nils: Mutex<Vec<Event>>,
    wrong: Mutex<Vec<Event>>,
    errors: Mutex<Vec<Event>>,
    drops: Mutex<Vec<String>>,
}

fn load_thread(port: u16, t: usize, sh: Arc<Shared>) {
    let mut raw = Raw::connect(port);
    let mut model: Vec<u64> = vec![0; KEYS_PER_THREAD]; // 0 = never written
    let keys: Vec<String> = (0..KEYS_PER_THREAD).map(|i| key_name(t, i)).collect();
    let mut next = 0usize;
    let deadline = Instant::now() + Duration::from_secs(75);
    while !sh.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut bytes = Vec::new();
        let mut batch = Vec::with_capacity(PAIRS_PER_PIPELINE);
        for _ in 0..PAIRS_PER_PIPELINE {
            let i = next;
            next = (next + 1) % KEYS_PER_THREAD;
            let expected = model[i];
            let v = expected + 1;
            let val = format!("t{t}:k{i}:v{v}");
            bytes.extend(enc(&[b"GET", keys[i].as_bytes()]));
            bytes.extend(enc(&[b"SET", keys[i].as_bytes(), val.as_bytes()]));
            batch.push((i, expected));
            model[i] = v;
        }
        if let Err(e) = raw.stream.write_all(&bytes) {
            sh.drops
                .lock()
                .unwrap()
                .push(format!("thread {t}: write: {e}"));
            return;
        }
        sh.requests
            .fetch_add(2 * PAIRS_PER_PIPELINE as u64, Ordering::Relaxed);
        let phase = sh.phase.load(Ordering::Relaxed);
        for &(i, expected) in &batch {
            let ev = |what: String| Event {
                phase,
                thread: t,
                key: i,
                what,
            };
            let (Some(get), Some(set)) = (raw.try_reply(), raw.try_reply()) else {
                sh.drops
                    .lock()
                    .unwrap()
                    .push(format!("thread {t}: connection closed (EOF/reset)"));
                return;
            };
            let want = format!("t{t}:k{i}:v{expected}");
            let note = |list: &Mutex<Vec<Event>>, what: String| list.lock().unwrap().push(ev(what));
            match parsed(&get) {
                Reply::Nil if expected == 0 => {}
                Reply::Bulk(b) if expected > 0 && b == want.as_bytes() => {}
                Reply::Nil => note(&sh.nils, "nil".into()),
                Reply::Error(_) => note(&sh.errors, format!("GET: {}", text(&get))),
                _ => note(&sh.wrong, format!("GET: {}, expected {want}", show(&get))),
            }
            match parsed(&set) {
                Reply::Simple(b"OK") => {}
                Reply::Error(_) => note(&sh.errors, format!("SET: {}", text(&set))),
                _ => note(&sh.wrong, format!("SET: {}", show(&set))),
            }
        }
        sh.rounds[t].fetch_add(1, Ordering::Release);
    }
}

/// Wait (bounded) until every load thread has completed `extra` more pipelines than now, so
/// every key got a GET and a SET that the proxy received after the change.
fn wait_rounds(sh: &Shared, extra: u64) {
    let start: Vec<u64> = sh
        .rounds
        .iter()
        .map(|r| r.load(Ordering::Acquire))
        .collect();
    let what = format!("every load thread to complete {extra} more pipelines");
    wait_until(&what, secs(30), ms(5), || {
        let done = sh
            .rounds
            .iter()
            .zip(&start)
            .all(|(r, s)| r.load(Ordering::Acquire) >= s + extra);
        // A dropped connection ends the wait too: the caller reports it.
        done || !sh.drops.lock().unwrap().is_empty()
    });
}

/// Delete every key from every backend that does not own it now, so a key that later moves
/// back to a server it lived on cannot read a stale copy (that would be a legitimate cache
/// behaviour, not a proxy bug, and would blur the "never a wrong value" check).
fn cleanup_stale(all: &[(String, &Redis)], keys: &[String], owner: &[String]) {
    for (name, r) in all {
        let mut c = r.client();
        let mut p = redis::pipe();
        let mut n = 0;
        for (k, o) in keys.iter().zip(owner) {
            if o != name {
                p.cmd("DEL").arg(k).ignore();
                n += 1;
            }
        }
        if n > 0 {
            let () = p.query(&mut c).expect("cleanup DEL");
        }
    }
}

struct PhaseReport {
    name: &'static str,
    requests: u64,
    moved: usize,
    unaffected_failures: usize,
    moved_nils: usize,
    moved_errors: usize,
}

#[test]
fn reload_under_pipelined_load_moves_only_changed_keys() {
    let rs = redises(5);
    let names = ["A", "B", "C", "D", "E"];
    let all: Vec<(String, &Redis)> = names.iter().map(|n| n.to_string()).zip(rs.iter()).collect();
    let port = free_port();
    let four: Vec<Srv> = (0..4).map(|i| srv(names[i], &rs[i], 1)).collect();
    let (proxy, path) = start_with_file("reload-load", &pool_text("main", port, &four, ""), port);
    let pid = proxy.child.id();
    wait_backends(port, &four);

    let keys: Vec<String> = (0..THREADS)
        .flat_map(|t| (0..KEYS_PER_THREAD).map(move |i| key_name(t, i)))
        .collect();
    let idx = |t: usize, i: usize| t * KEYS_PER_THREAD + i;
    let mut admin = common::connect(port);
    let mut owner = backend_of(&mut admin, &keys);

    let sh = Arc::new(Shared {
        rounds: (0..THREADS).map(|_| AtomicU64::new(0)).collect(),
        ..Default::default()
    });
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let sh = Arc::clone(&sh);
            std::thread::spawn(move || load_thread(port, t, sh))
        })
        .collect();
    // Warm up: every key written once.
    let full_cycle = (KEYS_PER_THREAD / PAIRS_PER_PIPELINE) as u64 + 2;
    wait_rounds(&sh, full_cycle);

    // moves[k] = how many changes moved key k; moved_in[p] = keys moved by change p.
    let mut moves = vec![0usize; keys.len()];
    let mut moved_in: Vec<BTreeSet<usize>> = vec![BTreeSet::new()];
    let mut requests_at = vec![sh.requests.load(Ordering::Relaxed)];

    let changes: Vec<(&'static str, Vec<Srv>, &'static str)> = vec![
        // (a) add E
        (
            "add backend E",
            (0..5).map(|i| srv(names[i], &rs[i], 1)).collect(),
            "",
        ),
        // (b) remove B
        (
            "remove backend B",
            [0, 2, 3, 4]
                .iter()
                .map(|&i| srv(names[i], &rs[i], 1))
                .collect(),
            "",
        ),
        // (c) weight of C 1 -> 3
        (
            "weight C 1->3",
            [0, 2, 3, 4]
                .iter()
                .map(|&i| srv(names[i], &rs[i], if i == 2 { 3 } else { 1 }))
                .collect(),
            "",
        ),
        // (d) hash tag none -> "{}"
        (
            "hash_tag none->{}",
            [0, 2, 3, 4]
                .iter()
                .map(|&i| srv(names[i], &rs[i], if i == 2 { 3 } else { 1 }))
                .collect(),
            "hash_tag \"{}\"",
        ),
    ];

    let mut reports = Vec::new();
    for (p, (what, servers, extra)) in changes.iter().enumerate() {
        let phase = p + 1;
        sh.phase.store(phase, Ordering::Relaxed);
        rewrite(&path, &pool_text("main", port, servers, extra));
        signal(pid, "HUP");
        wait_backends(port, servers);
        if extra.contains("hash_tag") {
            // Not visible in BACKENDS: wait until one tag's keys share a backend.
            let probe: Vec<String> = (0..20).map(|i| format!("probe{i}:{{same}}")).collect();
            wait_until("the hash_tag change to apply", secs(10), ms(10), || {
                let b = backend_of(&mut admin, &probe);
                b.iter().all(|x| *x == b[0])
            });
        }
        let after = backend_of(&mut admin, &keys);
        let moved: BTreeSet<usize> = (0..keys.len()).filter(|&k| owner[k] != after[k]).collect();
        for &k in &moved {
            moves[k] += 1;
        }
        // Placement checks per change.
        match phase {
            1 => {
                let share = moved.len() as f64 / keys.len() as f64;
                assert!(
                    (0.05..=0.40).contains(&share),
                    "adding 1 backend to 4 moved {share:.3} of {} keys (expected about 1/5)",
                    keys.len()
                );
                for &k in &moved {
                    assert_eq!(
                        after[k], "E",
                        "key {} moved {} -> {}, not to the new backend",
                        keys[k], owner[k], after[k]
                    );
                }
            }
            2 => {
                for k in 0..keys.len() {
                    assert_eq!(
                        owner[k] == "B",
                        moved.contains(&k),
                        "removing B: key {} was on {} and is now on {}",
                        keys[k],
                        owner[k],
                        after[k]
                    );
                }
                assert!(!moved.is_empty(), "B owned no key");
            }
            3 => {
                // Ketama (twemproxy): raising C's weight changes every server's share of
                // points, so some keys also move between other servers; most go to C.
                let to_c = moved.iter().filter(|&&k| after[k] == "C").count();
                assert!(
                    !moved.is_empty() && to_c * 2 > moved.len(),
                    "raising C's weight: {to_c} of {} moved keys went to C",
                    moved.len()
                );
                let from_c = moved.iter().filter(|&&k| owner[k] == "C").count();
                assert_eq!(from_c, 0, "raising C's weight moved keys away from C");
            }
            _ => {}
        }
        owner = after;
        moved_in.push(moved);
        // Let every key be read and written after the change, then remove stale copies.
        wait_rounds(&sh, full_cycle);
        cleanup_stale(&all, &keys, &owner);
        requests_at.push(sh.requests.load(Ordering::Relaxed));
        reports.push(*what);
    }
    // A last stretch of load with no change.
    sh.phase.store(changes.len() + 1, Ordering::Relaxed);
    wait_rounds(&sh, full_cycle);
    sh.stop.store(true, Ordering::Relaxed);
    let mut panics = Vec::new();
    for h in handles {
        if let Err(e) = h.join() {
            panics.push(format!("{e:?}"));
        }
    }
    let total = sh.requests.load(Ordering::Relaxed);

    let nils = sh.nils.lock().unwrap().clone();
    let wrong = sh.wrong.lock().unwrap().clone();
    let errors = sh.errors.lock().unwrap().clone();
    let drops = sh.drops.lock().unwrap().clone();

    // Per-phase report.
    let mut table = Vec::new();
    for (p, what) in reports.iter().enumerate() {
        let phase = p + 1;
        let moved = &moved_in[phase];
        let in_phase = |e: &&Event| e.phase == phase;
        let unaffected = |e: &&Event| !moved.contains(&idx(e.thread, e.key));
        let r = PhaseReport {
            name: what,
            requests: requests_at[phase] - requests_at[phase - 1],
            moved: moved.len(),
            unaffected_failures: nils
                .iter()
                .chain(&errors)
                .chain(&wrong)
                .filter(in_phase)
                .filter(unaffected)
                .count(),
            moved_nils: nils
                .iter()
                .filter(in_phase)
                .filter(|e| !unaffected(e))
                .count(),
            moved_errors: errors
                .iter()
                .filter(in_phase)
                .filter(|e| !unaffected(e))
                .count(),
        };
        table.push(r);
    }
    for r in &table {
        eprintln!(
            "reload scenario '{}': requests {}, keys moved {}/{} ({:.1}%), failures on unaffected keys {}, cache misses on moved keys {}, errors on moved keys {}",
            r.name,
            r.requests,
            r.moved,
            keys.len(),
            100.0 * r.moved as f64 / keys.len() as f64,
            r.unaffected_failures,
            r.moved_nils,
            r.moved_errors
        );
    }
    eprintln!(
        "total requests {total}; nils {}, wrong {}, errors {}, drops {}",
        nils.len(),
        wrong.len(),
        errors.len(),
        drops.len()
    );

    assert!(panics.is_empty(), "load thread panicked: {panics:?}");
    assert!(
        drops.is_empty(),
        "client connections dropped during reloads: {drops:?}"
    );
    assert!(
        wrong.is_empty(),
        "{} wrong replies, first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // A nil (cache miss) is only acceptable for a key that some change moved, at most once per move.
    let mut nil_count: HashMap<usize, usize> = HashMap::new();
    for e in &nils {
        *nil_count.entry(idx(e.thread, e.key)).or_default() += 1;
    }
    let bad_nils: Vec<_> = nil_count
        .iter()
        .filter(|(k, n)| **n > moves[**k])
        .map(|(k, n)| format!("{} nil x{n}, moved x{}", keys[*k], moves[*k]))
        .collect();
    assert!(
        bad_nils.is_empty(),
        "nil for keys that did not move: {:?}",
        &bad_nils[..bad_nils.len().min(10)]
    );
    for r in &table {
        assert_eq!(
            r.unaffected_failures, 0,
            "failures on unaffected keys during '{}'",
            r.name
        );
    }
    let unaffected_errors: Vec<_> = errors
        .iter()
        .filter(|e| moves[idx(e.thread, e.key)] == 0)
        .collect();
    assert!(
        unaffected_errors.is_empty(),
        "errors on keys that never moved: {:?}",
        &unaffected_errors[..unaffected_errors.len().min(5)]
    );
    assert!(
        errors.is_empty(),
        "errors (on moved keys): {:?}",
        &errors[..errors.len().min(5)]
    );
    drop(proxy);
}

// ---------------------------------------------------------------------------
// 2. An invalid file changes nothing
// ---------------------------------------------------------------------------

#[test]
fn invalid_config_changes_nothing() {
    let rs = redises(3);
    let port = free_port();
    let two = vec![srv("a", &rs[0], 1), srv("b", &rs[1], 1)];
    let good = pool_text("main", port, &two, "");
    let (mut proxy, path) = start_with_file("reload-invalid", &good, port);
    let mut c = proxy.client();
    let before = proxy_backends(&mut c);
    assert_eq!(before, expect_backends(&two));
    let () = redis::cmd("SET").arg("x").arg("1").query(&mut c).unwrap();
    let path_s = path.to_string_lossy().into_owned();

    // (a) unknown key, with an added server that must NOT be applied.
    let three = vec![
        srv("a", &rs[0], 1),
        srv("b", &rs[1], 1),
        srv("c", &rs[2], 1),
    ];
    let mut bad = pool_text("main", port, &three, "");
    bad.push_str("    no_such_key 42\n");
    let bad_line = bad.lines().count();
    rewrite(&path, &bad);
    let mut raw = proxy.raw();
    let r = raw.call(&[b"PROXY", b"RELOAD"]);
    let want = format!("-ERR {path_s}:{bad_line}: ");
    assert!(
        r.starts_with(want.as_bytes()),
        "PROXY RELOAD with an unknown key: got {}, want prefix {want:?}",
        show(&r)
    );
    assert!(
        show(&r).contains("no_such_key"),
        "error does not name the key: {}",
        show(&r)
    );
    assert_eq!(
        proxy_backends(&mut c),
        before,
        "unknown key: membership changed"
    );
    let v: String = redis::cmd("GET").arg("x").query(&mut c).unwrap();
    assert_eq!(v, "1");

    // (b) bad address.
    let mut bad = pool_text("main", port, &two, "");
    bad.push_str("    server 127.0.0.1:notaport:1 c\n");
    let bad_line = bad.lines().count();
    rewrite(&path, &bad);
    let r = raw.call(&[b"PROXY", b"RELOAD"]);
    let want = format!("-ERR {path_s}:{bad_line}: ");
    assert!(
        r.starts_with(want.as_bytes()),
        "PROXY RELOAD with a bad address: got {}, want prefix {want:?}",
        show(&r)
    );
    assert_eq!(
        proxy_backends(&mut c),
        before,
        "bad address: membership changed"
    );

    // (c) SIGHUP with an invalid file (unknown key + added server): nothing changes.
    let mut bad = pool_text("main", port, &three, "");
    bad.push_str("    no_such_key 42\n");
    rewrite(&path, &bad);
    signal(proxy.child.id(), "HUP");
    // Give the signal a bounded chance to be handled: a PING round trip after the signal is
    // processed by the same loop iteration or a later one; poll a few times.
    for _ in 0..20 {
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        assert_eq!(
            proxy_backends(&mut c),
            before,
            "SIGHUP with an invalid file changed membership"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        proxy.alive(),
        "proxy died after SIGHUP with an invalid file"
    );
    // Traffic keeps working, on old and new connections.
    let v: String = redis::cmd("GET").arg("x").query(&mut c).unwrap();
    assert_eq!(v, "1");
    let mut c2 = proxy.client();
    let () = redis::cmd("SET").arg("y").arg("2").query(&mut c2).unwrap();
    let v: String = redis::cmd("GET").arg("y").query(&mut c2).unwrap();
    assert_eq!(v, "2");
    assert!(
        proxy.log().contains("reload failed"),
        "log: {}",
        proxy.log()
    );

    // A valid file afterwards still applies.
    rewrite(&path, &pool_text("main", port, &three, ""));
    let r = raw.call(&[b"PROXY", b"RELOAD"]);
    assert!(r.starts_with(b"$"), "valid reload: {}", show(&r));
    assert_eq!(proxy_backends(&mut c), expect_backends(&three));
}

// ---------------------------------------------------------------------------
// 3. DRYRUN
// ---------------------------------------------------------------------------

#[test]
fn reload_dryrun_describes_without_applying() {
    let rs = redises(3);
    let port = free_port();
    let ab = vec![srv("a", &rs[0], 1), srv("b", &rs[1], 1)];
    let (proxy, path) = start_with_file("reload-dryrun", &pool_text("main", port, &ab, ""), port);
    let mut c = proxy.client();
    let before = proxy_backends(&mut c);
    let ac = vec![srv("a", &rs[0], 1), srv("c", &rs[2], 1)];
    rewrite(&path, &pool_text("main", port, &ac, ""));
    let d: String = redis::cmd("PROXY")
        .arg("RELOAD")
        .arg("DRYRUN")
        .query(&mut c)
        .expect("DRYRUN");
    assert!(d.contains("added") && d.contains('c'), "dry run: {d}");
    assert!(d.contains("removed") && d.contains('b'), "dry run: {d}");
    assert_eq!(proxy_backends(&mut c), before, "DRYRUN applied the change");
    // Twice, still nothing applied.
    let d2: String = redis::cmd("PROXY")
        .arg("RELOAD")
        .arg("dryrun")
        .query(&mut c)
        .unwrap();
    assert_eq!(d, d2);
    assert_eq!(proxy_backends(&mut c), before);
    // The real reload applies it.
    let r: String = redis::cmd("PROXY").arg("RELOAD").query(&mut c).unwrap();
    assert!(r.contains("added") && r.contains("removed"), "reload: {r}");
    assert_eq!(proxy_backends(&mut c), expect_backends(&ac));
    // Now nothing to do.
    let d3: String = redis::cmd("PROXY")
        .arg("RELOAD")
        .arg("DRYRUN")
        .query(&mut c)
        .unwrap();
    assert!(
        !d3.contains("added") && !d3.contains("removed"),
        "dry run after apply: {d3}"
    );
}

// ---------------------------------------------------------------------------
// 4. Pools added and removed
// ---------------------------------------------------------------------------

#[test]
fn reload_adds_and_removes_pools() {
    let rs = redises(2);
    let port = free_port();
    let port2 = free_port();
    let p1 = pool_text("main", port, &[srv("a", &rs[0], 1)], "");
    let (proxy, path) = start_with_file("reload-pools", &p1, port);
    assert!(
        TcpStream::connect(("127.0.0.1", port2)).is_err(),
        "second port already in use"
    );
    let mut c = proxy.client();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("main")
        .query(&mut c)
        .unwrap();

    // Add pool "second".
    let both = format!(
        "{p1}\n{}",
        pool_text("second", port2, &[srv("b", &rs[1], 1)], "")
    );
    rewrite(&path, &both);
    let r: String = redis::cmd("PROXY")
        .arg("RELOAD")
        .query(&mut c)
        .expect("reload");
    assert!(r.contains("pool second: added"), "reload: {r}");
    let mut c2 = common::connect(port2);
    let pong: String = redis::cmd("PING").query(&mut c2).unwrap();
    assert_eq!(pong, "PONG");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("second")
        .query(&mut c2)
        .unwrap();
    let v: String = rs[1]
        .client()
        .get("k")
        .unwrap_or_else(|_| panic!("GET on b"));
    assert_eq!(v, "second", "pool second does not write to its backend");
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "main");

    // An open client of pool second with a request still pending when the pool goes away.
    let mut pending = Raw::connect(port2);
    pending.send(&enc(&[b"GET", b"k"]));

    // Remove pool "second" (by SIGHUP this time).
    rewrite(&path, &p1);
    signal(proxy.child.id(), "HUP");
    wait_until(
        "pool second to stop accepting after its removal",
        secs(10),
        ms(10),
        || TcpStream::connect(("127.0.0.1", port2)).is_err(),
    );
    // Its pending reply was delivered, then the client closed.
    let r = pending.try_reply();
    assert_eq!(
        r.as_deref(),
        Some(&b"$6\r\nsecond\r\n"[..]),
        "pending reply of a removed pool"
    );
    assert!(pending.closed(), "client of a removed pool was not closed");
    // The idle redis-rs client of pool second is closed too.
    let gone = redis::cmd("PING").query::<String>(&mut c2);
    assert!(
        gone.is_err(),
        "client of the removed pool still served: {gone:?}"
    );
    // Pool main keeps working, old and new connections.
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "main");
    let mut c3 = proxy.client();
    let v: String = redis::cmd("GET").arg("k").query(&mut c3).unwrap();
    assert_eq!(v, "main");

    // And it can come back.
    rewrite(&path, &both);
    let r: String = redis::cmd("PROXY")
        .arg("RELOAD")
        .query(&mut c)
        .expect("reload");
    assert!(r.contains("pool second: added"), "re-adding: {r}");
    let mut c4 = common::connect(port2);
    let v: String = redis::cmd("GET").arg("k").query(&mut c4).unwrap();
    assert_eq!(v, "second");
}

use redis::Commands;

// ---------------------------------------------------------------------------
// 5. Runtime membership commands
// ---------------------------------------------------------------------------

#[test]
fn membership_commands_add_and_remove_backends() {
    let rs = redises(3);
    let port = free_port();
    let ab = vec![srv("a", &rs[0], 1), srv("b", &rs[1], 1)];
    let (proxy, _path) = start_with_file(
        "reload-membership",
        &pool_text("main", port, &ab, "membership_commands yes"),
        port,
    );
    let mut c = proxy.client();
    // (Default hash fnv1a_64: "m0".."m299" happen to miss a third server entirely, "key:N" do not.)
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();

    let r: String = redis::cmd("PROXY")
        .arg("ADDBACKEND")
        .arg("c")
        .arg(rs[2].addr())
        .query(&mut c)
        .expect("ADDBACKEND");
    assert!(r.contains("added c"), "ADDBACKEND: {r}");
    assert_eq!(
        proxy_backends(&mut c),
        vec!["a weight=1", "b weight=1", "c weight=1"]
    );
    let mut cmd = redis::cmd("BACKENDNUM");
    for k in &keys {
        cmd.arg(k);
    }
    let nums: Vec<i64> = cmd.query(&mut c).unwrap();
    let on_c: Vec<&String> = keys
        .iter()
        .zip(&nums)
        .filter(|(_, n)| **n == 2)
        .map(|(k, _)| k)
        .collect();
    assert!(!on_c.is_empty(), "no key on the added backend: {nums:?}");
    // Writes for those keys land on the new redis.
    for k in &on_c {
        let () = c.set(*k, "x").unwrap();
    }
    let mut rc = rs[2].client();
    for k in &on_c {
        let n: i64 = rc.exists(*k).unwrap();
        assert_eq!(n, 1, "{k} not on the added backend");
    }

    // Duplicate name.
    let dup = redis::cmd("PROXY")
        .arg("ADDBACKEND")
        .arg("c")
        .arg(rs[2].addr())
        .query::<String>(&mut c);
    assert!(dup.is_err(), "duplicate ADDBACKEND accepted: {dup:?}");

    // Remove it again.
    let r: String = redis::cmd("PROXY")
        .arg("REMOVEBACKEND")
        .arg("c")
        .query(&mut c)
        .expect("REMOVEBACKEND");
    assert!(r.contains("removed c"), "REMOVEBACKEND: {r}");
    assert_eq!(proxy_backends(&mut c), vec!["a weight=1", "b weight=1"]);
    let nums: Vec<i64> = {
        let mut cmd = redis::cmd("BACKENDNUM");
        for k in &keys {
            cmd.arg(k);
        }
        cmd.query(&mut c).unwrap()
    };
    assert!(
        nums.iter().all(|n| *n == 0 || *n == 1),
        "keys still placed on a removed backend"
    );
    for k in &on_c {
        let _: Option<String> = c.get(*k).unwrap();
    }

    // Unknown name.
    let mut raw = proxy.raw();
    let r = raw.call(&[b"PROXY", b"REMOVEBACKEND", b"nope"]);
    assert!(
        r.starts_with(b"-ERR") && show(&r).contains("nope"),
        "unknown backend: {}",
        show(&r)
    );

    // Without membership_commands (the default): an error naming the key.
    let port2 = free_port();
    let (proxy2, _p2) = start_with_file(
        "reload-membership-off",
        &pool_text("main", port2, &ab, ""),
        port2,
    );
    let mut raw2 = proxy2.raw();
    for cmd in [
        vec![&b"PROXY"[..], b"ADDBACKEND", b"c", rs[2].addr().as_bytes()],
        vec![&b"PROXY"[..], b"REMOVEBACKEND", b"a"],
    ] {
        let r = raw2.call(&cmd);
        assert!(
            r.starts_with(b"-ERR") && show(&r).contains("membership_commands"),
            "{}: {}",
            show(&cmd.concat()),
            show(&r)
        );
    }
    let mut c2 = proxy2.client();
    assert_eq!(proxy_backends(&mut c2), vec!["a weight=1", "b weight=1"]);
}

// ---------------------------------------------------------------------------
// 6. Zero-downtime upgrade with reuseport
// ---------------------------------------------------------------------------

#[derive(Default)]
struct UpgradeStats {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
}

/// One short-lived client: connect, SET, GET, close.
fn one_shot(port: u16, n: u64) -> Result<(), (bool, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| {
        (
            e.kind() == std::io::ErrorKind::ConnectionRefused,
            format!("connect: {e}"),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let key = format!("up{n}");
    let val = format!("v{n}");
    let mut bytes = enc(&[b"SET", key.as_bytes(), val.as_bytes()]);
    bytes.extend(enc(&[b"GET", key.as_bytes()]));
    s.write_all(&bytes)
        .map_err(|e| (false, format!("write: {e}")))?;
    let want = format!("+OK\r\n${}\r\n{val}\r\n", val.len());
    let mut got = Vec::new();
    let mut tmp = [0u8; 256];
    while got.len() < want.len() {
        match s.read(&mut tmp) {
            Ok(0) => return Err((false, format!("EOF after {:?}", show(&got)))),
            Ok(k) => got.extend_from_slice(&tmp[..k]),
            Err(e) => return Err((false, format!("read: {e} after {:?}", show(&got)))),
        }
    }
    if got != want.as_bytes() {
        return Err((false, format!("reply {:?}", show(&got))));
    }
    Ok(())
}

#[test]
fn upgrade_with_reuseport_and_sigterm_drops_nothing() {
    let rs = redises(2);
    let port = common::free_port_low();
    let text = pool_text(
        "main",
        port,
        &[srv("a", &rs[0], 1), srv("b", &rs[1], 1)],
        "reuseport yes",
    );
    let (mut a, path) = start_with_file("reload-upgrade", &text, port);
    let a_pid = a.child.id();

    let st = Arc::new(UpgradeStats::default());
    // Four client threads, each opening a new connection per request pair.
    let loads: Vec<_> = (0..4u64)
        .map(|t| {
            let st = Arc::clone(&st);
            std::thread::spawn(move || {
                let mut n = t * 1_000_000;
                while !st.stop.load(Ordering::Relaxed) && n < t * 1_000_000 + 100_000 {
                    n += 1;
                    match one_shot(port, n) {
                        Ok(()) => {
                            st.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err((refused, e)) => {
                            if refused {
                                st.refused.fetch_add(1, Ordering::Relaxed);
                            } else {
                                st.failed.fetch_add(1, Ordering::Relaxed);
                            }
                            let mut errs = st.errors.lock().unwrap();
                            if errs.len() < 20 {
                                errs.push(e);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let wait_ok = |min: u64| {
        let target = st.ok.load(Ordering::Relaxed) + min;
        wait_until(
            &format!("{min} more successful requests of the load"),
            secs(20),
            ms(5),
            || st.ok.load(Ordering::Relaxed) >= target,
        );
    };
    wait_ok(300);

    // Process B: same file, same port. Both must bind.
    let mut b = Proxy::spawn(port, &["-c".into(), path.to_string_lossy().into_owned()]);
    let b_pid = b.child.id();
    let mut saw_b = false;
    let mut saw_a = false;
    for _ in 0..400 {
        if !saw_b && owns_port(port, b_pid) {
            saw_b = true;
        }
        if !saw_a && owns_port(port, a_pid) {
            saw_a = true;
        }
        if saw_a && saw_b {
            break;
        }
    }
    assert!(
        b.alive(),
        "process B exited (could not bind the same port?): {}",
        b.log()
    );
    assert!(saw_b, "no connection reached process B in 400 attempts");
    assert!(
        saw_a,
        "no connection reached process A in 400 attempts after B started"
    );
    wait_ok(300);
    let before_term = (
        st.ok.load(Ordering::Relaxed),
        st.refused.load(Ordering::Relaxed),
        st.failed.load(Ordering::Relaxed),
    );

    // Retire A.
    signal(a_pid, "TERM");
    let status = a.wait_exit("exit (process A) after SIGTERM", secs(15));
    let at_exit = (
        st.ok.load(Ordering::Relaxed),
        st.refused.load(Ordering::Relaxed),
        st.failed.load(Ordering::Relaxed),
    );
    // Load continues against B alone.
    wait_ok(500);
    for _ in 0..50 {
        assert!(
            owns_port(port, b_pid),
            "after A exited, a connection did not reach B"
        );
    }
    st.stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().expect("load thread");
    }
    assert!(b.alive(), "process B died");

    let ok = st.ok.load(Ordering::Relaxed);
    let refused = st.refused.load(Ordering::Relaxed);
    let failed = st.failed.load(Ordering::Relaxed);
    let errors = st.errors.lock().unwrap().clone();
    eprintln!(
        "upgrade: ok {ok}, refused {refused}, failed {failed}; before SIGTERM {before_term:?}, at A's exit {at_exit:?}; A exit {status:?}; errors {errors:?}"
    );
    assert!(
        status.success(),
        "process A exited with {status:?}; log: {}",
        a.log()
    );
    assert!(a.log().contains("shutdown complete"), "A log: {}", a.log());
    assert_eq!(
        refused, 0,
        "connections refused during the upgrade: {errors:?}"
    );
    assert_eq!(
        failed, 0,
        "requests failed during the upgrade (ok {ok}): {errors:?}"
    );
}

// ---------------------------------------------------------------------------
// 6b. Deterministic repros of the two ways the upgrade test above loses requests
// ---------------------------------------------------------------------------

/// Stop `pid` with SIGSTOP and wait (bounded) until the kernel reports it stopped.
fn stop_process(pid: u32) {
    signal(pid, "STOP");
    poll_until(&format!("process {pid} to stop"), secs(10), ms(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) STATE ..." -- the state follows the last ')'.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        if state == Some("T") || state == Some("t") {
            Ok(())
        } else {
            Err(stat)
        }
    });
}

/// A client already connected (and accepted) whose request is in the proxy's socket buffer
/// when SIGTERM is handled: the request must be served before the connection closes.
#[test]
fn sigterm_serves_request_already_sent_on_accepted_connection() {
    let rs = redises(1);
    let port = free_port();
    let text = pool_text("main", port, &[srv("a", &rs[0], 1)], "");
    let (mut proxy, _path) = start_with_file("reload-term-buffered", &text, port);
    let pid = proxy.child.id();
    let mut c = proxy.raw();
    assert_eq!(c.call(&[b"PING"]), b"+PONG\r\n"); // accepted and registered
    stop_process(pid);
    c.send(&enc(&[b"SET", b"buffered", b"1"])); // sits unread in the proxy's socket buffer
    signal(pid, "TERM");
    signal(pid, "CONT");
    let r = c.try_reply();
    proxy.wait_exit("exit after SIGTERM", secs(15));
    let stored: Option<String> = redis::cmd("GET")
        .arg("buffered")
        .query(&mut rs[0].client())
        .unwrap();
    assert_eq!(
        r.as_deref(),
        Some(&b"+OK\r\n"[..]),
        "request sent before SIGTERM was handled got no reply (connection closed/reset); \
         backend has the key: {stored:?}; log: {}",
        proxy.log()
    );
}

/// A connection the kernel completed into the listener's accept queue before SIGTERM is
/// handled: with reuseport upgrades this is where new clients land while the old process
/// shuts down. It must be accepted and served, not reset by closing the listener.
#[test]
fn sigterm_serves_connections_queued_in_accept_backlog() {
    let rs = redises(1);
    let port = common::free_port_low();
    let text = pool_text("main", port, &[srv("a", &rs[0], 1)], "reuseport yes");
    let (mut proxy, _path) = start_with_file("reload-term-backlog", &text, port);
    let pid = proxy.child.id();
    // A round trip proves the event loop runs, so the SIGTERM handler is installed (a SIGTERM
    // between bind and handler registration would kill the process outright).
    assert_eq!(proxy.raw().call(&[b"PING"]), b"+PONG\r\n");
    stop_process(pid);
    // The kernel completes the handshake while the process is stopped.
    let mut c = Raw::connect(port);
    c.send(&enc(&[b"SET", b"queued", b"1"]));
    signal(pid, "TERM");
    signal(pid, "CONT");
    let r = c.try_reply();
    proxy.wait_exit("exit after SIGTERM", secs(15));
    assert_eq!(
        r.as_deref(),
        Some(&b"+OK\r\n"[..]),
        "connection queued in the accept backlog before SIGTERM was reset/closed without a reply; log: {}",
        proxy.log()
    );
}
