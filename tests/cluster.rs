//! Redis Cluster pools against a real 6-node cluster (3 masters, 3 replicas) built per test:
//! placement by slot, split multi-key commands, fan-out commands, live slot migration, manual
//! failover, a killed master, and a throughput comparison (printed, never asserted).
//!
//! Every node and proxy is owned by a value that kills its process by PID in `Drop`; every wait
//! is a bounded poll. At most `MAX_CLUSTERS` clusters run at once so that the cluster bus (node
//! timeout 2 s) is not starved on a small machine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{
    free_port, int, is_error, ms, opt_strings, owns_port, parsed, poll_until, secs, strings, text,
    tmp_dir, try_poll_until, wait_port, wait_until, Proxy, Raw,
};
use rustproxy::cluster::{key_slot, parse_cluster_slots, Range};
use rustproxy::resp::Reply;

const MAX_CLUSTERS: usize = 3;
const HOST: &str = "127.0.0.1";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Counting semaphore bounding how many clusters exist at once.
static SLOTS_IN_USE: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

struct Permit;

impl Permit {
    fn take() -> Permit {
        let mut n = SLOTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_CLUSTERS {
            n = SLOT_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut n = SLOTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        SLOT_FREED.notify_one();
    }
}

/// One cluster-enabled redis-server; SIGKILLed by PID on drop.
struct Node {
    port: u16,
    child: Child,
    dir: PathBuf,
    dead: bool,
}

impl Node {
    fn start() -> Node {
        for _ in 0..10 {
            let (port, bus) = (free_port(), free_port());
            if port == bus {
                continue;
            }
            let dir = tmp_dir("cluster-node");
            let conf = dir.join(format!("nodes-{port}.conf"));
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &conf.to_string_lossy()])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--bind", HOST])
                .args(["--dir", &dir.to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            wait_port(port, &mut child, "redis-server (cluster)");
            let node = Node {
                port,
                child,
                dir,
                dead: false,
            };
            if owns_port(port, node.child.id()) {
                return node;
            }
        }
        panic!("could not start a cluster node on a free port");
    }

    fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// SIGKILL by PID.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dead = true;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Cluster {
    nodes: Vec<Node>,
    _permit: Permit,
}

impl Cluster {
    /// Six nodes, `redis-cli --cluster create ... --cluster-replicas 1`, then wait (bounded)
    /// until every node reports `cluster_state:ok` with all slots assigned and the same map.
    fn start() -> Cluster {
        let permit = Permit::take();
        let nodes: Vec<Node> = (0..6).map(|_| Node::start()).collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        cmd.args(nodes.iter().map(|n| n.addr()));
        cmd.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Cluster {
            nodes,
            _permit: permit,
        };
        c.wait_ok(Duration::from_secs(30), true);
        c
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| !n.dead)
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("node by port")
    }

    /// Every live node: state ok, 16384 slots ok, and the same masters for the same ranges
    /// (with `replicas`: every range lists a replica on every node).
    fn wait_ok(&self, limit: Duration, replicas: bool) {
        poll_until("the cluster to converge", limit, ms(100), || {
            self.converged(replicas)
        });
    }

    fn converged(&self, replicas: bool) -> Result<(), String> {
        let mut maps = Vec::new();
        for n in self.live() {
            let info = text(&call(n.port, &["CLUSTER", "INFO"]));
            for want in [
                "cluster_state:ok",
                "cluster_slots_assigned:16384",
                "cluster_slots_ok:16384",
            ] {
                if !info.lines().any(|l| l.trim() == want) {
                    return Err(format!("{}: no {want}", n.port));
                }
            }
            let ranges = node_slots(n.port)?;
            if replicas && ranges.iter().any(|r| r.replicas.is_empty()) {
                return Err(format!("{}: a range without replica", n.port));
            }
            let map: Vec<(u16, u16, u16)> = ranges
                .into_iter()
                .map(|r| (r.start, r.end, r.master.1))
                .collect();
            maps.push((n.port, map));
        }
        if maps.windows(2).any(|w| w[0].1 != w[1].1) {
            return Err(format!("nodes disagree: {maps:?}"));
        }
        Ok(())
    }

    /// The slot map as seen by the first live node.
    fn slots(&self) -> Vec<Range> {
        let n = self.live().next().expect("a live node");
        node_slots(n.port).expect("CLUSTER SLOTS")
    }

