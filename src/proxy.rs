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
//! - Closing is deferred to the end of the tick, so a slab key is never reused within the tick
//!   that freed it; in-flight entries carry the client id, so a reply for a departed client is
//!   read and dropped, never delivered to the slot's next owner.
//! - Reads are drained to WouldBlock under a per-tick budget; a client that used its budget is
//!   served again next tick (the `again` list), because edge-triggered polling will not announce
//!   data that is already waiting.
//! - Backpressure: a client with `max_pending` replies outstanding is not read until half of them
//!   left; a client whose unread output passes `max_output` is disconnected.
//! - No input makes this module panic: errors close the one connection they belong to.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::backend::{
    Conn, ConnState, Pending, ReadBuf, INTERNAL, ORPHAN, PRIVATE_IDLE, REFRESH, SWALLOW, WHOLE,
};
use crate::chain::{Delivered, Done, Meta, Multi, Sink, Slot, NO_CMD};
use crate::client::{Client, Closing, Stream};
use crate::clock::{since, Micros};
use crate::commands::{Merge, Spec, Split};
use crate::config::{Config, Listen};
use crate::pool::Pool;
use crate::resp::{self, Args, ParseError, Reply, ReplyScanner};
use crate::router::{self, Combine, Plan};
use crate::stats::{command_index, SlowLog, Stats};

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
/// Cluster pools: a map found wrong is refreshed at most this often; a good one this often;
/// an unanswered CLUSTER SLOTS is given up after the timeout; a request follows at most
/// this many MOVED/ASK redirections.
const CLUSTER_REFRESH_MIN: Duration = Duration::from_secs(1);
const CLUSTER_REFRESH_EVERY: Duration = Duration::from_secs(10);
const CLUSTER_REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
const CLUSTER_MAX_REDIRECTS: u8 = 5;
/// Slow log defaults (Redis's): entries kept, and the threshold in microseconds.
const SLOWLOG_MAX_LEN: usize = 128;
const SLOWLOG_SLOWER_THAN_USEC: i64 = 10_000;
/// At shutdown, a client with nothing pending is closed after this long without a request.
const SHUTDOWN_QUIET: Duration = Duration::from_millis(250);
/// Longest wait for in-flight requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A backend whose oldest timed-out request is this many timeouts old is closed and reconnected.
const STALL_FACTOR: u32 = 10;

const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/// How a backend connection ended, which decides what happens to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    /// An idle connection closed (e.g. the backend's `timeout`): reconnect on next use.
    Idle,
    /// A connection carrying requests broke: they fail; reconnect on next use.
    Broken,
    /// The backend cannot be reached or refused our handshake: down, with backoff.
    Down,
}

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

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl mio::event::Source for Listener {
    fn register(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l) => l.deregister(r),
        }
    }
}

/// A connection to the stats port: nutcracker's JSON document for a plain connect, or an
/// HTTP GET (`/metrics`: Prometheus text; anything else: the JSON).
struct StatsConn {
    stream: TcpStream,
    accepted: Instant,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    answered: bool,
}

