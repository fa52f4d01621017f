//! The key tables: every config key declared once, as one row that says its name, the
//! other names it is accepted under, how many times it may appear, its command-line hint and
//! help, how its value is parsed into the model and how it is rendered back.
//!
//! Everything that used to list the keys is driven by these rows: name lookup and alias
//! canonicalisation ([`pool_key`], [`global_key`]), the pool builder's setter
//! (`PoolBuilder::set` calls the row's `set`), the native renderer (each row's `render`, in
//! table order), the command-line options and their help (`cli::POOL_OPTIONS` is the rows
//! with a `cli` entry, in table order), and the native lexer's multi-word values
//! ([`Shape::Words`]).
//!
//! Invariants (checked by the tests at the bottom):
//! * Names are unique across names and aliases, lower case with underscores; a row's
//!   `render` writes values its `set` reads back to the same model (the round trip).
//! * Every key is rendered explicitly, defaults included, except: options that are unset
//!   (None or empty), `cluster` and `command_stats` at their defaults, and the keys that
//!   only apply with another one (`read_from` without `cluster`, `backend_tls_insecure`
//!   without `backend_tls`).  Those read back to the same model by their absence.
//! * Table order is the order of `render_native`'s output and of `--help`.
//! * Help texts that state a default agree with the model (`model::PoolConfig::with_defaults`).

use std::ffi::OsStr;
use std::path::PathBuf;

use super::builder::PoolBuilder;
use super::lex::{quote, split_words};
use super::model::{AdminPolicy, Config, Level, PoolConfig, ReadFrom, LEVEL_NAMES};
use super::values::{
    check_word, parse_bool, parse_listen, parse_log_level, parse_min1, parse_num, parse_server,
    parse_size, parse_tcp_addr, render_server, render_size, yes_no, DISTRIBUTION_NAMES, HASH_NAMES,
};
use crate::hash::HashKind;
use crate::ring::Distribution;

/// What a setter is given: the key as written (underscores; for messages), its value
/// (unquoted, except for [`Shape::Words`] keys) and its line (0 = command line).
pub(crate) struct Arg<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub line: usize,
}

/// How many times a key may appear in one pool (or globally), and how its value is lexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Once; a second occurrence is a "duplicate key" error.  One value, maybe quoted.
    Once,
    /// Any number of times, one value each (`server`).
    Repeated,
    /// Any number of times, several words each maybe quoted (`user`, `rename_command`);
    /// the setter splits them.
    Words,
}

pub(crate) type Set<T> = fn(&mut T, &Arg) -> Result<(), String>;
pub(crate) type Render<V> = fn(&V) -> Vec<String>;

/// One key.  `T` is what its setter fills, `V` what its renderer reads.
pub(crate) struct Key<T, V> {
    /// Canonical name: what the renderer writes and errors about the key say.
    pub name: &'static str,
    /// Other accepted names, folded to `name`.
    pub aliases: &'static [&'static str],
    pub shape: Shape,
    /// `(value hint, help)` of the `--name-with-dashes` option for `-l`/`-b` pools; None: not
    /// such an option (`listen` and `server` are `-l`/`-b`, `cluster` is `--cluster`).
    pub cli: Option<(&'static str, &'static str)>,
    /// Parse the value into the model; errors without `file:line`.
    pub set: Set<T>,
    /// The values to write back, one `name value` line each (none = line omitted).
    pub render: Render<V>,
}

pub(crate) type PoolKey = Key<PoolBuilder, PoolConfig>;
pub(crate) type GlobalKey = Key<Config, Config>;

/// The part of a row its value kind decides; rows fill in the rest with `..`.
const fn kind<T, V>(set: Set<T>, render: Render<V>) -> Key<T, V> {
    Key {
        name: "",
        aliases: &[],
        shape: Shape::Once,
        cli: None,
        set,
        render,
    }
}

const fn cli(hint: &'static str, help: &'static str) -> Option<(&'static str, &'static str)> {
    Some((hint, help))
}

/// Value kinds of pool fields: `$parse(key, value)` into `pool.$f`, rendered by `$render`.
macro_rules! field {
    ($f:ident, $parse:expr, $render:expr) => {
        kind(
            |b: &mut PoolBuilder, a: &Arg| {
                b.pool.$f = $parse(a.key, a.value)?;
                Ok(())
            },
            |p: &PoolConfig| vec![$render(&p.$f)],
        )
    };
}
/// A plain number (`MS`, `N`).
macro_rules! num {
    ($f:ident) => {
        field!($f, parse_num, ToString::to_string)
    };
}
/// A number of at least 1.
macro_rules! min1 {
    ($f:ident) => {
        field!($f, parse_min1, ToString::to_string)
    };
}
/// A byte size (`64mb`).
macro_rules! size {
    ($f:ident) => {
        field!($f, parse_size, |n: &usize| render_size(*n))
    };
}
/// A boolean (`yes`/`no`).
macro_rules! flag {
    ($f:ident) => {
        field!($f, parse_bool, |b: &bool| yes_no(*b).to_string())
    };
}
/// An optional value (`Option<String>` or `Option<PathBuf>`), rendered quoted when set.
macro_rules! opt {
    ($f:ident, $parse:expr) => {
        kind(
            |b: &mut PoolBuilder, a: &Arg| {
                b.pool.$f = Some($parse(a.key, a.value)?);
                Ok(())
            },
            |p: &PoolConfig| {
                p.$f.iter()
                    .map(|v| quote(&OsStr::new(v).to_string_lossy()))
                    .collect()
            },
        )
    };
}

