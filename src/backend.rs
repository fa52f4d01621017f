//! Backend state: the servers of a pool (address, liveness, reconnect backoff, counters) and the
//! pipelined connections to them, each with its queue of in-flight requests.
//!
//! Invariants:
//! - `inflight` is in the order requests were written to the connection's output, which is the
//!   order the backend answers; a reply always belongs to `inflight.front()`.
//!   Pushed by the proxy when it queues a request; popped only when a reply arrives or when the
//!   connection fails (every entry then gets an error).
//! - An entry whose request timed out stays in the queue (its reply must still be read) but is
//!   orphaned: its owner becomes `Owner::Orphan`, so the late reply is dropped.
//! - A server is `down` only after a connect failed; while down, new requests for it fail at once
//!   instead of queueing, and the next connect waits for a capped exponential backoff.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::resp::ReplyScanner;
use crate::stats::ServerStats;

/// Idle private connections kept per backend and protocol for reuse.
pub const PRIVATE_IDLE: usize = 8;
/// `Pending::part` of a request that fills a whole chain slot.
pub const WHOLE: u32 = u32::MAX;

/// Reconnect backoff after a failed connect: doubles from the first value up to the cap.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Whose reply a request's reply is: every in-flight entry says it with a type, never with a
/// magic client number, and the reply path matches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A client (slab key, unique id): the reply fills its chain slot `seq` (part `part`). The
    /// id is the generation check: a reused slab key never receives its predecessor's reply.
    Client { key: usize, id: u64 },
    /// Part of the connection's handshake (HELLO, AUTH, READONLY, `redis_db`'s SELECT):
    /// checked, not delivered; a refusal takes the server down.
    Handshake,
    /// The SELECT of a client's database (a per-database connection's first request, or one
    /// re-selecting a private connection): not delivered; a refusal closes the connection and
    /// fails what it carried (never run in another database), without blaming the server.
    Select,
    /// A reply the proxy already answered or nobody wants (MULTI's `+OK`/`+QUEUED` inside a
    /// transaction block, ASKING, UNWATCH, a pattern's confirmation from other backends).
    Swallow,
    /// CLUSTER SLOTS sent to refresh a slot map.
    Refresh,
    /// Its client stopped waiting (the request timed out): the late reply is read and dropped.
    Orphan,
    /// Online rebalancing: the MIGRATE of keys a client's command needs, from their old owner
    /// (`Pending::part`: how many keys). The command runs once every such reply is in.
    Move { key: usize, id: u64 },
    /// The background mover's request to a source (`Pending::part`: `MOVER_*`; `seq`: keys of a
    /// MIGRATE).
    Mover { pool: usize, slot: usize },
    /// A rebalance barrier request (`Pending::part`: `BARRIER_MARKER` behind requests sent
    /// under the old ring, or `BARRIER_CHECK`, a CLIENT LIST of registered proxy processes).
    Barrier { pool: usize },
    /// `CLIENT ID` asked on a private connection before its first blocking command: the
    /// integer is kept as the connection's `backend_id` (CLIENT UNBLOCK names the backend's
    /// client by it); an error is ignored.
    BackendId,
    /// A hot-key cache's tracking connection to a server of pool `pool` (`Pending::part`:
    /// `proxy::hot::TRACK_*`): its setup (HELLO 3, CLIENT TRACKING on) and the GET and PTTL
    /// of each fetch. Invalidation pushes on it answer no request.
    Track { pool: usize },
}

/// One request written to a backend connection, waiting for its reply.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub owner: Owner,
    /// Chain slot of the client.
    pub seq: u64,
    /// Part of a multi slot, or WHOLE.
    pub part: u32,
    /// A blocking command: exempt from the request timeout; its reply ends the client's loan
    /// of the private connection.
    pub blocking: bool,
    /// A (un)subscription: its reply is a confirmation, counted in the client's subscribe
    /// state (other commands of a RESP3 subscriber share the connection and are plain replies).
    pub confirm: bool,
    /// Cluster pools: how many MOVED/ASK redirections this request has followed.
    pub redirects: u8,
    /// When it was queued (event-loop clock).
    pub sent: crate::clock::Micros,
    /// A write of a pool with a hot-key cache: the tag of the key it writes
    /// (`hotcache::key_tag`, or `hotcache::ANY_KEY`), held in the cache until its reply is in
    /// (no fetch of that key starts meanwhile). 0: none.
    pub hot: u64,
}

