//! Operations (issue 22): the files under examples/ that operators install, checked by the real
//! validators and exercised against real processes.
//!
//! 1. The stats port for load balancers: `/health`, `/ready` (200, then 503 once the only backend
//!    of a pool is killed, 200 again once it is back, 503 while draining after SIGTERM), 404 and
//!    405, and nutcracker's bare JSON for a plain connect.
//! 2. `rustproxy --top ADDR --top-count N` against a proxy with traffic.
//! 3. The systemd unit: `systemd-analyze verify`; its ExecStart command line run as two
//!    instances sharing one port (reuseport), each with its own stats port, pid file and log;
//!    the upgrade order (start the new instance, then stop the old one).
//! 4. The logrotate snippet: `logrotate -d`, then a forced rotation of a running proxy's log
//!    (postrotate's SIGUSR1 makes it write a new file).
//! 5. Prometheus: `promtool check metrics` on the live exposition, `check rules`, `test rules`
//!    and `check config` on examples/prometheus; a real `prometheus` scraping the stats port,
//!    loading the rules, and answering every query of the Grafana dashboard.
//! 6. Every series the rules and the dashboard name exists in the live exposition.
//!
//! Invariants: real redis-server, rustproxy and prometheus processes on free loopback ports, each
//! killed by PID in `Drop`; every wait bounded in count and time; no duration is asserted. A
//! validator that is not installed (`bash .ci/deps` installs them) skips its test with a message
//! written to the real stderr, so it shows without `--nocapture`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(rel: &str) -> PathBuf {
    repo().join("examples").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A tool on PATH or in the sbin directories (logrotate lives in /usr/sbin).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The tool, or a skip notice on the real stderr (not captured by the test harness) and None.
fn need(name: &str, test: &str) -> Option<PathBuf> {
    let t = tool(name);
    if t.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: `{name}` is not installed (bash .ci/deps installs it)"
        );
    }
    t
}

/// A child process, killed (by PID) and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run a command to completion with `input` on its stdin, for at most `limit` (these
/// validators finish by themselves: a hang fails the test): (status, stdout, stderr).
fn run_full(cmd: &mut Command, input: &[u8], limit: Duration) -> (ExitStatus, String, String) {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut child = Reaped(child);
    let mut stdin = child.0.stdin.take().expect("stdin");
    let input = input.to_vec();
    let t_in = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let t_out = drain(Box::new(child.0.stdout.take().expect("stdout")));
    let t_err = drain(Box::new(child.0.stderr.take().expect("stderr")));
    let what = format!("{cmd:?} to finish");
    let status = poll_until(&what, limit, ms(20), || match child.0.try_wait() {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err("still running".to_string()),
        Err(e) => Err(e.to_string()),
    });
    let _ = t_in.join();
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    (status, out, err)
}

/// `run_full` with nothing on stdin: (success, stdout and stderr).
fn run(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let (status, out, err) = run_full(cmd, b"", limit);
    (status.success(), format!("{out}{err}"))
}

/// One HTTP/1.0 request to 127.0.0.1:`port`: (status code, headers, body). The server closes.
fn http(port: u16, method: &str, path: &str) -> (u16, String, String) {
    try_http(port, method, path).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `http`, with the failures (connect refused, reset, no header end) as `Err`.
fn try_http(port: u16, method: &str, path: &str) -> Result<(u16, String, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(secs(20))).expect("timeout");
    write!(s, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header end in {raw:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((code, head.to_string(), body.to_string()))
}

/// A plain connect to the stats port: what it sends before closing.
fn plain_connect(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(secs(20))).expect("timeout");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    String::from_utf8_lossy(&raw).into_owned()
}

/// Percent-encoding of a query-string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `rustproxy_...` (exported series) or `rustproxy:...` (recorded series) name in `text`.
fn referenced_names(text: &str) -> std::collections::BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = std::collections::BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("rustproxy") {
        let start = i + at;
        let mut end = start + "rustproxy".len();
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if before_ok && end < b.len() && (b[end] == b'_' || b[end] == b':') {
            while end < b.len()
                && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b':')
            {
                end += 1;
            }
            out.insert(text[start..end].trim_end_matches(':').to_string());
        }
        i = end;
    }
    out
}

