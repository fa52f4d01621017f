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
//!
//! Native format (see `proxy.conf.example`): line based, `#` starts a comment
//! at the start of a line or after whitespace (outside quotes), blank lines
//! are ignored.  Global keys (`log_level`, `log_file`, `stats_listen`,
//! `stats_interval`) come first; `pool NAME` opens a pool section and the
//! following `key value` lines belong to it.  Key names use underscores;
//! dashes (as in the long CLI options) are accepted too.  A value may be
//! wrapped in `"..."` (with `\"` and `\\` escapes) or `'...'`.
//!
//! Access-control keys (`requirepass`, repeatable `user NAME PASSWORD LEVEL`,
//! `default_level`, `admin_commands`, repeatable `rename_command OLD NEW`) fill
//! [`PoolConfig`] fields that [`crate::auth`] turns into its `Users` and
//! `Renames`; backend credentials (`backend_username`, `backend_password`,
//! `server ... user=NAME password=PASS`) and TLS keys are stored here and used
//! by the connection code.  `user` and `rename_command` values are several
//! words; a word may be quoted (`user alice "p w" readonly`, `rename_command
//! FLUSHALL ""`).
//!
//! Nutcracker format: the YAML subset nutcracker's own configs use, parsed
//! by hand: top-level `pool_name:` mappings, consistently indented
//! `key: value` scalars, and a `servers:` block list (`- host:port:weight
//! [name]`) or flow list (`[a, b]`).  All native pool keys are accepted as
//! well (`user:` and `rename_command:` may be repeated or take a block list).  Pools must say `redis: true` (nutcracker's default is memcached,
//! which rustproxy does not speak).
//!
//! Format detection in [`load`]: a `.yml`/`.yaml` extension means
//! nutcracker; otherwise the first line that is neither blank nor a comment
//! decides: `---`, or a line ending in `:` whose first word is not `pool`,
//! means nutcracker, anything else means native.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::auth::{AdminPolicy, Level};
use crate::hash::{self, HashKind};
use crate::ring::{self, Distribution};

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
/// nutcracker's default stats port (`-s`).
pub const DEFAULT_STATS_PORT: u16 = 22222;
/// Default stats address when only `-s` is given (loopback, unlike nutcracker's 0.0.0.0).
pub const DEFAULT_STATS_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// nutcracker's default stats aggregation interval (`-i`).
pub const DEFAULT_STATS_INTERVAL_MS: u64 = 30_000;

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

