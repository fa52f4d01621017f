//! Key hash functions, bit-for-bit compatible with twemproxy (nutcracker 0.5.0).
//!
//! Every `HashKind` reproduces the matching `hash_<name>(key, len)` of
//! twemproxy's `src/hashkit`, including its quirks, because key placement
//! must be identical to a nutcracker fronting the same servers:
//!
//! * twemproxy passes keys as `const char *`, and on x86 `char` is signed.
//!   `one_at_a_time`, all four FNV variants and the third tail byte of
//!   `hsieh` widen such a `char` straight to an integer, so bytes `>= 0x80`
//!   are sign-extended (`0x80` becomes `0xffff_ff80`). `crc16` (which also
//!   never masks its running value to 16 bits), `crc32`, `crc32a`, `md5`, `murmur` and `jenkins` read bytes unsigned (or mask
//!   the difference away).
//! * `fnv1a_64` is not a 64-bit hash at all: it runs in 32 bits with the
//!   64-bit offset basis and prime truncated to 32 bits.
//! * `crc32` is libmemcached's variant: bits 16..31 of the standard CRC-32,
//!   masked to 15 bits. `crc32a` is the standard CRC-32.
//! * Multi-byte reads (`hsieh`, `murmur`, `jenkins`) are little-endian, as on
//!   the x86-64 builds these values were checked against.
//!
//! Invariants: all functions are pure, total (no panics on any input, the
//! empty key included) and allocation-free.

use md5::{Digest, Md5};

/// The key hash functions twemproxy offers, by their `hash:` config name.
///
/// Variant names follow twemproxy's (`fnv1a_64` is `Fnv1a_64`).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashKind {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    Fnv1a_64,
    Fnv1_32,
    Fnv1a_32,
    Hsieh,
    Murmur,
    Jenkins,
}

impl HashKind {
    /// Every hash kind, in twemproxy's declaration order.
    pub const ALL: [HashKind; 12] = [
        HashKind::OneAtATime,
        HashKind::Md5,
        HashKind::Crc16,
        HashKind::Crc32,
        HashKind::Crc32a,
        HashKind::Fnv1_64,
        HashKind::Fnv1a_64,
        HashKind::Fnv1_32,
        HashKind::Fnv1a_32,
        HashKind::Hsieh,
        HashKind::Murmur,
        HashKind::Jenkins,
    ];

    /// Parses twemproxy's config name (`fnv1a_64`, `murmur`, ...), ignoring
    /// ASCII case.
    pub fn from_name(s: &str) -> Option<HashKind> {
        HashKind::ALL
            .iter()
            .copied()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }

    /// twemproxy's config name for this hash.
    pub fn name(self) -> &'static str {
        match self {
            HashKind::OneAtATime => "one_at_a_time",
            HashKind::Md5 => "md5",
            HashKind::Crc16 => "crc16",
            HashKind::Crc32 => "crc32",
            HashKind::Crc32a => "crc32a",
            HashKind::Fnv1_64 => "fnv1_64",
            HashKind::Fnv1a_64 => "fnv1a_64",
            HashKind::Fnv1_32 => "fnv1_32",
            HashKind::Fnv1a_32 => "fnv1a_32",
            HashKind::Hsieh => "hsieh",
            HashKind::Murmur => "murmur",
            HashKind::Jenkins => "jenkins",
        }
    }

    /// Exactly twemproxy's `hash_<name>(key, len)`.
    ///
    /// Note that twemproxy never calls this for an empty key when placing it
    /// (it uses hash 0 instead); `Ring::pick` mirrors that, this function
    /// does not.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashKind::OneAtATime => one_at_a_time(key),
            HashKind::Md5 => md5_hash(key),
            HashKind::Crc16 => crc16(key),
            HashKind::Crc32 => (crc32fast::hash(key) >> 16) & 0x7fff,
            HashKind::Crc32a => crc32fast::hash(key),
            HashKind::Fnv1_64 => fnv1_64(key),
            HashKind::Fnv1a_64 => fnv1a_64(key),
            HashKind::Fnv1_32 => fnv1_32(key),
            HashKind::Fnv1a_32 => fnv1a_32(key),
            HashKind::Hsieh => hsieh(key),
            HashKind::Murmur => murmur(key),
            HashKind::Jenkins => jenkins(key),
        }
    }
}

/// MD5 digest of `data` (used by `md5` hashing and by ketama point
/// generation).
pub fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// Little-endian `u32` from the 4 bytes of `digest` at `4 * word`
/// (`word` is taken modulo 4); this is how twemproxy turns an MD5 digest
/// into `hash_md5` and into ketama points.
pub fn md5_word(digest: &[u8; 16], word: usize) -> u32 {
    let i = (word % 4) * 4;
    u32::from_le_bytes([digest[i], digest[i + 1], digest[i + 2], digest[i + 3]])
}

/// A C `char` (signed on x86) widened to `uint32_t`.
#[inline]
fn sext32(b: u8) -> u32 {
    b as i8 as u32
}

/// A C `char` (signed on x86) widened to `uint64_t`.
#[inline]
fn sext64(b: u8) -> u64 {
    b as i8 as u64
}

