//! The native `proxy.conf` format: reading it ([`parse_native`]) and writing any config in it
//! ([`render_native`], behind `--convert`).
//!
//! Format (see `proxy.conf.example`): line based, `#` starts a comment at the start of a line
//! or after whitespace (outside quotes), blank lines are ignored.  Global keys come first;
//! `pool NAME` opens a pool section and the following `key value` lines belong to it.  Key
//! names use underscores; dashes (as in the long CLI options) are accepted too.  A value may
//! be wrapped in `"..."` (with `\"` and `\\` escapes) or `'...'`; the values of
//! [`Shape::Words`] keys (`user`, `rename_command`) are several words, each maybe quoted.
//!
//! Invariants:
//! * Which keys exist, what they accept and how they are written come from the key tables
//!   (`keys`); this file only knows the line structure (globals, `pool NAME` sections).
//! * `parse_native(&render_native(c))` reproduces `c` except for `path`, `format` and the
//!   `line` of each server; every key is written explicitly, defaults included, in table
//!   order.

use std::collections::HashMap;

use super::builder::{first_set, PoolBuilder};
use super::keys::{global_key, pool_key, Arg, Shape, GLOBAL_KEYS, POOL_KEYS};
use super::lex::{strip_comment, unquote};
use super::model::{err, Config, ConfigError, Format};
use super::validate::finish;

/// Parse the native format.  `file` is used in error messages only.
pub fn parse_native(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut cfg = Config::empty(Format::Native);
    let mut pools: Vec<PoolBuilder> = Vec::new();
    let mut global_seen: HashMap<&'static str, usize> = HashMap::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let (key, value) = match split_native_line(raw) {
            Ok(None) => continue,
            Ok(Some(kv)) => kv,
            Err(m) => return Err(err(file, line, m)),
        };
        let key = key.replace('-', "_");
        if key == "pool" {
            if value.is_empty() {
                return Err(err(file, line, "missing pool name after 'pool'"));
            }
            PoolBuilder::open(&mut pools, &value, line).map_err(|m| err(file, line, m))?;
            continue;
        }
        if value.is_empty() {
            return Err(err(file, line, format!("missing value for '{key}'")));
        }
        if let Some(g) = global_key(&key) {
            if let Some(p) = pools.last() {
                return Err(err(
                    file,
                    line,
                    format!(
                        "global key '{key}' must come before the first pool (pool '{}' starts on line {})",
                        p.pool.name, p.line
                    ),
                ));
            }
            first_set(&mut global_seen, g.name, &key, line).map_err(|m| err(file, line, m))?;
            let arg = Arg {
                key: &key,
                value: &value,
                line,
            };
            (g.set)(&mut cfg, &arg).map_err(|m| err(file, line, m))?;
            continue;
        }
        let Some(k) = pool_key(&key) else {
            return Err(err(file, line, format!("unknown key '{key}'")));
        };
        let Some(pool) = pools.last_mut() else {
            return Err(err(
                file,
                line,
                format!("'{key}' outside of a pool section (start one with 'pool NAME')"),
            ));
        };
        pool.set(k, &key, &value, line)
            .map_err(|m| err(file, line, m))?;
    }
    finish(cfg, pools, file)
}

/// Native line -> `(key, value)`; None for blank/comment lines.  The value is unquoted,
/// except for [`Shape::Words`] keys whose words the setter splits.
fn split_native_line(raw: &str) -> Result<Option<(String, String)>, String> {
    let l = strip_comment(raw).trim();
    if l.is_empty() {
        return Ok(None);
    }
    let (key, rest) = match l.find(char::is_whitespace) {
        Some(i) => (&l[..i], l[i..].trim_start()),
        None => (l, ""),
    };
    let words = pool_key(&key.replace('-', "_")).is_some_and(|k| k.shape == Shape::Words);
    let value = if words {
        rest.to_string()
    } else {
        unquote(rest)?
    };
    Ok(Some((key.to_string(), value)))
}

