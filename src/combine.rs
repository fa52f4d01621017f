//! Reply combiners: how the sub-replies of a split or fanned-out request become the one reply
//! the client sees (MGET reassembly in key order, MSET, summed integers, merged admin replies,
//! SCAN cursors over backends, concatenated subscription confirmations).
//!
//! Invariants: a combiner reads only the parts it is given (one per sub-request, each a
//! complete RESP reply) and writes exactly one reply; a failed part becomes an error (or a nil
//! with `split_partial`), never a malformed reply. Depends on resp and the command table only.

use std::rc::Rc;

use crate::commands::Merge;
use crate::resp::{self, Reply};
use crate::router::{parse_u64, SCAN_INDEX_BITS};

/// How sub-replies become one reply.
#[derive(Debug)]
pub enum Combine {
    /// `partial`: a failed part answers nil for its keys instead of failing the whole reply.
    Mget {
        order: Vec<(u32, u32)>,
        partial: bool,
    },
    Mset,
    /// `partial`: failed parts are left out of the sum (unless every part failed).
    SumInt {
        partial: bool,
    },
    Merge {
        merge: Merge,
        names: Rc<Vec<String>>,
    },
    Scan {
        server: usize,
        nservers: usize,
    },
    /// The parts one after another (subscription confirmations).
    Concat,
    /// COMMAND and its INFO / DOCS / LIST / COUNT: backend 0's reply with the proxy's own
    /// commands put in.
    Splice(Splice),
    /// INFO with the Keyspace section: the proxy's text with the backends' `dbN:` lines,
    /// summed per database, put in at byte `at` (see [`keyspace`]).
    Info {
        text: String,
        at: usize,
    },
}

/// How the proxy's own entries join a backend's reply (one part).
#[derive(Debug)]
pub enum Splice {
    /// An array of `slots.len()` elements, in order: a `None` slot takes the backend array's
    /// next element, a `Some` one is the proxy's (already encoded).
    Fill(Vec<Option<Vec<u8>>>),
    /// The backend's aggregate with `n` more encoded elements (`extra`) after its own; for a map
    /// (RESP3), `n` counts pairs.
    Append { extra: Vec<u8>, n: usize },
    /// The backend's integer plus `n`.
    Add(i64),
}

fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-') | Some(b'!'))
}

fn is_nil(reply: &[u8]) -> bool {
    reply == b"$-1\r\n" || reply == b"*-1\r\n" || reply == b"_\r\n"
}

fn unexpected(out: &mut Vec<u8>) {
    resp::write_error(out, b"ERR unexpected reply from a backend");
}

/// The integer value of a `:n` reply.
fn int_of(reply: &[u8]) -> Option<i64> {
    match resp::parse_reply(reply) {
        Ok(Some((Reply::Integer(v), _))) => Some(v),
        _ => None,
    }
}

