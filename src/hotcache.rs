//! The hot-key cache of one pool: values of hot keys kept in proxy memory so a GET of one is
//! answered without a backend request. Only the data structure lives here (bytes-bounded
//! LRU, deadlines, fetches in flight, figures); the proxy's `hot` room feeds it from the
//! per-backend tracking connections and drops entries on every invalidation.
//!
//! Invariants:
//! - `bytes` (the sum of each entry's key, value and a fixed per-entry overhead) never exceeds
//!   `max_bytes`: an insert evicts least recently used entries first, and an entry larger than
//!   `max_value` (value bytes) or than the whole cache is never stored; its key is not
//!   fetched again (`refused`, at most `MAX_REFUSED` keys) until an invalidation of it, of its
//!   server or of everything.
//! - An entry with a deadline (the key's TTL in Redis when it was fetched) is never served at
//!   or after it: `get` drops it instead.
//! - A fetch is in flight at most once per key; anything that invalidates a key while its
//!   fetch is in flight (`invalidate`, `drop_server`, `clear`) poisons the fetch, so its
//!   value, possibly older than the invalidation, is never stored.
//! - No fetch starts for a key with a write through the proxy in flight (`write_begin` ..
//!   `write_end`, by key tag; `ANY_KEY` holds every key), so a fetch never runs before a write
//!   whose writer has already seen its reply. `writing` holds one entry per tag in flight
//!   (bounded by the requests in flight); fetches in flight are at most `MAX_FETCHES`.
//! - The LRU list and the index always name the same entries (checked by the tests); free
//!   nodes are reused, so the node vector is bounded by the most entries ever held at once.

use std::collections::{HashMap, VecDeque};

use crate::clock::Micros;

/// Bytes counted per entry on top of its key and value (index, node, list links).
pub const ENTRY_OVERHEAD: usize = 96;
/// No entry is served longer than this after its fetch (a safety net for an invalidation that
/// cannot arrive, e.g. a half-open tracking connection; invalidations normally drop entries
/// long before).
pub const MAX_AGE_US: Micros = 30_000_000;
/// Fetches in flight per pool, at most (a burst of new hot keys waits for the next sample).
pub const MAX_FETCHES: usize = 256;
/// Keys remembered as too large to cache (not fetched again until they change), at most, and
/// the longest key remembered.
pub const MAX_REFUSED: usize = 1024;
pub const MAX_REFUSED_KEY: usize = 1024;
/// After a backend refused tracking (or a tracking connection could not be opened), no new
/// one is tried for this long.
pub const RETRY_US: Micros = 10_000_000;

const NIL: usize = usize::MAX;

/// The tag of a write that names several keys (or none): while one is in flight no fetch
/// starts in the pool.
pub const ANY_KEY: u64 = 1;

/// The tag a write holds its key under: FNV-1a 64 of the key, never 0 nor `ANY_KEY`.
pub fn key_tag(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h | 2
}

struct Node {
    key: Box<[u8]>,
    /// The reply as sent to clients (a RESP bulk string), or empty for a missing key (nil,
    /// written in each client's protocol by the caller).
    value: Box<[u8]>,
    /// Server slot the value came from.
    server: usize,
    deadline: Option<Micros>,
    prev: usize,
    next: usize,
}

/// A fetch in flight on a tracking connection.
#[derive(Debug, Default)]
pub struct Fetch {
    pub server: usize,
    /// When it was sent (event-loop clock): the TTL it reads counts from here, so the entry's
    /// deadline is never later than the key's expiry in Redis.
    pub sent: Micros,
    /// The GET's reply, once in.
    pub value: Option<Vec<u8>>,
    /// Invalidated while in flight: the result is dropped.
    pub poisoned: bool,
    /// The GET was refused with WRONGTYPE (not a string: never cached).
    pub wrongtype: bool,
}

/// What INFO and /metrics show of a cache.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub bytes: usize,
    pub max_bytes: usize,
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub fetches: u64,
    pub invalidations: u64,
    pub evictions: u64,
    /// Tracking connections open.
    pub tracking: usize,
}

