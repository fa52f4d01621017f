//! Value parsers and renderers shared by the keys: numbers, sizes, booleans, log levels,
//! addresses, listen specs and `server` lines, and the names that must render as bare words.
//!
//! Invariants:
//! * Every parser returns its error as text without `file:line` (the caller adds it) and
//!   names the key as the user wrote it.
//! * Each renderer writes what its parser reads back to the same value
//!   (`parse_size(render_size(n)) == n`, `parse_bool(yes_no(b)) == b`).
//! * Addresses are resolved here, at load time, so a config that loads has only resolved
//!   backends.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::model::{Listen, ServerConfig};

/// Hash names accepted by `hash` (twemproxy's names).
pub const HASH_NAMES: &[&str] = &[
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
/// Distribution names accepted by `distribution`.
pub const DISTRIBUTION_NAMES: &[&str] = &["ketama", "modula", "random"];

pub(super) fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.contains(|c: char| c.is_whitespace() || c == '#' || c == '"' || c == '\'')
    {
        return Err(format!(
            "bad pool name '{name}' (no whitespace, quotes or '#')"
        ));
    }
    Ok(())
}

/// A user name or a renamed command's new name: no whitespace or control characters, not
/// starting with a quote or '#', so that it renders as a bare word.
pub(super) fn check_word(what: &str, w: &str) -> Result<(), String> {
    if w.is_empty()
        || w.starts_with(['"', '\'', '#'])
        || w.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "bad {what} '{w}' (no whitespace, no leading quote or '#')"
        ));
    }
    Ok(())
}

/// `error|warn|info|debug|trace|off`, or nutcracker's verbosity numbers:
/// 0-3 error, 4 warn, 5 info, 6-7 debug, 8+ trace.
pub fn parse_log_level(v: &str) -> Result<log::LevelFilter, String> {
    use log::LevelFilter as L;
    if let Ok(n) = v.parse::<u32>() {
        return Ok(match n {
            0..=3 => L::Error,
            4 => L::Warn,
            5 => L::Info,
            6 | 7 => L::Debug,
            _ => L::Trace,
        });
    }
    Ok(match v.to_ascii_lowercase().as_str() {
        "off" => L::Off,
        "error" => L::Error,
        "warn" | "warning" => L::Warn,
        "info" => L::Info,
        "debug" => L::Debug,
        "trace" => L::Trace,
        _ => {
            return Err(format!(
                "unknown log level '{v}' (expected error, warn, info, debug, trace or 0..11)"
            ))
        }
    })
}

/// Decimal digits only (no sign, no unit), in range for `T`.
pub(super) fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad number '{v}' for '{key}'"));
    }
    v.parse()
        .map_err(|_| format!("number '{v}' for '{key}' is out of range"))
}

/// [`parse_num`], and not 0.
pub(super) fn parse_min1<T: std::str::FromStr + PartialEq + From<u8>>(
    key: &str,
    v: &str,
) -> Result<T, String> {
    let n: T = parse_num(key, v)?;
    if n == T::from(0) {
        return Err(format!("'{key}' must be at least 1"));
    }
    Ok(n)
}

/// `yes`/`no`/`true`/`false` (case-insensitive), for flags outside the key tables.
pub fn parse_flag(key: &str, v: &str) -> Result<bool, String> {
    parse_bool(key, v)
}

pub(super) fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!(
            "bad boolean '{v}' for '{key}' (expected yes, no, true or false)"
        )),
    }
}