/// Pool keys that can also be given on the command line as `--key-with-dashes VALUE`
/// (with `-l`/`-b`): `(key, value hint, help)`.  `listen` and `server` are `-l`/`-b`.
pub const POOL_OPTIONS: &[(&str, &str, &str)] = &[
    ("hash", "NAME", "key hash (default fnv1a_64)"),
    (
        "distribution",
        "NAME",
        "ketama|modula|random (default ketama)",
    ),
    ("hash_tag", "TAG", "two characters, e.g. {} (default none)"),
    ("timeout", "MS", "request timeout, 0 = none (default 1000)"),
    (
        "connect_timeout",
        "MS",
        "backend connect timeout (default 1000)",
    ),
    (
        "server_connections",
        "N",
        "connections per backend (default 1)",
    ),
    ("backlog", "N", "listen backlog (default 512)"),
    (
        "preconnect",
        "BOOL",
        "connect to backends at startup (default no)",
    ),
    (
        "auto_eject_hosts",
        "BOOL",
        "eject failing backends (default no)",
    ),
    (
        "server_retry_timeout",
        "MS",
        "retry an ejected backend after (default 30000)",
    ),
    (
        "server_failure_limit",
        "N",
        "failures before ejection (default 2)",
    ),
    (
        "max_clients",
        "N",
        "client limit, 0 = unlimited (default 10000)",
    ),
    (
        "client_idle_timeout",
        "MS",
        "close idle clients, 0 = never (default 0)",
    ),
    (
        "max_pending",
        "N",
        "pending requests per client (default 1024)",
    ),
    (
        "max_output",
        "SIZE",
        "output buffer per client (default 64mb)",
    ),
    ("max_request", "SIZE", "largest argument (default 512mb)"),
    (
        "pubsub_max_output",
        "SIZE",
        "unread pub/sub messages per subscriber before it is disconnected (default 32mb)",
    ),
    (
        "hash_override",
        "BOOL",
        "route by a trailing hash=KEY argument (default no)",
    ),
    (
        "tcpkeepalive",
        "BOOL",
        "TCP keepalive on backends (default no)",
    ),
    (
        "reuseport",
        "BOOL",
        "SO_REUSEPORT on the listener (default no)",
    ),
    (
        "redis_auth",
        "PASSWORD",
        "password clients must AUTH with, also sent to backends (default none)",
    ),
    (
        "requirepass",
        "PASSWORD",
        "password clients must AUTH with; overrides redis_auth for clients (default none)",
    ),
    (
        "user",
        "'NAME PASSWORD LEVEL'",
        "a user (level readonly|readwrite|admin); once on the command line",
    ),
    (
        "default_level",
        "LEVEL",
        "level of the default user: readonly|readwrite|admin (default admin)",
    ),
    (
        "admin_commands",
        "all|admin|disabled",
        "who may run admin commands (default all)",
    ),
    (
        "rename_command",
        "'OLD NEW'",
        "reach command OLD only as NEW (\"\" disables it); once on the command line",
    ),
    (
        "backend_username",
        "NAME",
        "ACL user for AUTH on backend connections (default none)",
    ),
    (
        "backend_password",
        "PASSWORD",
        "password for AUTH on backend connections (default: redis_auth)",
    ),
    (
        "tls_cert_file",
        "PATH",
        "TLS certificate for the listener; with tls_key_file the listener speaks TLS only",
    ),
    ("tls_key_file", "PATH", "TLS private key for the listener"),
    (
        "tls_client_ca_file",
        "PATH",
        "require client certificates signed by these CAs (default: not required)",
    ),
    ("backend_tls", "BOOL", "TLS to the backends (default no)"),
    (
        "backend_tls_ca_file",
        "PATH",
        "CAs for backend certificates (default: system roots)",
    ),
    (
        "backend_tls_server_name",
        "NAME",
        "name checked in backend certificates (default: the server's host)",
    ),
    (
        "backend_tls_cert_file",
        "PATH",
        "client certificate presented to backends (default none)",
    ),
    (
        "backend_tls_key_file",
        "PATH",
        "private key of backend_tls_cert_file",
    ),
    (
        "backend_tls_insecure",
        "BOOL",
        "do not verify backend certificates (default no)",
    ),
    ("redis_db", "N", "SELECT sent to backends (default 0)"),
    (
        "disable_commands",
        "LIST",
        "commands refused, comma separated",
    ),
    (
        "private_connections",
        "N",
        "private backend connections per backend for blocking commands and WATCH (default 64)",
    ),
    (
        "read_from",
        "WHERE",
        "cluster pools: master|replica|prefer-replica for read-only commands (default master)",
    ),
    (
        "membership_commands",
        "BOOL",
        "allow PROXY ADDBACKEND/REMOVEBACKEND (default no)",
    ),
    (
        "split_failure",
        "error|partial",
        "MGET/DEL/... when a backend fails: one error, or nil/partial sum (default error)",
    ),
];

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
    pub redis_db: u32,
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
            hash_tag: None,
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
            disable_commands: Vec::new(),
            split_partial: false,
            membership_commands: false,
            cluster: false,
            read_from: ReadFrom::Master,
            private_connections: 64,
        }
    }

    /// Credentials for `AUTH` on a connection to backend `s`: `(username, password)`, None =
    /// no AUTH.  Each part is the server's own (`user=` / `password=` on its line), else the
    /// pool's (`backend_username`; `backend_password`, else `redis_auth`).  Send
    /// `AUTH user pass` (or `HELLO 3 AUTH user pass`) with a username, `AUTH pass` without.
    pub fn backend_auth<'a>(&'a self, s: &'a ServerConfig) -> Option<(Option<&'a str>, &'a str)> {
        let pass = s
            .password
            .as_deref()
            .or(self.backend_password.as_deref())
            .or(self.redis_auth.as_deref())?;
        let user = s.username.as_deref().or(self.backend_username.as_deref());
        Some((user, pass))
    }

    /// The name to verify in backend `s`'s certificate: `backend_tls_server_name`, else the
    /// server's host as written.
    pub fn backend_tls_name<'a>(&'a self, s: &'a ServerConfig) -> &'a str {
        self.backend_tls_server_name.as_deref().unwrap_or(&s.host)
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

fn host_for_addr(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
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

fn err(file: &str, line: usize, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        line,
        msg: msg.into(),
    }
}

// ---------------------------------------------------------------------------
// Entry points

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

fn empty_config(format: Format) -> Config {
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

/// Parse the native format.  `file` is used in error messages only.
pub fn parse_native(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut cfg = empty_config(Format::Native);
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
            check_pool_name(&value).map_err(|m| err(file, line, m))?;
            if let Some(p) = pools.iter().find(|p| p.pool.name == value) {
                return Err(err(
                    file,
                    line,
                    format!(
                        "duplicate pool name '{value}' (first defined on line {})",
                        p.line
                    ),
                ));
            }
            pools.push(PoolBuilder::new(&value, line));
            continue;
        }
        if value.is_empty() {
            return Err(err(file, line, format!("missing value for '{key}'")));
        }
        if let Some(canon) = global_key(&key) {
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
            if let Some(first) = global_seen.insert(canon, line) {
                return Err(err(
                    file,
                    line,
                    format!("duplicate key '{key}' (first set on line {first})"),
                ));
            }
            set_global(&mut cfg, canon, &value).map_err(|m| err(file, line, m))?;
            continue;
        }
        let canon = match pool_key(&key) {
            Some(c) => c,
            None => return Err(err(file, line, format!("unknown key '{key}'"))),
        };
        let Some(pool) = pools.last_mut() else {
            return Err(err(
                file,
                line,
                format!("'{key}' outside of a pool section (start one with 'pool NAME')"),
            ));
        };
        pool.set(canon, &key, &value, line)
            .map_err(|m| err(file, line, m))?;
    }
    finish(cfg, pools, file)
}

