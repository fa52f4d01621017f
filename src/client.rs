//! Client connection state: the socket, the leftover of a partial request, the output buffer
//! and the reply chain.
//!
//! Invariants:
//! - `rbuf` holds only the unparsed tail of what was read (usually nothing: complete requests are
//!   parsed straight out of the proxy's shared read buffer), so an idle client holds no buffer.
//! - `wbuf[wpos..]` is what is still owed to the socket; bytes enter it only from the chain
//!   (`Chain::reply`, `Chain::deliver*`), which is what keeps replies in request order.
//! - `id` is unique for the process lifetime; anything that refers to a client from elsewhere
//!   (a backend's in-flight entry) stores (slab key, id), so a reused slab key is never confused
//!   with its previous owner.

use crate::clock::Micros;
use std::net::SocketAddr;

use crate::chain::Chain;
use crate::net::Stream;

/// Why a client is going away (or not). The order matters: the states up to
/// `AfterInputDiscard` still serve the client's input (see `Client::stalled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Closing {
    /// Serving normally.
    No,
    /// The peer closed with commands still held in its input (at a fence, by the serve rule of
    /// a rebalance, by CLIENT PAUSE): they run when they may, as Redis runs what it read, and
    /// then `AfterReplies`.
    AfterInput,
    /// The same after the peer reset the connection: replies are dropped.
    AfterInputDiscard,
    /// Stop reading; close once every pending reply has been written (QUIT, protocol error,
    /// the client half-closed its socket).
    AfterReplies,
    /// Close at the end of this tick, dropping what is pending.
    Now,
}

impl Closing {
    /// The peer is gone but commands it sent are still to run.
    pub fn after_input(self) -> bool {
        matches!(self, Closing::AfterInput | Closing::AfterInputDiscard)
    }
}

/// `CLIENT REPLY` mode: which replies the proxy sends (every reply is still read from the
/// backends and leaves the chain in order; a suppressed one is just not written).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplyMode {
    #[default]
    On,
    /// No reply until `CLIENT REPLY ON` (whose +OK is sent).
    Off,
    /// The next command's reply is not sent, then back to `On`.
    Skip,
}

/// Transaction state (MULTI queued in the proxy, WATCH on a private connection).
#[derive(Default)]
pub struct Txn {
    /// MULTI was called: commands queue in `queued` until EXEC or DISCARD.
    pub in_multi: bool,
    /// Slot (stable identity) of the server the transaction is pinned to (by its keys or
    /// WATCH); never a config position, which a reload may shift.
    pub server: Option<usize>,
    /// The routing keys of the queued commands and WATCH, and the pool's ring generation when
    /// the transaction was pinned: if the ring changed since, EXEC re-checks that every key
    /// still lives on `server` and aborts otherwise (no write lands on a wrong server).
    pub keys: Vec<Vec<u8>>,
    /// The keys queued writes name when a `hash=` hint routed them (then `keys` holds the
    /// hint, not these): the hot-key cache drops them again at EXEC.
    pub written: Vec<Vec<u8>>,
    pub generation: u64,
    /// The queued commands, encoded, sent between MULTI and EXEC as one block.
    pub queued: Vec<u8>,
    pub count: usize,
    /// A command failed to queue: EXEC answers EXECABORT.
    pub dirty: bool,
    /// WATCH is active on the client's private connection.
    pub watching: bool,
}

/// Subscribe state: the client's subscriptions and the private connections holding them.
/// Servers are named by slot (stable across reloads), never by config position.
#[derive(Default)]
pub struct Sub {
    /// (server slot, connection) per backend holding some of the subscriptions.
    pub conns: Vec<(usize, usize)>,
    /// The server slot each channel subscription lives on, keyed by (shard channel, name): an
    /// unsubscribe goes where the subscription is, even after a reload moved the channel.
    pub home: std::collections::HashMap<(bool, Vec<u8>), usize>,
    pub channels: std::collections::HashSet<Vec<u8>>,
    pub patterns: std::collections::HashSet<Vec<u8>>,
    pub shard: std::collections::HashSet<Vec<u8>>,
    /// Confirmations still to come back to the client.
    pub pending: usize,
    /// The count each pending confirmation reports, keyed by (chain slot, part): computed when
    /// the request is read, so counts follow request order whatever order backends answer in.
    pub expect: std::collections::HashMap<(u64, u32), usize>,
    /// Subscriptions added by a pending confirmation (chain slot, part) -> name: a refusal
    /// from the backend takes them back out of the sets.
    pub adding: std::collections::HashMap<(u64, u32), Vec<u8>>,
}

impl Sub {
    /// The subscription connection to the server in slot `slot`.
    pub fn conn_at(&self, slot: usize) -> Option<usize> {
        self.conns.iter().find(|(s, _)| *s == slot).map(|&(_, c)| c)
    }

    /// Forget where channel `ch` lives and return the connection to unsubscribe it on (its
    /// home, else the connection to `slot`, where it would live now).
    pub fn leave(&mut self, shard: bool, ch: &[u8], slot: usize) -> Option<usize> {
        let at = self.home.remove(&(shard, ch.to_vec())).unwrap_or(slot);
        self.conn_at(at)
    }
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty()
    }
}

/// A client's address, kept small: IPv4 inline (8 bytes, the common case), others boxed.
pub enum Peer {
    V4(std::net::SocketAddrV4),
    Other(Box<SocketAddr>),
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        match a {
            SocketAddr::V4(v4) => Peer::V4(v4),
            other => Peer::Other(Box::new(other)),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::V4(a) => a.fmt(f),
            Peer::Other(a) => a.fmt(f),
        }
    }
}