impl Combine {
    /// Put the parts together into `out`. Parts are complete replies.
    pub fn combine(&self, parts: &[Vec<u8>], resp3: bool, out: &mut Vec<u8>) {
        let first_error = parts.iter().find(|p| is_error(p));
        match self {
            Combine::Mget { order, partial } => {
                if let Some(e) = first_error {
                    if !partial {
                        out.extend_from_slice(e);
                        return;
                    }
                }
                // Element ranges of all parts in one list, and where each part's start (None
                // for a failed part, partial mode): two allocations whatever the split.
                let mut all: Vec<(usize, usize)> = Vec::with_capacity(order.len());
                let mut ranges: Vec<Option<(usize, usize)>> = Vec::with_capacity(parts.len());
                let mut r = Vec::new();
                for p in parts {
                    if is_error(p) {
                        ranges.push(None);
                        continue;
                    }
                    match resp::aggregate_elements(p, &mut r) {
                        Ok(Some(_)) => {
                            ranges.push(Some((all.len(), r.len())));
                            all.extend_from_slice(&r);
                        }
                        _ => return unexpected(out),
                    }
                }
                let start = out.len();
                resp::write_array_len(out, order.len());
                for &(g, i) in order {
                    match ranges.get(g as usize) {
                        Some(None) => resp::write_nil(out, resp3),
                        Some(&Some((at, n))) => match all[at..at + n].get(i as usize) {
                            Some(&(s, e)) => out.extend_from_slice(&parts[g as usize][s..e]),
                            None => {
                                out.truncate(start);
                                return unexpected(out);
                            }
                        },
                        None => {
                            out.truncate(start);
                            return unexpected(out);
                        }
                    }
                }
            }
            Combine::Info { text, at } => {
                let (head, tail) = text.split_at((*at).min(text.len()));
                let whole = format!("{head}{}{tail}", keyspace(parts));
                resp::write_verbatim(out, b"txt", whole.as_bytes(), resp3);
            }
            Combine::Mset => match parts.iter().find(|p| p.as_slice() != b"+OK\r\n") {
                Some(p) if is_error(p) => out.extend_from_slice(p),
                Some(_) => unexpected(out),
                None => resp::write_simple(out, b"OK"),
            },
            Combine::SumInt { partial } => {
                if *partial && parts.iter().any(|p| !is_error(p)) {
                    let ok: Vec<Vec<u8>> = parts.iter().filter(|p| !is_error(p)).cloned().collect();
                    sum_ints(&ok, None, out)
                } else {
                    sum_ints(parts, first_error, out)
                }
            }
            Combine::Merge { merge, names } => merge_all(*merge, names, parts, resp3, out),
            Combine::Concat => {
                for p in parts {
                    out.extend_from_slice(p);
                }
            }
            Combine::Splice(how) => match (parts.first(), first_error) {
                (_, Some(e)) => out.extend_from_slice(e),
                (Some(p), None) => splice(how, p, out),
                (None, None) => unexpected(out),
            },
            Combine::Scan { server, nservers } => {
                if let Some(e) = first_error {
                    out.extend_from_slice(e);
                    return;
                }
                let Some(p) = parts.first() else {
                    return unexpected(out);
                };
                let mut r = Vec::new();
                let Ok(Some(_)) = resp::aggregate_elements(p, &mut r) else {
                    return unexpected(out);
                };
                if r.len() != 2 {
                    return unexpected(out);
                }
                let cursor = match resp::parse_reply(&p[r[0].0..r[0].1]) {
                    Ok(Some((Reply::Bulk(b), _))) | Ok(Some((Reply::Simple(b), _))) => parse_u64(b),
                    _ => None,
                };
                let Some(cursor) = cursor else {
                    return unexpected(out);
                };
                let next = if cursor == 0 {
                    if server + 1 < *nservers {
                        (server + 1) as u64
                    } else {
                        0
                    }
                } else if cursor >> (64 - SCAN_INDEX_BITS) != 0 {
                    resp::write_error(out, b"ERR backend cursor too large for the proxy");
                    return;
                } else {
                    (cursor << SCAN_INDEX_BITS) | *server as u64
                };
                resp::write_array_len(out, 2);
                let mut digits = Vec::with_capacity(20);
                resp::write_usize(&mut digits, next as usize);
                resp::write_bulk(out, &digits);
                out.extend_from_slice(&p[r[1].0..r[1].1]);
            }
        }
    }
}

fn sum_ints(parts: &[Vec<u8>], first_error: Option<&Vec<u8>>, out: &mut Vec<u8>) {
    if let Some(e) = first_error {
        out.extend_from_slice(e);
        return;
    }
    let mut sum: i64 = 0;
    for p in parts {
        match int_of(p) {
            Some(v) => sum = sum.saturating_add(v),
            None => return unexpected(out),
        }
    }
    resp::write_int(out, sum);
}

/// One line naming the backends that failed and why.
fn failures(names: &[String], parts: &[Vec<u8>]) -> String {
    let mut msg = String::new();
    let mut n = 0;
    for (i, p) in parts.iter().enumerate() {
        if p.first() == Some(&b'+') {
            continue;
        }
        n += 1;
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        let name = names.get(i).map(String::as_str).unwrap_or("?");
        let text = String::from_utf8_lossy(p);
        let text = text.trim_end().trim_start_matches(['-', '+', '!']);
        msg.push_str(&format!("{name}: {text}"));
    }
    format!("ERR {n} of {} backends failed: {msg}", parts.len())
}

