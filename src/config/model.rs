//! The configuration model: what a loaded config *is*, whatever format it came from, and
//! every default value.
//!
//! Invariants:
//! * Each default is written once, here: the `DEFAULT_*` constants, [`Config::empty`] (global
//!   keys) and [`PoolConfig::with_defaults`] (pool keys).  Parsers start from these and only
//!   overwrite what a config sets; help texts quote them and a test checks that they agree.
//! * The access-control vocabulary ([`Level`], [`AdminPolicy`]) lives here because
//!   [`PoolConfig`] holds it; `crate::auth` builds on it and the arrow points one way
//!   (auth -> config).
//! * [`PoolConfig::backend_auth`] and [`PoolConfig::backend_tls_name`] are the one statement of
//!   which credentials and which certificate name a backend connection uses.
//! * This file parses nothing beyond the names of its own enums; see `keys` for the keys.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::hash::HashKind;
use crate::ring::Distribution;

/// Default request timeout (ms).  nutcracker waits forever when `timeout` is
/// absent; a proxy that waits forever hangs its clients, so we don't.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_BACKLOG: u32 = 512;
pub const DEFAULT_SERVER_RETRY_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_SERVER_FAILURE_LIMIT: u32 = 2;
pub const DEFAULT_SERVER_CONNECTIONS: usize = 1;
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
pub const DEFAULT_MAX_PENDING: usize = 1024;
pub const DEFAULT_MAX_OUTPUT: usize = 64 << 20;
/// Redis's hard `client-output-buffer-limit` for pub/sub clients.
pub const DEFAULT_PUBSUB_MAX_OUTPUT: usize = 32 << 20;
pub const DEFAULT_MAX_REQUEST: usize = 512 << 20;
/// Hash tag of the native format and the command line: Redis Cluster's `{...}` rule, which
/// clients and queue libraries rely on to keep keys together.
pub const DEFAULT_HASH_TAG: Option<[u8; 2]> = Some(*b"{}");
/// Hash tag of nutcracker YAML pools: none, twemproxy's default, so placement stays identical
/// for a twemproxy fleet.
pub const NUTCRACKER_HASH_TAG: Option<[u8; 2]> = None;
/// Private backend connections per backend (blocking commands, WATCH).
pub const DEFAULT_PRIVATE_CONNECTIONS: usize = 64;
/// nutcracker's default stats port (`-s`).
pub const DEFAULT_STATS_PORT: u16 = 22222;
/// Default stats address when only `-s` is given (loopback, unlike nutcracker's 0.0.0.0).
pub const DEFAULT_STATS_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// nutcracker's default stats aggregation interval (`-i`).
pub const DEFAULT_STATS_INTERVAL_MS: u64 = 30_000;

/// A client's permission level.  Ordered: `ReadOnly < ReadWrite < Admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Commands that do not write (`auth::is_write` false) and, under `admin_commands all`,
    /// admin commands that do not write either (KEYS, CONFIG GET...).
    ReadOnly,
    /// Everything except admin commands under `admin_commands admin`.
    ReadWrite,
    /// Everything (admin commands unless `admin_commands disabled`).
    Admin,
}

impl Level {
    /// `readonly`, `readwrite` or `admin` (case-insensitive).
    pub fn from_name(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "readonly" => Level::ReadOnly,
            "readwrite" => Level::ReadWrite,
            "admin" => Level::Admin,
            _ => return None,
        })
    }

    /// The config name (`readonly`, `readwrite`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Level::ReadOnly => "readonly",
            Level::ReadWrite => "readwrite",
            Level::Admin => "admin",
        }
    }
}

/// Names accepted by `user` and `default_level`.
pub const LEVEL_NAMES: &[&str] = &["readonly", "readwrite", "admin"];

/// `admin_commands`: who may run admin commands (`auth::is_admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminPolicy {
    /// `all` (default): any authenticated client (a readonly client still cannot run the
    /// admin commands that write, e.g. FLUSHALL).
    All,
    /// `admin`: only admin-level clients.
    AdminOnly,
    /// `disabled`: nobody.
    Disabled,
}

