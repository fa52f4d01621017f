//! Rendering of the statistics in `stats`: Redis-format INFO text, Prometheus text exposition
//! (format 0.0.4) and twemproxy's (nutcracker 0.5.0) stats JSON.
//!
//! Pure functions from a [`View`] that the event loop fills when asked (no sockets, no global
//! state here). Invariants:
//! * Rendering allocates freely (it runs once per INFO / scrape, never per request) but never
//!   mutates the counters.
//! * INFO output follows Redis exactly: `# Section` headers, `key:value` lines, CRLF endings,
//!   sections separated by one empty line, values free of CR/LF.
//! * Prometheus label values and twemproxy JSON strings are escaped; every Prometheus family
//!   has `# HELP` and `# TYPE`, and histogram buckets are cumulative ending with `+Inf`.
//! * The only reads from the system are `/proc/self/stat` (CPU time, INFO cpu / Prometheus)
//!   and `/proc/sys/kernel/osrelease` (INFO server); both are optional.

use std::fmt::Write as _;

use crate::commands::COMMANDS;
use crate::stats::{stat_name, Histogram, ServerStats, Stats};

/// One backend as the event loop sees it now.
pub struct ServerView<'a> {
    /// Configured name, else host:port (also twemproxy's JSON key).
    pub name: &'a str,
    pub addr: String,
    /// "up", "down" or "ejected".
    pub state: &'static str,
    /// Open connections.
    pub connections: usize,
    /// Requests written (or queued to write) and awaiting their reply: twemproxy's `out_queue`.
    pub in_flight: usize,
    /// Bytes of those requests / buffered for the backend: twemproxy's `out_queue_bytes`.
    pub out_queue_bytes: usize,
    pub stats: &'a ServerStats,
}

pub struct PoolView<'a> {
    pub name: &'a str,
    pub listen: String,
    pub hash: &'static str,
    pub distribution: &'static str,
    /// Clients connected to this pool's listener.
    pub clients: usize,
    pub servers: Vec<ServerView<'a>>,
    /// `rebalance yes` pools: (state code: 0 idle, 1 running, 2 waiting, 3 paused, 4 failed;
    /// epoch, scanned, moved, failed, backends left) of the current or last rebalance.
    pub rebalance: Option<[u64; 6]>,
}

pub struct View<'a> {
    /// rustproxy's version.
    pub version: &'static str,
    /// The Redis version the proxy claims in INFO (`redis_version`).
    pub redis_version: &'static str,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config_file: Option<String>,
    pub now_unix: u64,
    pub connected_clients: usize,
    pub max_clients: usize,
    pub blocked_clients: usize,
    pub stats: &'a Stats,
    pub pools: Vec<PoolView<'a>>,
    pub slowlog_len: usize,
    /// Resident set size (from /proc/self/statm, filled by the caller).
    pub rss_bytes: Option<u64>,
    /// Peak resident set size (VmHWM of /proc/self/status, filled by the caller).
    pub peak_rss_bytes: Option<u64>,
    /// Last configuration reload: unix time, success, message.
    pub last_reload: Option<(u64, bool, String)>,
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Redis's `bytesToHuman`.
fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "P"),
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            return format!("{:.2}{}", n as f64 / size as f64, unit);
        }
    }
    format!("{n}B")
}

/// INFO values must stay on one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// User and system CPU time of this process in microseconds, from /proc/self/stat
/// (clock ticks, assumed 100 per second as on every Linux build that matters).
fn cpu_usec() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // field 14 (utime) is the 12th after ')'
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime * 10_000, stime * 10_000))
}

fn secs_usec(usec: u64) -> String {
    format!("{}.{:06}", usec / 1_000_000, usec % 1_000_000)
}

/// Microseconds as decimal seconds, exact, without trailing zeros ("0.00025", "1", "2.5").
fn usec_as_secs(usec: u64) -> String {
    let (s, frac) = (usec / 1_000_000, usec % 1_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:06}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

fn tcp_port(listen: &str) -> &str {
    match listen.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => "0",
    }
}

// ---------------------------------------------------------------------------------------------
// INFO

/// Sections in output order: (name, in `default`, in `all`, renderer). Redis 7.0's sections
/// come first, in its order, with only Redis's field names; then the proxy's own (`proxy`,
/// `backends`), which are not in `default` (so a default INFO reads like one Redis) but are in
/// `all` and `everything` and can be asked by name.
type Section = fn(&View, &mut String);
const SECTIONS: &[(&str, bool, bool, Section)] = &[
    ("server", true, true, sec_server),
    ("clients", true, true, sec_clients),
    ("memory", true, true, sec_memory),
    ("persistence", true, true, sec_persistence),
    ("stats", true, true, sec_stats),
    ("replication", true, true, sec_replication),
    ("cpu", true, true, sec_cpu),
    ("modules", true, true, sec_modules),
    ("commandstats", false, true, sec_commandstats),
    ("errorstats", true, true, sec_errorstats),
    ("latencystats", false, true, sec_latencystats),
    ("cluster", true, true, sec_cluster),
    ("keyspace", true, true, sec_keyspace),
    ("proxy", false, true, sec_proxy),
    ("backends", false, true, sec_backends),
];

/// Redis-format INFO text. `section`: `None` or "default" = Redis 7.0's default sections
/// (server, clients, memory, persistence, stats, replication, cpu, modules, errorstats,
/// cluster, keyspace); "all"/"everything" = also commandstats, latencystats and the proxy's
/// `proxy` and `backends`; otherwise section names (case-insensitive; several may be given
/// separated by spaces, mixed with default/all/everything, as Redis 7 accepts). Sections come
/// out once each, in the fixed order; unknown names give nothing (an empty string if none is
/// known, like Redis).
pub fn info(view: &View, section: Option<&str>) -> String {
    let mut want = [false; SECTIONS.len()];
    let spec = section.unwrap_or("default");
    for word in spec.split_ascii_whitespace() {
        let w = word.to_ascii_lowercase();
        for (i, (name, default, all, _)) in SECTIONS.iter().enumerate() {
            want[i] |= match w.as_str() {
                "everything" => true,
                "all" => *all,
                "default" => *default,
                _ => w == *name,
            };
        }
    }
    let mut out = String::new();
    for (i, (_, _, _, render)) in SECTIONS.iter().enumerate() {
        if want[i] {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            render(view, &mut out);
        }
    }
    out
}

macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
        $out.push_str("\r\n");
    }};
}

fn sec_server(v: &View, o: &mut String) {
    o.push_str("# Server\r\n");
    line!(o, "redis_version:{}", v.redis_version);
    line!(o, "redis_mode:standalone");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    line!(
        o,
        "os:{} {} {}",
        one_line(if std::env::consts::OS == "linux" {
            "Linux"
        } else {
            std::env::consts::OS
        }),
        one_line(release.trim()),
        std::env::consts::ARCH
    );
    line!(o, "arch_bits:{}", usize::BITS);
    line!(o, "multiplexing_api:epoll");
    line!(o, "process_id:{}", v.pid);
    let port = v.pools.first().map(|p| tcp_port(&p.listen)).unwrap_or("0");
    line!(o, "tcp_port:{port}");
    line!(o, "server_time_usec:{}", v.now_unix * 1_000_000);
    line!(o, "uptime_in_seconds:{}", v.uptime_secs);
    line!(o, "uptime_in_days:{}", v.uptime_secs / 86_400);
    line!(
        o,
        "config_file:{}",
        one_line(v.config_file.as_deref().unwrap_or(""))
    );
}

fn sec_clients(v: &View, o: &mut String) {
    o.push_str("# Clients\r\n");
    line!(o, "connected_clients:{}", v.connected_clients);
    line!(o, "maxclients:{}", v.max_clients);
    line!(o, "blocked_clients:{}", v.blocked_clients);
}

