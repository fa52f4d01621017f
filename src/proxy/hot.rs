//! Hot keys in the event loop: sampling keyed requests into the pool's detector
//! (`crate::hotkeys`), the HOTKEYS command, the `INFO hotkeys` section and the /metrics
//! families, and the hot-key cache (`crate::hotcache`): GETs answered from it, writes that
//! drop its entries, and the per-backend tracking connections that fill it and keep it
//! coherent.
//!
//! Invariants:
//! - A request that is not sampled costs one decrement and branch (`HotKeys::tick`); a pool
//!   without a cache costs an `Option` test per request (`Pool::cache`) and a zero test per
//!   backend request and reply (`Pending::hot`).
//! - A cached reply goes through the client's chain (`reply`), in request order, like any.
//! - Only clients of the pool's default database use the cache (others bypass it), and only
//!   outside MULTI and without a `hash=` routing hint; cluster pools have no cache
//!   (configuration refuses it).
//! - Coherence: a write through the proxy drops its keys' entries (and poisons fetches in
//!   flight) before it is forwarded, and holds its key (`Pending::hot`) until its reply is in:
//!   no fetch of it starts meanwhile, so no fetch can read the old value after the writer saw
//!   its reply; a tracking connection's `invalidate` push drops the keys
//!   it names (all of its backend's for a null one); a tracking connection lost drops every
//!   entry of its backend; FLUSHALL/FLUSHDB through the proxy drop everything; a ring change
//!   (pool generation) drops everything. Entries carry the key's PTTL (counted from the
//!   fetch's sending) as a deadline, and live at most `hotcache::MAX_AGE_US`.
//! - A backend that refuses tracking is not asked again for `hotcache::RETRY_US`.
//! - Tracking connections are proxy-owned (`Owner::Track`), never lent to a client; the
//!   replies on one arrive in the order its requests were sent, so the fetch queue of the
//!   backend (`HotCache::queues`) names the key each reply is for.

use super::*;
use crate::hotcache::Push;
use crate::hotkeys::PoolHot;

/// `Pending::part` of a tracking connection's requests: its setup, and a fetch's two halves.
pub(super) const TRACK_ON: u32 = 0;
pub(super) const TRACK_GET: u32 = 1;
pub(super) const TRACK_PTTL: u32 = 2;

/// Whether the cache takes `spec` as a write of its keys: every `write` command, and PFCOUNT,
/// which Redis flags read-only but which stores the sketch's cardinality into its string
/// value (and signals the key modified).
pub(super) fn writes(spec: &Spec) -> bool {
    crate::auth::is_write(spec) || spec.name == "PFCOUNT"
}

impl Proxy {
    /// Count one sampled request (its keys, routed to config position `server`).
    #[cold]
    #[inline(never)]
    pub(super) fn hot_sample(
        &mut self,
        k: usize,
        pool_i: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
        server: usize,
    ) {
        let Some(db) = self.clients.get(k).map(|c| c.db()) else {
            return;
        };
        let db = db.unwrap_or(self.pools[pool_i].cfg.redis_db);
        let write = crate::auth::is_write(spec);
        let now = self.now_us;
        // The key it routes by, borrowed from the request (nothing allocated).
        let (argc, hinted) =
            router::hash_hint(spec, args, frame, self.pools[pool_i].cfg.hash_override);
        let key = if hinted {
            router::hint_key(args, frame)
        } else {
            let mut keys = std::mem::take(&mut self.keys);
            let first =
                crate::commands::key_positions(spec, argc, &|i| args.get(frame, i), &mut keys)
                    .ok()
                    .and_then(|()| keys.first().copied());
            self.keys = keys;
            match first {
                Some(i) => args.get(frame, i),
                None => return,
            }
        };
        let pos = server.min(u16::MAX as usize) as u16;
        self.pools[pool_i].hot.record(key, db, write, pos, now);
    }

    /// Count one sampled split request (MGET, MSET, DEL...): each key with its backend.
    #[cold]
    #[inline(never)]
    pub(super) fn hot_sample_split(
        &mut self,
        k: usize,
        pool_i: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
        groups: &[(usize, Vec<u32>)],
    ) {
        let Some(db) = self.clients.get(k).map(|c| c.db()) else {
            return;
        };
        let pool = &mut self.pools[pool_i];
        let db = db.unwrap_or(pool.cfg.redis_db);
        let write = crate::auth::is_write(spec);
        for (server, firsts) in groups {
            let pos = (*server).min(u16::MAX as usize) as u16;
            for &f in firsts.iter().take(16) {
                pool.hot
                    .record(args.get(frame, f as usize), db, write, pos, self.now_us);
            }
        }
    }

