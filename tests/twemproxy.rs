//! rustproxy as a drop-in replacement for twemproxy (nutcracker 0.5.0), end to end:
//! the same YAML through both proxies places every key on the same backend; nutcracker's
//! fixtures and flags are accepted; `--convert` keeps placement.
//!
//! Real redis-server and /usr/sbin/nutcracker processes on free loopback ports, killed by
//! PID on drop; every wait is bounded; no durations are asserted.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    bulk, free_port, secs, tmp_dir, wait_file_text, wait_listening, wait_port, Proxy, Raw, Redis,
};

const NUTCRACKER: &str = "/usr/sbin/nutcracker";

// ---------------------------------------------------------------------------------------------
// The RESP client: common's `Raw`, with nutcracker-sized timeouts and pipeline batches.

/// Commands per pipelined write.
const BATCH: usize = 2000;

fn resp(port: u16) -> Raw {
    Raw::connect_timeout(port, secs(30))
}

// ---------------------------------------------------------------------------------------------
// Processes

struct Nut {
    child: Child,
    port: u16,
}

impl Drop for Nut {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nutcracker with `conf` (its listen port `port`) and a stats port of its own.
fn start_nutcracker(conf: &Path, port: u16, log: &Path) -> Nut {
    let stats = free_port(); // its own stats port: the default 22222 may be taken
    let mut child = Command::new(NUTCRACKER)
        .args(["-c", conf.to_str().unwrap()])
        .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
        .args(["-o", log.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start /usr/sbin/nutcracker (apt-get install nutcracker)");
    wait_port(port, &mut child, "nutcracker");
    Nut { child, port }
}

fn rustproxy_conf(conf: &Path, port: u16) -> Proxy {
    Proxy::spawn(port, &["-c".into(), conf.to_string_lossy().into_owned()])
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rustproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Keys

/// Deterministic key mix: ASCII, binary (bytes >= 0x80, even CR/LF/NUL), hash-tagged
/// (`{...}` in the middle, at the start, empty `{}`, unbalanced `{`), long-ish.
fn keys(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let r = next();
        let k: Vec<u8> = match i % 8 {
            0 | 1 => format!("key:{i}").into_bytes(),
            2 => {
                // binary, at least one byte >= 0x80
                let len = 1 + (r % 24) as usize;
                let mut v: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
                v[0] |= 0x80;
                v
            }
            3 => format!("user:{{{}}}:field{}", r % 500, i).into_bytes(),
            4 => format!("{{tag{}}}rest{i}", r % 97).into_bytes(),
            5 => {
                let mut v = b"bin{".to_vec();
                v.extend_from_slice(&[0xc3, 0xa9, (r & 0xff) as u8 | 0x80]);
                v.extend_from_slice(format!("}}:{i}").as_bytes());
                v
            }
            6 => format!("empty{{}}tag:{i}").into_bytes(),
            _ => format!("unbalanced{{open:{i}:{}", "x".repeat((r % 40) as usize)).into_bytes(),
        };
        out.push(k);
    }
    // Distinct keys only (binary ones could collide).
    let mut seen = std::collections::HashSet::new();
    out.retain(|k| seen.insert(k.clone()));
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Placement parity matrix

const HASHES: [&str; 12] = [
    "one_at_a_time",
    "md5",
    "crc16",
    "crc32",
    "crc32a",
    "fnv1_64",
    "fnv1a_64",
    "fnv1_32",
    "fnv1a_32",
    "hsieh",
    "murmur",
    "jenkins",
];

struct Case {
    hash: &'static str,
    dist: &'static str,
    weights: Vec<u32>,
    named: bool,
    tag: bool,
}

impl Case {
    fn describe(&self) -> String {
        format!(
            "{:<13} {:<6} w={:<9} {:<5} {}",
            self.hash,
            self.dist,
            self.weights
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(","),
            if self.named { "named" } else { "-" },
            if self.tag { "tag{}" } else { "-" }
        )
    }

    fn yaml(&self, listen: u16, servers: &[Redis]) -> String {
        let mut y = format!(
            "parity:\n  listen: 127.0.0.1:{listen}\n  hash: {}\n  distribution: {}\n  redis: true\n  auto_eject_hosts: false\n  timeout: 30000\n",
            self.hash, self.dist
        );
        if self.tag {
            y.push_str("  hash_tag: \"{}\"\n");
        }
        y.push_str("  servers:\n");
        for (i, s) in servers.iter().enumerate() {
            if self.named {
                y.push_str(&format!(
                    "   - {}:{} redis-shard-{i}\n",
                    s.addr(),
                    self.weights[i]
                ));
            } else {
                y.push_str(&format!("   - {}:{}\n", s.addr(), self.weights[i]));
            }
        }
        y
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (hi, hash) in HASHES.iter().enumerate() {
        for (di, dist) in ["ketama", "modula"].iter().enumerate() {
            let n = hi * 2 + di;
            let weights = match n % 3 {
                0 => vec![1, 1, 1, 1],
                1 => vec![1, 2, 3, 1],
                _ => vec![5, 1, 2, 10],
            };
            v.push(Case {
                hash,
                dist,
                weights,
                named: (n / 2) % 2 == 1 || n % 5 == 0,
                tag: n % 4 < 2,
            });
        }
    }
    v
}

fn flushall(servers: &[Redis]) {
    for s in servers {
        assert_eq!(resp(s.port).call(&[b"FLUSHALL"]), b"+OK\r\n");
    }
}

#[test]
fn placement_parity_matrix_through_both_proxies() {
    let servers = common::redises(4);
    let dir = tmp_dir("parity");
    let cases = cases();
    assert!(cases.len() >= 12);
    let mut table = Vec::new();
    let mut failures = Vec::new();
    const NKEYS: usize = 10_000;
    for (ci, case) in cases.iter().enumerate() {
        flushall(&servers);
        let (np, rp) = (free_port(), free_port());
        let ny = dir.join(format!("nut-{ci}.yml"));
        let ry = dir.join(format!("rust-{ci}.yml"));
        std::fs::write(&ny, case.yaml(np, &servers)).unwrap();
        std::fs::write(&ry, case.yaml(rp, &servers)).unwrap();
        let nut = start_nutcracker(&ny, np, &dir.join(format!("nut-{ci}.log")));
        let proxy = rustproxy_conf(&ry, rp);

        // Keys need some margin: duplicates among binary keys are removed.
        let ks: Vec<Vec<u8>> = keys(NKEYS + 200, ci as u64 + 1)
            .into_iter()
            .take(NKEYS)
            .collect();
        assert_eq!(ks.len(), NKEYS);
        let val = |i: usize| format!("v{ci}:{i}").into_bytes();

        // Write through nutcracker.
        let mut nc = resp(nut.port);
        let sets: Vec<Vec<Vec<u8>>> = ks
            .iter()
            .enumerate()
            .map(|(i, k)| vec![b"SET".to_vec(), k.clone(), val(i)])
            .collect();
        for (i, r) in nc.pipeline(&sets, BATCH).iter().enumerate() {
            assert_eq!(
                r,
                b"+OK\r\n",
                "{}: SET #{i} via nutcracker",
                case.describe()
            );
        }

        // Where each key is, by EXISTS on direct connections.
        let exists: Vec<Vec<Vec<u8>>> = ks
            .iter()
            .map(|k| vec![b"EXISTS".to_vec(), k.clone()])
            .collect();
        let mut holder: Vec<Vec<usize>> = vec![Vec::new(); ks.len()];
        for (b, s) in servers.iter().enumerate() {
            let mut c = resp(s.port);
            for (i, r) in c.pipeline(&exists, BATCH).iter().enumerate() {
                if r == b":1\r\n" {
                    holder[i].push(b);
                }
            }
        }

        // rustproxy: BACKENDNUM and GET.
        let mut rc = resp(proxy.port);
        let nums: Vec<Vec<Vec<u8>>> = ks
            .iter()
            .map(|k| vec![b"BACKENDNUM".to_vec(), k.clone()])
            .collect();
        let gets: Vec<Vec<Vec<u8>>> = ks
            .iter()
            .map(|k| vec![b"GET".to_vec(), k.clone()])
            .collect();
        let bn = rc.pipeline(&nums, BATCH);
        let gv = rc.pipeline(&gets, BATCH);
        let (mut placed, mut found) = (0usize, 0usize);
        for i in 0..ks.len() {
            let ok_place =
                holder[i].len() == 1 && bn[i] == format!(":{}\r\n", holder[i][0]).as_bytes();
            let ok_get = gv[i] == bulk(&val(i));
            placed += ok_place as usize;
            found += ok_get as usize;
            if (!ok_place || !ok_get) && failures.len() < 20 {
                failures.push(format!(
                    "{}: key {:?} held by {:?}, BACKENDNUM {:?}, GET {:?}",
                    case.describe(),
                    String::from_utf8_lossy(&ks[i]),
                    holder[i],
                    bn[i],
                    gv[i]
                ));
            }
        }
        let pct = |n: usize| 100.0 * n as f64 / ks.len() as f64;
        table.push(format!(
            "{:>2}  {}  keys={}  placement={:6.2}%  found={:6.2}%",
            ci,
            case.describe(),
            ks.len(),
            pct(placed),
            pct(found)
        ));
        drop(proxy);
        drop(nut);
    }
    eprintln!("\nplacement parity, nutcracker 0.5.0 vs rustproxy (same YAML):");
    eprintln!(
        "{:>2}  {:<13} {:<6} {:<11} {:<5} {:<5}",
        "#", "hash", "dist", "weights", "names", "tag"
    );
    for row in &table {
        eprintln!("{row}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "placement/GET mismatches:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. nutcracker fixtures parse; memcached refused; malformed YAML names file:line

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn nutcracker_fixtures_parse_and_errors_name_file_and_line() {
    let (code, out, err) = run(&["-t", "-c", &fixture("nutcracker.yml")]);
    assert_eq!(code, 0, "nutcracker.yml: {out}{err}");
    assert!(out.contains("syntax is ok"), "{out}");

    // The real nutcracker accepts the same fixture (its -t).
    let n = Command::new(NUTCRACKER)
        .args(["-t", "-c", &fixture("nutcracker.yml")])
        .output()
        .expect("run nutcracker -t");
    assert!(
        n.status.success(),
        "nutcracker -t itself: {}",
        String::from_utf8_lossy(&n.stderr)
    );

    let (code, out, err) = run(&["-t", "-c", &fixture("nutcracker-memcached.yml")]);
    assert_eq!(code, 1, "memcached pool must be refused: {out}{err}");
    assert!(err.contains("memcached"), "message should say why: {err}");
    assert!(
        err.contains("redis: true"),
        "message should say how to fix: {err}"
    );
    assert!(err.contains("nutcracker-memcached.yml:"), "{err}");

    let dir = tmp_dir("yaml-errors");
    // (text, line of the error)
    let bad: &[(&str, usize)] = &[
        // tab in indentation
        ("alpha:\n  listen: 127.0.0.1:1\n\tredis: true\n  servers:\n   - 127.0.0.1:2:1\n", 3),
        // unknown hash
        ("alpha:\n  listen: 127.0.0.1:1\n  redis: true\n  hash: nohash\n  servers:\n   - 127.0.0.1:2:1\n", 4),
        // bad distribution
        ("alpha:\n  listen: 127.0.0.1:1\n  redis: true\n  distribution: round_robin\n  servers:\n   - 127.0.0.1:2:1\n", 4),
        // bad server port
        ("alpha:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n   - 127.0.0.1:2:1\n   - 127.0.0.1:notaport:1\n", 6),
        // unknown key
        ("alpha:\n  listen: 127.0.0.1:1\n  redis: true\n  no_such_key: 1\n  servers:\n   - 127.0.0.1:2:1\n", 4),
        // not a number
        ("alpha:\n  listen: 127.0.0.1:1\n  redis: true\n  timeout: soon\n  servers:\n   - 127.0.0.1:2:1\n", 4),
        // two-character hash_tag expected
        ("alpha:\n  listen: 127.0.0.1:1\n  redis: true\n  hash_tag: \"{\"\n  servers:\n   - 127.0.0.1:2:1\n", 4),
    ];
    for (i, (text, line)) in bad.iter().enumerate() {
        let p = dir.join(format!("bad{i}.yml"));
        std::fs::write(&p, text).unwrap();
        let ps = p.to_string_lossy().into_owned();
        let (code, out, err) = run(&["-t", "-c", &ps]);
        assert_eq!(code, 1, "bad{i}.yml accepted: {out}{err}\n{text}");
        let want = format!("{ps}:{line}:");
        assert!(
            err.contains(&want),
            "bad{i}.yml: want '{want}' in:\n{err}\n--- yaml:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 3. --convert re-parses and keeps placement

#[test]
fn convert_output_reparses_and_keeps_placement() {
    let rs = common::redises(3);
    let dir = tmp_dir("convert");
    let (pa, pb) = (free_port(), free_port());
    let yaml = format!(
        "tagged:\n  listen: 127.0.0.1:{pa}\n  hash: fnv1a_64\n  distribution: ketama\n  hash_tag: \"{{}}\"\n  redis: true\n  timeout: 400\n  servers:\n   - {}:3 shard-a\n   - {}:1 shard-b\n   - {}:2 shard-c\n\
         plain:\n  listen: 127.0.0.1:{pb}\n  hash: murmur\n  distribution: modula\n  redis: true\n  servers:\n   - {}:1\n   - {}:2\n   - {}:1\n",
        rs[0].addr(), rs[1].addr(), rs[2].addr(), rs[0].addr(), rs[1].addr(), rs[2].addr()
    );
    let ypath = dir.join("pools.yml");
    std::fs::write(&ypath, &yaml).unwrap();
    let ys = ypath.to_string_lossy().into_owned();
    let (code, converted, err) = run(&["--convert", "-c", &ys]);
    assert_eq!(code, 0, "--convert: {err}");
    assert!(
        converted.contains("pool tagged") && converted.contains("pool plain"),
        "{converted}"
    );
    let cpath = dir.join("converted.conf");
    std::fs::write(&cpath, &converted).unwrap();
    let cs = cpath.to_string_lossy().into_owned();
    let (code, out, err) = run(&["-t", "-c", &cs]);
    assert_eq!(
        code, 0,
        "converted config does not re-parse: {out}{err}\n{converted}"
    );
    // Converting the converted file gives the same text (apart from the source comment).
    let (code, again, err) = run(&["--convert", "-c", &cs]);
    assert_eq!(code, 0, "{err}");
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        body(&again),
        body(&converted),
        "convert is not a fixed point"
    );

    let ks: Vec<Vec<u8>> = keys(1200, 77).into_iter().take(1000).collect();
    assert_eq!(ks.len(), 1000);
    let nums: Vec<Vec<Vec<u8>>> = ks
        .iter()
        .map(|k| vec![b"BACKENDNUM".to_vec(), k.clone()])
        .collect();
    type Replies = Vec<Vec<u8>>;
    let placement = |conf: &str| -> (Replies, Replies, Replies) {
        let p = Proxy::spawn(pa, &["-c".into(), conf.to_string()]);
        wait_listening(pb, "the second pool");
        let a = resp(pa).pipeline(&nums, BATCH);
        let b = resp(pb).pipeline(&nums, BATCH);
        let names = resp(pa).pipeline(&[vec![b"BACKENDS".to_vec()]], BATCH);
        drop(p);
        (a, b, names)
    };
    let (ya, yb, yn) = placement(&ys);
    let (ca, cb, cn) = placement(&cs);
    assert_eq!(yn, cn, "BACKENDS differ");
    let diff_a = ya.iter().zip(&ca).filter(|(x, y)| x != y).count();
    let diff_b = yb.iter().zip(&cb).filter(|(x, y)| x != y).count();
    assert_eq!(
        (diff_a, diff_b),
        (0, 0),
        "placement differs between YAML and converted config"
    );
    // Sanity: the keys really spread over the backends.
    for v in [&ya, &yb] {
        let used: std::collections::BTreeSet<_> = v.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(used.len(), 3, "{used:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 4. nutcracker's flags

fn read_to_close(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read stats");
    String::from_utf8(out).unwrap()
}

#[test]
fn nutcracker_flags_are_accepted() {
    let rs = common::redises(2);
    let dir = tmp_dir("flags");
    let port = free_port();
    let stats = free_port();
    let conf = dir.join("nutcracker.yml");
    std::fs::write(
        &conf,
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - {}:1\n   - {}:1\n",
            rs[0].addr(),
            rs[1].addr()
        ),
    )
    .unwrap();
    let log = dir.join("rustproxy.log");
    let pid = dir.join("rustproxy.pid");
    let args: Vec<String> = [
        "-c",
        conf.to_str().unwrap(),
        "-v",
        "6",
        "-o",
        log.to_str().unwrap(),
        "-p",
        pid.to_str().unwrap(),
        "-s",
        &stats.to_string(),
        "-a",
        "127.0.0.1",
        "-i",
        "10000",
        "-m",
        "512",
        "-d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proxy::spawn(port, &args);

    // -d: still our child, in the foreground, serving.
    assert!(p.alive(), "rustproxy -d left the foreground");
    let mut c = resp(port);
    assert_eq!(c.call(&[b"SET", b"flag", b"1"]), b"+OK\r\n");
    assert_eq!(c.call(&[b"GET", b"flag"]), bulk(b"1"));

    // -p: pid file holds the child's pid.
    let text = std::fs::read_to_string(&pid).expect("pid file written");
    assert_eq!(text.trim(), p.child.id().to_string(), "pid file content");

    // -s: stats JSON on the stats port.
    wait_listening(stats, "the stats port");
    let json = read_to_close(stats);
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    assert!(
        json.contains("\"service\":") && json.contains("\"alpha\": {"),
        "{json}"
    );
    assert!(
        json.contains(&format!("\"{}\": {{", rs[0].addr())),
        "{json}"
    );

    // -o: the log went to the file (not stderr), including the -d warning.
    let logged = wait_file_text(&log, "daemonize", secs(10));
    assert!(logged.contains("starting"), "log file: {logged:?}");
    assert!(
        logged.contains("daemonize"),
        "-d warning not logged: {logged:?}"
    );
    assert!(logged.contains("mbuf"), "-m not mentioned: {logged:?}");
    assert!(
        p.log().trim().is_empty(),
        "stderr should be empty with -o: {}",
        p.log()
    );
    assert!(p.alive());
    drop(p);

    // -v with nutcracker's numeric levels, -t with all flags.
    for lvl in ["0", "5", "6", "7", "11"] {
        let (code, out, err) = run(&[
            "-t",
            "-c",
            conf.to_str().unwrap(),
            "-v",
            lvl,
            "-i",
            "10000",
            "-m",
            "512",
            "-s",
            "22222",
        ]);
        assert_eq!(code, 0, "-v {lvl}: {out}{err}");
    }

    // -D: exit 0 and every stat name nutcracker -D prints.
    let (code, out, err) = run(&["-D"]);
    assert_eq!(code, 0, "-D: {err}");
    let nd = Command::new(NUTCRACKER)
        .arg("-D")
        .output()
        .expect("nutcracker -D");
    let ntext =
        String::from_utf8_lossy(&nd.stdout).into_owned() + &String::from_utf8_lossy(&nd.stderr);
    let mut names = Vec::new();
    for l in ntext.lines() {
        let l = l.trim();
        if let Some((name, rest)) = l.split_once(char::is_whitespace) {
            if rest.trim_start().starts_with('"') {
                names.push(name.to_string());
            }
        }
    }
    assert!(
        names.len() >= 19,
        "parsed nutcracker -D names: {names:?}\n{ntext}"
    );
    for n in &names {
        assert!(out.contains(n.as_str()), "rustproxy -D lacks {n}:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