fn sec_memory(v: &View, o: &mut String) {
    o.push_str("# Memory\r\n");
    if let Some(rss) = v.rss_bytes {
        // The proxy stores no data: what it uses is its resident memory (the system
        // allocator keeps no statistics that are cheap to read), so used_memory is the RSS.
        line!(o, "used_memory:{rss}");
        line!(o, "used_memory_human:{}", human_bytes(rss));
        line!(o, "used_memory_rss:{rss}");
        line!(o, "used_memory_rss_human:{}", human_bytes(rss));
    }
    if let Some(peak) = v.peak_rss_bytes {
        line!(o, "used_memory_peak:{peak}");
        line!(o, "used_memory_peak_human:{}", human_bytes(peak));
    }
    if let Some(total) = total_system_memory() {
        line!(o, "total_system_memory:{total}");
        line!(o, "total_system_memory_human:{}", human_bytes(total));
    }
    line!(o, "maxmemory:0");
    line!(o, "maxmemory_human:0B");
    line!(o, "maxmemory_policy:noeviction");
    // Rust's global allocator here is the C library's malloc.
    line!(o, "mem_allocator:libc");
}

/// MemTotal of /proc/meminfo, in bytes.
fn total_system_memory() -> Option<u64> {
    proc_kib_field("/proc/meminfo", "MemTotal:")
}

/// A `Name:   123 kB` field of a /proc file (memory-backed, never blocks), in bytes.
pub fn proc_kib_field(file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn sec_errorstats(v: &View, o: &mut String) {
    o.push_str("# Errorstats\r\n");
    for (code, n) in &v.stats.error_codes {
        line!(o, "errorstat_{}:count={n}", String::from_utf8_lossy(code));
    }
    if v.stats.error_codes_overflow > 0 {
        // More distinct codes than are kept (see Stats::error_codes).
        line!(
            o,
            "errorstat_ERRORSTATS_OVERFLOW:count={}",
            v.stats.error_codes_overflow
        );
    }
}

fn sec_stats(v: &View, o: &mut String) {
    let s = v.stats;
    o.push_str("# Stats\r\n");
    line!(o, "total_connections_received:{}", s.connections_received);
    line!(o, "total_commands_processed:{}", s.commands);
    line!(o, "instantaneous_ops_per_sec:{}", s.instantaneous_ops());
    line!(o, "total_net_input_bytes:{}", s.net_input_bytes);
    line!(o, "total_net_output_bytes:{}", s.net_output_bytes);
    line!(
        o,
        "instantaneous_input_kbps:{:.2}",
        s.instantaneous_input_kbps()
    );
    line!(
        o,
        "instantaneous_output_kbps:{:.2}",
        s.instantaneous_output_kbps()
    );
    line!(o, "rejected_connections:{}", s.rejected_connections);
    // Redis's meaning: every error reply sent to clients (the backends' included), as counted
    // by errorstats; the errors the proxy itself produced are `proxy_error_replies` (# Proxy).
    let all_errors: u64 =
        s.error_codes.iter().map(|(_, n)| n).sum::<u64>() + s.error_codes_overflow;
    line!(o, "total_error_replies:{all_errors}");
}

/// The proxy's own fields (not Redis's): its version and configuration, and counters Redis
/// does not keep under these names.
fn sec_proxy(v: &View, o: &mut String) {
    let s = v.stats;
    o.push_str("# Proxy\r\n");
    line!(o, "rustproxy_version:{}", v.version);
    line!(o, "pools:{}", v.pools.len());
    if let Some((t, ok, msg)) = &v.last_reload {
        line!(o, "config_reload_time:{t}");
        line!(o, "config_reload_status:{}", if *ok { "ok" } else { "err" });
        line!(o, "config_reload_message:{}", one_line(msg));
    }
    line!(o, "proxy_error_replies:{}", s.errors);
    line!(o, "total_timeouts:{}", s.timeouts);
    line!(o, "auth_failures:{}", s.auth_failures);
    line!(o, "unknown_commands:{}", s.unknown_commands);
    let rejected: u64 = s.commands_by.iter().map(|c| c.rejected_calls).sum();
    let failed: u64 = s.commands_by.iter().map(|c| c.failed_calls).sum();
    line!(o, "total_rejected_calls:{rejected}");
    line!(o, "total_failed_calls:{failed}");
    line!(o, "slowlog_len:{}", v.slowlog_len);
}

/// Nothing is loaded or saved by the proxy (the backends persist their own data).
fn sec_persistence(_: &View, o: &mut String) {
    o.push_str("# Persistence\r\n");
    line!(o, "loading:0");
    line!(o, "async_loading:0");
}

fn sec_modules(_: &View, o: &mut String) {
    o.push_str("# Modules\r\n");
}

fn sec_cluster(_: &View, o: &mut String) {
    o.push_str("# Cluster\r\n");
    line!(o, "cluster_enabled:0");
}

/// A master without replicas (the proxy replicates nothing), with Redis 7.0's fields; the
/// replication id is fixed for the life of the process, like a Redis master's.
fn sec_replication(v: &View, o: &mut String) {
    o.push_str("# Replication\r\n");
    line!(o, "role:master");
    line!(o, "connected_slaves:0");
    line!(o, "master_failover_state:no-failover");
    let start = v.now_unix.saturating_sub(v.uptime_secs);
    let seed = (u128::from(v.pid) << 64 | u128::from(start))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    line!(o, "master_replid:{:032x}{:08x}", seed, v.pid);
    line!(o, "master_replid2:{}", "0".repeat(40));
    line!(o, "master_repl_offset:0");
    line!(o, "second_repl_offset:-1");
    line!(o, "repl_backlog_active:0");
    line!(o, "repl_backlog_size:1048576");
    line!(o, "repl_backlog_first_byte_offset:0");
    line!(o, "repl_backlog_histlen:0");
}

fn sec_cpu(_: &View, o: &mut String) {
    o.push_str("# CPU\r\n");
    let (user, sys) = cpu_usec().unwrap_or((0, 0));
    line!(o, "used_cpu_sys:{}", secs_usec(sys));
    line!(o, "used_cpu_user:{}", secs_usec(user));
    line!(o, "used_cpu_sys_children:0.000000");
    line!(o, "used_cpu_user_children:0.000000");
    // One thread serves every client.
    line!(o, "used_cpu_sys_main_thread:{}", secs_usec(sys));
    line!(o, "used_cpu_user_main_thread:{}", secs_usec(user));
}

/// Backends numbered across pools, in pool order.
fn backends<'v, 'a>(
    v: &'v View<'a>,
) -> impl Iterator<Item = (usize, &'v PoolView<'a>, &'v ServerView<'a>)> {
    v.pools
        .iter()
        .flat_map(|p| p.servers.iter().map(move |s| (p, s)))
        .enumerate()
        .map(|(i, (p, s))| (i, p, s))
}

fn sec_backends(v: &View, o: &mut String) {
    o.push_str("# Backends\r\n");
    for (i, p, s) in backends(v) {
        let st = s.stats;
        line!(
            o,
            "backend{i}:pool={},name={},addr={},state={},connections={},requests={},replies={},\
             errors={},timeouts={},ejections={},in_flight={},latency_p50_usec={},latency_p99_usec={}",
            one_line(p.name),
            one_line(s.name),
            one_line(&s.addr),
            s.state,
            s.connections,
            st.requests,
            st.replies,
            st.errors,
            st.timeouts,
            st.ejections,
            s.in_flight,
            st.latency.percentile(50.0),
            st.latency.percentile(99.0)
        );
    }
}

fn sec_commandstats(v: &View, o: &mut String) {
    o.push_str("# Commandstats\r\n");
    for (spec, c) in COMMANDS.iter().zip(&v.stats.commands_by) {
        if c.calls + c.rejected_calls + c.failed_calls == 0 {
            continue;
        }
        let per_call = if c.calls == 0 {
            0.0
        } else {
            c.usec as f64 / c.calls as f64
        };
        line!(
            o,
            "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls={},failed_calls={}",
            stat_name(spec.name),
            c.calls,
            c.usec,
            per_call,
            c.rejected_calls,
            c.failed_calls
        );
    }
}

fn sec_latencystats(v: &View, o: &mut String) {
    o.push_str("# Latencystats\r\n");
    for (spec, c) in COMMANDS.iter().zip(&v.stats.commands_by) {
        if c.latency.count() == 0 {
            continue;
        }
        let h = &c.latency;
        line!(
            o,
            "latency_percentiles_usec_{}:p50={}.000,p99={}.000,p99.9={}.000",
            stat_name(spec.name),
            h.percentile(50.0),
            h.percentile(99.0),
            h.percentile(99.9)
        );
    }
}

fn sec_keyspace(_: &View, o: &mut String) {
    o.push_str("# Keyspace\r\n");
}

/// One backend's proxy-side stats as INFO text (for `INFO BACKEND <n|name>`); `pool`/`server`
/// index `view.pools[pool].servers[server]`. Out of range: empty string.
pub fn info_backend(view: &View, pool: usize, server: usize) -> String {
    let Some(p) = view.pools.get(pool) else {
        return String::new();
    };
    let Some(s) = p.servers.get(server) else {
        return String::new();
    };
    let index: usize = view.pools[..pool]
        .iter()
        .map(|p| p.servers.len())
        .sum::<usize>()
        + server;
    let st = s.stats;
    let h = &st.latency;
    let mut o = String::new();
    o.push_str("# Backend\r\n");
    line!(o, "index:{index}");
    line!(o, "pool:{}", one_line(p.name));
    line!(o, "name:{}", one_line(s.name));
    line!(o, "addr:{}", one_line(&s.addr));
    line!(o, "state:{}", s.state);
    line!(o, "connections:{}", s.connections);
    line!(o, "in_flight:{}", s.in_flight);
    line!(o, "out_queue_bytes:{}", s.out_queue_bytes);
    line!(o, "requests:{}", st.requests);
    line!(o, "request_bytes:{}", st.request_bytes);
    line!(o, "replies:{}", st.replies);
    line!(o, "response_bytes:{}", st.response_bytes);
    line!(o, "errors:{}", st.errors);
    line!(o, "timeouts:{}", st.timeouts);
    line!(o, "connections_opened:{}", st.connections);
    line!(o, "failures:{}", st.failures);
    line!(o, "eof:{}", st.eof);
    line!(o, "ejections:{}", st.ejections);
    line!(o, "ejected_at_usec:{}", st.ejected_at_usec);
    line!(o, "latency_count:{}", h.count());
    line!(o, "latency_sum_usec:{}", h.sum());
    line!(o, "latency_p50_usec:{}", h.percentile(50.0));
    line!(o, "latency_p90_usec:{}", h.percentile(90.0));
    line!(o, "latency_p99_usec:{}", h.percentile(99.0));
    line!(o, "latency_p99.9_usec:{}", h.percentile(99.9));
    line!(o, "latency_max_usec:{}", h.max());
    o
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// Histogram bucket bounds, microseconds (100 us .. 10 s).
pub const LATENCY_BOUNDS_USEC: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Label value escaping of the text format: backslash, double quote, newline.
fn esc_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            _ => o.push(c),
        }
    }
    o
}

struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, ty: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {ty}\n");
    }

    /// `labels`: already rendered `k="v",...` (escaped), may be empty.
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn one(&mut self, name: &str, ty: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, ty, help);
        self.sample(name, "", value);
    }

    fn histogram_samples(&mut self, name: &str, labels: &str, h: &Histogram) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in LATENCY_BOUNDS_USEC
            .iter()
            .zip(h.cumulative(LATENCY_BOUNDS_USEC))
        {
            let l = format!("{labels}{sep}le=\"{}\"", usec_as_secs(*b));
            self.sample(&format!("{name}_bucket"), &l, c);
        }
        self.sample(
            &format!("{name}_bucket"),
            &format!("{labels}{sep}le=\"+Inf\""),
            h.count(),
        );
        self.sample(&format!("{name}_sum"), labels, usec_as_secs(h.sum()));
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// Prometheus text exposition format 0.0.4 (`Content-Type: text/plain; version=0.0.4`).
pub fn prometheus(view: &View) -> String {
    let s = view.stats;
    let mut p = Prom { out: String::new() };
    p.family("rustproxy_info", "gauge", "rustproxy build information.");
    p.sample(
        "rustproxy_info",
        &format!(
            "version=\"{}\",redis_version=\"{}\"",
            esc_label(view.version),
            esc_label(view.redis_version)
        ),
        1,
    );
    p.one(
        "rustproxy_uptime_seconds",
        "gauge",
        "Seconds since the proxy started.",
        view.uptime_secs,
    );
    p.one(
        "rustproxy_start_time_seconds",
        "gauge",
        "Start time of the proxy, seconds since the epoch.",
        s.started_unix,
    );
    p.one(
        "rustproxy_connected_clients",
        "gauge",
        "Client connections open.",
        view.connected_clients,
    );
    p.one(
        "rustproxy_max_clients",
        "gauge",
        "Maximum number of client connections.",
        view.max_clients,
    );
    p.one(
        "rustproxy_blocked_clients",
        "gauge",
        "Clients waiting on a blocking command.",
        view.blocked_clients,
    );
    p.one(
        "rustproxy_connections_received_total",
        "counter",
        "Client connections accepted.",
        s.connections_received,
    );
    p.one(
        "rustproxy_rejected_connections_total",
        "counter",
        "Client connections refused because of maxclients.",
        s.rejected_connections,
    );
    p.one(
        "rustproxy_commands_processed_total",
        "counter",
        "Commands read from clients.",
        s.commands,
    );
    p.one(
        "rustproxy_error_replies_total",
        "counter",
        "Error replies produced by the proxy.",
        s.errors,
    );
    p.one(
        "rustproxy_timeouts_total",
        "counter",
        "Requests failed by the request timeout.",
        s.timeouts,
    );
    p.one(
        "rustproxy_unknown_commands_total",
        "counter",
        "Commands with an unknown name.",
        s.unknown_commands,
    );
    p.one(
        "rustproxy_net_input_bytes_total",
        "counter",
        "Bytes read from clients.",
        s.net_input_bytes,
    );
    p.one(
        "rustproxy_net_output_bytes_total",
        "counter",
        "Bytes written to clients.",
        s.net_output_bytes,
    );
    p.one(
        "rustproxy_instantaneous_ops_per_second",
        "gauge",
        "Commands per second over the last 1.6 seconds.",
        s.instantaneous_ops(),
    );
    p.one(
        "rustproxy_slowlog_length",
        "gauge",
        "Entries in the slow log.",
        view.slowlog_len,
    );
    if let Some(rss) = view.rss_bytes {
        p.one(
            "rustproxy_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    if let Some((user, sys)) = cpu_usec() {
        p.family(
            "rustproxy_cpu_seconds_total",
            "counter",
            "CPU time used by the proxy, by mode.",
        );
        p.sample(
            "rustproxy_cpu_seconds_total",
            "mode=\"user\"",
            usec_as_secs(user),
        );
        p.sample(
            "rustproxy_cpu_seconds_total",
            "mode=\"system\"",
            usec_as_secs(sys),
        );
    }
    if let Some((t, ok, _)) = &view.last_reload {
        p.one(
            "rustproxy_config_last_reload_successful",
            "gauge",
            "Whether the last configuration reload succeeded.",
            *ok as u8,
        );
        p.one(
            "rustproxy_config_last_reload_timestamp_seconds",
            "gauge",
            "Time of the last configuration reload, seconds since the epoch.",
            t,
        );
    }

    // Per command.
    let used: Vec<(String, &crate::stats::CommandStats)> = COMMANDS
        .iter()
        .zip(&s.commands_by)
        .filter(|(_, c)| c.calls + c.rejected_calls + c.failed_calls > 0)
        .map(|(spec, c)| (format!("cmd=\"{}\"", esc_label(&stat_name(spec.name))), c))
        .collect();
    type CmdField = fn(&crate::stats::CommandStats) -> u64;
    let cmd_counters: [(&str, &str, CmdField); 3] = [
        (
            "rustproxy_commands_total",
            "Commands run, by command.",
            |c| c.calls,
        ),
        (
            "rustproxy_command_errors_total",
            "Commands that ran and answered an error, by command.",
            |c| c.failed_calls,
        ),
        (
            "rustproxy_command_rejected_total",
            "Commands refused before running (arity, refused, NOAUTH...), by command.",
            |c| c.rejected_calls,
        ),
    ];
    for (name, help, f) in cmd_counters {
        p.family(name, "counter", help);
        for (l, c) in &used {
            p.sample(name, l, f(c));
        }
    }
    p.family(
        "rustproxy_command_latency_seconds",
        "histogram",
        "Command latency as seen by the proxy (request parsed -> reply ready), by command.",
    );
    for (l, c) in &used {
        if c.calls > 0 {
            p.histogram_samples("rustproxy_command_latency_seconds", l, &c.latency);
        }
    }

    // Per pool and backend.
    p.family(
        "rustproxy_pool_clients",
        "gauge",
        "Client connections open, by pool.",
    );
    for pool in &view.pools {
        p.sample(
            "rustproxy_pool_clients",
            &format!("pool=\"{}\"", esc_label(pool.name)),
            pool.clients,
        );
    }
    let rebalancing: Vec<(String, [u64; 6])> = view
        .pools
        .iter()
        .filter_map(|pool| {
            let r = pool.rebalance?;
            Some((format!("pool=\"{}\"", esc_label(pool.name)), r))
        })
        .collect();
    if !rebalancing.is_empty() {
        let fams: [(&str, &str); 6] = [
            (
                "rustproxy_rebalance_state",
                "Online rebalancing state: 0 idle, 1 running, 2 waiting (barrier), 3 paused, 4 failed (retrying).",
            ),
            ("rustproxy_rebalance_epoch", "Rebalances this process started for the pool."),
            ("rustproxy_rebalance_scanned_keys", "Keys the mover scanned in the current (or last) rebalance."),
            ("rustproxy_rebalance_moved_keys", "Keys moved to their new owner in the current (or last) rebalance."),
            ("rustproxy_rebalance_failed_keys", "Keys whose MIGRATE failed (retried) in the current (or last) rebalance."),
            ("rustproxy_rebalance_backends_left", "Old owners that may still hold keys to move."),
        ];
        for (i, (name, help)) in fams.iter().enumerate() {
            p.family(name, "gauge", help);
            for (l, r) in &rebalancing {
                p.sample(name, l, r[i]);
            }
        }
    }
    let backs: Vec<(String, &ServerView)> = view
        .pools
        .iter()
        .flat_map(|pool| {
            pool.servers.iter().map(move |s| {
                (
                    format!(
                        "pool=\"{}\",backend=\"{}\",addr=\"{}\"",
                        esc_label(pool.name),
                        esc_label(s.name),
                        esc_label(&s.addr)
                    ),
                    s,
                )
            })
        })
        .collect();
    type SrvField = fn(&ServerView) -> u64;
    let srv_metrics: [(&str, &str, &str, SrvField); 13] = [
        (
            "rustproxy_backend_up",
            "gauge",
            "1 when the backend is up, 0 when down or ejected.",
            |s| (s.state == "up") as u64,
        ),
        (
            "rustproxy_backend_ejected",
            "gauge",
            "1 while the backend is ejected from the ring.",
            |s| (s.state == "ejected") as u64,
        ),
        (
            "rustproxy_backend_connections",
            "gauge",
            "Connections open to the backend.",
            |s| s.connections as u64,
        ),
        (
            "rustproxy_backend_in_flight",
            "gauge",
            "Requests sent to the backend awaiting a reply.",
            |s| s.in_flight as u64,
        ),
        (
            "rustproxy_backend_requests_total",
            "counter",
            "Requests sent to the backend.",
            |s| s.stats.requests,
        ),
        (
            "rustproxy_backend_request_bytes_total",
            "counter",
            "Bytes of requests sent to the backend.",
            |s| s.stats.request_bytes,
        ),
        (
            "rustproxy_backend_replies_total",
            "counter",
            "Replies received from the backend.",
            |s| s.stats.replies,
        ),
        (
            "rustproxy_backend_response_bytes_total",
            "counter",
            "Bytes of replies received from the backend.",
            |s| s.stats.response_bytes,
        ),
        (
            "rustproxy_backend_errors_total",
            "counter",
            "Requests for the backend answered with a proxy error.",
            |s| s.stats.errors,
        ),
        (
            "rustproxy_backend_timeouts_total",
            "counter",
            "Requests to the backend that timed out.",
            |s| s.stats.timeouts,
        ),
        (
            "rustproxy_backend_ejections_total",
            "counter",
            "Times the backend was ejected from the ring.",
            |s| s.stats.ejections,
        ),
        (
            "rustproxy_backend_failures_total",
            "counter",
            "Times the backend connection failed.",
            |s| s.stats.failures,
        ),
        (
            "rustproxy_backend_connections_opened_total",
            "counter",
            "Connections opened to the backend.",
            |s| s.stats.connections,
        ),
    ];
    for (name, ty, help, f) in srv_metrics {
        p.family(name, ty, help);
        for (l, s) in &backs {
            p.sample(name, l, f(s));
        }
    }
    p.family(
        "rustproxy_backend_latency_seconds",
        "histogram",
        "Backend round trip (request written -> reply read).",
    );
    for (l, s) in &backs {
        p.histogram_samples("rustproxy_backend_latency_seconds", l, &s.stats.latency);
    }
    p.out
}

// ---------------------------------------------------------------------------------------------
// twemproxy JSON

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Writes one JSON object the way nutcracker does: `"k":v` items separated by `", "`, but a
/// bare `","` after a nested object.
struct NcObj<'o> {
    out: &'o mut String,
    first: bool,
    after_obj: bool,
}

