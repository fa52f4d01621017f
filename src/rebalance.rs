//! Online rebalancing of static pools (`rebalance yes`): the state one pool keeps from the
//! moment its ring changes until every key that changed owner is on its new owner. The event
//! loop's side (serving, the background mover, the barriers) is `proxy/rebalance.rs`; this file
//! is the part that needs no sockets: the old placement, the per-source progress, the rate
//! limit, the ring fingerprint and the reply parsers, each unit-tested.
//!
//! Invariants:
//! - A key is *moving* while its owner under the old ring (`OldRing::owner_slot`) differs from
//!   its owner now and its old owner is not yet drained (`Source::done`). A moving key is served
//!   only after a MIGRATE from its old owner answered OK or NOKEY.
//! - Servers are named by slot (stable identity), never by config position.
//! - Counters only grow during one rebalance; `idle` is reported once every source is done.

use std::time::{Duration, Instant};

use crate::config::PoolConfig;
use crate::ring::Ring;

/// A client's command waiting for its keys to move (kept in `Identity`).
#[derive(Default)]
pub struct Moving {
    /// Keys already MIGRATEd for the held command.
    pub done: Vec<Vec<u8>>,
    /// MIGRATE replies still expected.
    pub pending: u32,
    pub error: Option<String>,
    /// When it started waiting for the barrier.
    pub since: Option<std::time::Instant>,
    /// The rebalance (`Rebalance::epoch`) it was made in.
    pub epoch: u64,
}

/// Where keys lived before the change: the old ring and its position -> slot map.
pub struct OldRing {
    pub ring: Ring,
    pub order: Vec<usize>,
    pub tag: Option<[u8; 2]>,
}

impl OldRing {
    /// The slot of the server that owned `key` before the change.
    pub fn owner_slot(&self, key: &[u8]) -> Option<usize> {
        let t = crate::router::Target {
            ring: &self.ring,
            tag: self.tag,
            nservers: self.order.len(),
            disabled: &[],
            slots: None,
            hash_override: false,
        };
        t.pick(key).and_then(|pos| self.order.get(pos).copied())
    }
}

/// What a rebalance is doing (INFO's `state=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for the barrier: requests this process sent under the old ring still in flight,
    /// or other proxy processes not yet on the new ring. Moving keys wait.
    Waiting,
    Running,
    /// `PROXY REBALANCE PAUSE`: the background mover stops; moving keys are still moved on
    /// access.
    Paused,
    /// A source keeps failing (MIGRATE errors, source down): retried with backoff.
    Failed,
    Idle,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running => "running",
            State::Paused => "paused",
            State::Failed => "failed",
            State::Idle => "idle",
        }
    }
}

/// Where the mover is on one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Next: ask the source which databases hold keys (`INFO keyspace`).
    ListDbs,
    /// Asked, waiting for the reply.
    Listing,
    /// Next: SCAN database `dbs[db_i]` from `cursor`.
    Scan,
    /// A SCAN or its MIGRATEs are in flight (`outstanding` replies).
    Busy,
    Done,
}

/// One server that loses keys (it owned some under the old ring).
pub struct Source {
    pub slot: usize,
    /// The mover's own connection to it (SCAN and every MIGRATE from it, clients' ones
    /// included, so they are ordered among themselves).
    pub conn: Option<usize>,
    pub phase: Phase,
    pub dbs: Vec<u32>,
    pub db_i: usize,
    pub cursor: Vec<u8>,
    /// Replies the mover waits for on `conn`.
    pub outstanding: usize,
    /// Keys moved / failed in the current pass (a pass with neither ends the source).
    pub pass_moved: u64,
    pub pass_failed: u64,
    /// Keys of this pass left behind without failing it (copies that differ on both sides).
    pub pass_skipped: u64,
    /// The pause before a pass that follows one with skipped keys.
    pub pass_pause: Duration,
    /// After a failure: no new work before then.
    pub retry_at: Option<Instant>,
    pub backoff: Duration,
    pub last_error: String,
    pub done: bool,
    /// MIGRATE groups (destination, keys) of the current batch not sent yet: sending them
    /// would close a cycle of MIGRATEs waiting on each other (`Rebalance::would_cycle`).
    pub held: Vec<(usize, Vec<Vec<u8>>)>,
    /// The mover's MIGRATE batches in flight, oldest first (destination, database, keys):
    /// each reply (or loss) takes the front one.
    pub sent: std::collections::VecDeque<(usize, u32, Vec<Vec<u8>>)>,
    /// A batch answered BUSYKEY, being checked key by key (see [`Resolve`]).
    pub resolve: Option<Resolve>,
}