/// Any text (passwords).
fn text(_: &str, v: &str) -> Result<String, String> {
    Ok(v.to_string())
}
/// A file path.
fn path(_: &str, v: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(v))
}
/// A name that must render as a bare word.
fn word(key: &str, v: &str) -> Result<String, String> {
    check_word(key, v)?;
    Ok(v.to_string())
}

/// One rendered value when `cond` holds, else none (the line is left out).
fn only_if(cond: bool, value: impl FnOnce() -> String) -> Vec<String> {
    if cond {
        vec![value()]
    } else {
        vec![]
    }
}

/// Every pool key, in the order `render_native` writes them and `--help` lists them.
pub(crate) static POOL_KEYS: &[PoolKey] = &[
    Key {
        name: "listen",
        ..kind(
            |b, a| {
                b.pool.listen = parse_listen(a.value)?;
                b.listen = Some(a.line);
                Ok(())
            },
            |p| vec![p.listen.to_string()],
        )
    },
    Key {
        name: "hash",
        cli: cli("NAME", "key hash (default fnv1a_64)"),
        ..kind(
            |b, a| {
                b.pool.hash = HashKind::from_name(a.value).ok_or_else(|| {
                    format!(
                        "unknown hash '{}' (expected one of {})",
                        a.value,
                        HASH_NAMES.join(", ")
                    )
                })?;
                Ok(())
            },
            |p| vec![p.hash.name().to_string()],
        )
    },
    Key {
        name: "distribution",
        cli: cli("NAME", "ketama|modula|random (default ketama)"),
        ..kind(
            |b, a| {
                b.pool.distribution = Distribution::from_name(a.value).ok_or_else(|| {
                    format!(
                        "unknown distribution '{}' (expected one of {})",
                        a.value,
                        DISTRIBUTION_NAMES.join(", ")
                    )
                })?;
                Ok(())
            },
            |p| vec![p.distribution.name().to_string()],
        )
    },
    Key {
        name: "hash_tag",
        cli: cli(
            "TAG",
            "two characters or none; YAML pools default to none (default {})",
        ),
        ..kind(
            |b, a| {
                let v = a.value;
                if v.eq_ignore_ascii_case("none") || v.is_empty() {
                    b.pool.hash_tag = None;
                    return Ok(());
                }
                if v.len() != 2 || !v.is_ascii() {
                    return Err(format!(
                        "hash_tag must be exactly two ASCII characters like \"{{}}\", got '{v}'"
                    ));
                }
                let t = v.as_bytes();
                b.pool.hash_tag = Some([t[0], t[1]]);
                Ok(())
            },
            // Always written: the default differs between the formats.
            |p| match p.hash_tag {
                Some(t) => vec![quote(&String::from_utf8_lossy(&t))],
                None => vec!["none".to_string()],
            },
        )
    },
    Key {
        name: "timeout",
        cli: cli("MS", "request timeout, 0 = none (default 1000)"),
        ..num!(timeout_ms)
    },
    Key {
        name: "connect_timeout",
        cli: cli("MS", "backend connect timeout (default 1000)"),
        ..num!(connect_timeout_ms)
    },
    Key {
        name: "server_connections",
        cli: cli("N", "connections per backend (default 1)"),
        ..min1!(server_connections)
    },
    Key {
        name: "backlog",
        cli: cli("N", "listen backlog (default 512)"),
        ..num!(backlog)
    },
    Key {
        name: "preconnect",
        cli: cli("BOOL", "connect to backends at startup (default no)"),
        ..flag!(preconnect)
    },
    Key {
        name: "auto_eject_hosts",
        cli: cli("BOOL", "eject failing backends (default no)"),
        ..flag!(auto_eject_hosts)
    },
    Key {
        name: "server_retry_timeout",
        cli: cli("MS", "retry an ejected backend after (default 30000)"),
        ..num!(server_retry_timeout_ms)
    },
    Key {
        name: "server_failure_limit",
        cli: cli("N", "failures before ejection (default 2)"),
        ..min1!(server_failure_limit)
    },
    Key {
        name: "max_clients",
        aliases: &["client_connections"],
        cli: cli("N", "client limit, 0 = unlimited (default 10000)"),
        ..num!(max_clients)
    },
    Key {
        name: "client_idle_timeout",
        cli: cli("MS", "close idle clients, 0 = never (default 0)"),
        ..num!(client_idle_timeout_ms)
    },
    Key {
        name: "max_pending",
        cli: cli("N", "pending requests per client (default 1024)"),
        ..min1!(max_pending)
    },
    Key {
        name: "max_output",
        cli: cli("SIZE", "output buffer per client (default 64mb)"),
        ..size!(max_output)
    },
    Key {
        name: "max_request",
        cli: cli("SIZE", "largest argument (default 512mb)"),
        ..size!(max_request)
    },
    Key {
        name: "tcpkeepalive",
        cli: cli("BOOL", "TCP keepalive on backends (default no)"),
        ..flag!(tcpkeepalive)
    },
    Key {
        name: "pubsub_max_output",
        cli: cli(
            "SIZE",
            "unread pub/sub messages per subscriber before it is disconnected (default 32mb)",
        ),
        ..size!(pubsub_max_output)
    },
    Key {
        name: "hash_override",
        cli: cli("BOOL", "route by a trailing hash=KEY argument (default no)"),
        ..flag!(hash_override)
    },
    Key {
        name: "reuseport",
        cli: cli("BOOL", "SO_REUSEPORT on the listener (default no)"),
        ..flag!(reuseport)
    },
    Key {
        name: "redis_auth",
        cli: cli(
            "PASSWORD",
            "password clients must AUTH with, also sent to backends (default none)",
        ),
        // Empty (possible on the command line) means none.
        set: |b, a| {
            b.pool.redis_auth = (!a.value.is_empty()).then(|| a.value.to_string());
            Ok(())
        },
        ..opt!(redis_auth, text)
    },
    Key {
        name: "requirepass",
        cli: cli(
            "PASSWORD",
            "password clients must AUTH with; overrides redis_auth for clients (default none)",
        ),
        ..opt!(requirepass, text)
    },
    Key {
        name: "user",
        shape: Shape::Words,
        cli: cli(
            "'NAME PASSWORD LEVEL'",
            "a user (level readonly|readwrite|admin); once on the command line",
        ),
        ..kind(set_user, |p| {
            p.users
                .iter()
                .map(|(name, pass, level)| format!("{name} {} {}", quote(pass), level.name()))
                .collect()
        })
    },
    Key {
        name: "default_level",
        cli: cli(
            "LEVEL",
            "level of the default user: readonly|readwrite|admin (default admin)",
        ),
        ..kind(
            |b, a| {
                b.pool.default_level = Level::from_name(a.value).ok_or_else(|| {
                    format!(
                        "unknown level '{}' for '{}' (expected {})",
                        a.value,
                        a.key,
                        LEVEL_NAMES.join(", ")
                    )
                })?;
                Ok(())
            },
            |p| vec![p.default_level.name().to_string()],
        )
    },
    Key {
        name: "admin_commands",
        cli: cli(
            "all|admin|disabled",
            "who may run admin commands (default all)",
        ),
        ..kind(
            |b, a| {
                b.pool.admin_commands = AdminPolicy::from_name(a.value).ok_or_else(|| {
                    format!(
                        "bad {} '{}' (expected all, admin or disabled)",
                        a.key, a.value
                    )
                })?;
                Ok(())
            },
            |p| vec![p.admin_commands.name().to_string()],
        )
    },
    Key {
        name: "rename_command",
        shape: Shape::Words,
        cli: cli(
            "'OLD NEW'",
            "reach command OLD only as NEW (\"\" disables it); once on the command line",
        ),
        ..kind(set_rename, |p| {
            p.rename_commands
                .iter()
                .map(|(old, new)| format!("{old} {}", quote(new)))
                .collect()
        })
    },
    Key {
        name: "backend_username",
        cli: cli(
            "NAME",
            "ACL user for AUTH on backend connections (default none)",
        ),
        ..opt!(backend_username, word)
    },
    Key {
        name: "backend_password",
        cli: cli(
            "PASSWORD",
            "password for AUTH on backend connections (default: redis_auth)",
        ),
        ..opt!(backend_password, text)
    },
    Key {
        name: "tls_cert_file",
        cli: cli(
            "PATH",
            "TLS certificate for the listener; with tls_key_file the listener speaks TLS only",
        ),
        ..opt!(tls_cert_file, path)
    },
    Key {
        name: "tls_key_file",
        cli: cli("PATH", "TLS private key for the listener"),
        ..opt!(tls_key_file, path)
    },
    Key {
        name: "tls_client_ca_file",
        cli: cli(
            "PATH",
            "require client certificates signed by these CAs (default: not required)",
        ),
        ..opt!(tls_client_ca_file, path)
    },
    Key {
        name: "backend_tls",
        cli: cli("BOOL", "TLS to the backends (default no)"),
        ..flag!(backend_tls)
    },
    Key {
        name: "backend_tls_ca_file",
        cli: cli(
            "PATH",
            "CAs for backend certificates (default: system roots)",
        ),
        ..opt!(backend_tls_ca_file, path)
    },
    Key {
        name: "backend_tls_server_name",
        cli: cli(
            "NAME",
            "name checked in backend certificates (default: the server's host)",
        ),
        ..opt!(backend_tls_server_name, word)
    },
    Key {
        name: "backend_tls_cert_file",
        cli: cli(
            "PATH",
            "client certificate presented to backends (default none)",
        ),
        ..opt!(backend_tls_cert_file, path)
    },
    Key {
        name: "backend_tls_key_file",
        cli: cli("PATH", "private key of backend_tls_cert_file"),
        ..opt!(backend_tls_key_file, path)
    },
    Key {
        name: "backend_tls_insecure",
        cli: cli("BOOL", "do not verify backend certificates (default no)"),
        // Written only where it may be set (validation: it needs backend_tls).
        render: |p| only_if(p.backend_tls, || yes_no(p.backend_tls_insecure).into()),
        ..flag!(backend_tls_insecure)
    },
    Key {
        name: "redis_db",
        cli: cli("N", "SELECT sent to backends (default 0)"),
        ..num!(redis_db)
    },
    Key {
        name: "databases",
        cli: cli(
            "N",
            "databases clients may SELECT: 0..N-1, 1 = only 0 (default 16)",
        ),
        ..min1!(databases)
    },
    Key {
        name: "db_idle_timeout",
        cli: cli(
            "MS",
            "close a database's idle backend connections, 0 = never (default 60000)",
        ),
        ..num!(db_idle_timeout_ms)
    },
    Key {
        name: "rebalance",
        cli: cli(
            "BOOL",
            "move keys to their new owners online when the ring changes (default no)",
        ),
        ..flag!(rebalance)
    },
    Key {
        name: "rebalance_rate",
        cli: cli(
            "N",
            "keys per second the background mover moves (default 5000)",
        ),
        ..min1!(rebalance_rate)
    },
    Key {
        name: "rebalance_batch",
        cli: cli("N", "keys per SCAN and MIGRATE of the mover (default 100)"),
        ..min1!(rebalance_batch)
    },
    Key {
        name: "hotkeys",
        cli: cli(
            "N",
            "hot keys reported per pool, 0 = no detection (default 16)",
        ),
        ..num!(hotkeys)
    },
    Key {
        name: "hotkeys_sample",
        cli: cli(
            "N",
            "one keyed request in N counted for hot keys (default 64)",
        ),
        ..min1!(hotkeys_sample)
    },
    Key {
        name: "hotkeys_window",
        cli: cli("MS", "sliding window of the hot-key rates (default 10000)"),
        ..min1!(hotkeys_window_ms)
    },
    Key {
        name: "hotkey_cache",
        cli: cli("BYTES", "hot-key cache size, 0 = off (default 0)"),
        ..size!(hotkey_cache)
    },
    Key {
        name: "hotkey_cache_threshold",
        cli: cli(
            "N",
            "GETs per second from which a key is cached (default 100)",
        ),
        ..min1!(hotkey_cache_threshold)
    },
    Key {
        name: "hotkey_cache_max_value",
        cli: cli(
            "BYTES",
            "values larger than this are not cached (default 16kb)",
        ),
        ..size!(hotkey_cache_max_value)
    },
    Key {
        name: "disable_commands",
        cli: cli("LIST", "commands refused, comma separated"),
        ..kind(set_disable_commands, |p| {
            only_if(!p.disable_commands.is_empty(), || {
                p.disable_commands.join(",")
            })
        })
    },
    Key {
        name: "membership_commands",
        cli: cli("BOOL", "allow PROXY ADDBACKEND/REMOVEBACKEND (default no)"),
        ..flag!(membership_commands)
    },
    Key {
        name: "cluster",
        render: |p| only_if(p.cluster, || "yes".into()),
        ..flag!(cluster)
    },
    Key {
        name: "read_from",
        cli: cli(
            "WHERE",
            "cluster pools: master|replica|prefer-replica for read-only commands (default master)",
        ),
        ..kind(
            |b, a| {
                b.pool.read_from = match a.value.to_ascii_lowercase().as_str() {
                    "master" => ReadFrom::Master,
                    "replica" => ReadFrom::Replica,
                    "prefer-replica" | "prefer_replica" => ReadFrom::PreferReplica,
                    _ => {
                        return Err(format!(
                            "bad read_from '{}' (expected master, replica or prefer-replica)",
                            a.value
                        ))
                    }
                };
                Ok(())
            },
            // Written for cluster pools only (the only ones it applies to).
            |p| only_if(p.cluster, || p.read_from.name().into()),
        )
    },
    Key {
        name: "private_connections",
        cli: cli(
            "N",
            "private backend connections per backend for blocking commands and WATCH (default 64)",
        ),
        ..kind(
            |b, a| {
                b.pool.private_connections = a
                    .value
                    .parse()
                    .map_err(|_| format!("bad number '{}' for private_connections", a.value))?;
                Ok(())
            },
            |p| vec![p.private_connections.to_string()],
        )
    },
    Key {
        name: "split_failure",
        cli: cli(
            "error|partial",
            "MGET/DEL/... when a backend fails: one error, or nil/partial sum (default error)",
        ),
        ..kind(
            |b, a| {
                b.pool.split_partial = match a.value.to_ascii_lowercase().as_str() {
                    "error" => false,
                    "partial" => true,
                    _ => {
                        return Err(format!(
                            "bad split_failure '{}' (expected error or partial)",
                            a.value
                        ))
                    }
                };
                Ok(())
            },
            |p| vec![if p.split_partial { "partial" } else { "error" }.to_string()],
        )
    },
    Key {
        name: "server",
        shape: Shape::Repeated,
        ..kind(
            |b, a| {
                b.pool.servers.push(parse_server(a.value, a.line)?);
                Ok(())
            },
            |p| p.servers.iter().map(render_server).collect(),
        )
    },
];

