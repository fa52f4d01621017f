//! nutcracker's (twemproxy's) YAML format, parsed by hand: [`parse_nutcracker`].
//!
//! The YAML subset nutcracker's own configs use: top-level `pool_name:` mappings,
//! consistently indented `key: value` scalars, and a `servers:` block list
//! (`- host:port:weight [name]`) or flow list (`[a, b]`).  All native pool keys are accepted
//! as well, under their underscore names (the [`Shape::Words`] keys `user:` and
//! `rename_command:` may be repeated or take a block list).  Pools must say `redis: true`
//! (nutcracker's default is memcached, which rustproxy does not speak).
//!
//! Invariants:
//! * Only the YAML structure is handled here: `servers`/`server`, `redis` and block lists are
//!   the format's own; every other key goes through the key table like a native line, so
//!   both formats accept the same values with the same messages.
//! * Indentation is checked, not guessed: all keys of a pool at one depth, all items of a
//!   list at one depth, no tabs; an error names the line.

use super::builder::{first_set, PoolBuilder};
use super::keys::{named, pool_key, PoolKey, Shape};
use super::lex::{split_yaml_key, strip_comment, unquote};
use super::model::{err, Config, ConfigError, Format};
use super::validate::finish;
use super::values::parse_bool;

/// Parse nutcracker's YAML format.  `file` is used in error messages only.
pub fn parse_nutcracker(text: &str, file: &str) -> Result<Config, ConfigError> {
    let cfg = Config::empty(Format::Nutcracker);
    let mut pools: Vec<PoolBuilder> = Vec::new();
    let mut key_indent: Option<usize> = None;
    let mut item_indent: Option<usize> = None;
    // The key whose block list is open: `server` (`servers:`) or a `Shape::Words` key.
    let mut in_list: Option<&'static PoolKey> = None;
    let mut seen_content = false;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let content = strip_comment(raw).trim_end();
        if content.trim().is_empty() {
            continue;
        }
        let body = content.trim_start_matches(' ');
        let indent = content.len() - body.len();
        if body.starts_with('\t') {
            return Err(err(file, line, "tabs are not allowed in YAML indentation"));
        }
        if indent == 0 && body == "---" && !seen_content {
            seen_content = true;
            continue;
        }
        if indent == 0 && body == "..." {
            break;
        }
        seen_content = true;
        let e = |m: String| err(file, line, m);

        // Top level: a pool name.
        if indent == 0 {
            if body.starts_with('-') {
                return Err(e(
                    "expected 'pool_name:' at top level, found a list item".into()
                ));
            }
            let (name, value) = split_yaml_key(body).map_err(e)?;
            if !value.is_empty() {
                return Err(e(format!(
                    "expected 'pool_name:' at top level, found '{name}: {value}' (pool keys must be indented)"
                )));
            }
            PoolBuilder::open(&mut pools, &name, line).map_err(e)?;
            if let Some(p) = pools.last_mut() {
                p.pool.hash_tag = super::model::NUTCRACKER_HASH_TAG;
            }
            key_indent = None;
            item_indent = None;
            in_list = None;
            continue;
        }
        let Some(pool) = pools.last_mut() else {
            return Err(e("unexpected indentation before the first pool name".into()));
        };

        // A list item under `servers:`.
        if body == "-" || body.starts_with("- ") {
            let Some(list_key) = in_list else {
                return Err(e(
                    "unexpected list item (only 'servers:', 'user:' and 'rename_command:' take a list)".into()
                ));
            };
            let ki = key_indent.unwrap_or(0);
            match item_indent {
                None if indent < ki => {
                    return Err(e(format!(
                        "bad indentation: list item at {indent} spaces, 'servers:' is at {ki}"
                    )))
                }
                None => item_indent = Some(indent),
                Some(ii) if ii != indent => {
                    return Err(e(format!(
                        "bad indentation: list item at {indent} spaces, previous items at {ii}"
                    )))
                }
                Some(_) => {}
            }
            if list_key.shape == Shape::Words {
                // Several words, quoted one by one or as a whole (see `split_words`).
                let item = body[1..].trim();
                if item.is_empty() {
                    return Err(e(format!("empty {} entry", list_key.name)));
                }
                pool.set(list_key, list_key.name, item, line).map_err(e)?;
                continue;
            }
            let item = unquote(body[1..].trim()).map_err(e)?;
            if item.is_empty() {
                return Err(e("empty server entry".into()));
            }
            pool.set(list_key, "servers", &item, line).map_err(e)?;
            continue;
        }

        // A `key: value` line of the current pool.
        match key_indent {
            None => key_indent = Some(indent),
            Some(ki) if ki != indent => {
                return Err(e(format!(
                    "bad indentation: expected {ki} spaces like the other keys of pool '{}', found {indent}",
                    pool.pool.name
                )))
            }
            Some(_) => {}
        }
        in_list = None;
        item_indent = None;
        let (key, value) = split_yaml_key(body).map_err(e)?;
        match key.as_str() {
            "servers" => {
                first_set(&mut pool.seen, "servers", "servers", line).map_err(e)?;
                if value.is_empty() {
                    in_list = Some(named("server"));
                } else if let Some(inner) =
                    value.strip_prefix('[').and_then(|v| v.strip_suffix(']'))
                {
                    for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let item = unquote(item).map_err(e)?;
                        pool.set(named("server"), "servers", &item, line)
                            .map_err(e)?;
                    }
                } else {
                    return Err(e(
                        "'servers' must be followed by a list of '- host:port:weight [name]' items"
                            .into(),
                    ));
                }
            }
            "server" => {
                return Err(e(
                    "unknown key 'server' (nutcracker uses a 'servers:' list)".into(),
                ))
            }
            "redis" => {
                first_set(&mut pool.seen, "redis", "redis", line).map_err(e)?;
                let v = unquote(&value).map_err(e)?;
                pool.redis = Some((parse_bool("redis", &v).map_err(e)?, line));
            }
            _ => {
                let k = pool_key(&key).ok_or_else(|| e(format!("unknown key '{key}'")))?;
                if k.shape == Shape::Words {
                    // `user: NAME PASSWORD LEVEL`, or `user:` opening a block list.
                    if value.is_empty() {
                        in_list = Some(k);
                    } else {
                        pool.set(k, &key, &value, line).map_err(e)?;
                    }
                    continue;
                }
                let v = unquote(&value).map_err(e)?;
                if v.is_empty() {
                    return Err(e(format!("missing value for '{key}'")));
                }
                pool.set(k, &key, &v, line).map_err(e)?;
            }
        }
    }
    for p in &pools {
        match p.redis {
            Some((true, _)) => {}
            Some((false, l)) => {
                return Err(err(
                    file,
                    l,
                    format!(
                        "pool {}: memcached pools (redis: false) are not supported by rustproxy",
                        p.pool.name
                    ),
                ))
            }
            None => {
                return Err(err(
                    file,
                    p.line,
                    format!(
                        "pool {}: memcached pools (redis: false) are not supported by rustproxy \
                         (nutcracker defaults to memcached; add 'redis: true')",
                        p.pool.name
                    ),
                ))
            }
        }
    }
    finish(cfg, pools, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::config::model::Listen;
    use crate::config::testutil::{yaml_err, MANIFEST};
    use crate::config::DEFAULT_TIMEOUT_MS;
    use crate::hash::HashKind;
    use std::path::Path;

    #[test]
    fn nutcracker_example_shapes() {
        let path = Path::new(MANIFEST).join("tests/fixtures/nutcracker.yml");
        let c = load(&path).unwrap();
        assert_eq!(c.format, Format::Nutcracker);
        let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "gamma", "omega"]);
        let alpha = &c.pools[0];
        assert!(alpha.auto_eject_hosts);
        assert_eq!(
            (alpha.server_retry_timeout_ms, alpha.server_failure_limit),
            (2000, 1)
        );
        assert_eq!(alpha.timeout_ms, DEFAULT_TIMEOUT_MS);
        let beta = &c.pools[1];
        assert_eq!(beta.hash_tag, Some(*b"{}"));
        assert_eq!(beta.timeout_ms, 400);
        let bn: Vec<String> = beta.servers.iter().map(|s| s.display_name()).collect();
        assert_eq!(bn, ["server1", "server2", "server3", "server4"]);
        assert_eq!(beta.servers[1].addr, "127.0.0.1:6381".parse().unwrap());
        assert_eq!(beta.servers[1].line, 23);
        let gamma = &c.pools[2];
        assert_eq!(
            (gamma.backlog, gamma.preconnect, gamma.server_failure_limit),
            (1024, true, 3)
        );
        assert_eq!(gamma.servers.len(), 2);
        let omega = &c.pools[3];
        assert_eq!(
            omega.listen,
            Listen::Unix {
                path: "/tmp/gamma".into(),
                mode: Some(0o666)
            }
        );
        assert_eq!(omega.hash, HashKind::Hsieh);
        assert_eq!(omega.servers[0].weight, 100000);
        assert_eq!(omega.redis_auth.as_deref(), Some("it's secret"));
        assert_eq!(
            (omega.redis_db, omega.max_clients, omega.server_connections),
            (3, 100, 2)
        );
        assert!(omega.tcpkeepalive);
    }

    #[test]
    fn nutcracker_syntax_variants() {
        // Comments, a whitespace-only line with a tab, bare IPv6 (twemproxy style), `...` end.
        let c = parse_nutcracker(
            "# comment\nmain:   # trailing\n    listen: 127.0.0.1:6390\n    redis: true\n\t\n\
             \n    servers:\n    - 127.0.0.1:7001:1\nother:\n  listen: ::1:6391\n  redis: true\n\
             \n  servers:\n    - ::1:7003:2\n...\nignored: x\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(
            c.pools[1].listen,
            Listen::Tcp("[::1]:6391".parse().unwrap())
        );
        assert_eq!(c.pools.len(), 2);
        let c = parse_nutcracker(
            "---\nmain:\n    listen: \"127.0.0.1:6390\"\n    redis: yes\n\
             \n    servers: [127.0.0.1:7001:1, '127.0.0.1:7002:1 two']\n    hash: 'md5'\n\
             other:\n  listen: '[::1]:6391'\n  redis: true\n  servers:\n    - ::1:7003:2\n...\nignored: x\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(c.pools[0].hash, HashKind::Md5);
        assert_eq!(c.pools[0].servers[1].display_name(), "two");
        assert_eq!(
            c.pools[1].listen,
            Listen::Tcp("[::1]:6391".parse().unwrap())
        );
        let s = &c.pools[1].servers[0];
        assert_eq!((s.host.as_str(), s.port, s.weight), ("::1", 7003, 2));
    }

    #[test]
    fn nutcracker_memcached_refused() {
        let e =
            load(&Path::new(MANIFEST).join("tests/fixtures/nutcracker-memcached.yml")).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.msg.starts_with(
            "pool alpha: memcached pools (redis: false) are not supported by rustproxy"
        ));
        let (l, m) =
            yaml_err("a:\n  listen: 127.0.0.1:1\n  redis: false\n  servers:\n  - 127.0.0.1:2:1\n");
        assert_eq!(
            (l, m.as_str()),
            (
                3,
                "pool a: memcached pools (redis: false) are not supported by rustproxy"
            )
        );
    }

    #[test]
    fn nutcracker_errors_carry_lines() {
        const OK: &str =
            "a:\n  listen: 127.0.0.1:6380\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1\n";
        let cases: &[(&str, usize, &str)] = &[
            ("a:\n  listen: 127.0.0.1:6380\n   hash: md5\n", 3, "bad indentation: expected 2 spaces"),
            ("a:\n  listen: 127.0.0.1:6380\n hash: md5\n", 3, "bad indentation: expected 2 spaces"),
            (&format!("{OK}   - 127.0.0.1:7002:1\n    - 127.0.0.1:7003:1\n"), 7, "bad indentation: list item"),
            ("a:\n  servers:\n - 127.0.0.1:7001:1\n", 3, "bad indentation: list item at 1 spaces"),
            ("  listen: 127.0.0.1:6380\n", 1, "unexpected indentation"),
            ("a: 1\n", 1, "expected 'pool_name:' at top level"),
            ("- x\n", 1, "expected 'pool_name:' at top level"),
            ("a:\n  listen 127.0.0.1:6380\n", 2, "expected 'key: value'"),
            ("a:\n\tlisten: 127.0.0.1:6380\n", 2, "tabs are not allowed"),
            ("a:\n  - 127.0.0.1:1:1\n", 2, "unexpected list item"),
            (&format!("{OK}  colour: blue\n"), 6, "unknown key 'colour'"),
            (&format!("{OK}  server: 127.0.0.1:1\n"), 6, "unknown key 'server'"),
            (&format!("{OK}  hash: md6\n"), 6, "unknown hash 'md6'"),
            (&format!("{OK}  hash_tag: \"{{\"\n"), 6, "hash_tag must be exactly two"),
            (&format!("{OK}  timeout:\n"), 6, "missing value for 'timeout'"),
            (&format!("{OK}  redis: true\n"), 6, "duplicate key 'redis' (first set on line 3)"),
            (&format!("{OK}  servers:\n"), 6, "duplicate key 'servers' (first set on line 4)"),
            (&format!("{OK}  servers: 127.0.0.1:1:1\n"), 6, "duplicate key 'servers'"),
            (&format!("{OK}   - 127.0.0.1:7002:0\n"), 6, "server '127.0.0.1:7002:0': weight must be greater"),
            (&format!("{OK}a:\n"), 6, "duplicate pool name 'a' (first defined on line 1)"),
            ("a:\n  listen: 127.0.0.1:6380\n  redis: true\n  servers:\n", 1, "pool 'a' has no servers (add 'servers')"),
            ("# nothing\n", 0, "no pool defined"),
            (
                &format!("{OK}b:\n  listen: 127.0.0.1:6380\n  redis: true\n  servers:\n  - 127.0.0.1:1:1\n"),
                7,
                "pool 'b' listens on 127.0.0.1:6380, already used by pool 'a' on line 2",
            ),
        ];
        for (text, line, msg) in cases {
            let (l, m) = yaml_err(text);
            assert!(m.starts_with(msg), "{text:?}: got {m:?}, want {msg:?}");
            assert_eq!(l, *line, "{text:?}: {m}");
        }
        assert!(parse_nutcracker(OK, "t.yml").is_ok());
    }
}
