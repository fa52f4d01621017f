//! Chaos soak: 4 redis-servers + the rustproxy binary, client threads with deep pipelines of
//! random SET/GET/INCR/DEL/MGET/MSET/EXISTS on their own keys, checked against an exact
//! per-thread model, while a chaos thread kills / pauses (SIGSTOP/SIGCONT) / restarts backends
//! on the same port and reloads the proxy's configuration (SIGHUP). Bounded time.
//!
//!   cargo run --release --example soak -- --seconds 60 [--threads 4] [--depth 32]
//!
//! The proxy binary is $RUSTPROXY_BIN or target/release/rustproxy. Exits non-zero when a reply
//! contradicts the model ("wrong values"), a reply took more than 10 s ("hung"), or the proxy
//! died. Errors are counted by kind and are never wrong values.
//!
//! Model soundness: each thread owns its keys. A backend's epoch is bumped *before* it is
//! killed, and read *after* a reply arrives, so any reply that could have seen the lost data
//! sees the new epoch: all keys on that backend become unknown; a request sent under an older
//! epoch neither checks nor establishes a value. A write that failed with a timeout may still
//! run later (the backend was paused), so its keys stay "tainted" (never checked) until that
//! backend is next killed; other failed writes just make their keys unknown until rewritten.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustproxy::hash::HashKind;
use rustproxy::resp::{self, Reply};
use rustproxy::ring::{node_identity, Distribution, Ring, RingNode};