pub struct HotCache {
    pub max_bytes: usize,
    pub max_value: usize,
    /// Reads per second above which a key is fetched into the cache.
    pub threshold: u64,
    index: HashMap<Box<[u8]>, usize>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    bytes: usize,
    fetching: HashMap<Box<[u8]>, Fetch>,
    /// Keys whose fetched value was too large to store, with their server slot: not fetched
    /// again (each fetch would read the value from the backend for nothing) until an
    /// invalidation says they changed.
    refused: HashMap<Box<[u8]>, usize>,
    /// Writes through the proxy in flight, by key tag (`key_tag`, `ANY_KEY`): a fetch of a
    /// key with a write in flight could run before that write and store the old value after
    /// the writer saw its reply, so none starts until the write's reply is in.
    writing: HashMap<u64, u32>,
    /// Per server slot: the tracking connection (slab key) and the keys whose fetches it
    /// carries, in the order they were sent.
    pub tracking: Vec<Option<usize>>,
    pub queues: Vec<VecDeque<Box<[u8]>>>,
    /// Per server slot: no tracking connection is opened before this time (its backend
    /// refused tracking, or the connection could not be opened).
    pub retry_at: Vec<Micros>,
    /// The pool generation the entries were fetched under (a ring change clears them).
    pub generation: u64,
    pub hits: u64,
    pub misses: u64,
    pub fetches: u64,
    pub invalidations: u64,
    pub evictions: u64,
}

