//! The router: a parsed command plus the pool's ring -> a plan (answer locally, forward to one
//! backend, split across backends, fan out to all), and the combiners that turn the sub-replies
//! of split and fanned-out commands back into one reply. No sockets here.
//!
//! Invariants:
//! - Routing is decided by the command table (`commands`); nothing here special-cases a command
//!   by name except the trailing `hash=KEY` hint and SCAN's cursor.
//! - A command whose keys all land on one backend is forwarded unchanged (`Forward`), even when
//!   it is of a splittable kind.
//! - Combiners copy backend bytes verbatim where they can (MGET elements, KEYS elements, SCAN
//!   pages); they parse only the integers and status lines they must add up or compare.
//! - An error sub-reply makes the whole reply an error (naming the backend where the proxy made
//!   the error); a combiner never panics on a reply it did not expect, it answers an error.

use crate::commands::{self, Class, Keys, Merge, Spec, Split};
use crate::resp::Args;
use crate::ring::{hash_tag, Ring};

/// Bits of a SCAN cursor that carry the backend index (so at most 1024 backends per pool).
pub const SCAN_INDEX_BITS: u32 = 10;

/// What to do with one command.
#[derive(Debug)]
pub enum Plan {
    /// Answered by the proxy itself; the proxy dispatches on `spec.name`.
    Local(&'static Spec),
    /// Reply with this error (no leading '-', no CRLF).
    Error(String),
    /// Send to one backend. `argc` arguments are sent (a trailing `hash=` hint is not);
    /// `reencode` is set when the frame cannot be copied as it arrived (inline, or `hash=` hint).
    Forward {
        server: usize,
        argc: usize,
        reencode: bool,
    },
    /// Like `Forward`, on a private backend connection lent to the client until the reply
    /// (blocking commands).
    Blocking {
        server: usize,
        argc: usize,
        reencode: bool,
    },
    /// One sub-request per backend; `groups[i]` lists the first argument index of each key
    /// (with `step` arguments per key) sent to `groups[i].0`.
    Split {
        split: Split,
        step: usize,
        groups: Vec<(usize, Vec<u32>)>,
        /// For each key in request order: (group index, position within the group).
        order: Vec<(u32, u32)>,
    },
    /// Send to every backend, merge.
    FanOut(Merge),
    /// SCAN step: send to `server` with the backend's own cursor.
    Scan { server: usize, cursor: u64 },
}

impl Plan {
    /// (server, argc, reencode) of a plan that sends the command to one backend as it is
    /// (`Forward`, `Blocking`).
    pub fn one_backend(&self) -> Option<(usize, usize, bool)> {
        match *self {
            Plan::Forward {
                server,
                argc,
                reencode,
            }
            | Plan::Blocking {
                server,
                argc,
                reencode,
            } => Some((server, argc, reencode)),
            _ => None,
        }
    }
}

/// The routing inputs of one pool.
pub struct Target<'a> {
    pub ring: &'a Ring,
    pub tag: Option<[u8; 2]>,
    pub nservers: usize,
    pub disabled: &'a [String],
    /// Cluster pools: slot -> position of its master (the ring is unused).
    pub slots: Option<&'a [u16]>,
    /// A trailing `hash=KEY` argument routes by KEY (pool key `hash_override`).
    pub hash_override: bool,
}

impl Target<'_> {
    /// Backend index for a key (after hash tag), None when no backend is live.
    pub fn pick(&self, key: &[u8]) -> Option<usize> {
        self.group(key).map(|(s, _)| s)
    }

    /// (backend, group): keys of one group may travel in one sub-request. Static pools group by
    /// backend; cluster pools by slot (a node refuses keys of different slots).
    pub fn group(&self, key: &[u8]) -> Option<(usize, u32)> {
        match self.slots {
            Some(slots) => {
                let slot = crate::cluster::key_slot(key);
                match slots.get(slot as usize) {
                    Some(&n) if n != crate::cluster::NO_NODE => Some((n as usize, slot as u32)),
                    _ => None,
                }
            }
            None => self
                .ring
                .pick(hash_tag(key, self.tag))
                .map(|s| (s, s as u32)),
        }
    }

    /// The error for keys that cannot travel together.
    pub fn spread_error(&self) -> String {
        if self.slots.is_some() {
            "CROSSSLOT Keys in request don't hash to the same slot".into()
        } else {
            "PROXYERROR keys are on different backends".into()
        }
    }
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase().replace(' ', "|")
}