/// Parse nutcracker's YAML format.  `file` is used in error messages only.
pub fn parse_nutcracker(text: &str, file: &str) -> Result<Config, ConfigError> {
    let cfg = empty_config(Format::Nutcracker);
    let mut pools: Vec<PoolBuilder> = Vec::new();
    let mut key_indent: Option<usize> = None;
    let mut item_indent: Option<usize> = None;
    // The key whose block list is open: "server" (`servers:`), "user" or "rename_command".
    let mut in_list: Option<&'static str> = None;
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
            check_pool_name(&name).map_err(e)?;
            if let Some(p) = pools.iter().find(|p| p.pool.name == name) {
                return Err(e(format!(
                    "duplicate pool name '{name}' (first defined on line {})",
                    p.line
                )));
            }
            pools.push(PoolBuilder::new(&name, line));
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
            if list_key != "server" {
                // Several words, quoted one by one or as a whole (see `split_words`).
                let item = body[1..].trim();
                if item.is_empty() {
                    return Err(e(format!("empty {list_key} entry")));
                }
                pool.set(list_key, list_key, item, line).map_err(e)?;
                continue;
            }
            let item = unquote_yaml(body[1..].trim()).map_err(e)?;
            if item.is_empty() {
                return Err(e("empty server entry".into()));
            }
            pool.set("server", "servers", &item, line).map_err(e)?;
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
                if let Some(first) = pool.seen.insert("servers", line) {
                    return Err(e(format!(
                        "duplicate key 'servers' (first set on line {first})"
                    )));
                }
                if value.is_empty() {
                    in_list = Some("server");
                } else if let Some(inner) =
                    value.strip_prefix('[').and_then(|v| v.strip_suffix(']'))
                {
                    for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let item = unquote_yaml(item).map_err(e)?;
                        pool.set("server", "servers", &item, line).map_err(e)?;
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
            "user" | "rename_command" => {
                let canon = if key == "user" {
                    "user"
                } else {
                    "rename_command"
                };
                if value.is_empty() {
                    in_list = Some(canon);
                } else {
                    pool.set(canon, &key, &value, line).map_err(e)?;
                }
            }
            "redis" => {
                if let Some(first) = pool.seen.insert("redis", line) {
                    return Err(e(format!(
                        "duplicate key 'redis' (first set on line {first})"
                    )));
                }
                let v = unquote_yaml(&value).map_err(e)?;
                pool.redis = Some((parse_bool("redis", &v).map_err(e)?, line));
            }
            _ => {
                let canon = pool_key(&key).ok_or_else(|| e(format!("unknown key '{key}'")))?;
                let v = unquote_yaml(&value).map_err(e)?;
                if v.is_empty() {
                    return Err(e(format!("missing value for '{key}'")));
                }
                pool.set(canon, &key, &v, line).map_err(e)?;
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
    let mut cfg = empty_config(Format::Native);
    let mut pool = PoolBuilder::new("default", 0);
    pool.set("listen", "listen", listen.trim(), 0)
        .map_err(|m| err(FILE, 0, format!("--listen: {m}")))?;
    for b in backends.split(',').map(str::trim) {
        if b.is_empty() {
            return Err(err(
                FILE,
                0,
                format!("--backends: empty entry in '{backends}'"),
            ));
        }
        pool.set("server", "server", b, 0)
            .map_err(|m| err(FILE, 0, format!("--backends: {m}")))?;
    }
    for (k, v) in opts {
        let key = k.trim_start_matches('-').replace('-', "_");
        let flag = key.replace('_', "-");
        let e = |m: String| err(FILE, 0, format!("--{flag}: {m}"));
        if let Some(canon) = global_key(&key) {
            set_global(&mut cfg, canon, v).map_err(e)?;
        } else if let Some(canon) = pool_key(&key) {
            if canon == "listen" || canon == "server" {
                return Err(e("use -l/--listen and -b/--backends".into()));
            }
            pool.set(canon, &key, v, 0).map_err(e)?;
        } else {
            return Err(e(format!("unknown option '{k}'")));
        }
    }
    finish(cfg, vec![pool], FILE)
}

// ---------------------------------------------------------------------------
// Keys

fn global_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "log_level" => "log_level",
        "log_file" => "log_file",
        "stats_listen" => "stats_listen",
        "stats_interval" => "stats_interval",
        "command_stats" => "command_stats",
        _ => return None,
    })
}

fn set_global(cfg: &mut Config, canon: &str, v: &str) -> Result<(), String> {
    match canon {
        "log_level" => cfg.log_level = parse_log_level(v)?,
        "log_file" => cfg.log_file = Some(PathBuf::from(v)),
        "stats_listen" => cfg.stats_listen = Some(parse_tcp_addr(v)?),
        "stats_interval" => cfg.stats_interval_ms = parse_num("stats_interval", v)?,
        "command_stats" => cfg.command_stats = parse_bool("command_stats", v)?,
        _ => unreachable!("not a global key: {canon}"),
    }
    Ok(())
}

/// Canonical name of a pool key (aliases and dashes folded), None if unknown.
fn pool_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "listen" => "listen",
        "server" => "server",
        "hash" => "hash",
        "distribution" => "distribution",
        "hash_tag" => "hash_tag",
        "server_connections" => "server_connections",
        "timeout" => "timeout",
        "connect_timeout" => "connect_timeout",
        "backlog" => "backlog",
        "preconnect" => "preconnect",
        "auto_eject_hosts" => "auto_eject_hosts",
        "server_retry_timeout" => "server_retry_timeout",
        "server_failure_limit" => "server_failure_limit",
        "max_clients" | "client_connections" => "max_clients",
        "client_idle_timeout" => "client_idle_timeout",
        "max_pending" => "max_pending",
        "max_output" => "max_output",
        "max_request" => "max_request",
        "tcpkeepalive" => "tcpkeepalive",
        "pubsub_max_output" => "pubsub_max_output",
        "hash_override" => "hash_override",
        "reuseport" => "reuseport",
        "redis_auth" => "redis_auth",
        "requirepass" => "requirepass",
        "user" => "user",
        "default_level" => "default_level",
        "admin_commands" => "admin_commands",
        "rename_command" => "rename_command",
        "backend_username" => "backend_username",
        "backend_password" => "backend_password",
        "tls_cert_file" => "tls_cert_file",
        "tls_key_file" => "tls_key_file",
        "tls_client_ca_file" => "tls_client_ca_file",
        "backend_tls" => "backend_tls",
        "backend_tls_ca_file" => "backend_tls_ca_file",
        "backend_tls_server_name" => "backend_tls_server_name",
        "backend_tls_cert_file" => "backend_tls_cert_file",
        "backend_tls_key_file" => "backend_tls_key_file",
        "backend_tls_insecure" => "backend_tls_insecure",
        "redis_db" => "redis_db",
        "disable_commands" => "disable_commands",
        "split_failure" => "split_failure",
        "cluster" => "cluster",
        "read_from" => "read_from",
        "membership_commands" => "membership_commands",
        "private_connections" => "private_connections",
        _ => return None,
    })
}