/// Who the client says it is (CLIENT SETNAME, HELLO SETNAME, CLIENT SETINFO) and who it
/// authenticated as; most clients never set any of it (kept out of line to keep `Client` small).
#[derive(Default)]
pub struct Identity {
    pub name: Option<Vec<u8>>,
    /// The user authenticated with AUTH/HELLO (None: `default`).
    pub user: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    /// `CLIENT REPLY ON|OFF|SKIP` (here, out of line: rarely set, read once per command).
    pub reply_mode: ReplyMode,
    /// The database its commands run in after `SELECT` (None: the pool's `redis_db`, where
    /// every client starts; out of line, so a client that never selects costs nothing).
    pub db: Option<u32>,
    /// Online rebalancing: the held command's key moves (see `proxy/rebalance.rs`).
    pub moving: Option<Box<crate::rebalance::Moving>>,
}

pub struct Client {
    pub stream: Stream,
    /// Unique id (CLIENT ID), also the generation check for in-flight replies.
    pub id: u64,
    pub pool: usize,
    pub peer: Peer,
    /// Unparsed tail of the input. Pushed by the reader, consumed by the parser.
    pub rbuf: Vec<u8>,
    /// Output; `wpos` bytes of it are already written. Filled by the chain, drained by flush.
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    pub chain: Chain,
    pub resp3: bool,
    /// False until AUTH succeeds when the pool has a password.
    pub authed: bool,
    /// What the authenticated user may run.
    pub level: crate::config::Level,
    pub closing: Closing,
    /// Reading is stopped by backpressure (too many pending replies or too much output).
    pub paused: bool,
    /// Userland copy of write readiness (edge-triggered: set by WRITABLE, cleared by WouldBlock).
    pub writable: bool,
    /// Already on the proxy's list of clients to flush this tick.
    pub dirty: bool,
    /// When the connection was accepted (kept small: an idle client should cost little).
    pub created: Micros,
    pub last_active: Micros,
    /// Commands read (wraps; only logged).
    pub commands: u32,
    /// Row of the command table of the last command (`u16::MAX` = none yet).
    pub last_command: u16,
    pub meta: Option<Box<Identity>>,
    /// Private backend connection lent to this client (blocking command, WATCH).
    pub private: Option<usize>,
    /// Waiting for a blocking command's reply: later commands are not read until it arrives.
    pub blocked: bool,
    /// The next command waits until every earlier reply is in (set after a command that moved
    /// the client between backend connections: subscriptions, the end of a WATCH).
    pub fence: bool,
    /// A command is held back (unparsed, in `rbuf`) until the chain is empty (a fence).
    pub draining: bool,
    pub txn: Option<Box<Txn>>,
    /// Subscribe mode (set by the first (P|S)SUBSCRIBE, cleared when nothing is left).
    pub sub: Option<Box<Sub>>,
}

impl Client {
    pub fn new(stream: Stream, id: u64, pool: usize, peer: SocketAddr, now: Micros) -> Client {
        Client {
            stream,
            id,
            pool,
            peer: Peer::from(peer),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            chain: Chain::default(),
            resp3: false,
            authed: true,
            level: crate::config::Level::Admin,
            closing: Closing::No,
            paused: false,
            writable: true,
            dirty: false,
            created: now,
            last_active: now,
            commands: 0,
            last_command: u16::MAX,
            meta: None,
            private: None,
            blocked: false,
            fence: false,
            draining: false,
            txn: None,
            sub: None,
        }
    }

    /// Bytes still owed to the socket.
    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Reply bytes waiting for this client: unread output plus replies held in its chain
    /// (what flow control bounds).
    pub fn queued_bytes(&self) -> usize {
        self.pending_output() + self.chain.parked_bytes()
    }

    /// The database selected with `SELECT` (None: the pool's `redis_db`).
    #[inline]
    pub fn db(&self) -> Option<u32> {
        self.meta.as_deref().and_then(|m| m.db)
    }

    pub fn meta_mut(&mut self) -> &mut Identity {
        self.meta.get_or_insert_with(Default::default)
    }

    /// Not to be read now: backpressure, a blocking command in flight, a command held at a
    /// fence, or closing.
    pub fn stalled(&self) -> bool {
        self.paused || self.blocked || self.draining || self.closing > Closing::AfterInputDiscard
    }

    /// In subscribe mode as the client's stream has it so far: subscriptions are added and
    /// removed when their (un)subscribe is read, so this follows request order.
    pub fn subscribed(&self) -> bool {
        self.sub.as_ref().is_some_and(|s| !s.is_empty())
    }

    pub fn watching(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.watching)
    }

    pub fn in_multi(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.in_multi)
    }

    /// The `CLIENT REPLY` mode.
    pub fn reply_mode(&self) -> ReplyMode {
        self.meta.as_ref().map_or(ReplyMode::On, |m| m.reply_mode)
    }

    pub fn name(&self) -> Option<&[u8]> {
        self.meta.as_ref().and_then(|m| m.name.as_deref())
    }
}

/// Convenience for a Stream whose peer is a unix socket (no IP address).
pub fn unix_peer() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

#[cfg(test)]
mod tests {
    /// An idle connection costs its `Client` (in the slab) and nothing else: keep it small
    /// (README "Memory": under 0.25 KiB of RSS per idle client).
    #[test]
    fn client_stays_small() {
        let size = std::mem::size_of::<super::Client>();
        // Debug builds of mio keep a registration check in every socket (8 bytes more).
        let max = if cfg!(debug_assertions) { 232 } else { 224 };
        assert!(size <= max, "Client grew to {size} bytes");
    }
}
