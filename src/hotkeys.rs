//! Hot-key detection: per pool, a bounded top-K of the most requested keys over a sliding
//! window, with reads and writes counted apart, fed by a sample of the requests.
//!
//! How: Space-Saving (Metwally et al.) over sampled keyed requests. One summary counts the
//! current window, a second holds the last completed one; a key's estimate is its count in
//! the current window plus its count in the previous one weighted by how much of that window
//! still overlaps the sliding window ending now (the sliding-window counter approximation).
//! Counts are scaled back by the sampling ratio to give requests per second.
//!
//! Invariants:
//! - Memory is bounded: each summary holds at most `capacity` keys (4 x the reported top, at
//!   least 64, at most 4096), each key at most `MAX_KEY` bytes (longer keys are truncated, so
//!   two long keys with the same prefix count as one).
//! - The per-request cost when a request is not sampled is one decrement and one branch
//!   (`tick`); nothing is allocated or hashed. A sampled request costs one hash lookup, and
//!   a key allocation only when the key is new to the summary.
//! - Space-Saving's guarantee holds per summary: a key with a true count above
//!   (sampled requests / capacity) is in the summary, and its count over-estimates by at most
//!   the count it inherited; reads and writes are exact counts since the key entered.
//! - Nothing here panics on any key or any clock value (time only moves the window forward;
//!   a clock that goes back is read as no time elapsed).

use std::collections::HashMap;

use crate::clock::{since, Micros};

/// Keys are counted on at most this many bytes.
pub const MAX_KEY: usize = 512;
/// Entries INFO hotkeys and /metrics show per pool.
pub const SHOWN: usize = 10;

/// One key's counters in one window's summary.
#[derive(Clone, Debug)]
struct Item {
    /// The identity counted (database, then the key: see `compose`), and its hash.
    id: Vec<u8>,
    hash: u64,
    /// Space-Saving count: it includes the count of the key this one replaced (an
    /// over-estimate by at most that much).
    count: u64,
    reads: u64,
    writes: u64,
    /// Config position of the backend the key was last seen routed to.
    backend: u16,
    db: u32,
}

/// A seeded multiply-rotate hasher (the sampled path hashes one short key; SipHash would be
/// most of its cost). The seed is per process, so colliding keys cannot be prepared offline;
/// a summary holds at most 4096 keys in any case.
#[derive(Clone, Copy)]
struct Fast(u64);

impl std::hash::Hasher for Fast {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        self.0 = h;
    }
}

#[derive(Clone, Copy)]
struct Seeded(u64);