pub(super) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `1234`, `100b`, `512kb`, `64mb`, `1gb` (case-insensitive, 1024-based).
pub fn parse_size(key: &str, v: &str) -> Result<usize, String> {
    let lower = v.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let mult: usize = match unit.trim() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "bad size '{v}' for '{key}' (expected a number with optional b, kb, mb or gb)"
            ))
        }
    };
    let n: usize = parse_num(key, num).map_err(|_| format!("bad size '{v}' for '{key}'"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{v}' for '{key}' is too large"))
}

/// The shortest exact form: `64mb`, `3kb`, else plain bytes.
pub(super) fn render_size(n: usize) -> String {
    for (unit, m) in [("gb", 1usize << 30), ("mb", 1 << 20), ("kb", 1 << 10)] {
        if n != 0 && n.is_multiple_of(m) {
            return format!("{}{unit}", n / m);
        }
    }
    n.to_string()
}

/// `host:port`, `[v6]:port` or `ip:port`, resolved to the first address.
pub(super) fn parse_tcp_addr(v: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(format!("bad address '{v}' (expected host:port)"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bad port '{port}' in address '{v}'"))?;
    if host.is_empty() {
        return Err(format!("bad address '{v}' (missing host)"));
    }
    resolve(host, port)
}

thread_local! {
    /// Set by [`super::load_without_dns`]: a host name (not an IP address) fails with
    /// [`NEEDS_DNS`] instead of being resolved.
    pub(super) static NO_DNS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set when a host name was refused under [`NO_DNS`].
    pub(super) static DNS_NEEDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The error of a host name met while [`NO_DNS`] is set.
pub(super) const NEEDS_DNS: &str = "host name needs DNS";

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if NO_DNS.with(|f| f.get()) && host.parse::<std::net::IpAddr>().is_err() {
        DNS_NEEDED.with(|f| f.set(true));
        return Err(NEEDS_DNS.to_string());
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it.next().ok_or_else(|| {
            format!(
                "address '{}:{port}' resolved to nothing",
                host_for_addr(host)
            )
        }),
        Err(e) => Err(format!(
            "cannot resolve '{}:{port}': {e}",
            host_for_addr(host)
        )),
    }
}

/// A host as it goes before `:port`: IPv6 in brackets.
pub(super) fn host_for_addr(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `host:port` or `/path/to/sock [mode]` (mode in octal, e.g. 0666).
pub(super) fn parse_listen(v: &str) -> Result<Listen, String> {
    let mut parts = v.split_whitespace();
    let addr = parts.next().ok_or("missing listen address")?;
    let mode = parts.next();
    if let Some(extra) = parts.next() {
        return Err(format!("unexpected '{extra}' after listen address"));
    }
    if addr.starts_with('/') {
        let mode = match mode {
            None => None,
            Some(m) => {
                let digits = m.strip_prefix("0o").unwrap_or(m);
                match u32::from_str_radix(digits, 8) {
                    Ok(n) if n <= 0o7777 && !digits.is_empty() => Some(n),
                    _ => {
                        return Err(format!(
                            "bad socket permissions '{m}' (expected octal like 0666)"
                        ))
                    }
                }
            }
        };
        return Ok(Listen::Unix {
            path: PathBuf::from(addr),
            mode,
        });
    }
    if let Some(m) = mode {
        return Err(format!(
            "unexpected '{m}' after listen address (permissions only apply to unix socket paths)"
        ));
    }
    parse_tcp_addr(addr).map(Listen::Tcp)
}

/// One `server` value (`host:port[:weight] [name] [user=NAME] [password=PASS]`), resolved;
/// used by the runtime membership commands too.  The address is twemproxy's syntax:
/// `host:port[:weight]`, `[v6]:port[:weight]`, or bare `v6:port:weight` (the weight is then
/// required).  The credentials are backend AUTH credentials for this server (words without
/// whitespace, any order after the address).
pub fn parse_server(v: &str, line: usize) -> Result<ServerConfig, String> {
    let mut parts = v.split_whitespace();
    let spec = parts.next().ok_or("missing server address")?;
    let mut name: Option<String> = None;
    let mut username: Option<String> = None;
    let mut password: Option<String> = None;
    for w in parts {
        let (slot, val, what) = if let Some(u) = w.strip_prefix("user=") {
            (&mut username, u, "user=")
        } else if let Some(pw) = w.strip_prefix("password=") {
            (&mut password, pw, "password=")
        } else if name.is_none() && username.is_none() && password.is_none() {
            if w.starts_with(['#', '"', '\'']) {
                return Err(format!(
                    "bad server name '{w}' (must not start with '#' or a quote)"
                ));
            }
            name = Some(w.to_string());
            continue;
        } else if name.is_none() {
            return Err(format!(
                "unexpected '{w}' after server credentials (the name comes before user=/password=)"
            ));
        } else {
            return Err(format!("unexpected '{w}' after server name"));
        };
        if val.is_empty() {
            return Err(format!(
                "malformed server credentials in '{spec}': empty {what}"
            ));
        }
        if slot.is_some() {
            return Err(format!(
                "malformed server credentials in '{spec}': {what} given twice"
            ));
        }
        *slot = Some(val.to_string());
    }
    let usage = || format!("bad server address '{spec}' (expected host:port[:weight] [name])");
    let (host, port, weight): (&str, &str, Option<&str>) =
        if let Some(rest) = spec.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').ok_or_else(usage)?;
            let tail = tail.strip_prefix(':').ok_or_else(usage)?;
            match tail.split_once(':') {
                Some((p, w)) => (h, p, Some(w)),
                None => (h, tail, None),
            }
        } else {
            let pieces: Vec<&str> = spec.split(':').collect();
            match pieces.len() {
                0 | 1 => return Err(usage()),
                2 => (pieces[0], pieces[1], None),
                3 => (pieces[0], pieces[1], Some(pieces[2])),
                n => {
                    let host_len = spec.len() - pieces[n - 1].len() - pieces[n - 2].len() - 2;
                    (&spec[..host_len], pieces[n - 2], Some(pieces[n - 1]))
                }
            }
        };
    if host.starts_with('/') {
        return Err(format!("unix socket servers are not supported: '{spec}'"));
    }
    if host.is_empty() {
        return Err(usage());
    }
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("bad port '{port}' in server '{spec}'")),
    };
    let weight: u32 = match weight {
        None => 1,
        Some(w) => match w.parse::<u32>() {
            Ok(0) => return Err(format!("server '{spec}': weight must be greater than 0")),
            Ok(n) if w.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("bad weight '{w}' in server '{spec}'")),
        },
    };
    let addr = resolve(host, port)?;
    Ok(ServerConfig {
        host: host.to_string(),
        port,
        addr,
        weight,
        name,
        username,
        password,
        line,
    })
}