impl<'o> NcObj<'o> {
    fn open(out: &'o mut String) -> Self {
        out.push('{');
        NcObj {
            out,
            first: true,
            after_obj: false,
        }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push_str(if self.after_obj { "," } else { ", " });
        }
        self.first = false;
    }

    fn num(&mut self, k: &str, v: u64) {
        self.sep();
        let _ = write!(self.out, "{}:{v}", json_str(k));
        self.after_obj = false;
    }

    fn str(&mut self, k: &str, v: &str) {
        self.sep();
        let _ = write!(self.out, "{}:{}", json_str(k), json_str(v));
        self.after_obj = false;
    }

    fn obj(&mut self, k: &str) -> NcObj<'_> {
        self.sep();
        let _ = write!(self.out, "{}: ", json_str(k));
        self.after_obj = true;
        NcObj::open(self.out)
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// twemproxy (nutcracker 0.5.0) stats JSON, the same flat layout and key names byte for byte,
/// except `"service":"rustproxy"`. Pools appear in configuration order, servers keyed by
/// their name (configured name, else host:port, as nutcracker does). Mapping: see
/// `DESCRIBE`; counters rustproxy does not keep (`client_eof`, `client_err`, `fragments`,
/// `in_queue`, `in_queue_bytes`) are 0.
pub fn nutcracker_json(view: &View, hostname: &str) -> String {
    let mut out = String::with_capacity(512 + 600 * view.pools.len());
    let mut top = NcObj::open(&mut out);
    top.str("service", "rustproxy");
    top.str("source", hostname);
    top.str("version", view.version);
    top.num("uptime", view.uptime_secs);
    top.num("timestamp", view.now_unix);
    let backend_conns: usize = view
        .pools
        .iter()
        .flat_map(|p| &p.servers)
        .map(|s| s.connections)
        .sum();
    let backend_opened: u64 = view
        .pools
        .iter()
        .flat_map(|p| &p.servers)
        .map(|s| s.stats.connections)
        .sum();
    top.num(
        "total_connections",
        view.stats.connections_received + backend_opened,
    );
    top.num(
        "curr_connections",
        (view.connected_clients + backend_conns) as u64,
    );
    for pool in &view.pools {
        let mut po = top.obj(pool.name);
        po.num("client_eof", 0);
        po.num("client_err", 0);
        po.num("client_connections", pool.clients as u64);
        po.num(
            "server_ejects",
            pool.servers.iter().map(|s| s.stats.ejections).sum(),
        );
        po.num(
            "forward_error",
            pool.servers.iter().map(|s| s.stats.errors).sum(),
        );
        po.num("fragments", 0);
        for s in &pool.servers {
            let st = s.stats;
            let mut so = po.obj(s.name);
            so.num("server_eof", st.eof);
            so.num("server_err", st.failures);
            so.num("server_timedout", st.timeouts);
            so.num("server_connections", s.connections as u64);
            so.num("server_ejected_at", st.ejected_at_usec);
            so.num("requests", st.requests);
            so.num("request_bytes", st.request_bytes);
            so.num("responses", st.replies);
            so.num("response_bytes", st.response_bytes);
            so.num("in_queue", 0);
            so.num("in_queue_bytes", 0);
            so.num("out_queue", s.in_flight as u64);
            so.num("out_queue_bytes", s.out_queue_bytes as u64);
            so.close();
        }
        po.close();
    }
    top.close();
    out
}

