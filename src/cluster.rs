//! Redis Cluster support that needs no event loop: key slots, the `CLUSTER SLOTS` reply, MOVED
//! and ASK redirections, and a blocking slot-map fetch for start-up.
//!
//! Invariants:
//! - `key_slot` is exactly Redis's `keyHashSlot` (CRC16/XMODEM of the key or of its non-empty
//!   hash tag, masked to 14 bits), so every key is routed to the node Redis expects.
//! - Parsing never panics and never trusts counts or numbers from the wire: slots outside
//!   `0..SLOTS`, `start > end`, ports outside `1..=65535` and malformed entries are errors
//!   (`parse_cluster_slots`) or `None` (`parse_redirect`).
//! - Hosts are returned as the node announces them, except that an empty or `?` host in
//!   `CLUSTER SLOTS` is replaced by the caller's `fallback_host` (the address used to reach the
//!   node); an empty host in a redirect stays empty (the caller knows which node answered).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `ClusterMap::slots` entry of a slot no master serves.
pub const NO_NODE: u16 = u16::MAX;

use crate::resp::{parse_reply, Reply};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16 table for polynomial 0x1021 (XMODEM), as in Redis's `crc16.c` (the same table
/// twemproxy's crc16 uses).
use crate::hash::CRC16_TABLE;

fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[(((crc >> 8) as u8) ^ b) as usize]
    })
}

/// Redis Cluster's key slot: CRC16 (XMODEM, poly 0x1021, as in Redis's crc16.c) of the key or of
/// its hash tag (first '{', first '}' after it, non-empty inside), mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & (SLOTS as u16 - 1)
}

/// One slot range of a CLUSTER SLOTS reply: the master and its replicas (host, port) as the node
/// announces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u16,
    pub end: u16,
    pub master: (String, u16),
    pub replicas: Vec<(String, u16)>,
}

fn slot_of(r: &Reply<'_>) -> Result<u16, String> {
    match r {
        Reply::Integer(v) if (0..SLOTS as i64).contains(v) => Ok(*v as u16),
        other => Err(format!("bad slot number {other:?}")),
    }
}

fn text_of<'a>(r: &Reply<'a>) -> Option<&'a [u8]> {
    match r {
        Reply::Bulk(b) | Reply::Simple(b) => Some(b),
        Reply::Verbatim(v) => Some(if v.get(3) == Some(&b':') { &v[4..] } else { v }),
        _ => None,
    }
}

/// One node entry: `[host, port, id?, metadata?...]`.
fn node_of(r: &Reply<'_>, fallback_host: &str) -> Result<(String, u16), String> {
    let items = match r {
        Reply::Array(items) | Reply::Set(items) => items,
        other => return Err(format!("node entry is not an array: {other:?}")),
    };
    if items.len() < 2 {
        return Err("node entry has fewer than 2 elements".into());
    }
    let host = match &items[0] {
        Reply::Nil => "",
        r => {
            let b = text_of(r).ok_or_else(|| format!("bad node host {r:?}"))?;
            std::str::from_utf8(b).map_err(|_| "node host is not UTF-8".to_string())?
        }
    };
    let host = if host.is_empty() || host == "?" {
        fallback_host
    } else {
        host
    };
    let port = match &items[1] {
        Reply::Integer(p) if (1..=65535).contains(p) => *p as u16,
        other => return Err(format!("bad node port {other:?}")),
    };
    Ok((host.to_string(), port))
}

