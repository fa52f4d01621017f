//! Online rebalancing in the event loop (`rebalance yes`; the socket-free state is
//! `crate::rebalance`): starting one when a pool's ring changes, the serve rule (a command on a
//! moving key runs only after its key was MIGRATEd from its old owner), the barriers, replies
//! and losses of the rebalance's requests, and PROXY REBALANCE / INFO rebalance. The background
//! mover's steps are `mover.rs`.
//!
//! Invariants:
//! - A command whose keys are moving stays unparsed in the client's input (like a command held
//!   at a fence) until the MIGRATEs it needs are answered; then it runs on the new ring. An
//!   error of one of them is the command's reply; nothing is overwritten (no REPLACE).
//! - Keys move only after both barriers: every request this process sent under the old ring
//!   is answered (markers behind them), and every proxy process registered on the old ring's
//!   servers announces the new ring. A process announces the new ring only after its own
//!   markers came back, so a write sent under the old ring by any process lands before the
//!   key moves.
//! - Every MIGRATE from one source travels on that source's mover connection, so the client's
//!   and the mover's MIGRATEs of one key are ordered (the later one answers NOKEY).
//! - A source is done after a full SCAN pass over its databases that found nothing to move;
//!   a removed server stays a source (reachable, not in the ring) until then.

use super::*;
use crate::rebalance::{Phase, Rebalance, State};

/// `Pending::part` of the mover's requests.
pub(super) const MOVER_KEYSPACE: u32 = 0;
pub(super) const MOVER_SCAN: u32 = 1;
pub(super) const MOVER_MIGRATE: u32 = 2;
/// Checking a BUSYKEY batch (`crate::rebalance::Resolve`; `seq`: the key's index).
pub(super) const MOVER_DUMP_SRC: u32 = 3;
pub(super) const MOVER_DUMP_DST: u32 = 4;
pub(super) const MOVER_DEL: u32 = 5;
/// `Pending::part` of the barrier's requests.
const BARRIER_MARKER: u32 = 0;
const BARRIER_CHECK: u32 = 1;
/// How often the multi-process barrier is checked while waiting.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long a command on a moving key waits for the barrier before it gets an error.
const BARRIER_WAIT: Duration = Duration::from_secs(10);

/// What the serve rule says about one command.
pub(super) enum Gate {
    /// No key of it is moving (or they just moved): run it.
    Pass,
    /// Held (unparsed) until its keys moved or the barrier passed.
    Defer,
    /// Its keys could not be moved: this error is its reply.
    Fail(String),
}

impl Proxy {
    // ----- starting -------------------------------------------------------------------

    /// Before a pool is reconfigured: its placement, if a change may start a rebalance.
    pub(super) fn old_placement(&self, pool_i: usize) -> Option<crate::rebalance::OldRing> {
        let p = &self.pools[pool_i];
        (p.cfg.rebalance && p.cluster.is_none()).then(|| crate::rebalance::OldRing {
            ring: p.ring.clone(),
            order: p.order.clone(),
            tag: p.cfg.hash_tag,
        })
    }

    /// A change that would move keys of a pool that is still rebalancing waits: the reload (or
    /// membership command) is refused with this reason.
    pub(super) fn rebalance_refuses(
        &self,
        pool_i: usize,
        new: &crate::config::PoolConfig,
    ) -> Option<String> {
        let p = &self.pools[pool_i];
        let rb = p.rebalance.as_ref()?;
        let moves = crate::rebalance::fingerprint(&p.cfg) != crate::rebalance::fingerprint(new);
        moves.then(|| {
            format!(
                "pool {} is still rebalancing ({}): retry once INFO rebalance shows state=idle, or undo the change",
                p.cfg.name,
                rb.fields()
            )
        })
    }