    fn owner(&self, slot: u16) -> u16 {
        owner_in(&self.slots(), slot)
    }

    /// Master ports, sorted.
    fn masters(&self) -> Vec<u16> {
        let set: BTreeSet<u16> = self.slots().iter().map(|r| r.master.1).collect();
        set.into_iter().collect()
    }

    /// A replica of the master on `port` (from CLUSTER SLOTS).
    fn replica_of(&self, port: u16) -> u16 {
        self.slots()
            .iter()
            .find(|r| r.master.1 == port && !r.replicas.is_empty())
            .map(|r| r.replicas[0].1)
            .expect("master has a replica")
    }

    /// `rustproxy -l 127.0.0.1:PORT --cluster <first two nodes>`
    fn proxy(&self) -> Proxy {
        let port = free_port();
        let seeds = format!("{},{}", self.nodes[0].addr(), self.nodes[1].addr());
        let args: Vec<String> = vec![
            "-l".into(),
            format!("{HOST}:{port}"),
            "--cluster".into(),
            seeds,
        ];
        Proxy::spawn(port, &args)
    }
}

fn owner_in(ranges: &[Range], slot: u16) -> u16 {
    ranges
        .iter()
        .find(|r| r.start <= slot && slot <= r.end)
        .map(|r| r.master.1)
        .unwrap_or_else(|| panic!("slot {slot} not covered: {ranges:?}"))
}

fn node_slots(port: u16) -> Result<Vec<Range>, String> {
    parse_cluster_slots(&call(port, &["CLUSTER", "SLOTS"]), HOST)
}

/// One command on a fresh raw connection; the raw reply bytes.
fn call(port: u16, args: &[&str]) -> Vec<u8> {
    Raw::connect(port).call_str(args)
}

fn myid(port: u16) -> String {
    text(&call(port, &["CLUSTER", "MYID"]))
}

fn role(port: u16) -> String {
    let info = text(&call(port, &["INFO", "replication"]));
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Keys `prefix:i` (i from 0) whose slot's owner is `master`, `n` of them.
fn keys_on(ranges: &[Range], master: u16, prefix: &str, n: usize) -> Vec<String> {
    (0..100_000)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| owner_in(ranges, key_slot(k.as_bytes())) == master)
        .take(n)
        .collect()
}