fn merge_all(merge: Merge, names: &[String], parts: &[Vec<u8>], resp3: bool, out: &mut Vec<u8>) {
    let first_error = parts.iter().find(|p| is_error(p));
    match merge {
        Merge::AllOk => {
            // Status replies everywhere: the first backend's (`+OK`, `+Background saving
            // started`...). Anything else: one error naming what failed where.
            if parts.iter().all(|p| p.first() == Some(&b'+')) {
                if let Some(p) = parts.first() {
                    out.extend_from_slice(p);
                }
            } else if parts.len() == 1 {
                out.extend_from_slice(&parts[0]);
            } else {
                resp::write_error(out, failures(names, parts).as_bytes());
            }
        }
        Merge::SumInt => sum_ints(parts, first_error, out),
        Merge::ConcatArrays => {
            if let Some(e) = first_error {
                out.extend_from_slice(e);
                return;
            }
            let mut all = Vec::with_capacity(parts.len());
            let mut total = 0;
            for p in parts {
                let mut r = Vec::new();
                match resp::aggregate_elements(p, &mut r) {
                    Ok(Some(_)) => {
                        total += r.len();
                        all.push(r);
                    }
                    _ => return unexpected(out),
                }
            }
            resp::write_array_len(out, total);
            for (p, r) in parts.iter().zip(&all) {
                for &(s, e) in r {
                    out.extend_from_slice(&p[s..e]);
                }
            }
        }
        Merge::SameReply => {
            if let Some(e) = first_error {
                out.extend_from_slice(e);
            } else if parts.windows(2).all(|w| w[0] == w[1]) {
                if let Some(p) = parts.first() {
                    out.extend_from_slice(p);
                }
            } else {
                resp::write_error(out, b"ERR backends returned different replies");
            }
        }
        Merge::AndInts => {
            if let Some(e) = first_error {
                out.extend_from_slice(e);
                return;
            }
            let mut acc: Option<Vec<i64>> = None;
            for p in parts {
                let Ok(Some((Reply::Array(items), _))) = resp::parse_reply(p) else {
                    return unexpected(out);
                };
                let mut vals = Vec::with_capacity(items.len());
                for it in &items {
                    match it {
                        Reply::Integer(v) => vals.push(*v),
                        Reply::Boolean(b) => vals.push(*b as i64),
                        _ => return unexpected(out),
                    }
                }
                acc = Some(match acc {
                    None => vals,
                    Some(prev) if prev.len() == vals.len() => {
                        prev.iter().zip(&vals).map(|(a, b)| (*a).min(*b)).collect()
                    }
                    Some(_) => return unexpected(out),
                });
            }
            let acc = acc.unwrap_or_default();
            resp::write_array_len(out, acc.len());
            for v in acc {
                resp::write_int(out, v);
            }
        }
        Merge::ConfigGet => match parts.iter().find(|p| !is_error(p)) {
            Some(p) => out.extend_from_slice(p),
            None => match parts.first() {
                Some(e) => out.extend_from_slice(e),
                None => unexpected(out),
            },
        },
        Merge::PerBackend => {
            resp::write_array_len(out, parts.len());
            for (i, p) in parts.iter().enumerate() {
                resp::write_array_len(out, 2);
                let name = names.get(i).map(String::as_str).unwrap_or("?");
                resp::write_bulk(out, name.as_bytes());
                out.extend_from_slice(p);
            }
        }
        Merge::SameLibraries => {
            if let Some(e) = first_error {
                out.extend_from_slice(e);
                return;
            }
            let same = parts.windows(2).all(|w| w[0] == w[1]) || {
                let canon: Vec<Option<Vec<Vec<u8>>>> = parts.iter().map(|p| libraries(p)).collect();
                canon.iter().all(Option::is_some) && canon.windows(2).all(|w| w[0] == w[1])
            };
            if same {
                if let Some(p) = parts.first() {
                    out.extend_from_slice(p);
                }
            } else {
                resp::write_error(out, b"ERR backends returned different replies");
            }
        }
        Merge::RandomKey => random_key(parts, resp3, out),
        Merge::SumPairs => {
            if let Some(e) = first_error {
                out.extend_from_slice(e);
                return;
            }
            // [name, count, name, count, ...] in the same order from every backend.
            let mut acc: Vec<(Vec<u8>, i64)> = Vec::new();
            for p in parts {
                let Ok(Some((Reply::Array(items), _))) = resp::parse_reply(p) else {
                    return unexpected(out);
                };
                for (i, pair) in items.chunks(2).enumerate() {
                    let (Some(Reply::Bulk(name)), Some(Reply::Integer(n))) =
                        (pair.first(), pair.get(1))
                    else {
                        return unexpected(out);
                    };
                    match acc.get_mut(i) {
                        Some((_, total)) => *total += n,
                        None => acc.push((name.to_vec(), *n)),
                    }
                }
            }
            resp::write_array_len(out, acc.len() * 2);
            for (name, n) in acc {
                resp::write_bulk(out, &name);
                resp::write_int(out, n);
            }
        }
        Merge::Kill => kill(parts, out),
        Merge::FunctionStats => function_stats(parts, first_error, out),
        Merge::Scan => unexpected(out),
    }
}

