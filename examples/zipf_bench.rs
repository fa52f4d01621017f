//! A Zipf-distributed GET load against one or more proxies (or Redis), for the hot-key
//! figures of README "Hot keys": throughput, p99 latency and backend GETs per second per
//! target, targets alternated within each round (redis-benchmark draws keys uniformly, so it
//! cannot make a hot key workload other than a single key).
//!
//! ```text
//! cargo run --release --example zipf_bench -- --targets off=6380,on=6381 \
//!     --backends 7001,7002,7003,7004 [--keys 1000000] [--s 1.1] [--conns 8] \
//!     [--pipeline 16] [--secs 5] [--rounds 3] [--populate]
//! ```
//!
//! `--populate` first SETs every key (32-byte values) through the first target. Backend GETs
//! per second come from the backends' `INFO commandstats` (`cmdstat_get` calls) before and
//! after each run. Loopback only; every socket has a timeout, so a stuck target ends the run
//! with an error instead of hanging.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_nodelay(true).ok();
    s
}

fn cmd(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Read one reply (simple, error, integer, bulk; arrays are not expected here).
fn read_reply(r: &mut BufReader<TcpStream>, line: &mut String) -> Result<Vec<u8>, String> {
    line.clear();
    r.read_line(line).map_err(|e| format!("read: {e}"))?;
    match line.as_bytes().first() {
        Some(b'$') => {
            let n: i64 = line[1..].trim().parse().map_err(|_| "bad bulk length")?;
            if n < 0 {
                return Ok(Vec::new());
            }
            let mut v = vec![0; n as usize + 2];
            r.read_exact(&mut v).map_err(|e| format!("read: {e}"))?;
            v.truncate(n as usize);
            Ok(v)
        }
        Some(b'+') | Some(b':') => Ok(line.trim_end().as_bytes().to_vec()),
        Some(b'-') => Err(format!("error reply: {}", line.trim_end())),
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

/// `cmdstat_get` calls of a Redis.
fn get_calls(port: u16) -> u64 {
    let s = connect(port);
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut req = Vec::new();
    cmd(&mut req, &[b"INFO", b"commandstats"]);
    (&s).write_all(&req).expect("write");
    let mut line = String::new();
    let text = read_reply(&mut r, &mut line).expect("INFO");
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Xorshift(u64);
impl Xorshift {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Opts {
    targets: Vec<(String, u16)>,
    backends: Vec<u16>,
    keys: usize,
    s: f64,
    conns: usize,
    pipeline: usize,
    secs: u64,
    rounds: usize,
    populate: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        targets: Vec::new(),
        backends: Vec::new(),
        keys: 1_000_000,
        s: 1.1,
        conns: 8,
        pipeline: 16,
        secs: 5,
        rounds: 3,
        populate: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        let num = |v: &str| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("bad number {v}"))
        };
        match args[i].as_str() {
            "--targets" => {
                for t in v.split(',') {
                    let (n, p) = t.split_once('=').expect("--targets name=port,...");
                    o.targets.push((n.to_string(), num(p) as u16));
                }
            }
            "--backends" => o.backends = v.split(',').map(|p| num(p) as u16).collect(),
            "--keys" => o.keys = num(&v) as usize,
            "--s" => o.s = v.parse().expect("--s"),
            "--conns" => o.conns = num(&v) as usize,
            "--pipeline" => o.pipeline = num(&v).max(1) as usize,
            "--secs" => o.secs = num(&v),
            "--rounds" => o.rounds = num(&v) as usize,
            "--populate" => {
                o.populate = true;
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    assert!(!o.targets.is_empty(), "--targets name=port,... is required");
    o
}

/// Run the load on `port` for `secs`: (requests, p99 latency in µs).
fn run(port: u16, o: &Opts, cdf: &Arc<Vec<f64>>) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(o.secs);
    let threads: Vec<_> = (0..o.conns)
        .map(|t| {
            let (cdf, pipeline) = (Arc::clone(cdf), o.pipeline);
            std::thread::spawn(move || {
                let s = connect(port);
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) << 32));
                let (mut done, mut lat) = (0u64, Vec::new());
                let (mut req, mut line) = (Vec::new(), String::new());
                while Instant::now() < deadline {
                    req.clear();
                    for _ in 0..pipeline {
                        let u = rng.unit();
                        let rank = cdf.partition_point(|&x| x < u);
                        cmd(&mut req, &[b"GET", format!("z:{rank}").as_bytes()]);
                    }
                    let t0 = Instant::now();
                    (&s).write_all(&req).expect("write");
                    for _ in 0..pipeline {
                        read_reply(&mut r, &mut line).expect("GET");
                    }
                    lat.push(t0.elapsed().as_micros() as u64);
                    done += pipeline as u64;
                }
                (done, lat)
            })
        })
        .collect();
    let (mut total, mut lat) = (0, Vec::new());
    for t in threads {
        let (n, l) = t.join().expect("load thread");
        total += n;
        lat.extend(l);
    }
    lat.sort_unstable();
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0);
    (total, p99)
}

fn main() {
    let o = opts();
    let mut cdf = Vec::with_capacity(o.keys);
    let mut sum = 0.0;
    for i in 1..=o.keys {
        sum += 1.0 / (i as f64).powf(o.s);
        cdf.push(sum);
    }
    for x in &mut cdf {
        *x /= sum;
    }
    let cdf = Arc::new(cdf);
    if o.populate {
        let s = connect(o.targets[0].1);
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let (mut req, mut line) = (Vec::new(), String::new());
        let value = [b'v'; 32];
        for chunk in (0..o.keys).collect::<Vec<_>>().chunks(1000) {
            req.clear();
            for k in chunk {
                cmd(&mut req, &[b"SET", format!("z:{k}").as_bytes(), &value]);
            }
            (&s).write_all(&req).expect("write");
            for _ in chunk {
                read_reply(&mut r, &mut line).expect("SET");
            }
        }
        eprintln!("populated {} keys", o.keys);
    }
    // Per target: (req/s, p99 µs, backend GETs/s) of each round.
    let mut results: Vec<Vec<(f64, u64, f64)>> = vec![Vec::new(); o.targets.len()];
    for round in 0..o.rounds {
        let mut order: Vec<usize> = (0..o.targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, port) = &o.targets[i];
            let before: u64 = o.backends.iter().map(|&p| get_calls(p)).sum();
            let t0 = Instant::now();
            let (n, p99) = run(*port, &o, &cdf);
            let secs = t0.elapsed().as_secs_f64();
            let after: u64 = o.backends.iter().map(|&p| get_calls(p)).sum();
            let r = (
                n as f64 / secs,
                p99,
                after.saturating_sub(before) as f64 / secs,
            );
            eprintln!(
                "round {round} {name}: {:.0} req/s, p99 {} us, backend GETs {:.0}/s",
                r.0, r.1, r.2
            );
            results[i].push(r);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "Zipf({}) over {} keys, {} connections x pipeline {}, {} s x {} rounds (medians)\n",
        o.s, o.keys, o.conns, o.pipeline, o.secs, o.rounds
    );
    println!("| target | req/s | p99 per pipeline (ms) | backend GETs/s |");
    println!("|---|---|---|---|");
    for (i, (name, _)) in o.targets.iter().enumerate() {
        let r = &results[i];
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} |",
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1 as f64).collect()) / 1000.0,
            median(r.iter().map(|x| x.2).collect())
        );
    }
}