impl std::hash::BuildHasher for Seeded {
    type Hasher = Fast;
    fn build_hasher(&self) -> Fast {
        Fast(self.0)
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// A Space-Saving summary: at most `cap` keys, in a vector (the minimum is found by one scan
/// of contiguous counters), indexed by the seeded 64-bit hash of the identity (two identities
/// with the same hash would be counted as one: with 4096 keys at most, odds of 1 in 2^40).
/// Replacing a key reuses its slot's buffer, so a sampled request allocates only when its key
/// is longer than any the slot held.
struct Summary {
    items: Vec<Item>,
    /// `items[i].count`, contiguous for the scan.
    counts: Vec<u64>,
    index: HashMap<u64, u32, Seeded>,
    seed: u64,
    cap: usize,
}

impl Summary {
    fn new(cap: usize, seed: u64) -> Summary {
        Summary {
            items: Vec::new(),
            counts: Vec::new(),
            index: HashMap::with_hasher(Seeded(seed)),
            seed,
            cap,
        }
    }

    fn hash(&self, id: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut h = Fast(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        h.write(id);
        h.finish()
    }

    fn get(&self, id: &[u8]) -> Option<&Item> {
        let i = *self.index.get(&self.hash(id))?;
        Some(&self.items[i as usize])
    }

    /// Count one request for identity `id`.
    fn add(&mut self, id: &[u8], write: bool, backend: u16, db: u32) {
        let h = self.hash(id);
        if let Some(&i) = self.index.get(&h) {
            let i = i as usize;
            let it = &mut self.items[i];
            it.count += 1;
            self.counts[i] = it.count;
            if write {
                it.writes += 1;
            } else {
                it.reads += 1;
            }
            it.backend = backend;
            return;
        }
        let (reads, writes) = (u64::from(!write), u64::from(write));
        if self.items.len() < self.cap.max(1) {
            self.index.insert(h, self.items.len() as u32);
            self.items.push(Item {
                id: id.to_vec(),
                hash: h,
                count: 1,
                reads,
                writes,
                backend,
                db,
            });
            self.counts.push(1);
            return;
        }
        // Replace the key with the smallest count: the newcomer inherits it.
        let mut i = 0;
        for (j, &c) in self.counts.iter().enumerate() {
            if c < self.counts[i] {
                i = j;
            }
        }
        let it = &mut self.items[i];
        self.index.remove(&it.hash);
        self.index.insert(h, i as u32);
        it.id.clear();
        it.id.extend_from_slice(id);
        it.hash = h;
        it.count += 1;
        it.reads = reads;
        it.writes = writes;
        it.backend = backend;
        it.db = db;
        self.counts[i] = it.count;
    }
}

/// One entry of a report: a key with its estimated rates (requests per second).
#[derive(Clone, Debug, PartialEq)]
pub struct Hot {
    pub key: Vec<u8>,
    pub db: u32,
    /// Estimated requests per second, reads and writes together (Space-Saving's estimate).
    pub qps: u64,
    pub reads_per_sec: u64,
    pub writes_per_sec: u64,
    /// Config position of the backend the key lives on.
    pub backend: u16,
}

/// A pool's detector.
pub struct HotKeys {
    /// Entries reported (`hotkeys`); 0 = detection off.
    top: usize,
    /// One request in `sample` is counted.
    sample: u32,
    /// Requests left before the next sampled one.
    tick: u32,
    window_us: Micros,
    /// Start of the current window.
    started: Micros,
    cur: Summary,
    /// The last completed window (empty when the one before now was idle).
    prev: Summary,
    /// Sampled requests since start or RESET.
    pub sampled: u64,
    /// Reused composite key (db + key) buffer.
    scratch: Vec<u8>,
    seed: u64,
}

impl HotKeys {
    /// `top`: entries reported (0: off); `sample`: 1 in N requests counted; `window_ms`.
    pub fn new(top: usize, sample: u32, window_ms: u64, now: Micros) -> HotKeys {
        let cap = if top == 0 {
            0
        } else {
            (top * 4).clamp(64, 4096)
        };
        let seed = seed();
        HotKeys {
            top,
            sample: sample.max(1),
            tick: sample.max(1),
            window_us: crate::clock::ms(window_ms.max(1)),
            started: now,
            cur: Summary::new(cap, seed),
            prev: Summary::new(cap, seed),
            sampled: 0,
            scratch: Vec::new(),
            seed,
        }
    }

    pub fn enabled(&self) -> bool {
        self.top > 0
    }

    pub fn top(&self) -> usize {
        self.top
    }

    pub fn sample(&self) -> u32 {
        self.sample
    }

    pub fn window_ms(&self) -> u64 {
        self.window_us / 1000
    }

    /// Whether this request is one of the sampled ones. The only per-request cost.
    #[inline(always)]
    pub fn tick(&mut self) -> bool {
        if self.top == 0 {
            return false;
        }
        self.tick -= 1;
        if self.tick == 0 {
            self.tick = self.sample;
            true
        } else {
            false
        }
    }

    /// Count one sampled request (call only when `tick` said so).
    #[cold]
    pub fn record(&mut self, key: &[u8], db: u32, write: bool, backend: u16, now: Micros) {
        if self.top == 0 {
            return;
        }
        self.rotate(now);
        self.sampled += 1;
        let mut id = std::mem::take(&mut self.scratch);
        compose(&mut id, db, key);
        self.cur.add(&id, write, backend, db);
        self.scratch = id;
    }

    /// Start a new window when the current one is over.
    fn rotate(&mut self, now: Micros) {
        let elapsed = since(now, self.started);
        if elapsed < self.window_us {
            return;
        }
        let (cap, seed) = (self.cur.cap, self.seed);
        let cur = std::mem::replace(&mut self.cur, Summary::new(cap, seed));
        // Two windows or more without a request: the previous window is empty.
        self.prev = if elapsed < 2 * self.window_us {
            cur
        } else {
            Summary::new(cap, seed)
        };
        self.started = now - elapsed % self.window_us;
    }

    /// Forget everything (HOTKEYS RESET).
    pub fn reset(&mut self, now: Micros) {
        let (cap, seed) = (self.cur.cap, self.seed);
        self.cur = Summary::new(cap, seed);
        self.prev = Summary::new(cap, seed);
        self.started = now;
        self.sampled = 0;
    }

    /// Weights of the current and the previous summary in the sliding window that ends now
    /// (one window long). Without a request since the window ended, the current summary is
    /// not rotated yet: it is then the previous window, and the one before has left.
    fn weights(&self, now: Micros) -> (f64, f64) {
        let w = self.window_us as f64;
        let elapsed = since(now, self.started) as f64;
        if elapsed >= 2.0 * w {
            (0.0, 0.0)
        } else if elapsed >= w {
            (1.0 - (elapsed - w) / w, 0.0)
        } else {
            (1.0, 1.0 - elapsed / w)
        }
    }

    fn estimate(&self, cur: Option<&Item>, prev: Option<&Item>, now: Micros) -> [u64; 3] {
        let (cw, pw) = self.weights(now);
        let scale = self.sample as f64 * 1e6 / self.window_us as f64;
        let get = |f: fn(&Item) -> u64| {
            let c = cur.map_or(0, f) as f64 * cw;
            let p = prev.map_or(0, f) as f64 * pw;
            ((c + p) * scale).round() as u64
        };
        [get(|i| i.count), get(|i| i.reads), get(|i| i.writes)]
    }

    /// Estimated reads per second of `key` in `db` (0 when it is not tracked).
    pub fn read_rate(&mut self, key: &[u8], db: u32, now: Micros) -> u64 {
        if self.top == 0 {
            return 0;
        }
        let mut id = std::mem::take(&mut self.scratch);
        compose(&mut id, db, key);
        let r = self.estimate(self.cur.get(&id), self.prev.get(&id), now)[1];
        self.scratch = id;
        r
    }

    /// The `n` hottest keys now, hottest first (ties by key).
    pub fn report(&self, n: usize, now: Micros) -> Vec<Hot> {
        let mut out: Vec<Hot> = Vec::new();
        let (cw, pw) = self.weights(now);
        let ids = self.cur.items.iter().map(|it| &it.id[..]).chain(
            self.prev
                .items
                .iter()
                .map(|it| &it.id[..])
                .filter(|id| self.cur.get(id).is_none()),
        );
        for id in ids {
            let (c, p) = (self.cur.get(id), self.prev.get(id));
            let Some(any) = c.or(p) else { continue };
            if (c.is_none() || cw == 0.0) && (p.is_none() || pw == 0.0) {
                continue;
            }
            let [qps, reads, writes] = self.estimate(c, p, now);
            out.push(Hot {
                key: id.get(4..).unwrap_or_default().to_vec(),
                db: any.db,
                qps,
                reads_per_sec: reads,
                writes_per_sec: writes,
                backend: c.map_or(any.backend, |i| i.backend),
            });
        }
        out.sort_by(|a, b| b.qps.cmp(&a.qps).then_with(|| a.key.cmp(&b.key)));
        out.truncate(n.min(self.top));
        out
    }
}

/// The identity a key is counted under: its database, then at most `MAX_KEY` bytes of it.
fn compose(out: &mut Vec<u8>, db: u32, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&db.to_le_bytes());
    out.extend_from_slice(&key[..key.len().min(MAX_KEY)]);
}

/// A key as one printable line (INFO, labels): bytes outside printable ASCII as `\xHH`,
/// at most 128 bytes of the key shown.
pub fn printable(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len().min(128));
    for &b in key.iter().take(128) {
        match b {
            b'\\' => s.push_str("\\\\"),
            b',' => s.push_str("\\x2c"),
            0x21..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if key.len() > 128 {
        s.push_str("...");
    }
    s
}

/// What INFO hotkeys and /metrics show of one pool: its name, its detector's settings and
/// report (with backend names), and its cache's figures.
pub struct PoolHot {
    pub pool: String,
    pub top: usize,
    pub sample: u32,
    pub window_ms: u64,
    pub sampled: u64,
    /// (entry, backend name).
    pub hot: Vec<(Hot, String)>,
    pub cache: Option<crate::hotcache::Figures>,
}

/// The `# Hotkeys` INFO section.
pub fn info(pools: &[PoolHot]) -> String {
    use std::fmt::Write as _;
    let mut o = String::from("# Hotkeys\r\n");
    for p in pools {
        let _ = write!(
            o,
            "hotkeys_{}:top={},sample={},window_ms={},sampled={}\r\n",
            p.pool, p.top, p.sample, p.window_ms, p.sampled
        );
        for (i, (h, backend)) in p.hot.iter().enumerate() {
            let _ = write!(
                o,
                "hotkey_{}_{i}:key={},db={},qps={},reads={},writes={},backend={}\r\n",
                p.pool,
                printable(&h.key),
                h.db,
                h.qps,
                h.reads_per_sec,
                h.writes_per_sec,
                backend
            );
        }
        if let Some(c) = &p.cache {
            let _ = write!(
                o,
                "hotcache_{}:bytes={},max_bytes={},entries={},hits={},misses={},fetches={},invalidations={},evictions={},tracking_connections={}\r\n",
                p.pool,
                c.bytes,
                c.max_bytes,
                c.entries,
                c.hits,
                c.misses,
                c.fetches,
                c.invalidations,
                c.evictions,
                c.tracking
            );
        }
    }
    o
}

/// Prometheus families for the hot keys (top `SHOWN` per pool, so the label count is bounded)
/// and the caches.
pub fn prometheus(pools: &[PoolHot]) -> String {
    use std::fmt::Write as _;
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut o = String::new();
    o.push_str("# HELP rustproxy_hotkey_requests_per_second Estimated requests per second of the pool's hottest keys (rank 0 = hottest), reads and writes apart.\n# TYPE rustproxy_hotkey_requests_per_second gauge\n");
    for p in pools {
        for (i, (h, backend)) in p.hot.iter().take(SHOWN).enumerate() {
            for (op, v) in [("read", h.reads_per_sec), ("write", h.writes_per_sec)] {
                let _ = writeln!(
                    o,
                    "rustproxy_hotkey_requests_per_second{{pool=\"{}\",rank=\"{i}\",key=\"{}\",db=\"{}\",backend=\"{}\",op=\"{op}\"}} {v}",
                    esc(&p.pool),
                    esc(&printable(&h.key)),
                    h.db,
                    esc(backend)
                );
            }
        }
    }
    let caches: Vec<(&str, &crate::hotcache::Figures)> = pools
        .iter()
        .filter_map(|p| p.cache.as_ref().map(|c| (p.pool.as_str(), c)))
        .collect();
    if caches.is_empty() {
        return o;
    }
    type Field = fn(&crate::hotcache::Figures) -> u64;
    let families: [(&str, &str, &str, Field); 7] = [
        ("rustproxy_hotcache_bytes", "gauge", "Bytes the pool's hot-key cache holds.", |c| c.bytes as u64),
        ("rustproxy_hotcache_entries", "gauge", "Keys in the pool's hot-key cache.", |c| c.entries as u64),
        ("rustproxy_hotcache_hits_total", "counter", "GETs answered from the hot-key cache.", |c| c.hits),
        ("rustproxy_hotcache_misses_total", "counter", "GETs of the cache-eligible kind that went to a backend.", |c| c.misses),
        ("rustproxy_hotcache_fetches_total", "counter", "Values fetched on a tracking connection.", |c| c.fetches),
        ("rustproxy_hotcache_invalidations_total", "counter", "Entries dropped by an invalidation (Redis push, write through the proxy, flush, lost tracking connection).", |c| c.invalidations),
        ("rustproxy_hotcache_evictions_total", "counter", "Entries evicted to stay under hotkey_cache bytes.", |c| c.evictions),
    ];
    for (name, ty, help, f) in families {
        let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {ty}\n");
        for (pool, c) in &caches {
            let _ = writeln!(o, "{name}{{pool=\"{}\"}} {}", esc(pool), f(c));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Zipf(s) sampler over 1..=n by inverting the cumulative distribution.
    fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
        let mut c = Vec::with_capacity(n);
        let mut sum = 0.0;
        for i in 1..=n {
            sum += 1.0 / (i as f64).powf(s);
            c.push(sum);
        }
        c.iter().map(|x| x / sum).collect()
    }

    fn draw(cdf: &[f64], r: &mut Rng) -> usize {
        let u = r.unit();
        cdf.partition_point(|&x| x < u)
    }

    #[test]
    fn finds_the_hottest_keys_of_a_zipf_workload() {
        let mut h = HotKeys::new(10, 16, 10_000, 0);
        let cdf = zipf_cdf(100_000, 1.1);
        let mut r = Rng(0x9e3779b97f4a7c15);
        let mut now = 0;
        for _ in 0..400_000u64 {
            let k = draw(&cdf, &mut r);
            let key = format!("key:{k}");
            let write = r.next().is_multiple_of(10);
            if h.tick() {
                h.record(key.as_bytes(), 0, write, (k % 4) as u16, now);
            }
            now += 10; // 400k requests over 4 s
        }
        let top = h.report(10, now);
        assert_eq!(top.len(), 10);
        let names: Vec<String> = top
            .iter()
            .map(|h| String::from_utf8_lossy(&h.key).into_owned())
            .collect();
        // The five hottest of Zipf(1.1) are far apart from the rest: all found, in order.
        assert_eq!(
            &names[..5],
            ["key:0", "key:1", "key:2", "key:3", "key:4"],
            "{names:?}"
        );
        // key:0 gets ~1/zeta share of 100k req/s; writes are ~1/10 of it.
        assert!(top[0].qps > top[1].qps);
        assert!(top[0].writes_per_sec > 0 && top[0].writes_per_sec < top[0].reads_per_sec);
        assert_eq!(top[0].backend, 0);
        assert_eq!(top[1].backend, 1);
    }

    #[test]
    fn rates_follow_the_sliding_window() {
        let mut h = HotKeys::new(4, 1, 1_000, 0);
        // 1000 reads of "a" in the first second: 1000/s.
        for i in 0..1000 {
            assert!(h.tick());
            h.record(b"a", 0, false, 0, i * 1000);
        }
        let r = h.read_rate(b"a", 0, 999_000);
        assert!((990..=1010).contains(&r), "{r}");
        // Half-way through the next window with no more requests for "a" but one for "b":
        // half of the previous window still counts.
        h.record(b"b", 0, true, 1, 1_500_000);
        let r = h.read_rate(b"a", 0, 1_500_000);
        assert!((450..=550).contains(&r), "{r}");
        let top = h.report(4, 1_500_000);
        assert_eq!(top[0].key, b"a");
        assert_eq!(top[1].key, b"b");
        assert_eq!(top[1].writes_per_sec, 1);
        // Long idle: everything is forgotten.
        assert_eq!(h.read_rate(b"a", 0, 10_000_000), 0);
        assert!(h.report(4, 10_000_000).is_empty());
    }

    #[test]
    fn memory_is_bounded_and_databases_apart() {
        let mut h = HotKeys::new(2, 1, 1_000, 0);
        for i in 0..100_000u64 {
            h.record(format!("k{i}").as_bytes(), 0, false, 0, i);
        }
        assert!(h.cur.items.len() <= 64 && h.cur.index.len() == h.cur.items.len());
        let long = vec![b'x'; 10_000];
        h.record(&long, 0, false, 0, 0);
        assert!(h.cur.items.iter().all(|it| it.id.len() <= MAX_KEY + 4));
        h.reset(0);
        for _ in 0..10 {
            h.record(b"same", 3, false, 0, 5);
        }
        h.record(b"same", 0, false, 0, 5);
        let top = h.report(2, 10);
        assert_eq!(top[0].key, b"same");
        assert_eq!(top[0].db, 3);
        h.reset(20);
        assert!(h.report(2, 20).is_empty());
    }

    #[test]
    fn off_costs_nothing_and_sampling_is_one_in_n() {
        let mut off = HotKeys::new(0, 16, 1000, 0);
        assert!((0..1000).all(|_| !off.tick()));
        off.record(b"a", 0, false, 0, 0);
        assert!(off.report(10, 0).is_empty());
        let mut h = HotKeys::new(8, 16, 1000, 0);
        assert_eq!((0..1600).filter(|_| h.tick()).count(), 100);
    }

    #[test]
    fn printable_keys_are_one_safe_line() {
        assert_eq!(printable(b"user:1"), "user:1");
        assert_eq!(printable(b"a b\r\n,"), "a\\x20b\\x0d\\x0a\\x2c");
        assert!(printable(&[b'z'; 300]).ends_with("..."));
    }
}
