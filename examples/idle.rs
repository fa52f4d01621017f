//! Memory per idle client connection of a proxy (or any Redis server): opens N connections,
//! sends one PING on each (so the server has accepted and served it), leaves them idle, and
//! reports the growth of the server process's resident memory per connection.
//!
//! Usage: `cargo run --release --example idle -- PID HOST:PORT [N] [silent]` (N defaults to
//! 10000; the open-file limit must allow N sockets; `silent`: send nothing, the connections are
//! only accepted). Linux only (reads `/proc/PID/status`); loopback
//! addresses in practice. Every wait is bounded; the connections close when it exits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: idle PID HOST:PORT [N]");
        std::process::exit(2);
    }
    let pid: u32 = args[1].parse().expect("PID");
    let addr = &args[2];
    let n: usize = args.get(3).map_or(10_000, |v| v.parse().expect("N"));
    let silent = args.get(4).is_some_and(|a| a == "silent");

    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("connection {i} failed: {e}");
                break;
            }
        }
    }
    // One PING each, pipelined over all connections, then every PONG read back.
    for s in conns.iter_mut().filter(|_| !silent) {
        let _ = s.write_all(b"*1\r\n$4\r\nPING\r\n");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    for s in conns.iter_mut().filter(|_| !silent) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 7];
        if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
            answered += 1;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    // Let the server settle (connections accepted, buffers handed back after the replies).
    std::thread::sleep(Duration::from_millis(if silent { 1500 } else { 500 }));
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / conns.len().max(1) as f64;
    println!(
        "{} connections ({} answered PING): RSS {} KiB -> {} KiB, {:.3} KiB per idle connection",
        conns.len(),
        answered,
        before,
        after,
        per
    );
}