/// A MIGRATE batch answered BUSYKEY: some of its keys exist on the destination too. Under the
/// serve rule no client writes a moving key on either side, so a copy on the destination is
/// the leftover of a MIGRATE whose answer was lost (the destination restarted from its AOF)
/// when it is identical to the source's: then the source's copy is deleted (the move is
/// complete). A copy that differs was written behind the proxy's back: both stay, the key is
/// counted failed and the operator decides.
pub struct Resolve {
    pub dst: usize,
    pub db: u32,
    pub keys: Vec<Vec<u8>>,
    /// `DUMP` of each key on the source and on the destination (`None`: no such key).
    pub src: Vec<Option<Vec<u8>>>,
    pub dst_dump: Vec<Option<Vec<u8>>>,
    /// Replies still expected (the DUMPs, then the DELs).
    pub waiting: usize,
    /// Keys whose copies differ.
    pub differ: Vec<Vec<u8>>,
    /// Source copies deleted.
    pub deleted: u64,
    /// The DUMPs are in and the DELs were sent.
    pub deleting: bool,
}

impl Resolve {
    pub fn new(dst: usize, db: u32, keys: Vec<Vec<u8>>) -> Resolve {
        let n = keys.len();
        Resolve {
            dst,
            db,
            keys,
            src: vec![None; n],
            dst_dump: vec![None; n],
            waiting: 2 * n,
            differ: Vec::new(),
            deleted: 0,
            deleting: false,
        }
    }

    /// Once every DUMP is in: the keys to delete from the source (identical on both sides);
    /// those on both with different values go to `differ`.
    pub fn verdict(&mut self) -> Vec<Vec<u8>> {
        let mut delete = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            match (&self.src[i], &self.dst_dump[i]) {
                (Some(a), Some(b)) if a == b => delete.push(key.clone()),
                (Some(_), Some(_)) => self.differ.push(key.clone()),
                // Gone from the source (moved since), or not on the destination (the next
                // pass moves it).
                _ => {}
            }
        }
        delete
    }
}

impl Source {
    pub fn new(slot: usize) -> Source {
        Source {
            slot,
            conn: None,
            phase: Phase::ListDbs,
            dbs: Vec::new(),
            db_i: 0,
            cursor: b"0".to_vec(),
            outstanding: 0,
            pass_moved: 0,
            pass_failed: 0,
            pass_skipped: 0,
            pass_pause: Duration::ZERO,
            retry_at: None,
            backoff: Duration::ZERO,
            last_error: String::new(),
            done: false,
            held: Vec::new(),
            sent: Default::default(),
            resolve: None,
        }
    }

    /// A failure: start the pass over after a doubling backoff (100 ms .. 30 s).
    pub fn failed(&mut self, now: Instant, why: &str) {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
        self.retry_at = Some(now + self.backoff);
        self.last_error = why.to_string();
        self.pass_failed += 1;
        self.phase = Phase::ListDbs;
        self.outstanding = 0;
        self.held.clear();
        self.resolve = None;
    }

