//! The background mover of online rebalancing (`rebalance yes`): per old owner that loses
//! keys, SCAN on its own connection, MIGRATE in batches at `rebalance_rate`, and the check of a
//! batch answered BUSYKEY (DUMP on both sides: identical copies complete the move, differing
//! ones are left to the operator). The serve rule and the barriers are `rebalance.rs`.
//!
//! Invariants:
//! - Every request of the mover to a source travels on that source's mover connection, after
//!   (and ordered with) the clients' MIGRATEs of the same source.
//! - `Source::sent` has one entry per mover MIGRATE in flight: each answer or loss takes the
//!   front one.
//! - Nothing is overwritten: MIGRATE never uses REPLACE, and a source's copy is deleted only
//!   when the destination holds a byte-identical DUMP.

use super::rebalance::{
    MOVER_DEL, MOVER_DUMP_DST, MOVER_DUMP_SRC, MOVER_KEYSPACE, MOVER_MIGRATE, MOVER_SCAN,
};
use super::*;
use crate::rebalance::Phase;

impl Proxy {
    pub(super) fn mover_reply(&mut self, pool_i: usize, slot: usize, p: Pending, reply: &[u8]) {
        let now = self.now;
        let err = matches!(reply.first(), Some(b'-') | Some(b'!'));
        let name = self.pools[pool_i].cfg.name.clone();
        if p.part == MOVER_MIGRATE {
            let batch = self
                .source_mut(pool_i, slot)
                .and_then(|s| s.sent.pop_front());
            if let Some((dst, db, keys)) = batch.filter(|_| err && bulk_has(reply, b"BUSYKEY")) {
                return self.start_resolve(pool_i, slot, dst, db, keys);
            }
        }
        if matches!(p.part, MOVER_DUMP_SRC | MOVER_DUMP_DST | MOVER_DEL) {
            return self.resolve_reply(pool_i, slot, p, reply);
        }
        if err {
            let text = String::from_utf8_lossy(reply).trim_end().to_string();
            if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
                if p.part == MOVER_MIGRATE {
                    rb.failed += p.seq & 0xffff_ffff;
                }
            }
            if let Some(s) = self.source_mut(pool_i, slot) {
                if s.last_error != text {
                    warn!("pool {name}: rebalance: source b{slot}: {text} (retrying with backoff)");
                }
                s.failed(now, &text);
            }
            return;
        }
        match p.part {
            MOVER_KEYSPACE => {
                let Some(s) = self.source_mut(pool_i, slot) else {
                    return;
                };
                s.dbs = crate::rebalance::keyspace_dbs(crate::rebalance::bulk_body(reply));
                s.db_i = 0;
                s.cursor = b"0".to_vec();
                s.outstanding = 0;
                if s.dbs.is_empty() {
                    s.end_pass(now);
                } else {
                    s.phase = Phase::Scan;
                }
                self.mover_tick(pool_i);
            }
            MOVER_SCAN => {
                let Some((cursor, keys)) = crate::rebalance::scan_reply(reply) else {
                    if let Some(s) = self.source_mut(pool_i, slot) {
                        s.failed(now, "unexpected SCAN reply");
                    }
                    return;
                };
                let pool = &self.pools[pool_i];
                let Some(rb) = pool.rebalance.as_ref() else {
                    return;
                };
                let Some(src) = rb.sources.iter().find(|s| s.slot == slot) else {
                    return;
                };
                let db = src.dbs.get(src.db_i).copied().unwrap_or(0);
                let scanned = keys.len() as u64;
                // Keys of this source (under the old ring) that belong elsewhere now.
                let mut groups: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
                for key in keys {
                    if rb.old.owner_slot(&key) != Some(slot) {
                        continue;
                    }
                    let Some(dst) = pool.owner_slot(&key).filter(|&d| d != slot) else {
                        continue;
                    };
                    match groups.iter_mut().find(|g| g.0 == dst) {
                        Some(g) => g.1.push(key),
                        None => groups.push((dst, vec![key])),
                    }
                }
                let n: usize = groups.iter().map(|g| g.1.len()).sum();
                if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
                    rb.scanned += scanned;
                    rb.tokens -= n as f64;
                }
                if let Some(s) = self.source_mut(pool_i, slot) {
                    s.cursor = cursor;
                    s.outstanding = s.outstanding.saturating_sub(1);
                    s.held = groups;
                }
                self.send_held(pool_i, slot, db);
            }
            _ => {
                // MIGRATE: OK (moved) or NOKEY (already moved by a client's MIGRATE).
                let moved = if reply.starts_with(b"+OK") {
                    p.seq & 0xffff_ffff
                } else {
                    0
                };
                if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
                    rb.moved += moved;
                }
                if let Some(s) = self.source_mut(pool_i, slot) {
                    s.pass_moved += moved;
                    s.outstanding = s.outstanding.saturating_sub(1);
                }
                self.mover_step_done(pool_i, slot);
            }
        }
    }

    /// A mover batch answered BUSYKEY: DUMP each of its keys on both sides (the source's on the
    /// mover connection, behind the MIGRATE) to tell a lost answer's leftover from a conflict.
    pub(super) fn start_resolve(
        &mut self,
        pool_i: usize,
        slot: usize,
        dst: usize,
        db: u32,
        keys: Vec<Vec<u8>>,
    ) {
        let conns = self
            .mover_conn(pool_i, slot, db)
            .and_then(|s| Ok((s, self.conn_for(pool_i, dst, 0, None, Some(db))?)));
        let (src_ck, dst_ck) = match conns {
            Ok(c) => c,
            Err(e) => return self.resolve_failed(pool_i, slot, &e),
        };
        for (i, key) in keys.iter().enumerate() {
            let mut req = Vec::new();
            resp::write_command(&mut req, [&b"DUMP"[..], key]);
            for (ck, part) in [(src_ck, MOVER_DUMP_SRC), (dst_ck, MOVER_DUMP_DST)] {
                let owner = Owner::Mover { pool: pool_i, slot };
                let p = Pending::new(owner, i as u64, part, false, self.now_us);
                self.push_request(ck, p, &req);
            }
        }
        if let Some(s) = self.source_mut(pool_i, slot) {
            s.resolve = Some(crate::rebalance::Resolve::new(dst, db, keys));
        }
    }

    /// A reply of a BUSYKEY check: the DUMPs, then the DELs of identical copies.
    pub(super) fn resolve_reply(&mut self, pool_i: usize, slot: usize, p: Pending, reply: &[u8]) {
        if matches!(reply.first(), Some(b'-') | Some(b'!')) {
            let text = String::from_utf8_lossy(reply).trim_end().to_string();
            return self.resolve_failed(pool_i, slot, &text);
        }
        let Some(s) = self.source_mut(pool_i, slot) else {
            return;
        };
        let Some(r) = s.resolve.as_mut() else {
            return; // from before a failure: stale
        };
        let i = p.seq as usize;
        let dump = match resp::parse_reply(reply) {
            Ok(Some((Reply::Bulk(b), _))) => Some(b.to_vec()),
            _ => None,
        };
        match p.part {
            MOVER_DUMP_SRC => {
                if let Some(d) = r.src.get_mut(i) {
                    *d = dump;
                }
            }
            MOVER_DUMP_DST => {
                if let Some(d) = r.dst_dump.get_mut(i) {
                    *d = dump;
                }
            }
            _ => r.deleted += u64::from(reply == b":1\r\n"),
        }
        r.waiting = r.waiting.saturating_sub(1);
        if r.waiting > 0 {
            return;
        }
        if !r.deleting {
            r.deleting = true;
            let delete = r.verdict();
            r.waiting = delete.len();
            let db = r.db;
            if !delete.is_empty() {
                let ck = match self.mover_conn(pool_i, slot, db) {
                    Ok(ck) => ck,
                    Err(e) => return self.resolve_failed(pool_i, slot, &e),
                };
                for key in delete {
                    let mut req = Vec::new();
                    resp::write_command(&mut req, [&b"DEL"[..], &key]);
                    let owner = Owner::Mover { pool: pool_i, slot };
                    let p = Pending::new(owner, 0, MOVER_DEL, false, self.now_us);
                    self.push_request(ck, p, &req);
                }
                return;
            }
        }
        // Done: identical leftovers deleted (moved), conflicts left to the operator.
        let name = self.pools[pool_i].cfg.name.clone();
        let Some(s) = self.source_mut(pool_i, slot) else {
            return;
        };
        let Some(r) = s.resolve.take() else {
            return;
        };
        s.outstanding = s.outstanding.saturating_sub(1);
        s.pass_moved += r.deleted;
        let differ = r.differ.len() as u64;
        if let Some(rb) = self.pools[pool_i].rebalance.as_mut() {
            rb.moved += r.deleted;
            rb.failed += differ;
        }
        if differ > 0 {
            let keys: Vec<String> = r
                .differ
                .iter()
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let dst = self.pools[pool_i]
                .servers
                .get(r.dst)
                .map_or("", |s| s.name.as_str());
            let why = format!(
                "BUSYKEY: {differ} key(s) exist on both b{slot} and {dst} with different values ({}): keep one copy (FORWARD ... DEL key)",
                keys.join(", ")
            );
            warn!("pool {name}: rebalance: {why}");
            // The rest of the pass goes on; the pass ends not done and the next one waits.
            if let Some(s) = self.source_mut(pool_i, slot) {
                s.pass_failed += 1;
                s.pass_skipped += differ;
                s.last_error = why;
            }
        }
        if r.deleted > 0 {
            info!(
                "pool {name}: rebalance: b{slot}: {} key(s) found on both sides after a lost MIGRATE answer, identical: source copies deleted",
                r.deleted
            );
        }
        self.mover_step_done(pool_i, slot);
    }

    pub(super) fn resolve_failed(&mut self, pool_i: usize, slot: usize, why: &str) {
        let now = self.now;
        if let Some(s) = self.source_mut(pool_i, slot) {
            s.failed(now, why);
        }
    }

    /// Send the held MIGRATE groups of source `slot` that cannot deadlock now.
    pub(super) fn send_held(&mut self, pool_i: usize, slot: usize, db: u32) {
        let now = self.now;
        let Some(s) = self.source_mut(pool_i, slot) else {
            return;
        };
        let held = std::mem::take(&mut s.held);
        let mut keep = Vec::new();
        for (dst, keys) in held {
            let cycle = self.pools[pool_i]
                .rebalance
                .as_ref()
                .is_some_and(|rb| rb.would_cycle(slot, dst));
            if cycle {
                keep.push((dst, keys));
                continue;
            }
            let seq = (dst as u64) << 32 | keys.len() as u64;
            let owner = Owner::Mover { pool: pool_i, slot };
            let sent = self.send_migrate(pool_i, slot, dst, db, &keys, owner, MOVER_MIGRATE, seq);
            let Some(s) = self.source_mut(pool_i, slot) else {
                return;
            };
            match sent {
                Ok(()) => {
                    s.outstanding += 1;
                    s.sent.push_back((dst, db, keys));
                }
                Err(e) => {
                    s.failed(now, &e);
                    return;
                }
            }
        }
        if let Some(s) = self.source_mut(pool_i, slot) {
            s.held = keep;
        }
        self.mover_step_done(pool_i, slot);
    }

    pub(super) fn source_mut(
        &mut self,
        pool_i: usize,
        slot: usize,
    ) -> Option<&mut crate::rebalance::Source> {
        self.pools[pool_i]
            .rebalance
            .as_mut()
            .and_then(|rb| rb.sources.iter_mut().find(|s| s.slot == slot))
    }

    /// After a SCAN or MIGRATE reply: when nothing is outstanding, the next batch (or database,
    /// or the end of the pass).
    pub(super) fn mover_step_done(&mut self, pool_i: usize, slot: usize) {
        let now = self.now;
        let Some(s) = self.source_mut(pool_i, slot) else {
            return;
        };
        if s.outstanding > 0 || !s.held.is_empty() || s.phase != Phase::Busy {
            return;
        }
        s.backoff = Duration::ZERO;
        if s.cursor == b"0" {
            s.db_i += 1;
            s.cursor = b"0".to_vec();
            if s.db_i >= s.dbs.len() {
                s.end_pass(now);
            } else {
                s.phase = Phase::Scan;
            }
        } else {
            s.phase = Phase::Scan;
        }
        self.mover_tick(pool_i);
    }

    /// Background mover: one step per source whose last step is answered, within the rate.
    pub(super) fn mover_tick(&mut self, pool_i: usize) {
        let now = self.now;
        let pool = &mut self.pools[pool_i];
        let (rate, batch) = (pool.cfg.rebalance_rate, pool.cfg.rebalance_batch);
        let Some(rb) = pool.rebalance.as_mut() else {
            return;
        };
        if !rb.ready() || rb.paused {
            rb.refilled = now;
            return;
        }
        rb.refill(now, rate);
        let n = rb.sources.len();
        for i in 0..n {
            let Some(rb) = self.pools[pool_i].rebalance.as_mut() else {
                return;
            };
            if rb.tokens < 0.0 {
                return;
            }
            let s = &mut rb.sources[i];
            if s.done || s.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            s.retry_at = None;
            let slot = s.slot;
            let owner = Owner::Mover { pool: pool_i, slot };
            match s.phase {
                Phase::ListDbs => {
                    s.phase = Phase::Listing;
                    let db = self.pools[pool_i].cfg.redis_db;
                    match self.mover_conn(pool_i, slot, db) {
                        Ok(ck) => {
                            let p = Pending::new(owner, 0, MOVER_KEYSPACE, false, self.now_us);
                            self.push_request(ck, p, b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n");
                        }
                        Err(e) => {
                            if let Some(s) = self.source_mut(pool_i, slot) {
                                s.failed(now, &e);
                            }
                        }
                    }
                }
                Phase::Scan => {
                    s.phase = Phase::Busy;
                    s.outstanding = 1;
                    let db = s.dbs.get(s.db_i).copied().unwrap_or(0);
                    let cursor = s.cursor.clone();
                    match self.mover_conn(pool_i, slot, db) {
                        Ok(ck) => {
                            let count = batch.to_string();
                            let mut bytes = Vec::new();
                            resp::write_command(
                                &mut bytes,
                                [&b"SCAN"[..], &cursor, b"COUNT", count.as_bytes()],
                            );
                            let p = Pending::new(owner, 0, MOVER_SCAN, false, self.now_us);
                            self.push_request(ck, p, &bytes);
                        }
                        Err(e) => {
                            if let Some(s) = self.source_mut(pool_i, slot) {
                                s.failed(now, &e);
                            }
                        }
                    }
                }
                Phase::Listing | Phase::Busy | Phase::Done => {}
            }
        }
    }
}

/// Whether an error reply mentions `word` (MIGRATE wraps the target's error in its own).
fn bulk_has(reply: &[u8], word: &[u8]) -> bool {
    reply.windows(word.len()).any(|w| w == word)
}
