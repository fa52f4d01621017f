//! twemproxy's (nutcracker 0.5.0) stats JSON and the `rustproxy -D` description of its fields.
//!
//! Invariants: JSON strings are escaped; the document has twemproxy's layout (globals, then one
//! object per pool with one object per server), so tools written for nutcracker read it.

use std::fmt::Write as _;

use super::*;

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