/// Parse a complete CLUSTER SLOTS reply (RESP2 or RESP3 bytes). An empty or `?` host means "the
/// address you used to reach me": it is replaced by `fallback_host`.
pub fn parse_cluster_slots(reply: &[u8], fallback_host: &str) -> Result<Vec<Range>, String> {
    let (top, _) = parse_reply(reply)
        .map_err(|e| format!("malformed CLUSTER SLOTS reply: {e}"))?
        .ok_or_else(|| "incomplete CLUSTER SLOTS reply".to_string())?;
    let entries = match top {
        Reply::Array(items) | Reply::Set(items) => items,
        Reply::Error(e) | Reply::BlobError(e) => {
            return Err(format!(
                "CLUSTER SLOTS failed: {}",
                String::from_utf8_lossy(e)
            ))
        }
        other => return Err(format!("CLUSTER SLOTS reply is not an array: {other:?}")),
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in &entries {
        let items = match entry {
            Reply::Array(items) => items,
            other => return Err(format!("slot range is not an array: {other:?}")),
        };
        if items.len() < 3 {
            return Err("slot range has fewer than 3 elements".into());
        }
        let start = slot_of(&items[0])?;
        let end = slot_of(&items[1])?;
        if start > end {
            return Err(format!("slot range {start}-{end} is reversed"));
        }
        let master = node_of(&items[2], fallback_host)?;
        let replicas = items[3..]
            .iter()
            .map(|r| node_of(r, fallback_host))
            .collect::<Result<Vec<_>, _>>()?;
        ranges.push(Range {
            start,
            end,
            master,
            replicas,
        });
    }
    Ok(ranges)
}

/// A MOVED or ASK error reply: `-MOVED 3999 127.0.0.1:6381\r\n` / `-ASK 3999 127.0.0.1:6381\r\n`.
/// An empty host (`:6381`) means the host of the node that answered and is kept empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    Moved { slot: u16, host: String, port: u16 },
    Ask { slot: u16, host: String, port: u16 },
}

/// Parse a MOVED or ASK error reply (the complete `-...\r\n` line, or a RESP3 blob error);
/// anything else is `None`. IPv6 hosts are written unbracketed (`::1:7000`): the port is after
/// the last ':'. Brackets (`[::1]:7000`) are accepted and removed.
pub fn parse_redirect(reply: &[u8]) -> Option<Redirect> {
    let body = match parse_reply(reply).ok()?? {
        (Reply::Error(e), _) | (Reply::BlobError(e), _) => e,
        _ => return None,
    };
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split(' ');
    let kind = parts.next()?;
    let slot: u16 = parts.next()?.parse().ok()?;
    let addr = parts.next()?;
    if parts.next().is_some() || slot as usize >= SLOTS {
        return None;
    }
    let colon = addr.rfind(':')?;
    let port: u16 = addr[colon + 1..].parse().ok()?;
    if port == 0 {
        return None;
    }
    let mut host = &addr[..colon];
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        host = inner;
    }
    let host = host.to_string();
    match kind {
        "MOVED" => Some(Redirect::Moved { slot, host, port }),
        "ASK" => Some(Redirect::Ask { slot, host, port }),
        _ => None,
    }
}

/// Largest CLUSTER SLOTS reply accepted by `fetch_slots` (a 1000-node cluster is far below).
const MAX_SLOTS_REPLY: usize = 64 << 20;

