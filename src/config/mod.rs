//! Configuration: the native `proxy.conf` format, nutcracker's (twemproxy's)
//! YAML format, and one-pool configs built from command-line values, all
//! producing the same validated [`Config`].
//!
//! Invariants:
//! * A `Config` returned by [`load`], [`parse_native`], [`parse_nutcracker`]
//!   or [`from_cli`] is fully validated: at least one pool, every pool has a
//!   listen address and at least one server, names and listen addresses are
//!   unique, every backend address is resolved.  Nothing binds or connects
//!   before this succeeds, so a bad config never half-starts the proxy.
//! * Every [`ConfigError`] names its origin as `file:line` (`line` 0 when the
//!   problem is not tied to one line, e.g. "no pool defined"; `file` is
//!   `"command line"` for `-l`/`-b` configs).
//! * `parse_native(&render_native(c))` reproduces `c` except for `path`,
//!   `format` and the `line` of each server.
//! * Each key is declared once, in the key tables of `keys`; each default is
//!   written once, in `model`.
//!
//! Rooms (arrows point to what a room uses):
//! * `model`: [`Config`], [`PoolConfig`], [`ServerConfig`], [`Listen`], the
//!   access-control enums [`Level`] and [`AdminPolicy`], the `DEFAULT_*` values,
//!   [`ConfigError`].  Uses nothing else here.
//! * `lex`: comments, quoting, words, YAML `key: value`.  Uses nothing else here.
//! * `values`: value parsers and renderers (numbers, sizes, booleans, addresses,
//!   `server` lines) -> `model`.
//! * `keys`: the key tables (name, aliases, shape, CLI help, setter, renderer)
//!   -> `builder`, `lex`, `values`, `model`.
//! * `builder`: one pool's parse state; applies a key through its row -> `keys`, `model`.
//! * `validate`: checks across keys and pools, builds the final [`Config`]
//!   -> `builder`, `model`.
//! * `native`, `nutcracker`, `cli`: the three sources (and `render_native`)
//!   -> `keys`, `builder`, `validate`, `lex`, `values`, `model`.
//!
//! Access-control keys (`requirepass`, repeatable `user NAME PASSWORD LEVEL`,
//! `default_level`, `admin_commands`, repeatable `rename_command OLD NEW`) fill
//! [`PoolConfig`] fields that [`crate::auth`] turns into its `Users` and
//! `Renames`; backend credentials (`backend_username`, `backend_password`,
//! `server ... user=NAME password=PASS`) and TLS keys are stored here and used
//! by the connection code through [`PoolConfig::backend_auth`] and
//! [`PoolConfig::backend_tls_name`].
//!
//! Format detection in [`load`]: a `.yml`/`.yaml` extension means
//! nutcracker; otherwise the first line that is neither blank nor a comment
//! decides: `---`, or a line ending in `:` whose first word is not `pool`,
//! means nutcracker, anything else means native.

mod builder;
mod cli;
mod keys;
mod lex;
mod model;
mod native;
mod nutcracker;
#[cfg(test)]
mod testutil;
mod validate;
mod values;

use std::path::Path;

pub use cli::{from_cli, POOL_OPTIONS};
pub use model::{
    AdminPolicy, Config, ConfigError, Format, Level, Listen, PoolConfig, ReadFrom, ServerConfig,
    DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_OUTPUT,
    DEFAULT_MAX_PENDING, DEFAULT_MAX_REQUEST, DEFAULT_PRIVATE_CONNECTIONS,
    DEFAULT_PUBSUB_MAX_OUTPUT, DEFAULT_SERVER_CONNECTIONS, DEFAULT_SERVER_FAILURE_LIMIT,
    DEFAULT_SERVER_RETRY_TIMEOUT_MS, DEFAULT_STATS_ADDR, DEFAULT_STATS_INTERVAL_MS,
    DEFAULT_STATS_PORT, DEFAULT_TIMEOUT_MS, LEVEL_NAMES,
};
pub use native::{parse_native, render_native};
pub use nutcracker::parse_nutcracker;
pub use values::{
    parse_flag, parse_log_level, parse_server, parse_size, DISTRIBUTION_NAMES, HASH_NAMES,
};