/// Every global key (before the first pool), in render order.
pub(crate) static GLOBAL_KEYS: &[GlobalKey] = &[
    Key {
        name: "log_level",
        ..kind(
            |c: &mut Config, a| {
                c.log_level = parse_log_level(a.value)?;
                Ok(())
            },
            |c: &Config| vec![c.log_level.as_str().to_ascii_lowercase()],
        )
    },
    Key {
        name: "log_file",
        ..kind(
            |c: &mut Config, a| {
                c.log_file = Some(PathBuf::from(a.value));
                Ok(())
            },
            |c: &Config| {
                c.log_file
                    .iter()
                    .map(|f| quote(&f.to_string_lossy()))
                    .collect()
            },
        )
    },
    Key {
        name: "stats_listen",
        ..kind(
            |c: &mut Config, a| {
                c.stats_listen = Some(parse_tcp_addr(a.value)?);
                Ok(())
            },
            |c: &Config| c.stats_listen.iter().map(ToString::to_string).collect(),
        )
    },
    Key {
        name: "stats_interval",
        ..kind(
            |c: &mut Config, a| {
                c.stats_interval_ms = parse_num(a.key, a.value)?;
                Ok(())
            },
            |c: &Config| vec![c.stats_interval_ms.to_string()],
        )
    },
    Key {
        name: "command_stats",
        ..kind(
            |c: &mut Config, a| {
                c.command_stats = parse_bool(a.key, a.value)?;
                Ok(())
            },
            // Written only when off (the default is on).
            |c: &Config| only_if(!c.command_stats, || "no".into()),
        )
    },
];