/// How long a stats connection may stay silent before it gets the JSON document (nutcracker's
/// clients just connect and read).
const STATS_WAIT: Duration = Duration::from_millis(100);

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
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
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
            stats_listener: None,
            stats_conns: Slab::new(),
            last_auth_log: None,
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
                    let _ = p.conn_for(pi, si, 0);
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
                let _ = self.reload(false);
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
                            self.client_readable(k, ev.is_read_closed() || ev.is_error());
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
            self.client_readable(k, true);
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

    /// A client was announced readable: read under the budget and serve what arrived.
    /// `closed`: the event says the peer closed (or errored): read to the end even after a
    /// short read, since no further edge will come.
    fn client_readable(&mut self, k: usize, closed: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut budget_used = true;
        for _ in 0..READ_BUDGET {
            let Some(c) = self.clients.get_mut(k) else {
                budget_used = false;
                break;
            };
            if c.blocked && closed && c.closing == Closing::No {
                // Like Redis, a blocked client that hangs up is freed at once; its private
                // connection closes with it so the backend stops blocking for nobody.
                debug!("c{k}#{} {} closed while blocked", c.id, c.peer);
                self.close_client(k);
                budget_used = false;
                break;
            }
            if c.stalled() {
                // Resumed later through `again`, which reads again.
                budget_used = false;
                break;
            }
            let n = match c.stream.read(&mut scratch) {
                Ok(0) => {
                    // Half-closed: answer what was asked, then close.
                    c.closing = Closing::AfterReplies;
                    self.maybe_finish(k);
                    budget_used = false;
                    break;
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => {
                    budget_used = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("c{k}#{} {} read error: {e}", c.id, c.peer);
                    self.close_client(k);
                    budget_used = false;
                    break;
                }
            };
            self.stats.net_input_bytes += n as u64;
            c.last_active = self.now_us;
            if c.rbuf.is_empty() {
                let used = self.serve(k, &scratch[..n]);
                if let Some(c) = self.clients.get_mut(k) {
                    if used < n && c.closing == Closing::No {
                        c.rbuf.extend_from_slice(&scratch[used..n]);
                    }
                }
            } else {
                c.rbuf.extend_from_slice(&scratch[..n]);
                self.serve_buffered(k);
            }
            if n < scratch.len() && !closed {
                // Short read: the socket is drained; edge-triggered polling announces the next
                // bytes (or the peer's close) with a new event.
                budget_used = false;
                break;
            }
        }
        if budget_used && !self.again.contains(&k) {
            self.again.push(k);
        }
        self.scratch = scratch;
    }

    /// Serve again a client whose budget ran out or which was resumed after backpressure.
    fn client_resume(&mut self, k: usize) {
        let Some(c) = self.clients.get(k) else {
            return;
        };
        if c.stalled() {
            return;
        }
        if !c.rbuf.is_empty() {
            self.serve_buffered(k);
        }
        self.client_readable(k, true);
    }

    /// Serve the client's buffered input (`rbuf`).
    fn serve_buffered(&mut self, k: usize) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let buf = std::mem::take(&mut c.rbuf);
        let used = self.serve(k, &buf);
        if let Some(c) = self.clients.get_mut(k) {
            if c.closing == Closing::No {
                let mut buf = buf;
                buf.drain(..used);
                if buf.is_empty() && buf.capacity() > READ_CHUNK {
                    buf = Vec::new();
                }
                c.rbuf = buf;
            }
        }
    }

    /// Parse and execute the complete requests at the start of `data`; returns bytes consumed.
    fn serve(&mut self, k: usize, data: &[u8]) -> usize {
        let mut args = std::mem::take(&mut self.args);
        let mut pos = 0;
        while pos < data.len() {
            let Some(c) = self.clients.get(k) else {
                break;
            };
            if c.stalled() {
                break;
            }
            let limits = self.pools[c.pool].limits;
            match resp::parse_command(&data[pos..], &limits, &mut args) {
                Ok(n) => {
                    let frame = &data[pos..pos + n];
                    pos += n;
                    if !args.is_empty() {
                        self.command(k, frame, &args);
                    }
                }
                Err(ParseError::Incomplete) => break,
                Err(ParseError::Protocol(msg)) => {
                    self.stats.errors += 1;
                    if let Some(c) = self.clients.get_mut(k) {
                        debug!("c{k}#{} {} protocol error: {msg}", c.id, c.peer);
                        let mut e = Vec::with_capacity(msg.len() + 8);
                        resp::write_error(&mut e, format!("ERR {msg}").as_bytes());
                        let meta = Meta::new(NO_CMD, self.now_us);
                        c.chain.reply(&e, &mut c.wbuf, meta, sink!(self, k, c.id));
                        c.closing = Closing::AfterReplies;
                        self.mark_client(k);
                        self.maybe_finish(k);
                    }
                    pos = data.len();
                    break;
                }
            }
        }
        self.args = args;
        pos
    }

    /// Execute one command.
    fn command(&mut self, k: usize, frame: &[u8], args: &Args) {
        self.stats.commands += 1;
        let pool_i = match self.clients.get_mut(k) {
            Some(c) => {
                c.commands += 1;
                c.pool
            }
            None => return,
        };
        let renames = &self.pools[pool_i].renames;
        if !renames.is_empty() {
            let typed = args.get(frame, 0);
            match renames.map(typed) {
                None => {
                    // Renamed away (rename_command OLD NEW, or disabled with ""): unknown.
                    self.stats.record_rejected(None);
                    self.cur = Meta::new(NO_CMD, self.now_us);
                    let e = router::unknown_command(args, frame);
                    return self.reply_err(k, &e);
                }
                Some(orig) if !orig.eq_ignore_ascii_case(typed) => {
                    // Typed the new name: run the original, re-encoded under its real name.
                    let mut rebuilt = Vec::with_capacity(frame.len() + 16);
                    let parts =
                        std::iter::once(orig).chain((1..args.len()).map(|i| args.get(frame, i)));
                    resp::write_command(&mut rebuilt, parts.collect::<Vec<_>>());
                    let mut args2 = Args::default();
                    if resp::parse_command(&rebuilt, &resp::Limits::default(), &mut args2).is_ok() {
                        return self.command_resolved(k, &rebuilt, &args2);
                    }
                }
                Some(_) => {}
            }
        }
        self.command_resolved(k, frame, args)
    }

    /// Execute one command whose name is the table's (after rename_command).
    fn command_resolved(&mut self, k: usize, frame: &[u8], args: &Args) {
        let spec = match router::resolve(args, frame) {
            Ok(s) => s,
            Err(e) => {
                self.stats.record_rejected(None);
                self.cur = Meta::new(NO_CMD, self.now_us);
                return self.reply_err(k, &e);
            }
        };
        let first = if args.len() > 1 {
            args.get(frame, 1)
        } else {
            b""
        };
        let row = command_index(spec).min(u16::MAX as usize) as u16;
        self.cur = if self.config.command_stats {
            Meta::new(row, self.now_us).with_arg(args.len(), first)
        } else {
            Meta::new(NO_CMD, self.now_us)
        };
        self.execute(k, spec, row, frame, args);
        self.cur.cmd = NO_CMD;
    }

    /// Execute one resolved command (`self.cur` describes it).
    /// `row`: the command's row of the table (`command_index`).
    fn execute(&mut self, k: usize, spec: &'static Spec, row: u16, frame: &[u8], args: &Args) {
        // What the checks below need of the client, read in one lookup.
        let (pool_i, authed, level, resp2_subscribed, in_multi) = match self.clients.get_mut(k) {
            Some(c) => {
                c.last_command = row;
                (
                    c.pool,
                    c.authed,
                    c.level,
                    c.sub.is_some() && !c.resp3,
                    c.in_multi(),
                )
            }
            None => return,
        };
        if !authed && !matches!(spec.name, "AUTH" | "HELLO" | "QUIT" | "PING") {
            return self.reject(k, "NOAUTH Authentication required.");
        }
        let policy = self.pools[pool_i].cfg.admin_commands;
        if let Err(e) = crate::auth::permitted(level, spec, policy) {
            return self.reject(k, &e);
        }
        if spec.name.starts_with("CLUSTER ") && self.pools[pool_i].cluster.is_some() {
            // Cluster pools answer the tooling commands: KEYSLOT here, the rest from a node.
            if spec.name == "CLUSTER KEYSLOT" && args.len() == 3 {
                let slot = crate::cluster::key_slot(args.get(frame, 2));
                let mut out = Vec::new();
                resp::write_int(&mut out, slot as i64);
                return self.reply(k, &out);
            }
            let bytes = encode_args(args, frame, 0..args.len());
            return self.forward(k, 0, &bytes);
        }
        if spec.name == "CONFIG SET"
            && args.len() == 4
            && args.get(frame, 2).eq_ignore_ascii_case(b"loglevel")
        {
            // The proxy's own log level (Redis's names or ours), not the backends'.
            let level = match args.get(frame, 3).to_ascii_lowercase().as_slice() {
                b"trace" => Some(log::LevelFilter::Trace),
                b"debug" | b"verbose" => Some(log::LevelFilter::Debug),
                b"info" | b"notice" => Some(log::LevelFilter::Info),
                b"warn" | b"warning" => Some(log::LevelFilter::Warn),
                b"error" => Some(log::LevelFilter::Error),
                _ => None,
            };
            return match level {
                Some(l) => {
                    log::set_max_level(l);
                    info!("log level set to {l}");
                    self.reply(k, b"+OK\r\n")
                }
                None => self.reject(
                    k,
                    "ERR Invalid argument for CONFIG SET 'loglevel': use debug, verbose, notice, warning, trace, info, warn or error",
                ),
            };
        }
        if resp2_subscribed
            && !matches!(
                spec.name,
                "SUBSCRIBE"
                    | "PSUBSCRIBE"
                    | "SSUBSCRIBE"
                    | "UNSUBSCRIBE"
                    | "PUNSUBSCRIBE"
                    | "SUNSUBSCRIBE"
                    | "PING"
                    | "QUIT"
                    | "RESET"
            )
        {
            let msg = format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                spec.name.to_ascii_lowercase().replace(' ', "|")
            );
            return self.reply_err(k, &msg);
        }
        if in_multi
            && !matches!(
                spec.name,
                "EXEC" | "DISCARD" | "MULTI" | "WATCH" | "QUIT" | "RESET"
            )
        {
            self.queue_in_multi(k, spec, frame, args);
            return self.check_pressure(k);
        }
        let pool = &self.pools[pool_i];
        let target = pool.target();
        let plan = router::plan(spec, args, frame, &target, &mut self.keys);
        match plan {
            Plan::Local(spec) => self.local(k, spec, frame, args),
            Plan::Error(e) => self.reject(k, &e),
            Plan::Forward { .. } | Plan::Blocking { .. } => {
                let blocking = matches!(plan, Plan::Blocking { .. });
                let (server, argc, reencode) = plan.one_backend().unwrap_or_default();
                let bytes = if reencode {
                    Some(encode_args(args, frame, 0..argc))
                } else {
                    None
                };
                let bytes = bytes.as_deref().unwrap_or(frame);
                if blocking {
                    self.blocking(k, server, bytes);
                } else if let Some(slot) = self.replica_for(pool_i, spec, frame, args) {
                    self.forward_slot(k, slot, bytes);
                } else {
                    self.forward(k, server, bytes);
                }
            }
            Plan::Split {
                split,
                step,
                groups,
                order,
            } => self.split(k, frame, args, split, step, groups, order),
            Plan::FanOut(merge) => {
                let bytes = if args.is_inline() {
                    Some(encode_args(args, frame, 0..args.len()))
                } else {
                    None
                };
                self.fan_out(k, merge, bytes.as_deref().unwrap_or(frame));
            }
            Plan::Scan { server, cursor } => {
                let mut cur = Vec::with_capacity(20);
                resp::write_usize(&mut cur, cursor as usize);
                let mut req = Vec::with_capacity(frame.len() + 16);
                resp::write_array_len(&mut req, args.len());
                for i in 0..args.len() {
                    if i == 1 {
                        resp::write_bulk(&mut req, &cur);
                    } else {
                        resp::write_bulk(&mut req, args.get(frame, i));
                    }
                }
                let nservers = self.pools[pool_i].len();
                self.send_multi(k, Combine::Scan { server, nservers }, &[(server, req)]);
            }
        }
        self.check_pressure(k);
    }

    /// Stop reading a client with too many replies outstanding.
    fn check_pressure(&mut self, k: usize) {
        if let Some(c) = self.clients.get_mut(k) {
            let max = self.pools[c.pool].cfg.max_pending.max(1);
            if c.chain.len() >= max {
                c.paused = true;
            }
        }
    }

    /// Resume a paused client once its backlog halved.
    fn maybe_resume(&mut self, k: usize) {
        if let Some(c) = self.clients.get_mut(k) {
            if c.paused {
                let cfg = &self.pools[c.pool].cfg;
                let max = cfg.max_pending.max(1);
                if c.chain.len() <= max / 2 && c.pending_output() < cfg.max_output / 2 {
                    c.paused = false;
                    if !self.again.contains(&k) {
                        self.again.push(k);
                    }
                }
            }
        }
    }

    /// Refuse the current command before running it (counted as rejected, not as a call).
    fn reject(&mut self, k: usize, msg: &str) {
        self.stats.record_rejected(Some(self.cur.cmd as usize));
        self.cur.cmd = NO_CMD;
        self.reply_err(k, msg);
    }

    fn reply_err(&mut self, k: usize, msg: &str) {
        self.stats.errors += 1;
        let mut e = Vec::with_capacity(msg.len() + 3);
        reply_error(&mut e, msg);
        self.reply(k, &e);
    }

    /// A complete reply made by the proxy for the command being executed, through the chain.
    fn reply(&mut self, k: usize, bytes: &[u8]) {
        self.reply_meta(k, bytes, self.cur);
    }

    fn reply_meta(&mut self, k: usize, bytes: &[u8], meta: Meta) {
        if let Some(c) = self.clients.get_mut(k) {
            if c.wbuf.capacity() == 0 {
                c.wbuf = self.buffers.pop().unwrap_or_default();
            }
            c.chain
                .reply(bytes, &mut c.wbuf, meta, sink!(self, k, c.id));
            self.mark_client(k);
        }
    }

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

    /// The shared connection to use for `server` (slot) of `pool` with protocol `proto`,
    /// connecting if needed.
    fn conn_for(&mut self, pool_i: usize, server_i: usize, proto: usize) -> Result<usize, String> {
        let srv = &mut self.pools[pool_i].servers[server_i];
        let n = srv.conns[proto].len();
        let slot = if n == 1 {
            0
        } else {
            srv.rr = srv.rr.wrapping_add(1);
            srv.rr % n
        };
        if let Some(k) = srv.conns[proto][slot] {
            return Ok(k);
        }
        let key = self.open_conn(pool_i, server_i, proto, slot, false)?;
        self.pools[pool_i].servers[server_i].conns[proto][slot] = Some(key);
        Ok(key)
    }

    /// Open a connection to a server (non-blocking connect) with its handshake queued.
    /// `private`: lent to one client at a time (not in the server's shared list).
    fn open_conn(
        &mut self,
        pool_i: usize,
        server_i: usize,
        proto: usize,
        slot: usize,
        private: bool,
    ) -> Result<usize, String> {
        let now = self.now;
        let pool = &mut self.pools[pool_i];
        let connect_timeout = Duration::from_millis(pool.cfg.connect_timeout_ms.max(1));
        let srv = &mut pool.servers[server_i];
        if srv.is_down(now) {
            return Err(srv.down_error());
        }
        let addr = srv.addr;
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("connect failed: {e}");
                warn!("b{server_i}({}) {addr} {msg}", srv.name);
                srv.connect_failed(now, &msg);
                return Err(srv.down_error());
            }
        };
        let _ = stream.set_nodelay(true);
        if pool.cfg.tcpkeepalive {
            set_keepalive(&stream);
        }
        let stream = match &pool.tls_client {
            Some(cfg) => {
                let name = pool
                    .cfg
                    .backend_tls_server_name
                    .clone()
                    .unwrap_or_else(|| srv.host.clone());
                match crate::tls::TlsStream::client(stream, cfg.clone(), &name) {
                    Ok(t) => Stream::Tls(Box::new(t)),
                    Err(e) => {
                        let msg = format!("TLS setup failed: {e}");
                        srv.connect_failed(now, &msg);
                        return Err(srv.down_error());
                    }
                }
            }
            None => Stream::Tcp(stream),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Conn {
            stream,
            pool: pool_i,
            server: server_i,
            proto,
            slot,
            state: ConnState::Connecting,
            connect_deadline: now + connect_timeout,
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: ReadBuf::default(),
            scanner: ReplyScanner::default(),
            inflight: Default::default(),
            orphans: 0,
            retiring: false,
            private,
            owner: None,
            pubsub: false,
            reqs: Default::default(),
            track: pool.cfg.cluster,
            writable: false,
            dirty: false,
        };
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            Kind::Conn(key).token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let msg = format!("register failed: {e}");
            srv.connect_failed(now, &msg);
            return Err(srv.down_error());
        }
        // Handshake, pipelined ahead of the first client request: protocol, credentials,
        // database. Replies to these are checked and swallowed (INTERNAL).
        let internal = Pending::new(INTERNAL, 0, 0, WHOLE, false, self.now_us);
        // Credentials: the server line's user=/password=, else the pool's backend_username /
        // backend_password, else nutcracker's redis_auth (password only).
        let server_cfg = pool
            .order
            .iter()
            .position(|&s| s == server_i)
            .and_then(|pos| pool.cfg.servers.get(pos));
        let password = server_cfg
            .and_then(|s| s.password.clone())
            .or_else(|| pool.cfg.backend_password.clone())
            .or_else(|| pool.cfg.redis_auth.clone());
        let username = server_cfg
            .and_then(|s| s.username.clone())
            .or_else(|| pool.cfg.backend_username.clone())
            .unwrap_or_else(|| "default".to_string());
        if proto == 1 {
            match &password {
                Some(pw) => resp::write_command(
                    &mut conn.wbuf,
                    [
                        &b"HELLO"[..],
                        b"3",
                        b"AUTH",
                        username.as_bytes(),
                        pw.as_bytes(),
                    ],
                ),
                None => conn.wbuf.extend_from_slice(HELLO3),
            }
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        } else if let Some(pw) = &password {
            if username == "default" {
                resp::write_command(&mut conn.wbuf, [&b"AUTH"[..], pw.as_bytes()]);
            } else {
                resp::write_command(
                    &mut conn.wbuf,
                    [&b"AUTH"[..], username.as_bytes(), pw.as_bytes()],
                );
            }
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        }
        if srv.readonly {
            conn.wbuf.extend_from_slice(b"*1\r\n$8\r\nREADONLY\r\n");
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        }
        if pool.cfg.redis_db != 0 {
            let db = pool.cfg.redis_db.to_string();
            resp::write_command(&mut conn.wbuf, [&b"SELECT"[..], db.as_bytes()]);
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        }
        srv.stats.connections += 1;
        if private {
            srv.private_open += 1;
        }
        debug!(
            "b{server_i}({}) connecting to {addr} (resp{}{})",
            srv.name,
            proto + 2,
            if private { ", private" } else { "" }
        );
        entry.insert(conn);
        Ok(key)
    }

    /// Queue `bytes` (one complete request) on a connection of the server at config position
    /// `pos`, for chain slot `seq` (part `part`) of client `k`. Err: the server cannot take it
    /// (message for the client).
    fn send(
        &mut self,
        k: usize,
        pos: usize,
        bytes: &[u8],
        seq: u64,
        part: u32,
    ) -> Result<(), String> {
        let Some(c) = self.clients.get(k) else {
            return Ok(());
        };
        let (pool_i, proto, id) = (c.pool, c.resp3 as usize, c.id);
        // A client holding a private connection (WATCH) sends everything for that backend on it.
        let ck = match c.private {
            Some(ck)
                if self
                    .conns
                    .get(ck)
                    .is_some_and(|cn| self.pools[pool_i].order.get(pos) == Some(&cn.server)) =>
            {
                ck
            }
            _ => {
                let Some(&server) = self.pools[pool_i].order.get(pos) else {
                    return Err("ERR no such backend (the configuration changed)".into());
                };
                self.conn_for(pool_i, server, proto)?
            }
        };
        let p = Pending::new(k, id, seq, part, false, self.now_us);
        self.push_request(ck, p, bytes);
        Ok(())
    }

    /// Queue `bytes` on connection `ck` for client `k`'s slot `seq` (or SWALLOW its reply when
    /// `k` is SWALLOW).
    fn send_on(&mut self, ck: usize, k: usize, bytes: &[u8], seq: u64, part: u32, blocking: bool) {
        let id = self.clients.get(k).map_or(0, |c| c.id);
        let p = Pending::new(k, id, seq, part, blocking, self.now_us);
        self.push_request(ck, p, bytes);
    }

    /// Queue one request and its in-flight entry on connection `ck`.
    fn push_request(&mut self, ck: usize, p: Pending, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(ck) else {
            return;
        };
        conn.wbuf.extend_from_slice(bytes);
        conn.inflight.push_back(p);
        if conn.track {
            conn.reqs.push_back(bytes.into());
        }
        let st = &mut self.pools[conn.pool].servers[conn.server].stats;
        st.requests += 1;
        st.request_bytes += bytes.len() as u64;
        self.mark_conn(ck);
    }

    // ----- private connections, blocking commands, transactions ---------------------------

    /// Lend client `k` a private connection to the server at config position `pos` (or return
    /// the one it holds, which must be to that server).
    fn acquire_private(&mut self, k: usize, pos: usize) -> Result<usize, String> {
        let Some(c) = self.clients.get(k) else {
            return Err("ERR client gone".into());
        };
        let (pool_i, proto, id, held) = (c.pool, c.resp3 as usize, c.id, c.private);
        let Some(&slot) = self.pools[pool_i].order.get(pos) else {
            return Err("ERR no such backend (the configuration changed)".into());
        };
        if let Some(ck) = held {
            return match self.conns.get(ck) {
                Some(cn) if cn.server == slot => Ok(ck),
                _ => Err("PROXYERROR keys are on different backends".into()),
            };
        }
        let cap = self.pools[pool_i].cfg.private_connections;
        let srv = &mut self.pools[pool_i].servers[slot];
        let mut found = None;
        while let Some(ck) = srv.idle_private[proto].pop() {
            if self.conns.get(ck).is_some_and(|cn| cn.owner.is_none()) {
                found = Some(ck);
                break;
            }
        }
        let ck = match found {
            Some(ck) => ck,
            None => {
                if srv.private_open >= cap {
                    return Err(format!(
                        "ERR too many private connections to backend {} (private_connections {cap})",
                        srv.name
                    ));
                }
                self.open_conn(pool_i, slot, proto, 0, true)?
            }
        };
        if let Some(cn) = self.conns.get_mut(ck) {
            cn.owner = Some((k, id));
        }
        if let Some(c) = self.clients.get_mut(k) {
            c.private = Some(ck);
        }
        Ok(ck)
    }

    /// Client `k` gives its private connection back (to the idle pool, or closed when the pool
    /// is full). Requests still in flight on it keep their own client references.
    fn release_private(&mut self, k: usize) {
        let Some(ck) = self.clients.get_mut(k).and_then(|c| c.private.take()) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(ck) else {
            return;
        };
        conn.owner = None;
        let srv = &mut self.pools[conn.pool].servers[conn.server];
        if !srv.retired && srv.idle_private[conn.proto].len() < PRIVATE_IDLE {
            srv.idle_private[conn.proto].push(ck);
        } else {
            self.retire_conn(ck);
        }
    }

    /// Run a blocking command on a private connection; the client is not read until it answers.
    fn blocking(&mut self, k: usize, pos: usize, bytes: &[u8]) {
        self.cur.backend = pos.min(u16::MAX as usize - 1) as u16;
        let seq = match self.clients.get_mut(k) {
            Some(c) => c.chain.push(Slot::Waiting, self.cur),
            None => return,
        };
        match self.acquire_private(k, pos) {
            Ok(ck) => {
                self.send_on(ck, k, bytes, seq, WHOLE, true);
                if let Some(c) = self.clients.get_mut(k) {
                    c.blocked = true;
                }
            }
            Err(e) => self.fail_slot(k, seq, WHOLE, &e),
        }
    }

    /// The blocking command of client `k` (id) was answered (or failed): lift the block.
    fn unblock(&mut self, k: usize, id: u64) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if c.id != id || !c.blocked {
            return;
        }
        c.blocked = false;
        let keep = c.watching();
        if !keep {
            self.release_private(k);
        }
        if !self.again.contains(&k) {
            self.again.push(k);
        }
    }

    /// A private connection for client `k`'s subscriptions on the backend at `pos`.
    fn pubsub_conn(&mut self, k: usize, pos: usize) -> Result<usize, String> {
        if let Some(ck) = self
            .clients
            .get(k)
            .and_then(|c| c.sub.as_ref())
            .and_then(|s| s.conn_at(pos))
        {
            return Ok(ck);
        }
        // Borrow through the same pool as blocking commands, without disturbing `private`.
        let held = self.clients.get_mut(k).and_then(|c| c.private.take());
        let got = self.acquire_private(k, pos);
        if let Some(c) = self.clients.get_mut(k) {
            c.private = held;
        }
        let ck = got?;
        if let Some(conn) = self.conns.get_mut(ck) {
            conn.pubsub = true;
        }
        if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut()) {
            sub.conns.push((pos, ck));
        }
        Ok(ck)
    }

    /// (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE. Channels live on the backend their name hashes
    /// to; patterns on every backend. Each channel or pattern is one part of one chain slot, so
    /// confirmations come back in request order; a pattern's confirmation is taken from
    /// backend 0 and the others' are swallowed.
    fn pubsub_cmd(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let pool_i = c.pool;
        let name = spec.name;
        let pattern = name.starts_with('P');
        let unsub = name.contains("UNSUB");
        let mut names: Vec<Vec<u8>> = (1..args.len())
            .map(|i| args.get(frame, i).to_vec())
            .collect();
        if unsub && names.is_empty() {
            if let Some(sub) = c.sub.as_ref() {
                let set = match name {
                    "UNSUBSCRIBE" => &sub.channels,
                    "PUNSUBSCRIBE" => &sub.patterns,
                    _ => &sub.shard,
                };
                names = set.iter().cloned().collect();
                names.sort();
            }
            if names.is_empty() {
                // Nothing to leave: Redis's one confirmation with a nil name.
                let mut out = Vec::new();
                let kind = name.to_ascii_lowercase();
                write_push_len(&mut out, 3, c.resp3);
                resp::write_bulk(&mut out, kind.as_bytes());
                resp::write_nil(&mut out, c.resp3);
                let count = c
                    .sub
                    .as_ref()
                    .map_or(0, |s| s.channels.len() + s.patterns.len());
                resp::write_int(&mut out, count as i64);
                self.reply(k, &out);
                self.maybe_end_sub(k);
                return;
            }
        }
        if !unsub {
            c.sub.get_or_insert_with(Default::default);
        }
        let nparts = names.len();
        let seq = c.chain.push(
            Slot::Multi(Box::new(Multi::new(nparts, Combine::Concat))),
            self.cur,
        );
        if let Some(sub) = c.sub.as_mut() {
            sub.pending += nparts;
            // The counts the confirmations will report, in request order.
            for (part, ch) in names.iter().enumerate() {
                let set = match name {
                    "SUBSCRIBE" | "UNSUBSCRIBE" => &mut sub.channels,
                    "PSUBSCRIBE" | "PUNSUBSCRIBE" => &mut sub.patterns,
                    _ => &mut sub.shard,
                };
                if unsub {
                    set.remove(ch);
                } else {
                    set.insert(ch.clone());
                }
                let count = if matches!(name, "SSUBSCRIBE" | "SUNSUBSCRIBE") {
                    sub.shard.len()
                } else {
                    sub.channels.len() + sub.patterns.len()
                };
                sub.expect.insert((seq, part as u32), count);
            }
        }
        let npos = self.pools[pool_i].len();
        for (part, ch) in names.iter().enumerate() {
            let req = {
                let mut r = Vec::with_capacity(ch.len() + 32);
                resp::write_command(&mut r, [name.as_bytes(), ch.as_slice()]);
                r
            };
            let part = part as u32;
            if pattern {
                for pos in 0..npos {
                    let ck = if unsub {
                        self.clients
                            .get(k)
                            .and_then(|c| c.sub.as_ref())
                            .and_then(|s| s.conn_at(pos))
                            .ok_or_else(String::new)
                    } else {
                        self.pubsub_conn(k, pos)
                    };
                    match (ck, pos) {
                        (Ok(ck), 0) => self.send_on(ck, k, &req, seq, part, false),
                        (Ok(ck), _) => self.send_on(ck, SWALLOW, &req, 0, WHOLE, false),
                        (Err(_), 0) if unsub => self.local_confirm(k, seq, part, name, ch),
                        (Err(e), 0) => self.fail_sub_part(k, seq, part, &e, name, ch),
                        (Err(e), _) => {
                            if !e.is_empty() {
                                warn!("c{k} pattern subscription on backend {pos} failed: {e}");
                            }
                        }
                    }
                }
            } else {
                let pool = &self.pools[pool_i];
                let pos = pool.ring.pick(crate::ring::hash_tag(ch, pool.cfg.hash_tag));
                let Some(pos) = pos else {
                    self.fail_sub_part(
                        k,
                        seq,
                        part,
                        "ERR no backend available for this channel",
                        name,
                        ch,
                    );
                    continue;
                };
                let ck = if unsub {
                    self.clients
                        .get(k)
                        .and_then(|c| c.sub.as_ref())
                        .and_then(|s| s.conn_at(pos))
                        .ok_or_else(String::new)
                } else {
                    self.pubsub_conn(k, pos)
                };
                match ck {
                    Ok(ck) => self.send_on(ck, k, &req, seq, part, false),
                    Err(_) if unsub => self.local_confirm(k, seq, part, name, ch),
                    Err(e) => self.fail_sub_part(k, seq, part, &e, name, ch),
                }
            }
        }
    }

    /// A (un)subscription that could not be sent: its error in place of the confirmation, and
    /// a subscription that did not happen leaves the client's set.
    fn fail_sub_part(&mut self, k: usize, seq: u64, part: u32, msg: &str, name: &str, ch: &[u8]) {
        if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut()) {
            sub.pending = sub.pending.saturating_sub(1);
            sub.expect.remove(&(seq, part));
            match name {
                "SUBSCRIBE" => {
                    sub.channels.remove(ch);
                }
                "PSUBSCRIBE" => {
                    sub.patterns.remove(ch);
                }
                "SSUBSCRIBE" => {
                    sub.shard.remove(ch);
                }
                _ => {}
            }
        }
        self.fail_slot(k, seq, part, msg);
        self.maybe_end_sub(k);
    }

    /// Confirm an unsubscribe the backends need not hear about (not subscribed there).
    fn local_confirm(&mut self, k: usize, seq: u64, part: u32, name: &str, ch: &[u8]) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let resp3 = c.resp3;
        let mut out = Vec::new();
        write_push_len(&mut out, 3, resp3);
        resp::write_bulk(&mut out, name.to_ascii_lowercase().as_bytes());
        resp::write_bulk(&mut out, ch);
        let mut count = 0;
        if let Some(sub) = c.sub.as_mut() {
            sub.pending = sub.pending.saturating_sub(1);
            count = sub.expect.remove(&(seq, part)).unwrap_or(0);
        }
        resp::write_int(&mut out, count as i64);
        self.deliver_to(k, None, seq, part, &out);
        self.maybe_end_sub(k);
    }

    /// A (un)subscribe confirmation from a backend: track the client's subscriptions and
    /// answer with its total count (a backend only knows its own share).
    fn confirm(&mut self, p: Pending, reply: &[u8]) {
        let Some(c) = self
            .clients
            .get_mut(p.client)
            .filter(|c| c.id == p.client_id)
        else {
            return;
        };
        let resp3 = c.resp3;
        let mut out = Vec::new();
        if let (Some(sub), Ok(Some((Reply::Array(items) | Reply::Push(items), _)))) =
            (c.sub.as_mut(), resp::parse_reply(reply))
        {
            sub.pending = sub.pending.saturating_sub(1);
            let expected = sub.expect.remove(&(p.seq, p.part));
            if let (Some(Reply::Bulk(kind)), Some(Reply::Bulk(ch)), Some(count)) =
                (items.first(), items.get(1), expected)
            {
                write_push_len(&mut out, 3, resp3);
                resp::write_bulk(&mut out, kind);
                resp::write_bulk(&mut out, ch);
                resp::write_int(&mut out, count as i64);
            }
        }
        if out.is_empty() {
            out.extend_from_slice(reply);
        }
        self.deliver_to(p.client, Some(p.client_id), p.seq, p.part, &out);
        self.maybe_end_sub(p.client);
    }

    /// A message for a subscriber: through its chain, after whatever it is waiting for.
    /// Only messages of channels/patterns the client is still subscribed to are delivered: the
    /// subscription sets change when an (un)subscribe is read, so a message a backend sent
    /// before processing an UNSUBSCRIBE never reaches a client that has left subscribe mode.
    fn push_to(&mut self, k: usize, id: u64, msg: &[u8]) {
        let Some(sub) = self
            .clients
            .get(k)
            .filter(|c| c.id == id)
            .and_then(|c| c.sub.as_ref())
        else {
            return;
        };
        let wanted = match resp::parse_reply(msg) {
            Ok(Some((Reply::Array(items) | Reply::Push(items), _))) => {
                match (items.first(), items.get(1)) {
                    (Some(Reply::Bulk(b"message")), Some(Reply::Bulk(ch))) => {
                        sub.channels.contains(*ch)
                    }
                    (Some(Reply::Bulk(b"pmessage")), Some(Reply::Bulk(pat))) => {
                        sub.patterns.contains(*pat)
                    }
                    (Some(Reply::Bulk(b"smessage")), Some(Reply::Bulk(ch))) => {
                        sub.shard.contains(*ch)
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if wanted {
            // Not a command's reply: no command stats for it.
            self.reply_meta(k, msg, Meta::new(NO_CMD, self.now_us));
        }
    }

    /// Leave subscribe mode when nothing is subscribed or pending: give the connections back.
    fn maybe_end_sub(&mut self, k: usize) {
        let done = self
            .clients
            .get(k)
            .and_then(|c| c.sub.as_ref())
            .is_some_and(|s| s.is_empty() && s.pending == 0);
        if !done {
            return;
        }
        let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.take()) else {
            return;
        };
        for (_, ck) in sub.conns {
            // Not pooled: a backend may still be sending messages published before it processed
            // the last unsubscribe. The connection stays in pub/sub mode (messages dropped) and
            // closes once its remaining confirmations are in.
            if let Some(conn) = self.conns.get_mut(ck) {
                conn.owner = None;
            }
            self.retire_conn(ck);
        }
    }

    /// Close every subscription connection of client `k` (disconnect, RESET).
    fn drop_subscriptions(&mut self, k: usize) {
        let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.take()) else {
            return;
        };
        for (_, ck) in sub.conns {
            if let Some(conn) = self.conns.get_mut(ck) {
                conn.owner = None;
            }
            self.conn_failed(ck, "subscriber gone", Fail::Idle);
        }
    }

    /// A command received between MULTI and EXEC: check it, queue it, answer +QUEUED.
    fn queue_in_multi(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let Some(pool_i) = self.clients.get(k).map(|c| c.pool) else {
            return;
        };
        let pool = &self.pools[pool_i];
        let target = pool.target();
        // Keyless commands float: they run wherever the transaction's keys are.
        let (argc, hinted) = router::hash_hint(spec, args, frame);
        let keyless = !hinted
            && (spec.class == crate::commands::Class::AnyBackend
                || spec.class == crate::commands::Class::Local
                || crate::commands::key_positions(
                    spec,
                    argc,
                    &|i| args.get(frame, i),
                    &mut self.keys,
                )
                .is_ok_and(|()| self.keys.is_empty()));
        let plan = router::plan(spec, args, frame, &target, &mut self.keys);
        let spread = self.pools[pool_i].target().spread_error();
        let (server, argc, reencode) = match (plan.one_backend(), plan) {
            (Some(one), _) => one,
            (None, Plan::Local(s)) if matches!(s.name, "PING" | "ECHO") => {
                (0, args.len(), args.is_inline())
            }
            (None, Plan::Error(e)) => return self.multi_error(k, &e),
            (None, Plan::Split { .. }) => return self.multi_error(k, &spread),
            _ => {
                let msg = format!(
                    "ERR {} inside MULTI is not supported by rustproxy",
                    spec.name
                );
                return self.multi_error(k, &msg);
            }
        };
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let Some(txn) = c.txn.as_mut() else {
            return;
        };
        if !keyless {
            match txn.server {
                None => txn.server = Some(server),
                Some(s) if s != server => return self.multi_error(k, &spread),
                _ => {}
            }
        }
        if reencode {
            let bytes = encode_args(args, frame, 0..argc);
            txn.queued.extend_from_slice(&bytes);
        } else {
            txn.queued.extend_from_slice(frame);
        }
        txn.count += 1;
        self.reply(k, b"+QUEUED\r\n");
    }

    /// A command that cannot join the transaction: its error now, EXECABORT at EXEC.
    fn multi_error(&mut self, k: usize, msg: &str) {
        if let Some(t) = self.clients.get_mut(k).and_then(|c| c.txn.as_mut()) {
            t.dirty = true;
        }
        self.reply_err(k, msg);
    }

    /// End WATCH (if any) and forget the transaction; the private connection goes back.
    fn end_txn(&mut self, k: usize, send_unwatch: bool) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let watching = c.watching();
        let ck = c.private;
        c.txn = None;
        if watching {
            if let (true, Some(ck)) = (send_unwatch, ck) {
                self.send_on(ck, SWALLOW, b"*1\r\n$7\r\nUNWATCH\r\n", 0, WHOLE, false);
            }
            if !self.clients.get(k).is_some_and(|c| c.blocked) {
                self.release_private(k);
            }
        }
    }

    fn txn_cmd(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let in_multi = c.in_multi();
        match spec.name {
            "MULTI" => {
                if in_multi {
                    return self.reply_err(k, "ERR MULTI calls can not be nested");
                }
                c.txn.get_or_insert_with(Default::default).in_multi = true;
                self.reply(k, b"+OK\r\n");
            }
            "DISCARD" => {
                if !in_multi {
                    return self.reply_err(k, "ERR DISCARD without MULTI");
                }
                self.end_txn(k, true);
                self.reply(k, b"+OK\r\n");
            }
            "EXEC" => {
                if !in_multi {
                    return self.reply_err(k, "ERR EXEC without MULTI");
                }
                let Some(txn) = c.txn.take() else {
                    return;
                };
                if txn.dirty {
                    c.txn = Some(txn);
                    self.end_txn(k, true);
                    return self.reply_err(
                        k,
                        "EXECABORT Transaction discarded because of previous errors.",
                    );
                }
                let watching = txn.watching;
                let pos = txn.server.unwrap_or(0);
                let seq = c.chain.push(Slot::Waiting, self.cur);
                let mut block = Vec::with_capacity(txn.queued.len() + 32);
                block.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
                block.extend_from_slice(&txn.queued);
                // Sent as one block: a backend runs MULTI...EXEC atomically, and nothing else
                // can land inside the block even on a shared connection.
                let ck = if watching {
                    c.private
                        .ok_or_else(|| "ERR watch connection lost".to_string())
                } else {
                    let (pool_i, proto) = (c.pool, c.resp3 as usize);
                    match self.pools[pool_i].order.get(pos).copied() {
                        Some(slot) => self.conn_for(pool_i, slot, proto),
                        None => Err("ERR no such backend (the configuration changed)".into()),
                    }
                };
                match ck {
                    Ok(ck) => {
                        self.send_on(ck, SWALLOW, &block, 0, WHOLE, false);
                        for _ in 0..txn.count {
                            // One swallowed +QUEUED per command; the bytes went with MULTI.
                            self.send_on(ck, SWALLOW, b"", 0, WHOLE, false);
                        }
                        self.send_on(ck, k, b"*1\r\n$4\r\nEXEC\r\n", seq, WHOLE, false);
                    }
                    Err(e) => self.fail_slot(k, seq, WHOLE, &e),
                }
                if let Some(c) = self.clients.get_mut(k) {
                    c.txn = None;
                }
                if watching {
                    self.release_private(k);
                }
            }
            "WATCH" => {
                if in_multi {
                    return self.reply_err(k, "ERR WATCH inside MULTI is not allowed");
                }
                let pool_i = c.pool;
                let pool = &self.pools[pool_i];
                let target = pool.target();
                let mut pos = None;
                for i in 1..args.len() {
                    let Some(s) = target.pick(args.get(frame, i)) else {
                        return self.reply_err(k, "ERR no backend available for this key");
                    };
                    if pos.is_some_and(|p| p != s) {
                        return self.reply_err(k, "PROXYERROR keys are on different backends");
                    }
                    pos = Some(s);
                }
                let pos = pos.unwrap_or(0);
                let seq = match self.clients.get_mut(k) {
                    Some(c) => c.chain.push(Slot::Waiting, self.cur),
                    None => return,
                };
                match self.acquire_private(k, pos) {
                    Ok(ck) => {
                        let bytes = encode_args(args, frame, 0..args.len());
                        self.send_on(ck, k, &bytes, seq, WHOLE, false);
                        if let Some(c) = self.clients.get_mut(k) {
                            let t = c.txn.get_or_insert_with(Default::default);
                            t.watching = true;
                            t.server = Some(pos);
                        }
                    }
                    Err(e) => self.fail_slot(k, seq, WHOLE, &e),
                }
            }
            "UNWATCH" => {
                if c.watching() {
                    let seq = c.chain.push(Slot::Waiting, self.cur);
                    if let Some(ck) = c.private {
                        self.send_on(ck, k, b"*1\r\n$7\r\nUNWATCH\r\n", seq, WHOLE, false);
                    }
                    self.end_txn(k, false);
                } else {
                    self.reply(k, b"+OK\r\n");
                }
            }
            _ => {}
        }
    }

    /// Forward one request to one server; its reply fills one chain slot.
    fn forward(&mut self, k: usize, server: usize, bytes: &[u8]) {
        self.cur.backend = server.min(u16::MAX as usize - 1) as u16;
        let seq = match self.clients.get_mut(k) {
            Some(c) => c.chain.push(Slot::Waiting, self.cur),
            None => return,
        };
        if let Err(e) = self.send(k, server, bytes, seq, WHOLE) {
            self.fail_slot(k, seq, WHOLE, &e);
        }
    }

    /// Cluster pools with `read_from`: the replica (server slot) that should serve this
    /// read-only keyed command, if any.
    fn replica_for(
        &mut self,
        pool_i: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
    ) -> Option<usize> {
        let pool = &self.pools[pool_i];
        if pool.cluster.is_none()
            || pool.cfg.read_from == crate::config::ReadFrom::Master
            || spec.class != crate::commands::Class::Keyed
            || crate::auth::is_write(spec)
        {
            return None;
        }
        let mut keys = std::mem::take(&mut self.keys);
        let first =
            crate::commands::key_positions(spec, args.len(), &|i| args.get(frame, i), &mut keys)
                .ok()
                .and_then(|()| keys.first().copied());
        self.keys = keys;
        let slot = crate::cluster::key_slot(args.get(frame, first?));
        self.pools[pool_i].read_slot(slot, self.now)
    }

    /// Forward one request to a server by slot (a cluster replica); its reply fills one slot.
    fn forward_slot(&mut self, k: usize, server_slot: usize, bytes: &[u8]) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let (pool_i, proto) = (c.pool, c.resp3 as usize);
        let seq = c.chain.push(Slot::Waiting, self.cur);
        match self.conn_for(pool_i, server_slot, proto) {
            Ok(ck) => self.send_on(ck, k, bytes, seq, WHOLE, false),
            Err(e) => self.fail_slot(k, seq, WHOLE, &e),
        }
    }

    /// Send one sub-request per entry of `reqs` (server, bytes) into one multi slot.
    /// Push client `k`'s chain slot for a request sent in `nparts` parts; None: no such client.
    fn push_multi(&mut self, k: usize, nparts: usize, combine: Combine) -> Option<u64> {
        let c = self.clients.get_mut(k)?;
        Some(
            c.chain
                .push(Slot::Multi(Box::new(Multi::new(nparts, combine))), self.cur),
        )
    }

    fn send_multi(&mut self, k: usize, combine: Combine, reqs: &[(usize, Vec<u8>)]) {
        let Some(seq) = self.push_multi(k, reqs.len(), combine) else {
            return;
        };
        for (part, (server, bytes)) in reqs.iter().enumerate() {
            if let Err(e) = self.send(k, *server, bytes, seq, part as u32) {
                self.fail_slot(k, seq, part as u32, &e);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn split(
        &mut self,
        k: usize,
        frame: &[u8],
        args: &Args,
        split: Split,
        step: usize,
        groups: Vec<(usize, Vec<u32>)>,
        order: Vec<(u32, u32)>,
    ) {
        let name = args.get(frame, 0);
        let partial = self
            .clients
            .get(k)
            .is_some_and(|c| self.pools[c.pool].cfg.split_partial);
        let combine = match split {
            Split::Mget => Combine::Mget { order, partial },
            Split::Mset => Combine::Mset,
            Split::SumInt => Combine::SumInt { partial },
        };
        let Some(seq) = self.push_multi(k, groups.len(), combine) else {
            return;
        };
        // Each sub-request is built in one reused buffer, then copied to its connection.
        let mut req = std::mem::take(&mut self.subreq);
        for (part, (server, firsts)) in groups.iter().enumerate() {
            req.clear();
            resp::write_array_len(&mut req, 1 + firsts.len() * step);
            resp::write_bulk(&mut req, name);
            for &f in firsts {
                for j in 0..step {
                    resp::write_bulk(&mut req, args.get(frame, f as usize + j));
                }
            }
            if let Err(e) = self.send(k, *server, &req, seq, part as u32) {
                self.fail_slot(k, seq, part as u32, &e);
            }
        }
        if req.capacity() <= KEEP_OUTPUT {
            req.clear();
            self.subreq = req;
        }
    }

    fn fan_out(&mut self, k: usize, merge: Merge, bytes: &[u8]) {
        let Some(c) = self.clients.get(k) else {
            return;
        };
        let pool = &self.pools[c.pool];
        let reqs: Vec<(usize, Vec<u8>)> = (0..pool.len()).map(|s| (s, bytes.to_vec())).collect();
        let combine = Combine::Merge {
            merge,
            names: pool.names.clone(),
        };
        self.send_multi(k, combine, &reqs);
    }

    /// Answer a slot (or one part of it) with a proxy-made error.
    fn fail_slot(&mut self, k: usize, seq: u64, part: u32, msg: &str) {
        self.stats.errors += 1;
        let mut e = Vec::with_capacity(msg.len() + 3);
        reply_error(&mut e, msg);
        self.deliver_to(k, None, seq, part, &e);
    }

    /// Hand a reply to client `k`'s chain. `id`: when given, the client must still be that one.
    fn deliver_to(&mut self, k: usize, id: Option<u64>, seq: u64, part: u32, reply: &[u8]) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if id.is_some_and(|id| id != c.id) {
            return;
        }
        if c.wbuf.capacity() == 0 {
            c.wbuf = self.buffers.pop().unwrap_or_default();
        }
        let d = if part == WHOLE {
            c.chain
                .deliver(seq, reply, &mut c.wbuf, sink!(self, k, c.id))
        } else {
            c.chain.deliver_part(
                seq,
                part as usize,
                reply,
                c.resp3,
                &mut c.wbuf,
                sink!(self, k, c.id),
            )
        };
        if d == Delivered::Written {
            let over = c.pending_output() > self.pools[c.pool].cfg.max_output;
            if over {
                warn!(
                    "c{k}#{} {} closed: output buffer over max_output ({} bytes unread)",
                    c.id,
                    c.peer,
                    c.pending_output()
                );
                c.closing = Closing::Now;
                self.closing.push(k);
                return;
            }
            if !c.dirty {
                c.dirty = true;
                self.dirty_clients.push(k);
            }
            let (paused, finishing) = (c.paused, c.closing == Closing::AfterReplies);
            self.settle(k, paused, finishing);
        }
    }

    /// After output moved: resume a paused client whose backlog shrank, close one that asked to
    /// go once everything is out. The flags are the client's, read by the caller (no lookup
    /// when neither applies, the common case).
    #[inline]
    fn settle(&mut self, k: usize, paused: bool, finishing: bool) {
        if paused {
            self.maybe_resume(k);
        }
        if finishing {
            self.maybe_finish(k);
        }
    }

    // ----- backend events ---------------------------------------------------------------

    /// `closed`: the event says the peer closed (or errored): read to the end even after a
    /// short read, since no further edge will come.
    fn conn_event(&mut self, k: usize, readable: bool, writable: bool, closed: bool) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if writable {
            conn.writable = true;
            if conn.state == ConnState::Connecting {
                let Some(tcp) = conn.stream.tcp() else {
                    return;
                };
                match tcp.take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => {
                        return self.conn_failed(k, &format!("connect failed: {e}"), Fail::Down);
                    }
                }
                match tcp.peer_addr() {
                    Ok(_) => {
                        conn.state = ConnState::Up;
                        // With a handshake queued, the server counts as up once it answers.
                        let handshake = conn.inflight.front().is_some_and(|p| p.client == INTERNAL);
                        if !handshake {
                            self.pools[conn.pool].servers[conn.server].connected(conn.server);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => {
                        return self.conn_failed(k, &format!("connect failed: {e}"), Fail::Down);
                    }
                }
            }
            self.mark_conn(k);
        }
        if readable {
            self.conn_readable(k, closed);
        }
    }

    fn conn_readable(&mut self, k: usize, closed: bool) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            if conn.state == ConnState::Connecting {
                return;
            }
            let n = match conn.rbuf.read_from(&mut conn.stream, 16 * 1024) {
                Ok(0) => {
                    let how = if conn.inflight.is_empty() {
                        Fail::Idle
                    } else {
                        Fail::Broken
                    };
                    return self.conn_failed(k, "connection closed by the backend", how);
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.conn_failed(k, &format!("read error: {e}"), Fail::Broken),
            };
            let short = n < 16 * 1024;
            if let Err((e, how)) = self.conn_replies(k) {
                return self.conn_failed(k, &e, how);
            }
            if short && !closed {
                // Edge-triggered: whatever arrives after this read (bytes or the peer's close)
                // announces itself with a new event.
                return;
            }
        }
        // Budget used with data possibly still waiting: serve it next tick.
        if !self.again_conns.contains(&k) {
            self.again_conns.push(k);
        }
    }

    /// Dispatch every complete reply in the connection's buffer.
    fn conn_replies(&mut self, k: usize) -> Result<(), (String, Fail)> {
        let Some(conn) = self.conns.get_mut(k) else {
            return Ok(());
        };
        // Taken out so replies can be handed to clients while borrowing it.
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut result = Ok(());
        loop {
            let data = rbuf.filled();
            if data.is_empty() {
                break;
            }
            let Some(conn) = self.conns.get_mut(k) else {
                break;
            };
            let n = match conn.scanner.scan(data) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    result = Err((format!("protocol error from backend: {e}"), Fail::Broken));
                    break;
                }
            };
            if conn.pubsub {
                if is_message(&data[..n]) {
                    // A published message: out of band, to the subscriber (if it is still
                    // subscribed), in arrival order; never a reply to a request.
                    let owner = conn.owner;
                    let msg = data[..n].to_vec();
                    rbuf.consume(n);
                    if let Some((owner, id)) = owner {
                        self.push_to(owner, id, &msg);
                    }
                    continue;
                }
            } else if data[0] == b'>' {
                // RESP3 push on a shared connection: no request of ours asked for it.
                rbuf.consume(n);
                continue;
            }
            let Some(p) = conn.inflight.pop_front() else {
                result = Err(("reply to no request".to_string(), Fail::Broken));
                break;
            };
            let req = if conn.track {
                conn.reqs.pop_front()
            } else {
                None
            };
            let orphan = conn.orphans > 0;
            if orphan {
                conn.orphans -= 1;
            }
            let srv = &mut self.pools[conn.pool].servers[conn.server];
            srv.stats.replies += 1;
            srv.stats.response_bytes += n as u64;
            if p.client != INTERNAL && p.client != SWALLOW && !p.blocking {
                let usec = since(self.now_us, p.sent);
                srv.stats.latency.record(usec);
            }
            srv.failure_count = 0;
            let reply = &data[..n];
            if p.client == REFRESH {
                let (pool_i, host) = (
                    conn.pool,
                    self.pools[conn.pool].servers[conn.server].host.clone(),
                );
                let reply = reply.to_vec();
                rbuf.consume(n);
                self.cluster_slots_reply(pool_i, &host, &reply);
                continue;
            }
            if let Some(req) = req.filter(|_| {
                // A private connection's request (blocking, WATCH) must not move to a shared
                // connection: its client gets the redirection error instead.
                !orphan
                    && !conn.private
                    && !p.blocking
                    && p.client < REFRESH
                    && (reply.starts_with(b"-MOVED ") || reply.starts_with(b"-ASK "))
            }) {
                let (pool_i, host) = (
                    conn.pool,
                    self.pools[conn.pool].servers[conn.server].host.clone(),
                );
                let reply = reply.to_vec();
                rbuf.consume(n);
                self.redirect(pool_i, &host, p, &req, &reply);
                continue;
            }
            if p.client == INTERNAL {
                if !matches!(reply.first(), Some(b'-') | Some(b'!')) {
                    if conn.inflight.front().is_none_or(|p| p.client != INTERNAL) {
                        self.pools[conn.pool].servers[conn.server].connected(conn.server);
                    }
                } else {
                    result = Err((
                        format!(
                            "handshake refused: {}",
                            String::from_utf8_lossy(reply).trim_end()
                        ),
                        Fail::Down,
                    ));
                    break;
                }
            } else if !orphan && p.client != ORPHAN && p.client != SWALLOW {
                if conn.pubsub {
                    let reply = reply.to_vec();
                    rbuf.consume(n);
                    self.confirm(p, &reply);
                    continue;
                }
                self.deliver_to(p.client, Some(p.client_id), p.seq, p.part, reply);
                if p.blocking {
                    self.unblock(p.client, p.client_id);
                }
            }
            rbuf.consume(n);
        }
        if let Some(conn) = self.conns.get_mut(k) {
            rbuf.shrink(64 * 1024);
            conn.rbuf = rbuf;
            if result.is_ok() && conn.retiring && conn.inflight.is_empty() {
                return Err(("retired by a reload".into(), Fail::Idle));
            }
        }
        result
    }

    /// A connection broke (or never came up): fail everything it carried, in order.
    fn conn_failed(&mut self, k: usize, why: &str, how: Fail) {
        let Some(mut conn) = self.conns.try_remove(k) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let now = self.now;
        let srv = &mut self.pools[conn.pool].servers[conn.server];
        if srv.conns[conn.proto].get(conn.slot) == Some(&Some(k)) {
            srv.conns[conn.proto][conn.slot] = None;
        }
        let how = if conn.state == ConnState::Connecting {
            Fail::Down
        } else {
            how
        };
        match how {
            Fail::Down => {
                // Logged once per outage, not once per retry.
                if srv.connect_failures == 0 {
                    warn!("b{}({}) {} down: {why}", conn.server, srv.name, srv.addr);
                }
                srv.connect_failed(now, why);
            }
            Fail::Broken => {
                if why.contains("closed by the backend") {
                    srv.stats.eof += 1;
                }
                warn!(
                    "b{}({}) {} {why}{}",
                    conn.server,
                    srv.name,
                    srv.addr,
                    conn.scanner
                        .error_context(conn.rbuf.filled())
                        .map_or(String::new(), |c| format!("; bytes around it: {c}"))
                );
                srv.last_error = why.to_string();
                srv.stats.failures += 1;
            }
            Fail::Idle => debug!("b{}({}) {} {why}", conn.server, srv.name, srv.addr),
        }
        if conn.private {
            srv.private_open = srv.private_open.saturating_sub(1);
            for list in &mut srv.idle_private {
                list.retain(|&x| x != k);
            }
        }
        let msg = format!("ERR backend {} ({}) {why}", srv.name, srv.addr);
        if let Some((owner, id)) = conn.owner {
            // The client loses its private connection: a WATCH on it is gone, so its
            // transaction must not run.
            if let Some(c) = self.clients.get_mut(owner).filter(|c| c.id == id) {
                if let Some(sub) = c.sub.as_mut() {
                    sub.conns.retain(|&(_, ck)| ck != k);
                }
                if c.private == Some(k) {
                    c.private = None;
                }
                if let Some(t) = c.txn.as_mut().filter(|t| t.watching) {
                    t.watching = false;
                    t.dirty = true;
                }
            }
        }
        if how != Fail::Idle {
            self.pools[conn.pool].server_failed(conn.server, now);
            if let Some(c) = self.pools[conn.pool].cluster.as_mut() {
                // A node failed: a replica may be taking over its slots.
                c.wanted = true;
            }
        }
        let srv = &mut self.pools[conn.pool].servers[conn.server];
        let mut skip = conn.orphans;
        let n = conn.inflight.len();
        srv.stats.errors += (n - skip.min(n)) as u64;
        for p in conn.inflight.drain(..) {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if p.client == INTERNAL || p.client == ORPHAN {
                continue;
            }
            let mut e = Vec::with_capacity(msg.len() + 3);
            reply_error(&mut e, &msg);
            self.stats.errors += 1;
            if conn.pubsub {
                // A subscription request that will never be confirmed.
                if let Some(sub) = self
                    .clients
                    .get_mut(p.client)
                    .filter(|c| c.id == p.client_id)
                    .and_then(|c| c.sub.as_mut())
                {
                    sub.pending = sub.pending.saturating_sub(1);
                    sub.expect.remove(&(p.seq, p.part));
                }
            }
            self.deliver_to(p.client, Some(p.client_id), p.seq, p.part, &e);
            self.maybe_end_sub(p.client);
            if p.blocking {
                self.unblock(p.client, p.client_id);
            }
        }
    }

    // ----- timers -----------------------------------------------------------------------

    fn check_timers(&mut self) {
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
                if p.client == INTERNAL || p.client == REFRESH {
                    // Proxy-made requests keep their marker: a late handshake refusal must still
                    // be seen (and a late CLUSTER SLOTS still applied).
                    continue;
                }
                conn.inflight[conn.orphans - 1].client = ORPHAN;
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
        for (p, msg) in expired {
            self.stats.timeouts += 1;
            self.stats.errors += 1;
            let mut e = Vec::with_capacity(msg.len() + 3);
            reply_error(&mut e, &msg);
            self.deliver_to(p.client, Some(p.client_id), p.seq, p.part, &e);
        }
        for (k, why) in failed {
            self.conn_failed(k, &why, Fail::Down);
        }
        // Idle clients (a walk over all of them, so less often).
        if now_us < self.next_idle_check {
            return;
        }
        self.next_idle_check = now_us + IDLE_CHECK_PERIOD_US;
        let mut idle = Vec::new();
        for (k, c) in self.clients.iter() {
            let t = self.pools[c.pool].cfg.client_idle_timeout_ms;
            if t > 0 && c.chain.is_empty() && since(now_us, c.last_active) >= crate::clock::ms(t) {
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

    fn flush_conn(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        conn.dirty = false;
        if conn.state != ConnState::Up || !conn.writable {
            return;
        }
        if let Err(e) = conn
            .stream
            .write_out(&conn.wbuf, &mut conn.wpos, &mut conn.writable)
        {
            return self.conn_failed(k, &format!("write error: {e}"), Fail::Broken);
        }
        if !conn.writable {
            // Blocked (maybe on TLS records alone): the rest goes when the socket drains.
            return;
        }
        if conn.wpos == conn.wbuf.len() {
            conn.wbuf.clear();
            conn.wpos = 0;
            if conn.wbuf.capacity() > 1024 * 1024 {
                conn.wbuf = Vec::new();
            }
        }
    }

    fn flush_client(&mut self, k: usize) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        c.dirty = false;
        if !c.writable {
            return;
        }
        match c.stream.write_out(&c.wbuf, &mut c.wpos, &mut c.writable) {
            Ok(n) => self.stats.net_output_bytes += n as u64,
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
            self.conn_failed(ck, "closed with its client", Fail::Idle);
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

    /// Ask a node for CLUSTER SLOTS when the map is old (periodic), or was found wrong (MOVED,
    /// a node failure) and the last refresh is not too recent (rate limit).
    fn cluster_maybe_refresh(&mut self, pool_i: usize) {
        let now = self.now;
        let Some(c) = self.pools[pool_i].cluster.as_mut() else {
            return;
        };
        if c.in_flight {
            if now.duration_since(c.sent) < CLUSTER_REFRESH_TIMEOUT {
                return;
            }
            c.in_flight = false;
        }
        let since = now.duration_since(c.last_refresh);
        let due = (c.wanted && since >= CLUSTER_REFRESH_MIN) || since >= CLUSTER_REFRESH_EVERY;
        if !due {
            return;
        }
        c.last_refresh = now;
        // Any node that is not known down; rotate so a dead node is not asked forever.
        let pool = &self.pools[pool_i];
        let n = pool.len();
        if n == 0 {
            return;
        }
        let start = (now.duration_since(self.started).as_millis() as usize) % n;
        let Some(slot) = (0..n)
            .map(|i| pool.order[(start + i) % n])
            .find(|&slot| !pool.servers[slot].is_down(now))
        else {
            return;
        };
        let Ok(ck) = self.conn_for(pool_i, slot, 0) else {
            return;
        };
        let p = Pending::new(REFRESH, 0, 0, WHOLE, false, self.now_us);
        self.push_request(ck, p, b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n");
        self.mark_conn(ck);
        if let Some(c) = self.pools[pool_i].cluster.as_mut() {
            c.in_flight = true;
            c.sent = now;
        }
    }

    /// A CLUSTER SLOTS answer: rebuild the map (masters keep their connections).
    fn cluster_slots_reply(&mut self, pool_i: usize, host: &str, reply: &[u8]) {
        let ranges = match crate::cluster::parse_cluster_slots(reply, host) {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => {
                warn!(
                    "pool {}: CLUSTER SLOTS returned no slots",
                    self.pools[pool_i].cfg.name
                );
                if let Some(c) = self.pools[pool_i].cluster.as_mut() {
                    c.in_flight = false;
                }
                return;
            }
            Err(e) => {
                warn!(
                    "pool {}: bad CLUSTER SLOTS reply: {e}",
                    self.pools[pool_i].cfg.name
                );
                if let Some(c) = self.pools[pool_i].cluster.as_mut() {
                    c.in_flight = false;
                }
                return;
            }
        };
        match self.pools[pool_i].apply_slots(&ranges) {
            Ok(ch) => {
                if !ch.is_empty() {
                    info!(
                        "pool {}: cluster topology: {}",
                        self.pools[pool_i].cfg.name,
                        ch.describe()
                    );
                }
                self.retire_changes(pool_i, &ch);
            }
            Err(e) => warn!("pool {}: {e}", self.pools[pool_i].cfg.name),
        }
    }

    /// Follow a MOVED/ASK redirection: resend the request to the node that owns the slot
    /// (MOVED also fixes the map and asks for a refresh; ASK sends ASKING first, map unchanged).
    fn redirect(&mut self, pool_i: usize, host: &str, p: Pending, req: &[u8], reply: &[u8]) {
        let deliver_err = |me: &mut Self, msg: &str| {
            let mut e = Vec::new();
            reply_error(&mut e, msg);
            me.deliver_to(p.client, Some(p.client_id), p.seq, p.part, &e);
            if p.blocking {
                me.unblock(p.client, p.client_id);
            }
        };
        let Some(r) = crate::cluster::parse_redirect(reply) else {
            return deliver_err(self, String::from_utf8_lossy(&reply[1..]).trim_end());
        };
        if p.redirects >= CLUSTER_MAX_REDIRECTS {
            let msg = format!(
                "ERR too many cluster redirections (last: {})",
                String::from_utf8_lossy(&reply[1..]).trim_end()
            );
            return deliver_err(self, &msg);
        }
        let Some(proto) = self
            .clients
            .get(p.client)
            .filter(|c| c.id == p.client_id)
            .map(|c| c.resp3 as usize)
        else {
            return; // the client left: nothing to resend
        };
        let (slot, rhost, port, ask) = match r {
            crate::cluster::Redirect::Moved { slot, host, port } => (slot, host, port, false),
            crate::cluster::Redirect::Ask { slot, host, port } => (slot, host, port, true),
        };
        let rhost = if rhost.is_empty() {
            host.to_string()
        } else {
            rhost
        };
        let pool = &mut self.pools[pool_i];
        let (pos, ch) = match pool.add_node(&rhost, port) {
            Ok(x) => x,
            Err(e) => return deliver_err(self, &format!("ERR cannot follow redirection: {e}")),
        };
        if !ch.is_empty() {
            info!("pool {}: {}", pool.cfg.name, ch.describe());
        }
        if !ask {
            if let Some(c) = pool.cluster.as_mut() {
                if let Some(e) = c.slots.get_mut(slot as usize) {
                    *e = pos as u16;
                }
                c.wanted = true;
            }
        }
        let server = pool.order[pos];
        let ck = match self.conn_for(pool_i, server, proto) {
            Ok(ck) => ck,
            Err(e) => return deliver_err(self, &e),
        };
        if ask {
            self.send_on(ck, SWALLOW, b"*1\r\n$6\r\nASKING\r\n", 0, WHOLE, false);
        }
        let again = Pending {
            redirects: p.redirects + 1,
            sent: self.now_us,
            ..p
        };
        self.push_request(ck, again, req);
        self.mark_conn(ck);
    }

    // ----- stats port -------------------------------------------------------------------

    fn stats_accept(&mut self) {
        loop {
            let Some(l) = &self.stats_listener else {
                return;
            };
            let mut stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("stats accept failed: {e}");
                    return;
                }
            };
            let entry = self.stats_conns.vacant_entry();
            let token = Kind::Stats(entry.key() + 1).token();
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_ok()
            {
                entry.insert(StatsConn {
                    stream,
                    accepted: self.now,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    wpos: 0,
                    answered: false,
                });
            }
        }
    }

    fn stats_event(&mut self, i: usize) {
        let mut eof = false;
        if let Some(sc) = self.stats_conns.get_mut(i) {
            let mut tmp = [0u8; 4096];
            loop {
                match sc.stream.read(&mut tmp) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) if sc.rbuf.len() < 16 * 1024 => sc.rbuf.extend_from_slice(&tmp[..n]),
                    Ok(_) => continue,
                    Err(e) if would_block(&e) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        } else {
            return;
        }
        let request = self.stats_conns.get(i).and_then(|sc| {
            if sc.answered {
                return None;
            }
            let r = &sc.rbuf;
            let complete =
                r.windows(4).any(|w| w == b"\r\n\r\n") || r.windows(2).any(|w| w == b"\n\n");
            if complete || (eof && !r.is_empty()) {
                Some(r.starts_with(b"GET /metrics"))
            } else if eof {
                Some(false)
            } else {
                None
            }
        });
        let http = self
            .stats_conns
            .get(i)
            .is_some_and(|sc| sc.rbuf.starts_with(b"GET "));
        if let Some(metrics) = request {
            self.stats_answer(i, http, metrics);
        }
        self.stats_flush(i);
    }

    /// Queue the answer: HTTP-wrapped when asked over HTTP.
    fn stats_answer(&mut self, i: usize, http: bool, metrics: bool) {
        let body = {
            let view = self.view();
            if metrics {
                crate::metrics::prometheus(&view)
            } else {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into());
                crate::metrics::nutcracker_json(&view, &host)
            }
        };
        let Some(sc) = self.stats_conns.get_mut(i) else {
            return;
        };
        sc.answered = true;
        if http {
            let ctype = if metrics {
                "text/plain; version=0.0.4; charset=utf-8"
            } else {
                "application/json"
            };
            sc.wbuf.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        sc.wbuf.extend_from_slice(body.as_bytes());
    }

    /// Write what is queued; close once the answer is out.
    fn stats_flush(&mut self, i: usize) {
        let Some(sc) = self.stats_conns.get_mut(i) else {
            return;
        };
        while sc.wpos < sc.wbuf.len() {
            match sc.stream.write(&sc.wbuf[sc.wpos..]) {
                Ok(0) => break,
                Ok(n) => sc.wpos += n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if sc.answered {
            let mut sc = self.stats_conns.remove(i);
            let _ = self.poll.registry().deregister(&mut sc.stream);
        }
    }

    /// Stats connections that said nothing get the JSON document (nutcracker's behaviour).
    fn stats_timers(&mut self) {
        let now = self.now;
        let due: Vec<usize> = self
            .stats_conns
            .iter()
            .filter(|(_, sc)| !sc.answered && now.duration_since(sc.accepted) >= STATS_WAIT)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            self.stats_answer(i, false, false);
            self.stats_flush(i);
        }
    }

    // ----- reload -----------------------------------------------------------------------

    /// Re-read the configuration file and apply the difference without dropping clients:
    /// unchanged backends keep their connections and in-flight requests, added ones connect on
    /// first use, removed ones finish their in-flight requests and close; added pools listen,
    /// removed pools stop accepting and their clients drain. An invalid file changes nothing.
    /// `dry_run`: only validate and describe.
    pub fn reload(&mut self, dry_run: bool) -> Result<String, String> {
        let result = self.reload_inner(dry_run);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match &result {
            Ok(msg) if !dry_run => {
                info!("reload: {msg}");
                self.last_reload = Some((unix, true, msg.clone()));
            }
            Err(e) if !dry_run => {
                error!("reload failed, nothing changed: {e}");
                self.last_reload = Some((unix, false, e.clone()));
            }
            _ => {}
        }
        result
    }

    fn reload_inner(&mut self, dry_run: bool) -> Result<String, String> {
        let Some(path) = self.config.path.clone() else {
            return Err("no configuration file to reload (started with -l/-b)".into());
        };
        let new = crate::config::load(&path).map_err(|e| e.to_string())?;
        let mut summary = Vec::new();
        // Phase 1: everything that can fail (binding new listen addresses), nothing applied.
        let mut new_listeners: Vec<(usize, Option<Listener>)> = Vec::new();
        let mut tls = Vec::with_capacity(new.pools.len());
        for pc in &new.pools {
            tls.push(crate::pool::tls_configs(pc).map_err(|e| format!("pool {}: {e}", pc.name))?);
        }
        for (ni, pc) in new.pools.iter().enumerate() {
            let existing = self
                .pools
                .iter()
                .position(|p| !p.removed && p.cfg.name == pc.name);
            let rebind = match existing {
                Some(i) => self.pools[i].cfg.listen != pc.listen,
                None => true,
            };
            if rebind && !dry_run {
                let l = bind(&pc.listen, pc.backlog, pc.reuseport).map_err(|e| {
                    format!(
                        "pool {}: cannot listen on {}: {e}",
                        pc.name,
                        listen_name(&pc.listen)
                    )
                })?;
                new_listeners.push((ni, Some(l)));
            }
            match existing {
                Some(i) => {
                    let d = crate::pool::describe_diff(&self.pools[i].cfg, pc);
                    summary.push(format!("pool {}: {d}", pc.name));
                }
                None => summary.push(format!("pool {}: added", pc.name)),
            }
        }
        for p in &self.pools {
            if !p.removed && !new.pools.iter().any(|n| n.name == p.cfg.name) {
                summary.push(format!("pool {}: removed", p.cfg.name));
            }
        }
        if dry_run {
            return Ok(summary.join("; "));
        }
        // Phase 2: apply.
        log::set_max_level(new.log_level);
        for (ni, pc) in new.pools.iter().enumerate() {
            let listener = new_listeners
                .iter_mut()
                .find(|(i, _)| *i == ni)
                .and_then(|(_, l)| l.take());
            match self
                .pools
                .iter()
                .position(|p| !p.removed && p.cfg.name == pc.name)
            {
                Some(i) => {
                    let mut pc = pc.clone();
                    if self.pools[i].cluster.is_some() && pc.cluster {
                        // A cluster pool's servers are the masters the cluster names, not the
                        // seeds in the file: keep them (and the slot map's positions).
                        pc.servers = self.pools[i].cfg.servers.clone();
                    }
                    let ch = self.pools[i].reconfigure(pc);
                    (self.pools[i].tls_server, self.pools[i].tls_client) = tls[ni].clone();
                    self.retire_changes(i, &ch);
                    if let Some(l) = listener {
                        self.replace_listener(i, l);
                    }
                }
                None => {
                    let i = self.pools.len();
                    let mut pool = Pool::new(pc.clone());
                    (pool.tls_server, pool.tls_client) = tls[ni].clone();
                    self.pools.push(pool);
                    self.listeners.push(None);
                    if let Some(l) = listener {
                        self.replace_listener(i, l);
                    }
                }
            }
        }
        for i in 0..self.pools.len() {
            let p = &self.pools[i];
            if !p.removed && !new.pools.iter().any(|n| n.name == p.cfg.name) {
                self.pools[i].removed = true;
                self.close_listener(i);
                let keys: Vec<usize> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.pool == i)
                    .map(|(k, _)| k)
                    .collect();
                for k in keys {
                    if let Some(c) = self.clients.get_mut(k) {
                        c.closing = Closing::AfterReplies;
                    }
                    self.maybe_finish(k);
                }
            }
        }
        self.config = new;
        Ok(summary.join("; "))
    }

    /// Stop accepting on pool `i`'s listener (the socket closes when dropped).
    fn close_listener(&mut self, i: usize) {
        if let Some(mut l) = self.listeners.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    fn replace_listener(&mut self, i: usize, mut l: Listener) {
        self.close_listener(i);
        let token = Kind::Listener(i).token();
        let r = self
            .poll
            .registry()
            .register(&mut l, token, Interest::READABLE);
        match r {
            Ok(()) => self.listeners[i] = Some(l),
            Err(e) => error!("pool {}: register listener: {e}", self.pools[i].cfg.name),
        }
    }

    /// Retire what a pool change freed: the connections of removed servers (shared and idle
    /// private ones) and connections beyond a lowered `server_connections`.
    fn retire_changes(&mut self, pool_i: usize, ch: &crate::pool::Changes) {
        let mut retire = ch.retire_conns.clone();
        for slot in &ch.retired {
            retire.extend(self.pools[pool_i].servers[*slot].drain_conns());
        }
        for k in retire {
            self.retire_conn(k);
        }
    }

    /// A connection no longer wanted: close now when idle, else once its replies are in.
    fn retire_conn(&mut self, k: usize) {
        if let Some(conn) = self.conns.get_mut(k) {
            if conn.inflight.is_empty() && conn.pending_output() == 0 {
                self.conn_failed(k, "retired by a reload", Fail::Idle);
            } else {
                conn.retiring = true;
            }
        }
    }

    /// PROXY ADDBACKEND / REMOVEBACKEND: change the running membership of the client's pool.
    fn membership(
        &mut self,
        pool_i: usize,
        add: Option<crate::config::ServerConfig>,
        remove: Option<&str>,
    ) -> Result<String, String> {
        let pool = &self.pools[pool_i];
        if !pool.cfg.membership_commands {
            return Err(
                "ERR membership commands are disabled for this pool (membership_commands no)"
                    .into(),
            );
        }
        let mut cfg = pool.cfg.clone();
        if let Some(s) = add {
            let name = s.display_name();
            if cfg.servers.iter().any(|o| o.display_name() == name) {
                return Err(format!("ERR backend '{name}' already exists"));
            }
            cfg.servers.push(s);
        }
        if let Some(name) = remove {
            let before = cfg.servers.len();
            cfg.servers.retain(|o| o.display_name() != name);
            if cfg.servers.len() == before {
                return Err(format!("ERR unknown backend '{name}'"));
            }
            if cfg.servers.is_empty() {
                return Err("ERR cannot remove the last backend of a pool".into());
            }
        }
        let ch = self.pools[pool_i].reconfigure(cfg);
        self.retire_changes(pool_i, &ch);
        let msg = ch.describe();
        info!("pool {}: {msg}", self.pools[pool_i].cfg.name);
        Ok(msg)
    }

    fn proxy_cmd(&mut self, k: usize, frame: &[u8], args: &Args) {
        let mut out = Vec::new();
        let Some(pool_i) = self.clients.get(k).map(|c| c.pool) else {
            return;
        };
        let sub = args.get(frame, 1).to_ascii_uppercase();
        let argc = args.len();
        let result = match (sub.as_slice(), argc) {
            (b"RELOAD", 2) => self.reload(false),
            (b"RELOAD", 3) if args.get(frame, 2).eq_ignore_ascii_case(b"DRYRUN") => {
                self.reload(true)
            }
            (b"ADDBACKEND", 4 | 5) => {
                let name = String::from_utf8_lossy(args.get(frame, 2)).into_owned();
                let addr = String::from_utf8_lossy(args.get(frame, 3)).into_owned();
                let weight = if argc == 5 {
                    String::from_utf8_lossy(args.get(frame, 4)).into_owned()
                } else {
                    "1".into()
                };
                match crate::config::parse_server(&format!("{addr}:{weight} {name}"), 0) {
                    Ok(s) => self.membership(pool_i, Some(s), None),
                    Err(e) => Err(format!("ERR {e}")),
                }
            }
            (b"REMOVEBACKEND", 3) => {
                let name = String::from_utf8_lossy(args.get(frame, 2)).into_owned();
                self.membership(pool_i, None, Some(&name))
            }
            (b"BACKENDS", 2) => {
                let pool = &self.pools[pool_i];
                resp::write_array_len(&mut out, pool.len());
                for (i, &slot) in pool.order.iter().enumerate() {
                    let s = &pool.servers[slot];
                    let state = if s.is_ejected() {
                        "ejected"
                    } else if s.is_down(self.now) {
                        "down"
                    } else {
                        "up"
                    };
                    let line = format!(
                        "{i} {} {}:{} weight={} state={state}",
                        s.name, s.host, s.port, s.weight
                    );
                    resp::write_bulk(&mut out, line.as_bytes());
                }
                return self.reply(k, &out);
            }
            _ => Err("ERR usage: PROXY RELOAD [DRYRUN] | PROXY BACKENDS | PROXY ADDBACKEND name host:port [weight] | PROXY REMOVEBACKEND name".into()),
        };
        match result {
            Ok(msg) => resp::write_bulk(&mut out, msg.as_bytes()),
            Err(e) if e.starts_with("ERR ") => reply_error(&mut out, &e),
            Err(e) => reply_error(&mut out, &format!("ERR {e}")),
        }
        self.reply(k, &out);
    }

    // ----- local commands ---------------------------------------------------------------

    fn local(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let resp3 = self.clients.get(k).is_some_and(|c| c.resp3);
        let mut out = Vec::new();
        let argc = args.len();
        let arg = |i: usize| args.get(frame, i);
        match spec.name {
            "PING"
                if self
                    .clients
                    .get(k)
                    .is_some_and(|c| c.sub.is_some() && !c.resp3) =>
            {
                resp::write_array_len(&mut out, 2);
                resp::write_bulk(&mut out, b"pong");
                resp::write_bulk(&mut out, if argc > 1 { arg(1) } else { b"" });
            }
            "PING" => {
                if argc > 1 {
                    resp::write_bulk(&mut out, arg(1));
                } else {
                    resp::write_simple(&mut out, b"PONG");
                }
            }
            "ECHO" => resp::write_bulk(&mut out, arg(1)),
            "QUIT" => {
                resp::write_simple(&mut out, b"OK");
                self.reply(k, &out);
                if let Some(c) = self.clients.get_mut(k) {
                    c.closing = Closing::AfterReplies;
                }
                self.maybe_finish(k);
                return;
            }
            "SELECT" => match router::parse_i64(arg(1)) {
                Some(0) => resp::write_simple(&mut out, b"OK"),
                Some(_) => reply_error(
                    &mut out,
                    "ERR SELECT is not supported by rustproxy: only database 0 is available",
                ),
                None => reply_error(&mut out, "ERR value is not an integer or out of range"),
            },
            "HELLO" => return self.hello(k, frame, args),
            "AUTH" => {
                // AUTH password | AUTH username password (username must be "default").
                let (user, pass) = if argc >= 3 {
                    (arg(1), arg(2))
                } else {
                    (&b"default"[..], arg(1))
                };
                if argc > 3 {
                    reply_error(&mut out, "ERR syntax error");
                } else {
                    match self.check_auth(k, user, pass) {
                        Ok(()) => resp::write_simple(&mut out, b"OK"),
                        Err(e) => reply_error(&mut out, e),
                    }
                }
            }
            "RESET" => {
                self.end_txn(k, true);
                self.drop_subscriptions(k);
                if let Some(c) = self.clients.get_mut(k) {
                    c.resp3 = false;
                    c.meta = None;
                }
                resp::write_simple(&mut out, b"RESET");
            }
            "TIME" => {
                let d = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                resp::write_array_len(&mut out, 2);
                resp::write_bulk(&mut out, d.as_secs().to_string().as_bytes());
                resp::write_bulk(&mut out, d.subsec_micros().to_string().as_bytes());
            }
            "INFO" => return self.info_cmd(k, frame, args),
            "SLOWLOG GET" => {
                let count = if argc > 2 {
                    match router::parse_i64(arg(2)) {
                        Some(n) if n < 0 => Some(usize::MAX),
                        Some(n) => Some(n as usize),
                        None => {
                            reply_error(&mut out, "ERR value is not an integer or out of range");
                            return self.reply(k, &out);
                        }
                    }
                } else {
                    None
                };
                self.slowlog.write_get(count, &mut out);
            }
            "SLOWLOG LEN" => resp::write_int(&mut out, self.slowlog.len() as i64),
            "SLOWLOG RESET" => {
                self.slowlog.reset();
                resp::write_simple(&mut out, b"OK");
            }
            "BACKEND" | "BACKENDNUM" => {
                let Some(c) = self.clients.get(k) else {
                    return;
                };
                let pool = &self.pools[c.pool];
                let target = pool.target();
                let many = argc > 2;
                if many {
                    resp::write_array_len(&mut out, argc - 1);
                }
                for i in 1..argc {
                    match target.pick(arg(i)) {
                        Some(s) if spec.name == "BACKEND" => match pool.order.get(s) {
                            Some(&slot) => {
                                resp::write_bulk(&mut out, pool.servers[slot].name.as_bytes())
                            }
                            None => resp::write_nil(&mut out, resp3),
                        },
                        Some(s) => resp::write_int(&mut out, s as i64),
                        None => resp::write_nil(&mut out, resp3),
                    }
                }
            }
            "BACKENDS" => {
                let Some(c) = self.clients.get(k) else {
                    return;
                };
                let pool = &self.pools[c.pool];
                resp::write_array_len(&mut out, pool.len());
                for s in pool.order.iter().map(|&slot| &pool.servers[slot]) {
                    let line = format!("{}:{}@{}", s.host, s.port, s.name);
                    resp::write_bulk(&mut out, line.as_bytes());
                }
            }
            "FORWARD" => return self.forward_cmd(k, frame, args),
            "PROXY" => return self.proxy_cmd(k, frame, args),
            "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => {
                return self.txn_cmd(k, spec, frame, args)
            }
            "SUBSCRIBE" | "SSUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "SUNSUBSCRIBE"
            | "PUNSUBSCRIBE" => return self.pubsub_cmd(k, spec, frame, args),
            name if name.starts_with("CLIENT ") => {
                return self.client_cmd(k, spec, frame, args);
            }
            "COMMAND" => {
                let sub = if argc > 1 { arg(1) } else { b"" };
                if sub.eq_ignore_ascii_case(b"COUNT") {
                    let n = crate::commands::COMMANDS
                        .iter()
                        .filter(|c| !c.name.contains(' '))
                        .count();
                    resp::write_int(&mut out, n as i64);
                } else if sub.eq_ignore_ascii_case(b"LIST") {
                    let names: Vec<String> = crate::commands::COMMANDS
                        .iter()
                        .filter(|c| !c.name.contains(' '))
                        .map(|c| c.name.to_ascii_lowercase())
                        .collect();
                    resp::write_array_len(&mut out, names.len());
                    for n in names {
                        resp::write_bulk(&mut out, n.as_bytes());
                    }
                } else if sub.eq_ignore_ascii_case(b"GETKEYS") && argc > 2 {
                    self.command_getkeys(args, frame, &mut out);
                } else {
                    // Arity, flags and docs of the real commands: the backends know them best.
                    let bytes = encode_args(args, frame, 0..argc);
                    return self.forward(k, 0, &bytes);
                }
            }
            "ROLE" => {
                resp::write_array_len(&mut out, 3);
                resp::write_bulk(&mut out, b"master");
                resp::write_int(&mut out, 0);
                resp::write_array_len(&mut out, 0);
            }
            "ACL WHOAMI" => resp::write_bulk(&mut out, b"default"),
            "CONFIG RESETSTAT" => {
                self.stats.reset();
                for p in &mut self.pools {
                    for s in &mut p.servers {
                        s.stats.reset();
                    }
                }
                resp::write_simple(&mut out, b"OK");
            }
            other => reply_error(
                &mut out,
                &format!("ERR {other} is not supported by rustproxy"),
            ),
        }
        self.reply(k, &out);
    }

    /// Check AUTH credentials: the pool's users (requirepass / redis_auth for `default`, `user`
    /// lines), compared in constant time. Failures are counted and logged (at most once a
    /// second per pool).
    fn check_auth(&mut self, k: usize, user: &[u8], pass: &[u8]) -> Result<(), &'static str> {
        let Some(c) = self.clients.get_mut(k) else {
            return Ok(());
        };
        let pool = &self.pools[c.pool];
        if !pool.users.required() && user == b"default" {
            // Like Redis's default user without a password.
            return Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        }
        match pool.users.check(user, pass) {
            Ok(level) => {
                c.authed = true;
                c.level = level;
                Ok(())
            }
            Err(()) => {
                self.stats.auth_failures += 1;
                if self
                    .last_auth_log
                    .is_none_or(|t| self.now.duration_since(t) >= Duration::from_secs(1))
                {
                    self.last_auth_log = Some(self.now);
                    warn!(
                        "c{k}#{} {} failed AUTH as '{}' ({} failures so far)",
                        c.id,
                        c.peer,
                        String::from_utf8_lossy(user),
                        self.stats.auth_failures
                    );
                }
                Err("WRONGPASS invalid username-password pair or user is disabled.")
            }
        }
    }

    /// COMMAND GETKEYS cmd args...: the keys the proxy routes by, from its own table.
    fn command_getkeys(&mut self, args: &Args, frame: &[u8], out: &mut Vec<u8>) {
        let argc = args.len();
        let Some(spec) = crate::commands::lookup(args.get(frame, 2)) else {
            return reply_error(out, "ERR Invalid command specified");
        };
        let spec = if spec.class == crate::commands::Class::Container && argc > 3 {
            match crate::commands::lookup_sub(spec, args.get(frame, 3)) {
                Some(s) => s,
                None => return reply_error(out, "ERR Invalid command specified"),
            }
        } else {
            spec
        };
        if !crate::commands::arity_ok(spec, argc - 2) {
            return reply_error(out, "ERR Invalid number of arguments specified for command");
        }
        let mut keys = std::mem::take(&mut self.keys);
        match crate::commands::key_positions(spec, argc - 2, &|i| args.get(frame, i + 2), &mut keys)
        {
            Ok(()) if keys.is_empty() => reply_error(out, "ERR The command has no key arguments"),
            Ok(()) => {
                resp::write_array_len(out, keys.len());
                for &i in &keys {
                    resp::write_bulk(out, args.get(frame, i + 2));
                }
            }
            Err(e) => reply_error(out, e),
        }
        self.keys = keys;
    }

    fn hello(&mut self, k: usize, frame: &[u8], args: &Args) {
        let mut out = Vec::new();
        let argc = args.len();
        let mut proto = None;
        let mut i = 1;
        if argc > 1 {
            match router::parse_i64(args.get(frame, 1)) {
                Some(v @ 2..=3) => proto = Some(v),
                Some(_) => {
                    reply_error(&mut out, "NOPROTO unsupported protocol version");
                    return self.reply(k, &out);
                }
                None => {
                    reply_error(
                        &mut out,
                        "ERR Protocol version is not an integer or out of range",
                    );
                    return self.reply(k, &out);
                }
            }
            i = 2;
        }
        let mut setname = None;
        while i < argc {
            let opt = args.get(frame, i);
            if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < argc {
                let (user, pass) = (args.get(frame, i + 1), args.get(frame, i + 2));
                if let Err(e) = self.check_auth(k, user, pass) {
                    reply_error(&mut out, e);
                    return self.reply(k, &out);
                }
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < argc {
                setname = Some(args.get(frame, i + 1).to_vec());
                i += 2;
            } else {
                let o = String::from_utf8_lossy(opt);
                reply_error(&mut out, &format!("ERR Syntax error in HELLO option '{o}'"));
                return self.reply(k, &out);
            }
        }
        if let Some(name) = &setname {
            if !valid_client_name(name) {
                reply_error(
                    &mut out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
                return self.reply(k, &out);
            }
        }
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if !c.authed {
            reply_error(
                &mut out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return self.reply(k, &out);
        }
        if let Some(p) = proto {
            c.resp3 = p == 3;
        }
        if let Some(name) = setname {
            c.meta_mut().name = Some(name);
        }
        let resp3 = c.resp3;
        let id = c.id;
        resp::write_map_len(&mut out, 7, resp3);
        resp::write_bulk(&mut out, b"server");
        resp::write_bulk(&mut out, b"redis");
        resp::write_bulk(&mut out, b"version");
        resp::write_bulk(&mut out, REDIS_COMPAT_VERSION.as_bytes());
        resp::write_bulk(&mut out, b"proto");
        resp::write_int(&mut out, if resp3 { 3 } else { 2 });
        resp::write_bulk(&mut out, b"id");
        resp::write_int(&mut out, id as i64);
        resp::write_bulk(&mut out, b"mode");
        resp::write_bulk(&mut out, b"standalone");
        resp::write_bulk(&mut out, b"role");
        resp::write_bulk(&mut out, b"master");
        resp::write_bulk(&mut out, b"modules");
        resp::write_array_len(&mut out, 0);
        self.reply(k, &out);
    }

    fn client_cmd(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let mut out = Vec::new();
        let now = self.now_us;
        let resp3 = self.clients.get(k).is_some_and(|c| c.resp3);
        match spec.name {
            "CLIENT SETNAME" => {
                let name = args.get(frame, 2);
                if !valid_client_name(name) {
                    reply_error(
                        &mut out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                } else {
                    if let Some(c) = self.clients.get_mut(k) {
                        c.meta_mut().name = if name.is_empty() {
                            None
                        } else {
                            Some(name.to_vec())
                        };
                    }
                    resp::write_simple(&mut out, b"OK");
                }
            }
            "CLIENT GETNAME" => match self.clients.get(k).and_then(|c| c.name()) {
                Some(n) => resp::write_bulk(&mut out, n),
                None => resp::write_nil(&mut out, resp3),
            },
            "CLIENT ID" => {
                let id = self.clients.get(k).map_or(0, |c| c.id);
                resp::write_int(&mut out, id as i64);
            }
            "CLIENT SETINFO" => {
                let attr = args.get(frame, 2);
                let val = args.get(frame, 3).to_vec();
                if let Some(c) = self.clients.get_mut(k) {
                    if attr.eq_ignore_ascii_case(b"LIB-NAME") {
                        c.meta_mut().lib_name = Some(val);
                        resp::write_simple(&mut out, b"OK");
                    } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
                        c.meta_mut().lib_ver = Some(val);
                        resp::write_simple(&mut out, b"OK");
                    } else {
                        let a = String::from_utf8_lossy(attr);
                        reply_error(&mut out, &format!("ERR Unrecognized option '{a}'"));
                    }
                }
            }
            "CLIENT INFO" => {
                if let Some(c) = self.clients.get(k) {
                    let line = client_line(k, c, now);
                    resp::write_verbatim(&mut out, b"txt", line.as_bytes(), resp3);
                }
            }
            "CLIENT LIST" => {
                let mut text = String::new();
                for (key, c) in self.clients.iter() {
                    text.push_str(&client_line(key, c, now));
                }
                resp::write_verbatim(&mut out, b"txt", text.as_bytes(), resp3);
            }
            "CLIENT NO-EVICT" | "CLIENT NO-TOUCH" | "CLIENT REPLY" => {
                if spec.name == "CLIENT REPLY" && !args.get(frame, 2).eq_ignore_ascii_case(b"ON") {
                    reply_error(
                        &mut out,
                        "ERR CLIENT REPLY OFF|SKIP is not supported by rustproxy",
                    );
                } else {
                    resp::write_simple(&mut out, b"OK");
                }
            }
            other => reply_error(
                &mut out,
                &format!("ERR {other} is not supported by rustproxy"),
            ),
        }
        self.reply(k, &out);
    }

    /// FORWARD <index|name> command args...: sent verbatim to that backend, reply verbatim.
    fn forward_cmd(&mut self, k: usize, frame: &[u8], args: &Args) {
        let Some(c) = self.clients.get(k) else {
            return;
        };
        let pool = &self.pools[c.pool];
        let which = args.get(frame, 1);
        let server = router::parse_u64(which)
            .map(|i| i as usize)
            .filter(|&i| i < pool.len())
            .or_else(|| {
                pool.order
                    .iter()
                    .map(|&slot| &pool.servers[slot])
                    .position(|s| {
                        s.name.as_bytes() == which
                            || format!("{}:{}", s.host, s.port).as_bytes() == which
                    })
            });
        match server {
            Some(s) => {
                let bytes = encode_args(args, frame, 2..args.len());
                self.forward(k, s, &bytes);
            }
            None => {
                let w = String::from_utf8_lossy(which).into_owned();
                self.reply_err(k, &format!("ERR unknown backend '{w}'"));
            }
        }
    }

    /// The view of everything the stats renderers show.
    fn view(&self) -> crate::metrics::View<'_> {
        let now = self.now;
        let pools = self
            .pools
            .iter()
            .filter(|p| !p.removed)
            .map(|p| crate::metrics::PoolView {
                name: &p.cfg.name,
                listen: listen_name(&p.cfg.listen),
                hash: p.cfg.hash.name(),
                distribution: p.cfg.distribution.name(),
                clients: p.clients,
                servers: p
                    .order
                    .iter()
                    .map(|&slot| {
                        let s = &p.servers[slot];
                        let mut connections = 0;
                        let mut in_flight = 0;
                        let mut out_bytes = 0;
                        for ck in s.conns.iter().flatten().flatten() {
                            if let Some(c) = self.conns.get(*ck) {
                                connections += 1;
                                in_flight += c.inflight.len();
                                out_bytes += c.pending_output();
                            }
                        }
                        crate::metrics::ServerView {
                            name: &s.name,
                            addr: s.addr.to_string(),
                            state: if s.is_ejected() {
                                "ejected"
                            } else if s.is_down(now) {
                                "down"
                            } else {
                                "up"
                            },
                            connections: connections + s.private_open,
                            in_flight,
                            out_queue_bytes: out_bytes,
                            stats: &s.stats,
                        }
                    })
                    .collect(),
            })
            .collect();
        crate::metrics::View {
            version: env!("CARGO_PKG_VERSION"),
            redis_version: REDIS_COMPAT_VERSION,
            pid: std::process::id(),
            uptime_secs: now.duration_since(self.started).as_secs(),
            config_file: self.config.path.as_ref().map(|p| p.display().to_string()),
            now_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            connected_clients: self.clients.len(),
            max_clients: self.pools.iter().map(|p| p.cfg.max_clients).sum(),
            blocked_clients: self.clients.iter().filter(|(_, c)| c.blocked).count(),
            stats: &self.stats,
            pools,
            slowlog_len: self.slowlog.len(),
            rss_bytes: rss_bytes(),
            last_reload: self.last_reload.clone(),
        }
    }

    /// INFO [section...] | INFO BACKEND <n|name> | INFO <n|name> [section] (forwarded).
    fn info_cmd(&mut self, k: usize, frame: &[u8], args: &Args) {
        let Some((pool_i, resp3)) = self.clients.get(k).map(|c| (c.pool, c.resp3)) else {
            return;
        };
        let argc = args.len();
        let mut out = Vec::new();
        let find = |p: &Pool, w: &[u8]| -> Option<usize> {
            router::parse_u64(w)
                .map(|i| i as usize)
                .filter(|&i| i < p.len())
                .or_else(|| {
                    p.order.iter().position(|&slot| {
                        let s = &p.servers[slot];
                        s.name.as_bytes() == w || format!("{}:{}", s.host, s.port).as_bytes() == w
                    })
                })
        };
        if argc >= 2 {
            let first = args.get(frame, 1);
            if first.eq_ignore_ascii_case(b"BACKEND") && argc == 3 {
                let text = match find(&self.pools[pool_i], args.get(frame, 2)) {
                    Some(pos) => {
                        let view = self.view();
                        let vp = self
                            .pools
                            .iter()
                            .filter(|p| !p.removed)
                            .position(|p| std::ptr::eq(p, &self.pools[pool_i]))
                            .unwrap_or(0);
                        crate::metrics::info_backend(&view, vp, pos)
                    }
                    None => {
                        let w = String::from_utf8_lossy(args.get(frame, 2)).into_owned();
                        return self.reply_err(k, &format!("ERR unknown backend '{w}'"));
                    }
                };
                resp::write_verbatim(&mut out, b"txt", text.as_bytes(), resp3);
                return self.reply(k, &out);
            }
            if let Some(pos) = find(&self.pools[pool_i], first) {
                let mut req = Vec::new();
                resp::write_array_len(&mut req, argc - 1);
                resp::write_bulk(&mut req, b"INFO");
                for i in 2..argc {
                    resp::write_bulk(&mut req, args.get(frame, i));
                }
                return self.forward(k, pos, &req);
            }
        }
        let section: Vec<String> = (1..argc)
            .map(|i| String::from_utf8_lossy(args.get(frame, i)).into_owned())
            .collect();
        let section = section.join(" ");
        let view = self.view();
        let text = crate::metrics::info(&view, if argc > 1 { Some(&section) } else { None });
        resp::write_verbatim(&mut out, b"txt", text.as_bytes(), resp3);
        self.reply(k, &out);
    }
}

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `*n` (RESP2) or `>n` (RESP3 push), the frame of pub/sub confirmations and messages.
fn write_push_len(out: &mut Vec<u8>, n: usize, resp3: bool) {
    if resp3 {
        out.push(b'>');
        resp::write_usize(out, n);
        out.extend_from_slice(b"\r\n");
    } else {
        resp::write_array_len(out, n);
    }
}

/// A published message (`message`, `pmessage`, `smessage`), as opposed to a reply.
fn is_message(reply: &[u8]) -> bool {
    if !matches!(reply.first(), Some(b'*') | Some(b'>')) {
        return false;
    }
    let Some(nl) = reply.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let rest = &reply[nl + 1..];
    rest.starts_with(b"$7\r\nmessage\r\n")
        || rest.starts_with(b"$8\r\npmessage\r\n")
        || rest.starts_with(b"$8\r\nsmessage\r\n")
}

fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn client_line(key: usize, c: &Client, now: Micros) -> String {
    let name = c.name().map(String::from_utf8_lossy).unwrap_or_default();
    let (lib, ver) = c
        .meta
        .as_ref()
        .map(|m| {
            (
                m.lib_name
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned(),
                m.lib_ver
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned(),
            )
        })
        .unwrap_or_default();
    format!(
        "id={} addr={} fd={} name={} age={} idle={} flags=N db=0 sub=0 psub=0 multi=-1 qbuf={} obl={} oll={} omem={} cmd={} user=default lib-name={} lib-ver={} resp={}\n",
        c.id,
        c.peer,
        key,
        name,
        since(now, c.created) / 1_000_000,
        since(now, c.last_active) / 1_000_000,
        c.rbuf.len(),
        c.pending_output(),
        c.chain.len(),
        c.wbuf.capacity(),
        crate::commands::COMMANDS
            .get(c.last_command as usize)
            .map_or("NULL".to_string(), |s| s.name.to_ascii_lowercase().replace(' ', "|")),
        lib,
        ver,
        if c.resp3 { 3 } else { 2 }
    )
}

/// Encode args[range] as a multibulk request.
fn encode_args(args: &Args, frame: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 16);
    resp::write_array_len(&mut out, range.len());
    for i in range {
        resp::write_bulk(&mut out, args.get(frame, i));
    }
    out
}

fn listen_name(l: &Listen) -> String {
    match l {
        Listen::Tcp(a) => a.to_string(),
        Listen::Unix { path, .. } => path.display().to_string(),
    }
}

fn bind(listen: &Listen, backlog: u32, reuseport: bool) -> io::Result<Listener> {
    match listen {
        Listen::Tcp(addr) => {
            let sock = std::net::TcpListener::from(tcp_socket(*addr, backlog, reuseport)?);
            sock.set_nonblocking(true)?;
            Ok(Listener::Tcp(TcpListener::from_std(sock)))
        }
        Listen::Unix { path, mode } => {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path)?;
            if let Some(m) = mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*m))?;
            }
            Ok(Listener::Unix(l))
        }
    }
}