/// The `dbN:keys=..,expires=..,avg_ttl=..` lines of Redis's Keyspace section, summed over the
/// backends' `INFO keyspace` replies: keys and expires add up, avg_ttl is the mean weighted by
/// each backend's expiring keys. Backends that failed are left out (INFO answers with what is
/// known, as for a backend down); databases come out in numeric order, like Redis's.
pub fn keyspace(parts: &[Vec<u8>]) -> String {
    let mut dbs: std::collections::BTreeMap<u64, (u64, u64, u128)> = Default::default();
    for p in parts {
        let text = match resp::parse_reply(p) {
            Ok(Some((Reply::Bulk(t), _))) => t,
            Ok(Some((Reply::Verbatim(t), _))) => t.get(4..).unwrap_or_default(),
            _ => continue,
        };
        for line in text.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let Some((db, fields)) = line.trim_end().split_once(':') else {
                continue;
            };
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let mut f = [0u64; 3];
            for kv in fields.split(',') {
                if let Some((name, v)) = kv.split_once('=') {
                    let i = match name {
                        "keys" => 0,
                        "expires" => 1,
                        "avg_ttl" => 2,
                        _ => continue,
                    };
                    f[i] = v.parse().unwrap_or(0);
                }
            }
            let e = dbs.entry(n).or_default();
            e.0 += f[0];
            e.1 += f[1];
            e.2 += f[2] as u128 * f[1] as u128;
        }
    }
    let mut o = String::new();
    for (db, (keys, expires, ttl)) in dbs {
        let avg = if expires == 0 {
            0
        } else {
            ttl / expires as u128
        };
        o.push_str(&format!(
            "db{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n"
        ));
    }
    o
}

/// One backend reply `p` with the proxy's entries put in (see [`Splice`]).
fn splice(how: &Splice, p: &[u8], out: &mut Vec<u8>) {
    if let Splice::Add(n) = how {
        return match int_of(p) {
            Some(v) => resp::write_int(out, v + n),
            None => unexpected(out),
        };
    }
    let mut r = Vec::new();
    let Ok(Some(ty)) = resp::aggregate_elements(p, &mut r) else {
        return unexpected(out);
    };
    match how {
        Splice::Fill(slots) => {
            let start = out.len();
            let mut theirs = r.iter();
            resp::write_array_len(out, slots.len());
            for slot in slots {
                match slot {
                    Some(mine) => out.extend_from_slice(mine),
                    None => match theirs.next() {
                        Some(&(s, e)) => out.extend_from_slice(&p[s..e]),
                        None => {
                            out.truncate(start);
                            return unexpected(out);
                        }
                    },
                }
            }
        }
        Splice::Append { extra, n } => {
            match ty {
                b'%' => resp::write_map_len(out, r.len() / 2 + n, true),
                b'~' => resp::write_set_len(out, r.len() + n, true),
                _ => resp::write_array_len(out, r.len() + n),
            }
            for &(s, e) in &r {
                out.extend_from_slice(&p[s..e]);
            }
            out.extend_from_slice(extra);
        }
        Splice::Add(_) => {}
    }
}

/// FUNCTION STATS over backends: the reply of the first backend whose `running_script` is not
/// nil, else the first backend's; any error fails the whole reply.
fn function_stats(parts: &[Vec<u8>], first_error: Option<&Vec<u8>>, out: &mut Vec<u8>) {
    if let Some(e) = first_error {
        out.extend_from_slice(e);
        return;
    }
    let running = |p: &Vec<u8>| -> bool {
        let pairs: Vec<(Reply, Reply)> = match resp::parse_reply(p) {
            Ok(Some((Reply::Map(m), _))) => m,
            Ok(Some((Reply::Array(a), _))) => {
                let mut it = a.into_iter();
                let mut v = Vec::new();
                while let (Some(k), Some(x)) = (it.next(), it.next()) {
                    v.push((k, x));
                }
                v
            }
            _ => return false,
        };
        pairs.iter().any(|(k, v)| {
            matches!(
                k,
                Reply::Bulk(b"running_script") | Reply::Simple(b"running_script")
            ) && !matches!(v, Reply::Nil)
        })
    };
    match parts.iter().find(|p| running(p)).or_else(|| parts.first()) {
        Some(p) => out.extend_from_slice(p),
        None => unexpected(out),
    }
}

