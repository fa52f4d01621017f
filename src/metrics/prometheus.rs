//! Prometheus text exposition (format 0.0.4) of the statistics.
//!
//! Invariants: every family has `# HELP` and `# TYPE`; label values are escaped; histogram
//! buckets are cumulative and end with `+Inf`; labels are bounded (pools, backends, commands
//! of the table).

use std::fmt::Write as _;

use super::*;
use crate::commands::COMMANDS;
use crate::stats::{stat_name, Histogram};

// ---------------------------------------------------------------------------------------------
// Prometheus

/// Histogram bucket bounds, microseconds (100 us .. 10 s).
pub const LATENCY_BOUNDS_USEC: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Label value escaping of the text format: backslash, double quote, newline.
pub(super) fn esc_label(s: &str) -> String {
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