    /// The end of one full pass over every database: done when it found nothing to move.
    /// A pass that left keys behind (conflicts) starts the next one only after a doubling
    /// pause, so a key the operator must fix does not keep the source scanned flat out.
    pub fn end_pass(&mut self, now: Instant) {
        if self.pass_moved == 0 && self.pass_failed == 0 {
            self.phase = Phase::Done;
            self.done = true;
        } else {
            self.phase = Phase::ListDbs;
        }
        if self.pass_skipped > 0 {
            self.pass_pause = (self.pass_pause * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
            self.retry_at = Some(now + self.pass_pause);
        } else {
            self.pass_pause = Duration::ZERO;
        }
        self.pass_moved = 0;
        self.pass_failed = 0;
        self.pass_skipped = 0;
    }
}

pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One pool's rebalance, from the ring change until idle.
pub struct Rebalance {
    /// Rebalances this process started for the pool (INFO's `epoch=`).
    pub epoch: u64,
    pub old: OldRing,
    /// Fingerprint of the new ring (what every proxy process must serve before keys move).
    pub fingerprint: u64,
    pub sources: Vec<Source>,
    pub paused: bool,
    /// Markers still in flight on connections that carried requests sent under the old ring.
    pub local_pending: usize,
    /// Every proxy process registered on the old ring's servers serves the new ring.
    pub others_ready: bool,
    /// Barrier checks (CLIENT LIST) in flight, and what they found.
    pub check_pending: usize,
    pub check_stale: usize,
    pub next_check: Instant,
    pub started: Instant,
    /// Clients waiting for the barrier (slab key, id).
    pub waiters: Vec<(usize, u64)>,
    pub scanned: u64,
    pub moved: u64,
    pub failed: u64,
    /// Token bucket of the mover (keys).
    pub tokens: f64,
    pub refilled: Instant,
    /// A round of barrier checks is in flight.
    pub checking: bool,
    /// MIGRATEs in flight, as (source slot, destination slot) edges. A MIGRATE blocks its
    /// source until the destination answers, so two in opposite directions (or any cycle)
    /// would wait on each other until they time out half done.
    pub edges: Vec<(usize, usize)>,
}

impl Rebalance {
    pub fn new(
        epoch: u64,
        old: OldRing,
        fingerprint: u64,
        sources: Vec<usize>,
        now: Instant,
    ) -> Rebalance {
        Rebalance {
            epoch,
            old,
            fingerprint,
            sources: sources.into_iter().map(Source::new).collect(),
            paused: false,
            local_pending: 0,
            others_ready: false,
            check_pending: 0,
            check_stale: 0,
            next_check: now,
            started: now,
            waiters: Vec::new(),
            scanned: 0,
            moved: 0,
            failed: 0,
            tokens: 0.0,
            refilled: now,
            checking: false,
            edges: Vec::new(),
        }
    }

    /// Both barriers passed: moving keys may be moved and served.
    pub fn ready(&self) -> bool {
        self.local_pending == 0 && self.others_ready
    }

    pub fn state(&self) -> State {
        if self.sources.iter().all(|s| s.done) {
            State::Idle
        } else if !self.ready() {
            State::Waiting
        } else if self.paused {
            State::Paused
        } else if self.sources.iter().any(|s| {
            !s.done
                && (s.backoff >= Duration::from_secs(5) || s.pass_pause >= Duration::from_secs(4))
        }) {
            State::Failed
        } else {
            State::Running
        }
    }

    /// Whether keys of the server in `slot` (an old owner) may still be on it.
    pub fn source_open(&self, slot: usize) -> bool {
        self.sources.iter().any(|s| s.slot == slot && !s.done)
    }

    pub fn backends_left(&self) -> usize {
        self.sources.iter().filter(|s| !s.done).count()
    }

    /// Whether a MIGRATE from `src` to `dst` now could deadlock: some in-flight MIGRATE chain
    /// already leads from `dst` back to `src`.
    pub fn would_cycle(&self, src: usize, dst: usize) -> bool {
        let mut stack = vec![dst];
        let mut seen: Vec<usize> = Vec::new();
        while let Some(n) = stack.pop() {
            if n == src {
                return true;
            }
            if seen.contains(&n) {
                continue;
            }
            seen.push(n);
            stack.extend(self.edges.iter().filter(|e| e.0 == n).map(|e| e.1));
        }
        false
    }

    /// One MIGRATE from `src` to `dst` answered (or failed).
    pub fn edge_done(&mut self, src: usize, dst: usize) {
        if let Some(i) = self.edges.iter().position(|&e| e == (src, dst)) {
            self.edges.swap_remove(i);
        }
    }

    /// Refill the token bucket (`rate` keys/s, at most one second's worth banked).
    pub fn refill(&mut self, now: Instant, rate: u64) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + dt * rate as f64).min(rate as f64);
    }

    /// INFO / STATUS fields.
    pub fn fields(&self) -> String {
        format!(
            "state={},epoch={},scanned={},moved={},failed={},backends_left={}",
            self.state().name(),
            self.epoch,
            self.scanned,
            self.moved,
            self.failed,
            self.backends_left()
        )
    }
}