impl AdminPolicy {
    /// `all`, `admin` or `disabled` (case-insensitive).
    pub fn from_name(s: &str) -> Option<AdminPolicy> {
        Some(match s.to_ascii_lowercase().as_str() {
            "all" => AdminPolicy::All,
            "admin" => AdminPolicy::AdminOnly,
            "disabled" => AdminPolicy::Disabled,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            AdminPolicy::All => "all",
            AdminPolicy::AdminOnly => "admin",
            AdminPolicy::Disabled => "disabled",
        }
    }
}

/// Cluster pools: which nodes serve read-only commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// Masters only (default).
    Master,
    /// A replica of the slot's master when it has one (READONLY connections), else the master.
    Replica,
    /// A replica that is up, else the master.
    PreferReplica,
}

impl ReadFrom {
    pub fn name(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::Replica => "replica",
            ReadFrom::PreferReplica => "prefer-replica",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Native,
    Nutcracker,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// File it came from (None for `-l`/`-b` and the `parse_*` functions).
    pub path: Option<PathBuf>,
    pub format: Format,
    /// `log_level` (error|warn|info|debug|trace or nutcracker's 0..11), default info.
    pub log_level: log::LevelFilter,
    /// `log_file`; None = stderr.
    pub log_file: Option<PathBuf>,
    /// `stats_listen` / `-s` / `-a`; the stats listener runs only when set.
    pub stats_listen: Option<SocketAddr>,
    /// `stats_interval` / `-i`, default 30000.
    pub stats_interval_ms: u64,
    /// `command_stats`: per-command calls, latency histograms and the slow log (default yes;
    /// `no` exists to measure what they cost).
    pub command_stats: bool,
    /// At least one.
    pub pools: Vec<PoolConfig>,
}

impl Config {
    /// Every global key at its default, no pools yet (parsers add them).
    pub(crate) fn empty(format: Format) -> Config {
        Config {
            path: None,
            format,
            log_level: log::LevelFilter::Info,
            log_file: None,
            stats_listen: None,
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            command_stats: true,
            pools: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub listen: Listen,
    pub hash: HashKind,
    pub distribution: Distribution,
    pub hash_tag: Option<[u8; 2]>,
    /// At least one.
    pub servers: Vec<ServerConfig>,
    pub server_connections: usize,
    /// Request timeout; 0 = none.  Default 1000 (nutcracker: none).
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub backlog: u32,
    pub preconnect: bool,
    pub auto_eject_hosts: bool,
    pub server_retry_timeout_ms: u64,
    pub server_failure_limit: u32,
    /// `max_clients` / `client_connections`; 0 = unlimited.
    pub max_clients: usize,
    /// 0 = off.
    pub client_idle_timeout_ms: u64,
    pub max_pending: usize,
    pub max_output: usize,
    pub max_request: usize,
    pub tcpkeepalive: bool,
    /// Unread output of a subscriber (pub/sub messages cannot be held back) before it is
    /// disconnected, like Redis's `client-output-buffer-limit pubsub`.
    pub pubsub_max_output: usize,
    /// A trailing `hash=KEY` argument routes the command by KEY (jupiter's form); off by
    /// default so that user data is never read as routing.
    pub hash_override: bool,
    pub reuseport: bool,
    /// nutcracker's key: the `default` user's password for clients (unless `requirepass` is
    /// set) and the password sent to backends (unless `backend_password` is set).
    pub redis_auth: Option<String>,
    /// `requirepass`: the `default` user's password for clients; wins over `redis_auth` for
    /// clients, never sent to backends.
    pub requirepass: Option<String>,
    /// `user NAME PASSWORD LEVEL` lines in order: (name, password, level).  Names are unique,
    /// never `default`; passwords are not empty.
    pub users: Vec<(String, String, Level)>,
    /// `default_level`: level of the `default` user (clients that AUTH with requirepass /
    /// redis_auth, or every client when no password is configured).  Default Admin.
    pub default_level: Level,
    /// `admin_commands all|admin|disabled`, default All.
    pub admin_commands: AdminPolicy,
    /// `rename_command OLD NEW` lines in order: (OLD upper case, a top-level command of the
    /// table; NEW as written, not a command name, "" = disabled).  OLDs and NEWs are unique.
    pub rename_commands: Vec<(String, String)>,
    /// `backend_username`: ACL user for `AUTH user pass` on backend connections; needs a
    /// password (`backend_password` or `redis_auth`).  See [`PoolConfig::backend_auth`].
    pub backend_username: Option<String>,
    /// `backend_password`: password sent to backends instead of `redis_auth`.
    pub backend_password: Option<String>,
    /// `tls_cert_file` / `tls_key_file` (both or neither): when set, the listener speaks TLS only.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `tls_client_ca_file`: clients must present a certificate signed by these CAs.  Needs
    /// `tls_cert_file`.
    pub tls_client_ca_file: Option<PathBuf>,
    /// `backend_tls`: connect to the backends over TLS.  The other `backend_tls_*` keys need it.
    pub backend_tls: bool,
    /// `backend_tls_ca_file`: CAs for the backends' certificates (None = system roots).
    pub backend_tls_ca_file: Option<PathBuf>,
    /// `backend_tls_server_name`: name checked in backend certificates (None = each server's
    /// host; see [`PoolConfig::backend_tls_name`]).
    pub backend_tls_server_name: Option<String>,
    /// `backend_tls_cert_file` / `backend_tls_key_file` (both or neither): client certificate
    /// presented to the backends.
    pub backend_tls_cert_file: Option<PathBuf>,
    pub backend_tls_key_file: Option<PathBuf>,
    /// `backend_tls_insecure`: skip verification of backend certificates.
    pub backend_tls_insecure: bool,
    /// The database every backend connection selects first, and the one a client starts in
    /// (nutcracker's `redis_db`).
    pub redis_db: u32,
    /// `databases`: clients may `SELECT` 0..databases-1 (1 = database 0 only, as before).
    pub databases: u32,
    /// `db_idle_timeout` (ms): a database's shared backend connections close after this long
    /// unused (0 = never).
    pub db_idle_timeout_ms: u64,
    /// `rebalance`: a change that moves keys (servers, weights, hash, distribution, tag)
    /// moves them to their new owners online (MIGRATE), serving each moved key only from
    /// where it is.
    pub rebalance: bool,
    /// `rebalance_rate`: keys per second the background mover moves per pool.
    pub rebalance_rate: u64,
    /// `rebalance_batch`: keys per SCAN / MIGRATE of the mover.
    pub rebalance_batch: usize,
    /// `hotkeys`: entries of the hot-key top-K (HOTKEYS, INFO hotkeys, /metrics); 0 = no
    /// detection.
    pub hotkeys: usize,
    /// `hotkeys_sample`: one keyed request in N is counted by the detector.
    pub hotkeys_sample: u32,
    /// `hotkeys_window` (ms): the sliding window the rates are measured over.
    pub hotkeys_window_ms: u64,
    /// `hotkey_cache` (bytes): the hot-key cache's size; 0 = no cache.
    pub hotkey_cache: usize,
    /// `hotkey_cache_threshold`: estimated GETs per second above which a key is cached.
    pub hotkey_cache_threshold: u64,
    /// `hotkey_cache_max_value` (bytes): larger values are never cached.
    pub hotkey_cache_max_value: usize,
    /// Uppercase command names.
    pub disable_commands: Vec<String>,
    /// MGET/DEL/EXISTS/UNLINK/TOUCH split over backends when one fails: false = the whole reply
    /// is that error (default); true = MGET gives nil for that backend's keys (a cache miss) and
    /// the counting commands count what answered. MSET always reports the error.
    pub split_partial: bool,
    /// Private backend connections per backend (blocking commands, WATCH); over it such a
    /// command gets an error.
    pub private_connections: usize,
    /// A Redis Cluster pool: the servers are seed nodes; the masters and the slot map come from
    /// CLUSTER SLOTS (hash, distribution and weights do not apply).
    pub cluster: bool,
    /// Cluster pools: where read-only commands go (`read_from master|replica|prefer-replica`).
    pub read_from: ReadFrom,
    /// Allow the runtime membership commands (PROXY ADDBACKEND / REMOVEBACKEND) on this pool.
    pub membership_commands: bool,
}

impl PoolConfig {
    /// A pool with every setting at its default and no servers.
    pub fn with_defaults(name: &str, listen: Listen) -> PoolConfig {
        PoolConfig {
            name: name.to_string(),
            listen,
            hash: HashKind::Fnv1a_64,
            distribution: Distribution::Ketama,
            hash_tag: DEFAULT_HASH_TAG,
            servers: Vec::new(),
            server_connections: DEFAULT_SERVER_CONNECTIONS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            backlog: DEFAULT_BACKLOG,
            preconnect: false,
            auto_eject_hosts: false,
            server_retry_timeout_ms: DEFAULT_SERVER_RETRY_TIMEOUT_MS,
            server_failure_limit: DEFAULT_SERVER_FAILURE_LIMIT,
            max_clients: DEFAULT_MAX_CLIENTS,
            client_idle_timeout_ms: 0,
            max_pending: DEFAULT_MAX_PENDING,
            max_output: DEFAULT_MAX_OUTPUT,
            max_request: DEFAULT_MAX_REQUEST,
            tcpkeepalive: false,
            pubsub_max_output: DEFAULT_PUBSUB_MAX_OUTPUT,
            hash_override: false,
            reuseport: false,
            redis_auth: None,
            requirepass: None,
            users: Vec::new(),
            default_level: Level::Admin,
            admin_commands: AdminPolicy::All,
            rename_commands: Vec::new(),
            backend_username: None,
            backend_password: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            backend_tls: false,
            backend_tls_ca_file: None,
            backend_tls_server_name: None,
            backend_tls_cert_file: None,
            backend_tls_key_file: None,
            backend_tls_insecure: false,
            redis_db: 0,
            databases: 16,
            db_idle_timeout_ms: 60_000,
            rebalance: false,
            rebalance_rate: 5000,
            rebalance_batch: 100,
            hotkeys: 16,
            hotkeys_sample: 64,
            hotkeys_window_ms: 10_000,
            hotkey_cache: 0,
            hotkey_cache_threshold: 100,
            hotkey_cache_max_value: 16 * 1024,
            disable_commands: Vec::new(),
            split_partial: false,
            membership_commands: false,
            cluster: false,
            read_from: ReadFrom::Master,
            private_connections: DEFAULT_PRIVATE_CONNECTIONS,
        }
    }

    /// Credentials for `AUTH` on a connection to backend `s`: `(username, password)`, None =
    /// no AUTH.  Each part is the server's own (`user=` / `password=` on its line), else the
    /// pool's (`backend_username`; `backend_password`, else `redis_auth`).  Send
    /// `AUTH user pass` (or `HELLO 3 AUTH user pass`) with a username, `AUTH pass` without.
    /// `s`: None for a server not on a config line (a cluster replica): the pool's only.
    pub fn backend_auth<'a>(
        &'a self,
        s: Option<&'a ServerConfig>,
    ) -> Option<(Option<&'a str>, &'a str)> {
        let pass = s
            .and_then(|s| s.password.as_deref())
            .or(self.backend_password.as_deref())
            .or(self.redis_auth.as_deref())?;
        let user = s
            .and_then(|s| s.username.as_deref())
            .or(self.backend_username.as_deref());
        Some((user, pass))
    }

    /// The name to verify in the certificate of the backend at `host` (as written):
    /// `backend_tls_server_name`, else that host.
    pub fn backend_tls_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.backend_tls_server_name.as_deref().unwrap_or(host)
    }