/// A `server` line's value as [`parse_server`] reads it back: `host:port:weight`, then the
/// name and credentials that are set.
pub(super) fn render_server(sv: &ServerConfig) -> String {
    let mut s = format!("{}:{}:{}", host_for_addr(&sv.host), sv.port, sv.weight);
    if let Some(n) = &sv.name {
        s.push_str(&format!(" {n}"));
    }
    if let Some(u) = &sv.username {
        s.push_str(&format!(" user={u}"));
    }
    if let Some(pw) = &sv.password {
        s.push_str(&format!(" password={pw}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::native;

    #[test]
    fn values_sizes_bools_durations() {
        let c = native(
            "log_level 7\nlog-file \"/tmp/a b.log\" # comment\nstats_interval 500\n\
             pool p # trailing comment\n\
             listen 127.0.0.1:6380\nhash-tag '{}'\nmax_output 100KB\nmax_request 1gb\n\
             timeout 0\nconnect_timeout 250\nserver_retry_timeout 5000\npreconnect TRUE\n\
             auto_eject_hosts yes\ntcpkeepalive false\nreuseport no\nclient_connections 0\n\
             client_idle_timeout 60000\nmax_pending 16\nserver_connections 4\nbacklog 128\n\
             redis_db 2\ndisable_commands keys config,flushall\n\
             server [::1]:7001:3 one\nserver localhost:7002\n",
        )
        .unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/a b.log")));
        assert_eq!(c.stats_interval_ms, 500);
        let p = &c.pools[0];
        assert_eq!(p.hash_tag, Some(*b"{}"));
        assert_eq!(p.max_output, 100 * 1024);
        assert_eq!(p.max_request, 1 << 30);
        assert_eq!(
            (
                p.timeout_ms,
                p.connect_timeout_ms,
                p.server_retry_timeout_ms
            ),
            (0, 250, 5000)
        );
        assert!(p.preconnect && p.auto_eject_hosts && !p.tcpkeepalive && !p.reuseport);
        assert_eq!(
            (p.max_clients, p.client_idle_timeout_ms, p.max_pending),
            (0, 60000, 16)
        );
        assert_eq!((p.server_connections, p.backlog, p.redis_db), (4, 128, 2));
        assert_eq!(p.disable_commands, ["KEYS", "CONFIG", "FLUSHALL"]);
        let s = &p.servers[0];
        assert_eq!((s.host.as_str(), s.port, s.weight), ("::1", 7001, 3));
        assert_eq!(s.display_name(), "one");
        assert_eq!(s.line, 23);
        assert_eq!(p.servers[1].host, "localhost");
        assert_eq!(p.servers[1].addr.port(), 7002);
        assert_eq!(parse_size("k", "64mb"), Ok(64 << 20));
        assert_eq!(parse_size("k", "7 B"), Ok(7));
        assert!(parse_size("k", "1tb").is_err());
        assert!(parse_size("k", "mb").is_err());
        assert!(parse_size("k", "99999999999999999999gb").is_err());
        assert_eq!(parse_log_level("WARN"), Ok(log::LevelFilter::Warn));
        assert_eq!(parse_log_level("0"), Ok(log::LevelFilter::Error));
        assert_eq!(parse_log_level("5"), Ok(log::LevelFilter::Info));
        assert_eq!(parse_log_level("11"), Ok(log::LevelFilter::Trace));
    }

    #[test]
    fn renderers_read_back() {
        assert_eq!(render_size(0), "0");
        assert_eq!(render_size(64 << 20), "64mb");
        assert_eq!(render_size(1536), "1536");
        for n in [0, 1, 1023, 1024, 1536, 3 << 10, 64 << 20, 1 << 30, 5 << 30] {
            assert_eq!(parse_size("k", &render_size(n)), Ok(n));
        }
        for b in [false, true] {
            assert_eq!(parse_bool("k", yes_no(b)), Ok(b));
        }
        for line in [
            "127.0.0.1:7001:1",
            "[::1]:7001:3 one",
            "127.0.0.1:7002:2 two user=u password=p",
            "127.0.0.1:7003:1 password=p",
        ] {
            let sv = parse_server(line, 0).unwrap();
            assert_eq!(render_server(&sv), line);
        }
    }
}