/// Sample names of a Prometheus text exposition (`name{...} v` and `name v` lines).
fn exposed_names(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// The values of every `"key": "..."` string in a JSON text (JSON escapes decoded).
fn json_strings(text: &str, key: &str) -> Vec<String> {
    let pat = format!("\"{key}\":");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&pat) {
        rest = rest[at + pat.len()..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            continue;
        };
        let mut s = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('u') => {
                        let hex: String =
                            (0..4).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        let code = u32::from_str_radix(&hex, 16).expect("\\u escape");
                        s.push(char::from_u32(code).expect("char"));
                    }
                    Some(e) => s.push(e),
                    None => break,
                },
                c => s.push(c),
            }
        }
        out.push(s);
        rest = &body[end..];
    }
    out
}

/// A dashboard or template expression made runnable: Grafana's variables replaced.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$pool", ".*")
}

/// A config with two pools, `a` (backend r[0]) and `b` (backend r[1]), and the stats port.
fn two_pool_conf(ra: &Redis, rb: &Redis, pa: u16, pb: u16) -> String {
    format!(
        "pool a\n    listen 127.0.0.1:{pa}\n    server {}\npool b\n    listen 127.0.0.1:{pb}\n    server {}\n",
        ra.addr(),
        rb.addr()
    )
}

/// Traffic in a thread until stopped (or for at most 60 s / 200,000 commands): SET and GET on
/// `port`, one DEL of several keys each round.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut c = Raw::connect(port);
            let start = Instant::now();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) && n < 200_000 && start.elapsed() < secs(60) {
                let k = format!("session:{}:{}", n % 997, n % 13);
                c.call_str(&["SET", &k, "v"]);
                c.call_str(&["GET", &k]);
                c.call_str(&["DEL", "k1", "k2", "k3"]);
                n += 3;
                std::thread::sleep(ms(2));
            }
            n
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A proxy (config file, stats port) whose exposition has every family: traffic ran, a
/// command failed and a reload happened.
struct Full {
    _rs: Vec<Redis>,
    proxy: Proxy,
    stats: u16,
}