/// Every key of `want` has its value through `r`; error replies are returned (a closed
/// connection and a hang panic).
fn check_all(r: &mut Raw, want: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in want {
        let reply = r
            .call_or_eof(&["GET", k])
            .unwrap_or_else(|| panic!("proxy closed the connection (GET {k})"));
        if is_error(&reply) {
            return Err(format!("GET {k}: {}", text(&reply)));
        }
        let got = text(&reply);
        assert_eq!(&got, v, "wrong value for {k} (reply {reply:?})");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Single-key commands land on the master owning the key's slot; BACKENDS/BACKENDNUM name it;
/// CLUSTER KEYSLOT and CLUSTER SLOTS are answered through the proxy.
#[test]
fn single_keys_land_on_slot_owner() {
    let c = Cluster::start();
    let proxy = c.proxy();
    let mut p = proxy.raw();
    let ranges = c.slots();
    let masters = c.masters();
    assert_eq!(masters.len(), 3);

    // BACKENDS: the masters' names (host:port for a cluster's nodes).
    let backends: Vec<String> = opt_strings(&p.call_str(&["BACKENDS"]))
        .into_iter()
        .map(|s| s.expect("backend line"))
        .collect();
    let want: BTreeSet<String> = masters.iter().map(|m| format!("{HOST}:{m}")).collect();
    assert_eq!(
        backends.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "BACKENDS {backends:?}"
    );

    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("single:{i}");
        let val = format!("value-{i}");
        assert_eq!(p.call_str(&["SET", &key, &val]), b"+OK\r\n");
        assert_eq!(text(&p.call_str(&["GET", &key])), val);

        let slot = key_slot(key.as_bytes());
        // KEYSLOT through the proxy, on a node, and ours agree.
        assert_eq!(int(&p.call_str(&["CLUSTER", "KEYSLOT", &key])), slot as i64);
        if i % 20 == 0 {
            assert_eq!(
                int(&call(c.nodes[2].port, &["CLUSTER", "KEYSLOT", &key])),
                slot as i64
            );
        }
        // The key exists on its owner (direct connection, no redirect).
        let owner = owner_in(&ranges, slot);
        assert_eq!(
            call(owner, &["EXISTS", &key]),
            b":1\r\n",
            "{key} not on {owner}"
        );
        *per_master.entry(owner).or_default() += 1;
        // BACKENDNUM names the owner's index in BACKENDS.
        let idx = int(&p.call_str(&["BACKENDNUM", &key]));
        let line = backends
            .get(idx as usize)
            .unwrap_or_else(|| panic!("BACKENDNUM {key} = {idx}, BACKENDS {backends:?}"));
        assert_eq!(line, &format!("{HOST}:{owner}"), "BACKENDNUM {key}");
    }
    assert_eq!(per_master.len(), 3, "keys spread over the masters");
    let total: i64 = masters.iter().map(|&m| int(&call(m, &["DBSIZE"]))).sum();
    assert_eq!(total, 200);

    // Hash tags keep keys together.
    let a = "{user1000}.following";
    let b = "{user1000}.followers";
    assert_eq!(p.call_str(&["SET", a, "1"]), b"+OK\r\n");
    assert_eq!(p.call_str(&["SET", b, "2"]), b"+OK\r\n");
    let owner = c.owner(key_slot(b"user1000"));
    assert_eq!(call(owner, &["EXISTS", a, b]), b":2\r\n");

    // Other single-key types go through as well.
    assert_eq!(p.call_str(&["INCRBY", "single:counter", "5"]), b":5\r\n");
    assert_eq!(p.call_str(&["RPUSH", "single:list", "a", "b"]), b":2\r\n");
    assert_eq!(
        opt_strings(&p.call_str(&["LRANGE", "single:list", "0", "-1"])),
        vec![Some("a".into()), Some("b".into())]
    );
    assert_eq!(p.call_str(&["GET", "single:missing"]), b"$-1\r\n");

    // CLUSTER SLOTS through the proxy: a node's map.
    let via_proxy = parse_cluster_slots(&p.call_str(&["CLUSTER", "SLOTS"]), HOST)
        .expect("CLUSTER SLOTS through the proxy");
    let strip = |v: &[Range]| -> Vec<(u16, u16, u16)> {
        v.iter().map(|r| (r.start, r.end, r.master.1)).collect()
    };
    assert_eq!(strip(&via_proxy), strip(&ranges));
}

/// Multi-key commands over keys in many slots are split by slot; cross-slot commands that
/// cannot be split are refused with CROSSSLOT; a common hash tag makes them work.
#[test]
fn multi_key_commands_split_by_slot() {
    let c = Cluster::start();
    let proxy = c.proxy();
    let mut p = proxy.raw();
    let keys: Vec<String> = (0..100).map(|i| format!("multi:{i}")).collect();
    let slots: BTreeSet<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert!(slots.len() > 50, "keys span many slots");

    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("v-{k}"));
    }
    let mset: Vec<&str> = mset.iter().map(|s| s.as_str()).collect();
    assert_eq!(p.call_str(&mset), b"+OK\r\n");

    // Every key on its owner.
    let ranges = c.slots();
    for k in &keys {
        let owner = owner_in(&ranges, key_slot(k.as_bytes()));
        assert_eq!(text(&call(owner, &["GET", k])), format!("v-{k}"));
    }

    // MGET in order, with a missing key in the middle.
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().take(50).map(|s| s.as_str()));
    mget.push("multi:missing");
    mget.extend(keys.iter().skip(50).map(|s| s.as_str()));
    let got = opt_strings(&p.call_str(&mget));
    let mut want: Vec<Option<String>> = keys
        .iter()
        .take(50)
        .map(|k| Some(format!("v-{k}")))
        .collect();
    want.push(None);
    want.extend(keys.iter().skip(50).map(|k| Some(format!("v-{k}"))));
    assert_eq!(got, want);

    // EXISTS counts repeats; TOUCH counts existing keys.
    let mut exists = vec!["EXISTS"];
    exists.extend(keys.iter().map(|s| s.as_str()));
    exists.push(&keys[0]);
    exists.push("multi:missing");
    assert_eq!(int(&p.call_str(&exists)), 101);
    let mut touch = vec!["TOUCH"];
    touch.extend(keys.iter().map(|s| s.as_str()));
    touch.push("multi:missing");
    assert_eq!(int(&p.call_str(&touch)), 100);

    // DEL the first half, UNLINK the second.
    let mut del = vec!["DEL"];
    del.extend(keys.iter().take(50).map(|s| s.as_str()));
    del.push("multi:missing");
    assert_eq!(int(&p.call_str(&del)), 50);
    let mut unlink = vec!["UNLINK"];
    unlink.extend(keys.iter().map(|s| s.as_str()));
    assert_eq!(int(&p.call_str(&unlink)), 50);
    assert_eq!(int(&p.call_str(&exists)), 0);
    for m in c.masters() {
        assert_eq!(int(&call(m, &["DBSIZE"])), 0, "master {m} emptied");
    }

    // RENAME across slots: CROSSSLOT. Same hash tag: works.
    let (a, b) = ("rename:a", "rename:b");
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    assert_eq!(p.call_str(&["SET", a, "x"]), b"+OK\r\n");
    let reply = p.call_str(&["RENAME", a, b]);
    assert!(
        reply.starts_with(b"-CROSSSLOT"),
        "RENAME across slots: {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(text(&p.call_str(&["GET", a])), "x", "source untouched");
    assert_eq!(p.call_str(&["SET", "{t}a", "y"]), b"+OK\r\n");
    assert_eq!(p.call_str(&["RENAME", "{t}a", "{t}b"]), b"+OK\r\n");
    assert_eq!(text(&p.call_str(&["GET", "{t}b"])), "y");
    assert_eq!(p.call_str(&["GET", "{t}a"]), b"$-1\r\n");
    assert_eq!(p.call_str(&["MSET", "{t}1", "a", "{t}2", "b"]), b"+OK\r\n");
    assert_eq!(
        opt_strings(&p.call_str(&["MGET", "{t}1", "{t}2"])),
        vec![Some("a".into()), Some("b".into())]
    );
}

