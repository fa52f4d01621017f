//! The event loop: one thread, one mio `Poll`, every socket registered once (edge-triggered,
//! readable and writable), clients and backend connections in slabs indexed by token.
//!
//! Request flow. A client socket becomes readable -> its bytes are read into the proxy's shared
//! read buffer (`scratch`) and parsed in place (`resp::parse_command`, arguments borrow from the
//! buffer) -> `router::plan` says what to do -> a chain slot is pushed for the request, in request
//! order -> the request bytes are appended, as they arrived, to the output of one backend
//! connection (or re-encoded per backend for split and fan-out commands), and an in-flight entry
//! (client key, client id, slot, part) is queued on that connection. At the end of the tick every
//! connection with output is flushed once.
//!
//! Reply flow. A backend socket becomes readable -> the resumable scanner finds complete replies
//! -> each belongs to the front in-flight entry -> the reply bytes are handed to that client's
//! chain, which copies them straight to the client's output when the slot is at the head, or
//! stores them until the slots before it are filled. Clients with output are flushed at the end
//! of the tick.
//!
//! Ordering invariant: every reply to a client, local and error replies included, passes through
//! its chain, and only the chain's head leaves; so replies leave in request order whatever order
//! backends answer in.
//!
//! Other invariants:
//! - Tokens: the low two bits say what a token names (listener, client, backend connection);
//!   `Kind::of` is the one decoder.
//! - A slab key may be reused as soon as its client is closed (`close_client` runs at once, or
//!   at the end of the tick for `Closing::Now`); in-flight entries carry the client id
//!   (`Owner::Client`), so a reply for a departed client is read and dropped, never delivered
//!   to the slot's next owner.
//! - Reads are drained to WouldBlock under a per-tick budget; a client that used its budget is
//!   served again next tick (the `again` list), because edge-triggered polling will not announce
//!   data that is already waiting.
//! - Flow control: a client with `max_pending` replies outstanding or more than `max_output`
//!   reply bytes waiting for it is not read (nor its requests forwarded) until both halved; only
//!   a subscriber past `pubsub_max_output` is disconnected (messages cannot be held back).
//!
//! Rooms (one concept each; `impl Proxy` is spread over them): `exec` (client input -> plan ->
//! sends, deliveries into the chain), `upstream` (backend connections and reply routing),
//! `session` (private connections, blocking, transactions), `pubsub`, `builtin` (commands the
//! proxy answers), `cluster` (slot refresh, MOVED/ASK), `reload` (live configuration), `hot`
//! (hot-key detection and cache, tracking connections),
//! `stats_port`; this file holds the loop, accept, timers, flushing and closing.
//! - No input makes this module panic: errors close the one connection they belong to.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The chain's sink for client `k` (id `id`): the proxy's command stats and slow-log queue.
macro_rules! sink {
    ($p:ident, $k:expr, $id:expr) => {
        &mut Sink {
            stats: &mut $p.stats,
            now: $p.now_us,
            slow_usec: $p.slowlog.threshold_usec,
            slow: &mut $p.slow_pending,
            spare: &mut $p.spare,
            client: ($k, $id),
        }
    };
}

mod builtin;
mod cluster;
mod databases;
mod exec;
mod hot;
mod introspect;
mod kill;
mod mover;
mod offload;
mod pause;
mod pubsub;
mod rebalance;
mod reload;
mod session;
mod stats_port;
mod upstream;

use exec::encode_args;
use pubsub::is_message;
use stats_port::StatsConn;
use upstream::Fail;
use upstream::HELLO3;

use crate::backend::{Conn, ConnState, Owner, Pending, ReadBuf, PRIVATE_IDLE, WHOLE};
use crate::chain::{Delivered, Done, Meta, Multi, Sink, Slot, NO_CMD};
use crate::client::{Client, Closing};
use crate::clock::{since, Micros};
use crate::combine::Combine;
use crate::commands::{Merge, Spec, Split};
use crate::config::{Config, Listen};
use crate::net::Stream;
use crate::net::{bind, listen_name, set_keepalive, would_block, Listener};
use crate::pool::Pool;
use crate::resp::{self, Args, ParseError, Reply, ReplyScanner};
use crate::router::{self, Plan};
use crate::stats::{command_index, SlowLog, Stats};