struct PoolBuilder {
    pool: PoolConfig,
    line: usize,
    listen: Option<usize>,
    /// Canonical key -> line of first occurrence (duplicate detection).
    seen: HashMap<&'static str, usize>,
    /// nutcracker only: `redis:` value and line.
    redis: Option<(bool, usize)>,
    /// `user` name / `rename_command` OLD and NEW (upper case) -> line (duplicate detection).
    user_lines: HashMap<String, usize>,
    rename_lines: HashMap<String, usize>,
}

/// Keys that may be given more than once (besides `server`).
fn repeatable(canon: &str) -> bool {
    matches!(canon, "server" | "user" | "rename_command")
}

/// " (first on line N)", or "" for the command line.
fn first_on(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" (first on line {line})")
    }
}

/// A user name or a renamed command's new name: no whitespace or control characters, not
/// starting with a quote or '#', so that it renders as a bare word.
fn check_word(what: &str, w: &str) -> Result<(), String> {
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

impl PoolBuilder {
    fn new(name: &str, line: usize) -> PoolBuilder {
        PoolBuilder {
            pool: PoolConfig::with_defaults(name, Listen::Tcp(SocketAddr::from(([0, 0, 0, 0], 0)))),
            line,
            listen: None,
            seen: HashMap::new(),
            redis: None,
            user_lines: HashMap::new(),
            rename_lines: HashMap::new(),
        }
    }

    /// Set canonical key `canon` (written as `key`) to `v`; errors without file:line.
    fn set(&mut self, canon: &'static str, key: &str, v: &str, line: usize) -> Result<(), String> {
        if !repeatable(canon) {
            if let Some(first) = self.seen.insert(canon, line) {
                return Err(if first == 0 {
                    format!("duplicate key '{key}'")
                } else {
                    format!("duplicate key '{key}' (first set on line {first})")
                });
            }
        }
        let p = &mut self.pool;
        match canon {
            "listen" => {
                p.listen = parse_listen(v)?;
                self.listen = Some(line);
            }
            "server" => p.servers.push(parse_server(v, line)?),
            "hash" => {
                p.hash = hash::HashKind::from_name(v).ok_or_else(|| {
                    format!(
                        "unknown hash '{v}' (expected one of {})",
                        HASH_NAMES.join(", ")
                    )
                })?
            }
            "distribution" => {
                p.distribution = ring::Distribution::from_name(v).ok_or_else(|| {
                    format!(
                        "unknown distribution '{v}' (expected one of {})",
                        DISTRIBUTION_NAMES.join(", ")
                    )
                })?
            }
            "hash_tag" => {
                let b = v.as_bytes();
                if b.len() != 2 || !v.is_ascii() {
                    return Err(format!(
                        "hash_tag must be exactly two ASCII characters like \"{{}}\", got '{v}'"
                    ));
                }
                p.hash_tag = Some([b[0], b[1]]);
            }
            "server_connections" => p.server_connections = parse_min1(key, v)?,
            "timeout" => p.timeout_ms = parse_num(key, v)?,
            "connect_timeout" => p.connect_timeout_ms = parse_num(key, v)?,
            "backlog" => p.backlog = parse_num(key, v)?,
            "preconnect" => p.preconnect = parse_bool(key, v)?,
            "auto_eject_hosts" => p.auto_eject_hosts = parse_bool(key, v)?,
            "server_retry_timeout" => p.server_retry_timeout_ms = parse_num(key, v)?,
            "server_failure_limit" => p.server_failure_limit = parse_min1(key, v)?,
            "max_clients" => p.max_clients = parse_num(key, v)?,
            "client_idle_timeout" => p.client_idle_timeout_ms = parse_num(key, v)?,
            "max_pending" => p.max_pending = parse_min1(key, v)?,
            "max_output" => p.max_output = parse_size(key, v)?,
            "max_request" => p.max_request = parse_size(key, v)?,
            "tcpkeepalive" => p.tcpkeepalive = parse_bool(key, v)?,
            "pubsub_max_output" => p.pubsub_max_output = parse_size(key, v)?,
            "hash_override" => p.hash_override = parse_bool(key, v)?,
            "reuseport" => p.reuseport = parse_bool(key, v)?,
            "redis_auth" => p.redis_auth = (!v.is_empty()).then(|| v.to_string()),
            "requirepass" => p.requirepass = Some(v.to_string()),
            "user" => {
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
                        crate::auth::LEVEL_NAMES.join(", ")
                    )
                })?;
                if let Some(first) = self.user_lines.insert(name.clone(), line) {
                    return Err(format!("duplicate user '{name}'{}", first_on(first)));
                }
                p.users.push((name, pass, level));
            }
            "default_level" => {
                p.default_level = Level::from_name(v).ok_or_else(|| {
                    format!(
                        "unknown level '{v}' for '{key}' (expected {})",
                        crate::auth::LEVEL_NAMES.join(", ")
                    )
                })?
            }
            "admin_commands" => {
                p.admin_commands = AdminPolicy::from_name(v)
                    .ok_or_else(|| format!("bad {key} '{v}' (expected all, admin or disabled)"))?
            }
            "rename_command" => {
                let w = split_words(v)?;
                let [old, new] = <[String; 2]>::try_from(w).map_err(|_| {
                    format!("expected '{key} OLD NEW' (NEW \"\" disables OLD), got '{v}'")
                })?;
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
                if let Some(first) = self.rename_lines.insert(old.clone(), line) {
                    return Err(format!("{key}: {old} renamed twice{}", first_on(first)));
                }
                if !new.is_empty() {
                    if let Some(first) = self.rename_lines.insert(new.to_ascii_uppercase(), line) {
                        return Err(format!(
                            "{key}: '{new}' is already a new name{}",
                            first_on(first)
                        ));
                    }
                }
                p.rename_commands.push((old, new));
            }
            "backend_username" => {
                check_word("backend_username", v)?;
                p.backend_username = Some(v.to_string())
            }
            "backend_password" => p.backend_password = Some(v.to_string()),
            "tls_cert_file" => p.tls_cert_file = Some(PathBuf::from(v)),
            "tls_key_file" => p.tls_key_file = Some(PathBuf::from(v)),
            "tls_client_ca_file" => p.tls_client_ca_file = Some(PathBuf::from(v)),
            "backend_tls" => p.backend_tls = parse_bool(key, v)?,
            "backend_tls_ca_file" => p.backend_tls_ca_file = Some(PathBuf::from(v)),
            "backend_tls_server_name" => {
                check_word("backend_tls_server_name", v)?;
                p.backend_tls_server_name = Some(v.to_string())
            }
            "backend_tls_cert_file" => p.backend_tls_cert_file = Some(PathBuf::from(v)),
            "backend_tls_key_file" => p.backend_tls_key_file = Some(PathBuf::from(v)),
            "backend_tls_insecure" => p.backend_tls_insecure = parse_bool(key, v)?,
            "redis_db" => p.redis_db = parse_num(key, v)?,
            "membership_commands" => p.membership_commands = parse_bool(key, v)?,
            "cluster" => p.cluster = parse_bool(key, v)?,
            "read_from" => {
                p.read_from = match v.to_ascii_lowercase().as_str() {
                    "master" => ReadFrom::Master,
                    "replica" => ReadFrom::Replica,
                    "prefer-replica" | "prefer_replica" => ReadFrom::PreferReplica,
                    _ => {
                        return Err(format!(
                            "bad read_from '{v}' (expected master, replica or prefer-replica)"
                        ))
                    }
                }
            }
            "private_connections" => {
                p.private_connections = v
                    .parse()
                    .map_err(|_| format!("bad number '{v}' for private_connections"))?
            }
            "split_failure" => {
                p.split_partial = match v.to_ascii_lowercase().as_str() {
                    "error" => false,
                    "partial" => true,
                    _ => {
                        return Err(format!(
                            "bad split_failure '{v}' (expected error or partial)"
                        ))
                    }
                }
            }
            "disable_commands" => {
                let mut cmds: Vec<String> = Vec::new();
                for c in v
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
                p.disable_commands = cmds;
            }
            _ => unreachable!("not a pool key: {canon}"),
        }
        Ok(())
    }
}

