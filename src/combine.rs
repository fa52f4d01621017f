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
        Merge::PerBackend => {
            resp::write_array_len(out, parts.len());
            for (i, p) in parts.iter().enumerate() {
                resp::write_array_len(out, 2);
                let name = names.get(i).map(String::as_str).unwrap_or("?");
                resp::write_bulk(out, name.as_bytes());
                out.extend_from_slice(p);
            }
        }
        Merge::FirstNonNil => {
            if let Some(p) = parts.iter().find(|p| !is_error(p) && !is_nil(p)) {
                out.extend_from_slice(p);
            } else if let Some(e) = first_error {
                out.extend_from_slice(e);
            } else {
                resp::write_nil(out, resp3);
            }
        }
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
        Merge::Scan => unexpected(out),
    }
}
