//! Placement parity with the real twemproxy: keys are SET through a running
//! `nutcracker` (0.5.0) in front of real `redis-server`s, then every key is
//! looked up on the backends directly and its location compared with
//! `rustproxy::ring::Ring::pick(hash_tag(key))`.
//!
//! Requires `redis-server` and `nutcracker` (Debian/Ubuntu: `apt-get install
//! redis-server nutcracker`). Every process started here is killed by PID
//! when its guard drops; every wait loop is bounded.

mod common;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::{brief, free_port, ms, poll_until, secs, wait_port, Raw};
use rustproxy::hash::HashKind;
use rustproxy::ring::{hash_tag, node_identity, Distribution, Ring, RingNode};

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

/// Kills (by PID) and reaps the child on drop.
struct Proc {
    child: Child,
    what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(extra.iter().map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn wait_ping(port: u16, proc_: &mut Proc) {
    let what = format!("{} on port {port} to answer PING", proc_.what);
    poll_until(&what, secs(10), ms(25), || {
        if let Ok(Some(status)) = proc_.child.try_wait() {
            panic!("{} exited early: {status}", proc_.what);
        }
        let mut c = Raw::try_connect(port).map_err(|e| format!("connect: {e}"))?;
        match c.try_call(&[b"PING"])? {
            r if r == b"+PONG\r\n" => Ok(()),
            r => Err(brief(&r)),
        }
    });
}

fn start_redis(dir: &Path) -> (Proc, u16) {
    start_redis_on(dir, None).expect("could not start redis-server")
}

/// Starts a redis-server on `fixed` (or a free port); `None` if it exits
/// right away (port taken).
fn start_redis_on(dir: &Path, fixed: Option<u16>) -> Option<(Proc, u16)> {
    let bin = find_binary("redis-server", &["/usr/bin", "/usr/local/bin"])
        .expect("redis-server not found: install it (apt-get install redis-server)");
    for _attempt in 0..5 {
        let port = fixed.unwrap_or_else(free_port);
        let child = Command::new(&bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &dir.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut p = Proc {
            child,
            what: format!("redis-server:{port}"),
        };
        sleep(Duration::from_millis(50));
        if let Ok(Some(_)) = p.child.try_wait() {
            if fixed.is_some() {
                return None;
            }
            continue; // port raced away; try another
        }
        wait_ping(port, &mut p);
        return Some((p, port));
    }
    None
}

fn nutcracker_bin() -> PathBuf {
    find_binary(
        "nutcracker",
        &["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"],
    )
    .expect(
        "nutcracker (twemproxy 0.5.0) not found: install it (apt-get install nutcracker) \
         -- this parity test needs the real binary",
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rustproxy-placement-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

// ---------------------------------------------------------------------------
// Parity machinery
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct PoolCfg {
    id: usize,
    hash: HashKind,
    dist: Distribution,
    /// (backend index, weight) in config order.
    servers: Vec<(usize, u32)>,
    named: bool,
    tag: Option<[u8; 2]>,
    nkeys: usize,
    listen: u16,
}

impl PoolCfg {
    fn describe(&self) -> String {
        format!(
            "c{} hash={} dist={} servers={:?} named={} tag={}",
            self.id,
            self.hash.name(),
            self.dist.name(),
            self.servers,
            self.named,
            self.tag
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_else(|| "-".into())
        )
    }

    fn server_name(&self, pos: usize) -> String {
        // Names with a dash and digits, like real deployments' "shard-3".
        format!("redis-shard-{}-{pos}", self.id % 7)
    }
}

struct Backends {
    _procs: Vec<Proc>,
    ports: Vec<u16>,
}

fn start_backends(n: usize, dir: &Path) -> Backends {
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n {
        let (p, port) = start_redis(dir);
        procs.push(p);
        ports.push(port);
    }
    Backends {
        _procs: procs,
        ports,
    }
}

fn write_yaml(pools: &[PoolCfg], backends: &Backends) -> String {
    let mut y = String::new();
    for p in pools {
        let _ = writeln!(y, "c{}:", p.id);
        let _ = writeln!(y, "  listen: 127.0.0.1:{}", p.listen);
        let _ = writeln!(y, "  hash: {}", p.hash.name());
        let _ = writeln!(y, "  distribution: {}", p.dist.name());
        let _ = writeln!(y, "  redis: true");
        let _ = writeln!(y, "  auto_eject_hosts: false");
        let _ = writeln!(y, "  timeout: 30000");
        if let Some(t) = p.tag {
            let _ = writeln!(y, "  hash_tag: \"{}\"", String::from_utf8_lossy(&t));
        }
        let _ = writeln!(y, "  servers:");
        for (pos, &(b, w)) in p.servers.iter().enumerate() {
            if p.named {
                let _ = writeln!(
                    y,
                    "   - 127.0.0.1:{}:{} {}",
                    backends.ports[b],
                    w,
                    p.server_name(pos)
                );
            } else {
                let _ = writeln!(y, "   - 127.0.0.1:{}:{}", backends.ports[b], w);
            }
        }
    }
    y
}

fn start_nutcracker(pools: &[PoolCfg], backends: &Backends, dir: &Path, tag: &str) -> Proc {
    let conf = dir.join(format!("nutcracker-{tag}.yml"));
    std::fs::write(&conf, write_yaml(pools, backends)).expect("write nutcracker yaml");
    let log = dir.join(format!("nutcracker-{tag}.log"));
    let stats = free_port();
    let child = Command::new(nutcracker_bin())
        .arg("-c")
        .arg(&conf)
        .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
        .arg("-o")
        .arg(&log)
        .args(["-v", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nutcracker");
    let mut p = Proc {
        child,
        what: format!("nutcracker ({})", conf.display()),
    };
    for pool in pools {
        let what = format!(
            "nutcracker pool {} (see {} and {})",
            pool.describe(),
            conf.display(),
            log.display()
        );
        wait_port(pool.listen, &mut p.child, &what);
    }
    p
}

/// Deterministic key set for a pool: ASCII keys, keys with bytes >= 0x80
/// (including CR/LF/NUL), and hash-tag shaped keys (non-empty, empty,
/// unterminated, reversed, nested). All start with the unique `c<id>:`
/// prefix so backends can be listed per pool.
fn make_keys(id: usize, n: usize) -> Vec<Vec<u8>> {
    let mut seed: u64 = 0x1234_5678_9abc_def0 ^ (id as u64).wrapping_mul(0x9e37_79b9);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let tags: [&[u8]; 8] = [
        b"user1",
        b"user2",
        b"\xc3\xa9t\xc3\xa9",
        b"\x80",
        b"\xff\xfe\x80\x81",
        b"a",
        b"ab",
        b"abc",
    ];
    let mut keys = Vec::with_capacity(n);
    let mut seen = HashSet::new();
    let mut i = 0usize;
    // Bounded: at most 4n attempts (duplicates are astronomically rare).
    while keys.len() < n && i < n * 4 {
        let mut k = format!("c{id}:").into_bytes();
        match i % 8 {
            0 | 1 => {
                let len = 1 + (next() % 40) as usize;
                k.extend((0..len).map(|_| (next() & 0xff) as u8));
            }
            2 => {
                let len = 1 + (next() % 12) as usize;
                k.extend((0..len).map(|_| 0x80 | (next() & 0x7f) as u8));
            }
            3 => {
                let t = tags[(next() % tags.len() as u64) as usize];
                k.extend_from_slice(format!("obj:{i}:{{").as_bytes());
                k.extend_from_slice(t);
                k.extend_from_slice(b"}:field");
            }
            4 => {
                let shapes: [&[u8]; 5] = [b"{}", b"{", b"}{", b"{}{x}", b"}x{"];
                k.extend_from_slice(format!("odd:{i}:").as_bytes());
                k.extend_from_slice(shapes[i / 8 % shapes.len()]);
                k.extend_from_slice(format!(":{}", next() % 1000).as_bytes());
            }
            _ => k.extend_from_slice(format!("key:{i}:{}", next() % 100_000).as_bytes()),
        }
        if seen.insert(k.clone()) {
            keys.push(k);
        }
        i += 1;
    }
    keys
}

/// SETs the pool's keys through nutcracker.
fn load_through_proxy(pool: &PoolCfg, keys: &[Vec<u8>]) {
    let mut c = Raw::connect_timeout(pool.listen, secs(60));
    let cmds: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .map(|k| vec![b"SET".to_vec(), k.clone(), b"v".to_vec()])
        .collect();
    let replies = c.pipeline(&cmds, 500);
    for (k, r) in keys.iter().zip(replies) {
        assert_eq!(
            r,
            b"+OK\r\n",
            "SET {:?} via {}",
            String::from_utf8_lossy(k),
            pool.describe()
        );
    }
}

/// Which backend (index) holds each key, via pipelined EXISTS per backend.
fn locate(keys: &[Vec<u8>], backends: &Backends, involved: &[usize]) -> Vec<Vec<usize>> {
    let mut found = vec![Vec::new(); keys.len()];
    let cmds: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .map(|k| vec![b"EXISTS".to_vec(), k.clone()])
        .collect();
    for &b in involved {
        let mut c = Raw::connect_timeout(backends.ports[b], secs(60));
        let replies = c.pipeline(&cmds, 1000);
        for (i, r) in replies.into_iter().enumerate() {
            if r == b":1\r\n" {
                found[i].push(b);
            }
        }
    }
    found
}

/// Runs one nutcracker with all `pools` and checks every key's placement.
/// Returns a list of failure descriptions (empty on success).
fn check_pools(pools: &[PoolCfg], backends: &Backends, dir: &Path, tag: &str) -> Vec<String> {
    let _nc = start_nutcracker(pools, backends, dir, tag);
    let mut failures = Vec::new();
    for pool in pools {
        let keys = make_keys(pool.id, pool.nkeys);
        load_through_proxy(pool, &keys);
        let involved: Vec<usize> = pool.servers.iter().map(|&(b, _)| b).collect();
        let found = locate(&keys, backends, &involved);

        let nodes: Vec<RingNode> = pool
            .servers
            .iter()
            .enumerate()
            .map(|(pos, &(b, w))| RingNode {
                identity: if pool.named {
                    pool.server_name(pos).into_bytes()
                } else {
                    node_identity("127.0.0.1", backends.ports[b], None)
                },
                weight: w,
                live: true,
            })
            .collect();
        let ring = Ring::build(pool.hash, pool.dist, &nodes);

        let mut bad = 0usize;
        let mut examples = Vec::new();
        for (k, f) in keys.iter().zip(&found) {
            let want = ring
                .pick(hash_tag(k, pool.tag))
                .map(|pos| pool.servers[pos].0);
            let ok = f.len() == 1 && Some(f[0]) == want;
            if !ok {
                bad += 1;
                if examples.len() < 5 {
                    examples.push(format!(
                        "key {:?}: nutcracker put it on {:?}, ring says {:?}",
                        String::from_utf8_lossy(k),
                        f,
                        want
                    ));
                }
            }
        }
        eprintln!(
            "{}: {} keys, {} mismatches",
            pool.describe(),
            keys.len(),
            bad
        );
        if bad > 0 {
            failures.push(format!(
                "{}: {bad}/{} mismatches, e.g.\n    {}",
                pool.describe(),
                keys.len(),
                examples.join("\n    ")
            ));
        }
    }
    failures
}

fn assign_ports(pools: &mut [PoolCfg]) {
    let mut used = HashSet::new();
    for p in pools.iter_mut() {
        // Bounded retry for distinct ports.
        let mut port = free_port();
        for _ in 0..50 {
            if used.insert(port) {
                break;
            }
            port = free_port();
        }
        p.listen = port;
    }
}

fn pool(
    id: usize,
    hash: HashKind,
    dist: Distribution,
    servers: &[(usize, u32)],
    named: bool,
    tag: Option<[u8; 2]>,
) -> PoolCfg {
    PoolCfg {
        id,
        hash,
        dist,
        servers: servers.to_vec(),
        named,
        tag,
        nkeys: 10_000,
        listen: 0,
    }
}

const EQUAL: [u32; 4] = [1, 1, 1, 1];
const MIXED: [u32; 4] = [1, 3, 2, 7];

/// Full matrix: every hash x {ketama, modula} x {equal, mixed weights} x
/// {unnamed, named servers} x {no tag, "{}"}, 2,000 keys each.
#[test]
fn placement_matches_nutcracker_full_matrix() {
    let _ = nutcracker_bin();
    let dir = temp_dir("matrix");
    let backends = start_backends(4, &dir);
    let mut failures = Vec::new();
    let mut id = 0usize;
    let mut total = 0usize;
    for hash in HashKind::ALL {
        let mut pools = Vec::new();
        for dist in [Distribution::Ketama, Distribution::Modula] {
            for weights in [EQUAL, MIXED] {
                for named in [false, true] {
                    for tag in [None, Some(*b"{}")] {
                        pools.push(PoolCfg {
                            id,
                            hash,
                            dist,
                            servers: weights.iter().copied().enumerate().collect(),
                            named,
                            tag,
                            nkeys: 2000,
                            listen: 0,
                        });
                        id += 1;
                    }
                }
            }
        }
        total += pools.len();
        assign_ports(&mut pools);
        failures.extend(check_pools(&pools, &backends, &dir, hash.name()));
    }
    assert_eq!(total, 192);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {total} pools disagree with nutcracker:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Larger key sets and odd shapes: 10,000 keys per pool, 3-server pools
/// (ketama's float rounding), skewed weights, other tag characters, and
/// servers listed out of port order.
#[test]
fn placement_matches_nutcracker_large_and_odd_pools() {
    let _ = nutcracker_bin();
    let dir = temp_dir("large");
    let backends = start_backends(4, &dir);
    let (k, m) = (Distribution::Ketama, Distribution::Modula);
    let mut pools = vec![
        pool(
            1000,
            HashKind::Fnv1a_64,
            k,
            &[(0, 1), (1, 1), (2, 1), (3, 1)],
            false,
            Some(*b"{}"),
        ),
        // Three equal servers: 1/3 in float arithmetic.
        pool(
            1001,
            HashKind::Murmur,
            k,
            &[(0, 1), (1, 1), (2, 1)],
            false,
            None,
        ),
        pool(
            1002,
            HashKind::Md5,
            k,
            &[(2, 1), (0, 1), (3, 1)],
            true,
            None,
        ),
        pool(
            1003,
            HashKind::OneAtATime,
            k,
            &[(0, 1), (1, 1), (2, 1), (3, 100)],
            false,
            None,
        ),
        pool(
            1004,
            HashKind::Hsieh,
            k,
            &[(3, 5), (1, 9), (0, 17)],
            true,
            Some(*b"::"),
        ),
        pool(
            1005,
            HashKind::Crc32a,
            m,
            &[(0, 10), (1, 1), (2, 3), (3, 1)],
            false,
            Some(*b"<>"),
        ),
        // Listed out of name order: twemproxy re-sorts by name.
        pool(
            1006,
            HashKind::Jenkins,
            m,
            &[(1, 1), (0, 1), (3, 1)],
            true,
            Some(*b"{}"),
        ),
        pool(
            1007,
            HashKind::Fnv1_32,
            k,
            &[(0, 2), (1, 2), (2, 2), (3, 2)],
            true,
            Some(*b"{}"),
        ),
        pool(
            1008,
            HashKind::Crc16,
            m,
            &[(3, 2), (2, 1), (1, 4), (0, 1)],
            false,
            None,
        ),
    ];
    assign_ports(&mut pools);
    let failures = check_pools(&pools, &backends, &dir, "large");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} pools disagree with nutcracker:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The empty key: twemproxy hashes it as 0 without calling the hash
/// function. One key per backend set, so each pool runs alone and the
/// backends are flushed in between.
#[test]
fn empty_key_placement_matches_nutcracker() {
    let _ = nutcracker_bin();
    let dir = temp_dir("empty");
    let backends = start_backends(4, &dir);
    let (k, m) = (Distribution::Ketama, Distribution::Modula);
    let specs = [
        (HashKind::Fnv1a_64, k, [1, 1, 1, 1], false),
        (HashKind::Jenkins, k, [1, 3, 2, 7], true),
        (HashKind::Murmur, m, [1, 3, 2, 7], false),
        (HashKind::Jenkins, m, [2, 1, 1, 1], true),
    ];
    let mut failures = Vec::new();
    for (i, (hash, dist, weights, named)) in specs.into_iter().enumerate() {
        let mut pools = vec![PoolCfg {
            id: 2000 + i,
            hash,
            dist,
            servers: weights.iter().copied().enumerate().collect(),
            named,
            tag: Some(*b"{}"),
            nkeys: 0,
            listen: 0,
        }];
        assign_ports(&mut pools);
        let p = &pools[0];
        let nc = start_nutcracker(&pools, &backends, &dir, &format!("empty{i}"));
        let mut c = Raw::connect_timeout(p.listen, secs(60));
        assert_eq!(c.call(&[b"SET", b"", b"v"]), b"+OK\r\n", "SET ''");
        drop(c);
        drop(nc);
        let found = locate(&[Vec::new()], &backends, &[0, 1, 2, 3]);
        let nodes: Vec<RingNode> = p
            .servers
            .iter()
            .enumerate()
            .map(|(pos, &(b, w))| RingNode {
                identity: if p.named {
                    p.server_name(pos).into_bytes()
                } else {
                    node_identity("127.0.0.1", backends.ports[b], None)
                },
                weight: w,
                live: true,
            })
            .collect();
        let want = Ring::build(hash, dist, &nodes)
            .pick(hash_tag(b"", p.tag))
            .map(|pos| p.servers[pos].0);
        eprintln!(
            "{}: empty key on {:?}, ring says {want:?}",
            p.describe(),
            found[0]
        );
        if found[0].len() != 1 || Some(found[0][0]) != want {
            failures.push(format!(
                "{}: on {:?}, ring says {want:?}",
                p.describe(),
                found[0]
            ));
        }
        for &port in &backends.ports {
            let mut r = Raw::connect_timeout(port, secs(60));
            assert_eq!(r.call(&[b"FLUSHALL"]), b"+OK\r\n", "FLUSHALL");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// libmemcached compatibility: an unnamed server on port 11211 hashes as
/// just "host". Needs 127.0.0.1:11211 free; skipped (with a note) if not.
#[test]
fn port_11211_identity_matches_nutcracker() {
    let _ = nutcracker_bin();
    let dir = temp_dir("11211");
    let free = TcpListener::bind("127.0.0.1:11211").is_ok();
    let started = if free {
        start_redis_on(&dir, Some(11211))
    } else {
        None
    };
    let Some((p11211, port)) = started else {
        eprintln!("SKIP port_11211_identity_matches_nutcracker: 127.0.0.1:11211 is in use");
        return;
    };
    let mut backends = start_backends(3, &dir);
    backends.ports.push(port);
    backends._procs.push(p11211);
    let mut pools = vec![
        pool(
            3000,
            HashKind::Fnv1a_64,
            Distribution::Ketama,
            &[(0, 1), (1, 1), (2, 1), (3, 1)],
            false,
            None,
        ),
        pool(
            3001,
            HashKind::Md5,
            Distribution::Ketama,
            &[(3, 3), (0, 1), (1, 1)],
            false,
            None,
        ),
    ];
    for p in &mut pools {
        p.nkeys = 5000;
    }
    assign_ports(&mut pools);
    let failures = check_pools(&pools, &backends, &dir, "11211");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