/// SCRIPT KILL / FUNCTION KILL over backends, as one Redis would answer: `+OK` when any backend
/// killed a script; else the first error other than NOTBUSY that names the script's state
/// (UNKILLABLE, BUSY: a script of the other kind runs); else NOTBUSY when a backend said so
/// (a backend that could not be reached runs no script for us); else the first error.
fn kill(parts: &[Vec<u8>], out: &mut Vec<u8>) {
    let found = parts
        .iter()
        .find(|p| p.starts_with(b"+"))
        .or_else(|| {
            parts
                .iter()
                .find(|p| p.starts_with(b"-UNKILLABLE") || p.starts_with(b"-BUSY"))
        })
        .or_else(|| parts.iter().find(|p| p.starts_with(b"-NOTBUSY")))
        .or_else(|| parts.first());
    match found {
        Some(p) => out.extend_from_slice(p),
        None => unexpected(out),
    }
}

/// RANDOMKEY's parts: one DBSIZE reply per backend, then one RANDOMKEY reply per backend (same
/// order). A backend that has a key is picked at random, weighted by its key count, so each key
/// of the whole keyspace comes back about equally often (Redis's RANDOMKEY is uniform over one
/// server's keys). Nil when no backend has a key; an error only when every backend failed.
fn random_key(parts: &[Vec<u8>], resp3: bool, out: &mut Vec<u8>) {
    if !parts.len().is_multiple_of(2) {
        return unexpected(out);
    }
    let (sizes, keys) = parts.split_at(parts.len() / 2);
    let weights: Vec<u64> = sizes
        .iter()
        .zip(keys)
        .map(|(size, key)| {
            if is_error(key) || is_nil(key) {
                0
            } else {
                // A key seen means at least one, whatever DBSIZE said a moment before.
                int_of(size).map_or(1, |n| n.max(1) as u64)
            }
        })
        .collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        match keys.iter().find(|k| is_error(k)) {
            Some(e) if keys.iter().all(|k| is_error(k)) => out.extend_from_slice(e),
            _ => resp::write_nil(out, resp3),
        }
        return;
    }
    let mut r = random_below(total);
    for (w, key) in weights.iter().zip(keys) {
        if r < *w {
            out.extend_from_slice(key);
            return;
        }
        r -= w;
    }
    unexpected(out)
}

/// A pseudo-random number below `n` (> 0): xorshift64, seeded once per thread from the
/// standard library's random hash keys. Not for anything secret.
fn random_below(n: u64) -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x % n
    })
}

/// FUNCTION LIST / FUNCTION DUMP reply in a form that does not depend on the order a server
/// lists its libraries and functions in (its hash tables' order, which differs between servers
/// even for the same loads): one canonical entry per library, sorted. None when the reply is not
/// of the expected shape (then only identical bytes agree).
fn libraries(reply: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut libs: Vec<Vec<u8>> = match reply.first()? {
        b'$' => dump_libraries(reply)?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect(),
        _ => {
            let mut r = Vec::new();
            resp::aggregate_elements(reply, &mut r).ok()??;
            let mut libs = Vec::with_capacity(r.len());
            for &(s, e) in &r {
                libs.push(canonical_library(&reply[s..e])?);
            }
            libs
        }
    };
    libs.sort_unstable();
    Some(libs)
}

/// One FUNCTION LIST library entry (an array or map of name/value pairs, each a complete
/// reply) with the elements of its `functions` value sorted, concatenated.
fn canonical_library(lib: &[u8]) -> Option<Vec<u8>> {
    let mut r = Vec::new();
    resp::aggregate_elements(lib, &mut r).ok()??;
    let mut out = Vec::with_capacity(lib.len());
    let mut after_functions = false;
    for &(s, e) in &r {
        let el = &lib[s..e];
        if after_functions {
            let mut f = Vec::new();
            resp::aggregate_elements(el, &mut f).ok()??;
            let mut fs: Vec<&[u8]> = f.iter().map(|&(s, e)| &el[s..e]).collect();
            fs.sort_unstable();
            // The aggregate's header (type and count), then the sorted functions.
            out.extend_from_slice(&el[..f.first().map_or(el.len(), |&(s, _)| s)]);
            fs.iter().for_each(|f| out.extend_from_slice(f));
        } else {
            out.extend_from_slice(el);
        }
        after_functions = matches!(
            resp::parse_reply(el),
            Ok(Some((
                Reply::Bulk(b"functions") | Reply::Simple(b"functions"),
                _
            )))
        );
    }
    Some(out)
}

/// `RDB_OPCODE_FUNCTION2`: one library in a FUNCTION DUMP payload.
const RDB_OPCODE_FUNCTION2: u8 = 245;

