//! `rustproxy --top ADDR`: a live view of a running proxy for the terminal, in the spirit of
//! `redis-cli --stat` and `top`. Every second it reads `INFO all` from the proxy (the client port,
//! as any Redis client would) and prints per-second rates (commands, bytes, errors, timeouts,
//! connections), one row per command (calls/s, the interval's mean latency, the p50/p99/p99.9 of
//! INFO's histograms) and one row per backend (state, connections, in flight, requests/s,
//! errors/s, timeouts/s, p50/p99).
//!
//! Invariants:
//! - It only reads INFO over one connection; every read and write has a timeout, so a hung proxy
//!   shows as an error line, never as a hung view. A lost connection is reopened at the next tick.
//! - Rates are counter deltas divided by the time measured between the two samples; a counter
//!   that went backwards (CONFIG RESETSTAT, a restarted proxy) shows a rate of 0, never a
//!   negative or wrapped one.
//! - Percentiles are the proxy's own (from its fixed-memory histograms, since start or the last
//!   CONFIG RESETSTAT): INFO has no per-interval histograms. The mean latency column is per
//!   interval (usec delta / calls delta).
//! - `--top-count N` stops after N views; without it the view runs until interrupted. On a
//!   terminal each view replaces the previous one; otherwise views are printed one after the
//!   other, separated by a blank line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustproxy::resp::{self, Reply};

/// Time between two views.
const INTERVAL: Duration = Duration::from_secs(1);
/// Connect, read and write timeout on the proxy connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Command rows shown per view (the busiest first).
const MAX_COMMANDS: usize = 15;

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// `rustproxy --top ADDR [--top-count N]`. Exit status 0 after N views, 1 when the proxy
/// cannot be reached at start (or answers INFO with an error), 2 for a bad count.
pub fn main(addr: &str, count: Option<&str>) -> ExitCode {
    let count = match count.map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            eprintln!("rustproxy: --top-count needs a positive number");
            return ExitCode::from(2);
        }
    };
    match run(addr, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustproxy: --top {addr}: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(addr: &str, count: Option<u64>) -> Result<(), String> {
    let mut conn = Some(connect(addr)?);
    let mut prev = sample(conn.as_mut().expect("connected"))?;
    let clear = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        std::thread::sleep(INTERVAL);
        let cur = match conn.as_mut() {
            Some(c) => sample(c),
            None => connect(addr).and_then(|mut c| {
                let s = sample(&mut c);
                conn = Some(c);
                s
            }),
        };
        let text = match cur {
            Ok(cur) => {
                let t = render(addr, &prev, &cur);
                prev = cur;
                t
            }
            Err(e) => {
                conn = None;
                format!("rustproxy at {addr}: {e} (retrying every second)\n")
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = if clear {
            write!(out, "\x1b[H\x1b[2J{text}")
        } else if shown == 0 {
            write!(out, "{text}")
        } else {
            write!(out, "\n{text}")
        };
        let _ = out.flush();
        shown += 1;
        if count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}

/// Connect to `host:port`, a bare port (127.0.0.1) or a Unix socket path; AUTH with
/// `REDISCLI_AUTH` when it is set (redis-cli's variable).
fn connect(addr: &str) -> Result<Box<dyn Conn>, String> {
    let mut conn: Box<dyn Conn> = if addr.starts_with('/') {
        let s = std::os::unix::net::UnixStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|_| s.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        Box::new(s)
    } else {
        let target = if addr.parse::<u16>().is_ok() {
            format!("127.0.0.1:{addr}")
        } else {
            addr.to_string()
        };
        let sa = target
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve: {e}"))?
            .next()
            .ok_or("cannot resolve: no address")?;
        let s = TcpStream::connect_timeout(&sa, IO_TIMEOUT).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|_| s.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        Box::new(s)
    };
    if let Ok(pass) = std::env::var("REDISCLI_AUTH") {
        let reply = call(conn.as_mut(), &[b"AUTH", pass.as_bytes()])?;
        if reply.first() == Some(&b'-') {
            return Err(format!(
                "AUTH: {}",
                String::from_utf8_lossy(&reply[1..]).trim()
            ));
        }
    }
    Ok(conn)
}

/// Send one command, read its whole reply (raw bytes).
fn call(conn: &mut dyn Conn, args: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut req = Vec::new();
    resp::write_command(&mut req, args.iter().copied());
    conn.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        match resp::reply_len(&buf) {
            Ok(Some(n)) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("bad reply: {e}")),
        }
        match conn.read(&mut tmp) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// One command's row of `INFO commandstats` and `latencystats`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Cmd {
    calls: u64,
    usec: u64,
    failed: u64,
    rejected: u64,
    /// p50, p99, p99.9 in microseconds (INFO latencystats), when present.
    pct: Option<(f64, f64, f64)>,
}

/// One line of `INFO backends`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Backend {
    pool: String,
    name: String,
    addr: String,
    state: String,
    connections: u64,
    in_flight: u64,
    requests: u64,
    errors: u64,
    timeouts: u64,
    p50: u64,
    p99: u64,
}

/// One reading of INFO.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    fields: HashMap<String, String>,
    cmds: Vec<(String, Cmd)>,
    backends: Vec<Backend>,
}

