//! One-pool configs from the command line: [`from_cli`] (`-l ADDR -b LIST` plus any pool
//! key as `--key-with-dashes VALUE`) and [`POOL_OPTIONS`], the list `main.rs` turns into
//! long options and `--help` lines.
//!
//! Invariants:
//! * [`POOL_OPTIONS`] is computed at compile time from the key table: the pool keys with a
//!   `cli` entry, in table order, so a key added to the table is a command-line option
//!   without further edits.
//! * A CLI config goes through the same setters and validation as a file; errors name the
//!   flag (`--hash-tag: ...`) and the file `command line`, line 0.

use super::builder::PoolBuilder;
use super::keys::{global_key, named, pool_key, Arg, PoolKey, POOL_KEYS};
use super::model::{err, Config, ConfigError, Format};
use super::validate::finish;

/// Pool keys that can also be given on the command line as `--key-with-dashes VALUE`
/// (with `-l`/`-b`): `(key, value hint, help)`.  `listen` and `server` are `-l`/`-b`.
pub const POOL_OPTIONS: &[(&str, &str, &str)] = &CLI_OPTIONS;

const CLI_COUNT: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < POOL_KEYS.len() {
        if POOL_KEYS[i].cli.is_some() {
            n += 1;
        }
        i += 1;
    }
    n
};

const CLI_OPTIONS: [(&str, &str, &str); CLI_COUNT] = cli_options(POOL_KEYS);

const fn cli_options<const N: usize>(
    keys: &[PoolKey],
) -> [(&'static str, &'static str, &'static str); N] {
    let mut out = [("", "", ""); N];
    let (mut i, mut j) = (0, 0);
    while i < keys.len() {
        if let Some((hint, help)) = keys[i].cli {
            out[j] = (keys[i].name, hint, help);
            j += 1;
        }
        i += 1;
    }
    out
}

/// A one-pool config (named `default`) from `-l`/`-b` values.  `backends` is
/// a comma-separated list of `host:port[:weight]`; `opts` are further keys
/// (pool or global, dashes or underscores), with the same validation and
/// defaults as the native format.
pub fn from_cli(
    listen: &str,
    backends: &str,
    opts: &[(String, String)],
) -> Result<Config, ConfigError> {
    const FILE: &str = "command line";
    let mut cfg = Config::empty(Format::Native);
    let mut pool = PoolBuilder::new("default", 0);
    pool.set(named("listen"), "listen", listen.trim(), 0)
        .map_err(|m| err(FILE, 0, format!("--listen: {m}")))?;
    for b in backends.split(',').map(str::trim) {
        if b.is_empty() {
            return Err(err(
                FILE,
                0,
                format!("--backends: empty entry in '{backends}'"),
            ));
        }
        pool.set(named("server"), "server", b, 0)
            .map_err(|m| err(FILE, 0, format!("--backends: {m}")))?;
    }
    for (k, v) in opts {
        let key = k.trim_start_matches('-').replace('-', "_");
        let flag = key.replace('_', "-");
        let e = |m: String| err(FILE, 0, format!("--{flag}: {m}"));
        if let Some(g) = global_key(&key) {
            let arg = Arg {
                key: &key,
                value: v,
                line: 0,
            };
            (g.set)(&mut cfg, &arg).map_err(e)?;
        } else if let Some(pk) = pool_key(&key) {
            if pk.name == "listen" || pk.name == "server" {
                return Err(e("use -l/--listen and -b/--backends".into()));
            }
            pool.set(pk, &key, v, 0).map_err(e)?;
        } else {
            return Err(e(format!("unknown option '{k}'")));
        }
    }
    finish(cfg, vec![pool], FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Format, DEFAULT_MAX_OUTPUT};
    use crate::config::testutil::assert_round_trip;
    use crate::config::values::{DISTRIBUTION_NAMES, HASH_NAMES};
    use crate::hash::HashKind;
    use crate::ring::Distribution;

    #[test]
    fn cli_config() {
        let opts = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = from_cli(
            "127.0.0.1:6380",
            "127.0.0.1:7001, 127.0.0.1:7002:3",
            &opts(&[
                ("hash", "md5"),
                ("distribution", "modula"),
                ("hash-tag", "{}"),
                ("--timeout", "50"),
                ("log_level", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!((c.path.clone(), c.format), (None, Format::Native));
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        let p = &c.pools[0];
        assert_eq!(p.name, "default");
        assert_eq!(
            (p.hash, p.distribution, p.hash_tag),
            (HashKind::Md5, Distribution::Modula, Some(*b"{}"))
        );
        assert_eq!(p.timeout_ms, 50);
        assert_eq!(p.servers[1].weight, 3);
        assert_eq!(p.servers[1].line, 0);
        assert_round_trip(&c);
        let d = from_cli("127.0.0.1:6380", "127.0.0.1:7001", &[]).unwrap();
        assert_eq!(d.pools[0].max_output, DEFAULT_MAX_OUTPUT);
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "127.0.0.1",
                "127.0.0.1:7001",
                &[],
                "command line: --listen: bad address",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001,",
                &[],
                "command line: --backends: empty entry",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001:0",
                &[],
                "command line: --backends: server",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001,127.0.0.1:7001",
                &[],
                "command line: duplicate server",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001",
                &[("hash", "sha1")],
                "command line: --hash: unknown hash 'sha1'",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001",
                &[("hash_tag", "{")],
                "command line: --hash-tag: hash_tag must",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001",
                &[("frobnicate", "1")],
                "command line: --frobnicate: unknown option",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001",
                &[("server", "127.0.0.1:1")],
                "command line: --server: use -l/--listen",
            ),
            (
                "127.0.0.1:6380",
                "127.0.0.1:7001",
                &[("hash", "md5"), ("hash", "crc32")],
                "command line: --hash: duplicate key",
            ),
        ];
        for (l, b, o, msg) in cases {
            let e = from_cli(l, b, &opts(o)).unwrap_err();
            assert_eq!(e.line, 0);
            assert!(e.to_string().starts_with(msg), "got {e}, want {msg}");
        }
    }

    #[test]
    fn pool_options_are_pool_keys() {
        for (k, _, _) in POOL_OPTIONS {
            assert_eq!(pool_key(k).map(|pk| pk.name), Some(*k));
        }
        let with_cli: Vec<&str> = POOL_KEYS
            .iter()
            .filter(|pk| pk.cli.is_some())
            .map(|pk| pk.name)
            .collect();
        let options: Vec<&str> = POOL_OPTIONS.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(options, with_cli);
        for n in HASH_NAMES {
            assert_eq!(HashKind::from_name(n).map(|h| h.name()), Some(*n));
        }
        for n in DISTRIBUTION_NAMES {
            assert_eq!(Distribution::from_name(n).map(|d| d.name()), Some(*n));
        }
    }
}