/// Fingerprint of what places keys: servers (identity and weight, in order), hash,
/// distribution and hash tag. Two processes with the same fingerprint place every key alike.
pub fn fingerprint(cfg: &PoolConfig) -> u64 {
    let mut text = format!(
        "{}|{}|{:?}",
        cfg.hash.name(),
        cfg.distribution.name(),
        cfg.hash_tag
    );
    for s in &cfg.servers {
        let id = crate::ring::node_identity(&s.host, s.port, s.name.as_deref());
        text.push('|');
        text.push_str(&String::from_utf8_lossy(&id));
        text.push_str(&format!(":{}", s.weight));
    }
    // FNV-1a 64: stable across processes and versions (not the std hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The client name a proxy process gives its registration connections: every process of a
/// pool with `rebalance yes` holds one per server, named after the ring it serves.
pub fn registration_name(pool: &str, fingerprint: u64) -> String {
    format!("rustproxy-rebalance:{pool}:{fingerprint:016x}")
}

/// From a `CLIENT LIST` text: how many registered proxy processes of `pool` serve another
/// ring than `fingerprint`.
pub fn stale_registrations(client_list: &[u8], pool: &str, fingerprint: u64) -> usize {
    let prefix = format!("rustproxy-rebalance:{pool}:");
    let want = format!("{fingerprint:016x}");
    String::from_utf8_lossy(client_list)
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("name=")))
        .filter_map(|n| n.strip_prefix(prefix.as_str()))
        .filter(|fp| *fp != want)
        .count()
}

/// The databases an `INFO keyspace` reply lists (`db3:keys=...`).
pub fn keyspace_dbs(info: &[u8]) -> Vec<u32> {
    let mut dbs: Vec<u32> = String::from_utf8_lossy(info)
        .lines()
        .filter_map(|l| l.strip_prefix("db"))
        .filter_map(|l| l.split(':').next())
        .filter_map(|n| n.parse().ok())
        .collect();
    dbs.sort_unstable();
    dbs.dedup();
    dbs
}

/// The body of a bulk or verbatim string reply (`$n\r\n...` or `=n\r\ntxt:...`).
pub fn bulk_body(reply: &[u8]) -> &[u8] {
    let Some(nl) = reply.iter().position(|&b| b == b'\n') else {
        return &[];
    };
    let body = &reply[nl + 1..];
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    if reply.first() == Some(&b'=') {
        body.get(4..).unwrap_or(&[])
    } else {
        body
    }
}

