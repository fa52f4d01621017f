//! Test harness: real redis-server processes and the rustproxy binary on free loopback ports,
//! each owned by a value that kills its process (by PID) in `Drop`, plus a raw RESP connection
//! for byte-exact checks. Waiting is bounded polling of a port, never a fixed sleep.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Wait (bounded) until something accepts connections on `port`.
pub fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not listen on {port} within 15 s");
}

pub fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rustproxy-test-{}-{tag}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// A redis-server on a free port, killed on drop.
pub struct Redis {
    pub port: u16,
    pub child: Child,
    pub dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Redis {
        // A free port can be taken by another process between our probe and the server's bind;
        // then the port answers but not with our server. Check the pid and try another port.
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1]);
        for _ in 0..10 {
            let r = Redis::start_on(free_port(), extra);
            if owns_port_auth(r.port, r.child.id(), password) {
                return r;
            }
        }
        panic!("could not start a redis-server on a free port");
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        let dir = tmp_dir("redis");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "yes",
            "--dir",
            dir.to_str().expect("utf8 dir"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        wait_port(port, &mut child, "redis-server");
        Redis { port, child, dir }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        connect(self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the server (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGCONT first in case a test stopped it.
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when the Redis-protocol server on `port` reports `pid` as its process id (INFO server).
pub fn owns_port(port: u16, pid: u32) -> bool {
    owns_port_auth(port, pid, None)
}

/// `owns_port` for a server that wants a password first.
pub fn owns_port_auth(port: u16, pid: u32, password: Option<&str>) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    if let Some(pw) = password {
        rustproxy::resp::write_command(&mut req, [b"AUTH".as_slice(), pw.as_bytes()]);
    }
    req.extend_from_slice(b"INFO server\r\n");
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(11).any(|w| w == b"process_id:") || !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if buf.len() > 1 << 20 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .is_some_and(|v| v.trim() == pid.to_string())
}

/// Send a signal by PID with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Start `n` redis-servers.
pub fn redises(n: usize) -> Vec<Redis> {
    (0..n).map(|_| Redis::start()).collect()
}

/// The rustproxy binary, killed on drop.
pub struct Proxy {
    pub port: u16,
    pub child: Child,
    pub dir: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rustproxy")
}

impl Proxy {
    /// `rustproxy -l 127.0.0.1:PORT -b <backends> <extra...>`
    pub fn start(backends: &[&Redis], extra: &[&str]) -> Proxy {
        let list: Vec<String> = backends.iter().map(|r| r.addr()).collect();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec!["-l".into(), listen, "-b".into(), list.join(",")];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proxy::spawn(port, &args)
    }

    /// Start with a config file whose text is produced by `text(port)` (the listen port).
    pub fn start_conf(ext: &str, text: impl Fn(u16) -> String, extra: &[&str]) -> Proxy {
        let port = free_port();
        let dir = tmp_dir("proxy-conf");
        let path = dir.join(format!("proxy.{ext}"));
        std::fs::write(&path, text(port)).expect("write config");
        let mut args: Vec<String> = vec!["-c".into(), path.to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proxy::spawn(port, &args)
    }

    pub fn spawn(port: u16, args: &[String]) -> Proxy {
        let dir = tmp_dir("proxy");
        let log = std::fs::File::create(dir.join("proxy.log")).expect("log file");
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rustproxy");
        wait_port(port, &mut child, "rustproxy");
        Proxy { port, child, dir }
    }

    pub fn client(&self) -> redis::Connection {
        connect(self.port)
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A redis-rs connection with timeouts, so a hung proxy fails the test instead of hanging it.
pub fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    conn.set_write_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    conn
}

/// A raw RESP connection: send bytes, read whole replies as bytes.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Encode and send one command.
    pub fn cmd(&mut self, args: &[&[u8]]) {
        let mut out = Vec::new();
        rustproxy::resp::write_command(&mut out, args.iter().copied());
        self.send(&out);
    }

    /// One complete reply (raw bytes). Panics on timeout or EOF.
    pub fn reply(&mut self) -> Vec<u8> {
        self.try_reply().expect("connection closed before a reply")
    }

    /// One complete reply, or None when the connection closed.
    pub fn try_reply(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Ok(Some(n)) = rustproxy::resp::reply_len(&self.buf) {
                let r = self.buf[..n].to_vec();
                self.buf.drain(..n);
                return Some(r);
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Send a command and read its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.cmd(args);
        self.reply()
    }

    /// True when the peer closed the connection (reads EOF within the read timeout).
    pub fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Which of `servers` holds `key` (by EXISTS on each). Panics if not exactly one.
pub fn holder(servers: &[Redis], key: &[u8]) -> usize {
    let mut found = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let mut c = s.client();
        let n: i64 = redis::cmd("EXISTS").arg(key).query(&mut c).expect("exists");
        if n == 1 {
            found.push(i);
        }
    }
    assert_eq!(found.len(), 1, "key {:?} found on {:?}", key, found);
    found[0]
}

/// The servers as references (what `Proxy::start` takes).
pub fn refs(v: &[Redis]) -> Vec<&Redis> {
    v.iter().collect()
}

/// Multibulk encoding of one command.
pub fn enc(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    rustproxy::resp::write_command(&mut out, args.iter().copied());
    out
}

/// `$len\r\nbytes\r\n`
pub fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers added for tests/interleaving.rs (issue 16): replies that fail instead of panicking,
// bounded EOF checks, and the proxy's resident memory.
// ---------------------------------------------------------------------------------------------

impl Raw {
    /// Change the read timeout (every read stays bounded).
    pub fn set_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).expect("timeout");
    }

    /// One complete reply within the read timeout; `Err` says why not (closed, timed out).
    pub fn next_reply(&mut self) -> Result<Vec<u8>, String> {
        loop {
            match rustproxy::resp::reply_len(&self.buf) {
                Ok(Some(n)) => {
                    let r = self.buf[..n].to_vec();
                    self.buf.drain(..n);
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("malformed reply stream: {e}")),
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed ({} bytes of a partial reply buffered)",
                        self.buf.len()
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err(format!(
                        "no complete reply within the read timeout ({} bytes buffered)",
                        self.buf.len()
                    ))
                }
                Err(e) => return Err(format!("connection error: {e}")),
            }
        }
    }

    /// Read and discard until EOF, for at most `limit` in total: `Ok(bytes discarded)` when the
    /// peer closed, `Err` when it was still open at the deadline.
    pub fn wait_eof(&mut self, limit: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + limit;
        let mut total = std::mem::take(&mut self.buf).len();
        let mut tmp = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "still open after {limit:?} ({total} bytes read meanwhile)"
                ));
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionReset
                        || e.kind() == std::io::ErrorKind::ConnectionAborted
                        || e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    return Ok(total)
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }
}

impl Proxy {
    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
