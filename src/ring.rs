//! Key-to-server placement, identical to twemproxy (nutcracker 0.5.0).
//!
//! A [`Ring`] is built from the pool's servers in config order and answers
//! "which server owns this key" with an index into that list. It mirrors
//! twemproxy's `ketama_update`/`ketama_dispatch`, `modula_*` and `random_*`
//! plus the shortcuts of `server_pool_idx`/`server_pool_hash`:
//!
//! * twemproxy sorts a pool's servers by identity (`server->name`: shorter
//!   first, then bytewise) while validating the config, and builds its
//!   continuum over that order. Modula slots (and ketama tie-breaking) follow
//!   that sorted order here too; `pick` still answers with the caller's
//!   config-order index.
//! * Only live nodes get points; dead ones are skipped exactly as twemproxy
//!   skips ejected servers, so a rebuilt ring after an ejection places keys
//!   where nutcracker would.
//! * Ketama gives each live server `floor(weight/total * 160/4 * nlive) * 4`
//!   points, computed with twemproxy's `float`/`double` mix so the counts
//!   (including rounding quirks such as 3 equal servers) are identical.
//!   Point `4*i + x` of a server is little-endian word `x` of
//!   `md5("<identity>-<i>")`. Lookup is the first point `>= hash`,
//!   wrapping to the first point.
//! * Modula lays each live server out `weight` times, in config order, and
//!   picks slot `hash % total_weight`.
//! * An empty key hashes to 0, and a pool of exactly one (live) server
//!   always answers 0, without hashing, as twemproxy does.
//!
//! Invariants: a `Ring` is immutable once built (only the RNG of `Random`
//! advances); `pick` never allocates, never panics, and returns either
//! `None` (no live node) or `Some(i)` with `i < nodes.len()` and
//! `nodes[i].live`. Lookups are O(log n).

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::hash::{md5_digest, md5_word, HashKind};

/// twemproxy's `distribution:` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    Ketama,
    Modula,
    Random,
}

impl Distribution {
    /// Parses twemproxy's config name, ignoring ASCII case.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ]
        .into_iter()
        .find(|d| d.name().eq_ignore_ascii_case(s))
    }

    /// twemproxy's config name.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }
}

/// One server as the ring sees it.
#[derive(Clone, Debug)]
pub struct RingNode {
    /// Bytes hashed into ketama points; see [`node_identity`].
    pub identity: Vec<u8>,
    /// Config weight (twemproxy rejects 0; here a 0 weight gets no slots).
    pub weight: u32,
    /// Whether the node currently takes keys (false once ejected).
    pub live: bool,
}

/// Port twemproxy (after libmemcached) leaves out of a nameless identity.
const KETAMA_DEFAULT_PORT: u16 = 11211;

/// twemproxy's identity string for ketama points (`server->name`).
///
/// * With a name on the config line (`host:port:weight name`): the name.
/// * Without one: `"host:port"`, except that for port 11211 it is just
///   `"host"` (libmemcached compatibility, see `conf_add_server`).
/// * A unix socket (`/path:weight`, `host` starting with `/`) has no port,
///   so twemproxy's length arithmetic yields `"/path:"` (trailing colon).
///
/// `host` is used as written in the config (not resolved). twemproxy keeps
/// the port text as written too, so a config port like `06379` would give
/// `host:06379` there; a `u16` cannot carry that, so callers with such
/// configs must pass the name themselves.
pub fn node_identity(host: &str, port: u16, name: Option<&str>) -> Vec<u8> {
    if let Some(name) = name {
        return name.as_bytes().to_vec();
    }
    if host.starts_with('/') {
        return format!("{host}:").into_bytes();
    }
    if port == KETAMA_DEFAULT_PORT {
        host.as_bytes().to_vec()
    } else {
        format!("{host}:{port}").into_bytes()
    }
}