    /// After a pool was reconfigured: start a rebalance when its ring changed.
    pub(super) fn start_rebalance(
        &mut self,
        pool_i: usize,
        old: Option<crate::rebalance::OldRing>,
        ch: &crate::pool::Changes,
    ) {
        let Some(old) = old else {
            return;
        };
        let pool = &mut self.pools[pool_i];
        if !pool.cfg.rebalance || !ch.ring_changed && ch.retired.is_empty() {
            return;
        }
        pool.rebalances += 1;
        let fp = crate::rebalance::fingerprint(&pool.cfg);
        let sources = old.order.clone();
        let mut rb = Rebalance::new(pool.rebalances, old, fp, sources, self.now);
        // Barrier 1: a marker behind whatever this process sent under the old ring.
        let mut marked = Vec::new();
        for (ck, conn) in self.conns.iter() {
            // A blocked command heading its connection is not waited for: everything sent
            // before it is answered, and its key did not move (`follow_moves` failed it
            // otherwise); waiting would hold the rebalance until someone pushes.
            let blocked = conn.inflight.front().is_some_and(|p| p.blocking);
            if conn.pool == pool_i && !conn.pubsub && !conn.inflight.is_empty() && !blocked {
                marked.push(ck);
            }
        }
        rb.local_pending = marked.len();
        info!(
            "pool {}: rebalance {} started ({} sources; {} connections to drain first)",
            pool.cfg.name,
            rb.epoch,
            rb.sources.len(),
            marked.len()
        );
        pool.rebalance = Some(Box::new(rb));
        for ck in marked {
            let p = Pending::new(
                Owner::Barrier { pool: pool_i },
                0,
                BARRIER_MARKER,
                false,
                self.now_us,
            );
            self.push_request(ck, p, b"*1\r\n$4\r\nPING\r\n");
        }
    }

    // ----- the serve rule -------------------------------------------------------------