impl PoolBuilder {
    /// Cross-key checks of the credential and TLS keys: `Err((line, message))`.
    fn check_auth_tls(&self) -> Result<(), (usize, String)> {
        let p = &self.pool;
        let at = |k: &str| self.seen.get(k).copied().unwrap_or(self.line);
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
                "'tls_client_ca_file' needs 'tls_cert_file' and 'tls_key_file' (a TLS listener)"
                    .into(),
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
}

/// Shared validation; turns builders into the final `Config`.
fn finish(mut cfg: Config, pools: Vec<PoolBuilder>, file: &str) -> Result<Config, ConfigError> {
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
        b.check_auth_tls().map_err(|(l, m)| err(file, l, m))?;
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

// ---------------------------------------------------------------------------
// Values

fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.contains(|c: char| c.is_whitespace() || c == '#' || c == '"' || c == '\'')
    {
        return Err(format!(
            "bad pool name '{name}' (no whitespace, quotes or '#')"
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

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad number '{v}' for '{key}'"));
    }
    v.parse()
        .map_err(|_| format!("number '{v}' for '{key}' is out of range"))
}

fn parse_min1<T: std::str::FromStr + PartialEq + From<u8>>(
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

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!(
            "bad boolean '{v}' for '{key}' (expected yes, no, true or false)"
        )),
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

fn render_size(n: usize) -> String {
    for (unit, m) in [("gb", 1usize << 30), ("mb", 1 << 20), ("kb", 1 << 10)] {
        if n != 0 && n.is_multiple_of(m) {
            return format!("{}{unit}", n / m);
        }
    }
    n.to_string()
}

/// `host:port`, `[v6]:port` or `ip:port`, resolved to the first address.
fn parse_tcp_addr(v: &str) -> Result<SocketAddr, String> {
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

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
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

/// `host:port` or `/path/to/sock [mode]` (mode in octal, e.g. 0666).
fn parse_listen(v: &str) -> Result<Listen, String> {
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

/// twemproxy's server syntax: `host:port[:weight] [name]`, `[v6]:port[:weight]`,
/// or bare `v6:port:weight` (the weight is then required).
/// One `server` value (`host:port[:weight] [name] [user=NAME] [password=PASS]`), resolved;
/// used by the runtime membership commands too.  The credentials are backend AUTH
/// credentials for this server (words without whitespace, any order after the address).
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

// ---------------------------------------------------------------------------
// Lexing

/// Everything before a `#` that starts the line or follows whitespace,
/// outside quoted strings (a quote opens one only at the start of a token).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(b'"') if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            // A quote only opens a quoted string at the start of a token.
            None if (c == b'"' || c == b'\'')
                && (i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'[' | b',')) =>
            {
                quote = Some(c)
            }
            None if c == b'#' && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') => {
                return &line[..i]
            }
            None => {}
        }
        i += 1;
    }
    line
}