/// twemproxy `hash_tag` semantics.
///
/// With tag `[open, close]`: find the first `open` in `key`, then the first
/// `close` after it; if the bytes between them are non-empty, only they are
/// hashed. In every other case (no tag configured, no `open`, no `close`
/// after it, or an empty `{}`) the whole key is hashed. twemproxy does not
/// look for a later tag after an empty one.
#[inline]
pub fn hash_tag(key: &[u8], tag: Option<[u8; 2]>) -> &[u8] {
    let Some([open, close]) = tag else {
        return key;
    };
    let Some(start) = find_byte(key, open) else {
        return key;
    };
    let after = key.get(start + 1..).unwrap_or_default();
    match find_byte(after, close) {
        Some(len) if len > 0 => after.get(..len).unwrap_or(key),
        _ => key,
    }
}

/// The first position of `b` in `hay`, eight bytes at a time (keys are scanned for the hash
/// tag on every request; most have none).
#[inline]
fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(b as u64);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ pattern;
        // The lowest set bit marks the first zero byte exactly (borrows only run upward).
        let t = w.wrapping_sub(LO) & !w & HI;
        if t != 0 {
            return Some(at + (t.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x == b)
        .map(|p| at + p)
}

const KETAMA_POINTS_PER_SERVER: u32 = 160;
/// Ketama lookups index the continuum by the top bits of the hash (4,096 ranges).
const BUCKET_BITS: u32 = 12;

/// The node of the first point >= `h` (wrapping to the first point), as a binary search over
/// the whole continuum finds it: every point of an earlier bucket is < h, every point of a
/// later one is > h, so only h's own bucket is searched.
#[inline]
fn ketama_lookup(points: &[(u32, usize)], index: &[u32], h: u32) -> Option<usize> {
    let b = (h >> (32 - BUCKET_BITS)) as usize;
    let start = index.get(b).map_or(points.len(), |&i| i as usize);
    let end = index.get(b + 1).map_or(points.len(), |&i| i as usize);
    let i = start
        + points
            .get(start..end)
            .map_or(0, |r| r.partition_point(|&(v, _)| v < h));
    points.get(i).or_else(|| points.first()).map(|&(_, n)| n)
}

/// For each range of hash values (top `BUCKET_BITS` bits), the index of its first point in
/// the sorted continuum.
fn bucket_index(points: &[(u32, usize)]) -> Vec<u32> {
    (0..1u64 << BUCKET_BITS)
        .map(|b| {
            let lo = b << (32 - BUCKET_BITS);
            points.partition_point(|&(v, _)| u64::from(v) < lo) as u32
        })
        .collect()
}
const KETAMA_POINTS_PER_HASH: u32 = 4;

/// How the live nodes are laid out for lookup.
#[derive(Clone, Debug)]
enum Layout {
    /// Ketama continuum: `(point, node index)` sorted by point (stable, so
    /// equal points keep config order as glibc's merge-sort qsort does), and
    /// for each of the `1 << BUCKET_BITS` ranges of hash values the index of the
    /// first point in it: a lookup searches only its own range (a few points)
    /// instead of the whole continuum.
    Ketama(Vec<(u32, usize)>, Vec<u32>),
    /// Modula: `(cumulative weight end, node index)` for live nodes in
    /// config order, plus the total live weight.
    Modula(Vec<(u64, usize)>, u64),
    /// Random: indices of the live nodes.
    Random(Vec<usize>),
}

/// An immutable placement table for one server pool; rebuild it when
/// membership or liveness changes.
#[derive(Clone, Debug)]
pub struct Ring {
    hash: HashKind,
    dist: Distribution,
    nodes: usize,
    live: usize,
    layout: Layout,
    rng: Cell<u64>,
}

impl Ring {
    /// Builds the ring over `nodes` (config order). Only live nodes get
    /// points, as twemproxy's `*_update` does after an ejection.
    pub fn build(hash: HashKind, dist: Distribution, nodes: &[RingNode]) -> Ring {
        let live = nodes.iter().filter(|n| n.live).count();
        let order = twemproxy_order(nodes);
        let layout = match dist {
            Distribution::Ketama => {
                let points = ketama_points(nodes, &order, live);
                let index = bucket_index(&points);
                Layout::Ketama(points, index)
            }
            Distribution::Modula => {
                let mut end = 0u64;
                let mut slots = Vec::with_capacity(live);
                for &i in &order {
                    let Some(n) = nodes.get(i) else { continue };
                    if n.live && n.weight > 0 {
                        end += u64::from(n.weight);
                        slots.push((end, i));
                    }
                }
                Layout::Modula(slots, end)
            }
            Distribution::Random => Layout::Random(
                order
                    .iter()
                    .copied()
                    .filter(|&i| nodes.get(i).is_some_and(|n| n.live))
                    .collect(),
            ),
        };
        Ring {
            hash,
            dist,
            nodes: nodes.len(),
            live,
            layout,
            rng: Cell::new(rng_seed()),
        }
    }

    /// Picks the node for `key` (already reduced by [`hash_tag`]). Returns
    /// an index into the `nodes` given to [`Ring::build`], or `None` when no
    /// node is live.
    pub fn pick(&self, key: &[u8]) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        if self.nodes == 1 {
            // server_pool_idx: a one-server pool skips hashing entirely.
            return Some(0);
        }
        match &self.layout {
            Layout::Ketama(points, index) => ketama_lookup(points, index, self.key_hash(key)),
            Layout::Modula(slots, total) => {
                if *total == 0 {
                    return None;
                }
                let slot = u64::from(self.key_hash(key)) % total;
                let i = slots.partition_point(|&(end, _)| end <= slot);
                slots.get(i).map(|&(_, n)| n)
            }
            Layout::Random(live) => {
                if live.is_empty() {
                    return None;
                }
                let r = self.next_random();
                let i = (r % live.len() as u64) as usize;
                live.get(i).copied()
            }
        }
    }

    /// The key hash this ring was built with.
    pub fn hash_kind(&self) -> HashKind {
        self.hash
    }

    /// The distribution this ring was built with.
    pub fn distribution(&self) -> Distribution {
        self.dist
    }

    /// Number of live nodes (those that can be picked).
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// Number of ketama points or modula slots (random: live nodes).
    pub fn point_count(&self) -> usize {
        match &self.layout {
            Layout::Ketama(p, _) => p.len(),
            Layout::Modula(_, total) => usize::try_from(*total).unwrap_or(usize::MAX),
            Layout::Random(l) => l.len(),
        }
    }

    /// server_pool_hash: an empty key hashes to 0 without calling the hash.
    fn key_hash(&self, key: &[u8]) -> u32 {
        if key.is_empty() {
            0
        } else {
            self.hash.hash(key)
        }
    }

    /// xorshift64* step.
    fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Ketama points per live node, in twemproxy's float arithmetic:
/// `pct` is `float`, the product is `float`, the `1e-10` addend promotes it
/// to `double`, which is narrowed back to `float` before `floorf`.
fn ketama_point_count(weight: u32, total_weight: u64, nlive: usize) -> u32 {
    if weight == 0 || total_weight == 0 {
        return 0;
    }
    let pct = weight as f32 / total_weight as f32;
    let per_hash = KETAMA_POINTS_PER_HASH as f32;
    let f = pct * KETAMA_POINTS_PER_SERVER as f32 / per_hash * nlive as f32;
    let floored = ((f64::from(f) + 0.000_000_000_1) as f32).floor();
    // Float-to-int `as` saturates; pct <= 1 keeps this bounded anyway.
    (floored * per_hash) as u32
}

/// Node indices in the order twemproxy keeps its servers: sorted by
/// identity with `string_compare` (length first, then bytes). Equal
/// identities (which twemproxy rejects) keep config order.
fn twemproxy_order(nodes: &[RingNode]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&nodes[a].identity, &nodes[b].identity);
        x.len().cmp(&y.len()).then_with(|| x.cmp(y))
    });
    order
}