impl Pending {
    /// A request just queued (no redirection followed yet).
    pub fn new(
        owner: Owner,
        seq: u64,
        part: u32,
        blocking: bool,
        sent: crate::clock::Micros,
    ) -> Pending {
        Pending {
            owner,
            seq,
            part,
            blocking,
            confirm: false,
            redirects: 0,
            sent,
            hot: 0,
        }
    }

    /// A proxy-made request with no client slot to fill.
    pub fn internal(owner: Owner, sent: crate::clock::Micros) -> Pending {
        Pending::new(owner, 0, WHOLE, false, sent)
    }

    /// The client waiting for this reply, if any.
    pub fn client(&self) -> Option<(usize, u64)> {
        match self.owner {
            Owner::Client { key, id } => Some((key, id)),
            _ => None,
        }
    }
}

/// A server's shared connections for one database other than the pool's `redis_db`.
pub struct DbConns {
    pub db: u32,
    /// As `Server::conns`: per protocol, `server_connections` each.
    pub conns: [Vec<Option<usize>>; 2],
    /// Last time a client used them (`db_idle_timeout`).
    pub used: Instant,
}

/// One backend server of a pool.
pub struct Server {
    /// Name shown to users and used in errors: the configured name, else host:port.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Shared connections, per protocol (index 0: RESP2, 1: RESP3), `server_connections` each;
    /// slab keys of `Proxy::conns`.
    pub conns: [Vec<Option<usize>>; 2],
    /// Round-robin cursor over `conns`.
    pub rr: usize,
    /// Shared connections for databases other than the pool's `redis_db` (clients that
    /// `SELECT`ed one), opened on first use and closed when idle (`db_idle_timeout`).
    pub db_conns: Vec<DbConns>,
    /// While `Some(t)` and now < t, requests fail at once.
    pub down_until: Option<Instant>,
    /// Consecutive failed connects (drives the backoff).
    pub connect_failures: u32,
    pub last_error: String,
    /// Consecutive failures (connect, broken connection, timeout) since the last reply;
    /// drives ejection (twemproxy's `server_failure_limit`).
    pub failure_count: u32,
    /// Out of the ring until then (`auto_eject_hosts`).
    pub ejected_until: Option<Instant>,
    /// Removed from the configuration by a reload: no new requests; connections drain.
    pub retired: bool,
    /// A cluster replica used for reads: its connections send READONLY first. Replicas are not
    /// in the pool's `order` (not BACKENDS, not fan-out targets).
    pub readonly: bool,
    /// Idle private connections ready to lend, per protocol (index as `conns`).
    pub idle_private: [Vec<usize>; 2],
    /// Private connections open (lent or idle).
    pub private_open: usize,
    pub stats: ServerStats,
}

impl Server {
    pub fn new(
        name: String,
        host: String,
        port: u16,
        addr: SocketAddr,
        weight: u32,
        nconns: usize,
    ) -> Server {
        let n = nconns.max(1);
        Server {
            name,
            host,
            port,
            addr,
            weight,
            conns: [vec![None; n], vec![None; n]],
            rr: 0,
            db_conns: Vec::new(),
            down_until: None,
            connect_failures: 0,
            last_error: String::new(),
            failure_count: 0,
            ejected_until: None,
            retired: false,
            readonly: false,
            idle_private: [Vec::new(), Vec::new()],
            private_open: 0,
            stats: ServerStats::default(),
        }
    }

    /// Change the number of shared connections per protocol. Connections beyond the new count
    /// are returned so the caller can retire them (close once idle).
    pub fn resize_conns(&mut self, n: usize) -> Vec<usize> {
        let n = n.max(1);
        let mut dropped = Vec::new();
        // Per-database connections reopen lazily at the new count.
        for d in self.db_conns.drain(..) {
            dropped.extend(d.conns.into_iter().flatten().flatten());
        }
        for list in &mut self.conns {
            if list.len() > n {
                dropped.extend(list.drain(n..).flatten());
            } else {
                list.resize(n, None);
            }
        }
        dropped
    }

    /// Take every connection of a server leaving the configuration (shared and idle private
    /// ones); the caller retires them.
    pub fn drain_conns(&mut self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for list in &mut self.conns {
            out.extend(list.drain(..).flatten());
        }
        for d in self.db_conns.drain(..) {
            out.extend(d.conns.into_iter().flatten().flatten());
        }
        for list in &mut self.idle_private {
            out.append(list);
        }
        out
    }

    pub fn is_down(&self, now: Instant) -> bool {
        matches!(self.down_until, Some(t) if now < t)
    }