/// The Redis version the proxy reports to clients (HELLO, INFO): the command set it speaks.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";
/// Size of the shared read buffer, and so of one read from a client.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per client (or backend) per tick before others get a turn.
const READ_BUDGET: usize = 8;
/// A client output buffer larger than this is not kept after it drains.
const KEEP_OUTPUT: usize = 64 * 1024;
/// Idle output buffers kept for reuse.
const POOLED_BUFFERS: usize = 256;
/// Longest wait in poll; timers (request and connect timeouts) are checked at least this often.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// Request and connect timeouts are checked this often (µs).
const TIMER_PERIOD_US: Micros = 5_000;
/// Idle clients are looked for this often (µs).
const IDLE_CHECK_PERIOD_US: Micros = 100_000;
/// Slow log defaults (Redis's): entries kept, and the threshold in microseconds.
const SLOWLOG_MAX_LEN: usize = 128;
const SLOWLOG_SLOWER_THAN_USEC: i64 = 10_000;
/// At shutdown, a client with nothing pending is closed after this long without a request.
const SHUTDOWN_QUIET: Duration = Duration::from_millis(250);
/// Longest wait for in-flight requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A backend whose oldest timed-out request is this many timeouts old is closed and reconnected.
const STALL_FACTOR: u32 = 10;

/// What a token names. The low two bits are the kind, the rest the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Listener(usize),
    Client(usize),
    Conn(usize),
    /// The stats listener (0) and its connections (slab key + 1).
    Stats(usize),
}

impl Kind {
    pub fn token(self) -> Token {
        match self {
            Kind::Listener(i) => Token(i << 2),
            Kind::Client(i) => Token((i << 2) | 1),
            Kind::Conn(i) => Token((i << 2) | 2),
            Kind::Stats(i) => Token((i << 2) | 3),
        }
    }
    pub fn of(t: Token) -> Option<Kind> {
        let i = t.0 >> 2;
        match t.0 & 3 {
            0 => Some(Kind::Listener(i)),
            1 => Some(Kind::Client(i)),
            2 => Some(Kind::Conn(i)),
            _ => Some(Kind::Stats(i)),
        }
    }
}

pub struct Proxy {
    poll: Poll,
    /// Per pool; None once closed (shutdown).
    listeners: Vec<Option<Listener>>,
    pub pools: Vec<Pool>,
    clients: Slab<Client>,
    conns: Slab<Conn>,
    next_client_id: u64,
    /// Clients / connections with output to flush at the end of the tick (flag `dirty`).
    dirty_clients: Vec<usize>,
    dirty_conns: Vec<usize>,
    /// Clients to serve again next tick (read budget used up, or resumed after backpressure).
    again: Vec<usize>,
    /// Backend connections to read again next tick (read budget used up).
    again_conns: Vec<usize>,
    /// Clients to close at the end of the tick.
    closing: Vec<usize>,
    /// Shared read buffer; complete requests are parsed straight out of it.
    scratch: Vec<u8>,
    /// Reused argument spans and key positions.
    args: Args,
    keys: Vec<usize>,
    /// Idle output buffers for reuse (bounded).
    buffers: Vec<Vec<u8>>,
    /// Small buffers for replies parked in a chain (bounded, see `chain::SPARE_MAX`).
    spare: Vec<Vec<u8>>,
    /// Reused to build the sub-requests of a split command.
    subreq: Vec<u8>,
    /// Requests that took at least the slow-log threshold, logged at the end of the tick.
    slow_pending: Vec<Done>,
    pub stats: Stats,
    pub started: Instant,
    now: Instant,
    /// `now` on the event-loop clock (stamps of requests, replies, activity).
    now_us: Micros,
    /// When `check_timers` runs next, and when it next walks the clients for idle timeouts.
    next_timers: Micros,
    next_idle_check: Micros,
    config: Config,
    /// Outcome of the last reload: (unix time, ok, message), shown by INFO.
    pub last_reload: Option<(u64, bool, String)>,
    /// The command being executed (its stats identity), used for every reply slot it makes.
    cur: Meta,
    pub slowlog: SlowLog,
    /// When the instantaneous ops rate was last sampled (event-loop clock).
    last_sample: Micros,
    stats_listener: Option<TcpListener>,
    stats_conns: Slab<StatsConn>,
    /// When a failed AUTH was last logged (the log is rate-limited).
    last_auth_log: Option<Instant>,
    /// Set by SIGINT/SIGTERM (graceful shutdown) and SIGHUP (reload).
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    /// The helper thread for work that may block (reload, DNS), and the redirected requests
    /// waiting for a name it resolves.
    offload: offload::Offload,
    parked: Vec<offload::Parked>,
    /// This machine's name for nutcracker's stats document, read once at start.
    hostname: String,
    /// CLIENT PAUSE in force, and the clients it holds.
    pause: pause::Pause,
    /// The hot-key cache's tag of the write command being executed (`Pending::hot`); 0 when
    /// none.
    hot_tag: u64,
}