/// SCAN over the proxy visits every key exactly once; DBSIZE sums; KEYS unions; FLUSHALL
/// empties every master.
#[test]
fn scan_dbsize_keys_flushall_cover_all_masters() {
    let c = Cluster::start();
    let proxy = c.proxy();
    let mut p = proxy.raw();
    let keys: BTreeSet<String> = (0..300).map(|i| format!("scan:{i}")).collect();
    for k in &keys {
        assert_eq!(p.call_str(&["SET", k, "1"]), b"+OK\r\n");
    }
    // A read pass: lets each node finish incremental rehashing (SCAN may repeat keys during it).
    for k in &keys {
        assert_eq!(text(&p.call_str(&["GET", k])), "1");
    }
    let masters = c.masters();
    for &m in &masters {
        assert!(int(&call(m, &["DBSIZE"])) > 0, "master {m} holds keys");
    }
    // Like Redis Cluster, only database 0 (issue 20): Redis's own texts, from a node and from
    // the proxy alike.
    for args in [&["SELECT", "1"][..], &["SELECT", "0"], &["SELECT", "x"]] {
        assert_eq!(p.call_str(args), call(masters[0], args), "{args:?}");
    }

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10_000, "SCAN does not terminate");
        let reply = p.call_str(&["SCAN", &cursor, "COUNT", "37"]);
        let Reply::Array(parts) = parsed(&reply) else {
            panic!("SCAN reply {:?}", String::from_utf8_lossy(&reply));
        };
        assert_eq!(parts.len(), 2);
        let Reply::Bulk(next) = &parts[0] else {
            panic!("SCAN cursor {:?}", parts[0]);
        };
        let Reply::Array(batch) = &parts[1] else {
            panic!("SCAN keys {:?}", parts[1]);
        };
        for k in batch {
            let Reply::Bulk(k) = k else {
                panic!("SCAN key {k:?}")
            };
            *seen
                .entry(String::from_utf8_lossy(k).into_owned())
                .or_default() += 1;
        }
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(dups.is_empty(), "keys seen more than once: {dups:?}");
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), keys);
    eprintln!("SCAN: {} keys in {rounds} calls", seen.len());

    assert_eq!(int(&p.call_str(&["DBSIZE"])), 300);
    let direct: i64 = masters.iter().map(|&m| int(&call(m, &["DBSIZE"]))).sum();
    assert_eq!(direct, 300);

    let all: BTreeSet<String> = opt_strings(&p.call_str(&["KEYS", "*"]))
        .into_iter()
        .map(|k| k.expect("key"))
        .collect();
    assert_eq!(all, keys);

    assert_eq!(p.call_str(&["FLUSHALL"]), b"+OK\r\n");
    assert_eq!(int(&p.call_str(&["DBSIZE"])), 0);
    for &m in &masters {
        assert_eq!(int(&call(m, &["DBSIZE"])), 0, "master {m} flushed");
    }
}