/// A SCAN reply: (next cursor, keys). None when it is not one (an error).
pub fn scan_reply(reply: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    use crate::resp::Reply;
    let (r, _) = crate::resp::parse_reply(reply).ok()??;
    let Reply::Array(items) = r else {
        return None;
    };
    let [Reply::Bulk(cursor), Reply::Array(keys)] = items.as_slice() else {
        return None;
    };
    let keys = keys
        .iter()
        .filter_map(|k| match k {
            Reply::Bulk(b) => Some(b.to_vec()),
            _ => None,
        })
        .collect();
    Some((cursor.to_vec(), keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_on_another_ring_are_counted() {
        let list = b"id=3 addr=127.0.0.1:1 name=rustproxy-rebalance:p:00000000000000aa db=0\n\
id=4 addr=127.0.0.1:2 name=rustproxy-rebalance:p:00000000000000bb db=0\n\
id=5 addr=127.0.0.1:3 name=rustproxy-rebalance:q:00000000000000bb db=0\n\
id=6 addr=127.0.0.1:4 name= db=0\n";
        assert_eq!(stale_registrations(list, "p", 0xaa), 1);
        assert_eq!(stale_registrations(list, "p", 0xbb), 1);
        assert_eq!(stale_registrations(list, "q", 0xbb), 0);
        assert_eq!(stale_registrations(list, "r", 0xbb), 0);
    }

    #[test]
    fn keyspace_lists_databases() {
        let info =
            b"# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb12:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(keyspace_dbs(info), [0, 12]);
        assert!(keyspace_dbs(b"# Keyspace\r\n").is_empty());
        assert_eq!(bulk_body(b"$5\r\nhello\r\n"), b"hello");
        assert_eq!(bulk_body(b"=9\r\ntxt:hello\r\n"), b"hello");
    }

    #[test]
    fn scan_replies_parse() {
        let r = b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        assert_eq!(
            scan_reply(r),
            Some((b"17".to_vec(), vec![b"a".to_vec(), b"b".to_vec()]))
        );
        assert_eq!(scan_reply(b"-ERR x\r\n"), None);
    }

    #[test]
    fn a_source_ends_after_a_pass_with_nothing_to_move() {
        let now = Instant::now();
        let mut s = Source::new(3);
        s.pass_moved = 5;
        s.end_pass(Instant::now());
        assert!(!s.done);
        assert_eq!(s.phase, Phase::ListDbs);
        s.failed(now, "x");
        assert!(s.retry_at.is_some());
        s.end_pass(Instant::now());
        assert!(!s.done, "a pass with a failure is not clean");
        s.end_pass(Instant::now());
        assert!(s.done);
    }

    #[test]
    fn fingerprint_follows_placement_inputs() {
        let cfg = crate::config::parse_native(
            "pool p\nlisten 127.0.0.1:1\nserver 127.0.0.1:2\nserver 127.0.0.1:3\n",
            "t.conf",
        )
        .unwrap()
        .pools
        .remove(0);
        let mut other = cfg.clone();
        assert_eq!(fingerprint(&cfg), fingerprint(&other));
        other.servers[1].weight = 2;
        assert_ne!(fingerprint(&cfg), fingerprint(&other));
        let mut fewer = cfg.clone();
        fewer.servers.pop();
        assert_ne!(fingerprint(&cfg), fingerprint(&fewer));
        let mut timeout = cfg.clone();
        timeout.timeout_ms += 1;
        assert_eq!(fingerprint(&cfg), fingerprint(&timeout));
    }

    #[test]
    fn migrates_that_would_wait_on_each_other_are_held() {
        let now = Instant::now();
        let mut r = Rebalance::new(1, empty_old(), 0, vec![0, 1, 2], now);
        assert!(!r.would_cycle(0, 1));
        r.edges.push((0, 1));
        assert!(r.would_cycle(1, 0), "opposite direction");
        assert!(!r.would_cycle(0, 2));
        assert!(!r.would_cycle(2, 1), "two into one is fine");
        r.edges.push((1, 2));
        assert!(r.would_cycle(2, 0), "a longer cycle");
        r.edge_done(0, 1);
        assert!(!r.would_cycle(2, 0));
        assert!(!r.would_cycle(1, 0));
    }

    fn empty_old() -> OldRing {
        OldRing {
            ring: Ring::build(
                crate::hash::HashKind::Fnv1a_64,
                crate::ring::Distribution::Ketama,
                &[],
            ),
            order: vec![],
            tag: None,
        }
    }

    #[test]
    fn busy_keys_are_deleted_from_the_source_only_when_identical() {
        let keys: Vec<Vec<u8>> = ["same", "other", "gone", "absent"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let mut r = Resolve::new(2, 0, keys);
        assert_eq!(r.waiting, 8);
        let d = |s: &str| Some(s.as_bytes().to_vec());
        r.src = vec![d("v1"), d("v2"), None, d("v4")];
        r.dst_dump = vec![d("v1"), d("x"), d("v3"), None];
        assert_eq!(r.verdict(), vec![b"same".to_vec()]);
        assert_eq!(r.differ, vec![b"other".to_vec()]);
    }

    #[test]
    fn token_bucket_banks_at_most_one_second() {
        let now = Instant::now();
        let mut r = Rebalance::new(1, empty_old(), 0, vec![0], now);
        r.refill(now + Duration::from_secs(10), 100);
        assert_eq!(r.tokens, 100.0);
        assert_eq!(r.state(), State::Waiting);
        r.others_ready = true;
        assert_eq!(r.state(), State::Running);
        r.paused = true;
        assert_eq!(r.state(), State::Paused);
        r.sources[0].done = true;
        assert_eq!(r.state(), State::Idle);
    }
}