    /// HOTKEYS GET [COUNT n] | HOTKEYS RESET | HOTKEYS HELP.
    pub(super) fn hotkeys_cmd(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let Some((pool_i, resp3)) = self.clients.get(k).map(|c| (c.pool, c.resp3)) else {
            return;
        };
        let mut out = Vec::new();
        let argc = args.len();
        match spec.name {
            "HOTKEYS RESET" => {
                self.pools[pool_i].hot.reset(self.now_us);
                resp::write_simple(&mut out, b"OK");
            }
            "HOTKEYS HELP" => {
                let lines: &[&[u8]] = &[
                    b"HOTKEYS <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    b"GET [COUNT <count>]",
                    b"    The hottest keys of this proxy pool over the sliding window, hottest first:",
                    b"    key, db, qps (estimated requests per second), reads, writes, backend.",
                    b"RESET",
                    b"    Forget the counts.",
                    b"HELP",
                    b"    Print this help.",
                ];
                resp::write_array_len(&mut out, lines.len());
                for l in lines {
                    resp::write_simple(&mut out, l);
                }
            }
            _ => {
                let pool = &self.pools[pool_i];
                let mut n = pool.hot.top();
                match argc {
                    2 => {}
                    4 if args.get(frame, 2).eq_ignore_ascii_case(b"COUNT") => {
                        match router::parse_u64(args.get(frame, 3)) {
                            Some(c) if c > 0 => n = n.min(c as usize),
                            _ => return self.reply_err(k, "ERR COUNT must be a positive integer"),
                        }
                    }
                    _ => return self.reply_err(k, "ERR syntax error"),
                }
                let hot = pool.hot.report(n, self.now_us);
                resp::write_array_len(&mut out, hot.len());
                for h in &hot {
                    let backend = pool
                        .order
                        .get(h.backend as usize)
                        .map_or("", |&s| pool.servers[s].name.as_str());
                    resp::write_map_len(&mut out, 6, resp3);
                    resp::write_bulk(&mut out, b"key");
                    resp::write_bulk(&mut out, &h.key);
                    resp::write_bulk(&mut out, b"db");
                    resp::write_int(&mut out, h.db as i64);
                    resp::write_bulk(&mut out, b"qps");
                    resp::write_int(&mut out, h.qps as i64);
                    resp::write_bulk(&mut out, b"reads");
                    resp::write_int(&mut out, h.reads_per_sec as i64);
                    resp::write_bulk(&mut out, b"writes");
                    resp::write_int(&mut out, h.writes_per_sec as i64);
                    resp::write_bulk(&mut out, b"backend");
                    resp::write_bulk(&mut out, backend.as_bytes());
                }
            }
        }
        self.reply(k, &out);
    }

    /// What INFO hotkeys and /metrics show, per pool with detection on.
    pub(super) fn hot_view(&self, n: usize) -> Vec<PoolHot> {
        self.pools
            .iter()
            .filter(|p| !p.removed && p.hot.enabled())
            .map(|p| PoolHot {
                pool: p.cfg.name.clone(),
                top: p.hot.top(),
                sample: p.hot.sample(),
                window_ms: p.hot.window_ms(),
                sampled: p.hot.sampled,
                hot: p
                    .hot
                    .report(n, self.now_us)
                    .into_iter()
                    .map(|h| {
                        let name = p
                            .order
                            .get(h.backend as usize)
                            .map_or(String::new(), |&s| p.servers[s].name.clone());
                        (h, name)
                    })
                    .collect(),
                cache: p.cache.as_ref().map(|c| c.figures()),
            })
            .collect()
    }

    // ----- the cache ---------------------------------------------------------------------