    /// Record a failed connect and start (or extend) the backoff.
    pub fn connect_failed(&mut self, now: Instant, why: &str) {
        self.connect_failures = self.connect_failures.saturating_add(1);
        let shift = (self.connect_failures - 1).min(16);
        let wait = BACKOFF_FIRST.saturating_mul(1u32 << shift).min(BACKOFF_CAP);
        self.down_until = Some(now + wait);
        self.last_error = why.to_string();
        self.stats.failures += 1;
    }

    /// The server answered: end any outage (logged, since its start was).
    pub fn connected(&mut self, index: usize) {
        if self.connect_failures > 0 {
            log::info!("b{index}({}) {} is back", self.name, self.addr);
        }
        self.connect_failures = 0;
        self.down_until = None;
    }

    /// Count a failure; with ejection on, the limit-th consecutive one ejects the server until
    /// `retry` from now. Returns true when this failure ejected it.
    pub fn failed(&mut self, now: Instant, eject: bool, limit: u32, retry: Duration) -> bool {
        self.failure_count = self.failure_count.saturating_add(1);
        if !eject || self.ejected_until.is_some() || self.failure_count < limit.max(1) {
            return false;
        }
        self.failure_count = 0;
        self.ejected_until = Some(now + retry);
        self.stats.ejections += 1;
        self.stats.ejected_at_usec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        true
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// The error a client gets for a request this server cannot take.
    pub fn down_error(&self) -> String {
        format!(
            "ERR backend {} ({}) is unavailable: {}",
            self.name, self.addr, self.last_error
        )
    }
}

/// A read buffer that keeps its allocation and slides instead of reallocating.
#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Read once from `r` into free space (growing or sliding as needed).
    pub fn read_from<R: Read>(&mut self, r: &mut R, min_free: usize) -> io::Result<usize> {
        if self.data.len() - self.end < min_free {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < min_free {
                let want = (self.data.len() * 2).max(self.end + min_free);
                self.data.resize(want, 0);
            }
        }
        let n = r.read(&mut self.data[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Give memory back when empty and larger than `keep`.
    pub fn shrink(&mut self, keep: usize) {
        if self.is_empty() && self.data.len() > keep {
            self.data = Vec::new();
        }
    }
}

/// Connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Non-blocking connect in progress; requests queue in `wbuf` meanwhile.
    Connecting,
    Up,
}

/// A pipelined connection to one backend, shared by every client of the pool.
pub struct Conn {
    /// TCP, or TLS with `backend_tls`.
    pub stream: crate::net::Stream,
    pub pool: usize,
    pub server: usize,
    /// 1 when opened with HELLO 3 (serves RESP3 clients).
    pub proto: usize,
    /// Index in `Server::conns[proto]` (or in its `DbConns` for another database).
    pub slot: usize,
    /// The database selected on it (requests queued after the SELECT run there).
    pub db: u32,
    /// While a SELECT is unanswered, only `wbuf[..hold]` is written: what follows must not
    /// reach the backend before it knows the SELECT worked (a refused SELECT would leave them
    /// running in another database). None: write everything.
    pub hold: Option<usize>,
    pub state: ConnState,
    pub connect_deadline: Instant,
    /// Requests not yet written; `wpos` bytes already are.
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    pub rbuf: ReadBuf,
    pub scanner: ReplyScanner,
    pub inflight: VecDeque<Pending>,
    /// Number of orphaned entries at the front of `inflight` (timed out, reply not yet read).
    pub orphans: usize,
    /// Its server was removed (or its slot dropped) by a reload: close once `inflight` is empty.
    pub retiring: bool,
    /// Lent to one client at a time (blocking commands, WATCH), never shared.
    pub private: bool,
    /// The client (slab key, id) it is lent to.
    pub owner: Option<(usize, u64)>,
    /// Given back by its client while requests were still in flight on it: it joins the idle
    /// list only once they are answered (never lent while busy).
    pub returning: bool,
    /// A private connection blocked for its owner: every key of the blocking command (the keys
    /// it waits on and, for BLMOVE/BRPOPLPUSH, the destination).
    pub blocked_keys: Vec<Vec<u8>>,
    /// The backend's client id of this connection (`CLIENT ID`), or one of the markers of
    /// `proxy::kill` (not asked, answer pending, refused).
    pub backend_id: u64,
    /// Lent for subscriptions: messages (pushes) on it go to the owner, not to `inflight`.
    pub pubsub: bool,
    /// Cluster pools: the bytes of each in-flight request, aligned with `inflight`, so a
    /// MOVED/ASK reply can be resent to the right node. Empty for static pools.
    pub reqs: VecDeque<Box<[u8]>>,
    /// Whether `reqs` is kept (the connection belongs to a cluster pool).
    pub track: bool,
    pub writable: bool,
    pub dirty: bool,
}

impl Conn {
    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
}