    /// Whether client `k`'s command may run now (see `Gate`). Called only while its pool
    /// rebalances.
    #[cold]
    pub(super) fn gate(
        &mut self,
        k: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
    ) -> Gate {
        use crate::commands::Class;
        if !matches!(spec.class, Class::Keyed | Class::Split(_) | Class::Blocking) {
            return Gate::Pass;
        }
        let Some(c) = self.clients.get_mut(k) else {
            return Gate::Pass;
        };
        let (pool_i, id, db) = (c.pool, c.id, c.db());
        let epoch = self.pools[pool_i]
            .rebalance
            .as_ref()
            .map_or(0, |rb| rb.epoch);
        if let Some(meta) = c.meta.as_mut() {
            // Left by a command whose MIGRATEs were answered after the rebalance ended (it ran
            // without the gate): its keys and error belong to no command of this rebalance.
            if meta
                .moving
                .as_ref()
                .is_some_and(|m| m.pending == 0 && m.epoch != epoch)
            {
                meta.moving = None;
            }
        }
        if let Some(m) = c.meta.as_mut().and_then(|m| m.moving.as_mut()) {
            if m.pending > 0 {
                c.draining = true;
                return Gate::Defer;
            }
            if let Some(e) = m.error.take() {
                if let Some(m) = c.meta.as_mut() {
                    m.moving = None;
                }
                return Gate::Fail(e);
            }
        }
        let mut keys = std::mem::take(&mut self.keys);
        let ok =
            crate::commands::key_positions(spec, args.len(), &|i| args.get(frame, i), &mut keys)
                .is_ok();
        let pool = &self.pools[pool_i];
        let Some(rb) = pool.rebalance.as_ref() else {
            self.keys = keys;
            return Gate::Pass;
        };
        let done: &[Vec<u8>] = self
            .clients
            .get(k)
            .and_then(|c| c.meta.as_ref())
            .and_then(|m| m.moving.as_ref())
            .map_or(&[], |m| m.done.as_slice());
        // (old owner, new owner, database, key) of every moving key not moved yet for this
        // command.
        let mut moving: Vec<(usize, usize, u32, Vec<u8>)> = Vec::new();
        let cdb = db.unwrap_or(pool.cfg.redis_db);
        if ok {
            let mut add = |key: &[u8], db: u32| {
                let (Some(old), Some(new)) = (rb.old.owner_slot(key), pool.owner_slot(key)) else {
                    return;
                };
                if old != new && rb.source_open(old) && !done.iter().any(|d| d == key) {
                    moving.push((old, new, db, key.to_vec()));
                }
            };
            for &i in &keys {
                add(args.get(frame, i), cdb);
            }
            // `MOVE key db` and `COPY src dst DB n` also read the key in the other database
            // (its existence decides the answer): it moves first too.
            if let Some((key, other)) = other_db_key(spec, frame, args) {
                if other != cdb {
                    add(key, other);
                }
            }
        }
        self.keys = keys;
        let ready = rb.ready();
        if moving.is_empty() {
            if let Some(m) = self.clients.get_mut(k).and_then(|c| c.meta.as_mut()) {
                m.moving = None;
            }
            return Gate::Pass;
        }
        let now = self.now;
        let Some(c) = self.clients.get_mut(k) else {
            return Gate::Pass;
        };
        let m = c.meta_mut().moving.get_or_insert_with(Default::default);
        m.epoch = epoch;
        if !ready {
            let since = *m.since.get_or_insert(now);
            if now.duration_since(since) >= BARRIER_WAIT {
                c.meta_mut().moving = None;
                let name = &self.pools[pool_i].cfg.name;
                return Gate::Fail(format!(
                    "TRYAGAIN pool {name} is rebalancing and waits for every proxy process to load the new configuration (or for its requests sent before the change): retry"
                ));
            }
            c.draining = true;
            if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
                if !rb.waiters.contains(&(k, id)) {
                    rb.waiters.push((k, id));
                }
            }
            return Gate::Defer;
        }
        // Group by (source, destination, database): one MIGRATE each, on the source's mover
        // connection.
        moving.sort();
        // A key named twice (MGET k k) is moved once: MIGRATE KEYS k k would restore it twice
        // and fail with BUSYKEY on the second copy.
        moving.dedup();
        let mut groups: Vec<(usize, usize, u32, Vec<Vec<u8>>)> = Vec::new();
        for (old, new, db, key) in moving {
            match groups.last_mut() {
                Some(g) if g.0 == old && g.1 == new && g.2 == db => g.3.push(key),
                _ => groups.push((old, new, db, vec![key])),
            }
        }
        if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
            if groups.iter().any(|g| rb.would_cycle(g.0, g.1)) {
                // MIGRATEs the other way are in flight: wait for them (they would deadlock).
                if !rb.waiters.contains(&(k, id)) {
                    rb.waiters.push((k, id));
                }
                if let Some(c) = self.clients.get_mut(k) {
                    c.draining = true;
                }
                return Gate::Defer;
            }
        }
        for (src, dst, db, keys) in groups {
            // A group that crosses one this command just sent (MGET of a key moving s0 -> s1
            // and one moving s1 -> s0) waits for its answer: two MIGRATEs crossing between the
            // same servers block both until their timeout. The command runs the gate again
            // once the sent ones are answered, and sends the rest then.
            if self.pools[pool_i]
                .rebalance
                .as_ref()
                .is_some_and(|rb| rb.would_cycle(src, dst))
            {
                continue;
            }
            let n = keys.len() as u32;
            let owner = Owner::Move { key: k, id };
            let sent = self.send_migrate(pool_i, src, dst, db, &keys, owner, n, dst as u64);
            let Some(c) = self.clients.get_mut(k) else {
                return Gate::Pass;
            };
            let m = c.meta_mut().moving.get_or_insert_with(Default::default);
            match sent {
                Ok(()) => {
                    m.pending += 1;
                    m.done.extend(keys);
                }
                Err(e) => {
                    m.error.get_or_insert(e);
                }
            }
        }
        let Some(c) = self.clients.get_mut(k) else {
            return Gate::Pass;
        };
        let m = c.meta_mut().moving.get_or_insert_with(Default::default);
        if m.pending > 0 {
            c.draining = true;
            return Gate::Defer;
        }
        let e = m.error.take().unwrap_or_default();
        c.meta_mut().moving = None;
        Gate::Fail(e)
    }

    /// Queue `MIGRATE dst "" db timeout [AUTH] KEYS ...` on source `src`'s mover connection
    /// (opened if needed, re-selected to `db`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_migrate(
        &mut self,
        pool_i: usize,
        src: usize,
        dst: usize,
        db: u32,
        keys: &[Vec<u8>],
        owner: Owner,
        part: u32,
        seq: u64,
    ) -> Result<(), String> {
        let ck = self.mover_conn(pool_i, src, db)?;
        let pool = &self.pools[pool_i];
        let d = &pool.servers[dst];
        let host = d.addr.ip().to_string();
        let port = d.addr.port().to_string();
        let dbs = db.to_string();
        let timeout = pool.cfg.timeout_ms.max(1000).to_string();
        let server_cfg = pool
            .order
            .iter()
            .position(|&s| s == dst)
            .and_then(|pos| pool.cfg.servers.get(pos));
        let auth = pool.cfg.backend_auth(server_cfg);
        let mut parts: Vec<&[u8]> = vec![
            b"MIGRATE",
            host.as_bytes(),
            port.as_bytes(),
            b"",
            dbs.as_bytes(),
            timeout.as_bytes(),
        ];
        match auth {
            Some((Some(user), pw)) => {
                parts.extend([&b"AUTH2"[..], user.as_bytes(), pw.as_bytes()]);
            }
            Some((None, pw)) => parts.extend([&b"AUTH"[..], pw.as_bytes()]),
            None => {}
        }
        parts.push(b"KEYS");
        parts.extend(keys.iter().map(|k| k.as_slice()));
        let mut bytes = Vec::new();
        resp::write_command(&mut bytes, parts);
        let p = Pending::new(owner, seq, part, false, self.now_us);
        self.push_request(ck, p, &bytes);
        if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
            rb.edges.push((src, dst));
        }
        Ok(())
    }

    /// The mover connection of source `src` (a private connection of the mover), selected to
    /// `db`.
    pub(super) fn mover_conn(
        &mut self,
        pool_i: usize,
        src: usize,
        db: u32,
    ) -> Result<usize, String> {
        let existing = self.pools[pool_i]
            .rebalance
            .as_ref()
            .and_then(|rb| rb.sources.iter().find(|s| s.slot == src))
            .and_then(|s| s.conn);
        let ck = match existing {
            Some(ck) => ck,
            None => {
                let default = self.pools[pool_i].cfg.redis_db;
                let ck = self.open_conn(pool_i, src, 0, 0, true, default)?;
                if let Some(s) = self.pools[pool_i]
                    .rebalance
                    .as_mut()
                    .and_then(|rb| rb.sources.iter_mut().find(|s| s.slot == src))
                {
                    s.conn = Some(ck);
                }
                ck
            }
        };
        if let Some(conn) = self.conns.get_mut(ck) {
            if conn.db != db {
                upstream::queue_select(conn, db, self.now_us);
                self.mark_conn(ck);
            }
        }
        Ok(ck)
    }

    // ----- replies and failures -------------------------------------------------------

    /// A reply to a rebalance request (client MIGRATE, mover, barrier).
    pub(super) fn rebalance_reply(&mut self, ck: usize, p: Pending, reply: &[u8]) {
        let err = matches!(reply.first(), Some(b'-') | Some(b'!'));
        let (pool_i, src) = match self.conns.get(ck) {
            Some(c) => (c.pool, c.server),
            None => return,
        };
        match p.owner {
            Owner::Move { key, id } => {
                self.migrate_done(pool_i, src, p.seq as usize);
                let text = String::from_utf8_lossy(reply).trim_end().to_string();
                let pool_i = self.clients.get(key).map(|c| c.pool);
                if let Some(rb) = pool_i.and_then(|i| self.pools[i].rebalance.as_mut()) {
                    if err {
                        rb.failed += p.part as u64;
                    } else if reply.starts_with(b"+OK") {
                        rb.moved += p.part as u64;
                    }
                }
                let why = err.then(|| {
                    let pool = &self.pools[pool_i.unwrap_or(0)];
                    let name = |slot: usize| {
                        pool.servers.get(slot).map_or(String::new(), |s| s.name.clone())
                    };
                    let (from, to) = (name(src), name(p.seq as usize));
                    if text.contains("BUSYKEY") {
                        // Both copies stay: which one is right is the operator's call.
                        format!(
                            "BUSYKEY rustproxy cannot move a key of this command from backend {from} to {to} (rebalancing): it exists on both; keep one (FORWARD {from} DEL key or FORWARD {to} DEL key) and retry"
                        )
                    } else {
                        format!(
                            "TRYAGAIN rustproxy could not move this command's keys from backend {from} to {to} (rebalancing): {}",
                            text.trim_start_matches('-')
                        )
                    }
                });
                self.move_answered(key, id, why);
            }
            Owner::Mover { pool, slot } => {
                if p.part == MOVER_MIGRATE {
                    self.migrate_done(pool, slot, (p.seq >> 32) as usize);
                }
                self.mover_reply(pool, slot, p, reply);
            }
            Owner::Barrier { pool } => {
                let Some(pl) = self.pools.get_mut(pool) else {
                    return;
                };
                let name = pl.cfg.name.clone();
                let Some(rb) = pl.rebalance.as_mut() else {
                    return;
                };
                if p.part == BARRIER_MARKER {
                    rb.local_pending = rb.local_pending.saturating_sub(1);
                } else {
                    rb.check_pending = rb.check_pending.saturating_sub(1);
                    if err {
                        rb.check_stale += 1;
                    } else {
                        let body = crate::rebalance::bulk_body(reply);
                        let stale =
                            crate::rebalance::stale_registrations(body, &name, rb.fingerprint);
                        rb.check_stale += stale;
                    }
                }
            }
            _ => {}
        }
    }

    /// One of the MIGRATEs client `key`'s held command waits for is answered (`why`: its
    /// error): when it was the last, the command runs again (or fails).
    pub(super) fn move_answered(&mut self, key: usize, id: u64, why: Option<String>) {
        let Some(c) = self.clients.get_mut(key).filter(|c| c.id == id) else {
            return;
        };
        let Some(m) = c.meta.as_mut().and_then(|m| m.moving.as_mut()) else {
            return;
        };
        m.pending = m.pending.saturating_sub(1);
        if let Some(w) = why {
            m.error.get_or_insert(w);
        }
        if m.pending == 0 {
            c.draining = false;
            if !self.again.contains(&key) {
                self.again.push(key);
            }
        }
    }

    /// A connection carrying rebalance requests failed: their owners learn it.
    pub(super) fn rebalance_lost(&mut self, pool_i: usize, src: usize, p: Pending, why: &str) {
        match p.owner {
            Owner::Move { .. } => self.migrate_done(pool_i, src, p.seq as usize),
            Owner::Mover { pool, slot } if p.part == MOVER_MIGRATE => {
                if let Some(s) = self.source_mut(pool, slot) {
                    s.sent.pop_front();
                }
                self.migrate_done(pool, slot, (p.seq >> 32) as usize)
            }
            _ => {}
        }
        match p.owner {
            Owner::Move { key, id } => self.move_answered(
                key,
                id,
                Some(format!(
                    "TRYAGAIN rustproxy could not move this command's keys to their new backend (rebalancing): {why}"
                )),
            ),
            Owner::Mover { pool, slot } => {
                let now = self.now;
                if let Some(s) = self.pools[pool]
                    .rebalance
                    .as_mut()
                    .and_then(|rb| rb.sources.iter_mut().find(|s| s.slot == slot))
                {
                    if s.phase != Phase::ListDbs && !s.done {
                        s.failed(now, why);
                    }
                }
            }
            Owner::Barrier { pool } => {
                if let Some(rb) = self.pools[pool].rebalance.as_mut() {
                    if p.part == BARRIER_MARKER {
                        rb.local_pending = rb.local_pending.saturating_sub(1);
                    } else {
                        // A server that is gone holds no registrations.
                        rb.check_pending = rb.check_pending.saturating_sub(1);
                    }
                }
            }
            _ => {}
        }
    }

    /// A private connection of pool `pool_i` closed: forget it as a mover or registration
    /// connection (its slab key may be reused).
    pub(super) fn rebalance_forget(&mut self, pool_i: usize, k: usize) {
        let pool = &mut self.pools[pool_i];
        pool.registrations.retain(|r| r.1 != k);
        if let Some(rb) = pool.rebalance.as_mut() {
            for s in &mut rb.sources {
                if s.conn == Some(k) {
                    s.conn = None;
                }
            }
        }
    }

    /// A MIGRATE from `src` to `dst` is answered (or failed): held work that waited for it
    /// may go (the mover's held groups, clients waiting).
    pub(super) fn migrate_done(&mut self, pool_i: usize, src: usize, dst: usize) {
        let Some(rb) = self.pools[pool_i].rebalance.as_mut() else {
            return;
        };
        rb.edge_done(src, dst);
        if rb.ready() {
            let waiters = std::mem::take(&mut rb.waiters);
            self.wake(waiters);
        }
        let Some(rb) = self.pools[pool_i].rebalance.as_ref() else {
            return;
        };
        let blocked: Vec<(usize, u32)> = rb
            .sources
            .iter()
            .filter(|s| !s.held.is_empty())
            .map(|s| (s.slot, s.dbs.get(s.db_i).copied().unwrap_or(0)))
            .collect();
        for (slot, db) in blocked {
            self.send_held(pool_i, slot, db);
        }
    }

    /// One timer tick of every rebalancing pool: barriers, mover steps, registrations, the end.
    pub(super) fn rebalance_tick(&mut self) {
        for pool_i in 0..self.pools.len() {
            if self.pools[pool_i].removed {
                continue;
            }
            if self.pools[pool_i].cfg.rebalance {
                self.keep_registrations(pool_i);
            }
            if self.pools[pool_i].rebalance.is_none() {
                continue;
            }
            self.barrier_tick(pool_i);
            self.mover_tick(pool_i);
            self.maybe_finish_rebalance(pool_i);
        }
    }

    /// Registration connections: one per server of the ring (and per source), named after the
    /// ring this process serves, announced only once its own old-ring requests are answered.
    pub(super) fn keep_registrations(&mut self, pool_i: usize) {
        let pool = &self.pools[pool_i];
        let (fp, local_done) = match &pool.rebalance {
            Some(rb) => (rb.fingerprint, rb.local_pending == 0),
            None => (crate::rebalance::fingerprint(&pool.cfg), true),
        };
        let mut want: Vec<usize> = pool.order.clone();
        if let Some(rb) = &pool.rebalance {
            for s in &rb.sources {
                if !want.contains(&s.slot) {
                    want.push(s.slot);
                }
            }
        }
        let now = self.now;
        for slot in want {
            if self.pools[pool_i].servers[slot].is_down(now) {
                continue;
            }
            let have = self.pools[pool_i]
                .registrations
                .iter()
                .position(|r| r.0 == slot);
            let (ck, announced) = match have {
                Some(i) => {
                    let r = self.pools[pool_i].registrations[i];
                    (r.1, r.2)
                }
                None => {
                    let db = self.pools[pool_i].cfg.redis_db;
                    let Ok(ck) = self.open_conn(pool_i, slot, 0, 0, true, db) else {
                        continue;
                    };
                    self.pools[pool_i].registrations.push((slot, ck, 0));
                    (ck, 0)
                }
            };
            // Until this process's old-ring requests are answered, it keeps announcing the old
            // ring (a fresh connection announces the new one only then).
            if announced != fp && local_done {
                let name = crate::rebalance::registration_name(&self.pools[pool_i].cfg.name, fp);
                let mut bytes = Vec::new();
                resp::write_command(&mut bytes, [&b"CLIENT"[..], b"SETNAME", name.as_bytes()]);
                self.push_request(ck, Pending::internal(Owner::Swallow, self.now_us), &bytes);
                if let Some(r) = self.pools[pool_i]
                    .registrations
                    .iter_mut()
                    .find(|r| r.1 == ck)
                {
                    r.2 = fp;
                }
            }
        }
    }

    /// Barrier 2: every registered process serves the new ring (checked on the old ring's
    /// servers, where processes still on the old ring are registered).
    pub(super) fn barrier_tick(&mut self, pool_i: usize) {
        let now = self.now;
        let name = self.pools[pool_i].cfg.name.clone();
        let Some(rb) = self.pools[pool_i].rebalance.as_mut() else {
            return;
        };
        if rb.others_ready || rb.local_pending > 0 {
            return;
        }
        if rb.checking {
            if rb.check_pending > 0 {
                return;
            }
            rb.checking = false;
            if rb.check_stale > 0 {
                rb.next_check = now + CHECK_EVERY;
                return;
            }
            rb.others_ready = true;
            info!(
                "pool {name}: rebalance {}: every proxy process serves the new ring; moving keys",
                rb.epoch
            );
            let waiters = std::mem::take(&mut rb.waiters);
            self.wake(waiters);
            return;
        }
        if rb.next_check > now {
            return;
        }
        // A round of checks; this process's own announcement is queued ahead of them on the
        // same connections (`keep_registrations` ran first in this tick).
        let slots: Vec<usize> = rb.old.order.clone();
        rb.check_stale = 0;
        rb.checking = true;
        let mut sent = 0;
        for slot in slots {
            if self.pools[pool_i].servers[slot].is_down(now) {
                continue;
            }
            let Some(ck) = self.pools[pool_i]
                .registrations
                .iter()
                .find(|r| r.0 == slot)
                .map(|r| r.1)
            else {
                continue;
            };
            let owner = Owner::Barrier { pool: pool_i };
            let p = Pending::new(owner, 0, BARRIER_CHECK, false, self.now_us);
            self.push_request(ck, p, b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n");
            sent += 1;
        }
        if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
            rb.check_pending = sent;
        }
    }

    /// Every source done: the old ring is dropped, removed servers close.
    pub(super) fn maybe_finish_rebalance(&mut self, pool_i: usize) {
        let pool = &mut self.pools[pool_i];
        let Some(rb) = pool.rebalance.as_ref() else {
            return;
        };
        if rb.state() != State::Idle {
            return;
        }
        let Some(rb) = pool.rebalance.take() else {
            return;
        };
        info!(
            "pool {}: rebalance {} done: scanned={} moved={} failed={} in {:.1}s",
            pool.cfg.name,
            rb.epoch,
            rb.scanned,
            rb.moved,
            rb.failed,
            self.now.duration_since(rb.started).as_secs_f64()
        );
        let mut close: Vec<usize> = rb.sources.iter().filter_map(|s| s.conn).collect();
        // Removed servers were kept as sources: nothing is left on them now.
        let retired: Vec<usize> = rb
            .sources
            .iter()
            .map(|s| s.slot)
            .filter(|&slot| pool.servers[slot].retired)
            .collect();
        pool.registrations.retain(|r| {
            if retired.contains(&r.0) {
                close.push(r.1);
                false
            } else {
                true
            }
        });
        pool.last_rebalance = Some(rb);
        for ck in close {
            self.retire_conn(ck);
        }
    }

    // ----- control and observability --------------------------------------------------

    /// `PROXY REBALANCE STATUS|PAUSE|RESUME` for the client's pool.
    pub(super) fn rebalance_cmd(&mut self, pool_i: usize, sub: &[u8]) -> Result<String, String> {
        let pool = &mut self.pools[pool_i];
        let name = pool.cfg.name.clone();
        if !pool.cfg.rebalance {
            return Err(format!("pool {name} has rebalance no"));
        }
        let pause = match sub.to_ascii_uppercase().as_slice() {
            b"STATUS" => return Ok(rebalance_fields(pool)),
            b"PAUSE" => true,
            b"RESUME" => false,
            _ => return Err("usage: PROXY REBALANCE STATUS|PAUSE|RESUME".into()),
        };
        let Some(rb) = pool.rebalance.as_mut() else {
            return Err(format!("pool {name} is not rebalancing"));
        };
        rb.paused = pause;
        info!(
            "pool {name}: rebalance {} {}",
            rb.epoch,
            if pause { "paused" } else { "resumed" }
        );
        Ok(rebalance_fields(pool))
    }

    /// Clients held by the serve rule (`waiters`) read their input again.
    pub(super) fn wake(&mut self, waiters: Vec<(usize, u64)>) {
        for (k, id) in waiters {
            if let Some(c) = self.clients.get_mut(k).filter(|c| c.id == id) {
                c.draining = false;
                if !self.again.contains(&k) {
                    self.again.push(k);
                }
            }
        }
    }

    /// `INFO rebalance`: one line per pool with `rebalance yes`.
    pub(super) fn rebalance_info(&self) -> String {
        let mut o = String::from("# Rebalance\r\n");
        for p in self.pools.iter().filter(|p| !p.removed && p.cfg.rebalance) {
            o.push_str(&format!("{}:{}\r\n", p.cfg.name, rebalance_fields(p)));
        }
        o
    }
}