    /// Writes through the proxy drop their keys' entries before they are forwarded (and
    /// poison fetches in flight); FLUSHALL, FLUSHDB and SWAPDB drop everything. Called for
    /// every write command of a pool with a cache, whatever its plan (queued in MULTI too).
    /// Returns the tag the write holds until its reply is in (see `HotCache::write_begin`).
    #[cold]
    #[inline(never)]
    pub(super) fn hot_write(
        &mut self,
        pool_i: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
    ) -> u64 {
        if matches!(spec.name, "FLUSHALL" | "FLUSHDB" | "SWAPDB") {
            if let Some(c) = self.pools[pool_i].cache.as_mut() {
                c.clear();
            }
            return crate::hotcache::ANY_KEY;
        }
        // The keys it writes (a `hash=` hint routes, but the keys are the command's own),
        // borrowed from the request.
        let (argc, _) = router::hash_hint(spec, args, frame, self.pools[pool_i].cfg.hash_override);
        let mut keys = std::mem::take(&mut self.keys);
        let found =
            crate::commands::key_positions(spec, argc, &|i| args.get(frame, i), &mut keys).is_ok();
        // Malformed for key extraction: the router refuses it, nothing is forwarded.
        let tag = match keys.as_slice() {
            _ if !found => 0,
            [one] => crate::hotcache::key_tag(args.get(frame, *one)),
            _ => crate::hotcache::ANY_KEY,
        };
        if let Some(c) = self.pools[pool_i].cache.as_mut() {
            for &i in keys.iter().filter(|_| found) {
                c.invalidate(args.get(frame, i));
            }
        }
        self.keys = keys;
        tag
    }

    /// A write through pool `pool_i`: drop its keys from the caches of the proxy's other pools
    /// too (everything on FLUSHALL/FLUSHDB/SWAPDB), since they may cache the same backends;
    /// a key of the same name elsewhere is only fetched again. (No write tag is held there.)
    #[cold]
    #[inline(never)]
    pub(super) fn hot_write_others(
        &mut self,
        pool_i: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
    ) {
        let others = |i: usize, p: &Pool| i != pool_i && !p.removed && p.cache.is_some();
        if !self.pools.iter().enumerate().any(|(i, p)| others(i, p)) {
            return;
        }
        let clear = matches!(spec.name, "FLUSHALL" | "FLUSHDB" | "SWAPDB");
        let (argc, _) = router::hash_hint(spec, args, frame, self.pools[pool_i].cfg.hash_override);
        let mut keys = std::mem::take(&mut self.keys);
        let found =
            crate::commands::key_positions(spec, argc, &|i| args.get(frame, i), &mut keys).is_ok();
        for (i, p) in self.pools.iter_mut().enumerate() {
            if !others(i, p) {
                continue;
            }
            let Some(c) = p.cache.as_mut() else {
                continue;
            };
            if clear {
                c.clear();
            } else if found {
                for &j in &keys {
                    c.invalidate(args.get(frame, j));
                }
            }
        }
        self.keys = keys;
    }

    /// EXEC was just queued on connection `ck`: the transaction's keys (those it queued and
    /// WATCHed) are dropped again, since a fetch may have cached one since it was queued, and
    /// the EXEC holds every key of the pool (`ANY_KEY`) until its reply is in.
    #[cold]
    #[inline(never)]
    pub(super) fn hot_exec(
        &mut self,
        pool_i: usize,
        ck: usize,
        keys: &[Vec<u8>],
        written: &[Vec<u8>],
    ) {
        let Some(cache) = self.pools[pool_i].cache.as_mut() else {
            return;
        };
        for key in keys.iter().chain(written) {
            cache.invalidate(key);
        }
        if let Some(p) = self.conns.get_mut(ck).and_then(|c| c.inflight.back_mut()) {
            if p.hot == 0 {
                p.hot = crate::hotcache::ANY_KEY;
                cache.write_begin(p.hot);
            }
        }
    }

    /// A request carrying a write tag (`Pending::hot`) was answered or lost: its key may be
    /// fetched again.
    #[cold]
    #[inline(never)]
    pub(super) fn hot_write_end(&mut self, pool_i: usize, tag: u64) {
        if let Some(c) = self.pools.get_mut(pool_i).and_then(|p| p.cache.as_mut()) {
            c.write_end(tag);
        }
    }