impl Sample {
    fn num(&self, k: &str) -> u64 {
        self.fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    fn text(&self, k: &str) -> &str {
        self.fields.get(k).map_or("?", String::as_str)
    }
}

fn sample(conn: &mut dyn Conn) -> Result<Sample, String> {
    let reply = call(conn, &[b"INFO", b"all"])?;
    let at = Instant::now();
    match resp::parse_reply(&reply) {
        Ok(Some((Reply::Bulk(b), _))) => Ok(parse_info(&String::from_utf8_lossy(b), at)),
        Ok(Some((Reply::Verbatim(v), _))) => Ok(parse_info(
            &String::from_utf8_lossy(&v[4.min(v.len())..]),
            at,
        )),
        Ok(Some((Reply::Error(e), _))) => Err(format!("INFO: {}", String::from_utf8_lossy(e))),
        _ => Err("INFO: unexpected reply".into()),
    }
}

/// `k=v,k=v` into pairs (values may not contain commas; INFO's do not).
fn pairs(v: &str) -> HashMap<&str, &str> {
    v.split(',').filter_map(|kv| kv.split_once('=')).collect()
}

fn parse_info(text: &str, at: Instant) -> Sample {
    let mut fields = HashMap::new();
    let mut cmds: Vec<(String, Cmd)> = Vec::new();
    let mut pct: HashMap<String, (f64, f64, f64)> = HashMap::new();
    let mut backends = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let n = |m: &HashMap<&str, &str>, k: &str| -> u64 {
            m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let f = |m: &HashMap<&str, &str>, k: &str| -> f64 {
            m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        };
        if let Some(name) = k.strip_prefix("cmdstat_") {
            let m = pairs(v);
            let c = Cmd {
                calls: n(&m, "calls"),
                usec: n(&m, "usec"),
                failed: n(&m, "failed_calls"),
                rejected: n(&m, "rejected_calls"),
                pct: None,
            };
            cmds.push((name.to_string(), c));
        } else if let Some(name) = k.strip_prefix("latency_percentiles_usec_") {
            let m = pairs(v);
            pct.insert(
                name.to_string(),
                (f(&m, "p50"), f(&m, "p99"), f(&m, "p99.9")),
            );
        } else if k.len() > 7
            && k.starts_with("backend")
            && k[7..].bytes().all(|b| b.is_ascii_digit())
        {
            let m = pairs(v);
            let s = |k: &str| m.get(k).copied().unwrap_or("?").to_string();
            backends.push(Backend {
                pool: s("pool"),
                name: s("name"),
                addr: s("addr"),
                state: s("state"),
                connections: n(&m, "connections"),
                in_flight: n(&m, "in_flight"),
                requests: n(&m, "requests"),
                errors: n(&m, "errors"),
                timeouts: n(&m, "timeouts"),
                p50: n(&m, "latency_p50_usec"),
                p99: n(&m, "latency_p99_usec"),
            });
        } else {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    for (name, c) in &mut cmds {
        c.pct = pct.get(name.as_str()).copied();
    }
    Sample {
        at,
        fields,
        cmds,
        backends,
    }
}

/// Per-second rate of a counter between two readings (0 when it went backwards).
fn rate(prev: u64, cur: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        cur.saturating_sub(prev) as f64 / secs
    }
}

fn bytes_per_sec(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MB/s", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KB/s", b / 1024.0)
    } else {
        format!("{b:.0} B/s")
    }
}

