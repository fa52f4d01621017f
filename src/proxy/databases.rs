//! Redis's numbered databases on static pools: `SELECT n` and the commands that name a
//! database (`MOVE`, `COPY ... DB`, `SWAPDB`).
//!
//! Invariants:
//! - A client's commands run in its database (`Client::db`, None = the pool's `redis_db`) on
//!   every backend they reach: the
//!   shared connections it uses are those of that database (`conn_for`), and a connection it
//!   holds (WATCH, a RESP3 subscriber's subscription connections) is re-selected with it.
//! - SELECT runs at a fence (nothing of the client in flight), so no command overtakes another
//!   by moving to the other database's connection.
//! - A database index is checked against the pool's `databases` before anything is sent;
//!   placement never depends on the database.

use super::*;

impl Proxy {
    /// `SELECT index` for client `k`: Err is the error text to answer.
    pub(super) fn select(&mut self, k: usize, index: &[u8]) -> Result<(), &'static str> {
        let Some(c) = self.clients.get_mut(k) else {
            return Ok(());
        };
        let cfg = &self.pools[c.pool].cfg;
        let Some(n) = router::parse_i64(index) else {
            return Err("ERR value is not an integer or out of range");
        };
        if cfg.cluster && n != 0 {
            return Err("ERR SELECT is not allowed in cluster mode");
        }
        if cfg.databases <= 1 {
            // `databases 1`: only database 0, as before (the client stays in `redis_db`).
            return match n {
                0 => Ok(()),
                _ => Err("ERR SELECT is not supported by this pool: only database 0 is available (pool key 'databases')"),
            };
        }
        if n < 0 || n >= cfg.databases as i64 {
            return Err("ERR DB index is out of range");
        }
        let db = n as u32;
        let default = cfg.redis_db;
        if c.db().unwrap_or(default) == db {
            return Ok(());
        }
        if db == default {
            if let Some(m) = c.meta.as_mut() {
                m.db = None;
            }
        } else {
            c.meta_mut().db = Some(db);
        }
        // Connections the client holds switch with it (WATCH keeps its watched keys: Redis
        // remembers each key's database). Its subscription connections serve its commands
        // only in RESP3; a RESP2 subscriber cannot send SELECT.
        let held: Vec<usize> = c
            .private
            .into_iter()
            .chain(
                c.sub
                    .iter()
                    .filter(|_| c.resp3)
                    .flat_map(|s| s.conns.iter().map(|&(_, ck)| ck)),
            )
            .collect();
        for ck in held {
            if let Some(conn) = self.conns.get_mut(ck).filter(|cn| cn.db != db) {
                upstream::queue_select(conn, db, self.now_us);
                self.mark_conn(ck);
            }
        }
        Ok(())
    }

    /// The database arguments of MOVE, COPY ... DB and SWAPDB name databases of the pool
    /// (Redis's errors otherwise). None: fine (arity is checked already).
    pub(super) fn db_args(
        &self,
        k: usize,
        spec: &Spec,
        frame: &[u8],
        args: &Args,
    ) -> Option<&'static str> {
        let c = self.clients.get(k)?;
        let databases = self.pools[c.pool].cfg.databases.max(1) as i64;
        let check = |i: usize| match router::parse_i64(args.get(frame, i)) {
            None => Some("ERR value is not an integer or out of range"),
            Some(n) if n < 0 || n >= databases => Some("ERR DB index is out of range"),
            Some(_) => None,
        };
        match spec.name {
            "MOVE" => check(2),
            "SWAPDB" => {
                // Redis's texts name the argument.
                let bad = |i: usize| router::parse_i64(args.get(frame, i)).is_none();
                if bad(1) {
                    Some("ERR invalid first DB index")
                } else if bad(2) {
                    Some("ERR invalid second DB index")
                } else {
                    check(1).or_else(|| check(2))
                }
            }
            _ => (3..args.len().saturating_sub(1))
                .find(|&i| args.get(frame, i).eq_ignore_ascii_case(b"DB"))
                .and_then(|i| check(i + 1)),
        }
    }
}
