//! Per-client state that lives on a backend: private connections (lent for blocking commands
//! and WATCH), blocking commands, and MULTI/EXEC transactions queued in the proxy.
//!
//! Invariants:
//! - A private connection is lent only when idle (no owner, nothing in flight); one given back
//!   while busy (EXEC in flight) joins the idle list when its last reply arrives.
//! - Transactions and private connections name their server by slot (stable across reloads),
//!   never by config position. EXEC re-checks, when the ring changed since the transaction was
//!   pinned, that its server is still in the pool and still owns every key; otherwise
//!   EXECABORT, never a write on another server.

use super::*;

impl Proxy {
    /// Lend client `k` a private connection to the server in slot `slot` (or return the one it
    /// holds, which must be to that server).
    pub(super) fn acquire_private(&mut self, k: usize, slot: usize) -> Result<usize, String> {
        let Some(c) = self.clients.get(k) else {
            return Err("ERR client gone".into());
        };
        let (pool_i, proto, id, held, db) = (c.pool, c.resp3 as usize, c.id, c.private, c.db());
        if let Some(ck) = held {
            return match self.conns.get(ck) {
                Some(cn) if cn.server == slot => Ok(ck),
                _ => Err("PROXYERROR keys are on different backends".into()),
            };
        }
        // A RESP3 subscriber holding a subscription connection to this server uses it: one
        // connection per server keeps its commands in order with its messages, as on one Redis.
        let sub_conn = match &c.sub {
            Some(sub) if proto == 1 => sub.conn_at(slot),
            _ => None,
        };
        if let Some(ck) = sub_conn {
            if let Some(c) = self.clients.get_mut(k) {
                c.private = Some(ck);
            }
            return Ok(ck);
        }
        let cap = self.pools[pool_i].cfg.private_connections;
        let Some(srv) = self.pools[pool_i].servers.get_mut(slot) else {
            return Err("ERR no such backend (the configuration changed)".into());
        };
        if srv.retired {
            return Err(format!(
                "ERR backend {} was removed from the pool (the configuration changed)",
                srv.name
            ));
        }
        let mut found = None;
        while let Some(ck) = srv.idle_private[proto].pop() {
            let idle = self.conns.get(ck).is_some_and(|cn| {
                cn.owner.is_none() && !cn.returning && !cn.pubsub && cn.inflight.is_empty()
            });
            if idle {
                found = Some(ck);
                break;
            }
        }
        let ck = match found {
            Some(ck) => ck,
            None => {
                if srv.private_open >= cap {
                    return Err(format!(
                        "ERR too many private connections to backend {} (private_connections {cap})",
                        srv.name
                    ));
                }
                self.open_conn(
                    pool_i,
                    slot,
                    proto,
                    0,
                    true,
                    db.unwrap_or(self.pools[pool_i].cfg.redis_db),
                )?
            }
        };
        let db = db.unwrap_or(self.pools[pool_i].cfg.redis_db);
        if let Some(cn) = self.conns.get_mut(ck) {
            cn.owner = Some((k, id));
            if cn.db != db {
                // Lent idle to a client of another database: it selects the client's first.
                upstream::queue_select(cn, db, self.now_us);
                self.mark_conn(ck);
            }
        }
        if let Some(c) = self.clients.get_mut(k) {
            c.private = Some(ck);
        }
        Ok(ck)
    }

    /// Client `k` gives its private connection back. It is lent again only once nothing is in
    /// flight on it (`park_private`).
    pub(super) fn release_private(&mut self, k: usize) {
        let Some(ck) = self.clients.get_mut(k).and_then(|c| c.private.take()) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(ck) else {
            return;
        };
        conn.blocked_keys = Vec::new();
        if conn.pubsub {
            // Also the client's subscription connection (RESP3): it stays with the
            // subscriptions, or closes if they ended meanwhile.
            let still = self
                .clients
                .get(k)
                .and_then(|c| c.sub.as_ref())
                .is_some_and(|s| s.conns.iter().any(|&(_, x)| x == ck));
            if !still {
                conn.owner = None;
                self.retire_conn(ck);
            }
            return;
        }
        conn.owner = None;
        if conn.inflight.is_empty() {
            self.park_private(ck);
        } else {
            conn.returning = true;
        }
    }