impl HotCache {
    pub fn new(max_bytes: usize, max_value: usize, threshold: u64) -> HotCache {
        HotCache {
            max_bytes,
            max_value,
            threshold,
            index: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            fetching: HashMap::new(),
            refused: HashMap::new(),
            writing: HashMap::new(),
            tracking: Vec::new(),
            queues: Vec::new(),
            retry_at: Vec::new(),
            generation: 0,
            hits: 0,
            misses: 0,
            fetches: 0,
            invalidations: 0,
            evictions: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn figures(&self) -> Figures {
        Figures {
            bytes: self.bytes,
            max_bytes: self.max_bytes,
            entries: self.index.len(),
            hits: self.hits,
            misses: self.misses,
            fetches: self.fetches,
            invalidations: self.invalidations,
            evictions: self.evictions,
            tracking: self.tracking.iter().flatten().count(),
        }
    }

    fn cost(key: &[u8], value: &[u8]) -> usize {
        key.len() + value.len() + ENTRY_OVERHEAD
    }

    /// The cached reply for `key`, if fresh at `now` (counted as a hit; the entry becomes the
    /// most recently used). An entry past its deadline is dropped.
    pub fn get(&mut self, key: &[u8], now: Micros) -> Option<&[u8]> {
        let i = *self.index.get(key)?;
        if self.nodes[i].deadline.is_some_and(|d| now >= d) {
            self.remove_at(i);
            return None;
        }
        self.unlink(i);
        self.push_front(i);
        self.hits += 1;
        Some(&self.nodes[i].value)
    }

    /// Store `value` (the reply bytes) for `key` from server slot `server`, valid until
    /// `deadline` (None: no TTL) and at most `MAX_AGE_US` after `now`. False: not stored
    /// (too large).
    pub fn insert(
        &mut self,
        key: &[u8],
        server: usize,
        value: &[u8],
        deadline: Option<Micros>,
        now: Micros,
    ) -> bool {
        let cost = Self::cost(key, value);
        let deadline = Some(match deadline {
            Some(d) => d.min(now.saturating_add(MAX_AGE_US)),
            None => now.saturating_add(MAX_AGE_US),
        });
        // `max_value` bounds the value, not its RESP framing (`$<len>\r\n...\r\n`).
        let payload = value
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |p| value.len().saturating_sub(p + 3));
        if payload > self.max_value || cost > self.max_bytes {
            self.refuse(key, server);
            return false;
        }
        if let Some(&i) = self.index.get(key) {
            self.remove_at(i);
        }
        while self.bytes + cost > self.max_bytes && self.tail != NIL {
            self.remove_at(self.tail);
            self.evictions += 1;
        }
        let node = Node {
            key: key.into(),
            value: value.into(),
            server,
            deadline,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.push_front(i);
        self.index.insert(key.into(), i);
        self.bytes += cost;
        true
    }

    /// `key` (from server slot `server`) cannot be cached as it is: it is not fetched again
    /// until an invalidation of it, of its server or of everything.
    pub fn refuse(&mut self, key: &[u8], server: usize) {
        if self.refused.len() < MAX_REFUSED && key.len() <= MAX_REFUSED_KEY {
            self.refused.insert(key.into(), server);
        }
    }

    /// Drop `key` (a write, an invalidation push) and poison its fetch in flight.
    pub fn invalidate(&mut self, key: &[u8]) {
        if let Some(f) = self.fetching.get_mut(key) {
            f.poisoned = true;
        }
        if !self.refused.is_empty() {
            self.refused.remove(key);
        }
        if let Some(&i) = self.index.get(key) {
            self.remove_at(i);
            self.invalidations += 1;
        }
    }

    /// Drop every entry from server slot `server` and poison its fetches (its tracking
    /// connection is gone, or it was flushed).
    pub fn drop_server(&mut self, server: usize) {
        for f in self.fetching.values_mut().filter(|f| f.server == server) {
            f.poisoned = true;
        }
        self.refused.retain(|_, s| *s != server);
        let doomed: Vec<usize> = self
            .index
            .values()
            .copied()
            .filter(|&i| self.nodes[i].server == server)
            .collect();
        self.invalidations += doomed.len() as u64;
        for i in doomed {
            self.remove_at(i);
        }
    }

    /// Drop everything (FLUSHALL/FLUSHDB through the proxy, a ring change) and poison every
    /// fetch in flight.
    pub fn clear(&mut self) {
        for f in self.fetching.values_mut() {
            f.poisoned = true;
        }
        self.refused.clear();
        self.invalidations += self.index.len() as u64;
        self.index.clear();
        self.nodes.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.bytes = 0;
    }

    /// Whether a fetch of `key` may start now (none in flight, under the in-flight bound,
    /// not cached yet, no write of it in flight); if so it is recorded as in flight from
    /// `server`, sent at `now`.
    pub fn start_fetch(&mut self, key: &[u8], server: usize, now: Micros) -> bool {
        if !self.writing.is_empty()
            && (self.writing.contains_key(&ANY_KEY) || self.writing.contains_key(&key_tag(key)))
        {
            return false;
        }
        if self.fetching.len() >= MAX_FETCHES
            || self.fetching.contains_key(key)
            || self.index.contains_key(key)
            || (!self.refused.is_empty() && self.refused.contains_key(key))
        {
            return false;
        }
        self.fetching.insert(
            key.into(),
            Fetch {
                server,
                sent: now,
                ..Fetch::default()
            },
        );
        self.fetches += 1;
        true
    }

    /// The fetch of `key`, for its GET reply to be stored in.
    pub fn fetch_mut(&mut self, key: &[u8]) -> Option<&mut Fetch> {
        self.fetching.get_mut(key)
    }

    /// The fetch of `key` is over (its last reply arrived, or its connection failed).
    pub fn end_fetch(&mut self, key: &[u8]) -> Option<Fetch> {
        self.fetching.remove(key)
    }

    /// A write with tag `tag` was forwarded.
    pub fn write_begin(&mut self, tag: u64) {
        *self.writing.entry(tag).or_insert(0) += 1;
    }

    /// The reply of a write with tag `tag` is in (or its connection failed).
    pub fn write_end(&mut self, tag: u64) {
        if let Some(n) = self.writing.get_mut(&tag) {
            *n -= 1;
            if *n == 0 {
                self.writing.remove(&tag);
            }
        }
    }

    /// Whether a tracking connection to server slot `slot` may be opened at `now`.
    pub fn may_open(&self, slot: usize, now: Micros) -> bool {
        self.retry_at.get(slot).is_none_or(|&t| now >= t)
    }

    /// Opening a tracking connection to `slot` failed (or was refused) at `now`.
    pub fn open_failed(&mut self, slot: usize, now: Micros) {
        if self.retry_at.len() <= slot {
            self.retry_at.resize(slot + 1, 0);
        }
        self.retry_at[slot] = now + RETRY_US;
    }

    pub fn fetches_in_flight(&self) -> usize {
        self.fetching.len()
    }

    fn remove_at(&mut self, i: usize) {
        self.unlink(i);
        let n = &mut self.nodes[i];
        let key = std::mem::take(&mut n.key);
        let value = std::mem::take(&mut n.value);
        self.bytes = self.bytes.saturating_sub(Self::cost(&key, &value));
        self.index.remove(&key);
        self.free.push(i);
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.nodes[i].prev, self.nodes[i].next);
        if p == NIL {
            if self.head == i {
                self.head = n;
            }
        } else {
            self.nodes[p].next = n;
        }
        if n == NIL {
            if self.tail == i {
                self.tail = p;
            }
        } else {
            self.nodes[n].prev = p;
        }
        self.nodes[i].prev = NIL;
        self.nodes[i].next = NIL;
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

/// What a push on a tracking connection says.
#[derive(Debug, PartialEq)]
pub enum Push {
    /// `invalidate` with these keys.
    Keys(Vec<Vec<u8>>),
    /// `invalidate` with null: everything (a flush, or the server dropped its tracking table).
    All,
    /// Not an invalidation.
    Other,
}

/// Read a push frame of a tracking connection.
pub fn invalidation(push: &[u8]) -> Push {
    use crate::resp::Reply;
    let Ok(Some((Reply::Push(items), _))) = crate::resp::parse_reply(push) else {
        return Push::Other;
    };
    match items.as_slice() {
        [Reply::Bulk(kind), what] if kind.eq_ignore_ascii_case(b"invalidate") => match what {
            Reply::Nil => Push::All,
            Reply::Array(keys) => Push::Keys(
                keys.iter()
                    .filter_map(|k| match k {
                        Reply::Bulk(b) | Reply::Simple(b) => Some(b.to_vec()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => Push::Other,
        },
        _ => Push::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list and the index name the same entries, and `bytes` is their sum.
    fn check(c: &HotCache) {
        let mut seen = 0;
        let mut bytes = 0;
        let mut i = c.head;
        let mut prev = NIL;
        while i != NIL {
            let n = &c.nodes[i];
            assert_eq!(n.prev, prev);
            assert_eq!(c.index.get(&n.key[..]), Some(&i));
            bytes += HotCache::cost(&n.key, &n.value);
            seen += 1;
            prev = i;
            i = n.next;
        }
        assert_eq!(c.tail, prev);
        assert_eq!(seen, c.index.len());
        assert_eq!(bytes, c.bytes);
        assert!(c.bytes <= c.max_bytes);
    }

    fn bulk(v: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        crate::resp::write_bulk(&mut o, v);
        o
    }

    #[test]
    fn serves_what_was_stored_until_invalidated() {
        let mut c = HotCache::new(10_000, 1000, 1);
        assert!(c.get(b"k", 0).is_none());
        assert!(c.insert(b"k", 2, &bulk(b"v"), None, 0));
        assert_eq!(c.get(b"k", 5), Some(&b"$1\r\nv\r\n"[..]));
        assert_eq!(c.hits, 1);
        c.invalidate(b"k");
        assert!(c.get(b"k", 5).is_none());
        assert_eq!(c.invalidations, 1);
        check(&c);
    }

    #[test]
    fn bytes_stay_under_the_limit_lru_first() {
        let v = bulk(&[b'x'; 100]);
        let mut c = HotCache::new(4 * (ENTRY_OVERHEAD + 1 + v.len()), 1000, 1);
        for k in [b"a", b"b", b"c", b"d"] {
            assert!(c.insert(k, 0, &v, None, 0));
        }
        check(&c);
        assert_eq!(c.len(), 4);
        // Touch "a": "b" is now the least recently used and goes first.
        assert!(c.get(b"a", 0).is_some());
        assert!(c.insert(b"e", 0, &v, None, 0));
        assert!(c.get(b"b", 0).is_none());
        assert!(c.get(b"a", 0).is_some());
        assert_eq!(c.evictions, 1);
        check(&c);
        // A flood of large values never takes it over the limit.
        for i in 0..1000u32 {
            let v = bulk(&vec![b'y'; (i as usize * 7) % 900]);
            c.insert(format!("k{i}").as_bytes(), 1, &v, None, 0);
            assert!(c.bytes() <= c.max_bytes);
        }
        check(&c);
    }

    #[test]
    fn large_values_are_never_cached() {
        let mut c = HotCache::new(1 << 20, 100, 1);
        assert!(!c.insert(b"big", 0, &bulk(&[0; 200]), None, 0));
        assert!(!c.insert(b"big", 0, &bulk(&[0; 101]), None, 0));
        assert!(c.is_empty());
        assert!(
            c.insert(b"at", 0, &bulk(&[0; 100]), None, 0),
            "exactly max_value"
        );
        // A key refused for its size is not fetched again until it changes.
        assert!(!c.start_fetch(b"big", 0, 0));
        c.invalidate(b"big");
        assert!(c.start_fetch(b"big", 0, 0));
        c.end_fetch(b"big");
        assert!(!c.insert(b"big", 3, &bulk(&[0; 101]), None, 0));
        c.drop_server(3);
        assert!(c.start_fetch(b"big", 0, 0));
        let mut tiny = HotCache::new(50, 1000, 1);
        assert!(
            !tiny.insert(b"k", 0, &bulk(b"v"), None, 0),
            "larger than the cache"
        );
    }

    #[test]
    fn entries_never_outlive_their_deadline() {
        let mut c = HotCache::new(10_000, 1000, 1);
        c.insert(b"t", 0, &bulk(b"v"), Some(1_000), 0);
        assert!(c.get(b"t", 999).is_some());
        assert!(c.get(b"t", 1_000).is_none());
        assert!(c.is_empty());
        // Without a TTL: at most MAX_AGE_US after it was stored.
        c.insert(b"n", 0, &bulk(b"v"), None, 5);
        assert!(c.get(b"n", MAX_AGE_US + 4).is_some());
        assert!(c.get(b"n", MAX_AGE_US + 5).is_none());
        check(&c);
    }

    #[test]
    fn fetches_are_single_and_poisoned_by_invalidations() {
        let mut c = HotCache::new(10_000, 1000, 1);
        assert!(c.start_fetch(b"k", 1, 0));
        assert!(!c.start_fetch(b"k", 1, 0), "one fetch per key");
        c.fetch_mut(b"k").unwrap().value = Some(bulk(b"v"));
        c.invalidate(b"k");
        let f = c.end_fetch(b"k").unwrap();
        assert!(f.poisoned);
        assert!(c.start_fetch(b"k", 1, 0));
        c.drop_server(0);
        assert!(!c.fetch_mut(b"k").unwrap().poisoned, "another server");
        c.drop_server(1);
        assert!(c.end_fetch(b"k").unwrap().poisoned);
        assert!(c.start_fetch(b"j", 0, 0));
        c.clear();
        assert!(c.end_fetch(b"j").unwrap().poisoned);
        // No fetch of a key while a write of it (or of many keys) is in flight.
        c.write_begin(key_tag(b"w"));
        assert!(!c.start_fetch(b"w", 0, 0));
        c.write_end(key_tag(b"w"));
        assert!(c.start_fetch(b"w", 0, 0));
        c.write_begin(ANY_KEY);
        assert!(!c.start_fetch(b"x", 0, 0));
        c.write_end(ANY_KEY);
        c.write_end(ANY_KEY);
        assert!(c.writing.is_empty());
        c.clear();
        for i in 0..MAX_FETCHES + 10 {
            c.start_fetch(format!("f{i}").as_bytes(), 0, 0);
        }
        assert_eq!(c.fetches_in_flight(), MAX_FETCHES);
    }

    #[test]
    fn drop_server_and_clear_drop_entries() {
        let mut c = HotCache::new(100_000, 1000, 1);
        for i in 0..50u32 {
            c.insert(
                format!("k{i}").as_bytes(),
                (i % 3) as usize,
                &bulk(b"v"),
                None,
                0,
            );
        }
        c.drop_server(1);
        assert_eq!(c.len(), 50 - 17);
        check(&c);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
        c.insert(b"again", 0, &bulk(b"v"), None, 0);
        check(&c);
    }

    #[test]
    fn invalidation_pushes_are_read() {
        let one = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        assert_eq!(
            invalidation(one),
            Push::Keys(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(invalidation(b">2\r\n$10\r\ninvalidate\r\n_\r\n"), Push::All);
        let msg = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n";
        assert_eq!(invalidation(msg), Push::Other);
        assert_eq!(invalidation(b"+OK\r\n"), Push::Other);
        assert_eq!(invalidation(b">2\r\n$10\r\ninval"), Push::Other);
    }
}
