//! Test harness: real redis-server processes and the rustproxy binary on free loopback ports,
//! each owned by a value that kills its process (by PID) in `Drop`; the one RESP test client
//! (`Raw`: bytes in, whole replies out, plus `parsed`/`int`/`text`/`strings` to look inside a
//! reply); and the one bounded wait (`poll_until`/`wait_until`).
//!
//! Invariants: every wait is bounded in time and in count and fails naming what it waited for
//! (and what it saw last); every read has a timeout; nothing here asserts a duration.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustproxy::resp::{parse_reply, Reply};

// ---------------------------------------------------------------------------------------------
// Bounded waiting
// ---------------------------------------------------------------------------------------------

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Call `f` every `every` until it gives `Ok`, for at most `limit` and at most
/// `limit / every + 1` calls; `Err` describes the give-up (bounds and `f`'s last `Err`).
pub fn try_poll_until<T, E: Display>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, String> {
    let start = Instant::now();
    let tries = (limit.as_nanos() / every.max(Duration::from_micros(1)).as_nanos()) as u64 + 1;
    let mut n = 0u64;
    loop {
        n += 1;
        let last = match f() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if n >= tries || start.elapsed() >= limit {
            return Err(format!(
                "not within {limit:?} ({n} tries, every {every:?}); last seen: {last}"
            ));
        }
        std::thread::sleep(every);
    }
}

/// `try_poll_until` that panics naming `what` when it gives up.
pub fn poll_until<T, E: Display>(
    what: &str,
    limit: Duration,
    every: Duration,
    f: impl FnMut() -> Result<T, E>,
) -> T {
    try_poll_until(limit, every, f).unwrap_or_else(|e| panic!("waited for {what}: {e}"))
}

/// `poll_until` for a condition.
pub fn wait_until(what: &str, limit: Duration, every: Duration, mut f: impl FnMut() -> bool) {
    poll_until(what, limit, every, || {
        if f() {
            Ok(())
        } else {
            Err("the condition still false")
        }
    })
}

/// Wait (bounded by `limit`, every 20 ms) until the file at `path` contains `needle`; its text
/// then. The failure shows the text last read.
pub fn wait_file_text(path: &std::path::Path, needle: &str, limit: Duration) -> String {
    let what = format!("{needle:?} in {}", path.display());
    poll_until(&what, limit, ms(20), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            Ok(text)
        } else {
            Err(format!("{text:?}"))
        }
    })
}