/// The pool key named `name` or one of its aliases (dashes already folded to underscores).
pub(crate) fn pool_key(name: &str) -> Option<&'static PoolKey> {
    find(POOL_KEYS, name)
}

/// The global key named `name`.
pub(crate) fn global_key(name: &str) -> Option<&'static GlobalKey> {
    find(GLOBAL_KEYS, name)
}

/// A pool key the parsers name themselves (`listen`, `server`); a missing one is a bug.
pub(crate) fn named(name: &str) -> &'static PoolKey {
    pool_key(name).unwrap_or_else(|| panic!("no pool key '{name}'"))
}

fn find<T, V>(table: &'static [Key<T, V>], name: &str) -> Option<&'static Key<T, V>> {
    table
        .iter()
        .find(|k| k.name == name || k.aliases.contains(&name))
}

// ---------------------------------------------------------------------------
// Setters too long for a row

/// `user NAME PASSWORD LEVEL`.
fn set_user(b: &mut PoolBuilder, a: &Arg) -> Result<(), String> {
    let (key, v) = (a.key, a.value);
    let w = split_words(v)?;
    let [name, pass, level] = <[String; 3]>::try_from(w)
        .map_err(|_| format!("expected '{key} NAME PASSWORD LEVEL', got '{v}'"))?;
    check_word("user name", &name)?;
    if name == "default" {
        return Err(
            "user 'default' is reserved (set its password with requirepass and its level with default_level)"
                .into(),
        );
    }
    if pass.is_empty() {
        return Err(format!("empty password for user '{name}'"));
    }
    let level = Level::from_name(&level).ok_or_else(|| {
        format!(
            "unknown level '{level}' for user '{name}' (expected {})",
            LEVEL_NAMES.join(", ")
        )
    })?;
    if let Some(first) = b.user_lines.insert(name.clone(), a.line) {
        return Err(format!("duplicate user '{name}'{}", first_on(first)));
    }
    b.pool.users.push((name, pass, level));
    Ok(())
}

/// `rename_command OLD NEW` (NEW `""` disables OLD).
fn set_rename(b: &mut PoolBuilder, a: &Arg) -> Result<(), String> {
    let (key, v, line) = (a.key, a.value, a.line);
    let w = split_words(v)?;
    let [old, new] = <[String; 2]>::try_from(w)
        .map_err(|_| format!("expected '{key} OLD NEW' (NEW \"\" disables OLD), got '{v}'"))?;
    let spec = crate::commands::lookup(old.as_bytes())
        .ok_or_else(|| format!("{key}: unknown command '{old}'"))?;
    let old = spec.name.to_string();
    if !new.is_empty() {
        check_word("new command name", &new)?;
        if let Some(s) = crate::commands::lookup(new.as_bytes()) {
            return Err(format!(
                "{key}: cannot rename {old} to '{new}', an existing command name ({})",
                s.name
            ));
        }
    }
    if let Some(first) = b.rename_lines.insert(old.clone(), line) {
        return Err(format!("{key}: {old} renamed twice{}", first_on(first)));
    }
    if !new.is_empty() {
        if let Some(first) = b.rename_lines.insert(new.to_ascii_uppercase(), line) {
            return Err(format!(
                "{key}: '{new}' is already a new name{}",
                first_on(first)
            ));
        }
    }
    b.pool.rename_commands.push((old, new));
    Ok(())
}

/// `disable_commands a,b c`: upper-cased, duplicates dropped, order kept.
fn set_disable_commands(b: &mut PoolBuilder, a: &Arg) -> Result<(), String> {
    let mut cmds: Vec<String> = Vec::new();
    for c in a
        .value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        if !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'|')
        {
            return Err(format!("bad command name '{c}' in disable_commands"));
        }
        let c = c.to_ascii_uppercase();
        if !cmds.contains(&c) {
            cmds.push(c);
        }
    }
    b.pool.disable_commands = cmds;
    Ok(())
}