fn ketama_points(nodes: &[RingNode], order: &[usize], nlive: usize) -> Vec<(u32, usize)> {
    // twemproxy sums into a uint32_t; a sum that overflows it is undefined
    // behaviour there (continuum overrun), so a u64 sum is used here.
    let total_weight: u64 = nodes
        .iter()
        .filter(|n| n.live)
        .map(|n| u64::from(n.weight))
        .sum();
    let count = |n: &RingNode| {
        if n.live {
            ketama_point_count(n.weight, total_weight, nlive)
        } else {
            0
        }
    };
    let total_points: usize = nodes.iter().map(|n| count(n) as usize).sum();
    let mut points = Vec::with_capacity(total_points);
    let mut label = Vec::new();
    for &index in order {
        let Some(node) = nodes.get(index) else {
            continue;
        };
        for i in 0..count(node) / KETAMA_POINTS_PER_HASH {
            // "%.*s-%u" of the identity and the 0-based hash number.
            label.clear();
            label.extend_from_slice(&node.identity);
            label.extend_from_slice(format!("-{i}").as_bytes());
            let digest = md5_digest(&label);
            for word in 0..KETAMA_POINTS_PER_HASH as usize {
                points.push((md5_word(&digest, word), index));
            }
        }
    }
    points.sort_by_key(|&(v, _)| v);
    points
}