/// Parse a quoted value starting at `s[0]` (`"` with `\"`/`\\` escapes, or
/// `'` with `''`); returns the value and the remainder after the closing quote.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let q = s.as_bytes()[0] as char;
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == q {
            if q == '\'' && s[1 + i + 1..].starts_with('\'') {
                out.push('\'');
                chars.next();
                continue;
            }
            return Ok((out, &s[1 + i + 1..]));
        }
        if q == '"' && c == '\\' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e @ ('"' | '\\' | '/'))) => out.push(e),
                Some((_, e)) => return Err(format!("unknown escape '\\{e}' in quoted string")),
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Err(format!("unterminated {q}-quoted string"))
}

/// Native line -> `(key, value)`; None for blank/comment lines.
fn split_native_line(raw: &str) -> Result<Option<(String, String)>, String> {
    let l = strip_comment(raw).trim();
    if l.is_empty() {
        return Ok(None);
    }
    let (key, rest) = match l.find(char::is_whitespace) {
        Some(i) => (&l[..i], l[i..].trim_start()),
        None => (l, ""),
    };
    if multi_word_key(key) {
        // `user` / `rename_command`: several words, each maybe quoted; see `split_words`.
        return Ok(Some((key.to_string(), rest.to_string())));
    }
    if rest.starts_with('"') || rest.starts_with('\'') {
        let (v, tail) = parse_quoted(rest)?;
        if !tail.trim().is_empty() {
            return Err(format!("unexpected '{}' after quoted value", tail.trim()));
        }
        return Ok(Some((key.to_string(), v)));
    }
    Ok(Some((key.to_string(), rest.to_string())))
}

/// Keys whose value is several words (`user NAME PASSWORD LEVEL`, `rename_command OLD NEW`).
fn multi_word_key(key: &str) -> bool {
    matches!(
        pool_key(&key.replace('-', "_")),
        Some("user" | "rename_command")
    )
}

/// Split a multi-word value on whitespace; a word that starts with a quote is a quoted string
/// (as in [`parse_quoted`], so `""` is an empty word).  A value that is one quoted string of
/// several words (`"alice pw readonly"`, YAML style) is split again.
fn split_words(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = v.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') || rest.starts_with('\'') {
            let (w, tail) = parse_quoted(rest)?;
            if !tail.is_empty() && !tail.starts_with(char::is_whitespace) {
                return Err(format!("unexpected '{}' after quoted word", tail.trim()));
            }
            out.push(w);
            rest = tail.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    if out.len() == 1
        && out[0].contains(char::is_whitespace)
        && v.trim_start().starts_with(['"', '\''])
    {
        return split_words(&out[0].clone());
    }
    Ok(out)
}

/// `key: value` (value raw, maybe quoted, maybe empty).
fn split_yaml_key(body: &str) -> Result<(String, String), String> {
    let colon = body
        .char_indices()
        .find(|&(i, c)| c == ':' && body[i + 1..].chars().next().is_none_or(|n| n == ' '))
        .map(|(i, _)| i)
        .ok_or_else(|| format!("expected 'key: value', found '{body}'"))?;
    let key = unquote_yaml(body[..colon].trim())?;
    if key.is_empty() {
        return Err(format!("missing key in '{body}'"));
    }
    Ok((key, body[colon + 1..].trim().to_string()))
}