fn full_proxy() -> Full {
    let rs = redises(2);
    let stats = free_port();
    let (a, b) = (rs[0].addr(), rs[1].addr());
    let proxy = Proxy::start_conf(
        "conf",
        |port| {
            format!("pool main\n    listen 127.0.0.1:{port}\n    rebalance yes\n    server {a} a\n    server {b} b\n")
        },
        &["-s", &stats.to_string()],
    );
    wait_listening(stats, "the stats port");
    let mut c = proxy.raw();
    for i in 0..50 {
        let k = format!("key{i}");
        c.call_str(&["SET", &k, "v"]);
        c.call_str(&["GET", &k]);
    }
    assert!(is_error(&c.call_str(&["GET"])), "arity error expected");
    c.call_str(&["NOSUCHCOMMAND"]);
    signal(proxy.pid(), "HUP");
    wait_until("the reload to show in /metrics", secs(15), ms(50), || {
        http(stats, "GET", "/metrics")
            .2
            .contains("rustproxy_config_last_reload_successful 1")
    });
    Full {
        _rs: rs,
        proxy,
        stats,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Health and readiness on the stats port
// ---------------------------------------------------------------------------------------------

#[test]
fn ready_is_503_while_a_pool_has_no_backend_up_or_the_proxy_drains() {
    let ra = Redis::start();
    let mut rb = Redis::start();
    let rb_port = rb.port;
    let sp = free_port();
    let pb = free_port();
    let p = Proxy::start_conf(
        "conf",
        |pa| two_pool_conf(&ra, &rb, pa, pb),
        &["-s", &sp.to_string()],
    );
    wait_listening(sp, "the stats port");

    let (code, head, body) = http(sp, "GET", "/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "{head}");
    let (code, _, body) = http(sp, "GET", "/ready");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(
        body.contains("pool a: listening, 1 of 1 backends up"),
        "{body}"
    );
    assert!(
        body.contains("pool b: listening, 1 of 1 backends up"),
        "{body}"
    );

    // Paths the port does not serve, methods it does not take; what it served before still works.
    let (code, _, _) = http(sp, "GET", "/nope");
    assert_eq!(code, 404);
    let (code, _, _) = http(sp, "GET", "/metrics/extra");
    assert_eq!(code, 404);
    let (code, head, _) = http(sp, "POST", "/ready");
    assert_eq!(code, 405, "{head}");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (code, head, body) = http(sp, "HEAD", "/ready");
    assert_eq!(code, 200, "{head}");
    assert!(body.is_empty(), "HEAD answered a body: {body:?}");
    let (code, head, body) = http(sp, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(body.contains("rustproxy_backend_up{pool=\"b\""), "{body}");
    let (code, head, body) = http(sp, "GET", "/");
    assert_eq!(code, 200);
    assert!(head.contains("application/json"), "{head}");
    assert!(body.starts_with("{\"service\":\"rustproxy\""), "{body}");
    let bare = plain_connect(sp);
    assert!(
        bare.starts_with("{\"service\":\"rustproxy\"") && bare.contains("\"b\""),
        "a plain connect gets nutcracker's JSON, without HTTP: {bare:?}"
    );

    // Kill the only backend of pool b: not ready (the probe behind /ready notices it without
    // client traffic); still alive.
    rb.kill();
    let body = poll_until("GET /ready to answer 503", secs(20), ms(100), || {
        let (code, _, body) = http(sp, "GET", "/ready");
        if code == 503 {
            Ok(body)
        } else {
            Err(format!("{code} {body:?}"))
        }
    });
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(
        body.contains("pool a: listening, 1 of 1 backends up\n"),
        "{body}"
    );
    assert!(
        body.contains("pool b: listening, 0 of 1 backends up ("),
        "{body}"
    );
    assert!(body.contains("down"), "{body}");
    let (code, _, _) = http(sp, "HEAD", "/ready");
    assert_eq!(code, 503);
    let (code, _, _) = http(sp, "GET", "/health");
    assert_eq!(code, 200, "alive while not ready");
    assert_eq!(p.raw().call_str(&["PING"]), b"+PONG\r\n");

    // The backend comes back on its port: ready again, still without client traffic.
    let _back = Redis::start_on(rb_port, &[]);
    poll_until("GET /ready to answer 200 again", secs(30), ms(100), || {
        let (code, _, body) = http(sp, "GET", "/ready");
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {body:?}"))
        }
    });

    // SIGTERM: while the proxy drains (here: a BLOCKing request in flight) its listeners are
    // closed and /ready says so, so that a load balancer stops sending; /health still answers.
    let mut blocked = p.raw();
    blocked.cmd(&[b"BLPOP", b"ops-nothing", b"3"]);
    signal(p.pid(), "TERM");
    poll_until(
        "GET /ready to answer 503 while draining",
        secs(10),
        ms(20),
        || match try_http(sp, "GET", "/ready")? {
            (503, _, body) if body.contains("pool a: not listening") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(try_http(sp, "GET", "/health").map(|r| r.0), Ok(200));
}

// ---------------------------------------------------------------------------------------------
// 2. The live view
// ---------------------------------------------------------------------------------------------

/// Run `rustproxy ARGS` to completion (bounded): (exit code, stdout, stderr).
fn run_rustproxy(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let (status, out, err) = run_full(Command::new(bin()).args(args), b"", limit);
    (status.code(), out, err)
}

#[test]
fn top_shows_rates_command_latency_and_one_line_per_backend() {
    let rs = redises(2);
    let p = Proxy::start(&refs(&rs), &[]);
    let traffic = Traffic::start(p.port);
    // Some traffic before the first sample, so every backend has requests.
    poll_until("traffic on both backends", secs(20), ms(50), || {
        let info = text(&p.raw().call_str(&["INFO", "backends"]));
        let lines: Vec<&str> = info.lines().filter(|l| l.starts_with("backend")).collect();
        if lines.len() == 2 && lines.iter().all(|l| !l.contains("requests=0,")) {
            Ok(())
        } else {
            Err(info)
        }
    });
    let addr = format!("127.0.0.1:{}", p.port);
    let (code, out, err) = run_rustproxy(&["--top", &addr, "--top-count", "2"], secs(30));
    drop(traffic);
    assert_eq!(code, Some(0), "stdout {out}\nstderr {err}");
    let header = format!("rustproxy {} at {addr}", env!("CARGO_PKG_VERSION"));
    assert_eq!(out.matches(&header).count(), 2, "two views: {out}");
    let last = &out[out.rfind(&header).expect("a view")..];
    let ops: f64 = last
        .split("ops/s ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ops/s in {last}"));
    assert!(ops > 0.0, "{last}");
    for cmd in ["get", "set", "del"] {
        let row = last
            .lines()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(cmd))
            .unwrap_or_else(|| panic!("no {cmd} row in {last}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 8, "{row}");
        let calls_per_sec: f64 = cols[1].parse().expect("calls/s");
        assert!(calls_per_sec > 0.0, "{row}");
        for c in &cols[2..] {
            c.parse::<f64>()
                .unwrap_or_else(|_| panic!("not a number: {c} in {row}"));
        }
        let (p50, p99): (f64, f64) = (cols[3].parse().unwrap(), cols[4].parse().unwrap());
        assert!(p50 > 0.0 && p99 >= p50, "{row}");
    }
    let backend_rows: Vec<&str> = last
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("default"))
        .collect();
    assert_eq!(backend_rows.len(), 2, "{last}");
    for (row, r) in backend_rows.iter().zip(&rs) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 11, "{row}");
        assert_eq!(cols[2], r.addr(), "{row}");
        assert_eq!(cols[3], "up", "{row}");
        let p99: u64 = cols[10].parse().expect("p99");
        assert!(p99 > 0, "{row}");
    }
    assert!(
        backend_rows.iter().any(|r| {
            r.split_whitespace()
                .nth(6)
                .and_then(|v| v.parse::<f64>().ok())
                > Some(0.0)
        }),
        "no backend had requests/s: {last}"
    );

    // Usage and connection errors.
    let (code, _, err) = run_rustproxy(&["--top", &addr, "--top-count", "0"], secs(10));
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = run_rustproxy(&["--top-count", "1"], secs(10));
    assert_eq!(code, Some(2), "{err}");
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = run_rustproxy(&["--top", &closed, "--top-count", "1"], secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&closed), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 3. systemd
// ---------------------------------------------------------------------------------------------

fn unit_text() -> String {
    read(&example("systemd/rustproxy@.service"))
}

/// The unit's `KEY=` lines of [Service] (continuation lines joined).
fn unit_values(key: &str) -> Vec<String> {
    let text = unit_text().replace("\\\n", " ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = need(
        "systemd-analyze",
        "systemd_unit_passes_systemd_analyze_verify",
    ) else {
        return;
    };
    let text = unit_text();
    for want in [
        "Restart=on-failure",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "-s %i",
    ] {
        assert!(text.contains(want), "the unit lacks {want}");
    }
    // verify checks that the binaries exist: point it at the one just built.
    let dir = tmp_dir("systemd");
    let unit = text.replace("/usr/local/bin/rustproxy", bin());
    std::fs::write(dir.join("rustproxy@.service"), &unit).expect("write unit");
    let instance = dir.join("rustproxy@22222.service");
    let (ok, out) = run(
        Command::new(&analyze).arg("verify").arg(&instance),
        secs(60),
    );
    let _ = writeln!(
        std::io::stderr(),
        "systemd-analyze verify rustproxy@22222.service: {}",
        if out.trim().is_empty() {
            "no findings"
        } else {
            out.trim()
        }
    );
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
    // The same check notices a broken copy (so the silence above means the unit was read).
    let broken = unit.replace("Restart=on-failure", "Restart=on-failure\nRestartt=always");
    std::fs::write(dir.join("rustproxy@.service"), broken).expect("write unit");
    let (_, out) = run(
        Command::new(&analyze).arg("verify").arg(&instance),
        secs(60),
    );
    assert!(
        out.contains("Restartt"),
        "a broken unit passed verify: {out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unit's ExecStart as arguments for instance `stats` (the instance name), with the paths
/// of /etc, /run and /var/log moved under `root` (what RuntimeDirectory= and LogsDirectory=
/// would create is created here) and `opts` for $RUSTPROXY_OPTS.
fn instance_args(root: &Path, conf: &Path, stats: u16, opts: &[&str]) -> Vec<String> {
    let start = unit_values("ExecStart");
    assert_eq!(start.len(), 1, "one ExecStart: {start:?}");
    let run_dir = root.join("run");
    let log_dir = root.join("log");
    std::fs::create_dir_all(run_dir.join(stats.to_string())).expect("run dir");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let line = start[0]
        .replace("%i", &stats.to_string())
        .replace("/etc/rustproxy/proxy.conf", &conf.to_string_lossy())
        .replace("/run/rustproxy", &run_dir.to_string_lossy())
        .replace("/var/log/rustproxy", &log_dir.to_string_lossy());
    let mut args: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
    assert!(args.iter().any(|a| a == "$RUSTPROXY_OPTS"), "{line}");
    args.retain(|a| a != "$RUSTPROXY_OPTS");
    args.extend(opts.iter().map(|s| s.to_string()));
    args
}

/// The client port's `INFO server` process id (which instance answered).
fn served_by(port: u16) -> u32 {
    let info = text(&Raw::connect(port).call_str(&["INFO", "server"]));
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process_id in {info}"))
}

#[test]
fn unit_command_line_runs_instances_on_one_port_and_upgrades_start_before_stop() {
    let rs = redises(1);
    let root = tmp_dir("instances");
    let port = common::free_port_low();
    let conf = root.join("proxy.conf");
    std::fs::write(
        &conf,
        format!(
            "pool main\n    listen 127.0.0.1:{port}\n    reuseport yes\n    server {}\n",
            rs[0].addr()
        ),
    )
    .expect("write conf");
    // ExecStartPre and the first ExecReload validate the configuration.
    for check in unit_values("ExecStartPre")
        .iter()
        .chain(&unit_values("ExecReload")[..1])
    {
        let args: Vec<String> = check
            .replace("/etc/rustproxy/proxy.conf", &conf.to_string_lossy())
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect();
        let out = Command::new(bin()).args(&args).output().expect("run -t");
        assert!(out.status.success(), "{check}: {out:?}");
    }

    let (sa, sb) = (free_port(), free_port());
    let a = Proxy::spawn(sa, &instance_args(&root, &conf, sa, &[]));
    let b = Proxy::spawn(sb, &instance_args(&root, &conf, sb, &[]));
    for (s, p) in [(sa, &a), (sb, &b)] {
        let pid_file = root.join(format!("run/{s}/rustproxy.pid"));
        let text = wait_file_text(&pid_file, "\n", secs(10));
        assert_eq!(text.trim(), p.pid().to_string());
        wait_file_text(&root.join(format!("log/{s}.log")), "starting", secs(10));
        assert_eq!(http(s, "GET", "/ready").0, 200);
    }
    // The kernel spreads new connections over both instances (bounded: 200 connects; the chance
    // that all land on one is 2^-199).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(served_by(port));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        [a.pid(), b.pid()].into_iter().collect(),
        "both instances serve the shared port"
    );

    // Upgrade: the new instance first, then SIGTERM to the old one, which exits 0; the port
    // is served all along by the others.
    let sc = free_port();
    let c = Proxy::spawn(sc, &instance_args(&root, &conf, sc, &[]));
    assert_eq!(http(sc, "GET", "/ready").0, 200);
    let mut a = a;
    signal(a.pid(), "TERM");
    let status = a.wait_exit("exit after SIGTERM", secs(20));
    assert!(status.success(), "{status}");
    assert!(
        !root.join(format!("run/{sa}/rustproxy.pid")).exists(),
        "the pid file is removed at exit"
    );
    for _ in 0..20 {
        let pid = served_by(port);
        assert!(pid == b.pid() || pid == c.pid(), "served by {pid}");
    }
    drop((b, c));
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------------------------------------
// 4. logrotate
// ---------------------------------------------------------------------------------------------

#[test]
fn logrotate_snippet_is_valid_and_rotates_a_running_proxy() {
    let Some(logrotate) = need(
        "logrotate",
        "logrotate_snippet_is_valid_and_rotates_a_running_proxy",
    ) else {
        return;
    };
    let shipped = example("logrotate/rustproxy");
    let root = tmp_dir("logrotate");
    let state = root.join("state");
    let (ok, out) = run(
        Command::new(&logrotate)
            .arg("-d")
            .arg("-s")
            .arg(&state)
            .arg(&shipped),
        secs(60),
    );
    assert!(ok, "logrotate -d: {out}");
    assert!(!out.contains("error"), "logrotate -d: {out}");
    assert!(
        out.contains("rotating pattern: /var/log/rustproxy/*.log"),
        "{out}"
    );

    // The same snippet with its paths under `root`, against an instance started as the unit
    // starts it (log and pid file where the snippet looks for them); debug level, so that each
    // connection writes a log line.
    let rs = redises(1);
    let port = free_port();
    let conf = root.join("proxy.conf");
    std::fs::write(
        &conf,
        format!(
            "pool main\n    listen 127.0.0.1:{port}\n    server {}\n",
            rs[0].addr()
        ),
    )
    .expect("write conf");
    let sp = free_port();
    let p = Proxy::spawn(sp, &instance_args(&root, &conf, sp, &["-v", "debug"]));
    let log = root.join(format!("log/{sp}.log"));
    wait_file_text(&log, "starting", secs(10));
    let snippet = read(&shipped)
        .replace("/var/log/rustproxy", &root.join("log").to_string_lossy())
        .replace("/run/rustproxy", &root.join("run").to_string_lossy());
    let local = root.join("rustproxy.logrotate");
    std::fs::write(&local, snippet).expect("write snippet");
    let (ok, out) = run(
        Command::new(&logrotate)
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&local),
        secs(60),
    );
    assert!(ok, "logrotate -f: {out}");
    let rotated = root.join(format!("log/{sp}.log.1"));
    assert!(
        read(&rotated).contains("starting"),
        "the old lines are in {rotated:?}"
    );
    // postrotate sent SIGUSR1: the next log line goes to a new file at the configured path.
    wait_until(
        "a new log file after the rotation",
        secs(10),
        ms(50),
        || {
            assert_eq!(Raw::connect(port).call_str(&["PING"]), b"+PONG\r\n");
            std::fs::metadata(&log).is_ok_and(|m| m.len() > 0)
        },
    );
    assert!(
        !read(&log).contains("starting"),
        "the new file holds only new lines"
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------------------------------------
// 5. Prometheus
// ---------------------------------------------------------------------------------------------

#[test]
fn promtool_checks_the_exposition_the_rules_and_the_rule_tests() {
    let Some(promtool) = need(
        "promtool",
        "promtool_checks_the_exposition_the_rules_and_the_rule_tests",
    ) else {
        return;
    };
    let f = full_proxy();
    let (_, _, exposition) = http(f.stats, "GET", "/metrics");
    let (status, out, err) = run_full(
        Command::new(&promtool).args(["check", "metrics"]),
        exposition.as_bytes(),
        secs(60),
    );
    let text = format!("{out}{err}");
    assert!(
        status.success(),
        "promtool check metrics: {text}\n{exposition}"
    );
    assert!(
        text.trim().is_empty(),
        "promtool check metrics found: {text}"
    );

    let dir = example("prometheus");
    for args in [
        &["check", "rules", "rustproxy-rules.yml"][..],
        &["test", "rules", "rustproxy-rules.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let (ok, out) = run(
            Command::new(&promtool).args(args).current_dir(&dir),
            secs(120),
        );
        let _ = writeln!(
            std::io::stderr(),
            "promtool {}: {}",
            args.join(" "),
            out.trim()
        );
        assert!(ok && out.contains("SUCCESS"), "promtool {args:?}: {out}");
    }
}

/// A prometheus server on a free loopback port with a temporary config and storage, killed by
/// PID on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(binary: &Path, stats_port: u16) -> Prometheus {
        let dir = tmp_dir("prometheus");
        let rules = example("prometheus/rustproxy-rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: rustproxy\n    static_configs:\n      - targets: ['127.0.0.1:{stats_port}']\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let mut child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        wait_port(port, &mut child, "prometheus");
        Prometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET /api/v1/query?query=EXPR: the JSON text; Err when the status is not success.
    fn query(&self, expr: &str) -> Result<String, String> {
        let (code, _, body) = http(
            self.port,
            "GET",
            &format!("/api/v1/query?query={}", urlencode(expr)),
        );
        if code == 200 && body.contains("\"status\":\"success\"") {
            Ok(body)
        } else {
            Err(format!("{expr}: HTTP {code}: {body}"))
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The result of an instant query has at least one series.
fn non_empty(body: &str) -> bool {
    body.contains("\"result\":[{")
}

#[test]
fn prometheus_scrapes_the_stats_port_loads_the_rules_and_answers_the_dashboard() {
    let test = "prometheus_scrapes_the_stats_port_loads_the_rules_and_answers_the_dashboard";
    let Some(binary) = need("prometheus", test) else {
        return;
    };
    let f = full_proxy();
    let traffic = Traffic::start(f.proxy.port);
    let prom = Prometheus::start(&binary, f.stats);

    // rustproxy's series arrive: one rustproxy_backend_up per backend, with our labels.
    let body = poll_until(
        "rustproxy_backend_up in prometheus",
        secs(60),
        ms(250),
        || {
            let body = prom.query("rustproxy_backend_up")?;
            if body
                .matches("\"__name__\":\"rustproxy_backend_up\"")
                .count()
                == 2
            {
                Ok(body)
            } else {
                Err(format!("{body}\nprometheus log: {}", prom.log()))
            }
        },
    );
    assert!(body.contains("\"job\":\"rustproxy\""), "{body}");
    assert!(
        body.contains("\"backend\":\"a\"") && body.contains("\"backend\":\"b\""),
        "{body}"
    );
    let (code, _, targets) = http(prom.port, "GET", "/api/v1/targets");
    assert_eq!(code, 200);
    assert!(targets.contains("\"health\":\"up\""), "{targets}");

    // The rules file loads and evaluates without error.
    let rules_text = read(&example("prometheus/rustproxy-rules.yml"));
    let names: Vec<String> = rules_text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("- record: ")
                .or_else(|| l.strip_prefix("- alert: "))
                .map(str::to_string)
        })
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    poll_until("every rule loaded and evaluated", secs(60), ms(250), || {
        let (code, _, body) = http(prom.port, "GET", "/api/v1/rules");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !body.contains(&format!("\"name\":\"{n}\"")))
            .collect();
        if code == 200
            && missing.is_empty()
            && !body.contains("\"health\":\"err\"")
            && !body.contains("\"health\":\"unknown\"")
        {
            Ok(())
        } else {
            Err(format!("HTTP {code}, missing {missing:?}: {body}"))
        }
    });

    // Every query of the Grafana dashboard (and its variables) parses, runs, and returns series.
    let dash = read(&example("grafana/rustproxy-dashboard.json"));
    let mut exprs: Vec<String> = json_strings(&dash, "expr");
    assert!(exprs.len() >= 20, "{exprs:?}");
    for q in json_strings(&dash, "definition") {
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected variable query {q}"));
        let (sel, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        exprs.push(format!("count by ({}) ({sel})", label.trim()));
    }
    let exprs: Vec<String> = exprs.iter().map(|e| grafana_to_promql(e)).collect();
    poll_until(
        "every dashboard query to return series",
        secs(60),
        ms(500),
        || {
            let mut empty = Vec::new();
            for e in &exprs {
                if !non_empty(&prom.query(e)?) {
                    empty.push(e.clone());
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!("no series yet for {empty:#?}"))
            }
        },
    );
    drop(traffic);
}

// ---------------------------------------------------------------------------------------------
// 6. The rules and the dashboard name only real series
// ---------------------------------------------------------------------------------------------

/// Series the rules name that the proxy does not export yet (the rule is ready for them).
const PENDING: &[&str] = &[];

#[test]
fn rules_and_dashboard_name_only_series_of_the_live_exposition() {
    let f = full_proxy();
    let (_, _, exposition) = http(f.stats, "GET", "/metrics");
    let exposed = exposed_names(&exposition);
    assert!(
        exposed.contains("rustproxy_command_latency_seconds_bucket"),
        "{exposition}"
    );

    let rules_text = read(&example("prometheus/rustproxy-rules.yml"));
    let tests_text = read(&example("prometheus/rustproxy-rules.test.yml"));
    let dash = read(&example("grafana/rustproxy-dashboard.json"));
    let recorded: std::collections::BTreeSet<String> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_string)
        .collect();
    assert!(recorded.len() >= 5, "{recorded:?}");

    for (what, text) in [
        ("rustproxy-rules.yml", &rules_text),
        ("rustproxy-rules.test.yml", &tests_text),
        ("rustproxy-dashboard.json", &dash),
    ] {
        let names = referenced_names(text);
        assert!(!names.is_empty(), "{what} names no series");
        for n in &names {
            if n.contains(':') {
                assert!(
                    recorded.contains(n),
                    "{what} uses {n}, which no rule records"
                );
            } else if PENDING.contains(&n.as_str()) {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: {what} uses {n}, which the proxy does not export yet{}",
                    if exposed.contains(n) {
                        " (it does now: remove it from PENDING)"
                    } else {
                        ""
                    }
                );
            } else {
                assert!(
                    exposed.contains(n),
                    "{what} uses {n}, absent from /metrics:\n{exposition}"
                );
            }
        }
    }

    // The dashboard is valid JSON with unique panel ids, each query panel on the datasource
    // variable (python3 is a test dependency already, see .ci/deps).
    let check = r#"
import json, sys
d = json.load(open(sys.argv[1]))
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), ids
for p in d["panels"]:
    if p["type"] == "row":
        continue
    assert p["datasource"]["uid"] == "${datasource}", p["title"]
    assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
names = [v["name"] for v in d["templating"]["list"]]
assert names == ["datasource", "job", "instance", "pool"], names
print(len(d["panels"]))
"#;
    let path = example("grafana/rustproxy-dashboard.json");
    let (ok, out) = run(
        Command::new("python3").arg("-c").arg(check).arg(&path),
        secs(60),
    );
    assert!(ok, "dashboard check: {out}");
}

#[test]
fn name_scanner_finds_series_and_recorded_names() {
    let names = referenced_names(
        "sum(rate(rustproxy_commands_total{a=\"b\"}[5m])) / rustproxy:x:rate5m + not_rustproxy_y rustproxy",
    );
    let want: std::collections::BTreeSet<String> =
        ["rustproxy_commands_total", "rustproxy:x:rate5m"]
            .into_iter()
            .map(String::from)
            .collect();
    assert_eq!(names, want);
    assert_eq!(
        json_strings(
            r#"{"expr": "a{b=\"c\"}\\n", "x": 1, "expr":"d\u0041"}"#,
            "expr"
        ),
        ["a{b=\"c\"}\\n", "dA"]
    );
    assert_eq!(urlencode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
}