/// Redis's text for an unknown command.
pub fn unknown_command(args: &Args, buf: &[u8]) -> String {
    let name = String::from_utf8_lossy(args.get(buf, 0));
    let mut rest = String::new();
    for i in 1..args.len() {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(args.get(buf, i));
        let room = 128 - rest.len();
        let a: String = a.chars().take(room).collect();
        rest.push('\'');
        rest.push_str(&a);
        rest.push_str("' ");
    }
    let name: String = name.chars().take(128).collect();
    sanitize(format!(
        "ERR unknown command '{name}', with args beginning with: {rest}"
    ))
}

/// Error texts travel on one line.
fn sanitize(mut s: String) -> String {
    if s.contains(['\r', '\n']) {
        s = s.replace(['\r', '\n'], " ");
    }
    s
}

pub fn wrong_arity(spec: &Spec) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        lower(spec.name)
    )
}

/// Resolve the table row of a command (container commands by their subcommand).
pub fn resolve(args: &Args, buf: &[u8]) -> Result<&'static Spec, String> {
    let Some(spec) = commands::lookup(args.get(buf, 0)) else {
        return Err(unknown_command(args, buf));
    };
    if spec.class != Class::Container {
        return Ok(spec);
    }
    if args.len() < 2 {
        return Err(wrong_arity(spec));
    }
    commands::lookup_sub(spec, args.get(buf, 1)).ok_or_else(|| {
        let sub: String = String::from_utf8_lossy(args.get(buf, 1))
            .chars()
            .take(128)
            .collect();
        sanitize(format!(
            "ERR unknown subcommand '{sub}'. Try {} HELP.",
            spec.name
        ))
    })
}

/// (arguments to send, has a hint): a last argument `hash=KEY` is a routing hint (not sent)
/// when the pool enables `hash_override` and the command is still well-formed without it.
/// Off by default: with it on, a value that starts with `hash=` is read as routing (though
/// `SET k hash=x` still sets the value "hash=x": SET needs the argument).
pub fn hash_hint(spec: &Spec, args: &Args, buf: &[u8], enabled: bool) -> (usize, bool) {
    let argc = args.len();
    if enabled && argc >= 2 {
        let last = args.get(buf, argc - 1);
        if last.starts_with(b"hash=") && commands::arity_ok(spec, argc - 1) {
            return (argc - 1, true);
        }
    }
    (argc, false)
}

/// The key of a `hash=KEY` hint found by `hash_hint`.
pub fn hint_key<'a>(args: &'a Args, buf: &'a [u8]) -> &'a [u8] {
    let a = args.get(buf, args.len() - 1);
    &a[5..]
}