/// Wait (bounded, 15 s) until something accepts connections on `port`.
pub fn wait_listening(port: u16, what: &str) {
    wait_until(
        &format!("{what} to listen on 127.0.0.1:{port}"),
        secs(15),
        ms(10),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A free loopback port below Linux's ephemeral range (32768-60999), for a proxy started with
/// `reuseport yes`: a port from `free_port` may meanwhile be handed to a redis-server of a test
/// running in parallel, and the proxy's later bind would not fail but share or lose it.
pub fn free_port_low() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start from the pid so that test processes running side by side spread apart.
    let base = 20_000 + (std::process::id() % 600) * 20;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (base - 20_000 + n) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999")
}

/// Wait (bounded, 15 s) until something accepts connections on `port`; panics at once when
/// `child` exits before that.
pub fn wait_port(port: u16, child: &mut Child, what: &str) {
    wait_until(
        &format!("{what} to listen on 127.0.0.1:{port}"),
        secs(15),
        ms(10),
        || {
            // Connect first: a server that lost the port race exits while another process
            // answers there, and `Redis::start_with` tells the two apart by pid afterwards.
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited before listening on {port}: {status}");
            }
            false
        },
    );
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
            // A server that lost the port race exits: try another port.
            let Some(r) = Redis::try_start_on(free_port(), extra) else {
                continue;
            };
            if owns_port_auth(r.port, r.child.id(), password) {
                return r;
            }
        }
        panic!("could not start a redis-server on a free port");
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        Redis::try_start_on(port, extra)
            .unwrap_or_else(|| panic!("redis-server exited before listening on {port}"))
    }

    /// Start a redis-server on `port`; None when it exits before listening (port taken).
    fn try_start_on(port: u16, extra: &[&str]) -> Option<Redis> {
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
        let mut exited = false;
        wait_until(
            &format!("redis-server to listen on 127.0.0.1:{port}"),
            secs(15),
            ms(10),
            || {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return true;
                }
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited
            },
        );
        if exited {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        Some(Redis { port, child, dir })
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

    /// Wait (bounded by `limit`) until the proxy's log contains `needle`; the log then.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> String {
        wait_file_text(&self.dir.join("proxy.log"), needle, limit)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait (bounded by `limit`, polled every 5 ms) until the process exits; its status.
    /// Panics naming `what` (e.g. "exit after SIGTERM") when it is still running.
    pub fn wait_exit(&mut self, what: &str, limit: Duration) -> std::process::ExitStatus {
        let what = format!("the proxy to {what}");
        poll_until(&what, limit, ms(5), || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("still running".to_string()),
            Err(e) => Err(format!("try_wait: {e}")),
        })
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
    /// Connect with a 20 s read timeout; panics when the connect fails.
    pub fn connect(port: u16) -> Raw {
        Raw::try_connect(port).expect("connect")
    }

    /// Connect with a 20 s read timeout (writes block: tests of back-pressure rely on it).
    pub fn try_connect(port: u16) -> std::io::Result<Raw> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Raw {
            stream,
            buf: Vec::new(),
        })
    }

    /// Connect with `timeout` on reads and writes and TCP_NODELAY (bulk pipelining clients);
    /// panics when the connect fails.
    pub fn connect_timeout(port: u16, timeout: Duration) -> Raw {
        let raw = Raw::connect(port);
        raw.stream.set_read_timeout(Some(timeout)).expect("timeout");
        raw.stream
            .set_write_timeout(Some(timeout))
            .expect("timeout");
        raw.stream.set_nodelay(true).expect("nodelay");
        raw
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
        self.reply_or_eof("a reply")
    }

    /// One complete reply; `None` on EOF or reset. A read timeout (a hang) panics naming
    /// `what` and the bytes buffered.
    pub fn reply_or_eof(&mut self, what: &str) -> Option<Vec<u8>> {
        loop {
            if let Ok(Some(n)) = rustproxy::resp::reply_len(&self.buf) {
                return Some(self.buf.drain(..n).collect());
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("{what}: no reply (read: {e}); have {}", brief(&self.buf)),
            }
        }
    }

    /// The peer closed (EOF or reset) and sent nothing more: no byte buffered, none to read.
    pub fn assert_closed(&mut self, what: &str) {
        assert!(
            self.buf.is_empty(),
            "{what}: unexpected bytes {}",
            brief(&self.buf)
        );
        let mut tmp = [0u8; 4096];
        match self.stream.read(&mut tmp) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: expected close, got {}", brief(&tmp[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{what}: expected close, read: {e}"),
        }
    }

    /// Nothing arrives for `d` and the connection stays open (the read timeout is restored).
    pub fn assert_quiet(&mut self, d: Duration, what: &str) {
        let before = self.stream.read_timeout().expect("read timeout");
        self.stream.set_read_timeout(Some(d)).expect("timeout");
        let mut tmp = [0u8; 4096];
        match self.stream.read(&mut tmp) {
            Ok(0) => panic!("{what}: connection closed, expected it open and quiet"),
            Ok(n) => panic!("{what}: expected nothing, got {}", brief(&tmp[..n])),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{what}: {e}"),
        }
        self.stream.set_read_timeout(before).expect("timeout");
    }

    /// Send a command and read its reply; panics naming the command when none comes.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.cmd(args);
        self.next_reply().unwrap_or_else(|e| {
            let cmd: Vec<String> = args
                .iter()
                .map(|a| String::from_utf8_lossy(&a[..a.len().min(40)]).into_owned())
                .collect();
            panic!("reply to {}: {e}", cmd.join(" "))
        })
    }

    /// `call` with text arguments.
    pub fn call_str(&mut self, args: &[&str]) -> Vec<u8> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// Send a command and read its reply; `None` when the peer closed the connection (a read
    /// timeout still panics: a hang is a failure, never a retry).
    pub fn call_or_eof<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        rustproxy::resp::write_command(&mut out, args.iter().map(|a| a.as_ref()));
        if self.stream.write_all(&out).is_err() {
            return None;
        }
        self.try_reply()
    }

    /// The next reply, or a panic saying what was awaited and why it did not come.
    pub fn expect_reply(&mut self, what: &str) -> Vec<u8> {
        self.next_reply().unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// `n` replies; on a failure the message lists the last replies received before it.
    pub fn expect_replies(&mut self, n: usize, what: &str) -> Vec<Vec<u8>> {
        let mut got: Vec<Vec<u8>> = Vec::with_capacity(n);
        for i in 0..n {
            match self.next_reply() {
                Ok(reply) => got.push(reply),
                Err(e) => panic!(
                    "{what}: reply {} of {n} missing ({e}); received before it: {:?}",
                    i + 1,
                    got.iter()
                        .rev()
                        .take(5)
                        .rev()
                        .map(|g| brief(g))
                        .collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// Send `args` every `every` until the reply is `want`; panics after `limit` naming `what`
    /// and the last reply.
    pub fn call_until(
        &mut self,
        what: &str,
        limit: Duration,
        every: Duration,
        args: &[&[u8]],
        want: &[u8],
    ) {
        poll_until(what, limit, every, || {
            let r = self.call(args);
            if r == want {
                Ok(())
            } else {
                Err(brief(&r))
            }
        });
    }

    /// Send a command and read its reply; `Err` says why there is none (write failed, closed,
    /// timed out). An error reply is an `Ok`.
    pub fn try_call(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        rustproxy::resp::write_command(&mut out, args.iter().copied());
        self.stream
            .write_all(&out)
            .map_err(|e| format!("write: {e}"))?;
        self.next_reply()
    }

    /// Write `bytes` from a writer thread (a full socket buffer cannot deadlock the test) and
    /// read `n` whole replies from the same connection.
    pub fn exchange(&mut self, bytes: Vec<u8>, n: usize) -> Vec<Vec<u8>> {
        let mut w = self.stream.try_clone().expect("clone stream");
        let writer = std::thread::spawn(move || w.write_all(&bytes).expect("write pipeline"));
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            match self.try_reply() {
                Some(r) => out.push(r),
                None => panic!("connection closed after {i} of {n} replies"),
            }
        }
        writer.join().expect("writer thread");
        out
    }

    /// `cmds` pipelined in batches of `batch` (each batch one write, then its replies); the
    /// replies in order.
    pub fn pipeline<C: AsRef<[A]>, A: AsRef<[u8]>>(
        &mut self,
        cmds: &[C],
        batch: usize,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(cmds.len());
        for chunk in cmds.chunks(batch.max(1)) {
            self.send(&enc_many(chunk));
            for _ in chunk {
                out.push(self.reply());
            }
        }
        out
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

/// The encodings of several commands, concatenated (one write).
pub fn enc_many<C: AsRef<[A]>, A: AsRef<[u8]>>(cmds: &[C]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        rustproxy::resp::write_command(&mut out, c.as_ref().iter().map(|a| a.as_ref()));
    }
    out
}

/// `cmds` written in one go on a fresh connection to `port` (`Raw::exchange`); their replies.
pub fn pipeline<C: AsRef<[A]>, A: AsRef<[u8]>>(port: u16, cmds: &[C]) -> Vec<Vec<u8>> {
    Raw::connect(port).exchange(enc_many(cmds), cmds.len())
}

/// `*n` followed by bulk strings.
pub fn arr(items: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for i in items {
        out.extend_from_slice(&bulk(i));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Looking inside replies (the raw bytes stay what tests compare; these are for the rest)
// ---------------------------------------------------------------------------------------------

/// Bytes as escaped text, all of them (safe to compare).
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

/// Bytes as escaped text for a failure message: cut after 300 bytes, with the full length.
pub fn brief(b: &[u8]) -> String {
    let cut = &b[..b.len().min(300)];
    let mut s = String::from_utf8_lossy(cut).escape_debug().to_string();
    if b.len() > cut.len() {
        s.push_str(&format!("... ({} bytes)", b.len()));
    }
    s
}

/// One whole reply, parsed (RESP2 or RESP3); panics on a malformed or partial one.
pub fn parsed(reply: &[u8]) -> Reply<'_> {
    parse_reply(reply)
        .unwrap_or_else(|e| panic!("malformed reply {}: {e}", brief(reply)))
        .unwrap_or_else(|| panic!("incomplete reply {}", brief(reply)))
        .0
}

/// An integer reply's value; panics on anything else.
pub fn int(reply: &[u8]) -> i64 {
    match parsed(reply) {
        Reply::Integer(i) => i,
        _ => panic!("not an integer: {}", brief(reply)),
    }
}

/// A bulk/simple/verbatim reply as text; an error as `-MESSAGE`; an integer as its digits;
/// nil as `(nil)`.
pub fn text(reply: &[u8]) -> String {
    match parsed(reply) {
        Reply::Bulk(b) | Reply::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Verbatim(v) => String::from_utf8_lossy(&v[4.min(v.len())..]).into_owned(),
        Reply::Error(e) | Reply::BlobError(e) => format!("-{}", String::from_utf8_lossy(e)),
        Reply::Integer(i) => i.to_string(),
        Reply::Nil => "(nil)".into(),
        other => format!("{other:?}"),
    }
}

fn element_text(r: &Reply) -> String {
    match r {
        Reply::Bulk(b) | Reply::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Integer(i) => i.to_string(),
        Reply::Nil => "(nil)".into(),
        other => format!("{other:?}"),
    }
}

/// The elements of an array, set or push reply as text (integers as their digits, nil as
/// `(nil)`); panics on a reply that is not an aggregate.
pub fn strings(reply: &[u8]) -> Vec<String> {
    match parsed(reply) {
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            items.iter().map(element_text).collect()
        }
        _ => panic!("not an array: {}", brief(reply)),
    }
}

/// The elements of an array or set of strings, nil elements as `None`; panics on other
/// elements and on a reply that is not an aggregate.
pub fn opt_strings(reply: &[u8]) -> Vec<Option<String>> {
    match parsed(reply) {
        Reply::Array(items) | Reply::Set(items) => items
            .iter()
            .map(|r| match r {
                Reply::Nil => None,
                Reply::Bulk(_) | Reply::Simple(_) => Some(element_text(r)),
                other => panic!("unexpected element {other:?} in {}", brief(reply)),
            })
            .collect(),
        _ => panic!("not an array: {}", brief(reply)),
    }
}

/// An error reply (RESP2 `-` or RESP3 blob error `!`).
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-') | Some(b'!'))
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