    /// An idle private connection goes to its server's idle list (or closes when the list is
    /// full or the server left the pool).
    pub(super) fn park_private(&mut self, ck: usize) {
        let Some(conn) = self.conns.get_mut(ck) else {
            return;
        };
        conn.returning = false;
        let srv = &mut self.pools[conn.pool].servers[conn.server];
        if !srv.retired && !conn.pubsub && srv.idle_private[conn.proto].len() < PRIVATE_IDLE {
            srv.idle_private[conn.proto].push(ck);
        } else {
            self.retire_conn(ck);
        }
    }

    /// Run a blocking command on a private connection; the client is not read until it answers.
    /// `keys`: its keys (the ones it waits on and a BLMOVE's destination), kept on the
    /// connection so that a reload that moves any of them (or removes its server) ends the wait
    /// instead of leaving it on the wrong server: a BLPOP k1 k2 whose k2 moved would miss a
    /// push to k2, and a BLMOVE whose destination moved would write it on the old owner.
    pub(super) fn blocking(&mut self, k: usize, pos: usize, bytes: &[u8], keys: Vec<Vec<u8>>) {
        self.cur.backend = pos.min(u16::MAX as usize - 1) as u16;
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if c.closing.after_input() {
            // Its peer is gone: a blocking command would wait for nobody (Redis frees a closed
            // client that blocks). It ends here, with what follows it; nothing was popped.
            return self.close_client(k);
        }
        let seq = c.chain.push(Slot::Waiting, self.cur);
        let slot = self.pools[c.pool].order.get(pos).copied();
        let got = match slot {
            Some(slot) => self.acquire_private(k, slot),
            None => Err("ERR no such backend (the configuration changed)".into()),
        };
        match got {
            Ok(ck) => {
                self.ask_backend_id(ck);
                self.send_on(ck, k, bytes, seq, WHOLE, true);
                if let Some(conn) = self.conns.get_mut(ck) {
                    conn.blocked_keys = keys;
                }
                if let Some(c) = self.clients.get_mut(k) {
                    c.blocked = true;
                }
            }
            Err(e) => self.fail_slot(k, seq, WHOLE, &e),
        }
    }

