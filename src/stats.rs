//! Counters, in one place. Plain integers owned by the single event-loop thread: bumping one is
//! an add, never an allocation or a lock. INFO (and later the metrics endpoint) render from here.
//!
//! Invariants: counters only go up, except `reset` (CONFIG RESETSTAT) which zeroes the
//! cumulative ones and leaves gauges (connected clients, in-flight) alone.

/// Proxy-wide counters.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// Client connections accepted since start.
    pub connections_received: u64,
    /// Client connections refused (max_clients).
    pub rejected_connections: u64,
    /// Commands read from clients (each pipelined command counts once).
    pub commands: u64,
    /// Error replies the proxy produced (protocol, routing, backend-down, timeout...).
    pub errors: u64,
    /// Requests failed by the request timeout.
    pub timeouts: u64,
    /// Bytes read from clients / written to clients.
    pub net_input_bytes: u64,
    pub net_output_bytes: u64,
}

impl Stats {
    pub fn reset(&mut self) {
        *self = Stats::default();
    }
}

/// Per-backend counters.
#[derive(Default, Debug, Clone)]
pub struct ServerStats {
    /// Requests sent (sub-requests of split commands count one each).
    pub requests: u64,
    /// Replies received (including ones dropped because their client left).
    pub replies: u64,
    /// Requests answered with a proxy-made error (down, timeout, connection lost).
    pub errors: u64,
    pub timeouts: u64,
    /// Connections opened to this backend.
    pub connections: u64,
    /// Times the backend went down (connection failure).
    pub failures: u64,
    /// Times it was ejected from the ring (auto_eject_hosts).
    pub ejections: u64,
}

impl ServerStats {
    pub fn reset(&mut self) {
        *self = ServerStats::default();
    }
}