/// Send one command and read its complete reply, within `deadline`.
fn roundtrip(stream: &mut TcpStream, cmd: &[&[u8]], deadline: Instant) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    crate::resp::write_command(&mut out, cmd.iter().copied());
    stream.write_all(&out).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match crate::resp::reply_len(&buf) {
            Ok(Some(n)) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("malformed reply: {e}")),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("set timeout: {e}"))?;
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        if buf.len() + n > MAX_SLOTS_REPLY {
            return Err("reply too large".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn fetch_one(
    seed: &SocketAddr,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Range>, String> {
    let mut stream =
        TcpStream::connect_timeout(seed, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| format!("set timeout: {e}"))?;
    let deadline = Instant::now() + timeout;
    if let Some(pw) = password {
        let reply = roundtrip(&mut stream, &[b"AUTH", pw.as_bytes()], deadline)?;
        if reply.first() != Some(&b'+') {
            return Err(format!(
                "AUTH failed: {}",
                String::from_utf8_lossy(&reply).trim_end()
            ));
        }
    }
    let reply = roundtrip(&mut stream, &[b"CLUSTER", b"SLOTS"], deadline)?;
    let ranges = parse_cluster_slots(&reply, &seed.ip().to_string())?;
    if ranges.is_empty() {
        return Err("no slots assigned".into());
    }
    Ok(ranges)
}

/// Blocking fetch for start-up: try each seed in turn (connect and read within `timeout` each,
/// optional AUTH password), send CLUSTER SLOTS, return the ranges of the first seed that
/// answers with at least one range. The error names every seed's failure.
pub fn fetch_slots(
    seeds: &[SocketAddr],
    password: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Range>, String> {
    let mut errors = Vec::new();
    for seed in seeds {
        match fetch_one(seed, password, timeout) {
            Ok(ranges) => return Ok(ranges),
            Err(e) => errors.push(format!("{seed}: {e}")),
        }
    }
    if errors.is_empty() {
        return Err("no cluster seed given".into());
    }
    Err(format!(
        "no cluster seed answered CLUSTER SLOTS: {}",
        errors.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_golden() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn key_slot_golden() {
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"123456789"), 0x31C3 & 16383);
        assert_eq!(key_slot(b""), 0);
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        // First '{' to first '}' after it.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 16383);
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // Unclosed brace: the whole key.
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") & 16383);
        assert_eq!(key_slot(b"}{"), crc16(b"}{") & 16383);
        assert_eq!(key_slot(b"{"), crc16(b"{") & 16383);
        assert_eq!(key_slot(b"{}"), crc16(b"{}") & 16383);
        assert_eq!(key_slot(b"a{b}"), key_slot(b"b"));
    }

    #[test]
    fn key_slot_in_range() {
        for i in 0..5000u32 {
            assert!((key_slot(format!("key:{i}").as_bytes()) as usize) < SLOTS);
        }
    }

    fn node(host: &str, port: u16) -> (String, u16) {
        (host.to_string(), port)
    }

    #[test]
    fn parse_handmade_resp2() {
        let reply = b"*2\r\n\
            *4\r\n:0\r\n:5460\r\n\
              *3\r\n$9\r\n127.0.0.1\r\n:30001\r\n$40\r\n09dbe9720cda62f7865eabc5fd8857c5d2678366\r\n\
              *3\r\n$9\r\n127.0.0.1\r\n:30004\r\n$40\r\n821d8ca00d7ccf931ed3ffc7e3db0599d2271abf\r\n\
            *3\r\n:5461\r\n:10922\r\n\
              *2\r\n$0\r\n\r\n:30002\r\n";
        let ranges = parse_cluster_slots(reply, "10.0.0.1").unwrap();
        assert_eq!(
            ranges,
            vec![
                Range {
                    start: 0,
                    end: 5460,
                    master: node("127.0.0.1", 30001),
                    replicas: vec![node("127.0.0.1", 30004)],
                },
                Range {
                    start: 5461,
                    end: 10922,
                    master: node("10.0.0.1", 30002),
                    replicas: vec![],
                },
            ]
        );
    }

    #[test]
    fn parse_handmade_resp3_with_metadata() {
        // Redis 7 appends a metadata map (hostname) to each node entry; RESP3 sends it as `%`.
        let reply = b"*1\r\n\
            *4\r\n:0\r\n:16383\r\n\
              *4\r\n$1\r\n?\r\n:7000\r\n$3\r\nabc\r\n%1\r\n$8\r\nhostname\r\n$4\r\nhost\r\n\
              *4\r\n+::1\r\n:7001\r\n$3\r\ndef\r\n%0\r\n";
        let ranges = parse_cluster_slots(reply, "192.168.1.9").unwrap();
        assert_eq!(
            ranges,
            vec![Range {
                start: 0,
                end: 16383,
                master: node("192.168.1.9", 7000),
                replicas: vec![node("::1", 7001)],
            }]
        );
    }

    /// Captured from the 6-node Redis 7.0.15 cluster built by `tests/cluster.rs`
    /// (`capture_cluster_slots`): RESP2, each node entry is `[ip, port, id, metadata]` with an
    /// empty metadata array (no hostnames announced).
    const CAPTURED: &[u8] = b"*3\r\n\
*4\r\n\
:0\r\n\
:5460\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:44339\r\n\
$40\r\n\
97dafb719c46637dd3791f256d1c441fbfc42e95\r\n\
*0\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:44773\r\n\
$40\r\n\
f65cdfadfffe93fb91965908e67d8cb6c734a719\r\n\
*0\r\n\
*4\r\n\
:5461\r\n\
:10922\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:42089\r\n\
$40\r\n\
1370680fb666c8b288ef8e6319cc2775b34e6932\r\n\
*0\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:36749\r\n\
$40\r\n\
31370313b82f52a31d8919cbcd4d895226595078\r\n\
*0\r\n\
*4\r\n\
:10923\r\n\
:16383\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:35561\r\n\
$40\r\n\
487ace4a4a654d7a108bffc0f064e485d3ad5827\r\n\
*0\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:39035\r\n\
$40\r\n\
11c3bd3ffdd56ef3ee25509082a02efebfe4ec34\r\n\
*0\r\n";

    /// The same reply after `HELLO 3`: the metadata is an empty map.
    const CAPTURED_RESP3: &[u8] = b"*3\r\n\
*4\r\n\
:0\r\n\
:5460\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:44339\r\n\
$40\r\n\
97dafb719c46637dd3791f256d1c441fbfc42e95\r\n\
%0\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:44773\r\n\
$40\r\n\
f65cdfadfffe93fb91965908e67d8cb6c734a719\r\n\
%0\r\n\
*4\r\n\
:5461\r\n\
:10922\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:42089\r\n\
$40\r\n\
1370680fb666c8b288ef8e6319cc2775b34e6932\r\n\
%0\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:36749\r\n\
$40\r\n\
31370313b82f52a31d8919cbcd4d895226595078\r\n\
%0\r\n\
*4\r\n\
:10923\r\n\
:16383\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:35561\r\n\
$40\r\n\
487ace4a4a654d7a108bffc0f064e485d3ad5827\r\n\
%0\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:39035\r\n\
$40\r\n\
11c3bd3ffdd56ef3ee25509082a02efebfe4ec34\r\n\
%0\r\n";

    /// Captured right after `redis-cli --cluster create`, before the replicas were gossiped.
    const CAPTURED_NO_REPLICAS: &[u8] = b"*3\r\n\
*3\r\n\
:0\r\n\
:5460\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:39421\r\n\
$40\r\n\
e0f085c1bcc848bfbdafff58565f9c2e00c2885f\r\n\
*0\r\n\
*3\r\n\
:5461\r\n\
:10922\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:40319\r\n\
$40\r\n\
a91650d67d36c452a7b1a225ce5f61d3f2a2b05c\r\n\
*0\r\n\
*3\r\n\
:10923\r\n\
:16383\r\n\
*4\r\n\
$9\r\n\
127.0.0.1\r\n\
:37601\r\n\
$40\r\n\
d52e284ddb908b247ec283349bbdee360631b961\r\n\
*0\r\n";

    #[test]
    fn parse_captured() {
        let node = |port: u16| ("127.0.0.1".to_string(), port);
        let want = vec![
            Range {
                start: 0,
                end: 5460,
                master: node(44339),
                replicas: vec![node(44773)],
            },
            Range {
                start: 5461,
                end: 10922,
                master: node(42089),
                replicas: vec![node(36749)],
            },
            Range {
                start: 10923,
                end: 16383,
                master: node(35561),
                replicas: vec![node(39035)],
            },
        ];
        assert_eq!(parse_cluster_slots(CAPTURED, "x"), Ok(want.clone()));
        assert_eq!(parse_cluster_slots(CAPTURED_RESP3, "x"), Ok(want));
        let bare = parse_cluster_slots(CAPTURED_NO_REPLICAS, "x").unwrap();
        assert_eq!(
            bare.iter()
                .map(|r| (r.start, r.end, r.master.1, r.replicas.len()))
                .collect::<Vec<_>>(),
            vec![
                (0, 5460, 39421, 0),
                (5461, 10922, 40319, 0),
                (10923, 16383, 37601, 0)
            ]
        );
        // Every strict prefix is incomplete, hence an error, never a panic.
        for n in 0..CAPTURED.len() {
            assert!(parse_cluster_slots(&CAPTURED[..n], "x").is_err());
        }
    }

    #[test]
    fn parse_cluster_slots_errors() {
        let bad: &[&[u8]] = &[
            b"",
            b"*1\r\n",
            b"-ERR This instance has cluster support disabled\r\n",
            b"+OK\r\n",
            b"*1\r\n:0\r\n",
            b"*1\r\n*2\r\n:0\r\n:10\r\n",
            b"*1\r\n*3\r\n:10\r\n:0\r\n*2\r\n$1\r\na\r\n:1\r\n",
            b"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",
            b"*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",
            b"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:0\r\n",
            b"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:70000\r\n",
            b"*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\na\r\n",
            b"*1\r\n*3\r\n:0\r\n:5\r\n:1\r\n",
            b"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$2\r\n\xff\xfe\r\n:1\r\n",
            b"garbage",
        ];
        for b in bad {
            assert!(
                parse_cluster_slots(b, "h").is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(parse_cluster_slots(b"*0\r\n", "h"), Ok(vec![]));
    }

    #[test]
    fn redirects() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(
            parse_redirect(b"-ASK 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Ask {
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(
            parse_redirect(b"-MOVED 0 :6381\r\n"),
            Some(Redirect::Moved {
                slot: 0,
                host: String::new(),
                port: 6381
            })
        );
        assert_eq!(
            parse_redirect(b"-MOVED 16383 ::1:7000\r\n"),
            Some(Redirect::Moved {
                slot: 16383,
                host: "::1".into(),
                port: 7000
            })
        );
        assert_eq!(
            parse_redirect(b"-ASK 1 [::1]:7000\r\n"),
            Some(Redirect::Ask {
                slot: 1,
                host: "::1".into(),
                port: 7000
            })
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12 redis-3.example:6379\r\n"),
            Some(Redirect::Moved {
                slot: 12,
                host: "redis-3.example".into(),
                port: 6379
            })
        );
        // RESP3 blob error.
        assert_eq!(
            parse_redirect(b"!20\r\nASK 5 127.0.0.1:7002\r\n"),
            Some(Redirect::Ask {
                slot: 5,
                host: "127.0.0.1".into(),
                port: 7002
            })
        );
    }

    #[test]
    fn redirect_garbage() {
        let bad: &[&[u8]] = &[
            b"",
            b"-MOVED",
            b"-MOVED 3999 127.0.0.1:6381",
            b"+MOVED 3999 127.0.0.1:6381\r\n",
            b"$26\r\nMOVED 3999 127.0.0.1:6381\r\n",
            b"-ERR wrong number of arguments\r\n",
            b"-MOVED 3999\r\n",
            b"-MOVED 16384 127.0.0.1:6381\r\n",
            b"-MOVED -1 127.0.0.1:6381\r\n",
            b"-MOVED x 127.0.0.1:6381\r\n",
            b"-MOVED 3999 127.0.0.1\r\n",
            b"-MOVED 3999 127.0.0.1:\r\n",
            b"-MOVED 3999 127.0.0.1:0\r\n",
            b"-MOVED 3999 127.0.0.1:65536\r\n",
            b"-MOVED 3999 127.0.0.1:6381 extra\r\n",
            b"-MOVED  3999 127.0.0.1:6381\r\n",
            b"-moved 3999 127.0.0.1:6381\r\n",
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
            b"\xff\xff\xff",
        ];
        for b in bad {
            assert_eq!(parse_redirect(b), None, "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn fetch_slots_no_seeds_or_dead_seed() {
        assert!(fetch_slots(&[], None, Duration::from_millis(100)).is_err());
        // A port nothing listens on (bound then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let seed: SocketAddr = ([127, 0, 0, 1], port).into();
        let err = fetch_slots(&[seed], None, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains(&seed.to_string()), "{err}");
    }

    #[test]
    fn fetch_slots_from_fake_node() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let seed = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut expect = |want: &[u8], answer: &[u8]| {
                let mut got = vec![0u8; want.len()];
                s.read_exact(&mut got).unwrap();
                assert_eq!(got, want);
                s.write_all(answer).unwrap();
            };
            expect(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", b"+OK\r\n");
            // The reply arrives in two pieces.
            expect(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n", &CAPTURED[..7]);
            s.write_all(&CAPTURED[7..]).unwrap();
        });
        let ranges = fetch_slots(&[seed], Some("pw"), Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!(ranges, parse_cluster_slots(CAPTURED, "x").unwrap());
    }
}