fn unquote_yaml(v: &str) -> Result<String, String> {
    if v.starts_with('"') || v.starts_with('\'') {
        let (s, tail) = parse_quoted(v)?;
        if !tail.trim().is_empty() {
            return Err(format!("unexpected '{}' after quoted value", tail.trim()));
        }
        Ok(s)
    } else {
        Ok(v.to_string())
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Rendering

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
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
    let _ = writeln!(s, "log_level {}", c.log_level.as_str().to_ascii_lowercase());
    if let Some(f) = &c.log_file {
        let _ = writeln!(s, "log_file {}", quote(&f.to_string_lossy()));
    }
    if let Some(a) = &c.stats_listen {
        let _ = writeln!(s, "stats_listen {a}");
    }
    let _ = writeln!(s, "stats_interval {}", c.stats_interval_ms);
    if !c.command_stats {
        let _ = writeln!(s, "command_stats no");
    }
    for p in &c.pools {
        let _ = writeln!(s, "\npool {}", p.name);
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(s, "    {k} {v}");
        };
        kv("listen", p.listen.to_string());
        kv("hash", p.hash.name().to_string());
        kv("distribution", p.distribution.name().to_string());
        if let Some(t) = p.hash_tag {
            kv("hash_tag", quote(&String::from_utf8_lossy(&t)));
        }
        kv("timeout", p.timeout_ms.to_string());
        kv("connect_timeout", p.connect_timeout_ms.to_string());
        kv("server_connections", p.server_connections.to_string());
        kv("backlog", p.backlog.to_string());
        kv("preconnect", yes_no(p.preconnect).into());
        kv("auto_eject_hosts", yes_no(p.auto_eject_hosts).into());
        kv(
            "server_retry_timeout",
            p.server_retry_timeout_ms.to_string(),
        );
        kv("server_failure_limit", p.server_failure_limit.to_string());
        kv("max_clients", p.max_clients.to_string());
        kv("client_idle_timeout", p.client_idle_timeout_ms.to_string());
        kv("max_pending", p.max_pending.to_string());
        kv("max_output", render_size(p.max_output));
        kv("max_request", render_size(p.max_request));
        kv("tcpkeepalive", yes_no(p.tcpkeepalive).into());
        kv("pubsub_max_output", render_size(p.pubsub_max_output));
        kv("hash_override", yes_no(p.hash_override).into());
        kv("reuseport", yes_no(p.reuseport).into());
        if let Some(a) = &p.redis_auth {
            kv("redis_auth", quote(a));
        }
        if let Some(a) = &p.requirepass {
            kv("requirepass", quote(a));
        }
        for (name, pass, level) in &p.users {
            kv("user", format!("{name} {} {}", quote(pass), level.name()));
        }
        kv("default_level", p.default_level.name().into());
        kv("admin_commands", p.admin_commands.name().into());
        for (old, new) in &p.rename_commands {
            kv("rename_command", format!("{old} {}", quote(new)));
        }
        if let Some(u) = &p.backend_username {
            kv("backend_username", quote(u));
        }
        if let Some(a) = &p.backend_password {
            kv("backend_password", quote(a));
        }
        let path = |f: &PathBuf| quote(&f.to_string_lossy());
        for (k, f) in [
            ("tls_cert_file", &p.tls_cert_file),
            ("tls_key_file", &p.tls_key_file),
            ("tls_client_ca_file", &p.tls_client_ca_file),
        ] {
            if let Some(f) = f {
                kv(k, path(f));
            }
        }
        kv("backend_tls", yes_no(p.backend_tls).into());
        if let Some(f) = &p.backend_tls_ca_file {
            kv("backend_tls_ca_file", path(f));
        }
        if let Some(n) = &p.backend_tls_server_name {
            kv("backend_tls_server_name", quote(n));
        }
        for (k, f) in [
            ("backend_tls_cert_file", &p.backend_tls_cert_file),
            ("backend_tls_key_file", &p.backend_tls_key_file),
        ] {
            if let Some(f) = f {
                kv(k, path(f));
            }
        }
        if p.backend_tls {
            kv(
                "backend_tls_insecure",
                yes_no(p.backend_tls_insecure).into(),
            );
        }
        kv("redis_db", p.redis_db.to_string());
        if !p.disable_commands.is_empty() {
            kv("disable_commands", p.disable_commands.join(","));
        }
        kv("membership_commands", yes_no(p.membership_commands).into());
        if p.cluster {
            kv("cluster", "yes".into());
            kv("read_from", p.read_from.name().into());
        }
        kv("private_connections", p.private_connections.to_string());
        kv(
            "split_failure",
            if p.split_partial { "partial" } else { "error" }.into(),
        );
        for sv in &p.servers {
            let mut name = sv
                .name
                .as_ref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            if let Some(u) = &sv.username {
                name.push_str(&format!(" user={u}"));
            }
            if let Some(pw) = &sv.password {
                name.push_str(&format!(" password={pw}"));
            }
            kv(
                "server",
                format!(
                    "{}:{}:{}{name}",
                    host_for_addr(&sv.host),
                    sv.port,
                    sv.weight
                ),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

    fn native(text: &str) -> Result<Config, ConfigError> {
        parse_native(text, "t.conf")
    }

    fn native_err(text: &str) -> (usize, String) {
        let e = native(text).expect_err("expected an error");
        assert_eq!(e.file, "t.conf");
        (e.line, e.msg)
    }

    fn yaml_err(text: &str) -> (usize, String) {
        let e = parse_nutcracker(text, "t.yml").expect_err("expected an error");
        (e.line, e.msg)
    }

    const MIN: &str = "pool p\n listen 127.0.0.1:6380\n server 127.0.0.1:7001\n";

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

    fn assert_round_trip(c: &Config) {
        let text = render_native(c);
        let mut back = parse_native(&text, "rendered").unwrap_or_else(|e| panic!("{e}\n{text}"));
        back.path = c.path.clone();
        back.format = c.format;
        for (bp, cp) in back.pools.iter_mut().zip(&c.pools) {
            for (bs, cs) in bp.servers.iter_mut().zip(&cp.servers) {
                bs.line = cs.line;
            }
        }
        assert_eq!(&back, c, "{text}");
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
        assert_eq!(render_size(0), "0");
        assert_eq!(render_size(64 << 20), "64mb");
        assert_eq!(render_size(1536), "1536");
    }

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
    fn comments_and_apostrophes() {
        let c = native(
            "log_file /tmp/bob's.log # comment\npool p\nlisten 127.0.0.1:6380\n\
             redis_auth a'b#c # not part of it\nserver 127.0.0.1:7001 # first\n",
        )
        .unwrap();
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/bob's.log")));
        assert_eq!(c.pools[0].redis_auth.as_deref(), Some("a'b#c"));
        let y = parse_nutcracker(
            "a: # pool\n  listen: 127.0.0.1:6380 # here\n  redis: true\n  redis_auth: it's # c\n\
             \n  servers: ['127.0.0.1:7001:1 x#y', 127.0.0.1:7002:1] # list\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(y.pools[0].redis_auth.as_deref(), Some("it's"));
        assert_eq!(y.pools[0].servers[0].display_name(), "x#y");
    }

    #[test]
    fn example_documents_every_key() {
        let text = std::fs::read_to_string(Path::new(MANIFEST).join("proxy.conf.example")).unwrap();
        let keys = POOL_OPTIONS.iter().map(|(k, _, _)| *k).chain([
            "log_level",
            "log_file",
            "stats_listen",
            "stats_interval",
            "listen",
            "server",
        ]);
        for k in keys {
            let documented = text.lines().any(|l| {
                let l = l.trim_start().trim_start_matches('#');
                l.split_whitespace().next() == Some(k)
            });
            assert!(documented, "proxy.conf.example does not show '{k}'");
        }
    }

    #[test]
    fn pool_options_are_pool_keys() {
        for (k, _, _) in POOL_OPTIONS {
            assert_eq!(pool_key(k), Some(*k));
        }
        for n in HASH_NAMES {
            assert_eq!(hash::HashKind::from_name(n).map(|h| h.name()), Some(*n));
        }
        for n in DISTRIBUTION_NAMES {
            assert_eq!(ring::Distribution::from_name(n).map(|d| d.name()), Some(*n));
        }
    }

    const AUTH_POOL: &str = "pool p\nlisten 127.0.0.1:6380\nserver 127.0.0.1:7001\n";

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
        let cases: &[(&str, &str)] = &[
            (
                "user alice pw root\n",
                "unknown level 'root' for user 'alice'",
            ),
            ("user alice pw\n", "expected 'user NAME PASSWORD LEVEL'"),
            (
                "user alice pw readonly extra\n",
                "expected 'user NAME PASSWORD LEVEL'",
            ),
            (
                "user alice \"\" readonly\n",
                "empty password for user 'alice'",
            ),
            ("user default pw admin\n", "user 'default' is reserved"),
            ("user alice \"pw readonly\n", "unterminated"),
            ("default_level superuser\n", "unknown level 'superuser'"),
            ("admin_commands some\n", "bad admin_commands 'some'"),
            (
                "rename_command FLUSHALL\n",
                "expected 'rename_command OLD NEW'",
            ),
            ("rename_command NOSUCH x\n", "unknown command 'NOSUCH'"),
            (
                "rename_command \"CONFIG GET\" x\n",
                "unknown command 'CONFIG GET'",
            ),
            (
                "rename_command FLUSHALL get\n",
                "an existing command name (GET)",
            ),
            ("requirepass \"\"\n", "missing value for 'requirepass'"),
            ("backend_tls maybe\n", "bad boolean 'maybe'"),
        ];
        for (text, want) in cases {
            let (line, msg) = native_err(&format!("{AUTH_POOL}{text}"));
            assert_eq!(line, 4, "{text}: {msg}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
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
        assert_eq!(p.backend_auth(&s[0]), Some((Some("proxy"), "rp")));
        assert_eq!(p.backend_auth(&s[1]), Some((Some("u2"), "p2")));
        assert_eq!(p.backend_auth(&s[2]), Some((Some("proxy"), "p3")));
        assert_eq!(p.backend_auth(&s[3]), Some((Some("u4"), "rp")));
        assert_round_trip(&c);

        // backend_password replaces redis_auth for backends only.
        let c = native(&format!("{AUTH_POOL}redis_auth rp\nbackend_password bp\n")).unwrap();
        let p = &c.pools[0];
        assert_eq!(p.backend_auth(&p.servers[0]), Some((None, "bp")));
        let c = native(AUTH_POOL).unwrap();
        assert_eq!(c.pools[0].backend_auth(&c.pools[0].servers[0]), None);
        // requirepass is never sent to backends.
        let c = native(&format!("{AUTH_POOL}requirepass cp\n")).unwrap();
        assert_eq!(c.pools[0].backend_auth(&c.pools[0].servers[0]), None);

        // Errors.
        for (text, line, want) in [
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
        ] {
            let (l, msg) = native_err(&format!("{AUTH_POOL}{text}"));
            assert_eq!(l, line, "{text}: {msg}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
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
        assert_eq!(p.backend_tls_name(&p.servers[0]), "redis.local");
        assert_round_trip(&c);
        let c = native(&format!("{AUTH_POOL}backend_tls yes\n")).unwrap();
        let p = &c.pools[0];
        assert!(!p.tls_listen() && !p.backend_tls_insecure);
        assert_eq!(p.backend_tls_name(&p.servers[0]), "127.0.0.1");
        assert_round_trip(&c);

        for (text, line, want) in [
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
        ] {
            let (l, msg) = native_err(&format!("{AUTH_POOL}{text}"));
            assert_eq!(l, line, "{text}: {msg}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
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
        assert_eq!(p.backend_auth(&p.servers[0]), Some((Some("u"), "p")));
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