/// " (first on line N)", or "" for the command line.
fn first_on(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" (first on line {line})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lex::unquote;
    use crate::config::testutil::{
        assert_pool_errors, assert_round_trip, native, native_err, yaml_err, AUTH_POOL, MANIFEST,
    };
    use crate::config::{from_cli, parse_nutcracker, render_native};
    use std::path::Path;

    /// For every pool key: the lines it needs besides itself (validation), and a value that
    /// differs from its default.  A key added to the table without a sample fails the tests.
    const SAMPLES: &[(&str, &str, &str)] = &[
        ("listen", "", "/tmp/rp.sock 0600"),
        ("hash", "", "murmur"),
        ("distribution", "", "modula"),
        ("hash_tag", "", "\"#}\""),
        ("timeout", "", "250"),
        ("connect_timeout", "", "300"),
        ("server_connections", "", "3"),
        ("backlog", "", "64"),
        ("preconnect", "", "yes"),
        ("auto_eject_hosts", "", "yes"),
        ("server_retry_timeout", "", "5000"),
        ("server_failure_limit", "", "5"),
        ("max_clients", "", "7"),
        ("client_idle_timeout", "", "60000"),
        ("max_pending", "", "16"),
        ("max_output", "", "1mb"),
        ("max_request", "", "3kb"),
        ("tcpkeepalive", "", "yes"),
        ("pubsub_max_output", "", "2mb"),
        ("hash_override", "", "yes"),
        ("reuseport", "", "yes"),
        ("redis_auth", "", "\"s3 #cret\""),
        ("requirepass", "", "'client pw'"),
        ("user", "", "alice \"a pw\" readonly"),
        ("default_level", "", "readonly"),
        ("admin_commands", "", "disabled"),
        ("rename_command", "", "config cfg-1"),
        ("backend_username", "backend_password bp\n", "proxy"),
        ("backend_password", "", "bp"),
        ("tls_cert_file", "tls_key_file /k.pem\n", "/c.pem"),
        ("tls_key_file", "tls_cert_file /c.pem\n", "\"/k ey.pem\""),
        (
            "tls_client_ca_file",
            "tls_cert_file /c.pem\ntls_key_file /k.pem\n",
            "/ca.pem",
        ),
        ("backend_tls", "", "yes"),
        ("backend_tls_ca_file", "backend_tls yes\n", "/bca.pem"),
        (
            "backend_tls_server_name",
            "backend_tls yes\n",
            "redis.local",
        ),
        (
            "backend_tls_cert_file",
            "backend_tls yes\nbackend_tls_key_file /bk.pem\n",
            "/bc.pem",
        ),
        (
            "backend_tls_key_file",
            "backend_tls yes\nbackend_tls_cert_file /bc.pem\n",
            "/bk.pem",
        ),
        ("backend_tls_insecure", "backend_tls yes\n", "yes"),
        ("redis_db", "", "3"),
        ("databases", "", "4"),
        ("db_idle_timeout", "", "500"),
        ("rebalance", "", "yes"),
        ("rebalance_rate", "", "100"),
        ("rebalance_batch", "", "10"),
        ("hotkeys", "", "4"),
        ("hotkeys_sample", "", "2"),
        ("hotkeys_window", "", "500"),
        ("hotkey_cache", "", "1mb"),
        ("hotkey_cache_threshold", "hotkey_cache 1mb\n", "5"),
        ("hotkey_cache_max_value", "hotkey_cache 1mb\n", "1kb"),
        ("disable_commands", "", "keys,flushall"),
        ("membership_commands", "", "yes"),
        ("cluster", "", "yes"),
        ("read_from", "cluster yes\n", "prefer_replica"),
        ("private_connections", "", "8"),
        ("split_failure", "", "partial"),
        ("server", "", "127.0.0.1:7002:2 two user=u password=p"),
    ];

    /// A pool with `needs` and, unless None, the line `key value`.
    fn pool_text(needs: &str, line: Option<(&str, &str)>) -> String {
        let listen = match line {
            Some(("listen", _)) => "",
            _ => "listen 127.0.0.1:6380\n",
        };
        let mut text = format!("pool p\n{listen}server 127.0.0.1:7001\n{needs}");
        if let Some((k, v)) = line {
            text.push_str(&format!("{k} {v}\n"));
        }
        text
    }

    fn sample(name: &str) -> (&'static str, &'static str) {
        let (_, needs, value) = SAMPLES
            .iter()
            .find(|s| s.0 == name)
            .unwrap_or_else(|| panic!("key '{name}' has no entry in SAMPLES"));
        (needs, value)
    }

    #[test]
    fn names_are_unique_and_canonical() {
        let mut all: Vec<&str> = vec!["pool"];
        let pool = POOL_KEYS
            .iter()
            .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()));
        let global = GLOBAL_KEYS
            .iter()
            .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()));
        for n in pool.chain(global) {
            assert!(!all.contains(&n), "'{n}' declared twice");
            assert!(
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "'{n}' is not a lower-case underscore name"
            );
            all.push(n);
        }
        for k in POOL_KEYS {
            assert!(std::ptr::eq(named(k.name), k));
        }
        for s in SAMPLES {
            assert!(
                pool_key(s.0).is_some(),
                "SAMPLES names '{}', not a pool key",
                s.0
            );
        }
    }

    #[test]
    fn every_pool_key_parses_renders_and_round_trips() {
        for k in POOL_KEYS {
            let (needs, value) = sample(k.name);
            let name = k.name;
            let with = native(&pool_text(needs, Some((name, value))))
                .unwrap_or_else(|e| panic!("{name} {value}: {e}"));
            // (Without it, the lines it needs may not be valid on their own: then it is needed.)
            if let Ok(without) = native(&pool_text(needs, None)) {
                assert_ne!(with, without, "'{name} {value}' changed nothing");
            }

            // Rendered under its canonical name, and read back to the same config.
            let text = render_native(&with);
            assert!(
                text.lines().any(|l| l.starts_with(&format!("    {name} "))),
                "'{name}' not rendered:\n{text}"
            );
            assert_round_trip(&with);

            // Dashes and aliases are the same key.
            let dashed = name.replace('_', "-");
            for alt in k.aliases.iter().copied().chain([dashed.as_str()]) {
                let c = native(&pool_text(needs, Some((alt, value)))).unwrap();
                assert_eq!(c, with, "'{alt}' differs from '{name}'");
            }

            // The command line sets it the same way (values as the shell passes them).
            if k.cli.is_some() {
                let mut opts: Vec<(String, String)> = needs
                    .lines()
                    .map(|l| {
                        let (k, v) = l.split_once(' ').unwrap();
                        (format!("--{}", k.replace('_', "-")), v.to_string())
                    })
                    .collect();
                let raw = match k.shape {
                    Shape::Words => value.to_string(),
                    _ => unquote(value).unwrap(),
                };
                opts.push((format!("--{dashed}"), raw));
                let c = from_cli("127.0.0.1:6380", "127.0.0.1:7001", &opts)
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut want = with.pools[0].clone();
                want.name = "default".into();
                for s in &mut want.servers {
                    s.line = 0;
                }
                assert_eq!(c.pools[0], want, "--{dashed}");
            }
        }
    }

    #[test]
    fn every_global_key_parses_and_round_trips() {
        let c = native(&format!(
            "log_level debug\nlog_file \"/tmp/r p.log\"\nstats_listen 127.0.0.1:22223\n\
             stats_interval 500\ncommand_stats no\n{AUTH_POOL}"
        ))
        .unwrap();
        let text = render_native(&c);
        for k in GLOBAL_KEYS {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{} ", k.name))),
                "'{}' not rendered:\n{text}",
                k.name
            );
        }
        assert_round_trip(&c);
        assert_ne!(c, native(AUTH_POOL).unwrap());
    }

    #[test]
    fn aliases_canonicalise() {
        assert_eq!(
            pool_key("client_connections").map(|k| k.name),
            Some("max_clients")
        );
        let canonical = native(&format!("{AUTH_POOL}max_clients 5\n")).unwrap();
        for line in [
            "client_connections 5",
            "client-connections 5",
            "max-clients 5",
        ] {
            assert_eq!(
                native(&format!("{AUTH_POOL}{line}\n")).unwrap(),
                canonical,
                "{line}"
            );
        }
        let text = render_native(&canonical);
        assert!(text.contains("    max_clients 5\n"), "{text}");
        assert!(!text.contains("client_connections"), "{text}");
        // An alias and its key are one key: setting both is a duplicate.
        let (line, msg) = native_err(&format!("{AUTH_POOL}max_clients 1\nclient_connections 2\n"));
        assert_eq!(
            (line, msg.as_str()),
            (
                5,
                "duplicate key 'client_connections' (first set on line 4)"
            )
        );
        // nutcracker's own name in YAML, and on the command line.
        let y = parse_nutcracker(
            "a:\n  listen: 127.0.0.1:6380\n  redis: true\n  client_connections: 5\n\
             \x20 servers:\n   - 127.0.0.1:7001:1\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(y.pools[0].max_clients, 5);
        let c = from_cli(
            "127.0.0.1:6380",
            "127.0.0.1:7001",
            &[("--client-connections".into(), "5".into())],
        )
        .unwrap();
        assert_eq!(c.pools[0].max_clients, 5);
    }

    /// Defaults are written once, in `model`; the help texts quote them.  Setting a key to the
    /// default its help states changes nothing, and "(default none)" keys render nothing.
    #[test]
    fn help_defaults_match_the_model() {
        let mut checked = 0;
        for k in POOL_KEYS {
            let Some((_, help)) = k.cli else { continue };
            let Some(rest) = help.split("(default ").nth(1) else {
                continue;
            };
            let stated = rest.trim_end_matches(')');
            if stated == "none" {
                let defaults = &native(AUTH_POOL).unwrap().pools[0];
                assert!(
                    (k.render)(defaults).is_empty(),
                    "'{}' says default none but renders a value",
                    k.name
                );
            } else {
                let (needs, _) = sample(k.name);
                let base = native(&pool_text(needs, None)).unwrap();
                let c = native(&pool_text(needs, Some((k.name, stated))))
                    .unwrap_or_else(|e| panic!("{}: stated default '{stated}': {e}", k.name));
                assert_eq!(c, base, "'{}': help says default {stated}", k.name);
            }
            checked += 1;
        }
        assert!(checked > 30, "{checked}");
        // The parsers start from the model's defaults, nothing else.
        let c = native(AUTH_POOL).unwrap();
        let mut want = PoolConfig::with_defaults("p", c.pools[0].listen.clone());
        want.servers = c.pools[0].servers.clone();
        assert_eq!(c.pools[0], want);
        let mut empty = Config::empty(super::super::Format::Native);
        empty.pools = c.pools.clone();
        assert_eq!(c, empty);
    }

    #[test]
    fn example_documents_every_key() {
        let text = std::fs::read_to_string(Path::new(MANIFEST).join("proxy.conf.example")).unwrap();
        let keys = POOL_KEYS
            .iter()
            .map(|k| k.name)
            .chain(GLOBAL_KEYS.iter().map(|k| k.name));
        for k in keys {
            let documented = text.lines().any(|l| {
                let l = l.trim_start().trim_start_matches('#');
                l.split_whitespace().next() == Some(k)
            });
            assert!(documented, "proxy.conf.example does not show '{k}'");
        }
    }

    #[test]
    fn access_control_keys() {
        let c = native(&format!(
            "{AUTH_POOL}redis_auth old\nrequirepass \"new pass\"\n\
             user alice apw readonly\nuser bob \"b \\\"p\\\" w\" ADMIN\nuser carol 'c pw' readwrite\n\
             default-level readwrite\nadmin_commands admin\n\
             rename_command flushall \"\"\nrename-command config cfg-7\nrename_command KEYS ''\n"
        ))
        .unwrap();
        let p = &c.pools[0];
        assert_eq!(p.redis_auth.as_deref(), Some("old"));
        assert_eq!(p.requirepass.as_deref(), Some("new pass"));
        assert_eq!(
            p.users,
            [
                ("alice".into(), "apw".into(), Level::ReadOnly),
                ("bob".into(), "b \"p\" w".into(), Level::Admin),
                ("carol".into(), "c pw".into(), Level::ReadWrite),
            ]
        );
        assert_eq!(p.default_level, Level::ReadWrite);
        assert_eq!(p.admin_commands, AdminPolicy::AdminOnly);
        assert_eq!(
            p.rename_commands,
            [
                ("FLUSHALL".into(), "".into()),
                ("CONFIG".into(), "cfg-7".into()),
                ("KEYS".into(), "".into())
            ]
        );
        assert_round_trip(&c);
        for (v, want) in [
            ("all", AdminPolicy::All),
            ("Disabled", AdminPolicy::Disabled),
        ] {
            let c = native(&format!("{AUTH_POOL}admin_commands {v}\n")).unwrap();
            assert_eq!(c.pools[0].admin_commands, want);
        }
        // Defaults.
        let c = native(AUTH_POOL).unwrap();
        let p = &c.pools[0];
        assert_eq!(
            (p.default_level, p.admin_commands),
            (Level::Admin, AdminPolicy::All)
        );
        assert!(p.users.is_empty() && p.rename_commands.is_empty() && p.requirepass.is_none());
    }

    #[test]
    fn access_control_errors() {
        // All on line 4, the first line after AUTH_POOL.
        assert_pool_errors(&[
            (
                "user alice pw root\n",
                4,
                "unknown level 'root' for user 'alice'",
            ),
            ("user alice pw\n", 4, "expected 'user NAME PASSWORD LEVEL'"),
            (
                "user alice pw readonly extra\n",
                4,
                "expected 'user NAME PASSWORD LEVEL'",
            ),
            (
                "user alice \"\" readonly\n",
                4,
                "empty password for user 'alice'",
            ),
            ("user default pw admin\n", 4, "user 'default' is reserved"),
            ("user alice \"pw readonly\n", 4, "unterminated"),
            ("default_level superuser\n", 4, "unknown level 'superuser'"),
            ("admin_commands some\n", 4, "bad admin_commands 'some'"),
            (
                "rename_command FLUSHALL\n",
                4,
                "expected 'rename_command OLD NEW'",
            ),
            ("rename_command NOSUCH x\n", 4, "unknown command 'NOSUCH'"),
            (
                "rename_command \"CONFIG GET\" x\n",
                4,
                "unknown command 'CONFIG GET'",
            ),
            (
                "rename_command FLUSHALL get\n",
                4,
                "an existing command name (GET)",
            ),
            ("requirepass \"\"\n", 4, "missing value for 'requirepass'"),
            ("backend_tls maybe\n", 4, "bad boolean 'maybe'"),
        ]);
        let (line, msg) = native_err(&format!(
            "{AUTH_POOL}user alice pw readonly\n# x\nuser alice pw2 admin\n"
        ));
        assert_eq!(
            (line, msg.as_str()),
            (6, "duplicate user 'alice' (first on line 4)")
        );
        let (line, msg) = native_err(&format!(
            "{AUTH_POOL}rename_command flushall f1\nrename_command FLUSHALL f2\n"
        ));
        assert_eq!(line, 5);
        assert!(
            msg.contains("FLUSHALL renamed twice (first on line 4)"),
            "{msg}"
        );
        let (line, msg) = native_err(&format!(
            "{AUTH_POOL}rename_command flushall x1\nrename_command flushdb X1\n"
        ));
        assert_eq!(line, 5);
        assert!(
            msg.contains("'X1' is already a new name (first on line 4)"),
            "{msg}"
        );
    }

    #[test]
    fn access_control_yaml_and_cli() {
        let y = parse_nutcracker(
            "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  requirepass: \"s p\"\n\
             \x20 user:\n    - alice apw readonly\n    - \"bob bpw admin\"\n\
             \x20 user: carol 'c pw' readwrite\n  rename_command:\n    - FLUSHALL \"\"\n\
             \x20 admin_commands: admin\n  backend_username: proxy\n  backend_password: bp\n\
             \x20 backend_tls: true\n  servers:\n   - 127.0.0.1:6379:1 one user=u password=p\n",
            "t.yml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let p = &y.pools[0];
        assert_eq!(p.requirepass.as_deref(), Some("s p"));
        let names: Vec<&str> = p.users.iter().map(|u| u.0.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert_eq!(p.users[2].1, "c pw");
        assert_eq!(p.rename_commands, [("FLUSHALL".into(), "".into())]);
        assert_eq!(p.admin_commands, AdminPolicy::AdminOnly);
        assert!(p.backend_tls);
        assert_eq!(p.backend_auth(Some(&p.servers[0])), Some((Some("u"), "p")));
        assert_round_trip(&y);
        let (line, msg) = yaml_err(
            "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  user:\n    - alice pw\n\
             \x20 servers:\n   - 127.0.0.1:6379:1\n",
        );
        assert_eq!(line, 5);
        assert!(msg.contains("NAME PASSWORD LEVEL"), "{msg}");

        let c = from_cli(
            "127.0.0.1:6380",
            "127.0.0.1:7001",
            &[
                ("requirepass".into(), "x".into()),
                ("--user".into(), "alice apw readonly".into()),
                ("rename-command".into(), "KEYS \"\"".into()),
                ("admin-commands".into(), "disabled".into()),
            ],
        )
        .unwrap();
        let p = &c.pools[0];
        assert_eq!(p.users.len(), 1);
        assert_eq!(p.rename_commands, [("KEYS".into(), "".into())]);
        assert_eq!(p.admin_commands, AdminPolicy::Disabled);
    }
}