use lex::strip_comment;
use model::err;

/// Read and parse a config file, detecting its format (see the module docs).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(&file, 0, format!("cannot read configuration: {e}")))?;
    let mut c = match detect_format(path, &text) {
        Format::Native => parse_native(&text, &file)?,
        Format::Nutcracker => parse_nutcracker(&text, &file)?,
    };
    c.path = Some(path.to_path_buf());
    Ok(c)
}

/// [`load`] without name resolution, for callers that must not block (a reload on the event
/// loop reads the local file, bounded, but never waits on DNS): None when the file names a host
/// that is not an IP address (then [`load`] it where blocking is fine).
pub fn load_without_dns(path: &Path) -> Option<Result<Config, ConfigError>> {
    values::NO_DNS.with(|f| f.set(true));
    values::DNS_NEEDED.with(|f| f.set(false));
    let r = load(path);
    values::NO_DNS.with(|f| f.set(false));
    if values::DNS_NEEDED.with(|f| f.replace(false)) {
        return None;
    }
    Some(r)
}

/// The format [`load`] would use for this file.
pub fn detect_format(path: &Path, text: &str) -> Format {
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        if ext.eq_ignore_ascii_case("yml") || ext.eq_ignore_ascii_case("yaml") {
            return Format::Nutcracker;
        }
    }
    for raw in text.lines() {
        let l = strip_comment(raw).trim();
        if l.is_empty() {
            continue;
        }
        let first = l.split_whitespace().next().unwrap_or("");
        if l == "---" || (l.ends_with(':') && first != "pool") {
            return Format::Nutcracker;
        }
        return Format::Native;
    }
    Format::Native
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_detection() {
        let p = Path::new("x.conf");
        assert_eq!(
            detect_format(Path::new("x.yml"), "pool a\n"),
            Format::Nutcracker
        );
        assert_eq!(detect_format(Path::new("x.YAML"), ""), Format::Nutcracker);
        assert_eq!(
            detect_format(p, "# c\n\nalpha:\n  listen: x\n"),
            Format::Nutcracker
        );
        assert_eq!(detect_format(p, "alpha:   # c\n"), Format::Nutcracker);
        assert_eq!(detect_format(p, "---\n"), Format::Nutcracker);
        assert_eq!(detect_format(p, "# a:\npool main\n"), Format::Native);
        assert_eq!(detect_format(p, "pool main:\n"), Format::Native);
        assert_eq!(detect_format(p, "log_level info\n"), Format::Native);
        assert_eq!(detect_format(p, ""), Format::Native);
        let e = load(Path::new("/nonexistent/rustproxy.conf")).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line),
            ("/nonexistent/rustproxy.conf", 0)
        );
        assert!(e.msg.starts_with("cannot read configuration"));
    }
}

#[cfg(test)]
mod load_tests {
    /// A reload on the event loop reads a file of IP addresses itself and leaves one naming a
    /// host to the offload thread (None), and the "no DNS" mode does not leak into later loads.
    #[test]
    fn load_without_dns_only_for_ip_addresses() {
        let dir = std::env::temp_dir().join(format!("rp-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ip = dir.join("ip.conf");
        let host = dir.join("host.conf");
        std::fs::write(
            &ip,
            "pool p\n    listen 127.0.0.1:6380\n    server 127.0.0.1:7001:1\n",
        )
        .unwrap();
        std::fs::write(
            &host,
            "pool p\n    listen 127.0.0.1:6380\n    server localhost:7001:1\n",
        )
        .unwrap();
        assert!(matches!(super::load_without_dns(&ip), Some(Ok(_))));
        assert!(super::load_without_dns(&host).is_none());
        assert!(
            super::load(&host).is_ok(),
            "DNS allowed again after the no-DNS load"
        );
        assert!(matches!(super::load_without_dns(&ip), Some(Ok(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