    /// The listener speaks TLS (tls_cert_file and tls_key_file are set).
    pub fn tls_listen(&self) -> bool {
        self.tls_cert_file.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix { path: PathBuf, mode: Option<u32> },
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix { path, mode: None } => write!(f, "{}", path.display()),
            Listen::Unix {
                path,
                mode: Some(m),
            } => write!(f, "{} {:04o}", path.display(), m),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// As written (without IPv6 brackets); part of the ketama identity.
    pub host: String,
    pub port: u16,
    /// Resolved at load time (first address).
    pub addr: SocketAddr,
    /// > 0, default 1.
    pub weight: u32,
    pub name: Option<String>,
    /// `user=NAME` on the server line: ACL user for AUTH on this backend (overrides
    /// `backend_username`).
    pub username: Option<String>,
    /// `password=PASS` on the server line: AUTH password for this backend (overrides
    /// `backend_password` / `redis_auth`).
    pub password: Option<String>,
    /// Config line (0 for the command line).
    pub line: usize,
}

impl ServerConfig {
    /// The server's name if it has one, else `host:port` (as nutcracker
    /// names it: host as written, IPv6 without brackets).
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

#[derive(Debug)]
pub struct ConfigError {
    /// Path, or "command line".
    pub file: String,
    /// 0 = not tied to a line.
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.msg)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A [`ConfigError`] at `file:line`.
pub(crate) fn err(file: &str, line: usize, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        line,
        msg: msg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_server;
    use crate::config::testutil::{assert_pool_errors, assert_round_trip, native, AUTH_POOL};

    #[test]
    fn levels() {
        for n in LEVEL_NAMES {
            assert_eq!(Level::from_name(n).map(Level::name), Some(*n));
        }
        assert_eq!(Level::from_name("ReadOnly"), Some(Level::ReadOnly));
        assert_eq!(Level::from_name("root"), None);
        assert!(Level::ReadOnly < Level::ReadWrite && Level::ReadWrite < Level::Admin);
        for n in ["all", "admin", "disabled"] {
            assert_eq!(AdminPolicy::from_name(n).map(AdminPolicy::name), Some(n));
        }
        assert_eq!(AdminPolicy::from_name("none"), None);
    }

    #[test]
    fn backend_credentials() {
        let c = native(
            "pool p\nlisten 127.0.0.1:6380\nredis_auth rp\nbackend_username proxy\n\
             server 127.0.0.1:7001\nserver 127.0.0.1:7002 two user=u2 password=p2\n\
             server 127.0.0.1:7003 password=p3\nserver 127.0.0.1:7004:2 user=u4\n",
        )
        .unwrap();
        let p = &c.pools[0];
        let s = &p.servers;
        assert_eq!(s[1].name.as_deref(), Some("two"));
        assert_eq!(
            (s[1].username.as_deref(), s[1].password.as_deref()),
            (Some("u2"), Some("p2"))
        );
        assert_eq!(s[2].name, None);
        assert_eq!(s[2].display_name(), "127.0.0.1:7003");
        assert_eq!(s[3].name, None);
        assert_eq!(s[3].weight, 2);
        assert_eq!(p.backend_auth(Some(&s[0])), Some((Some("proxy"), "rp")));
        assert_eq!(p.backend_auth(Some(&s[1])), Some((Some("u2"), "p2")));
        assert_eq!(p.backend_auth(Some(&s[2])), Some((Some("proxy"), "p3")));
        assert_eq!(p.backend_auth(Some(&s[3])), Some((Some("u4"), "rp")));
        assert_round_trip(&c);

        // backend_password replaces redis_auth for backends only.
        let c = native(&format!("{AUTH_POOL}redis_auth rp\nbackend_password bp\n")).unwrap();
        let p = &c.pools[0];
        assert_eq!(p.backend_auth(Some(&p.servers[0])), Some((None, "bp")));
        let c = native(AUTH_POOL).unwrap();
        assert_eq!(c.pools[0].backend_auth(Some(&c.pools[0].servers[0])), None);
        // requirepass is never sent to backends.
        let c = native(&format!("{AUTH_POOL}requirepass cp\n")).unwrap();
        assert_eq!(c.pools[0].backend_auth(Some(&c.pools[0].servers[0])), None);

        // Errors.
        assert_pool_errors(&[
            (
                "server 127.0.0.1:7002 n password=\n",
                4,
                "malformed server credentials",
            ),
            (
                "server 127.0.0.1:7002 user=a user=b password=c\n",
                4,
                "user= given twice",
            ),
            (
                "server 127.0.0.1:7002 password=a n\n",
                4,
                "the name comes before",
            ),
            (
                "server 127.0.0.1:7002 n password=a extra\n",
                4,
                "unexpected 'extra'",
            ),
            (
                "server 127.0.0.1:7002 n user=u\n",
                4,
                "user= needs a password",
            ),
            (
                "backend_username u\n",
                4,
                "'backend_username' needs a password",
            ),
        ]);
        // user= with a pool password is fine.
        native(&format!(
            "{AUTH_POOL}backend_password x\nserver 127.0.0.1:7002 n user=u\n"
        ))
        .unwrap();
        // The membership commands' form still parses.
        let sv = parse_server("127.0.0.1:7005:3 five", 0).unwrap();
        assert_eq!(
            (sv.name.as_deref(), sv.username, sv.password),
            (Some("five"), None, None)
        );
    }

    #[test]
    fn backend_tls_name_rule() {
        let c = native(&format!(
            "{AUTH_POOL}backend_tls yes\nbackend_tls_server_name redis.local\n"
        ))
        .unwrap();
        let p = &c.pools[0];
        assert_eq!(p.backend_tls_name(&p.servers[0].host), "redis.local");
        let c = native(&format!("{AUTH_POOL}backend_tls yes\n")).unwrap();
        let p = &c.pools[0];
        assert_eq!(p.backend_tls_name(&p.servers[0].host), "127.0.0.1");
    }

    #[test]
    fn config_error_display() {
        assert_eq!(err("f", 0, "m").to_string(), "f: m");
        assert_eq!(err("f", 3, "m").to_string(), "f:3: m");
    }
}