fn one_at_a_time(key: &[u8]) -> u32 {
    let mut v: u32 = 0;
    for &b in key {
        v = v.wrapping_add(sext32(b));
        v = v.wrapping_add(v << 10);
        v ^= v >> 6;
    }
    v = v.wrapping_add(v << 3);
    v ^= v >> 11;
    v.wrapping_add(v << 15)
}

fn md5_hash(key: &[u8]) -> u32 {
    md5_word(&md5_digest(key), 0)
}

/// CRC-16/XMODEM table (polynomial 0x1021, not reflected), as in twemproxy (and Redis Cluster).
pub(crate) const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// twemproxy's crc16: a CRC-16/XMODEM step, but the running value is a
/// `uint32_t` that is never masked, so bits above 16 keep the shifted-out
/// history and the result is a full 32-bit value (its low 16 bits are the
/// XMODEM CRC).
fn crc16(key: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &b in key {
        let idx = ((crc >> 8) ^ u32::from(b)) & 0xff;
        crc = (crc << 8) ^ u32::from(CRC16_TABLE[idx as usize]);
    }
    crc
}

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

fn fnv1_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_64_PRIME);
        h ^= sext64(b);
    }
    h as u32
}

fn fnv1a_64(key: &[u8]) -> u32 {
    // twemproxy truncates both constants to 32 bits and works in 32 bits.
    let mut h = FNV_64_INIT as u32;
    for &b in key {
        h ^= sext32(b);
        h = h.wrapping_mul(FNV_64_PRIME as u32);
    }
    h
}

fn fnv1_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_32_PRIME);
        h ^= sext32(b);
    }
    h
}

fn fnv1a_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h ^= sext32(b);
        h = h.wrapping_mul(FNV_32_PRIME);
    }
    h
}

#[inline]
fn le16(b0: u8, b1: u8) -> u32 {
    u32::from(u16::from_le_bytes([b0, b1]))
}

fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut hash: u32 = 0;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        hash = hash.wrapping_add(le16(c[0], c[1]));
        let tmp = (le16(c[2], c[3]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    match *chunks.remainder() {
        [a, b, c] => {
            hash = hash.wrapping_add(le16(a, b));
            hash ^= hash << 16;
            // twemproxy reads this byte through a signed `char`.
            hash ^= sext32(c) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [a, b] => {
            hash = hash.wrapping_add(le16(a, b));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [a] => {
            hash = hash.wrapping_add(u32::from(a));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // size_t length narrowed to uint32_t, as twemproxy does.
    let len = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &b) in rest.iter().enumerate() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

const JENKINS_INITVAL: u32 = 13;

#[inline]
fn jenkins_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline]
fn jenkins_final(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// Little-endian word from up to 4 bytes, missing high bytes zero.
#[inline]
fn le_partial(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .enumerate()
        .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (8 * i)))
}

/// Bob Jenkins' lookup3 `hashlittle` with twemproxy's initval of 13. All
/// of twemproxy's aligned/unaligned code paths agree on little-endian.
fn jenkins(key: &[u8]) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(JENKINS_INITVAL);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(le_partial(&rest[0..4]));
        b = b.wrapping_add(le_partial(&rest[4..8]));
        c = c.wrapping_add(le_partial(&rest[8..12]));
        jenkins_mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    let n = rest.len();
    a = a.wrapping_add(le_partial(&rest[..n.min(4)]));
    if n > 4 {
        b = b.wrapping_add(le_partial(&rest[4..n.min(8)]));
    }
    if n > 8 {
        c = c.wrapping_add(le_partial(&rest[8..n]));
    }
    jenkins_final(&mut a, &mut b, &mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in HashKind::ALL {
            assert_eq!(HashKind::from_name(k.name()), Some(k));
            assert_eq!(HashKind::from_name(&k.name().to_ascii_uppercase()), Some(k));
        }
        assert_eq!(HashKind::from_name("fnv1a"), None);
        assert_eq!(HashKind::from_name(""), None);
    }

    #[test]
    fn crc16_table_matches_twemproxy() {
        assert_eq!(CRC16_TABLE[1], 0x1021);
        assert_eq!(CRC16_TABLE[2], 0x2042);
        assert_eq!(CRC16_TABLE[255], 0x1EF0);
        // Low 16 bits are CRC-16/XMODEM ("123456789" -> 0x31C3).
        assert_eq!(HashKind::Crc16.hash(b"123456789") & 0xffff, 0x31C3);
    }

    /// Keys used for the golden vectors below (empty, ASCII, bytes >= 0x80,
    /// every tail length of the 4- and 12-byte block hashes).
    const GOLDEN_KEYS: [&[u8]; 11] = [
        b"",
        b"a",
        b"foo",
        b"hello world",
        b"\x80",
        b"\xff\xfe\x80",
        b"k\xe9y:\xc3\xa9t\xc3\xa9",
        b"0123456789abcdefghijklmnopqrstuvwxyz",
        b"abcdefghijkl",
        b"abcdefghijklm\x90\x91\xa2",
        b"ab\x80\x81cde\xf0\xf1",
    ];

    /// Values from twemproxy's hashkit C code compiled with gcc on x86-64
    /// (signed `char`), one per `GOLDEN_KEYS` entry.
    #[rustfmt::skip]
    const GOLDEN: [(HashKind, &[u32; 11]); 12] = [
        (HashKind::OneAtATime, &[0x00000000, 0xca2e9442, 0x238678dd, 0x3e4a5a57, 0xc31d4e27, 0x54cc64c2, 0x9b16f4bf, 0xfca1f8b4, 0x605b0340, 0x3db0bc2c, 0xe267f4ff]),
        (HashKind::Md5, &[0xd98c1dd4, 0xb975c10c, 0xdb18bdac, 0xbb3bb65e, 0x7edd398d, 0xdaeea645, 0x849224bd, 0x3d71b1e9, 0x06d6c99f, 0x524d9905, 0x393a4e0b]),
        (HashKind::Crc16, &[0x00000000, 0x00007c87, 0x0c3caf96, 0xf2063be4, 0x00009188, 0x1e0d6e25, 0x2c0974ea, 0xe663d518, 0xa372b7ff, 0x672ac980, 0x6fdbd328]),
        (HashKind::Crc32, &[0x00000000, 0x000068b7, 0x00000c73, 0x00000d4a, 0x00003fba, 0x0000265e, 0x00007a42, 0x00007db5, 0x00007678, 0x00004982, 0x000018e9]),
        (HashKind::Crc32a, &[0x00000000, 0xe8b7be43, 0x8c736521, 0x0d4a1185, 0x3fba6cad, 0x265ea2ec, 0xfa421f67, 0xfdb5537d, 0xf6781b24, 0xc982e182, 0x98e94c35]),
        (HashKind::Fnv1_64, &[0x84222325, 0x8601b7be, 0x6ba13533, 0xb1910e6f, 0x79fe485f, 0x93edf0fa, 0x4b08cffc, 0x0fc07f75, 0xda7a6075, 0xf8b9570b, 0x5800ee28]),
        (HashKind::Fnv1a_64, &[0x84222325, 0x8601ec8c, 0xfed9d577, 0x023cd2e7, 0x79fdec5f, 0x8f0e6190, 0x2dcaf8a6, 0xbca7efc1, 0xe05a5cb5, 0xf08bb67b, 0x48cc39d2]),
        (HashKind::Fnv1_32, &[0x811c9dc5, 0x050c5d7e, 0x408f5e13, 0x548da96f, 0xfaf3a29f, 0x914c917a, 0xbfb89d1c, 0x0304fe35, 0x65adc2d5, 0xd07d9beb, 0xf1f7f548]),
        (HashKind::Fnv1a_32, &[0x811c9dc5, 0xe40c292c, 0xa9f37ed7, 0xd58b3fa7, 0x04f3b29f, 0x626cb2b0, 0xe46d48a6, 0x7d3e7141, 0xe8fb3e15, 0xf9e4b09b, 0xb6363452]),
        (HashKind::Hsieh, &[0x00000000, 0x93642e87, 0x76d4d427, 0x4f799873, 0xd6f4cb32, 0xb2876529, 0x7c218964, 0x78995459, 0x5f624189, 0xc7b231ba, 0xbb873412]),
        (HashKind::Murmur, &[0x00000000, 0x4b41757c, 0xc4e0338f, 0x5e19153b, 0x90556245, 0xa3e1075d, 0x864a0acb, 0x75339e3a, 0xb805134a, 0xfd67238c, 0x47d3efb2]),
        (HashKind::Jenkins, &[0xdeadbefc, 0xe0a38690, 0x99f84f99, 0x153343fb, 0xb16fde48, 0x201bd2b5, 0xd9533d12, 0x3568cfe1, 0xfb8b49e3, 0x91e51600, 0x4694d5cd]),
    ];

    #[test]
    fn golden_vectors_match_twemproxy() {
        for (kind, expected) in GOLDEN {
            for (key, want) in GOLDEN_KEYS.iter().zip(expected.iter()) {
                assert_eq!(kind.hash(key), *want, "{} of {:?}", kind.name(), key);
            }
        }
    }

    #[test]
    fn sign_extension_matters_where_twemproxy_has_it() {
        // Same hash as the unsigned reading for ASCII, different for 0x80+.
        assert_ne!(HashKind::Fnv1a_32.hash(b"\x80"), {
            let mut h = FNV_32_INIT;
            h ^= 0x80;
            h.wrapping_mul(FNV_32_PRIME)
        });
    }

    #[test]
    fn md5_word_reads_little_endian() {
        let d = md5_digest(b"foo");
        assert_eq!(md5_word(&d, 0), HashKind::Md5.hash(b"foo"));
        assert_eq!(md5_word(&d, 5), md5_word(&d, 1));
    }

    #[test]
    fn long_and_odd_inputs_do_not_panic() {
        let big: Vec<u8> = (0..10_000u32).map(|i| (i * 131 % 256) as u8).collect();
        for kind in HashKind::ALL {
            for n in 0..40 {
                let _ = kind.hash(&big[..n]);
            }
            let _ = kind.hash(&big);
        }
    }
}