    /// The blocking command of client `k` (id) was answered (or failed): lift the block.
    pub(super) fn unblock(&mut self, k: usize, id: u64) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if c.id != id || !c.blocked {
            return;
        }
        c.blocked = false;
        if let Some(conn) = c.private.and_then(|ck| self.conns.get_mut(ck)) {
            conn.blocked_keys = Vec::new();
        }
        if !c.watching() {
            self.release_private(k);
        }
        if !self.again.contains(&k) {
            self.again.push(k);
        }
    }

    /// A command received between MULTI and EXEC: check it, queue it, answer +QUEUED.
    pub(super) fn queue_in_multi(
        &mut self,
        k: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
    ) {
        let Some(pool_i) = self.clients.get(k).map(|c| c.pool) else {
            return;
        };
        if crate::commands::has(spec, crate::commands::flag::NO_MULTI) {
            // Redis's refusal (its `no-multi` commands): the transaction is flagged and EXEC
            // answers EXECABORT.
            if let Some(t) = self.clients.get_mut(k).and_then(|c| c.txn.as_mut()) {
                t.dirty = true;
            }
            return self.reject(k, "ERR Command not allowed inside a transaction");
        }
        let pool = &self.pools[pool_i];
        let target = pool.target();
        // Keyless commands float: they run wherever the transaction's keys are.
        let (argc, hinted) = router::hash_hint(spec, args, frame, target.hash_override);
        let keyless = !hinted
            && (spec.class == crate::commands::Class::AnyBackend
                || spec.class == crate::commands::Class::Local
                || crate::commands::key_positions(
                    spec,
                    argc,
                    &|i| args.get(frame, i),
                    &mut self.keys,
                )
                .is_ok_and(|()| self.keys.is_empty()));
        let plan = router::plan(spec, args, frame, &target, &mut self.keys);
        let spread = self.pools[pool_i].target().spread_error();
        let (server, argc, reencode) = match (plan.one_backend(), plan) {
            (Some(one), _) => one,
            (None, Plan::Local(s)) if matches!(s.name, "PING" | "ECHO") => {
                (0, args.len(), args.is_inline())
            }
            (None, Plan::Error(e)) => return self.multi_error(k, &e),
            (None, Plan::Split { .. }) => return self.multi_error(k, &spread),
            (None, plan) => {
                // Redis would queue it, but a transaction runs on one backend: Redis's refusal,
                // with the proxy's reason.
                let why = match plan {
                    Plan::FanOut(_) | Plan::Scan { .. } => "it runs on every backend",
                    Plan::Local(_) => "the proxy answers it itself",
                    _ => "it does not run on one backend",
                };
                let msg = format!(
                    "ERR Command not allowed inside a transaction: rustproxy cannot queue '{}' ({why}; a transaction runs on one backend)",
                    spec.name.to_ascii_lowercase().replace(' ', "|")
                );
                return self.multi_error(k, &msg);
            }
        };
        let slot = self.pools[pool_i].order.get(server).copied().unwrap_or(0);
        let generation = self.pools[pool_i].generation;
        let keys = if keyless {
            Vec::new()
        } else {
            self.routing_keys(pool_i, spec, frame, args)
        };
        // A hinted write's own keys, for the hot-key cache to drop at EXEC (`keys` holds
        // the hint).
        let written = if hinted && self.pools[pool_i].cache.is_some() && hot::writes(spec) {
            let mut own = std::mem::take(&mut self.keys);
            let found =
                crate::commands::key_positions(spec, argc, &|i| args.get(frame, i), &mut own)
                    .map(|()| own.iter().map(|&i| args.get(frame, i).to_vec()).collect())
                    .unwrap_or_default();
            self.keys = own;
            found
        } else {
            Vec::new()
        };
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let Some(txn) = c.txn.as_mut() else {
            return;
        };
        if !keyless {
            match txn.server {
                None => {
                    txn.server = Some(slot);
                    txn.generation = generation;
                }
                Some(s) if s != slot => return self.multi_error(k, &spread),
                _ => {}
            }
            txn.keys.extend(keys);
        }
        txn.written.extend(written);
        if reencode {
            let bytes = encode_args(args, frame, 0..argc);
            txn.queued.extend_from_slice(&bytes);
        } else {
            txn.queued.extend_from_slice(frame);
        }
        txn.count += 1;
        self.reply(k, b"+QUEUED\r\n");
    }

    /// A command that cannot join the transaction: its error now, EXECABORT at EXEC.
    pub(super) fn multi_error(&mut self, k: usize, msg: &str) {
        if let Some(t) = self.clients.get_mut(k).and_then(|c| c.txn.as_mut()) {
            t.dirty = true;
        }
        self.reply_err(k, msg);
    }

    /// End WATCH (if any) and forget the transaction; the private connection goes back (once
    /// idle), and the client's next command waits for what is in flight on it (a fence).
    pub(super) fn end_txn(&mut self, k: usize, send_unwatch: bool) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let watching = c.watching();
        let ck = c.private;
        c.txn = None;
        if watching {
            c.fence = true;
            if let (true, Some(ck)) = (send_unwatch, ck) {
                self.send_swallowed(ck, b"*1\r\n$7\r\nUNWATCH\r\n");
            }
            if !self.clients.get(k).is_some_and(|c| c.blocked) {
                self.release_private(k);
            }
        }
    }

    /// The server slot a transaction runs on: the one it was pinned to, provided it is still
    /// in the pool and (when the ring changed since) still owns every key it touches. Err: the
    /// EXECABORT text.
    pub(super) fn txn_home(
        &self,
        pool_i: usize,
        txn: &crate::client::Txn,
    ) -> Result<usize, String> {
        let pool = &self.pools[pool_i];
        let Some(slot) = txn.server else {
            // Keyless commands only: the first server.
            return pool
                .order
                .first()
                .copied()
                .ok_or_else(|| "EXECABORT Transaction discarded: no backend".to_string());
        };
        let srv = &pool.servers[slot];
        if srv.retired {
            return Err(format!(
                "EXECABORT Transaction discarded: backend {} left the pool while it was queued (the configuration changed)",
                srv.name
            ));
        }
        if txn.generation != pool.generation {
            let moved = txn
                .keys
                .iter()
                .any(|key| pool.owner_slot(key) != Some(slot));
            if moved {
                return Err(format!(
                    "EXECABORT Transaction discarded: its keys moved off backend {} while it was queued (the configuration changed)",
                    srv.name
                ));
            }
        }
        Ok(slot)
    }

    pub(super) fn txn_cmd(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let in_multi = c.in_multi();
        match spec.name {
            "MULTI" => {
                if in_multi {
                    return self.reply_err(k, "ERR MULTI calls can not be nested");
                }
                c.txn.get_or_insert_with(Default::default).in_multi = true;
                self.reply(k, b"+OK\r\n");
            }
            "DISCARD" => {
                if !in_multi {
                    return self.reply_err(k, "ERR DISCARD without MULTI");
                }
                self.end_txn(k, true);
                self.reply(k, b"+OK\r\n");
            }
            "EXEC" => {
                if !in_multi {
                    return self.reply_err(k, "ERR EXEC without MULTI");
                }
                let pool_i = c.pool;
                let Some(txn) = c.txn.take() else {
                    return;
                };
                let home = if txn.dirty {
                    Err("EXECABORT Transaction discarded because of previous errors.".to_string())
                } else {
                    self.txn_home(pool_i, &txn)
                };
                let slot = match home {
                    Ok(slot) => slot,
                    Err(e) => {
                        if let Some(c) = self.clients.get_mut(k) {
                            c.txn = Some(txn);
                        }
                        self.end_txn(k, true);
                        return self.reply_err(k, &e);
                    }
                };
                let Some(c) = self.clients.get_mut(k) else {
                    return;
                };
                let watching = txn.watching;
                let seq = c.chain.push(Slot::Waiting, self.cur);
                let mut block = Vec::with_capacity(txn.queued.len() + 32);
                block.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
                block.extend_from_slice(&txn.queued);
                // Sent as one block: a backend runs MULTI...EXEC atomically, and nothing else
                // can land inside the block even on a shared connection.
                let ck = if watching {
                    c.private
                        .ok_or_else(|| "ERR watch connection lost".to_string())
                } else {
                    self.client_conn(k, slot)
                };
                match ck {
                    Ok(ck) => {
                        self.send_swallowed(ck, &block);
                        for _ in 0..txn.count {
                            // One swallowed +QUEUED per command; the bytes went with MULTI.
                            self.send_swallowed(ck, b"");
                        }
                        self.send_on(ck, k, b"*1\r\n$4\r\nEXEC\r\n", seq, WHOLE, false);
                        if self.pools[pool_i].cache.is_some() {
                            self.hot_exec(pool_i, ck, &txn.keys, &txn.written);
                        }
                    }
                    Err(e) => self.fail_slot(k, seq, WHOLE, &e),
                }
                if let Some(c) = self.clients.get_mut(k) {
                    c.txn = None;
                    if watching {
                        // Later commands go to shared connections again: none may overtake
                        // the EXEC on the private one.
                        c.fence = true;
                    }
                }
                if watching {
                    self.release_private(k);
                }
            }
            "WATCH" => {
                if in_multi {
                    return self.reply_err(k, "ERR WATCH inside MULTI is not allowed");
                }
                let pool_i = c.pool;
                let pool = &self.pools[pool_i];
                let target = pool.target();
                let mut pos = None;
                for i in 1..args.len() {
                    let Some(s) = target.pick(args.get(frame, i)) else {
                        return self.reply_err(k, "ERR no backend available for this key");
                    };
                    if pos.is_some_and(|p| p != s) {
                        return self.reply_err(k, "PROXYERROR keys are on different backends");
                    }
                    pos = Some(s);
                }
                let slot = pool.order.get(pos.unwrap_or(0)).copied().unwrap_or(0);
                let generation = pool.generation;
                if c.txn
                    .as_ref()
                    .and_then(|t| t.server)
                    .is_some_and(|s| s != slot)
                {
                    return self.reply_err(k, "PROXYERROR keys are on different backends");
                }
                let seq = c.chain.push(Slot::Waiting, self.cur);
                match self.acquire_private(k, slot) {
                    Ok(ck) => {
                        let bytes = encode_args(args, frame, 0..args.len());
                        self.send_on(ck, k, &bytes, seq, WHOLE, false);
                        if let Some(c) = self.clients.get_mut(k) {
                            let t = c.txn.get_or_insert_with(Default::default);
                            t.watching = true;
                            if t.server.is_none() {
                                t.server = Some(slot);
                                t.generation = generation;
                            }
                            t.keys
                                .extend((1..args.len()).map(|i| args.get(frame, i).to_vec()));
                        }
                    }
                    Err(e) => self.fail_slot(k, seq, WHOLE, &e),
                }
            }
            "UNWATCH" => {
                if c.watching() {
                    let seq = c.chain.push(Slot::Waiting, self.cur);
                    if let Some(ck) = c.private {
                        self.send_on(ck, k, b"*1\r\n$7\r\nUNWATCH\r\n", seq, WHOLE, false);
                    }
                    self.end_txn(k, false);
                } else {
                    self.reply(k, b"+OK\r\n");
                }
            }
            _ => {}
        }
    }
}