fn reply_error(out: &mut Vec<u8>, msg: &str) {
    resp::write_error(out, msg.as_bytes());
}

impl Proxy {
    /// Bind every pool's listener. Nothing is connected to backends yet (unless `preconnect`).
    pub fn new(config: Config) -> io::Result<Proxy> {
        // Signals first: a SIGTERM that arrives once the port is bound must be graceful.
        let term = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&term))?;
        }
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
        let poll = Poll::new()?;
        let offload = offload::Offload::new(&poll)?;
        let mut listeners = Vec::new();
        let mut pools = Vec::new();
        for (i, pc) in config.pools.iter().enumerate() {
            let mut l = bind(&pc.listen, pc.backlog, pc.reuseport)?;
            poll.registry()
                .register(&mut l, Kind::Listener(i).token(), Interest::READABLE)?;
            info!(
                "pool {} listening on {} ({} servers, {}/{})",
                pc.name,
                listen_name(&pc.listen),
                pc.servers.len(),
                pc.hash.name(),
                pc.distribution.name()
            );
            let (tls_server, tls_client) = crate::pool::tls_configs(pc).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("pool {}: {e}", pc.name),
                )
            })?;
            let loopback = match &pc.listen {
                Listen::Tcp(a) => a.ip().is_loopback(),
                Listen::Unix { .. } => true,
            };
            if !loopback && !crate::auth::Users::from_config(pc).required() {
                warn!(
                    "pool {} listens on {} without a password (requirepass): anyone who can reach it can use the backends",
                    pc.name,
                    listen_name(&pc.listen)
                );
            }
            listeners.push(Some(l));
            let mut pool = Pool::new(pc.clone());
            pool.tls_server = tls_server;
            pool.tls_client = tls_client;
            if pc.cluster {
                // Learn the masters before serving; if no seed answers yet, start with the
                // seeds and let the loop refresh the map.
                let seeds: Vec<SocketAddr> = pc.servers.iter().map(|s| s.addr).collect();
                let password = pc.backend_password.as_deref().or(pc.redis_auth.as_deref());
                match crate::cluster::fetch_slots(&seeds, password, Duration::from_secs(2)) {
                    Ok(ranges) => match pool.apply_slots(&ranges) {
                        Ok(_) => info!(
                            "pool {}: cluster of {} masters, {} slot ranges",
                            pc.name,
                            pool.len(),
                            ranges.len()
                        ),
                        Err(e) => warn!("pool {}: {e}", pc.name),
                    },
                    Err(e) => warn!(
                        "pool {}: no seed answered CLUSTER SLOTS yet ({e}); retrying in the background",
                        pc.name
                    ),
                }
            }
            pools.push(pool);
        }
        let now = Instant::now();
        let mut p = Proxy {
            poll,
            listeners,
            pools,
            clients: Slab::new(),
            conns: Slab::new(),
            next_client_id: 1,
            dirty_clients: Vec::new(),
            dirty_conns: Vec::new(),
            again: Vec::new(),
            again_conns: Vec::new(),
            closing: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            args: Args::default(),
            keys: Vec::new(),
            buffers: Vec::new(),
            spare: Vec::new(),
            subreq: Vec::new(),
            slow_pending: Vec::new(),
            stats: Stats {
                started_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                ..Stats::default()
            },
            started: now,
            now,
            now_us: 0,
            next_timers: 0,
            next_idle_check: 0,
            config,
            last_reload: None,
            cur: Meta::new(NO_CMD, 0),
            slowlog: SlowLog::new(SLOWLOG_MAX_LEN, SLOWLOG_SLOWER_THAN_USEC),
            last_sample: 0,
            term,
            hup,
            offload,
            parked: Vec::new(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            stats_listener: None,
            stats_conns: Slab::new(),
            last_auth_log: None,
            pause: Default::default(),
            hot_tag: 0,
        };
        if let Some(addr) = p.config.stats_listen {
            let mut l = TcpListener::bind(addr)?;
            p.poll
                .registry()
                .register(&mut l, Kind::Stats(0).token(), Interest::READABLE)?;
            info!("stats on {addr} (nutcracker JSON on connect, GET /metrics for Prometheus)");
            p.stats_listener = Some(l);
        }
        for pi in 0..p.pools.len() {
            if p.pools[pi].cfg.preconnect {
                for si in 0..p.pools[pi].servers.len() {
                    let _ = p.conn_for(pi, si, 0, None, None);
                }
            }
        }
        Ok(p)
    }

    /// The addresses the pools listen on (TCP ones), in pool order.
    pub fn local_addrs(&self) -> Vec<Option<SocketAddr>> {
        self.listeners
            .iter()
            .map(|l| match l {
                Some(Listener::Tcp(t)) => t.local_addr().ok(),
                _ => None,
            })
            .collect()
    }

    /// Run until SIGINT/SIGTERM (graceful: stop accepting, finish in-flight requests for at
    /// most `SHUTDOWN_GRACE`, exit) or an unrecoverable error of the poller itself.
    pub fn run(&mut self) -> io::Result<()> {
        let term = Arc::clone(&self.term);
        let hup = Arc::clone(&self.hup);
        let mut events = Events::with_capacity(1024);
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            if let Some(deadline) = shutdown_deadline {
                self.close_quiet_clients();
                self.flush_all();
                if self.clients.is_empty() || self.now >= deadline {
                    info!(
                        "shutdown complete ({} clients still open)",
                        self.clients.len()
                    );
                    return Ok(());
                }
            } else if term.load(Ordering::Relaxed) {
                shutdown_deadline = Some(self.begin_shutdown());
                continue;
            }
            if hup.swap(false, Ordering::Relaxed) {
                self.start_reload(false, None);
            }
            let wait = if self.again.is_empty() && self.again_conns.is_empty() {
                Some(MAX_POLL_WAIT)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, wait) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("poll failed: {e}");
                return Err(e);
            }
            self.tick_clock();
            for ev in events.iter() {
                if ev.token() == offload::WAKER {
                    self.offload_answers();
                    continue;
                }
                match Kind::of(ev.token()) {
                    Some(Kind::Listener(i)) => self.accept(i),
                    Some(Kind::Client(k)) => {
                        if ev.is_writable() {
                            if let Some(c) = self.clients.get_mut(k) {
                                c.writable = true;
                                self.mark_client(k);
                            }
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            let hangup = ev.is_read_closed() || ev.is_error();
                            self.client_readable(k, hangup, hangup);
                        }
                    }
                    Some(Kind::Conn(k)) => self.conn_event(
                        k,
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_writable(),
                        ev.is_read_closed() || ev.is_error(),
                    ),
                    Some(Kind::Stats(0)) => self.stats_accept(),
                    Some(Kind::Stats(i)) => self.stats_event(i - 1),
                    None => {}
                }
            }
            let again = std::mem::take(&mut self.again_conns);
            for k in again {
                self.conn_readable(k, true);
            }
            let again = std::mem::take(&mut self.again);
            for k in again {
                self.client_resume(k);
            }
            if self.now_us >= self.next_timers {
                // Timeouts have millisecond settings: checking every tick would cost a walk
                // over all connections per request under load.
                self.next_timers = self.now_us + TIMER_PERIOD_US;
                self.check_timers();
            }
            if !self.stats_conns.is_empty() {
                self.stats_timers();
            }
            self.flush_all();
            if since(self.now_us, self.last_sample) >= 100_000 {
                self.last_sample = self.now_us;
                self.stats.sample_ops(self.now_us / 1000);
            }
        }
    }

    /// Read the clock once for this tick.
    fn tick_clock(&mut self) {
        self.now = Instant::now();
        self.now_us = self.now.duration_since(self.started).as_micros() as Micros;
    }

    /// Stop accepting; close idle clients now and the others once their replies are out.
    fn begin_shutdown(&mut self) -> Instant {
        info!(
            "shutting down: no new connections; finishing requests of {} clients",
            self.clients.len()
        );
        // Take what is already queued on the listeners first: with reuseport, connections the
        // kernel queued here would otherwise be reset when the socket closes.
        for i in 0..self.listeners.len() {
            self.accept(i);
        }
        for i in 0..self.listeners.len() {
            self.close_listener(i);
        }
        // Serve what the clients already sent; `close_quiet_clients` then closes each one
        // that has gone quiet with nothing pending.
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for &k in &keys {
            self.client_readable(k, true, false);
        }
        self.flush_all();
        self.tick_clock();
        self.now + SHUTDOWN_GRACE
    }

    /// During shutdown: close clients with nothing pending that sent nothing for a moment (a
    /// request already on its way still gets served).
    fn close_quiet_clients(&mut self) {
        let now = self.now_us;
        let quiet: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.closing == Closing::No
                    && c.chain.is_empty()
                    && c.rbuf.is_empty()
                    && since(now, c.last_active) >= SHUTDOWN_QUIET.as_micros() as Micros
            })
            .map(|(k, _)| k)
            .collect();
        for k in quiet {
            if let Some(c) = self.clients.get_mut(k) {
                c.closing = Closing::AfterReplies;
            }
            self.maybe_finish(k);
        }
    }

    // ----- accepting -------------------------------------------------------------------

    fn accept(&mut self, li: usize) {
        loop {
            let accepted = match self.listeners.get(li) {
                Some(Some(Listener::Tcp(l))) => l.accept().and_then(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    match &self.pools[li].tls_server {
                        Some(cfg) => Ok((
                            Stream::Tls(Box::new(crate::tls::TlsStream::server(s, cfg.clone())?)),
                            a,
                        )),
                        None => Ok((Stream::Tcp(s), a)),
                    }
                }),
                Some(Some(Listener::Unix(l))) => l
                    .accept()
                    .map(|(s, _)| (Stream::Unix(s), crate::client::unix_peer())),
                _ => return,
            };
            let (mut stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again on the next readiness event.
                    warn!("accept on pool {} failed: {e}", self.pools[li].cfg.name);
                    return;
                }
            };
            self.stats.connections_received += 1;
            let pool = &mut self.pools[li];
            if pool.cfg.max_clients > 0 && pool.clients >= pool.cfg.max_clients {
                self.stats.rejected_connections += 1;
                let _ = stream.write(b"-ERR max number of clients reached\r\n");
                debug!("{peer} rejected: max_clients {}", pool.cfg.max_clients);
                continue;
            }
            let entry = self.clients.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Kind::Client(key).token(),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("register client {peer} failed: {e}");
                continue;
            }
            let id = self.next_client_id;
            self.next_client_id += 1;
            let mut client = Client::new(stream, id, li, peer, self.now_us);
            client.authed = !pool.users.required();
            client.level = pool.users.default_level();
            entry.insert(client);
            pool.clients += 1;
            debug!("c{key}#{id} {peer} connected to pool {}", pool.cfg.name);
        }
    }

    // ----- client input ----------------------------------------------------------------

    fn mark_client(&mut self, k: usize) {
        if let Some(c) = self.clients.get_mut(k) {
            if !c.dirty {
                c.dirty = true;
                self.dirty_clients.push(k);
            }
        }
    }

    fn mark_conn(&mut self, k: usize) {
        if let Some(c) = self.conns.get_mut(k) {
            if !c.dirty {
                c.dirty = true;
                self.dirty_conns.push(k);
            }
        }
    }

    // ----- sending to backends ----------------------------------------------------------

    fn check_timers(&mut self) {
        self.pause_tick();
        let now = self.now;
        let now_us = self.now_us;
        let mut failed: Vec<(usize, String)> = Vec::new();
        let mut expired: Vec<(Pending, String)> = Vec::new();
        let mut timed_out_servers: Vec<(usize, usize)> = Vec::new();
        for (k, conn) in self.conns.iter_mut() {
            let pool = &mut self.pools[conn.pool];
            let cfg = &pool.cfg;
            let srv = &mut pool.servers[conn.server];
            if conn.state == ConnState::Connecting {
                if now >= conn.connect_deadline {
                    failed.push((k, "connect timeout".to_string()));
                }
                continue;
            }
            if cfg.timeout_ms == 0 {
                continue;
            }
            let timeout_us = crate::clock::ms(cfg.timeout_ms);
            // Oldest orphan too old: the backend is stalled; reconnect.
            if conn.orphans > 0 {
                if let Some(p) = conn.inflight.front() {
                    if since(now_us, p.sent) >= timeout_us * STALL_FACTOR as Micros {
                        failed.push((k, "stalled (no reply long after the timeout)".into()));
                        continue;
                    }
                }
            }
            if conn.pubsub {
                // Subscriptions wait as long as the backend takes: a confirmation that timed out
                // would leave the client's subscribe state waiting for it forever.
                continue;
            }
            while let Some(p) = conn.inflight.get(conn.orphans) {
                if p.blocking || since(now_us, p.sent) < timeout_us {
                    break;
                }
                let p = *p;
                conn.orphans += 1;
                if p.client().is_none() {
                    // Proxy-made requests keep their owner: a late handshake refusal must still
                    // be seen (and a late CLUSTER SLOTS still applied).
                    continue;
                }
                conn.inflight[conn.orphans - 1].owner = Owner::Orphan;
                srv.stats.timeouts += 1;
                srv.stats.errors += 1;
                if !timed_out_servers.contains(&(conn.pool, conn.server)) {
                    timed_out_servers.push((conn.pool, conn.server));
                }
                expired.push((
                    p,
                    format!(
                        "ERR timeout: backend {} ({}) did not answer within {} ms",
                        srv.name, srv.addr, cfg.timeout_ms
                    ),
                ));
            }
        }
        for &(pool, server) in &timed_out_servers {
            self.pools[pool].server_failed(server, now);
        }
        for pool in &mut self.pools {
            pool.uneject_due(now);
        }
        for pool_i in 0..self.pools.len() {
            self.cluster_maybe_refresh(pool_i);
        }
        self.rebalance_tick();
        for (p, msg) in expired {
            self.stats.timeouts += 1;
            self.stats.errors += 1;
            let mut e = Vec::with_capacity(msg.len() + 3);
            reply_error(&mut e, &msg);
            if let Some((key, id)) = p.client() {
                self.deliver_to(key, Some(id), p.seq, p.part, &e);
            }
        }
        for (k, why) in failed {
            self.conn_failed(k, &why, Fail::Down);
        }
        // Idle clients (a walk over all of them, so less often).
        if now_us < self.next_idle_check {
            return;
        }
        self.next_idle_check = now_us + IDLE_CHECK_PERIOD_US;
        self.close_idle_db_conns();
        let mut idle = Vec::new();
        for (k, c) in self.clients.iter() {
            let t = self.pools[c.pool].cfg.client_idle_timeout_ms;
            // Like Redis's `timeout`, subscribers and blocked clients are exempt.
            if t > 0
                && c.chain.is_empty()
                && c.sub.is_none()
                && !c.blocked
                && c.pending_output() == 0
                && since(now_us, c.last_active) >= crate::clock::ms(t)
            {
                idle.push(k);
            }
        }
        for k in idle {
            if let Some(c) = self.clients.get(k) {
                debug!("c{k}#{} {} closed: idle timeout", c.id, c.peer);
            }
            self.close_client(k);
        }
    }

    // ----- writing ----------------------------------------------------------------------

    /// Put the requests that were slow into the slow log, with what it shows of their client.
    fn log_slow(&mut self) {
        let mut slow = std::mem::take(&mut self.slow_pending);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for d in slow.drain(..) {
            let name = crate::commands::COMMANDS
                .get(d.meta.cmd as usize)
                .map_or("?", |s| s.name);
            let snip = &d.meta.snip[..d.meta.snip_len as usize];
            let mut args: Vec<Vec<u8>> = vec![name.as_bytes().to_vec()];
            if d.meta.argc > 1 {
                args.push(snip.to_vec());
            }
            if d.meta.argc > 2 {
                args.push(format!("... ({} more arguments)", d.meta.argc - 2).into_bytes());
            }
            // The client may be gone already: the entry is kept without its address.
            let client = self.clients.get(d.client.0).filter(|c| c.id == d.client.1);
            let (peer, cname) = client.map_or((String::new(), String::new()), |c| {
                let name = c.name().map(String::from_utf8_lossy).unwrap_or_default();
                (c.peer.to_string(), name.into_owned())
            });
            let backend = match (client, d.meta.backend) {
                (None, _) | (_, crate::chain::NO_BACKEND) => "",
                (Some(c), pos) => {
                    let pool = &self.pools[c.pool];
                    pool.order
                        .get(pos as usize)
                        .map_or("", |&slot| pool.servers[slot].name.as_str())
                }
            };
            self.slowlog
                .maybe_push(unix, d.usec, args, &peer, &cname, backend);
        }
        if self.slow_pending.is_empty() {
            self.slow_pending = slow;
        }
    }

    fn flush_all(&mut self) {
        self.flush_conns();
        self.flush_clients();
    }

    fn flush_conns(&mut self) {
        let conns = std::mem::take(&mut self.dirty_conns);
        for &k in &conns {
            self.flush_conn(k);
        }
        let mut conns = conns;
        conns.clear();
        if self.dirty_conns.is_empty() {
            self.dirty_conns = conns;
        }
    }

    fn flush_clients(&mut self) {
        if !self.slow_pending.is_empty() {
            self.log_slow();
        }
        let clients = std::mem::take(&mut self.dirty_clients);
        for &k in &clients {
            self.flush_client(k);
        }
        let mut clients = clients;
        clients.clear();
        if self.dirty_clients.is_empty() {
            self.dirty_clients = clients;
        }
        let closing = std::mem::take(&mut self.closing);
        for k in closing {
            self.close_client(k);
        }
    }

    fn flush_client(&mut self, k: usize) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        c.dirty = false;
        let written = if c.closing == Closing::AfterInputDiscard {
            // The peer reset the connection: what its held commands answer is dropped, and
            // the bookkeeping below runs as if it had been written.
            c.wbuf.clear();
            c.wpos = 0;
            c.writable = true;
            Ok(0)
        } else if !c.writable {
            return;
        } else {
            c.stream.write_out(&c.wbuf, &mut c.wpos, &mut c.writable)
        };
        match written {
            Ok(n) => {
                self.stats.net_output_bytes += n as u64;
                if n > 0 {
                    // Like Redis's last interaction: a reply written counts (a blocked client's
                    // reply must not be followed at once by an idle-timeout close).
                    c.last_active = self.now_us;
                }
            }
            Err(e) if c.closing.after_input() || c.closing == Closing::No && !c.rbuf.is_empty() => {
                // Gone while commands it sent are still held: they run, replies are dropped.
                debug!(
                    "c{k}#{} {} write error: {e} (held commands still run)",
                    c.id, c.peer
                );
                c.closing = Closing::AfterInputDiscard;
                c.wbuf.clear();
                c.wpos = 0;
                c.writable = true;
                if !self.again.contains(&k) {
                    self.again.push(k);
                }
            }
            Err(e) => {
                debug!("c{k}#{} {} write error: {e}", c.id, c.peer);
                return self.close_client(k);
            }
        }
        if !c.writable {
            // Blocked (maybe on TLS records alone): nothing is done until the socket drains.
            return;
        }
        if c.wpos == c.wbuf.len() {
            c.wpos = 0;
            let mut buf = std::mem::take(&mut c.wbuf);
            buf.clear();
            if c.chain.is_empty() {
                // Idle: return the buffer to the shared pool.
                c.chain.shrink();
                if buf.capacity() <= KEEP_OUTPUT && self.buffers.len() < POOLED_BUFFERS {
                    self.buffers.push(buf);
                }
            } else if buf.capacity() <= KEEP_OUTPUT {
                c.wbuf = buf;
            }
            let (paused, finishing) = (c.paused, c.closing == Closing::AfterReplies);
            self.settle(k, paused, finishing);
        }
    }

    /// Close a client that asked to go once its replies are out.
    fn maybe_finish(&mut self, k: usize) {
        if let Some(c) = self.clients.get_mut(k) {
            if c.closing == Closing::AfterReplies && c.chain.is_empty() && c.pending_output() == 0 {
                c.closing = Closing::Now;
                self.closing.push(k);
            }
        }
    }

    fn close_client(&mut self, k: usize) {
        // A private connection lent to the client is closed with it: a backend keeps a blocked
        // connection blocked (and WATCH state) until the connection goes.
        if let Some(ck) = self.clients.get_mut(k).and_then(|c| c.private.take()) {
            if let Some(conn) = self.conns.get_mut(ck) {
                conn.owner = None;
            }
            self.conn_failed(ck, "closed with its client", Fail::Local);
        }
        self.drop_subscriptions(k);
        let Some(mut c) = self.clients.try_remove(k) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.pools[c.pool].clients = self.pools[c.pool].clients.saturating_sub(1);
        debug!(
            "c{k}#{} {} closed ({} commands, {} replies pending)",
            c.id,
            c.peer,
            c.commands,
            c.chain.len()
        );
        let mut buf = std::mem::take(&mut c.wbuf);
        if buf.capacity() > 0
            && buf.capacity() <= KEEP_OUTPUT
            && self.buffers.len() < POOLED_BUFFERS
        {
            buf.clear();
            self.buffers.push(buf);
        }
    }

    // ----- Redis Cluster pools -------------------------------------------------------------
}

/// Bind every pool and serve until a fatal poller error.
pub fn run(config: Config) -> io::Result<()> {
    let mut p = Proxy::new(config)?;
    p.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of token decodes to what it encoded, including the extremes of each range,
    /// and the offload waker is outside them all.
    #[test]
    fn token_codec_round_trips() {
        let max = usize::MAX >> 2;
        for i in [0, 1, 2, 1000, max - 1, max] {
            for kind in [
                Kind::Listener(i),
                Kind::Client(i),
                Kind::Conn(i),
                Kind::Stats(i),
            ] {
                assert_eq!(Kind::of(kind.token()), Some(kind), "{kind:?}");
            }
        }
        for i in [0, 1, 1 << 20] {
            for kind in [
                Kind::Listener(i),
                Kind::Client(i),
                Kind::Conn(i),
                Kind::Stats(i),
            ] {
                assert_ne!(kind.token(), offload::WAKER, "{kind:?}");
            }
        }
    }
}