/// A listening TCP socket with SO_REUSEADDR (and SO_REUSEPORT when asked) and the backlog.
fn tcp_socket(addr: SocketAddr, backlog: u32, reuseport: bool) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // std has no way to set SO_REUSEPORT before bind; use the libc calls mio already links.
    let domain = if addr.is_ipv4() {
        libc_af_inet()
    } else {
        libc_af_inet6()
    };
    unsafe {
        let fd = sys::socket(domain, sys::SOCK_STREAM | sys::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: i32 = 1;
        let p = &one as *const i32 as *const std::ffi::c_void;
        if sys::setsockopt(fd, sys::SOL_SOCKET, sys::SO_REUSEADDR, p, 4) < 0 {
            return Err(io::Error::last_os_error());
        }
        if reuseport && sys::setsockopt(fd, sys::SOL_SOCKET, sys::SO_REUSEPORT, p, 4) < 0 {
            return Err(io::Error::last_os_error());
        }
        let (sa, len) = sys::sockaddr(addr);
        if sys::bind(fd, sa.as_ptr() as *const std::ffi::c_void, len) < 0 {
            return Err(io::Error::last_os_error());
        }
        if sys::listen(fd, backlog.min(i32::MAX as u32) as i32) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }
}

fn libc_af_inet() -> i32 {
    sys::AF_INET
}
fn libc_af_inet6() -> i32 {
    sys::AF_INET6
}