/// A slot moves between masters (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) while a client
/// loops SET/GET through the proxy on keys of that slot and of others: no error, no wrong value.
#[test]
fn slot_migration_under_load() {
    let c = Cluster::start();
    let proxy = c.proxy();
    let slot = key_slot(b"m");
    let src = c.owner(slot);
    let dst = *c
        .masters()
        .iter()
        .find(|&&m| m != src)
        .expect("another master");
    let (src_id, dst_id) = (myid(src), myid(dst));

    // Keys of the migrating slot ({m}:i) and of other slots (o:i), written before the move.
    let mut p = proxy.raw();
    for i in 0..50 {
        assert_eq!(
            p.call_str(&["SET", &format!("{{m}}:{i}"), "init"]),
            b"+OK\r\n"
        );
        assert_eq!(p.call_str(&["SET", &format!("o:{i}"), "init"]), b"+OK\r\n");
    }
    assert_eq!(
        int(&call(
            src,
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]
        )),
        50
    );

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let port = proxy.port;
    let writer = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut r = Raw::connect(port);
            let mut errors: Vec<String> = Vec::new();
            let mut n_err = 0u64;
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 400_000 && Instant::now() < deadline {
                i += 1;
                let key = if i.is_multiple_of(2) {
                    format!("{{m}}:{}", (i / 2) % 50)
                } else {
                    format!("o:{}", (i / 2) % 50)
                };
                let val = format!("v{i}");
                let set = match r
                    .call_or_eof(&["SET", &key, &val])
                    .ok_or("proxy closed the connection")
                {
                    Ok(reply) => reply,
                    Err(e) => {
                        errors.push(format!("SET {key}: {e}"));
                        n_err += 1;
                        break;
                    }
                };
                if set != b"+OK\r\n" {
                    n_err += 1;
                    if errors.len() < 20 {
                        errors.push(format!("SET {key}: {}", String::from_utf8_lossy(&set)));
                    }
                }
                match r
                    .call_or_eof(&["GET", &key])
                    .ok_or("proxy closed the connection")
                {
                    Ok(get) if get == format!("${}\r\n{val}\r\n", val.len()).as_bytes() => {}
                    Ok(get) => {
                        n_err += 1;
                        if errors.len() < 20 {
                            errors.push(format!(
                                "GET {key}: want {val}, got {}",
                                String::from_utf8_lossy(&get)
                            ));
                        }
                    }
                    Err(e) => {
                        errors.push(format!("GET {key}: {e}"));
                        n_err += 1;
                        break;
                    }
                }
                done.fetch_add(2, Ordering::Relaxed);
            }
            (i * 2, n_err, errors)
        })
    };
    let wait_progress = |n: u64| {
        let from = done.load(Ordering::Relaxed);
        wait_until("writer progress", secs(20), ms(50), || {
            done.load(Ordering::Relaxed) >= from + n || writer.is_finished()
        });
    };
    wait_progress(200);

    let s = slot.to_string();
    assert_eq!(
        call(dst, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id]),
        b"+OK\r\n"
    );
    assert_eq!(
        call(src, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id]),
        b"+OK\r\n"
    );
    wait_progress(100);
    let dst_port = dst.to_string();
    let mut batches = 0;
    loop {
        batches += 1;
        assert!(batches < 1000, "migration does not end");
        let keys: Vec<String> = opt_strings(&call(src, &["CLUSTER", "GETKEYSINSLOT", &s, "5"]))
            .into_iter()
            .map(|k| k.expect("key"))
            .collect();
        if keys.is_empty() {
            break;
        }
        let mut cmd = vec!["MIGRATE", HOST, &dst_port, "", "0", "5000", "KEYS"];
        cmd.extend(keys.iter().map(|k| k.as_str()));
        let reply = call(src, &cmd);
        assert!(
            reply == b"+OK\r\n" || reply == b"+NOKEY\r\n",
            "MIGRATE: {}",
            String::from_utf8_lossy(&reply)
        );
        // Let the client run against the half-migrated slot (ASK redirections).
        wait_progress(40);
    }
    // Assign the slot: target first, then source, then the other masters.
    let mut order = vec![dst, src];
    order.extend(c.masters().into_iter().filter(|m| *m != dst && *m != src));
    for m in order {
        assert_eq!(
            call(m, &["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]),
            b"+OK\r\n",
            "SETSLOT NODE on {m}"
        );
    }
    // Keep the load running against the new owner (MOVED for the proxy's stale map).
    wait_progress(500);
    stop.store(true, Ordering::Relaxed);
    let (requests, n_err, errors) = writer.join().expect("writer thread");
    eprintln!(
        "migration of slot {slot} {src} -> {dst} in {batches} batches: {requests} requests, {n_err} errors {errors:?}"
    );
    assert_eq!(
        n_err, 0,
        "client-visible errors during migration: {errors:?}"
    );

    // All keys of the slot are on the target now; the proxy routes there.
    assert_eq!(int(&call(dst, &["CLUSTER", "COUNTKEYSINSLOT", &s])), 50);
    assert_eq!(int(&call(src, &["CLUSTER", "COUNTKEYSINSLOT", &s])), 0);
    c.wait_ok(Duration::from_secs(15), false);
    assert_eq!(c.owner(slot), dst);
    let backends: Vec<String> = opt_strings(&p.call_str(&["BACKENDS"]))
        .into_iter()
        .map(|s| s.expect("backend"))
        .collect();
    let want = format!("{HOST}:{dst}");
    wait_until(
        "BACKENDNUM follows the moved slot",
        secs(10),
        ms(50),
        || {
            let _ = p.call_str(&["GET", "{m}:0"]);
            let idx = int(&p.call_str(&["BACKENDNUM", "{m}:0"]));
            backends.get(idx as usize) == Some(&want)
        },
    );
    for i in 0..50 {
        let reply = p.call_str(&["GET", &format!("{{m}}:{i}")]);
        assert!(!is_error(&reply), "{}", String::from_utf8_lossy(&reply));
    }
}

/// CLUSTER FAILOVER on a replica: after the switch, keys of the promoted master's slots work
/// through the same proxy connection (a few clear error replies tolerated during the switch).
#[test]
fn manual_failover_keeps_serving() {
    let c = Cluster::start();
    let proxy = c.proxy();
    let mut p = proxy.raw();
    let ranges = c.slots();
    let master = ranges[0].master.1;
    let replica = c.replica_of(master);
    let keys = keys_on(&ranges, master, "fo", 30);
    let mut want = BTreeMap::new();
    for k in &keys {
        assert_eq!(p.call_str(&["SET", k, &format!("v-{k}")]), b"+OK\r\n");
        want.insert(k.clone(), format!("v-{k}"));
    }
    check_all(&mut p, &want).expect("before failover");
    wait_until("replica in sync", secs(15), ms(50), || {
        int(&call(master, &["WAIT", "1", "1000"])) >= 1
    });

    assert_eq!(call(replica, &["CLUSTER", "FAILOVER"]), b"+OK\r\n");
    wait_until("replica promoted", secs(15), ms(50), || {
        role(replica) == "master" && role(master) == "slave"
    });

    // Through the proxy: eventual success, only clear errors on the way.
    let mut errors = Vec::new();
    let served = try_poll_until(secs(15), ms(100), || {
        check_all(&mut p, &want).inspect_err(|e| errors.push(e.clone()))
    });
    assert!(
        served.is_ok(),
        "no success through the proxy after failover: {errors:?}"
    );
    eprintln!(
        "manual failover {master} -> {replica}: {} error passes {errors:?}",
        errors.len()
    );

    // Writes go to the new master.
    for k in &keys {
        assert_eq!(p.call_str(&["SET", k, "after"]), b"+OK\r\n");
        assert_eq!(text(&call(replica, &["GET", k])), "after");
    }
}

/// SIGKILL a master: its slots fail with error replies (not hangs); once the cluster promoted
/// its replica, the same proxy serves every key again.
#[test]
fn killed_master_fails_fast_then_recovers() {
    let mut c = Cluster::start();
    let proxy = c.proxy();
    let mut p = proxy.raw();
    // A hang must show up as a failure, not as a slow pass.
    p.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let ranges = c.slots();
    let victim = ranges[ranges.len() - 1].master.1;
    let replica = c.replica_of(victim);
    let mut want = BTreeMap::new();
    let victim_keys = keys_on(&ranges, victim, "kill", 20);
    let other_keys: Vec<String> = c
        .masters()
        .into_iter()
        .filter(|&m| m != victim)
        .flat_map(|m| keys_on(&ranges, m, "kill", 10))
        .collect();
    for k in victim_keys.iter().chain(&other_keys) {
        assert_eq!(p.call_str(&["SET", k, &format!("v-{k}")]), b"+OK\r\n");
        want.insert(k.clone(), format!("v-{k}"));
    }
    wait_until("replica in sync", secs(15), ms(50), || {
        int(&call(victim, &["WAIT", "1", "1000"])) >= 1
    });

    c.node(victim).kill();
    let reply = p
        .call_or_eof(&["GET", &victim_keys[0]])
        .expect("connection kept");
    assert!(
        is_error(&reply),
        "GET on a dead master's slot: {}",
        String::from_utf8_lossy(&reply)
    );
    eprintln!("dead master: {}", text(&reply).trim_end());

    // The cluster promotes the replica (node timeout 2 s); the proxy follows without restart.
    let mut errors: BTreeSet<String> = BTreeSet::new();
    let served = try_poll_until(secs(20), ms(100), || {
        check_all(&mut p, &want).inspect_err(|e| {
            errors.insert(e.clone());
        })
    });
    assert!(
        served.is_ok(),
        "no recovery through the proxy: role({replica})={} errors {errors:?}",
        role(replica)
    );
    eprintln!(
        "killed master {victim}, replica {replica} now {}: distinct errors {errors:?}",
        role(replica)
    );
    assert_eq!(role(replica), "master");
    for k in &victim_keys {
        assert_eq!(p.call_str(&["SET", k, "again"]), b"+OK\r\n");
        assert_eq!(text(&call(replica, &["GET", k])), "again");
    }
}

/// redis-benchmark through the proxy vs redis-benchmark --cluster on the nodes (printed only).
#[test]
fn throughput_vs_cluster_aware_benchmark() {
    let c = Cluster::start();
    let proxy = c.proxy();
    let bench = |extra: &[&str], port: u16| -> String {
        let out = Command::new("redis-benchmark")
            .args(extra)
            .args(["-h", HOST, "-p", &port.to_string()])
            .args([
                "-t", "get,set", "-n", "20000", "-P", "16", "-r", "100000", "-q",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-benchmark");
        assert!(
            out.status.success(),
            "redis-benchmark {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8_lossy(&out.stdout);
        // -q writes progress with \r; keep the final lines.
        s.split(['\r', '\n'])
            .filter(|l| l.contains("requests per second"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let via_proxy = bench(&[], proxy.port);
    let direct = bench(&["--cluster"], c.nodes[0].port);
    eprintln!("throughput via rustproxy:               {via_proxy}");
    eprintln!("throughput redis-benchmark --cluster:   {direct}");
    assert!(!via_proxy.is_empty() && !direct.is_empty());
}

/// `read_from replica`: read-only commands are served by the replicas (READONLY connections),
/// writes by the masters, and the values read are right.
#[test]
fn read_from_replica_serves_reads_on_replicas() {
    let c = Cluster::start();
    let port = free_port();
    let seeds = format!("{},{}", c.nodes[0].addr(), c.nodes[1].addr());
    let args: Vec<String> = vec![
        "-l".into(),
        format!("{HOST}:{port}"),
        "--cluster".into(),
        seeds,
        "--read-from".into(),
        "replica".into(),
    ];
    let proxy = Proxy::spawn(port, &args);
    let mut r = proxy.raw();
    let keys: Vec<String> = (0..60).map(|i| format!("rf:{i}")).collect();
    for k in &keys {
        assert_eq!(r.call_str(&["SET", k, &format!("v-{k}")]), b"+OK\r\n");
    }
    // Replication is asynchronous: wait (bounded) until every replica has its master's keys.
    let replicas: Vec<u16> = c.masters().iter().map(|&m| c.replica_of(m)).collect();
    let gets = |p: u16| -> i64 {
        let info = text(&call(p, &["INFO", "commandstats"]));
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    wait_until("replicas caught up", secs(10), ms(50), || {
        replicas
            .iter()
            .map(|&p| int(&call(p, &["DBSIZE"])))
            .sum::<i64>()
            == keys.len() as i64
    });
    let before_masters: i64 = c.masters().iter().map(|&m| gets(m)).sum();
    let before_replicas: i64 = replicas.iter().map(|&p| gets(p)).sum();
    for k in &keys {
        let got = r.call_str(&["GET", k]);
        assert_eq!(text(&got), format!("v-{k}"), "GET {k}");
    }
    let after_masters: i64 = c.masters().iter().map(|&m| gets(m)).sum();
    let after_replicas: i64 = replicas.iter().map(|&p| gets(p)).sum();
    assert_eq!(
        after_replicas - before_replicas,
        keys.len() as i64,
        "every GET should be served by a replica"
    );
    assert_eq!(after_masters, before_masters, "no GET on a master");
    // Writes still go to the masters.
    assert_eq!(r.call_str(&["SET", "rf:w", "1"]), b"+OK\r\n");
    let on_master = c
        .masters()
        .iter()
        .any(|&m| call(m, &["EXISTS", "rf:w"]) == b":1\r\n");
    assert!(on_master);
}

/// Issue 16 #6: sharded pub/sub follows the slot map. SSUBSCRIBE to 20 channels spread over
/// the three masters gets 20 confirmations (no `-MOVED`); SPUBLISH to each from another client
/// reaches the subscriber (1 receiver, and every `smessage` arrives); SUNSUBSCRIBE with no
/// argument leaves subscribe mode, so a GET then works under RESP2.
#[test]
fn sharded_pubsub_follows_the_slot_map() {
    let c = Cluster::start();
    let proxy = c.proxy();
    let ranges = c.slots();
    let channels: Vec<String> = (0..20).map(|i| format!("shard:{i}")).collect();
    let owners: BTreeSet<u16> = channels
        .iter()
        .map(|ch| owner_in(&ranges, key_slot(ch.as_bytes())))
        .collect();
    assert_eq!(owners.len(), 3, "channels spread over the three masters");
    let mut sub = proxy.raw();
    sub.set_timeout(Duration::from_secs(10));
    let mut stream = Vec::new();
    for ch in &channels {
        rustproxy::resp::write_command(&mut stream, [b"SSUBSCRIBE".as_slice(), ch.as_bytes()]);
    }
    sub.send(&stream);
    for (i, ch) in channels.iter().enumerate() {
        let r = sub.expect_reply(&format!("SSUBSCRIBE {ch} confirmation"));
        assert_eq!(
            strings(&r),
            vec!["ssubscribe".to_string(), ch.clone(), (i + 1).to_string()],
            "SSUBSCRIBE {ch}: {}",
            String::from_utf8_lossy(&r)
        );
    }

    let mut publisher = proxy.raw();
    for (i, ch) in channels.iter().enumerate() {
        let r = publisher.call_str(&["SPUBLISH", ch, &format!("m{i}")]);
        assert_eq!(
            r,
            b":1\r\n",
            "SPUBLISH {ch}: {}",
            String::from_utf8_lossy(&r)
        );
    }
    let mut got = BTreeSet::new();
    for i in 0..channels.len() {
        let r = sub.expect_reply(&format!("smessage {} of 20", i + 1));
        got.insert(strings(&r));
    }
    let want: BTreeSet<Vec<String>> = channels
        .iter()
        .enumerate()
        .map(|(i, ch)| vec!["smessage".to_string(), ch.clone(), format!("m{i}")])
        .collect();
    assert_eq!(got, want, "the subscriber's smessages");

    sub.cmd(&[b"SUNSUBSCRIBE"]);
    let mut left = BTreeSet::new();
    let mut counts = Vec::new();
    for _ in 0..channels.len() {
        let r = sub.expect_reply("SUNSUBSCRIBE confirmation");
        let parts = strings(&r);
        assert_eq!(parts.len(), 3, "{}", String::from_utf8_lossy(&r));
        assert_eq!(parts[0], "sunsubscribe", "{}", String::from_utf8_lossy(&r));
        left.insert(parts[1].clone());
        counts.push(parts[2].clone());
    }
    assert_eq!(
        left,
        channels.iter().cloned().collect::<BTreeSet<_>>(),
        "SUNSUBSCRIBE left every channel"
    );
    let want_counts: Vec<String> = (0..channels.len()).rev().map(|n| n.to_string()).collect();
    assert_eq!(counts, want_counts, "SUNSUBSCRIBE counts");
    sub.cmd(&[b"GET", b"shard:none"]);
    let r = sub.expect_reply("GET after SUNSUBSCRIBE");
    assert_eq!(
        r,
        b"$-1\r\n",
        "GET after SUNSUBSCRIBE under RESP2 (the client must have left subscribe mode): {}",
        String::from_utf8_lossy(&r)
    );
}
