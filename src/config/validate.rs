//! Validation shared by every format: what one line cannot check on its own.  [`finish`]
//! turns the parsed builders into the final [`Config`] or the first error, at the line that
//! caused it.
//!
//! Invariants (what a returned `Config` guarantees, see the module docs of `config`):
//! * at least one pool; every pool has a `listen` address and at least one server;
//! * server names (or `host:port` without a name) are unique within a pool; no two pools
//!   listen on the same address (an unspecified IP conflicts with every IP on that port);
//! * the credential and TLS keys come in working combinations ([`check_auth_tls`]).

use std::collections::HashMap;

use super::builder::PoolBuilder;
use super::model::{err, Config, ConfigError, Format, Listen};

/// Shared validation; turns builders into the final `Config`.
pub(super) fn finish(
    mut cfg: Config,
    pools: Vec<PoolBuilder>,
    file: &str,
) -> Result<Config, ConfigError> {
    if pools.is_empty() {
        return Err(err(
            file,
            0,
            match cfg.format {
                Format::Native => {
                    "no pool defined (add 'pool NAME' with 'listen' and 'server' lines)"
                }
                Format::Nutcracker => "no pool defined",
            },
        ));
    }
    let server_key = match cfg.format {
        Format::Native => "server",
        Format::Nutcracker => "servers",
    };
    let mut listens: Vec<(Listen, String, usize)> = Vec::new();
    for b in pools {
        let p = &b.pool;
        let Some(listen_line) = b.listen else {
            return Err(err(
                file,
                b.line,
                format!("pool '{}' has no 'listen' address", p.name),
            ));
        };
        if p.servers.is_empty() {
            return Err(err(
                file,
                b.line,
                format!("pool '{}' has no servers (add '{server_key}')", p.name),
            ));
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        for s in &p.servers {
            let n = s.display_name();
            if let Some(first) = names.insert(n.clone(), s.line) {
                let what = if s.name.is_some() {
                    "server name"
                } else {
                    "server"
                };
                return Err(err(
                    file,
                    s.line,
                    if first == 0 {
                        format!("duplicate {what} '{n}' in pool '{}'", p.name)
                    } else {
                        format!(
                            "duplicate {what} '{n}' in pool '{}' (first on line {first})",
                            p.name
                        )
                    },
                ));
            }
        }
        check_auth_tls(&b).map_err(|(l, m)| err(file, l, m))?;
        if p.rebalance && (p.cluster || p.auto_eject_hosts || p.hash_override) {
            let at = b.seen.get("rebalance").copied().unwrap_or(b.line);
            let why = if p.cluster {
                "Redis Cluster moves its own slots"
            } else if p.auto_eject_hosts {
                "an ejected server's keys would be served elsewhere without being moved"
            } else {
                "a key placed by its hash= hint is moved by its own name, where the hint no longer finds it"
            };
            return Err(err(
                file,
                at,
                format!(
                    "pool '{}': 'rebalance yes' does not go with '{}' ({why})",
                    p.name,
                    if p.cluster {
                        "cluster yes"
                    } else if p.auto_eject_hosts {
                        "auto_eject_hosts yes"
                    } else {
                        "hash_override yes"
                    }
                ),
            ));
        }
        if p.hotkey_cache > 0 && (p.cluster || p.hotkeys == 0) {
            let at = b.seen.get("hotkey_cache").copied().unwrap_or(b.line);
            let why = if p.cluster {
                "'cluster yes' (cluster pools do not cache hot keys)"
            } else {
                "'hotkeys 0' (the cache takes the keys detection finds)"
            };
            return Err(err(
                file,
                at,
                format!("pool '{}': 'hotkey_cache' does not go with {why}", p.name),
            ));
        }
        if p.hotkeys > 1000 {
            let at = b.seen.get("hotkeys").copied().unwrap_or(b.line);
            return Err(err(
                file,
                at,
                format!("pool '{}': 'hotkeys' is at most 1000", p.name),
            ));
        }
        if let Some((_, other, l)) = listens
            .iter()
            .find(|(l, _, _)| listen_conflict(l, &p.listen))
        {
            let at = if *l == 0 {
                String::new()
            } else {
                format!(" on line {l}")
            };
            return Err(err(
                file,
                listen_line,
                format!(
                    "pool '{}' listens on {}, already used by pool '{other}'{at}",
                    p.name, p.listen
                ),
            ));
        }
        listens.push((p.listen.clone(), p.name.clone(), listen_line));
        cfg.pools.push(b.pool);
    }
    Ok(cfg)
}

/// Cross-key checks of the credential and TLS keys: `Err((line, message))`.
fn check_auth_tls(builder: &PoolBuilder) -> Result<(), (usize, String)> {
    let p = &builder.pool;
    let at = |k: &str| builder.seen.get(k).copied().unwrap_or(builder.line);
    let pairs = [
        (
            "tls_cert_file",
            "tls_key_file",
            p.tls_cert_file.is_some(),
            p.tls_key_file.is_some(),
        ),
        (
            "backend_tls_cert_file",
            "backend_tls_key_file",
            p.backend_tls_cert_file.is_some(),
            p.backend_tls_key_file.is_some(),
        ),
    ];
    for (a, b, has_a, has_b) in pairs {
        if has_a != has_b {
            let (set, missing) = if has_a { (a, b) } else { (b, a) };
            return Err((at(set), format!("'{set}' needs '{missing}' too")));
        }
    }
    if p.tls_client_ca_file.is_some() && p.tls_cert_file.is_none() {
        return Err((
            at("tls_client_ca_file"),
            "'tls_client_ca_file' needs 'tls_cert_file' and 'tls_key_file' (a TLS listener)".into(),
        ));
    }
    if !p.backend_tls {
        let set = [
            ("backend_tls_ca_file", p.backend_tls_ca_file.is_some()),
            (
                "backend_tls_server_name",
                p.backend_tls_server_name.is_some(),
            ),
            ("backend_tls_cert_file", p.backend_tls_cert_file.is_some()),
            ("backend_tls_insecure", p.backend_tls_insecure),
        ];
        if let Some((k, _)) = set.iter().find(|(_, s)| *s) {
            return Err((at(k), format!("'{k}' needs 'backend_tls yes'")));
        }
    }
    let pool_pass = p.backend_password.is_some() || p.redis_auth.is_some();
    if p.backend_username.is_some() && !pool_pass {
        return Err((
            at("backend_username"),
            "'backend_username' needs a password ('backend_password' or 'redis_auth')".into(),
        ));
    }
    for s in &p.servers {
        if s.username.is_some() && s.password.is_none() && !pool_pass {
            return Err((
                s.line,
                format!(
                    "server '{}': user= needs a password (password=, 'backend_password' or 'redis_auth')",
                    s.display_name()
                ),
            ));
        }
    }
    Ok(())
}

fn listen_conflict(a: &Listen, b: &Listen) -> bool {
    match (a, b) {
        (Listen::Tcp(x), Listen::Tcp(y)) => {
            x.port() == y.port()
                && (x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified())
        }
        (Listen::Unix { path: x, .. }, Listen::Unix { path: y, .. }) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testutil::{assert_pool_errors, assert_round_trip, native, AUTH_POOL};
    use std::path::PathBuf;

    #[test]
    fn tls_keys() {
        let c = native(&format!(
            "{AUTH_POOL}tls_cert_file /c.pem\ntls_key_file \"/k ey.pem\"\ntls_client_ca_file /ca.pem\n\
             backend_tls yes\nbackend_tls_ca_file /bca.pem\nbackend_tls_server_name redis.local\n\
             backend_tls_cert_file /bc.pem\nbackend_tls_key_file /bk.pem\nbackend_tls_insecure yes\n"
        ))
        .unwrap();
        let p = &c.pools[0];
        assert!(p.tls_listen());
        assert_eq!(p.tls_cert_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(p.tls_key_file, Some(PathBuf::from("/k ey.pem")));
        assert_eq!(p.tls_client_ca_file, Some(PathBuf::from("/ca.pem")));
        assert!(p.backend_tls && p.backend_tls_insecure);
        assert_eq!(p.backend_tls_ca_file, Some(PathBuf::from("/bca.pem")));
        assert_eq!(p.backend_tls_cert_file, Some(PathBuf::from("/bc.pem")));
        assert_eq!(p.backend_tls_key_file, Some(PathBuf::from("/bk.pem")));
        assert_eq!(p.backend_tls_name(&p.servers[0].host), "redis.local");
        assert_round_trip(&c);
        let c = native(&format!("{AUTH_POOL}backend_tls yes\n")).unwrap();
        let p = &c.pools[0];
        assert!(!p.tls_listen() && !p.backend_tls_insecure);
        assert_eq!(p.backend_tls_name(&p.servers[0].host), "127.0.0.1");
        assert_round_trip(&c);

        assert_pool_errors(&[
            (
                "tls_cert_file /c\n",
                4,
                "'tls_cert_file' needs 'tls_key_file' too",
            ),
            (
                "\ntls_key_file /k\n",
                5,
                "'tls_key_file' needs 'tls_cert_file' too",
            ),
            ("tls_client_ca_file /ca\n", 4, "needs 'tls_cert_file'"),
            (
                "backend_tls yes\nbackend_tls_cert_file /c\n",
                5,
                "needs 'backend_tls_key_file' too",
            ),
            (
                "backend_tls_ca_file /ca\n",
                4,
                "'backend_tls_ca_file' needs 'backend_tls yes'",
            ),
            (
                "backend_tls no\nbackend_tls_insecure yes\n",
                5,
                "'backend_tls_insecure' needs 'backend_tls yes'",
            ),
            (
                "backend_tls_server_name \"a b\"\n",
                4,
                "bad backend_tls_server_name",
            ),
        ]);
    }
}