/// A pool's rebalance fields (`state=idle` with the last rebalance's figures when none runs).
pub(super) fn rebalance_fields(p: &Pool) -> String {
    match (&p.rebalance, &p.last_rebalance) {
        (Some(rb), _) | (None, Some(rb)) => rb.fields(),
        (None, None) => "state=idle,epoch=0,scanned=0,moved=0,failed=0,backends_left=0".into(),
    }
}

/// The key that `MOVE key db` / `COPY src dst ... DB n` reads in another database, and that
/// database (None for other commands, or a database argument that is not a valid index:
/// `db_args` refuses those).
fn other_db_key<'a>(spec: &Spec, frame: &'a [u8], args: &'a Args) -> Option<(&'a [u8], u32)> {
    let db = |i: usize| {
        std::str::from_utf8(args.get(frame, i))
            .ok()?
            .parse::<u32>()
            .ok()
    };
    match spec.name {
        "MOVE" if args.len() == 3 => Some((args.get(frame, 1), db(2)?)),
        "COPY" if args.len() >= 5 => {
            let at =
                (3..args.len() - 1).find(|&i| args.get(frame, i).eq_ignore_ascii_case(b"DB"))?;
            Some((args.get(frame, 2), db(at + 1)?))
        }
        _ => None,
    }
}
