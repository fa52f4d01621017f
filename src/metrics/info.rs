//! INFO text in Redis 7.0's format: the sections in Redis's order (the proxy's own `proxy` and
//! `backends` after them, outside the default set), section selection as Redis selects
//! (`default`, `all`, `everything`, names), and one backend's counters (`INFO BACKEND n`).
//!
//! Invariants: `# Section` headers, `key:value` lines, CRLF endings, one empty line between
//! sections, values free of CR/LF; Redis's sections carry only Redis's field names.

use std::fmt::Write as _;

use super::*;
use crate::commands::COMMANDS;
use crate::stats::stat_name;

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