/// Decide what to do with a command. `keys` is scratch space (reused, no allocation once warm).
pub fn plan(
    spec: &'static Spec,
    args: &Args,
    buf: &[u8],
    target: &Target,
    keys: &mut Vec<usize>,
) -> Plan {
    let (argc, has_hint) = hash_hint(spec, args, buf, target.hash_override);
    let hint = if has_hint {
        Some(hint_key(args, buf))
    } else {
        None
    };
    if !commands::arity_ok(spec, argc) {
        return Plan::Error(wrong_arity(spec));
    }
    if !target.disabled.is_empty() {
        let base = spec.name.split(' ').next().unwrap_or(spec.name);
        if target
            .disabled
            .iter()
            .any(|d| d.eq_ignore_ascii_case(base) || d.eq_ignore_ascii_case(spec.name))
        {
            return Plan::Error(format!(
                "ERR {} is disabled by the proxy's configuration (disable_commands)",
                spec.name
            ));
        }
    }
    let reencode = hint.is_some() || args.is_inline();
    let no_backend = || Plan::Error("ERR no backend available for this key".to_string());
    match spec.class {
        Class::Local => Plan::Local(spec),
        Class::Refused(reason) => Plan::Error(format!(
            "ERR {} is not supported by rustproxy: {}",
            spec.name, reason
        )),
        Class::Container => Plan::Error(wrong_arity(spec)),
        Class::AnyBackend => {
            let server = match hint {
                Some(h) => match target.pick(h) {
                    Some(s) => s,
                    None => return no_backend(),
                },
                None => 0,
            };
            Plan::Forward {
                server,
                argc,
                reencode,
            }
        }
        Class::Keyed | Class::Blocking => {
            let blocking = spec.class == Class::Blocking
                || (spec.keys == Keys::Streams
                    && commands::is_blocking_xread(argc, &|i| args.get(buf, i)));
            let server = if let Some(h) = hint {
                match target.pick(h) {
                    Some(s) => s,
                    None => return no_backend(),
                }
            } else if matches!(
                spec.keys,
                Keys::Range {
                    first: 1,
                    last: 1,
                    ..
                }
            ) {
                // One key, right after the name (GET, SET, INCR, HGET, ...): the common case,
                // without building the key list.
                if argc < 2 {
                    0
                } else {
                    match target.group(args.get(buf, 1)) {
                        Some(g) => g.0,
                        None => return no_backend(),
                    }
                }
            } else {
                if let Err(e) = commands::key_positions(spec, argc, &|i| args.get(buf, i), keys) {
                    return Plan::Error(e.to_string());
                }
                let mut server: Option<(usize, u32)> = None;
                for &k in keys.iter() {
                    let Some(g) = target.group(args.get(buf, k)) else {
                        return no_backend();
                    };
                    match server {
                        None => server = Some(g),
                        Some(prev) if prev.1 != g.1 => return Plan::Error(target.spread_error()),
                        _ => {}
                    }
                }
                server.map_or(0, |g| g.0)
            };
            if blocking {
                Plan::Blocking {
                    server,
                    argc,
                    reencode,
                }
            } else {
                Plan::Forward {
                    server,
                    argc,
                    reencode,
                }
            }
        }
        Class::Split(split) => {
            if let Some(h) = hint {
                return match target.pick(h) {
                    Some(server) => Plan::Forward {
                        server,
                        argc,
                        reencode,
                    },
                    None => no_backend(),
                };
            }
            let step = if split == Split::Mset { 2 } else { 1 };
            if split == Split::Mset && (argc - 1) % 2 != 0 {
                return Plan::Error(wrong_arity(spec));
            }
            // First pass: are all keys in one group? (the common, allocation-free case)
            let mut first: Option<(usize, u32)> = None;
            let mut single = true;
            let mut i = 1;
            while i < argc {
                let Some(g) = target.group(args.get(buf, i)) else {
                    return no_backend();
                };
                match first {
                    None => first = Some(g),
                    Some(f) if f.1 != g.1 => {
                        single = false;
                        break;
                    }
                    _ => {}
                }
                i += step;
            }
            if single {
                return Plan::Forward {
                    server: first.map_or(0, |g| g.0),
                    argc,
                    reencode,
                };
            }
            let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
            let mut gids: Vec<u32> = Vec::new();
            let mut order = Vec::with_capacity((argc - 1) / step);
            let mut i = 1;
            while i < argc {
                let Some((s, gid)) = target.group(args.get(buf, i)) else {
                    return no_backend();
                };
                let g = match gids.iter().position(|&x| x == gid) {
                    Some(g) => g,
                    None => {
                        groups.push((s, Vec::new()));
                        gids.push(gid);
                        groups.len() - 1
                    }
                };
                order.push((g as u32, groups[g].1.len() as u32));
                groups[g].1.push(i as u32);
                i += step;
            }
            Plan::Split {
                split,
                step,
                groups,
                order,
            }
        }
        Class::FanOut(Merge::Scan) => {
            let raw = args.get(buf, 1);
            let Some(c) = parse_u64(raw) else {
                return Plan::Error("ERR invalid cursor".into());
            };
            let server = (c & ((1 << SCAN_INDEX_BITS) - 1)) as usize;
            if server >= target.nservers {
                return Plan::Error("ERR invalid cursor".into());
            }
            Plan::Scan {
                server,
                cursor: c >> SCAN_INDEX_BITS,
            }
        }
        Class::FanOut(m) => Plan::FanOut(m),
    }
}

pub fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    let v = parse_u64(digits)?;
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i128).wrapping_neg() as i64)
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}