fn set_keepalive(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: i32 = 1;
    unsafe {
        sys::setsockopt(
            s.as_raw_fd(),
            sys::SOL_SOCKET,
            sys::SO_KEEPALIVE,
            &one as *const i32 as *const std::ffi::c_void,
            4,
        );
    }
}

/// The few socket calls std does not expose (Linux values).
mod sys {
    use std::net::SocketAddr;
    pub const AF_INET: i32 = 2;
    pub const AF_INET6: i32 = 10;
    pub const SOCK_STREAM: i32 = 1;
    pub const SOCK_CLOEXEC: i32 = 0o2000000;
    pub const SOL_SOCKET: i32 = 1;
    pub const SO_REUSEADDR: i32 = 2;
    pub const SO_KEEPALIVE: i32 = 9;
    pub const SO_REUSEPORT: i32 = 15;
    extern "C" {
        pub fn socket(domain: i32, ty: i32, proto: i32) -> i32;
        pub fn setsockopt(
            fd: i32,
            level: i32,
            name: i32,
            val: *const std::ffi::c_void,
            len: u32,
        ) -> i32;
        pub fn bind(fd: i32, addr: *const std::ffi::c_void, len: u32) -> i32;
        pub fn listen(fd: i32, backlog: i32) -> i32;
    }
    /// struct sockaddr_in / sockaddr_in6 bytes.
    pub fn sockaddr(addr: SocketAddr) -> (Vec<u8>, u32) {
        match addr {
            SocketAddr::V4(a) => {
                let mut b = vec![0u8; 16];
                b[0..2].copy_from_slice(&(AF_INET as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.ip().octets());
                (b, 16)
            }
            SocketAddr::V6(a) => {
                let mut b = vec![0u8; 28];
                b[0..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
                b[8..24].copy_from_slice(&a.ip().octets());
                b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
                (b, 28)
            }
        }
    }
}

/// Bind every pool and serve until a fatal poller error.
pub fn run(config: Config) -> io::Result<()> {
    let mut p = Proxy::new(config)?;
    p.run()
}