/// Render any config as native `proxy.conf` text, every key explicit.
pub fn render_native(c: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let origin = match &c.path {
        Some(p) => format!(" from {}", p.display()),
        None => String::new(),
    };
    let _ = writeln!(s, "# rustproxy configuration (native format){origin}");
    for k in GLOBAL_KEYS {
        for v in (k.render)(c) {
            let _ = writeln!(s, "{} {v}", k.name);
        }
    }
    for p in &c.pools {
        let _ = writeln!(s, "\npool {}", p.name);
        for k in POOL_KEYS {
            for v in (k.render)(p) {
                let _ = writeln!(s, "    {} {v}", k.name);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Level, Listen, PoolConfig};
    use crate::config::testutil::{assert_round_trip, native, native_err, MANIFEST, MIN};
    use crate::config::{load, Format};
    use std::path::{Path, PathBuf};

    #[test]
    fn example_parses_with_defaults() {
        let path = Path::new(MANIFEST).join("proxy.conf.example");
        let c = load(&path).unwrap();
        assert_eq!(c.format, Format::Native);
        assert_eq!(c.path.as_deref(), Some(path.as_path()));
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.stats_listen, None);
        assert_eq!(c.pools.len(), 1);
        let p = &c.pools[0];
        let mut want =
            PoolConfig::with_defaults("main", Listen::Tcp("127.0.0.1:6380".parse().unwrap()));
        want.servers = p.servers.clone();
        assert_eq!(*p, want);
        let ports: Vec<u16> = p.servers.iter().map(|s| s.port).collect();
        assert_eq!(ports, [7001, 7002, 7003, 7004]);
        assert!(p
            .servers
            .iter()
            .all(|s| s.weight == 1 && s.name.is_none() && s.host == "127.0.0.1"));
        assert_eq!(p.servers[0].addr, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(p.servers[0].display_name(), "127.0.0.1:7001");
    }

    #[test]
    fn example_with_every_key_uncommented_parses() {
        let text = std::fs::read_to_string(Path::new(MANIFEST).join("proxy.conf.example")).unwrap();
        let mut out = String::new();
        for l in text.lines() {
            let t = l.trim_start();
            // "#key value" lines (no space after '#') are commented-out settings.
            match t.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => {
                    out.push_str(rest)
                }
                _ => out.push_str(l),
            }
            out.push('\n');
        }
        let c = native(&out).unwrap();
        let p = &c.pools[0];
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/rustproxy.log")));
        assert_eq!(c.stats_listen, Some("127.0.0.1:22222".parse().unwrap()));
        assert_eq!(p.hash_tag, Some(*b"{}"));
        assert_eq!(p.redis_auth.as_deref(), Some("secret"));
        assert_eq!(p.disable_commands, ["KEYS", "FLUSHALL"]);
        assert_eq!(p.requirepass.as_deref(), Some("client-secret"));
        assert_eq!(
            p.users,
            [
                ("reporting".into(), "r3ad-only pass".into(), Level::ReadOnly),
                ("app".into(), "app-secret".into(), Level::ReadWrite),
                ("ops".into(), "ops-secret".into(), Level::Admin),
            ]
        );
        assert_eq!(
            p.rename_commands,
            [
                ("FLUSHALL".into(), "".into()),
                ("CONFIG".into(), "proxy-config-7f3a".into())
            ]
        );
        assert_eq!(p.backend_username.as_deref(), Some("proxy"));
        assert_eq!(p.backend_password.as_deref(), Some("backend-secret"));
        assert!(p.tls_listen());
        assert!(p.backend_tls);
        assert_eq!(p.backend_tls_server_name.as_deref(), Some("redis.internal"));
        assert_eq!(
            p.backend_tls_key_file,
            Some(PathBuf::from("/etc/rustproxy/proxy-client.key"))
        );
        // Every other key is shown at its default.
        let mut want = PoolConfig::with_defaults("main", p.listen.clone());
        want.servers = p.servers.clone();
        want.hash_tag = p.hash_tag;
        want.redis_auth = p.redis_auth.clone();
        want.disable_commands = p.disable_commands.clone();
        want.requirepass = p.requirepass.clone();
        want.users = p.users.clone();
        want.rename_commands = p.rename_commands.clone();
        want.backend_username = p.backend_username.clone();
        want.backend_password = p.backend_password.clone();
        want.tls_cert_file = p.tls_cert_file.clone();
        want.tls_key_file = p.tls_key_file.clone();
        want.tls_client_ca_file = p.tls_client_ca_file.clone();
        want.backend_tls = p.backend_tls;
        want.backend_tls_ca_file = p.backend_tls_ca_file.clone();
        want.backend_tls_server_name = p.backend_tls_server_name.clone();
        want.backend_tls_cert_file = p.backend_tls_cert_file.clone();
        want.backend_tls_key_file = p.backend_tls_key_file.clone();
        assert_eq!(*p, want);
        assert_round_trip(&c);
    }

    #[test]
    fn native_errors_carry_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "no pool defined"),
            ("# only a comment\n", 0, "no pool defined"),
            (
                "pool p\n listen 127.0.0.1:6380\n",
                1,
                "pool 'p' has no servers",
            ),
            (
                "pool p\n server 127.0.0.1:7001\n",
                1,
                "pool 'p' has no 'listen'",
            ),
            ("pool\n", 1, "missing pool name"),
            (
                &format!("{MIN}pool p\n"),
                4,
                "duplicate pool name 'p' (first defined on line 1)",
            ),
            (
                &format!("{MIN}server 127.0.0.1:7002 a\nserver 127.0.0.1:7003 a\n"),
                5,
                "duplicate server name 'a' in pool 'p' (first on line 4)",
            ),
            (
                &format!("{MIN}server 127.0.0.1:7001\n"),
                4,
                "duplicate server '127.0.0.1:7001'",
            ),
            (
                &format!("{MIN}pool q\nlisten 0.0.0.0:6380\nserver 127.0.0.1:7001\n"),
                5,
                "pool 'q' listens on 0.0.0.0:6380, already used by pool 'p' on line 2",
            ),
            (
                &format!("{MIN}listen 127.0.0.1:6381\n"),
                4,
                "duplicate key 'listen' (first set on line 2)",
            ),
            (
                &format!("{MIN}hash foo\n"),
                4,
                "unknown hash 'foo' (expected one of one_at_a_time, md5",
            ),
            (
                &format!("{MIN}distribution vnode\n"),
                4,
                "unknown distribution 'vnode'",
            ),
            (
                &format!("{MIN}hash_tag {{\n"),
                4,
                "hash_tag must be exactly two ASCII characters",
            ),
            (
                &format!("{MIN}hash_tag \"{{}}}}\"\n"),
                4,
                "hash_tag must be exactly two",
            ),
            (&format!("{MIN}colour blue\n"), 4, "unknown key 'colour'"),
            (
                &format!("{MIN}timeout 10s\n"),
                4,
                "bad number '10s' for 'timeout'",
            ),
            (
                &format!("{MIN}redis_db 99999999999\n"),
                4,
                "number '99999999999' for 'redis_db' is out of range",
            ),
            (
                &format!("{MIN}max_output 64 megs\n"),
                4,
                "bad size '64 megs' for 'max_output'",
            ),
            (
                &format!("{MIN}preconnect maybe\n"),
                4,
                "bad boolean 'maybe' for 'preconnect'",
            ),
            (
                &format!("{MIN}server 127.0.0.1:7002:0\n"),
                4,
                "server '127.0.0.1:7002:0': weight must be greater than 0",
            ),
            (
                &format!("{MIN}server 127.0.0.1:7002:x\n"),
                4,
                "bad weight 'x'",
            ),
            (
                &format!("{MIN}server 127.0.0.1\n"),
                4,
                "bad server address '127.0.0.1'",
            ),
            (
                &format!("{MIN}server 127.0.0.1:99999\n"),
                4,
                "bad port '99999'",
            ),
            (
                &format!("{MIN}server /tmp/redis.sock:1\n"),
                4,
                "unix socket servers are not supported",
            ),
            (
                &format!("{MIN}server 127.0.0.1:7002:1 a b\n"),
                4,
                "unexpected 'b' after server name",
            ),
            (
                &format!("{MIN}server no-such-host.invalid:7002\n"),
                4,
                "cannot resolve 'no-such-host.invalid:7002'",
            ),
            (
                &format!("{MIN}server_connections 0\n"),
                4,
                "'server_connections' must be at least 1",
            ),
            (&format!("{MIN}timeout\n"), 4, "missing value for 'timeout'"),
            (
                &format!("{MIN}log_level info\n"),
                4,
                "global key 'log_level' must come before the first pool",
            ),
            ("log_level loud\n", 1, "unknown log level 'loud'"),
            ("timeout 5\n", 1, "'timeout' outside of a pool section"),
            ("pool p\nlisten 127.0.0.1:port\n", 2, "bad port 'port'"),
            (
                "pool p\nlisten 127.0.0.1:6380 0666\n",
                2,
                "permissions only apply to unix socket",
            ),
            (
                "pool p\nlisten /tmp/s 999\n",
                2,
                "bad socket permissions '999'",
            ),
            (
                "pool p\nredis_auth \"abc\n",
                2,
                "unterminated \"-quoted string",
            ),
            (
                "pool p\nredis_auth \"abc\" x\n",
                2,
                "unexpected 'x' after quoted value",
            ),
            (
                &format!("{MIN}cluster yes\nhotkey_cache 1mb\n"),
                5,
                "'hotkey_cache' does not go with 'cluster yes'",
            ),
            (
                &format!("{MIN}hotkeys 0\nhotkey_cache 1mb\n"),
                5,
                "'hotkey_cache' does not go with 'hotkeys 0'",
            ),
            (
                &format!("{MIN}hotkeys 5000\n"),
                4,
                "'hotkeys' is at most 1000",
            ),
        ];
        for (text, line, msg) in cases {
            let (l, m) = native_err(text);
            assert!(m.contains(msg), "{text:?}: got {m:?}, want {msg:?}");
            assert_eq!(l, *line, "{text:?}: {m}");
        }
        let e = native("pool p\nhash foo\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:2: unknown hash 'foo' (expected one of one_at_a_time, md5, crc16, crc32, \
             crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins)"
        );
        assert_eq!(
            native("").unwrap_err().to_string().split(':').next(),
            Some("t.conf")
        );
    }

    #[test]
    fn render_native_round_trips() {
        let c = native(
            "log_level trace\nlog_file \"/tmp/x \\\"q\\\" #.log\"\nstats_listen 127.0.0.1:22222\n\
             pool a\nlisten /tmp/a.sock 0600\nhash_tag \"#}\"\nredis_auth \"p#ss \\\\ word\"\n\
             max_output 1000\nmax_request 3kb\ndisable_commands keys\n\
             server [::1]:7001:2 first\nserver 127.0.0.1:7002\n\
             pool b\nlisten [::1]:6381\nhash murmur\ndistribution random\nserver 127.0.0.1:7003:5\n",
        )
        .unwrap();
        assert_eq!(c.pools[0].hash_tag, Some(*b"#}"));
        assert_eq!(c.pools[0].redis_auth.as_deref(), Some("p#ss \\ word"));
        assert_round_trip(&c);
        let example = load(&Path::new(MANIFEST).join("proxy.conf.example")).unwrap();
        assert_round_trip(&example);
        let yaml = load(&Path::new(MANIFEST).join("tests/fixtures/nutcracker.yml")).unwrap();
        assert_round_trip(&yaml);
    }

    #[test]
    fn render_native_layout() {
        let c = native(&format!("command_stats no\n{MIN}")).unwrap();
        let text = render_native(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..5],
            [
                "# rustproxy configuration (native format)",
                "log_level info",
                "stats_interval 30000",
                "command_stats no",
                "",
            ]
        );
        assert_eq!(
            lines[5..8],
            ["pool p", "    listen 127.0.0.1:6380", "    hash fnv1a_64"]
        );
        assert_eq!(lines.last(), Some(&"    server 127.0.0.1:7001:1"));
        // Off by default, so not written for a default config.
        assert!(!render_native(&native(MIN).unwrap()).contains("command_stats"));
    }
}
