//! Hot keys in the event loop: sampling keyed requests into the pool's detector
//! (`crate::hotkeys`), the HOTKEYS command, the `INFO hotkeys` section and the /metrics
//! families, and the hot-key cache (`crate::hotcache`): GETs answered from it, writes that
//! drop its entries, and the per-backend tracking connections that fill it and keep it
//! coherent.
//!
//! Invariants:
//! - A request that is not sampled costs one decrement and branch (`HotKeys::tick`); a pool
//!   without a cache costs one `Option` test per request (`Pool::cache`).
//! - A cached reply goes through the client's chain (`reply`), in request order, like any.
//! - Only clients of the pool's default database use the cache (others bypass it), and only
//!   outside MULTI; cluster pools have no cache (configuration refuses it).
//! - Coherence: a write through the proxy drops its keys' entries (and poisons fetches in
//!   flight) before it is forwarded; a tracking connection's `invalidate` push drops the keys
//!   it names (all of its backend's for a null one); a tracking connection lost drops every
//!   entry of its backend; FLUSHALL/FLUSHDB through the proxy drop everything; a ring change
//!   (pool generation) drops everything. Entries carry the key's PTTL as a deadline.
//! - Tracking connections are proxy-owned (`Owner::Track`), never lent to a client; the
//!   replies on one arrive in the order its requests were sent, so the fetch queue of the
//!   backend (`HotCache::queues`) names the key each reply is for.

use super::*;
use crate::hotkeys::PoolHot;

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
        let Some(key) = self.first_key(pool_i, spec, frame, args) else {
            return;
        };
        let pos = server.min(u16::MAX as usize) as u16;
        self.pools[pool_i].hot.record(&key, db, write, pos, now);
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
}
