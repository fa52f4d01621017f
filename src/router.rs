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
#[inline(always)]
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
/// Only commands routed by keys take a hint (a fan-out, local or SCAN command has nothing to
/// place), and only when the command is still well-formed without it, key pairs included (so
/// `MSET a 1 b hash=x` sets `b` to "hash=x").
pub fn hash_hint(spec: &Spec, args: &Args, buf: &[u8], enabled: bool) -> (usize, bool) {
    let argc = args.len();
    if enabled
        && argc >= 2
        && matches!(
            spec.class,
            Class::Keyed | Class::Blocking | Class::Split(_) | Class::AnyBackend
        )
    {
        let last = args.get(buf, argc - 1);
        if last.starts_with(b"hash=")
            && commands::arity_ok(spec, argc - 1)
            && commands::key_positions(spec, argc - 1, &|i| args.get(buf, i), &mut Vec::new())
                .is_ok()
        {
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
    // Checked here first so the common case (no `hash_override`) costs one test.
    let (argc, has_hint) = if target.hash_override {
        hash_hint(spec, args, buf, true)
    } else {
        (args.len(), false)
    };
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
                    if e == commands::ERR_WRONG_ARGS {
                        return Plan::Error(wrong_arity(spec));
                    }
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

#[cfg(test)]
mod tests {
    //! `plan` per command family, on `Target`s built from real rings (and slot maps), no
    //! sockets. Expected backends are computed from the ring (or the slot map) directly, never
    //! through `Target`, so a routing mistake in the router cannot agree with itself.

    use super::*;
    use crate::cluster::{key_slot, NO_NODE};
    use crate::commands::COMMANDS;
    use crate::hash::HashKind;
    use crate::resp::{parse_command, write_command, Limits};
    use crate::ring::{node_identity, Distribution, RingNode};

    const NBACKENDS: usize = 4;

    /// The routing inputs of one pool, owned.
    struct Pool {
        ring: Ring,
        tag: Option<[u8; 2]>,
        slots: Option<Vec<u16>>,
        disabled: Vec<String>,
        hash_override: bool,
        nservers: usize,
    }

    fn nodes(n: usize, live: bool) -> Vec<RingNode> {
        (0..n)
            .map(|i| RingNode {
                identity: node_identity("127.0.0.1", 7001 + i as u16, None),
                weight: 1,
                live,
            })
            .collect()
    }

    impl Pool {
        /// A static pool of `NBACKENDS` servers (fnv1a_64, ketama: the defaults).
        fn new() -> Pool {
            Pool::with_ring(Ring::build(
                HashKind::Fnv1a_64,
                Distribution::Ketama,
                &nodes(NBACKENDS, true),
            ))
        }

        fn with_ring(ring: Ring) -> Pool {
            Pool {
                ring,
                tag: None,
                slots: None,
                disabled: Vec::new(),
                hash_override: false,
                nservers: NBACKENDS,
            }
        }

        /// A cluster pool of three masters: slots 0..=5460 on 0, 5461..=10922 on 1, the rest
        /// on 2 (what `redis-cli --cluster create` assigns).
        fn cluster() -> Pool {
            let slots = (0..16384u32)
                .map(|s| match s {
                    0..=5460 => 0,
                    5461..=10922 => 1,
                    _ => 2,
                })
                .collect();
            Pool {
                slots: Some(slots),
                nservers: 3,
                ..Pool::new()
            }
        }

        fn target(&self) -> Target<'_> {
            Target {
                ring: &self.ring,
                tag: self.tag,
                nservers: self.nservers,
                disabled: &self.disabled,
                slots: self.slots.as_deref(),
                hash_override: self.hash_override,
            }
        }

        /// The backend of `key`, from the ring or the slot map.
        fn at(&self, key: &str) -> usize {
            match &self.slots {
                Some(slots) => slots[key_slot(key.as_bytes()) as usize] as usize,
                None => self
                    .ring
                    .pick(crate::ring::hash_tag(key.as_bytes(), self.tag))
                    .expect("a live node"),
            }
        }

        /// The first key `prefix<i>` on backend `server`.
        fn key_on(&self, prefix: &str, server: usize) -> String {
            (0..100_000)
                .map(|i| format!("{prefix}{i}"))
                .find(|k| self.at(k) == server)
                .unwrap_or_else(|| panic!("no key {prefix}<i> on backend {server}"))
        }

        /// `resolve` then `plan` for a multibulk command; a resolve error as `Plan::Error`.
        fn plan(&self, args: &[&str]) -> Plan {
            let mut buf = Vec::new();
            write_command(&mut buf, args.iter().map(|a| a.as_bytes()));
            self.plan_frame(&buf)
        }

        /// `resolve` then `plan` for one frame as it arrived (multibulk or inline).
        fn plan_frame(&self, frame: &[u8]) -> Plan {
            let mut args = Args::default();
            let n = parse_command(frame, &Limits::default(), &mut args).expect("a whole command");
            assert_eq!(n, frame.len(), "one command");
            let spec = match resolve(&args, frame) {
                Ok(spec) => spec,
                Err(e) => return Plan::Error(e),
            };
            plan(spec, &args, frame, &self.target(), &mut Vec::new())
        }
    }

    fn forward(p: Plan) -> (usize, usize, bool) {
        assert!(
            matches!(p, Plan::Forward { .. }),
            "expected Forward, got {p:?}"
        );
        p.one_backend().expect("Forward names one backend")
    }

    fn blocking(p: Plan) -> (usize, usize, bool) {
        assert!(
            matches!(p, Plan::Blocking { .. }),
            "expected Blocking, got {p:?}"
        );
        p.one_backend().expect("Blocking names one backend")
    }

    fn error(p: Plan) -> String {
        match p {
            Plan::Error(e) => e,
            other => panic!("expected Error, got {other:?}"),
        }
    }

    fn fan_out(p: Plan) -> Merge {
        match p {
            Plan::FanOut(m) => m,
            other => panic!("expected FanOut, got {other:?}"),
        }
    }

    fn local(p: Plan) -> &'static str {
        match p {
            Plan::Local(spec) => spec.name,
            other => panic!("expected Local, got {other:?}"),
        }
    }

    type Groups = Vec<(usize, Vec<u32>)>;

    fn split(p: Plan) -> (Split, usize, Groups, Vec<(u32, u32)>) {
        match p {
            Plan::Split {
                split,
                step,
                groups,
                order,
            } => (split, step, groups, order),
            other => panic!("expected Split, got {other:?}"),
        }
    }

    /// Groups and order for keys at argument positions `first, first+step, ...` with backends
    /// `servers` (one group per backend, in order of first appearance).
    fn expected_split(servers: &[usize], first: u32, step: u32) -> (Groups, Vec<(u32, u32)>) {
        let mut groups: Groups = Vec::new();
        let mut order = Vec::new();
        for (i, &s) in servers.iter().enumerate() {
            let g = match groups.iter().position(|(gs, _)| *gs == s) {
                Some(g) => g,
                None => {
                    groups.push((s, Vec::new()));
                    groups.len() - 1
                }
            };
            order.push((g as u32, groups[g].1.len() as u32));
            groups[g].1.push(first + i as u32 * step);
        }
        (groups, order)
    }

    fn wrong_args(cmd: &str) -> String {
        format!("ERR wrong number of arguments for '{cmd}' command")
    }

    const SPREAD: &str = "PROXYERROR keys are on different backends";
    const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
    const NO_BACKEND: &str = "ERR no backend available for this key";

    // -----------------------------------------------------------------------------------------
    // Single key

    #[test]
    fn single_key_forwards_to_the_keys_backend_unchanged() {
        let p = Pool::new();
        for b in 0..NBACKENDS {
            let k = p.key_on("k", b);
            assert_eq!(forward(p.plan(&["GET", &k])), (b, 2, false), "GET {k}");
            assert_eq!(forward(p.plan(&["SET", &k, "v"])), (b, 3, false), "SET {k}");
            assert_eq!(
                forward(p.plan(&["HSET", &k, "f", "v", "g", "w"])),
                (b, 6, false),
                "HSET {k}"
            );
        }
        // An inline command cannot be copied as it arrived: re-encoded.
        let k = p.key_on("k", 2);
        assert_eq!(
            forward(p.plan_frame(format!("GET {k}\r\n").as_bytes())),
            (2, 2, true)
        );
    }

    #[test]
    fn single_key_with_hash_tag_routes_by_the_tag() {
        let mut p = Pool::new();
        p.tag = Some(*b"{}");
        // Keys whose whole names land on other backends than their common tag.
        let tag_b = p.at("user42");
        let keys: Vec<String> = (0..200)
            .map(|i| format!("k{i}:{{user42}}"))
            .filter(|k| {
                p.ring
                    .pick(k.as_bytes())
                    .is_some_and(|whole| whole != tag_b)
            })
            .take(3)
            .collect();
        assert_eq!(keys.len(), 3);
        for k in &keys {
            assert_eq!(forward(p.plan(&["GET", k])), (tag_b, 2, false), "GET {k}");
        }
        // Multi-key commands of one tag stay on one backend.
        assert_eq!(
            forward(p.plan(&["RENAME", &keys[0], &keys[1]])),
            (tag_b, 3, false)
        );
        assert_eq!(
            forward(p.plan(&["MGET", &keys[0], &keys[1], &keys[2]])),
            (tag_b, 4, false)
        );
        // An empty tag hashes the whole key (twemproxy).
        let k = "plain{}key";
        let whole = p.ring.pick(k.as_bytes()).expect("live");
        assert_eq!(forward(p.plan(&["GET", k])), (whole, 2, false));
    }

    #[test]
    fn hash_hint_routes_by_its_key_only_when_hash_override_is_on() {
        let mut p = Pool::new();
        let k = p.key_on("k", 0);
        let other = p.key_on("o", 3);
        let hint = format!("hash={other}");

        // Off (the default): `hash=` is plain data, a GET with it has one argument too many.
        assert_eq!(
            forward(p.plan(&["SET", &k, &hint])),
            (0, 3, false),
            "SET k hash=... stores the value"
        );
        assert_eq!(error(p.plan(&["GET", &k, &hint])), wrong_args("get"));

        // On: a trailing hint routes by its key and is not sent (re-encoded without it).
        p.hash_override = true;
        assert_eq!(forward(p.plan(&["GET", &k, &hint])), (3, 2, true));
        assert_eq!(forward(p.plan(&["SET", &k, "v", &hint])), (3, 3, true));
        assert_eq!(
            blocking(p.plan(&["BLPOP", &k, "0", &hint])),
            (3, 3, true),
            "BLPOP k 0 hash=..."
        );
        // Keys of different backends travel together when a hint names the backend.
        let k1 = p.key_on("k", 1);
        assert_eq!(forward(p.plan(&["RENAME", &k, &k1, &hint])), (3, 3, true));
        // ... but a command that needs the argument keeps it as data.
        assert_eq!(
            forward(p.plan(&["SET", &k, &hint])),
            (0, 3, false),
            "SET k hash=... still stores the value"
        );
        // Not last: plain data.
        assert_eq!(
            forward(p.plan(&["HSET", &k, &hint, "v"])),
            (0, 4, false),
            "HSET k hash=... v"
        );
        // A keyless command sent to one backend follows a hint too.
        assert_eq!(forward(p.plan(&["CONFIG", "HELP"])), (0, 2, false));
        assert_eq!(forward(p.plan(&["CONFIG", "HELP", &hint])), (3, 2, true));
        // Only a well-formed command without it: MSET's pairs must hold.
        assert!(
            !matches!(
                p.plan(&["MSET", "a", "1", "b", &hint]),
                Plan::Forward { argc: 4, .. }
            ),
            "MSET a 1 b hash=... is a pair, not a hint"
        );
        // Commands with nothing to place take no hint: the argument stays (and DBSIZE's
        // arity error comes from the proxy, not from every backend).
        assert_eq!(
            error(p.plan(&["DBSIZE", &hint])),
            "ERR wrong number of arguments for 'dbsize' command"
        );
    }

    #[test]
    fn no_live_backend_is_an_error_not_a_guess() {
        let p = Pool::with_ring(Ring::build(
            HashKind::Fnv1a_64,
            Distribution::Ketama,
            &nodes(NBACKENDS, false),
        ));
        assert_eq!(error(p.plan(&["GET", "k"])), NO_BACKEND);
        assert_eq!(error(p.plan(&["MGET", "a", "b"])), NO_BACKEND);
        assert_eq!(error(p.plan(&["RENAME", "a", "b"])), NO_BACKEND);
        assert_eq!(error(p.plan(&["BLPOP", "q", "0"])), NO_BACKEND);
    }

    // -----------------------------------------------------------------------------------------
    // Split

    #[test]
    fn split_commands_group_keys_per_backend_in_request_order() {
        let p = Pool::new();
        // Keys on backends 2, 0, 2, 1, 0: three groups in order of first appearance.
        let on = [2, 0, 2, 1, 0];
        let keys: Vec<String> = on
            .iter()
            .enumerate()
            .map(|(i, &b)| p.key_on(&format!("s{i}:"), b))
            .collect();
        let (groups, order) = expected_split(&on, 1, 1);
        assert_eq!(
            groups,
            vec![(2, vec![1, 3]), (0, vec![2, 5]), (1, vec![4])],
            "the expectation itself"
        );
        assert_eq!(order, vec![(0, 0), (1, 0), (0, 1), (2, 0), (1, 1)]);
        for (cmd, kind) in [
            ("MGET", Split::Mget),
            ("DEL", Split::SumInt),
            ("EXISTS", Split::SumInt),
            ("TOUCH", Split::SumInt),
            ("UNLINK", Split::SumInt),
        ] {
            let mut args = vec![cmd];
            args.extend(keys.iter().map(|k| k.as_str()));
            assert_eq!(
                split(p.plan(&args)),
                (kind, 1, groups.clone(), order.clone()),
                "{cmd}"
            );
        }
    }

    #[test]
    fn mset_splits_key_value_pairs() {
        let p = Pool::new();
        let (a, b, c) = (p.key_on("a", 1), p.key_on("b", 3), p.key_on("c", 1));
        let (groups, order) = expected_split(&[1, 3, 1], 1, 2);
        assert_eq!(groups, vec![(1, vec![1, 5]), (3, vec![3])]);
        assert_eq!(
            split(p.plan(&["MSET", &a, "1", &b, "2", &c, "3"])),
            (Split::Mset, 2, groups, order)
        );
        // An unpaired key: Redis's arity error (the command table says -3, pairs say more).
        assert_eq!(error(p.plan(&["MSET", &a, "1", &b])), wrong_args("mset"));
        assert_eq!(error(p.plan(&["MSET", &a])), wrong_args("mset"));
    }

    #[test]
    fn split_commands_on_one_backend_are_forwarded_unchanged() {
        let p = Pool::new();
        let keys: Vec<String> = (0..3).map(|i| p.key_on(&format!("one{i}:"), 2)).collect();
        assert_eq!(
            forward(p.plan(&["MGET", &keys[0], &keys[1], &keys[2]])),
            (2, 4, false)
        );
        assert_eq!(
            forward(p.plan(&["MSET", &keys[0], "1", &keys[1], "2"])),
            (2, 5, false)
        );
        assert_eq!(forward(p.plan(&["DEL", &keys[2]])), (2, 2, false));
        // With hash_override a hint sends the whole command to the hint's backend.
        let mut p = p;
        p.hash_override = true;
        let other = p.key_on("o", 0);
        let hint = format!("hash={other}");
        let a = p.key_on("a", 1);
        assert_eq!(
            forward(p.plan(&["MGET", &a, &keys[0], &hint])),
            (0, 3, true)
        );
    }

    // -----------------------------------------------------------------------------------------
    // Fan-out

    #[test]
    fn admin_commands_fan_out_with_their_merge() {
        let p = Pool::new();
        for (args, merge) in [
            (&["DBSIZE"][..], Merge::SumInt),
            (&["FLUSHALL"], Merge::AllOk),
            (&["FLUSHALL", "ASYNC"], Merge::AllOk),
            (&["FLUSHDB"], Merge::AllOk),
            (&["SCRIPT", "LOAD", "return 1"], Merge::SameReply),
            (&["SCRIPT", "FLUSH"], Merge::AllOk),
            (&["SCRIPT", "EXISTS", "abc"], Merge::AndInts),
            (&["KEYS", "*"], Merge::ConcatArrays),
            (&["CONFIG", "GET", "maxmemory"], Merge::ConfigGet),
            (&["RANDOMKEY"], Merge::RandomKey),
        ] {
            assert_eq!(fan_out(p.plan(args)), merge, "{args:?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Same-backend multi-key

    #[test]
    fn same_backend_commands_run_when_their_keys_share_a_backend() {
        let p = Pool::new();
        let (a, a2) = (p.key_on("a", 1), p.key_on("b", 1));
        let c = p.key_on("c", 2);
        let cases: [(&[&str], &[&str]); 5] = [
            (&["RENAME", &a, &a2], &["RENAME", &a, &c]),
            (&["SMOVE", &a, &a2, "m"], &["SMOVE", &a, &c, "m"]),
            (
                &["LMOVE", &a, &a2, "LEFT", "RIGHT"],
                &["LMOVE", &a, &c, "LEFT", "RIGHT"],
            ),
            (&["SINTER", &a, &a2], &["SINTER", &a2, &a, &c]),
            (
                &["EVAL", "return 1", "2", &a, &a2],
                &["EVAL", "return 1", "2", &c, &a],
            ),
        ];
        for (together, apart) in cases {
            assert_eq!(
                forward(p.plan(together)),
                (1, together.len(), false),
                "{together:?}"
            );
            assert_eq!(error(p.plan(apart)), SPREAD, "{apart:?}");
        }
        // Zero keys (EVAL with numkeys 0): backend 0.
        assert_eq!(forward(p.plan(&["EVAL", "return 1", "0"])), (0, 3, false));
        // Malformed key arguments get Redis's own error.
        assert_eq!(
            error(p.plan(&["EVAL", "return 1", "3", &a])),
            "ERR Number of keys can't be greater than number of args"
        );
        assert_eq!(
            error(p.plan(&["EVAL", "return 1", "x"])),
            "ERR value is not an integer or out of range"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Refused, disabled, local

    #[test]
    fn refused_commands_say_why() {
        let p = Pool::new();
        assert_eq!(
            error(p.plan(&["MONITOR"])),
            "ERR MONITOR is not supported by rustproxy: it needs a dedicated backend connection"
        );
        // Numbered databases are served (issue 20): SWAPDB on every backend.
        assert_eq!(fan_out(p.plan(&["SWAPDB", "0", "1"])), Merge::AllOk);
        assert_eq!(
            error(p.plan(&["CLIENT", "TRACKING", "on"])),
            "ERR CLIENT TRACKING is not supported by rustproxy: client-side caching needs a \
             dedicated backend connection"
        );
        // Every refused row, called with its minimum arity, answers its own reason.
        let mut n = 0;
        for spec in COMMANDS {
            let Class::Refused(reason) = spec.class else {
                continue;
            };
            let mut args: Vec<&str> = spec.name.split(' ').collect();
            while args.len() < spec.arity.unsigned_abs() as usize {
                args.push("0");
            }
            assert_eq!(
                error(p.plan(&args)),
                format!("ERR {} is not supported by rustproxy: {reason}", spec.name),
                "{args:?}"
            );
            n += 1;
        }
        assert!(n > 20, "only {n} refused rows");
    }

    #[test]
    fn disabled_commands_are_refused_by_name_or_container() {
        let mut p = Pool::new();
        p.disabled = vec!["keys".into(), "CONFIG".into(), "script load".into()];
        let why = |name: &str| {
            format!("ERR {name} is disabled by the proxy's configuration (disable_commands)")
        };
        assert_eq!(error(p.plan(&["KEYS", "*"])), why("KEYS"));
        assert_eq!(error(p.plan(&["CONFIG", "GET", "x"])), why("CONFIG GET"));
        assert_eq!(
            error(p.plan(&["SCRIPT", "LOAD", "return 1"])),
            why("SCRIPT LOAD")
        );
        assert_eq!(fan_out(p.plan(&["SCRIPT", "FLUSH"])), Merge::AllOk);
        assert_eq!(forward(p.plan(&["GET", "k"])).1, 2);
    }

    #[test]
    fn local_commands_are_answered_by_the_proxy() {
        let p = Pool::new();
        for args in [
            &["PING"][..],
            &["PING", "hello"],
            &["ECHO", "x"],
            &["TIME"],
            &["INFO"],
            &["SELECT", "0"],
            &["MULTI"],
            &["SUBSCRIBE", "ch"],
            &["BACKEND", "k"],
            &["FORWARD", "0", "PING"],
            &["COMMAND", "COUNT"],
        ] {
            assert_eq!(local(p.plan(args)), args[0], "{args:?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Blocking

    #[test]
    fn blocking_commands_get_a_private_connection() {
        let p = Pool::new();
        let (q, q2) = (p.key_on("q", 3), p.key_on("r", 3));
        let other = p.key_on("o", 0);
        assert_eq!(blocking(p.plan(&["BLPOP", &q, "0"])), (3, 3, false));
        assert_eq!(blocking(p.plan(&["BRPOP", &q, &q2, "1.5"])), (3, 4, false));
        assert_eq!(
            blocking(p.plan(&["BLMOVE", &q, &q2, "LEFT", "RIGHT", "0"])),
            (3, 6, false)
        );
        assert_eq!(error(p.plan(&["BLPOP", &q, &other, "0"])), SPREAD);
        assert_eq!(error(p.plan(&["BLPOP", &q])), wrong_args("blpop"));
    }

    #[test]
    fn xread_blocks_only_with_block() {
        let p = Pool::new();
        let (s, s2) = (p.key_on("s", 2), p.key_on("t", 2));
        let other = p.key_on("o", 1);
        assert_eq!(
            forward(p.plan(&["XREAD", "STREAMS", &s, "0"])),
            (2, 4, false)
        );
        assert_eq!(
            forward(p.plan(&["XREAD", "COUNT", "10", "STREAMS", &s, &s2, "0", "0"])),
            (2, 8, false)
        );
        assert_eq!(
            blocking(p.plan(&["XREAD", "BLOCK", "100", "STREAMS", &s, "$"])),
            (2, 6, false)
        );
        assert_eq!(
            blocking(p.plan(&["XREAD", "count", "1", "block", "0", "STREAMS", &s, &s2, "$", "$"])),
            (2, 10, false)
        );
        assert_eq!(
            error(p.plan(&["XREAD", "BLOCK", "0", "STREAMS", &s, &other, "$", "$"])),
            SPREAD
        );
        assert_eq!(
            error(p.plan(&["XREAD", "STREAMS", &s, &s2, "0"])),
            "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be \
             specified."
        );
    }

    // -----------------------------------------------------------------------------------------
    // Cluster slots

    #[test]
    fn cluster_pools_route_by_crc16_slot() {
        let p = Pool::cluster();
        // Slots as `CLUSTER KEYSLOT` reports them.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(forward(p.plan(&["GET", "foo"])), (2, 2, false));
        assert_eq!(forward(p.plan(&["GET", "bar"])), (0, 2, false));
        // The pool's hash_tag does not matter: cluster tags are always `{...}`.
        let mut tagged = Pool::cluster();
        tagged.tag = Some(*b"::");
        assert_eq!(forward(tagged.plan(&["GET", "x{foo}y"])), (2, 2, false));
        // A slot without a node.
        let mut hole = Pool::cluster();
        hole.slots.as_mut().expect("slots")[12182] = NO_NODE;
        assert_eq!(error(hole.plan(&["GET", "foo"])), NO_BACKEND);
        assert_eq!(forward(hole.plan(&["GET", "bar"])), (0, 2, false));
    }

    #[test]
    fn cluster_pools_split_by_slot_and_refuse_cross_slot() {
        let p = Pool::cluster();
        // bar (5061) and hello (866): one node, two slots, so two sub-requests.
        assert_eq!(
            split(p.plan(&["MGET", "bar", "hello", "foo", "bar"])),
            (
                Split::Mget,
                1,
                vec![(0, vec![1, 4]), (0, vec![2]), (2, vec![3])],
                vec![(0, 0), (1, 0), (2, 0), (0, 1)]
            )
        );
        assert_eq!(
            forward(p.plan(&["MGET", "{t}a", "{t}b"])),
            (p.at("t"), 3, false)
        );
        // Same-backend commands need one slot, not just one node.
        assert_eq!(error(p.plan(&["RENAME", "bar", "hello"])), CROSSSLOT);
        assert_eq!(error(p.plan(&["RENAME", "bar", "foo"])), CROSSSLOT);
        assert_eq!(error(p.plan(&["BLPOP", "bar", "hello", "0"])), CROSSSLOT);
        assert_eq!(
            forward(p.plan(&["RENAME", "{user1000}.following", "{user1000}.followers"])),
            (p.at("user1000"), 3, false)
        );
        // SCAN cursors index the pool's nodes.
        assert_eq!(scan(p.plan(&["SCAN", "2"])), (2, 0));
        assert_eq!(error(p.plan(&["SCAN", "3"])), "ERR invalid cursor");
    }

    // -----------------------------------------------------------------------------------------
    // Arity, unknown commands

    #[test]
    fn arity_errors_use_redis_7_text() {
        let p = Pool::new();
        assert_eq!(error(p.plan(&["GET"])), wrong_args("get"));
        assert_eq!(error(p.plan(&["GET", "a", "b"])), wrong_args("get"));
        assert_eq!(error(p.plan(&["SET", "k"])), wrong_args("set"));
        assert_eq!(error(p.plan(&["MGET"])), wrong_args("mget"));
        assert_eq!(error(p.plan(&["DBSIZE", "x"])), wrong_args("dbsize"));
        // Subcommands are named `container|sub`, as Redis 7 does.
        assert_eq!(error(p.plan(&["CONFIG", "GET"])), wrong_args("config|get"));
        assert_eq!(
            error(p.plan(&["SCRIPT", "LOAD"])),
            wrong_args("script|load")
        );
        assert_eq!(error(p.plan(&["CONFIG"])), wrong_args("config"));
        // The arity check comes before the refusal.
        assert_eq!(error(p.plan(&["MONITOR", "x"])), wrong_args("monitor"));
    }

    /// MSETNX is a same-backend command whose table arity (-3) admits an unpaired key;
    /// `key_positions` reports it as `ERR_WRONG_ARGS` and asks the caller for Redis's full
    /// text. The router passes the short text through instead.
    #[test]
    fn msetnx_unpaired_key_gets_the_full_arity_text() {
        let p = Pool::new();
        assert_eq!(
            error(p.plan(&["MSETNX", "a", "1", "b"])),
            wrong_args("msetnx")
        );
    }

    #[test]
    fn unknown_commands_and_subcommands_use_redis_text() {
        let p = Pool::new();
        assert_eq!(
            error(p.plan(&["foo", "a", "b"])),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            error(p.plan(&["FOO"])),
            "ERR unknown command 'FOO', with args beginning with: "
        );
        // One line, at most 128 bytes of arguments.
        let long = "x".repeat(200);
        assert_eq!(
            error(p.plan(&["foo", &long, "more"])),
            format!(
                "ERR unknown command 'foo', with args beginning with: '{}' ",
                "x".repeat(128)
            )
        );
        assert_eq!(
            error(p.plan(&["foo", "a\r\nb"])),
            "ERR unknown command 'foo', with args beginning with: 'a  b' "
        );
        assert_eq!(
            error(p.plan(&["CONFIG", "NOPE"])),
            "ERR unknown subcommand 'NOPE'. Try CONFIG HELP."
        );
    }

    // -----------------------------------------------------------------------------------------
    // SCAN

    fn scan(p: Plan) -> (usize, u64) {
        match p {
            Plan::Scan { server, cursor } => (server, cursor),
            other => panic!("expected Scan, got {other:?}"),
        }
    }

    #[test]
    fn scan_cursor_carries_the_backend_index() {
        let p = Pool::new();
        assert_eq!(scan(p.plan(&["SCAN", "0"])), (0, 0));
        let cursor = |backend_cursor: u64, server: u64| {
            ((backend_cursor << SCAN_INDEX_BITS) | server).to_string()
        };
        assert_eq!(scan(p.plan(&["SCAN", &cursor(7, 2)])), (2, 7));
        assert_eq!(
            scan(p.plan(&["SCAN", &cursor(123_456, 3), "MATCH", "k*", "COUNT", "10"])),
            (3, 123_456)
        );
        assert_eq!(scan(p.plan(&["SCAN", &cursor(1 << 40, 1)])), (1, 1 << 40));
        for bad in [
            cursor(7, NBACKENDS as u64),
            cursor(0, (1 << SCAN_INDEX_BITS) - 1),
            "abc".into(),
            "-1".into(),
            "".into(),
            "18446744073709551616".into(),
        ] {
            assert_eq!(
                error(p.plan(&["SCAN", &bad])),
                "ERR invalid cursor",
                "SCAN {bad:?}"
            );
        }
    }

    #[test]
    fn one_backend_names_forward_and_blocking_only() {
        let p = Pool::new();
        let k = p.key_on("k", 1);
        assert_eq!(p.plan(&["GET", &k]).one_backend(), Some((1, 2, false)));
        assert_eq!(
            p.plan(&["BLPOP", &k, "0"]).one_backend(),
            Some((1, 3, false))
        );
        assert_eq!(p.plan(&["DBSIZE"]).one_backend(), None);
        assert_eq!(p.plan(&["PING"]).one_backend(), None);
        assert_eq!(p.plan(&["SCAN", "0"]).one_backend(), None);
    }

    #[test]
    fn integer_parsers_accept_exactly_the_decimal_range() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"+1"), None);
        assert_eq!(parse_u64(b"1 "), None);
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"-12"), Some(-12));
    }
}