/// A non-zero seed for the random distribution's xorshift generator.
fn rng_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser, then force non-zero (xorshift's fixed point).
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_agrees_with_position() {
        let hay: Vec<u8> = (0..40u8)
            .map(|i| b"ab{c}de\x7f\x80\xff"[i as usize % 10])
            .collect();
        for len in 0..hay.len() {
            for b in [b'{', b'}', b'a', 0x7f, 0x80, 0xff, b'z', 0] {
                let h = &hay[..len];
                assert_eq!(find_byte(h, b), h.iter().position(|&x| x == b), "{len} {b}");
            }
        }
        // Bytes around a match (borrow cases): 0x01 before the target, 0x00 after.
        for b in [1u8, 2, 0x7b, 0xfe] {
            for at in 0..16 {
                let mut h = vec![b.wrapping_add(1); 16];
                h[at] = b;
                assert_eq!(find_byte(&h, b), Some(at));
            }
        }
    }

    fn nodes(weights: &[u32]) -> Vec<RingNode> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| RingNode {
                identity: node_identity("127.0.0.1", 7000 + i as u16, None),
                weight: w,
                live: true,
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("key:{i}").into_bytes()).collect()
    }

    /// The bucketed ketama lookup finds the node a binary search over the whole continuum
    /// finds, for every hash value near a point and for a spread of others.
    #[test]
    fn ketama_buckets_match_full_search() {
        for weights in [&[1u32, 1, 1, 1][..], &[5, 1, 2, 10], &[1], &[3, 0, 1]] {
            let ring = Ring::build(HashKind::Md5, Distribution::Ketama, &nodes(weights));
            let Layout::Ketama(points, index) = &ring.layout else {
                panic!("not ketama");
            };
            let full = |h: u32| {
                let i = points.partition_point(|&(v, _)| v < h);
                points.get(i).or_else(|| points.first()).map(|&(_, n)| n)
            };
            let bucketed = |h: u32| ketama_lookup(points, index, h);
            let mut probes: Vec<u32> = vec![0, 1, u32::MAX, u32::MAX - 1];
            for &(v, _) in points.iter() {
                probes.extend([v.wrapping_sub(1), v, v.wrapping_add(1)]);
            }
            probes.extend((0..20_000u32).map(|i| i.wrapping_mul(2_654_435_761)));
            for h in probes {
                assert_eq!(bucketed(h), full(h), "hash {h:#x}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for d in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            assert_eq!(Distribution::from_name(d.name()), Some(d));
            assert_eq!(Distribution::from_name(&d.name().to_uppercase()), Some(d));
        }
        assert_eq!(Distribution::from_name("consistent"), None);
    }

    #[test]
    fn identity_rules() {
        assert_eq!(node_identity("10.0.0.1", 6379, None), b"10.0.0.1:6379");
        assert_eq!(node_identity("10.0.0.1", 11211, None), b"10.0.0.1");
        assert_eq!(node_identity("10.0.0.1", 11211, Some("srv1")), b"srv1");
        assert_eq!(node_identity("/tmp/r.sock", 0, None), b"/tmp/r.sock:");
    }

    #[test]
    fn hash_tag_rules() {
        let t = Some(*b"{}");
        assert_eq!(hash_tag(b"user:{42}:name", t), b"42");
        assert_eq!(hash_tag(b"{a}{b}", t), b"a");
        assert_eq!(hash_tag(b"x{}y{z}", t), b"x{}y{z}");
        assert_eq!(hash_tag(b"x{yz", t), b"x{yz");
        assert_eq!(hash_tag(b"x}y{", t), b"x}y{");
        assert_eq!(hash_tag(b"}{x}", t), b"x");
        assert_eq!(hash_tag(b"{", t), b"{");
        assert_eq!(hash_tag(b"", t), b"");
        assert_eq!(hash_tag(b"a{b}c", None), b"a{b}c");
        assert_eq!(hash_tag(b"a:b:c", Some(*b"::")), b"b");
    }

    #[test]
    fn ketama_point_counts_follow_twemproxy_float_math() {
        // Equal weights: 160 points each, up to the float rounding quirk.
        assert_eq!(ketama_point_count(1, 10, 10), 160);
        assert_eq!(ketama_point_count(1, 4, 4), 160);
        // 1/3 in float times 40 times 3 rounds just under 40 -> 39*4.
        let three = ketama_point_count(1, 3, 3);
        assert!(three == 156 || three == 160, "{three}");
        assert_eq!(ketama_point_count(1, 2, 2), 160);
        assert_eq!(ketama_point_count(3, 4, 2), 240);
        assert_eq!(ketama_point_count(0, 4, 2), 0);
        assert_eq!(ketama_point_count(1, 0, 2), 0);
        let r = Ring::build(HashKind::Fnv1a_64, Distribution::Ketama, &nodes(&[1; 10]));
        assert_eq!(r.point_count(), 1600);
    }

    #[test]
    fn placement_is_stable_across_builds() {
        let ns = nodes(&[1, 2, 1, 3]);
        for dist in [Distribution::Ketama, Distribution::Modula] {
            let a = Ring::build(HashKind::Murmur, dist, &ns);
            let b = Ring::build(HashKind::Murmur, dist, &ns);
            for k in keys(2000) {
                let p = a.pick(&k);
                assert!(p.is_some_and(|i| i < ns.len()));
                assert_eq!(p, b.pick(&k));
            }
        }
    }

    #[test]
    fn ketama_removal_moves_only_the_removed_nodes_keys() {
        let mut ns = nodes(&[1; 10]);
        let before = Ring::build(HashKind::Fnv1a_64, Distribution::Ketama, &ns);
        ns[3].live = false;
        let after = Ring::build(HashKind::Fnv1a_64, Distribution::Ketama, &ns);
        assert_eq!(after.live_count(), 9);
        let ks = keys(100_000);
        let mut moved = 0usize;
        for k in &ks {
            let (b, a) = (before.pick(k), after.pick(k));
            assert_ne!(a, Some(3));
            if b == Some(3) {
                moved += 1;
            } else {
                assert_eq!(a, b, "key {:?} not on the removed node moved", k);
            }
        }
        let frac = moved as f64 / ks.len() as f64;
        assert!((0.05..0.2).contains(&frac), "moved {frac}");
    }

    #[test]
    fn weights_skew_distribution_proportionally() {
        let weights = [1u32, 2, 3, 4];
        let ns = nodes(&weights);
        let ks = keys(100_000);
        for dist in [Distribution::Ketama, Distribution::Modula] {
            let r = Ring::build(HashKind::Fnv1a_64, dist, &ns);
            let mut counts = [0usize; 4];
            for k in &ks {
                if let Some(i) = r.pick(k) {
                    counts[i] += 1;
                }
            }
            for (i, &w) in weights.iter().enumerate() {
                let share = counts[i] as f64 / ks.len() as f64;
                let want = f64::from(w) / 10.0;
                assert!(
                    (share - want).abs() < want * 0.25,
                    "{dist:?} node {i}: share {share}, want {want}"
                );
            }
        }
    }

    #[test]
    fn modula_layout_matches_twemproxy_slots() {
        // Slots: [0, 1, 1, 2] for weights 1,2,1; hash % 4 picks the slot.
        let ns = nodes(&[1, 2, 1]);
        let r = Ring::build(HashKind::Crc32a, Distribution::Modula, &ns);
        for k in keys(500) {
            let slot = HashKind::Crc32a.hash(&k) % 4;
            let want = [0, 1, 1, 2][slot as usize];
            assert_eq!(r.pick(&k), Some(want));
        }
    }

    #[test]
    fn modula_slots_follow_twemproxy_name_order() {
        // twemproxy sorts by (length, bytes): "b" < "aa" < "ab".
        let ns: Vec<RingNode> = ["ab", "b", "aa"]
            .iter()
            .map(|n| RingNode {
                identity: n.as_bytes().to_vec(),
                weight: 1,
                live: true,
            })
            .collect();
        let r = Ring::build(HashKind::Crc32a, Distribution::Modula, &ns);
        for k in keys(300) {
            let slot = HashKind::Crc32a.hash(&k) % 3;
            let want = [1, 2, 0][slot as usize];
            assert_eq!(r.pick(&k), Some(want));
        }
        // Ketama does not depend on the listing order.
        let a = Ring::build(HashKind::Crc32a, Distribution::Ketama, &ns);
        let rev: Vec<RingNode> = ns.iter().rev().cloned().collect();
        let b = Ring::build(HashKind::Crc32a, Distribution::Ketama, &rev);
        for k in keys(300) {
            assert_eq!(a.pick(&k).map(|i| 2 - i), b.pick(&k));
        }
    }

    #[test]
    fn dead_nodes_are_never_picked_and_all_dead_is_none() {
        for dist in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            let mut ns = nodes(&[1, 1, 1, 1]);
            ns[1].live = false;
            let r = Ring::build(HashKind::Md5, dist, &ns);
            let mut seen = [false; 4];
            for k in keys(2000) {
                let i = r.pick(&k);
                assert!(i.is_some_and(|i| i != 1), "{dist:?}");
                if let Some(i) = i {
                    seen[i] = true;
                }
            }
            assert_eq!(seen, [true, false, true, true], "{dist:?}");
            for n in &mut ns {
                n.live = false;
            }
            let r = Ring::build(HashKind::Md5, dist, &ns);
            assert_eq!(r.live_count(), 0);
            assert_eq!(r.pick(b"x"), None);
            assert_eq!(r.pick(b""), None);
            let empty = Ring::build(HashKind::Md5, dist, &[]);
            assert_eq!(empty.pick(b"x"), None);
        }
    }

    #[test]
    fn empty_key_uses_hash_zero_and_single_node_is_zero() {
        let ns = nodes(&[1, 1, 1]);
        let r = Ring::build(HashKind::Jenkins, Distribution::Modula, &ns);
        // hash 0 % 3 == slot 0, although jenkins("") != 0.
        assert_eq!(r.pick(b""), Some(0));
        let one = Ring::build(HashKind::Jenkins, Distribution::Ketama, &ns[..1]);
        assert_eq!(one.pick(b"anything"), Some(0));
        assert_eq!(one.hash_kind(), HashKind::Jenkins);
        assert_eq!(one.distribution(), Distribution::Ketama);
    }

    #[test]
    fn zero_weights_do_not_panic() {
        let ns = nodes(&[0, 0]);
        for dist in [Distribution::Ketama, Distribution::Modula] {
            let r = Ring::build(HashKind::Md5, dist, &ns);
            assert_eq!(r.pick(b"k"), None);
        }
    }
}