/// `rustproxy -D` (describe stats): (section title, [(name, description)]). The first two
/// sections are nutcracker's own names and texts (`nutcracker -D`), with what rustproxy
/// reports in them.
pub static DESCRIBE: &[(&str, &[(&str, &str)])] = &[
    (
        "pool stats",
        &[
            ("client_eof", "\"# eof on client connections\" (always 0)"),
            (
                "client_err",
                "\"# errors on client connections\" (always 0)",
            ),
            ("client_connections", "\"# active client connections\""),
            ("server_ejects", "\"# times backend server was ejected\""),
            (
                "forward_error",
                "\"# times we encountered a forwarding error\" (proxy-made error replies)",
            ),
            (
                "fragments",
                "\"# fragments created from a multi-vector request\" (always 0)",
            ),
        ],
    ),
    (
        "server stats",
        &[
            ("server_eof", "\"# eof on server connections\""),
            ("server_err", "\"# errors on server connections\""),
            ("server_timedout", "\"# timeouts on server connections\""),
            ("server_connections", "\"# active server connections\""),
            (
                "server_ejected_at",
                "\"timestamp when server was ejected in usec since epoch\"",
            ),
            ("requests", "\"# requests\""),
            ("request_bytes", "\"total request bytes\""),
            ("responses", "\"# responses\""),
            ("response_bytes", "\"total response bytes\""),
            (
                "in_queue",
                "\"# requests in incoming queue\" (always 0: requests go straight to a connection)",
            ),
            (
                "in_queue_bytes",
                "\"current request bytes in incoming queue\" (always 0)",
            ),
            (
                "out_queue",
                "\"# requests in outgoing queue\" (awaiting reply)",
            ),
            (
                "out_queue_bytes",
                "\"current request bytes in outgoing queue\"",
            ),
        ],
    ),
    (
        "info stats (INFO stats)",
        &[
            ("total_connections_received", "client connections accepted"),
            ("total_commands_processed", "commands read from clients"),
            (
                "instantaneous_ops_per_sec",
                "commands per second (mean of 16 samples, 100 ms apart)",
            ),
            ("total_net_input_bytes", "bytes read from clients"),
            ("total_net_output_bytes", "bytes written to clients"),
            ("instantaneous_input_kbps", "client input, KiB per second"),
            ("instantaneous_output_kbps", "client output, KiB per second"),
            (
                "rejected_connections",
                "client connections refused (maxclients)",
            ),
            ("total_error_replies", "error replies produced by the proxy"),
            ("total_timeouts", "requests failed by the request timeout"),
            (
                "auth_failures",
                "AUTH attempts with a wrong user or password",
            ),
            ("unknown_commands", "commands with an unknown name"),
            (
                "total_rejected_calls",
                "commands refused before running (arity, refused, NOAUTH...)",
            ),
            (
                "total_failed_calls",
                "commands that ran and answered an error",
            ),
            ("slowlog_len", "entries in the slow log"),
            (
                "errorstat_<CODE>",
                "count=N: error replies sent to clients with that code, backends' included (INFO errorstats)",
            ),
        ],
    ),
    (
        "backend stats (INFO backends, INFO BACKEND <n|name>)",
        &[
            ("state", "up, down or ejected"),
            ("connections", "connections open to the backend"),
            ("in_flight", "requests sent, awaiting a reply"),
            (
                "requests",
                "requests sent (each part of a split command counts)",
            ),
            ("replies", "replies received"),
            (
                "errors",
                "requests answered with a proxy-made error (down, timeout, connection lost)",
            ),
            ("timeouts", "requests that timed out"),
            (
                "ejections",
                "times ejected from the ring (auto_eject_hosts)",
            ),
            (
                "latency_p50_usec",
                "median round trip (request written -> reply read), microseconds",
            ),
            (
                "latency_p99_usec",
                "99th percentile round trip, microseconds",
            ),
        ],
    ),
];