    /// A GET of a pool with a cache (client in the default database): answered from the cache
    /// when the key is there (true), else forwarded by the caller; a miss of a hot key starts
    /// its fetch on the tracking connection of its backend (config position `server`).
    // Out of line: pools without a cache never call it, and the request path stays small.
    #[inline(never)]
    pub(super) fn hot_get(&mut self, k: usize, pool_i: usize, key: &[u8], server: usize) -> bool {
        let now = self.now_us;
        let pool = &mut self.pools[pool_i];
        let db = self.clients.get(k).and_then(|c| c.db());
        if db.is_some_and(|d| d != pool.cfg.redis_db) {
            // Clients of other databases bypass the cache.
            return false;
        }
        let generation = pool.generation;
        let db = pool.cfg.redis_db;
        let Some(cache) = pool.cache.as_mut() else {
            return false;
        };
        if cache.generation != generation {
            // The ring changed: a key may live elsewhere now.
            cache.clear();
            cache.generation = generation;
        }
        if let Some(v) = cache.get(key, now) {
            let mut out = std::mem::take(&mut self.subreq);
            out.clear();
            if v.is_empty() {
                // A missing key, in the client's protocol.
                let resp3 = self.clients.get(k).is_some_and(|c| c.resp3);
                resp::write_nil(&mut out, resp3);
            } else {
                out.extend_from_slice(v);
            }
            self.reply(k, &out);
            if out.capacity() <= KEEP_OUTPUT {
                self.subreq = out;
            }
            return true;
        }
        cache.misses += 1;
        let threshold = cache.threshold;
        if pool.hot.read_rate(key, db, now) >= threshold {
            self.hot_fetch(pool_i, server, key);
        }
        false
    }

    /// Fetch `key` (GET + PTTL) on the tracking connection of the server at config position
    /// `pos`, opening it if needed. Nothing happens when a fetch of it is in flight.
    fn hot_fetch(&mut self, pool_i: usize, pos: usize, key: &[u8]) {
        let pool = &mut self.pools[pool_i];
        let Some(&slot) = pool.order.get(pos) else {
            return;
        };
        let Some(cache) = pool.cache.as_mut() else {
            return;
        };
        let open = cache.tracking.get(slot).copied().flatten().is_some();
        if !open && !cache.may_open(slot, self.now_us) {
            return;
        }
        if !cache.start_fetch(key, slot, self.now_us) {
            return;
        }
        let ck = match cache.tracking.get(slot).copied().flatten() {
            Some(ck) => ck,
            None => match self.open_tracking(pool_i, slot) {
                Ok(ck) => ck,
                Err(e) => {
                    debug!(
                        "pool {}: no tracking connection: {e}",
                        self.pools[pool_i].cfg.name
                    );
                    if let Some(c) = self.pools[pool_i].cache.as_mut() {
                        c.end_fetch(key);
                        c.open_failed(slot, self.now_us);
                    }
                    return;
                }
            },
        };
        let owner = Owner::Track { pool: pool_i };
        let mut req = Vec::with_capacity(key.len() + 24);
        resp::write_command(&mut req, [&b"GET"[..], key]);
        self.push_request(
            ck,
            Pending::new(owner, 0, TRACK_GET, false, self.now_us),
            &req,
        );
        req.clear();
        resp::write_command(&mut req, [&b"PTTL"[..], key]);
        self.push_request(
            ck,
            Pending::new(owner, 0, TRACK_PTTL, false, self.now_us),
            &req,
        );
        if let Some(c) = self.pools[pool_i].cache.as_mut() {
            if c.queues.len() <= slot {
                c.queues.resize_with(slot + 1, Default::default);
            }
            c.queues[slot].push_back(key.into());
        }
    }

    /// Open the tracking connection to server slot `slot`: a connection of the proxy's own in
    /// the pool's database, switched to RESP3 with tracking on (invalidations arrive on it).
    fn open_tracking(&mut self, pool_i: usize, slot: usize) -> Result<usize, String> {
        let db = self.pools[pool_i].cfg.redis_db;
        // RESP2 handshake (credentials, database); HELLO 3 comes after, as our own request,
        // so a server without RESP3 refuses the cache, not the server.
        let ck = self.open_conn(pool_i, slot, 0, 0, false, db)?;
        let owner = Owner::Track { pool: pool_i };
        for req in [
            &b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"[..],
            b"*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\non\r\n",
        ] {
            self.push_request(
                ck,
                Pending::new(owner, 0, TRACK_ON, false, self.now_us),
                req,
            );
        }
        if let Some(c) = self.pools[pool_i].cache.as_mut() {
            if c.tracking.len() <= slot {
                c.tracking.resize(slot + 1, None);
            }
            c.tracking[slot] = Some(ck);
        }
        Ok(ck)
    }