/// FUNCTION DUMP's payload (a bulk string) split into its libraries: per library the opcode
/// and the library's code as an RDB string, then 2 bytes of RDB version and 8 of CRC64. The
/// version is kept as one more entry; the CRC is left out (it depends on the order).
fn dump_libraries(reply: &[u8]) -> Option<Vec<&[u8]>> {
    let Ok(Some((Reply::Bulk(p), _))) = resp::parse_reply(reply) else {
        return None;
    };
    let body_len = p.len().checked_sub(10)?;
    let (body, footer) = p.split_at(body_len);
    let mut libs = vec![&footer[..2]];
    let mut pos = 0;
    while pos < body.len() {
        if body[pos] != RDB_OPCODE_FUNCTION2 {
            return None;
        }
        let end = rdb_string_end(body, pos + 1)?;
        libs.push(&body[pos..end]);
        pos = end;
    }
    Some(libs)
}

/// An RDB length at `b[pos..]`: (value, whether it is a special encoding, where it ends).
fn rdb_len(b: &[u8], pos: usize) -> Option<(u64, bool, usize)> {
    let first = *b.get(pos)?;
    let be = |n: usize| -> Option<u64> {
        let bytes = b.get(pos + 1..pos + 1 + n)?;
        Some(bytes.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    };
    match first >> 6 {
        0 => Some((u64::from(first & 0x3f), false, pos + 1)),
        1 => Some((
            u64::from(first & 0x3f) << 8 | u64::from(*b.get(pos + 1)?),
            false,
            pos + 2,
        )),
        2 => match first {
            0x80 => Some((be(4)?, false, pos + 5)),
            0x81 => Some((be(8)?, false, pos + 9)),
            _ => None,
        },
        _ => Some((u64::from(first & 0x3f), true, pos + 1)),
    }
}

/// Where the RDB string at `b[pos..]` ends (plain, integer-encoded or LZF-compressed).
fn rdb_string_end(b: &[u8], pos: usize) -> Option<usize> {
    let (len, special, next) = rdb_len(b, pos)?;
    let end = if special {
        match len {
            0 => next + 1,
            1 => next + 2,
            2 => next + 4,
            3 => {
                let (clen, false, n1) = rdb_len(b, next)? else {
                    return None;
                };
                let (_, false, n2) = rdb_len(b, n1)? else {
                    return None;
                };
                n2.checked_add(usize::try_from(clen).ok()?)?
            }
            _ => return None,
        }
    } else {
        next.checked_add(usize::try_from(len).ok()?)?
    };
    (end <= b.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(merge: Merge, parts: &[&[u8]]) -> Vec<u8> {
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let names = Rc::new(vec!["a".to_string(), "b".to_string()]);
        let mut out = Vec::new();
        Combine::Merge { merge, names }.combine(&parts, false, &mut out);
        out
    }

    fn bulk(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        resp::write_bulk(&mut out, s);
        out
    }

    #[test]
    fn keyspace_sums_databases_over_backends() {
        let a = bulk(b"# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n");
        let mut b = Vec::new();
        resp::write_verbatim(
            &mut b,
            b"txt",
            b"# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=3000\r\n",
            true,
        );
        let down = b"-ERR down\r\n".to_vec();
        assert_eq!(
            keyspace(&[a.clone(), b, down]),
            "db0:keys=15,expires=4,avg_ttl=2000\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n"
        );
        let mut out = Vec::new();
        let c = Combine::Info {
            text: "# Keyspace\r\n\r\n# Rebalance\r\n".into(),
            at: 12,
        };
        c.combine(&[a], false, &mut out);
        assert_eq!(
            out,
            bulk(b"# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n\r\n# Rebalance\r\n")
        );
        assert_eq!(keyspace(&[bulk(b"# Keyspace\r\n")]), "");
    }

    /// A FUNCTION LIST library entry (RESP2) with functions in the given order.
    fn lib(name: &str, fns: &[&str]) -> Vec<u8> {
        let mut out = b"*6\r\n".to_vec();
        out.extend(bulk(b"library_name"));
        out.extend(bulk(name.as_bytes()));
        out.extend(bulk(b"engine"));
        out.extend(bulk(b"LUA"));
        out.extend(bulk(b"functions"));
        resp::write_array_len(&mut out, fns.len());
        for f in fns {
            out.extend_from_slice(b"*6\r\n");
            out.extend(bulk(b"name"));
            out.extend(bulk(f.as_bytes()));
            out.extend(bulk(b"description"));
            out.extend_from_slice(b"$-1\r\n");
            out.extend(bulk(b"flags"));
            out.extend_from_slice(b"*0\r\n");
        }
        out
    }

    fn list(libs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        resp::write_array_len(&mut out, libs.len());
        libs.iter().for_each(|l| out.extend_from_slice(l));
        out
    }

    /// A FUNCTION DUMP payload: per library the opcode and its code as an RDB string, then
    /// version and a CRC (here any 8 bytes: it depends on the order).
    fn dump(codes: &[&[u8]], crc: u8) -> Vec<u8> {
        let mut p = Vec::new();
        for c in codes {
            p.push(RDB_OPCODE_FUNCTION2);
            match c.len() {
                n if n < 64 => p.push(n as u8),
                n if n < 16384 => p.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]),
                n => {
                    p.push(0x80);
                    p.extend_from_slice(&(n as u32).to_be_bytes());
                }
            }
            p.extend_from_slice(c);
        }
        p.extend_from_slice(&[10, 0]);
        p.extend_from_slice(&[crc; 8]);
        bulk(&p)
    }

    #[test]
    fn function_stats_shows_the_running_function() {
        let engines = b"$7\r\nengines\r\n*2\r\n$3\r\nLUA\r\n*4\r\n$15\r\nlibraries_count\r\n:1\r\n$15\r\nfunctions_count\r\n:2\r\n";
        let idle = [&b"*4\r\n$14\r\nrunning_script\r\n$-1\r\n"[..], engines].concat();
        let busy = [
            &b"*4\r\n$14\r\nrunning_script\r\n*2\r\n$4\r\nname\r\n$4\r\ntest\r\n"[..],
            engines,
        ]
        .concat();
        assert_eq!(merge(Merge::FunctionStats, &[&idle, &idle]), idle);
        assert_eq!(merge(Merge::FunctionStats, &[&idle, &busy, &idle]), busy);
        assert_eq!(
            merge(Merge::FunctionStats, &[&idle, b"-ERR down\r\n"]),
            b"-ERR down\r\n"
        );
    }

    #[test]
    fn splice_puts_the_proxys_entries_in() {
        let run = |how: Splice, p: &[u8]| {
            let mut out = Vec::new();
            Combine::Splice(how).combine(&[p.to_vec()], false, &mut out);
            out
        };
        let theirs = b"*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let fill = Splice::Fill(vec![None, Some(b"$1\r\nX\r\n".to_vec()), None]);
        assert_eq!(
            run(fill, theirs),
            b"*3\r\n$1\r\na\r\n$1\r\nX\r\n$1\r\nb\r\n"
        );
        let short = Splice::Fill(vec![None, None, None]);
        assert!(run(short, theirs).starts_with(b"-ERR unexpected"));
        let append = Splice::Append {
            extra: b"$1\r\nX\r\n".to_vec(),
            n: 1,
        };
        assert_eq!(
            run(append, theirs),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nX\r\n"
        );
        let map = Splice::Append {
            extra: b"$1\r\nk\r\n$1\r\nv\r\n".to_vec(),
            n: 1,
        };
        assert_eq!(
            run(map, b"%1\r\n$1\r\na\r\n$1\r\nb\r\n"),
            b"%2\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nk\r\n$1\r\nv\r\n"
        );
        assert_eq!(run(Splice::Add(5), b":240\r\n"), b":245\r\n");
        assert_eq!(run(Splice::Add(5), b"-ERR x\r\n"), b"-ERR x\r\n");
    }

    #[test]
    fn kill_merges_like_one_redis() {
        let notbusy: &[u8] = b"-NOTBUSY No scripts in execution right now.\r\n";
        let unkillable: &[u8] = b"-UNKILLABLE Sorry the script already executed write commands\r\n";
        let down: &[u8] = b"-ERR backend b2 (127.0.0.1:1) connect failed\r\n";
        assert_eq!(
            merge(Merge::Kill, &[notbusy, b"+OK\r\n", unkillable]),
            b"+OK\r\n"
        );
        assert_eq!(
            merge(Merge::Kill, &[notbusy, unkillable, notbusy]),
            unkillable
        );
        assert_eq!(merge(Merge::Kill, &[down, notbusy]), notbusy);
        assert_eq!(merge(Merge::Kill, &[down]), down);
    }

    #[test]
    fn same_libraries_ignores_listing_order() {
        let a = lib("liba", &["a1", "a2", "a3"]);
        let a2 = lib("liba", &["a3", "a1", "a2"]);
        let b = lib("libb", &["b1"]);
        let one = list(&[a.clone(), b.clone()]);
        let other = list(&[b.clone(), a2.clone()]);
        assert_eq!(merge(Merge::SameLibraries, &[&one, &other]), one);
        // SameReply (SCRIPT LOAD, FUNCTION LOAD) stays byte-exact.
        assert_eq!(
            merge(Merge::SameReply, &[&one, &other]),
            b"-ERR backends returned different replies\r\n"
        );
        // A real difference: a missing library, another function, an error.
        let diff = b"-ERR backends returned different replies\r\n".to_vec();
        let missing = list(std::slice::from_ref(&a));
        assert_eq!(merge(Merge::SameLibraries, &[&one, &missing]), diff);
        let changed = list(&[lib("liba", &["a1", "a2", "a4"]), b.clone()]);
        assert_eq!(merge(Merge::SameLibraries, &[&one, &changed]), diff);
        assert_eq!(
            merge(Merge::SameLibraries, &[&one, b"-ERR down\r\n"]),
            b"-ERR down\r\n"
        );
        // Unparsable: only identical bytes agree.
        assert_eq!(
            merge(Merge::SameLibraries, &[b"+x\r\n", b"+x\r\n"]),
            b"+x\r\n"
        );
        assert_eq!(merge(Merge::SameLibraries, &[b"+x\r\n", b"+y\r\n"]), diff);

        // FUNCTION DUMP: the same libraries in another order (and so another CRC) agree.
        let long = vec![b'x'; 300];
        let d1 = dump(&[b"#!lua name=a", &long], 1);
        let d2 = dump(&[&long, b"#!lua name=a"], 2);
        assert_eq!(merge(Merge::SameLibraries, &[&d1, &d2]), d1);
        let d3 = dump(&[b"#!lua name=b", &long], 3);
        assert_eq!(merge(Merge::SameLibraries, &[&d1, &d3]), diff);
        // An LZF-compressed string (special encoding 3: compressed and raw lengths, then the
        // compressed bytes) and integer encodings are skipped by length.
        let mut lzf = vec![RDB_OPCODE_FUNCTION2, 0xc3, 3, 20, b'a', b'b', b'c'];
        lzf.extend_from_slice(&[RDB_OPCODE_FUNCTION2, 0xc0, 7]);
        let mut p1 = lzf.clone();
        p1.extend_from_slice(&[10, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
        let mut p2 = lzf[7..].to_vec();
        p2.extend_from_slice(&lzf[..7]);
        p2.extend_from_slice(&[10, 0, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(
            merge(Merge::SameLibraries, &[&bulk(&p1), &bulk(&p2)]),
            bulk(&p1)
        );
        // Truncated payload: not understood, so compared byte for byte.
        let cut = bulk(&p1[..5]);
        assert_eq!(merge(Merge::SameLibraries, &[&cut, &bulk(&p1)]), diff);
    }

    #[test]
    fn random_key_weighted_by_key_count() {
        let k = |s: &str| bulk(s.as_bytes());
        // Parts: DBSIZE of a, b, then RANDOMKEY of a, b.
        let mut seen = [0usize; 2];
        for _ in 0..2000 {
            let out = merge(Merge::RandomKey, &[b":99\r\n", b":1\r\n", &k("x"), &k("y")]);
            seen[(out == k("y")) as usize] += 1;
            assert!(out == k("x") || out == k("y"));
        }
        // Expected 1980 / 20.
        assert!(seen[0] > 1800 && seen[1] > 0, "{seen:?}");
        // Backends without keys (or failed) are never picked; a key means at least weight 1.
        for _ in 0..50 {
            assert_eq!(
                merge(
                    Merge::RandomKey,
                    &[b":0\r\n", b":5\r\n", &k("x"), b"$-1\r\n"]
                ),
                k("x")
            );
            assert_eq!(
                merge(
                    Merge::RandomKey,
                    &[b"-ERR x\r\n", b":5\r\n", b"-ERR down\r\n", &k("y")]
                ),
                k("y")
            );
        }
        assert_eq!(
            merge(
                Merge::RandomKey,
                &[b":0\r\n", b":0\r\n", b"$-1\r\n", b"$-1\r\n"]
            ),
            b"$-1\r\n"
        );
        assert_eq!(
            merge(
                Merge::RandomKey,
                &[b":0\r\n", b":0\r\n", b"-ERR a\r\n", b"$-1\r\n"]
            ),
            b"$-1\r\n"
        );
        assert_eq!(
            merge(
                Merge::RandomKey,
                &[b":0\r\n", b":0\r\n", b"-ERR a\r\n", b"-ERR b\r\n"]
            ),
            b"-ERR a\r\n"
        );
    }
}