fn uptime(secs: u64) -> String {
    format!(
        "{}d {:02}:{:02}:{:02}",
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One view: the header, the rates, the command rows and the backend rows.
fn render(addr: &str, prev: &Sample, cur: &Sample) -> String {
    let secs = cur.at.duration_since(prev.at).as_secs_f64();
    let r = |k: &str| rate(prev.num(k), cur.num(k), secs);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "rustproxy {} at {addr}  up {}  clients {}/{} (blocked {})  rss {}",
        cur.text("rustproxy_version"),
        uptime(cur.num("uptime_in_seconds")),
        cur.num("connected_clients"),
        cur.num("maxclients"),
        cur.num("blocked_clients"),
        cur.text("used_memory_rss_human"),
    );
    let _ = writeln!(
        o,
        "ops/s {:.0}  in {}  out {}  errors/s {:.0}  timeouts/s {:.0}  connections/s {:.0}  \
         rejected/s {:.0}",
        r("total_commands_processed"),
        bytes_per_sec(r("total_net_input_bytes")),
        bytes_per_sec(r("total_net_output_bytes")),
        r("total_error_replies"),
        r("total_timeouts"),
        r("total_connections_received"),
        r("rejected_connections"),
    );

    // Commands: the busiest of the interval first, then by calls since start.
    let before: HashMap<&str, &Cmd> = prev.cmds.iter().map(|(n, c)| (n.as_str(), c)).collect();
    let zero = Cmd::default();
    let mut rows: Vec<(&str, f64, f64, f64, &Cmd)> = cur
        .cmds
        .iter()
        .map(|(name, c)| {
            let p = before.get(name.as_str()).copied().unwrap_or(&zero);
            let dcalls = c.calls.saturating_sub(p.calls);
            let avg = if dcalls == 0 {
                0.0
            } else {
                c.usec.saturating_sub(p.usec) as f64 / dcalls as f64
            };
            let errs = rate(p.failed + p.rejected, c.failed + c.rejected, secs);
            (name.as_str(), rate(p.calls, c.calls, secs), avg, errs, c)
        })
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.4.calls.cmp(&a.4.calls)));
    let _ = writeln!(o);
    let w = rows
        .iter()
        .take(MAX_COMMANDS)
        .map(|r| r.0.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = writeln!(
        o,
        "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>12}",
        "COMMAND", "CALLS/S", "AVG_US", "P50_US", "P99_US", "P99.9_US", "ERR/S", "CALLS"
    );
    if rows.is_empty() {
        let _ = writeln!(o, "(no commands yet)");
    }
    for (name, calls, avg, errs, c) in rows.iter().take(MAX_COMMANDS) {
        let (p50, p99, p999) = match c.pct {
            Some((a, b, c)) => (format!("{a:.0}"), format!("{b:.0}"), format!("{c:.0}")),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            o,
            "{name:<w$} {calls:>9.0} {avg:>9.1} {p50:>9} {p99:>9} {p999:>9} {errs:>7.0} {:>12}",
            c.calls
        );
    }
    if rows.len() > MAX_COMMANDS {
        let _ = writeln!(o, "({} more commands)", rows.len() - MAX_COMMANDS);
    }

    // Backends, in INFO's order (pool order, then server order).
    let _ = writeln!(o);
    let width = |f: fn(&Backend) -> &str, title: &str| {
        cur.backends
            .iter()
            .map(|b| f(b).len())
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (wp, wn, wa) = (
        width(|b| &b.pool, "POOL"),
        width(|b| &b.name, "BACKEND"),
        width(|b| &b.addr, "ADDR"),
    );
    let _ = writeln!(
        o,
        "{:<wp$} {:<wn$} {:<wa$} {:<7} {:>5} {:>8} {:>9} {:>7} {:>7} {:>9} {:>9}",
        "POOL",
        "BACKEND",
        "ADDR",
        "STATE",
        "CONNS",
        "INFLIGHT",
        "REQ/S",
        "ERR/S",
        "TMO/S",
        "P50_US",
        "P99_US"
    );
    for b in &cur.backends {
        let p = prev
            .backends
            .iter()
            .find(|p| p.pool == b.pool && p.name == b.name && p.addr == b.addr);
        let (req, err, tmo) = match p {
            Some(p) => (
                rate(p.requests, b.requests, secs),
                rate(p.errors, b.errors, secs),
                rate(p.timeouts, b.timeouts, secs),
            ),
            None => (0.0, 0.0, 0.0),
        };
        let _ = writeln!(
            o,
            "{:<wp$} {:<wn$} {:<wa$} {:<7} {:>5} {:>8} {req:>9.0} {err:>7.0} {tmo:>7.0} {:>9} {:>9}",
            b.pool, b.name, b.addr, b.state, b.connections, b.in_flight, b.p50, b.p99
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# Server\r\nrustproxy_version:1.2.3\r\nuptime_in_seconds:3725\r\n\
        # Clients\r\nconnected_clients:3\r\nmaxclients:100\r\nblocked_clients:0\r\n\
        # Memory\r\nused_memory_rss_human:5.07M\r\n\
        # Stats\r\ntotal_connections_received:10\r\ntotal_commands_processed:1000\r\n\
        total_net_input_bytes:2048\r\ntotal_net_output_bytes:100\r\ntotal_error_replies:5\r\n\
        total_timeouts:1\r\nrejected_connections:0\r\n\
        # Backends\r\nbackend0:pool=main,name=a,addr=127.0.0.1:1,state=up,connections=1,\
        requests=500,replies=500,errors=0,timeouts=0,ejections=0,in_flight=0,\
        latency_p50_usec=40,latency_p99_usec=900\r\n\
        backend1:pool=main,name=b,addr=127.0.0.1:2,state=down,connections=0,requests=7,\
        replies=0,errors=7,timeouts=0,ejections=0,in_flight=0,latency_p50_usec=0,\
        latency_p99_usec=0\r\n\
        # Commandstats\r\ncmdstat_get:calls=600,usec=6000,usec_per_call=10.00,\
        rejected_calls=0,failed_calls=0\r\ncmdstat_config|get:calls=1,usec=5,\
        usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        # Latencystats\r\nlatency_percentiles_usec_get:p50=8.000,p99=30.000,p99.9=70.000\r\n";

    fn later(a: &Sample, secs: u64) -> Sample {
        let mut b = a.clone();
        b.at = a.at + Duration::from_secs(secs);
        b
    }

    #[test]
    fn info_is_parsed() {
        let s = parse_info(A, Instant::now());
        assert_eq!(s.num("total_commands_processed"), 1000);
        assert_eq!(s.text("rustproxy_version"), "1.2.3");
        assert_eq!(s.backends.len(), 2);
        assert_eq!(s.backends[1].state, "down");
        assert_eq!(s.backends[0].p99, 900);
        assert_eq!(s.cmds.len(), 2);
        assert_eq!(s.cmds[0].0, "get");
        assert_eq!(s.cmds[0].1.pct, Some((8.0, 30.0, 70.0)));
        assert_eq!(s.cmds[1].0, "config|get");
        assert_eq!(s.cmds[1].1.pct, None);
    }

    #[test]
    fn rates_are_deltas_over_the_measured_time() {
        let a = parse_info(A, Instant::now());
        let mut b = later(&a, 2);
        b.fields
            .insert("total_commands_processed".into(), "1400".into());
        b.cmds[0].1.calls = 800;
        b.cmds[0].1.usec = 8000;
        b.backends[0].requests = 700;
        // A counter that went backwards (RESETSTAT) is a rate of 0.
        b.fields.insert("total_error_replies".into(), "0".into());
        let v = render("x:1", &a, &b);
        assert!(v.contains("ops/s 200 "), "{v}");
        assert!(v.contains("errors/s 0 "), "{v}");
        assert!(v.contains("up 0d 01:02:05"), "{v}");
        assert!(v.contains("clients 3/100"), "{v}");
        let get = v.lines().find(|l| l.starts_with("get ")).expect("get row");
        let cols: Vec<&str> = get.split_whitespace().collect();
        assert_eq!(
            cols,
            ["get", "100", "10.0", "8", "30", "70", "0", "800"],
            "{v}"
        );
        let cfg = v
            .lines()
            .find(|l| l.starts_with("config|get"))
            .expect("row");
        assert!(cfg.contains(" - "), "{cfg}");
        let back: Vec<&str> = v.lines().filter(|l| l.starts_with("main ")).collect();
        assert_eq!(back.len(), 2, "{v}");
        let cols: Vec<&str> = back[0].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "main",
                "a",
                "127.0.0.1:1",
                "up",
                "1",
                "0",
                "100",
                "0",
                "0",
                "40",
                "900"
            ]
        );
        assert!(back[1].contains(" down "), "{}", back[1]);
    }

    #[test]
    fn helpers() {
        assert_eq!(rate(5, 3, 1.0), 0.0);
        assert_eq!(rate(1, 3, 0.0), 0.0);
        assert_eq!(bytes_per_sec(10.0), "10 B/s");
        assert_eq!(bytes_per_sec(2048.0), "2.0 KB/s");
        assert_eq!(bytes_per_sec(3.0 * 1024.0 * 1024.0), "3.0 MB/s");
        let s = parse_info("# Commandstats\r\n", Instant::now());
        assert!(render("x", &s, &later(&s, 1)).contains("(no commands yet)"));
    }
}