    /// A reply on tracking connection `ck` of pool `pool_i`. Err: close the connection (its
    /// setup was refused, or it is out of step).
    pub(super) fn hot_reply(
        &mut self,
        ck: usize,
        pool_i: usize,
        part: u32,
        reply: &[u8],
    ) -> Result<(), String> {
        let now = self.now_us;
        let Some(conn) = self.conns.get(ck) else {
            return Ok(());
        };
        let slot = conn.server;
        let pool = &mut self.pools[pool_i];
        let generation = pool.generation;
        let name = pool.cfg.name.clone();
        let Some(cache) = pool
            .cache
            .as_mut()
            .filter(|c| c.tracking.get(slot) == Some(&Some(ck)))
        else {
            // A cache replaced by a reload: its connection closes once drained.
            return Ok(());
        };
        let error = matches!(reply.first(), Some(b'-') | Some(b'!'));
        match part {
            TRACK_ON if error => {
                let msg = String::from_utf8_lossy(reply).trim_end().to_string();
                warn!("pool {name}: hot-key cache tracking refused by the backend ({msg}); its keys are not cached");
                cache.open_failed(slot, now);
                return Err(format!("tracking refused: {msg}"));
            }
            TRACK_ON => {}
            TRACK_GET => {
                let key = cache.queues.get(slot).and_then(|q| q.front()).cloned();
                // A string is kept as its bulk reply; a missing key as an empty value (nil,
                // written in each client's protocol); anything else (an error) is not kept.
                let value = match reply {
                    b"_\r\n" | b"$-1\r\n" => Some(Vec::new()),
                    r if r.first() == Some(&b'$') => Some(r.to_vec()),
                    _ => None,
                };
                if let Some(f) = key.and_then(|key| cache.fetch_mut(&key)) {
                    f.wrongtype = reply.starts_with(b"-WRONGTYPE");
                    if value.is_some() {
                        f.value = value;
                    }
                }
            }
            TRACK_PTTL => {
                let Some(key) = cache.queues.get_mut(slot).and_then(|q| q.pop_front()) else {
                    return Err("tracking connection out of step".into());
                };
                let Some(f) = cache.end_fetch(&key) else {
                    return Ok(());
                };
                let ttl = match crate::resp::parse_reply(reply) {
                    Ok(Some((crate::resp::Reply::Integer(n), _))) => n,
                    _ => -2,
                };
                // Counted from when the fetch was sent: never later than the expiry in Redis.
                // A missing key must still be missing (-2), a value still there (-1 or a TTL).
                let missing = f.value.as_ref().is_some_and(|v| v.is_empty());
                let deadline = match ttl {
                    -2 if missing => Some(None),
                    -1 if !missing => Some(None),
                    n if n > 0 && !missing => {
                        Some(Some(f.sent.saturating_add(crate::clock::ms(n as u64))))
                    }
                    _ => None,
                };
                if cache.generation != generation {
                    cache.clear();
                    cache.generation = generation;
                    return Ok(());
                }
                if f.wrongtype && !f.poisoned {
                    // Not a string: not fetched again until Redis reports a change.
                    cache.refuse(&key, slot);
                } else if let (Some(v), Some(deadline), false) = (f.value, deadline, f.poisoned) {
                    cache.insert(&key, slot, &v, deadline, now);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A push on connection `ck` of pool `pool_i`: on its tracking connection, an invalidation.
    pub(super) fn hot_push(&mut self, ck: usize, pool_i: usize, push: &[u8]) {
        let Some(slot) = self.conns.get(ck).map(|c| c.server) else {
            return;
        };
        let Some(cache) = self.pools[pool_i]
            .cache
            .as_mut()
            .filter(|c| c.tracking.get(slot) == Some(&Some(ck)))
        else {
            return;
        };
        match crate::hotcache::invalidation(push) {
            Push::Keys(keys) => {
                for key in keys {
                    cache.invalidate(&key);
                }
            }
            Push::All => cache.drop_server(slot),
            Push::Other => {}
        }
    }

    /// Connection `ck` (of pool `pool_i`, server slot `slot`) is gone: when it was the cache's
    /// tracking connection, every entry of that server goes (an invalidation may have been
    /// lost with it) and its fetches end.
    pub(super) fn hot_conn_lost(&mut self, ck: usize, pool_i: usize, slot: usize) {
        let Some(cache) = self.pools[pool_i].cache.as_mut() else {
            return;
        };
        if cache.tracking.get(slot) != Some(&Some(ck)) {
            return;
        }
        cache.tracking[slot] = None;
        cache.drop_server(slot);
        if let Some(q) = cache.queues.get_mut(slot) {
            for key in std::mem::take(q) {
                cache.end_fetch(&key);
            }
        }
    }
}