const NBACKENDS: usize = 4;
const HANG: Duration = Duration::from_secs(10);
const SKEYS: usize = 100;
const NKEYS: usize = 40;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn wait_port(port: u16, child: &mut Child, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Ok(Some(st)) = child.try_wait() {
            eprintln!("{what} exited before listening on {port}: {st}");
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("{what} did not listen on {port} within 15 s");
    false
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Backend {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Backend {
    fn start(port: u16, dir: PathBuf) -> Backend {
        let mut b = Backend {
            port,
            dir,
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let _ = std::fs::create_dir_all(&self.dir);
        // The port may linger briefly after a kill: retry a few times (bounded).
        for _ in 0..20 {
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    &self.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir.to_str().expect("utf8 dir"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            if wait_port(self.port, &mut child, "redis-server") {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server could not be restarted on {}", self.port);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Shared between the chaos thread and the clients.
struct World {
    /// Bumped before a backend is killed.
    epochs: Vec<AtomicU64>,
    stop: AtomicBool,
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Unknown,
    Known(Option<Vec<u8>>),
}

#[derive(Clone, Debug)]
struct KeyState {
    backend: usize,
    val: Val,
    /// Epoch of the backend when a timed-out write left this key; cleared by the next kill.
    taint: Option<u64>,
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, Vec<u8>),
    Get(usize),
    Incr(usize),
    Del(Vec<usize>),
    Mget(Vec<usize>),
    Mset(Vec<(usize, Vec<u8>)>),
    Exists(Vec<usize>),
}

impl Op {
    fn keys(&self) -> Vec<usize> {
        match self {
            Op::Set(k, _) | Op::Get(k) | Op::Incr(k) => vec![*k],
            Op::Del(ks) | Op::Mget(ks) | Op::Exists(ks) => ks.clone(),
            Op::Mset(kv) => kv.iter().map(|(k, _)| *k).collect(),
        }
    }
    fn writes(&self) -> bool {
        matches!(self, Op::Set(..) | Op::Incr(_) | Op::Del(_) | Op::Mset(_))
    }
}

#[derive(Default, Debug)]
struct Tally {
    requests: u64,
    checked: u64,
    wrong: u64,
    hung: u64,
    reconnects: u64,
    errors: HashMap<String, u64>,
}

fn error_kind(msg: &str) -> String {
    for (needle, kind) in [
        ("timeout", "timeout"),
        ("stalled", "stalled"),
        ("connection closed by the backend", "backend closed"),
        ("read error", "backend read error"),
        ("write error", "backend write error"),
        ("down", "backend down"),
        ("connect", "connect failed"),
        ("no backend", "no backend"),
        ("ejected", "ejected"),
    ] {
        if msg.contains(needle) {
            return kind.to_string();
        }
    }
    let short: String = msg.chars().take(60).collect();
    format!("other: {short}")
}

struct ClientThread {
    id: usize,
    names: Vec<Vec<u8>>,
    keys: Vec<KeyState>,
    seen: Vec<u64>,
    rng: Rng,
    tally: Tally,
    world: Arc<World>,
    port: u16,
    depth: usize,
    wrong_log: Vec<String>,
}

impl ClientThread {
    fn gen_op(&mut self) -> Op {
        let r = &mut self.rng;
        let any = |r: &mut Rng| r.below(SKEYS + NKEYS);
        let skey = |r: &mut Rng| r.below(SKEYS);
        let nkey = |r: &mut Rng| SKEYS + r.below(NKEYS);
        let val = |r: &mut Rng| format!("v{}", r.next() % 100_000).into_bytes();
        match r.below(14) {
            0..=2 => {
                let k = skey(r);
                Op::Set(k, val(r))
            }
            3 => {
                let k = nkey(r);
                Op::Set(k, (r.next() % 1000).to_string().into_bytes())
            }
            4..=6 => Op::Get(any(r)),
            7 | 8 => Op::Incr(nkey(r)),
            9 => {
                let n = 1 + r.below(3);
                Op::Del((0..n).map(|_| any(r)).collect())
            }
            10 | 11 => {
                let n = 1 + r.below(8);
                Op::Mget((0..n).map(|_| any(r)).collect())
            }
            12 => {
                let n = 1 + r.below(4);
                Op::Mset((0..n).map(|_| (skey(r), val(r))).collect())
            }
            _ => {
                let n = 1 + r.below(4);
                Op::Exists((0..n).map(|_| any(r)).collect())
            }
        }
    }

    fn encode(&self, op: &Op, out: &mut Vec<u8>) {
        let n = |k: &usize| &self.names[*k][..];
        let mut args: Vec<&[u8]> = Vec::new();
        match op {
            Op::Set(k, v) => args.extend([&b"SET"[..], n(k), v]),
            Op::Get(k) => args.extend([&b"GET"[..], n(k)]),
            Op::Incr(k) => args.extend([&b"INCR"[..], n(k)]),
            Op::Del(ks) => {
                args.push(b"DEL");
                args.extend(ks.iter().map(n));
            }
            Op::Mget(ks) => {
                args.push(b"MGET");
                args.extend(ks.iter().map(n));
            }
            Op::Exists(ks) => {
                args.push(b"EXISTS");
                args.extend(ks.iter().map(n));
            }
            Op::Mset(kv) => {
                args.push(b"MSET");
                for (k, v) in kv {
                    args.push(n(k));
                    args.push(v);
                }
            }
        }
        resp::write_command(out, args);
    }

    /// Apply kills seen since the last reply: keys on a killed backend become unknown.
    fn observe_epochs(&mut self) {
        for b in 0..NBACKENDS {
            let e = self.world.epochs[b].load(Ordering::SeqCst);
            if e != self.seen[b] {
                self.seen[b] = e;
                for ks in self.keys.iter_mut().filter(|ks| ks.backend == b) {
                    ks.val = Val::Unknown;
                    if ks.taint.is_some_and(|t| t < e) {
                        ks.taint = None;
                    }
                }
            }
        }
    }

    /// Checkable: known, untainted, and its backend not killed since the request was sent.
    fn checkable(&self, k: usize, sent: &[u64]) -> Option<Option<Vec<u8>>> {
        let ks = &self.keys[k];
        if ks.taint.is_some() || sent[ks.backend] != self.seen[ks.backend] {
            return None;
        }
        match &ks.val {
            Val::Known(v) => Some(v.clone()),
            Val::Unknown => None,
        }
    }

    fn stable(&self, k: usize, sent: &[u64]) -> bool {
        let b = self.keys[k].backend;
        sent[b] == self.seen[b]
    }

    fn set_val(&mut self, k: usize, v: Option<Vec<u8>>, sent: &[u64]) {
        let stable = self.stable(k, sent);
        self.keys[k].val = if stable { Val::Known(v) } else { Val::Unknown };
    }

    fn wrong(&mut self, op: &Op, reply: &[u8], why: String) {
        self.tally.wrong += 1;
        if self.wrong_log.len() < 10 {
            let names: Vec<String> = op
                .keys()
                .iter()
                .map(|k| String::from_utf8_lossy(&self.names[*k]).into_owned())
                .collect();
            self.wrong_log.push(format!(
                "thread {}: {op:?} keys {names:?} -> {:?}: {why}",
                self.id,
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            ));
        }
    }

    /// The request's outcome is unknown (error, hang, lost connection).
    fn failed(&mut self, op: &Op, may_run_later: bool) {
        if !op.writes() {
            return;
        }
        for k in op.keys() {
            let b = self.keys[k].backend;
            self.keys[k].val = Val::Unknown;
            if may_run_later {
                self.keys[k].taint = Some(self.seen[b]);
            }
        }
    }

    fn check(&mut self, op: &Op, reply: &[u8], sent: &[u64]) {
        self.observe_epochs();
        let parsed = match resp::parse_reply(reply) {
            Ok(Some((r, _))) => r,
            _ => return self.wrong(op, reply, "unparsable reply".into()),
        };
        if let Reply::Error(e) = &parsed {
            let msg = String::from_utf8_lossy(e).into_owned();
            let kind = error_kind(&msg);
            *self.tally.errors.entry(kind.clone()).or_default() += 1;
            let later = kind == "timeout" || kind == "stalled" || kind.starts_with("other");
            return self.failed(op, later);
        }
        self.tally.checked += 1;
        match op {
            Op::Set(k, v) => {
                if parsed != Reply::Simple(b"OK") {
                    return self.wrong(op, reply, "SET not +OK".into());
                }
                self.set_val(*k, Some(v.clone()), sent);
            }
            Op::Get(k) => {
                let got = match parsed {
                    Reply::Bulk(v) => Some(v.to_vec()),
                    Reply::Nil => None,
                    _ => return self.wrong(op, reply, "GET reply type".into()),
                };
                if let Some(want) = self.checkable(*k, sent) {
                    if want != got {
                        self.wrong(
                            op,
                            reply,
                            format!(
                                "want {:?}",
                                want.map(|w| String::from_utf8_lossy(&w).into_owned())
                            ),
                        );
                    }
                }
                if self.stable(*k, sent) && self.keys[*k].taint.is_none() {
                    self.keys[*k].val = Val::Known(got);
                }
            }
            Op::Incr(k) => {
                let Reply::Integer(n) = parsed else {
                    return self.wrong(op, reply, "INCR reply type".into());
                };
                if let Some(cur) = self.checkable(*k, sent) {
                    let cur: i64 = cur
                        .map(|c| String::from_utf8_lossy(&c).parse().unwrap_or(i64::MIN))
                        .unwrap_or(0);
                    if cur.checked_add(1) != Some(n) {
                        self.wrong(op, reply, format!("want {}", cur.wrapping_add(1)));
                    }
                }
                self.set_val(*k, Some(n.to_string().into_bytes()), sent);
            }
            Op::Del(ks) | Op::Exists(ks) => {
                let Reply::Integer(n) = parsed else {
                    return self.wrong(op, reply, "integer reply type".into());
                };
                let del = matches!(op, Op::Del(_));
                let vals: Option<Vec<Option<Vec<u8>>>> =
                    ks.iter().map(|k| self.checkable(*k, sent)).collect();
                if let Some(vals) = vals {
                    let want = if del {
                        let mut uniq: Vec<usize> = ks.clone();
                        uniq.sort_unstable();
                        uniq.dedup();
                        uniq.iter()
                            .filter(|k| self.checkable(**k, sent).flatten().is_some())
                            .count()
                    } else {
                        vals.iter().filter(|v| v.is_some()).count()
                    };
                    if want as i64 != n {
                        self.wrong(op, reply, format!("want {want}"));
                    }
                }
                if del {
                    for &k in ks {
                        self.set_val(k, None, sent);
                    }
                }
            }
            Op::Mget(ks) => {
                let Reply::Array(items) = parsed else {
                    return self.wrong(op, reply, "MGET reply type".into());
                };
                if items.len() != ks.len() {
                    return self.wrong(op, reply, "MGET length".into());
                }
                for (k, it) in ks.iter().zip(items) {
                    let got = match it {
                        Reply::Bulk(v) => Some(v.to_vec()),
                        Reply::Nil => None,
                        _ => return self.wrong(op, reply, "MGET element type".into()),
                    };
                    if let Some(want) = self.checkable(*k, sent) {
                        if want != got {
                            return self.wrong(
                                op,
                                reply,
                                format!(
                                    "key {k} want {:?}",
                                    want.map(|w| String::from_utf8_lossy(&w).into_owned())
                                ),
                            );
                        }
                    }
                }
            }
            Op::Mset(kv) => {
                if parsed != Reply::Simple(b"OK") {
                    return self.wrong(op, reply, "MSET not +OK".into());
                }
                for (k, v) in kv {
                    self.set_val(*k, Some(v.clone()), sent);
                }
            }
        }
    }

    fn connect(&self) -> Option<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(HANG)).ok()?;
        s.set_nodelay(true).ok()?;
        Some(s)
    }

    fn run(&mut self, deadline: Instant) {
        let mut conn = self.connect();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while Instant::now() < deadline && !self.world.stop.load(Ordering::Relaxed) {
            let Some(s) = conn.as_mut() else {
                self.tally.reconnects += 1;
                thread::sleep(Duration::from_millis(100));
                conn = self.connect();
                continue;
            };
            let ops: Vec<Op> = (0..1 + self.rng.below(self.depth))
                .map(|_| self.gen_op())
                .collect();
            out.clear();
            for op in &ops {
                self.encode(op, &mut out);
            }
            let sent: Vec<u64> = self
                .world
                .epochs
                .iter()
                .map(|e| e.load(Ordering::SeqCst))
                .collect();
            self.tally.requests += ops.len() as u64;
            if s.write_all(&out).is_err() {
                *self
                    .tally
                    .errors
                    .entry("client write failed".into())
                    .or_default() += 1;
                for op in &ops {
                    self.failed(op, true);
                }
                conn = None;
                continue;
            }
            buf.clear();
            let mut done = 0;
            let mut broken = false;
            let mut last = Instant::now();
            while done < ops.len() {
                if let Ok(Some(n)) = resp::reply_len(&buf) {
                    let reply: Vec<u8> = buf.drain(..n).collect();
                    self.check(&ops[done], &reply, &sent);
                    done += 1;
                    last = Instant::now();
                    continue;
                }
                let mut tmp = [0u8; 65536];
                match s.read(&mut tmp) {
                    Ok(0) => {
                        *self
                            .tally
                            .errors
                            .entry("proxy closed the connection".into())
                            .or_default() += 1;
                        broken = true;
                        break;
                    }
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if last.elapsed() >= HANG {
                            self.tally.hung += (ops.len() - done) as u64;
                            eprintln!(
                                "thread {}: {} replies not received within {:?}",
                                self.id,
                                ops.len() - done,
                                HANG
                            );
                            broken = true;
                            break;
                        }
                    }
                    Err(e) => {
                        *self
                            .tally
                            .errors
                            .entry(format!("client read: {}", e.kind()))
                            .or_default() += 1;
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                for op in &ops[done..] {
                    self.failed(op, true);
                }
                conn = None;
            }
        }
    }
}

fn arg_value(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = arg_value(&args, "--seconds", 60);
    let nthreads = arg_value(&args, "--threads", 4) as usize;
    let depth = arg_value(&args, "--depth", 32).max(1) as usize;
    let seed = arg_value(&args, "--seed", 0x5eed_1234);
    let bin = std::env::var("RUSTPROXY_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/rustproxy").to_string()
    });
    if !std::path::Path::new(&bin).exists() {
        eprintln!("proxy binary {bin} not found (cargo build --release, or set RUSTPROXY_BIN)");
        std::process::exit(2);
    }
    let root = std::env::temp_dir().join(format!("rustproxy-soak-{}", std::process::id()));
    let mut backends: Vec<Backend> = (0..NBACKENDS)
        .map(|i| Backend::start(free_port(), root.join(format!("redis-{i}"))))
        .collect();
    let ports: Vec<u16> = backends.iter().map(|b| b.port).collect();
    let listen = free_port();
    let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let _ = std::fs::create_dir_all(&root);
    let log = std::fs::File::create(root.join("proxy.log")).expect("proxy log");
    // A config file, so the chaos can also reload it (SIGHUP) under load.
    let conf = root.join("proxy.conf");
    let write_conf = |timeout: u32| {
        let mut text = format!("pool soak\n    listen 127.0.0.1:{listen}\n    timeout {timeout}\n");
        for l in &list {
            text.push_str(&format!("    server {l}\n"));
        }
        std::fs::write(&conf, text).expect("write proxy.conf");
    };
    write_conf(1000);
    let mut proxy = Command::new(&bin)
        .args(["-c", conf.to_str().expect("utf-8 temp path")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rustproxy");
    if !wait_port(listen, &mut proxy, "rustproxy") {
        let _ = proxy.kill();
        std::process::exit(2);
    }
    let proxy_pid = proxy.id();
    println!(
        "soak: {seconds}s, {nthreads} client threads, pipelines up to {depth}, backends {ports:?}, proxy pid {proxy_pid} on {listen}"
    );

    // Placement as the proxy computes it (defaults: fnv1a_64, ketama, no ejection).
    let nodes: Vec<RingNode> = ports
        .iter()
        .map(|&p| RingNode {
            identity: node_identity("127.0.0.1", p, None),
            weight: 1,
            live: true,
        })
        .collect();
    let ring = Ring::build(HashKind::Fnv1a_64, Distribution::Ketama, &nodes);

    let world = Arc::new(World {
        epochs: (0..NBACKENDS).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);

    // RSS sampler.
    let samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sampler = {
        let (samples, world) = (samples.clone(), world.clone());
        thread::spawn(move || {
            let end = deadline + Duration::from_secs(15);
            while !world.stop.load(Ordering::Relaxed) && Instant::now() < end {
                samples.lock().unwrap().push(rss_kb(proxy_pid));
                thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let mut clients = Vec::new();
    for t in 0..nthreads {
        let names: Vec<Vec<u8>> = (0..SKEYS)
            .map(|i| format!("soak:{t}:s{i}").into_bytes())
            .chain((0..NKEYS).map(|i| format!("soak:{t}:n{i}").into_bytes()))
            .collect();
        let keys = names
            .iter()
            .map(|n| KeyState {
                backend: ring.pick(n).expect("ring has live nodes"),
                // Fresh backends: every key starts absent.
                val: Val::Known(None),
                taint: None,
            })
            .collect();
        let mut c = ClientThread {
            id: t,
            names,
            keys,
            seen: vec![0; NBACKENDS],
            rng: Rng(seed ^ ((t as u64 + 1) * 0x9E37_79B9_7F4A_7C15)),
            tally: Tally::default(),
            world: world.clone(),
            port: listen,
            depth,
            wrong_log: Vec::new(),
        };
        clients.push(thread::spawn(move || {
            c.run(deadline);
            (c.tally, c.wrong_log)
        }));
    }

    // Chaos, in this thread: one disturbance at a time, every 2-4 s, bounded by the deadline.
    let mut rng = Rng(seed ^ 0xC4A05);
    let mut actions: Vec<String> = Vec::new();
    let sleep_until = |t: Instant| {
        while Instant::now() < t.min(deadline) {
            thread::sleep(Duration::from_millis(20));
        }
    };
    sleep_until(Instant::now() + Duration::from_secs(2));
    while Instant::now() + Duration::from_secs(3) < deadline {
        let b = rng.below(NBACKENDS);
        let at = start.elapsed().as_secs_f32();
        match rng.below(4) {
            3 => {
                // Reload with a changed timeout (membership unchanged, so placement too).
                let t = if rng.below(2) == 0 { 1000 } else { 1500 };
                write_conf(t);
                signal(proxy_pid, "HUP");
                actions.push(format!("{at:.1}s reload (timeout {t} ms)"));
            }
            0 => {
                world.epochs[b].fetch_add(1, Ordering::SeqCst);
                backends[b].kill();
                thread::sleep(Duration::from_millis(200 + rng.below(800) as u64));
                backends[b].spawn();
                actions.push(format!("{at:.1}s kill+restart b{b}"));
            }
            1 => {
                if let Some(pid) = backends[b].pid() {
                    let ms = 300 + rng.below(2200) as u64;
                    signal(pid, "STOP");
                    thread::sleep(Duration::from_millis(ms));
                    signal(pid, "CONT");
                    actions.push(format!("{at:.1}s pause b{b} {ms}ms"));
                }
            }
            _ => {
                world.epochs[b].fetch_add(1, Ordering::SeqCst);
                backends[b].kill();
                let ms = 1000 + rng.below(2000) as u64;
                thread::sleep(Duration::from_millis(ms));
                backends[b].spawn();
                actions.push(format!("{at:.1}s down b{b} {ms}ms"));
            }
        }
        sleep_until(Instant::now() + Duration::from_millis(2000 + rng.below(2000) as u64));
    }

    let mut total = Tally::default();
    let mut wrong_log = Vec::new();
    for c in clients {
        match c.join() {
            Ok((t, w)) => {
                total.requests += t.requests;
                total.checked += t.checked;
                total.wrong += t.wrong;
                total.hung += t.hung;
                total.reconnects += t.reconnects;
                for (k, v) in t.errors {
                    *total.errors.entry(k).or_default() += v;
                }
                wrong_log.extend(w);
            }
            Err(_) => {
                eprintln!("a client thread panicked");
                total.wrong += 1;
            }
        }
    }
    // Let the proxy settle, then one more RSS sample.
    thread::sleep(Duration::from_secs(1));
    let end_rss = rss_kb(proxy_pid);
    world.stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let proxy_alive = matches!(proxy.try_wait(), Ok(None));
    let _ = proxy.kill();
    let _ = proxy.wait();
    let plog = std::fs::read_to_string(root.join("proxy.log")).unwrap_or_default();
    let panicked = plog.contains("panicked");
    drop(backends);

    let s = samples.lock().unwrap();
    let (rss_start, rss_max) = (
        s.first().copied().unwrap_or(0),
        s.iter().copied().max().unwrap_or(0),
    );
    println!("chaos: {} actions", actions.len());
    for a in &actions {
        println!("  {a}");
    }
    println!(
        "requests: {}  (replies checked/applied: {})",
        total.requests, total.checked
    );
    let mut errs: Vec<_> = total.errors.iter().collect();
    errs.sort();
    let nerr: u64 = total.errors.values().sum();
    println!("errors: {nerr}");
    for (k, v) in errs {
        println!("  {k}: {v}");
    }
    println!("client reconnects: {}", total.reconnects);
    println!("wrong values: {}", total.wrong);
    for w in &wrong_log {
        println!("  {w}");
    }
    println!("hung requests (> {}s): {}", HANG.as_secs(), total.hung);
    println!("proxy RSS KiB: start {rss_start}, max {rss_max}, end {end_rss}");
    println!("proxy alive at end: {proxy_alive}; panic in proxy log: {panicked}");
    if panicked {
        for l in plog.lines().filter(|l| l.contains("panicked")).take(5) {
            println!("  {l}");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    if total.wrong > 0 || total.hung > 0 || !proxy_alive || panicked {
        println!("SOAK FAILED");
        std::process::exit(1);
    }
    println!("SOAK OK");
}