/// The text of `rustproxy -D`, laid out like `nutcracker -D`.
pub fn describe() -> String {
    let mut o = String::new();
    for (i, (title, items)) in DESCRIBE.iter().enumerate() {
        if i > 0 {
            o.push('\n');
        }
        let _ = writeln!(o, "{title}:");
        for (name, desc) in items.iter() {
            let _ = writeln!(o, "  {name:<28}{desc}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::command_index;

    fn fixture() -> (Stats, Vec<ServerStats>) {
        let mut s = Stats {
            started_unix: 1_700_000_000,
            connections_received: 7,
            commands: 12,
            ..Stats::default()
        };
        let get = command_index(crate::commands::lookup(b"get").unwrap());
        for v in [1u64, 2, 3, 100, 2000] {
            s.record_command(get, v, false);
        }
        s.record_command(get, 50, true);
        let cfg = crate::commands::lookup(b"config").unwrap();
        let cfg_get = crate::commands::lookup_sub(cfg, b"get").unwrap();
        s.record_command(command_index(cfg_get), 10, false);
        let set = command_index(crate::commands::lookup(b"set").unwrap());
        s.record_rejected(Some(set));
        s.record_rejected(None);
        let mut a = ServerStats {
            requests: 10,
            replies: 9,
            request_bytes: 250,
            response_bytes: 90,
            ejections: 1,
            ejected_at_usec: 1_700_000_000_123_456,
            ..ServerStats::default()
        };
        for v in [100u64, 200, 300, 40_000] {
            a.latency.record(v);
        }
        let b = ServerStats::default();
        (s, vec![a, b])
    }

    fn view<'a>(s: &'a Stats, ss: &'a [ServerStats]) -> View<'a> {
        View {
            version: "0.1.0",
            redis_version: "7.0.0",
            pid: 1234,
            uptime_secs: 90_000,
            config_file: Some("/etc/rustproxy.yml".into()),
            now_unix: 1_700_090_000,
            connected_clients: 3,
            max_clients: 10_000,
            blocked_clients: 0,
            stats: s,
            pools: vec![
                PoolView {
                    rebalance: None,
                    name: "main",
                    listen: "127.0.0.1:6380".into(),
                    hash: "fnv1a_64",
                    distribution: "ketama",
                    clients: 2,
                    servers: vec![
                        ServerView {
                            name: "srvA",
                            addr: "127.0.0.1:7000".into(),
                            state: "up",
                            connections: 1,
                            in_flight: 2,
                            out_queue_bytes: 40,
                            stats: &ss[0],
                        },
                        ServerView {
                            name: "127.0.0.1:7001",
                            addr: "127.0.0.1:7001".into(),
                            state: "ejected",
                            connections: 0,
                            in_flight: 0,
                            out_queue_bytes: 0,
                            stats: &ss[1],
                        },
                    ],
                },
                PoolView {
                    rebalance: None,
                    name: "we\"ird\\pool",
                    listen: "/tmp/x.sock".into(),
                    hash: "md5",
                    distribution: "modula",
                    clients: 1,
                    servers: vec![],
                },
            ],
            slowlog_len: 4,
            rss_bytes: Some(5 << 20),
            peak_rss_bytes: Some(6 << 20),
            last_reload: Some((1_700_000_500, false, "bad\r\nconfig".into())),
        }
    }

    /// (section name, lines) as a Redis client would parse INFO.
    fn parse_info(text: &str) -> Vec<(String, Vec<(String, String)>)> {
        assert!(text.is_empty() || text.ends_with("\r\n"));
        let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let body = text.strip_suffix("\r\n").unwrap_or(text);
        for (i, block) in body.split("\r\n\r\n").enumerate() {
            if text.is_empty() {
                break;
            }
            let mut lines = block.split("\r\n");
            let head = lines.next().unwrap();
            assert!(head.starts_with("# "), "block {i} header {head:?}");
            let mut kv = Vec::new();
            for l in lines {
                assert!(
                    !l.is_empty() && !l.contains('\n') && !l.contains('\r'),
                    "{l:?}"
                );
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("no ':' in {l:?}"));
                assert!(!k.is_empty() && !k.contains(' '));
                kv.push((k.to_string(), v.to_string()));
            }
            out.push((head[2..].to_string(), kv));
        }
        out
    }

    fn names(p: &[(String, Vec<(String, String)>)]) -> Vec<&str> {
        p.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn info_sections() {
        let (s, ss) = fixture();
        let v = view(&s, &ss);
        let d = parse_info(&info(&v, None));
        assert_eq!(
            names(&d),
            [
                "Server",
                "Clients",
                "Memory",
                "Persistence",
                "Stats",
                "Replication",
                "CPU",
                "Modules",
                "Errorstats",
                "Cluster",
                "Keyspace"
            ]
        );
        assert_eq!(info(&v, None), info(&v, Some("DEFAULT")));
        let all = parse_info(&info(&v, Some("all")));
        assert_eq!(
            names(&all),
            [
                "Server",
                "Clients",
                "Memory",
                "Persistence",
                "Stats",
                "Replication",
                "CPU",
                "Modules",
                "Commandstats",
                "Errorstats",
                "Latencystats",
                "Cluster",
                "Keyspace",
                "Proxy",
                "Backends"
            ]
        );
        // (values such as used_cpu move between two calls; compare the layout)
        assert_eq!(
            names(&parse_info(&info(&v, Some("everything")))),
            names(&parse_info(&info(&v, Some("all"))))
        );
        assert_eq!(info(&v, Some("nosuch")), "");
        let one = info(&v, Some("CLIENTS"));
        assert_eq!(
            one,
            "# Clients\r\nconnected_clients:3\r\nmaxclients:10000\r\nblocked_clients:0\r\n"
        );
        // several, in Redis's order whatever the request order
        assert_eq!(
            names(&parse_info(&info(&v, Some("stats server")))),
            ["Server", "Stats"]
        );
        let server = &d[0].1;
        let get = |k: &str| server.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str());
        assert_eq!(get("redis_version"), Some("7.0.0"));
        assert_eq!(get("tcp_port"), Some("6380"));
        assert_eq!(get("uptime_in_days"), Some("1"));
        // Redis's section carries Redis's fields only; the proxy's are in its own section.
        assert_eq!(get("rustproxy_version"), None);
        let proxy = parse_info(&info(&v, Some("proxy")));
        let pget = |k: &str| {
            proxy[0]
                .1
                .iter()
                .find(|(a, _)| a == k)
                .map(|(_, b)| b.clone())
        };
        assert_eq!(
            pget("config_reload_message").as_deref(),
            Some("bad  config")
        );
        assert_eq!(pget("config_reload_status").as_deref(), Some("err"));
        assert!(pget("total_rejected_calls").is_some());
        // Several at once, once each, mixed with the keywords (Redis 7).
        assert_eq!(
            names(&parse_info(&info(&v, Some("cpu default")))),
            names(&d)
        );
        let rep = info(&v, Some("replication"));
        assert!(rep.contains("master_repl_offset:0\r\n"), "{rep}");
        let mem = info(&v, Some("memory"));
        for line in [
            "used_memory:5242880\r\n",
            "used_memory_human:5.00M\r\n",
            "used_memory_rss_human:5.00M\r\n",
            "used_memory_peak:6291456\r\n",
            "mem_allocator:libc\r\n",
        ] {
            assert!(mem.contains(line), "{line:?} in {mem}");
        }
        let cpu = info(&v, Some("cpu"));
        assert!(cpu.starts_with("# CPU\r\nused_cpu_sys:"), "{cpu}");
    }

    #[test]
    fn info_errorstats() {
        let (mut s, ss) = fixture();
        for e in [
            &b"-ERR unknown command\r\n"[..],
            b"-WRONGTYPE Operation against a key\r\n",
            b"-ERR syntax error\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"-NOSPACEATALL\r\n",
        ] {
            s.record_error_reply(e);
        }
        let v = view(&s, &ss);
        assert_eq!(
            info(&v, Some("errorstats")),
            "# Errorstats\r\nerrorstat_ERR:count=3\r\nerrorstat_WRONGTYPE:count=1\r\n\
             errorstat_SYNTAX:count=1\r\n"
        );
        let mut s = Stats::default();
        for i in 0..crate::stats::ERROR_CODES_MAX + 5 {
            s.record_error_reply(format!("-E{i} x\r\n").as_bytes());
        }
        assert_eq!(s.error_codes.len(), crate::stats::ERROR_CODES_MAX);
        let v = view(&s, &ss);
        assert!(info(&v, Some("errorstats")).ends_with("errorstat_ERRORSTATS_OVERFLOW:count=5\r\n"));
        s.reset();
        assert!(s.error_codes.is_empty() && s.error_codes_overflow == 0);
    }

    #[test]
    fn info_commandstats_and_latency() {
        let (s, ss) = fixture();
        let v = view(&s, &ss);
        let cs = info(&v, Some("commandstats"));
        let p = parse_info(&cs);
        assert_eq!(names(&p), ["Commandstats"]);
        let keys: Vec<&str> = p[0].1.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["cmdstat_config|get", "cmdstat_get", "cmdstat_set"]);
        assert!(cs.contains(
            "cmdstat_get:calls=6,usec=2156,usec_per_call=359.33,rejected_calls=0,failed_calls=1\r\n"
        ));
        assert!(cs.contains(
            "cmdstat_set:calls=0,usec=0,usec_per_call=0.00,rejected_calls=1,failed_calls=0\r\n"
        ));
        for (_, val) in &p[0].1 {
            let fields: Vec<&str> = val
                .split(',')
                .map(|f| f.split('=').next().unwrap())
                .collect();
            assert_eq!(
                fields,
                [
                    "calls",
                    "usec",
                    "usec_per_call",
                    "rejected_calls",
                    "failed_calls"
                ]
            );
        }
        let ls = info(&v, Some("latencystats"));
        let p = parse_info(&ls);
        assert_eq!(p[0].1.len(), 2);
        for (k, val) in &p[0].1 {
            assert!(k.starts_with("latency_percentiles_usec_"));
            let parts: Vec<(&str, &str)> =
                val.split(',').map(|f| f.split_once('=').unwrap()).collect();
            assert_eq!(
                parts.iter().map(|x| x.0).collect::<Vec<_>>(),
                ["p50", "p99", "p99.9"]
            );
            let nums: Vec<f64> = parts.iter().map(|x| x.1.parse().unwrap()).collect();
            assert!(nums[0] <= nums[1] && nums[1] <= nums[2]);
            for (_, n) in parts {
                assert_eq!(n.split_once('.').unwrap().1.len(), 3);
            }
        }
        assert!(ls.contains("latency_percentiles_usec_get:p50=3.000,p99=2000.000,p99.9=2000.000"));
    }

    #[test]
    fn info_backends() {
        let (s, ss) = fixture();
        let v = view(&s, &ss);
        let b = parse_info(&info(&v, Some("backends")));
        assert_eq!(b[0].1.len(), 2);
        assert_eq!(b[0].1[0].0, "backend0");
        assert!(b[0].1[0].1.starts_with(
            "pool=main,name=srvA,addr=127.0.0.1:7000,state=up,connections=1,requests=10,replies=9,"
        ));
        assert!(b[0].1[1].1.contains("state=ejected"));
        let one = info_backend(&v, 0, 1);
        let p = parse_info(&one);
        assert_eq!(names(&p), ["Backend"]);
        assert!(one.contains("index:1\r\n"));
        let one = info_backend(&v, 0, 0);
        assert!(one.contains("latency_p50_usec:207\r\n"), "{one}");
        assert!(one.contains("latency_max_usec:40000\r\n"));
        assert_eq!(info_backend(&v, 1, 0), "");
        assert_eq!(info_backend(&v, 5, 0), "");
    }

    /// Parse one Prometheus sample line: (name, labels, value).
    fn parse_sample(l: &str) -> (String, Vec<(String, String)>, f64) {
        let is_name = |s: &str| {
            !s.is_empty()
                && s.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        let (head, value) = l.rsplit_once(' ').unwrap();
        let value: f64 = if value == "+Inf" {
            f64::INFINITY
        } else {
            value.parse().unwrap_or_else(|_| panic!("value in {l:?}"))
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, Vec::new()),
            Some((n, rest)) => {
                let rest = rest.strip_suffix('}').unwrap_or_else(|| panic!("{l:?}"));
                let mut labels = Vec::new();
                let mut chars = rest.chars().peekable();
                while chars.peek().is_some() {
                    let mut k = String::new();
                    for c in chars.by_ref() {
                        if c == '=' {
                            break;
                        }
                        k.push(c);
                    }
                    assert!(is_name(&k), "label {k:?} in {l:?}");
                    assert_eq!(chars.next(), Some('"'));
                    let mut v = String::new();
                    loop {
                        match chars.next().unwrap() {
                            '\\' => match chars.next().unwrap() {
                                'n' => v.push('\n'),
                                c @ ('\\' | '"') => v.push(c),
                                c => panic!("bad escape {c}"),
                            },
                            '"' => break,
                            c => v.push(c),
                        }
                    }
                    labels.push((k, v));
                    match chars.next() {
                        Some(',') | None => {}
                        Some(c) => panic!("unexpected {c} in {l:?}"),
                    }
                }
                (n, labels)
            }
        };
        assert!(is_name(name), "{name:?}");
        (name.to_string(), labels, value)
    }

    #[test]
    fn prometheus_format() {
        let (s, ss) = fixture();
        let v = view(&s, &ss);
        let text = prometheus(&v);
        assert!(text.ends_with('\n'));
        let mut helped = std::collections::HashSet::new();
        let mut typed = std::collections::HashMap::new();
        let mut samples = Vec::new();
        for l in text.lines() {
            if let Some(r) = l.strip_prefix("# HELP ") {
                assert!(helped.insert(r.split(' ').next().unwrap().to_string()));
            } else if let Some(r) = l.strip_prefix("# TYPE ") {
                let (n, t) = r.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&t));
                assert!(
                    typed.insert(n.to_string(), t.to_string()).is_none(),
                    "dup {n}"
                );
            } else {
                assert!(!l.starts_with('#'));
                samples.push(parse_sample(l));
            }
        }
        assert_eq!(helped.len(), typed.len());
        for (name, labels, val) in &samples {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| {
                    name.strip_suffix(suf)
                        .filter(|f| typed.get(*f).map(|t| t == "histogram").unwrap_or(false))
                })
                .unwrap_or(name);
            let ty = typed
                .get(family)
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            assert!(helped.contains(family));
            if ty == "counter" {
                assert!(family.ends_with("_total"), "{family}");
            }
            assert!(*val >= 0.0);
            assert!(labels.iter().all(|(k, _)| !k.is_empty()));
        }
        // histograms: cumulative buckets ending with +Inf == _count
        let hist_families: Vec<&String> = typed
            .iter()
            .filter(|(_, t)| *t == "histogram")
            .map(|(n, _)| n)
            .collect();
        assert_eq!(hist_families.len(), 2);
        let mut checked = 0;
        for fam in hist_families {
            let bucket = format!("{fam}_bucket");
            let mut series: std::collections::BTreeMap<String, Vec<(String, f64)>> =
                Default::default();
            for (n, labels, val) in &samples {
                if *n == bucket {
                    let key: Vec<String> = labels
                        .iter()
                        .filter(|(k, _)| k != "le")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let le = labels.iter().find(|(k, _)| k == "le").unwrap().1.clone();
                    series.entry(key.join(",")).or_default().push((le, *val));
                }
            }
            for (key, buckets) in series {
                assert_eq!(buckets.len(), LATENCY_BOUNDS_USEC.len() + 1);
                assert_eq!(buckets.last().unwrap().0, "+Inf");
                let mut prev_le = 0.0;
                for w in buckets.windows(2) {
                    assert!(w[0].1 <= w[1].1, "{fam} {key} not cumulative");
                    let le: f64 = w[0].0.parse().unwrap();
                    assert!(le > prev_le);
                    prev_le = le;
                }
                let count = samples
                    .iter()
                    .find(|(n, l, _)| {
                        *n == format!("{fam}_count")
                            && l.iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(",")
                                == key
                    })
                    .unwrap()
                    .2;
                assert_eq!(buckets.last().unwrap().1, count);
                checked += 1;
            }
        }
        // get, config|get; two backends
        assert_eq!(checked, 4);
        assert!(text.contains("rustproxy_commands_total{cmd=\"get\"} 6\n"));
        assert!(text.contains("rustproxy_command_errors_total{cmd=\"get\"} 1\n"));
        assert!(text.contains("rustproxy_command_rejected_total{cmd=\"set\"} 1\n"));
        assert!(text.contains(
            "rustproxy_backend_up{pool=\"main\",backend=\"srvA\",addr=\"127.0.0.1:7000\"} 1\n"
        ));
        assert!(text.contains("rustproxy_pool_clients{pool=\"we\\\"ird\\\\pool\"} 1\n"));
        assert!(text
            .contains("rustproxy_command_latency_seconds_bucket{cmd=\"get\",le=\"0.0001\"} 4\n"));
        assert!(text.contains("rustproxy_command_latency_seconds_sum{cmd=\"get\"} 0.002156\n"));
        assert!(text.contains("rustproxy_resident_memory_bytes 5242880\n"));
        // label parsing round trip of the escaped pool name
        let s: Vec<String> = samples
            .iter()
            .filter(|(n, _, _)| n == "rustproxy_pool_clients")
            .map(|(_, l, _)| l[0].1.clone())
            .collect();
        assert!(s.contains(&"we\"ird\\pool".to_string()));
    }

    #[test]
    fn seconds_formatting() {
        assert_eq!(usec_as_secs(100), "0.0001");
        assert_eq!(usec_as_secs(250), "0.00025");
        assert_eq!(usec_as_secs(1_000_000), "1");
        assert_eq!(usec_as_secs(2_500_000), "2.5");
        assert_eq!(usec_as_secs(0), "0");
        assert_eq!(secs_usec(1_500_000), "1.500000");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(esc_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    // ---- minimal JSON parser (the tests must not need serde) ----

    #[derive(Debug, PartialEq)]
    enum J {
        Num(u64),
        Str(String),
        Obj(Vec<(String, J)>),
    }

    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }

    fn jstr(b: &[u8], i: &mut usize) -> String {
        assert_eq!(b[*i], b'"');
        *i += 1;
        let mut s = Vec::new();
        loop {
            match b[*i] {
                b'"' => {
                    *i += 1;
                    return String::from_utf8(s).unwrap();
                }
                b'\\' => {
                    *i += 1;
                    match b[*i] {
                        b'"' => s.push(b'"'),
                        b'\\' => s.push(b'\\'),
                        b'u' => {
                            let h = std::str::from_utf8(&b[*i + 1..*i + 5]).unwrap();
                            s.push(u8::from_str_radix(h, 16).unwrap());
                            *i += 4;
                        }
                        c => panic!("escape {c}"),
                    }
                    *i += 1;
                }
                c => {
                    assert!(c >= 0x20);
                    s.push(c);
                    *i += 1;
                }
            }
        }
    }

    fn jval(b: &[u8], i: &mut usize) -> J {
        ws(b, i);
        match b[*i] {
            b'"' => J::Str(jstr(b, i)),
            b'{' => {
                *i += 1;
                let mut items = Vec::new();
                ws(b, i);
                if b[*i] == b'}' {
                    *i += 1;
                    return J::Obj(items);
                }
                loop {
                    ws(b, i);
                    let k = jstr(b, i);
                    ws(b, i);
                    assert_eq!(b[*i], b':');
                    *i += 1;
                    let v = jval(b, i);
                    items.push((k, v));
                    ws(b, i);
                    match b[*i] {
                        b',' => *i += 1,
                        b'}' => {
                            *i += 1;
                            return J::Obj(items);
                        }
                        c => panic!("unexpected {}", c as char),
                    }
                }
            }
            b'0'..=b'9' => {
                let st = *i;
                while *i < b.len() && b[*i].is_ascii_digit() {
                    *i += 1;
                }
                J::Num(std::str::from_utf8(&b[st..*i]).unwrap().parse().unwrap())
            }
            c => panic!("unexpected {}", c as char),
        }
    }

    fn parse_json(s: &str) -> J {
        let mut i = 0;
        let v = jval(s.as_bytes(), &mut i);
        ws(s.as_bytes(), &mut i);
        assert_eq!(i, s.len(), "trailing bytes");
        v
    }

    /// Captured from nutcracker 0.5.0 (`nutcracker -c conf.yml -s PORT`, two pools, one server
    /// with a name and one without), to check our layout against.
    const REAL_NUTCRACKER: &str = r#"{"service":"nutcracker", "source":"vm", "version":"0.5.0", "uptime":4, "timestamp":1795313940, "total_connections":5, "curr_connections":4, "beta": {"client_eof":1, "client_err":0, "client_connections":0, "server_ejects":0, "forward_error":0, "fragments":0, "127.0.0.1:46415": {"server_eof":0, "server_err":0, "server_timedout":0, "server_connections":0, "server_ejected_at":0, "requests":0, "request_bytes":0, "responses":0, "response_bytes":0, "in_queue":0, "in_queue_bytes":0, "out_queue":0, "out_queue_bytes":0}},"alpha": {"client_eof":0, "client_err":0, "client_connections":1, "server_ejects":0, "forward_error":0, "fragments":0, "srvA": {"server_eof":0, "server_err":0, "server_timedout":0, "server_connections":1, "server_ejected_at":0, "requests":3, "request_bytes":75, "responses":3, "response_bytes":28, "in_queue":0, "in_queue_bytes":0, "out_queue":0, "out_queue_bytes":0}}}"#;

    /// Shape: key names in order, with values replaced by their kind.
    fn shape(j: &J) -> Vec<String> {
        match j {
            J::Obj(items) => items
                .iter()
                .flat_map(|(k, v)| {
                    let inner = shape(v);
                    std::iter::once(format!(
                        "{k}:{}",
                        match v {
                            J::Num(_) => "num",
                            J::Str(_) => "str",
                            J::Obj(_) => "obj",
                        }
                    ))
                    .chain(inner.into_iter().map(|s| format!("  {s}")))
                    .collect::<Vec<_>>()
                })
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    fn nutcracker_json_matches_real_layout() {
        let real = parse_json(REAL_NUTCRACKER);
        let real_shape = shape(&real);
        // Ours with the same pools / servers as the capture.
        let a = ServerStats {
            requests: 3,
            request_bytes: 75,
            replies: 3,
            response_bytes: 28,
            ..ServerStats::default()
        };
        let b = ServerStats::default();
        let s = Stats {
            connections_received: 2,
            ..Stats::default()
        };
        let (_, fixture_ss) = fixture();
        let mut v = view(&s, &fixture_ss);
        v.version = "0.5.0";
        v.uptime_secs = 4;
        v.now_unix = 1795313940;
        v.connected_clients = 1;
        v.pools = vec![
            PoolView {
                rebalance: None,
                name: "beta",
                listen: "127.0.0.1:1".into(),
                hash: "fnv1a_64",
                distribution: "ketama",
                clients: 0,
                servers: vec![ServerView {
                    name: "127.0.0.1:46415",
                    addr: "127.0.0.1:46415".into(),
                    state: "up",
                    connections: 0,
                    in_flight: 0,
                    out_queue_bytes: 0,
                    stats: &b,
                }],
            },
            PoolView {
                rebalance: None,
                name: "alpha",
                listen: "127.0.0.1:2".into(),
                hash: "fnv1a_64",
                distribution: "ketama",
                clients: 1,
                servers: vec![ServerView {
                    name: "srvA",
                    addr: "127.0.0.1:46415".into(),
                    state: "up",
                    connections: 1,
                    in_flight: 0,
                    out_queue_bytes: 0,
                    stats: &a,
                }],
            },
        ];
        let ours = nutcracker_json(&v, "vm");
        assert_eq!(shape(&parse_json(&ours)), real_shape);
        // Byte for byte, apart from the service name, client_eof and the connection totals.
        let expect = REAL_NUTCRACKER
            .replace("\"nutcracker\"", "\"rustproxy\"")
            .replace("\"client_eof\":1", "\"client_eof\":0")
            .replace("\"total_connections\":5", "\"total_connections\":2")
            .replace("\"curr_connections\":4", "\"curr_connections\":2");
        assert_eq!(ours, expect);
    }

    #[test]
    fn nutcracker_json_escapes_and_fixture() {
        let (s, ss) = fixture();
        let v = view(&s, &ss);
        let j = nutcracker_json(&v, "host\"1");
        let J::Obj(top) = parse_json(&j) else {
            panic!()
        };
        assert_eq!(top[1], ("source".into(), J::Str("host\"1".into())));
        let pool = top.iter().find(|(k, _)| k == "we\"ird\\pool").unwrap();
        let J::Obj(items) = &pool.1 else { panic!() };
        assert_eq!(items.len(), 6);
        let main = top.iter().find(|(k, _)| k == "main").unwrap();
        let J::Obj(items) = &main.1 else { panic!() };
        let srv = items.iter().find(|(k, _)| k == "srvA").unwrap();
        let J::Obj(f) = &srv.1 else { panic!() };
        let get = |k: &str| f.iter().find(|(a, _)| a == k).map(|x| &x.1);
        assert_eq!(
            get("server_ejected_at"),
            Some(&J::Num(1_700_000_000_123_456))
        );
        assert_eq!(get("out_queue"), Some(&J::Num(2)));
        assert_eq!(get("out_queue_bytes"), Some(&J::Num(40)));
        assert_eq!(
            items.iter().find(|(k, _)| k == "server_ejects").unwrap().1,
            J::Num(1)
        );
        // describe lists every nutcracker key
        let d = describe();
        for k in shape(&parse_json(REAL_NUTCRACKER)) {
            let k = k.trim().split(':').next().unwrap().to_string();
            if k.contains('.') || ["srvA", "alpha", "beta"].contains(&k.as_str()) {
                continue;
            }
            if [
                "service",
                "source",
                "version",
                "uptime",
                "timestamp",
                "total_connections",
                "curr_connections",
            ]
            .contains(&k.as_str())
            {
                continue;
            }
            assert!(d.contains(&format!("  {k} ")), "{k} not described");
        }
    }
}
