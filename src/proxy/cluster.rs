//! Redis Cluster pools: slot-map refresh (CLUSTER SLOTS on a node's shared connection) and
//! MOVED/ASK redirections followed inside the proxy.
//!
//! Invariants: a refresh is in flight at most once per pool and rate-limited; a redirected
//! request keeps its owner, chain slot and part (so its reply still lands in order) and
//! follows at most `CLUSTER_MAX_REDIRECTS` hops.

use super::*;

/// Cluster pools: a map found wrong is refreshed at most this often; a good one this often;
/// an unanswered CLUSTER SLOTS is given up after the timeout; a request follows at most
/// this many MOVED/ASK redirections.
pub(super) const CLUSTER_REFRESH_MIN: Duration = Duration::from_secs(1);
pub(super) const CLUSTER_REFRESH_EVERY: Duration = Duration::from_secs(10);
pub(super) const CLUSTER_REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const CLUSTER_MAX_REDIRECTS: u8 = 5;
impl Proxy {
    /// Ask a node for CLUSTER SLOTS when the map is old (periodic), or was found wrong (MOVED,
    /// a node failure) and the last refresh is not too recent (rate limit).
    pub(super) fn cluster_maybe_refresh(&mut self, pool_i: usize) {
        let now = self.now;
        let Some(c) = self.pools[pool_i].cluster.as_mut() else {
            return;
        };
        if c.in_flight {
            if now.duration_since(c.sent) < CLUSTER_REFRESH_TIMEOUT {
                return;
            }
            c.in_flight = false;
        }
        let since = now.duration_since(c.last_refresh);
        let due = (c.wanted && since >= CLUSTER_REFRESH_MIN) || since >= CLUSTER_REFRESH_EVERY;
        if !due {
            return;
        }
        c.last_refresh = now;
        // Any node that is not known down; rotate so a dead node is not asked forever.
        let pool = &self.pools[pool_i];
        let n = pool.len();
        if n == 0 {
            return;
        }
        let start = (now.duration_since(self.started).as_millis() as usize) % n;
        let Some(slot) = (0..n)
            .map(|i| pool.order[(start + i) % n])
            .find(|&slot| !pool.servers[slot].is_down(now))
        else {
            return;
        };
        let Ok(ck) = self.conn_for(pool_i, slot, 0, None, None) else {
            return;
        };
        let p = Pending::internal(Owner::Refresh, self.now_us);
        self.push_request(ck, p, b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n");
        self.mark_conn(ck);
        if let Some(c) = self.pools[pool_i].cluster.as_mut() {
            c.in_flight = true;
            c.sent = now;
        }
    }

    /// A CLUSTER SLOTS answer: rebuild the map (masters keep their connections).
    pub(super) fn cluster_slots_reply(&mut self, pool_i: usize, host: &str, reply: &[u8]) {
        let ranges = match crate::cluster::parse_cluster_slots(reply, host) {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => {
                warn!(
                    "pool {}: CLUSTER SLOTS returned no slots",
                    self.pools[pool_i].cfg.name
                );
                if let Some(c) = self.pools[pool_i].cluster.as_mut() {
                    c.in_flight = false;
                }
                return;
            }
            Err(e) => {
                warn!(
                    "pool {}: bad CLUSTER SLOTS reply: {e}",
                    self.pools[pool_i].cfg.name
                );
                if let Some(c) = self.pools[pool_i].cluster.as_mut() {
                    c.in_flight = false;
                }
                return;
            }
        };
        match self.pools[pool_i].apply_slots(&ranges) {
            Ok(ch) => {
                if !ch.is_empty() {
                    info!(
                        "pool {}: cluster topology: {}",
                        self.pools[pool_i].cfg.name,
                        ch.describe()
                    );
                }
                self.retire_changes(pool_i, &ch);
            }
            Err(e) => warn!("pool {}: {e}", self.pools[pool_i].cfg.name),
        }
    }

    /// Follow a MOVED/ASK redirection: resend the request to the node that owns the slot
    /// (MOVED also fixes the map and asks for a refresh; ASK sends ASKING first, map unchanged).
    pub(super) fn redirect(
        &mut self,
        pool_i: usize,
        host: &str,
        p: Pending,
        req: &[u8],
        reply: &[u8],
    ) {
        let Some((key, id)) = p.client() else {
            return;
        };
        let deliver_err = |me: &mut Self, msg: &str| {
            let mut e = Vec::new();
            reply_error(&mut e, msg);
            me.deliver_to(key, Some(id), p.seq, p.part, &e);
            if p.blocking {
                me.unblock(key, id);
            }
        };
        let Some(r) = crate::cluster::parse_redirect(reply) else {
            return deliver_err(self, String::from_utf8_lossy(&reply[1..]).trim_end());
        };
        if p.redirects >= CLUSTER_MAX_REDIRECTS {
            let msg = format!(
                "ERR too many cluster redirections (last: {})",
                String::from_utf8_lossy(&reply[1..]).trim_end()
            );
            return deliver_err(self, &msg);
        }
        let Some(proto) = self
            .clients
            .get(key)
            .filter(|c| c.id == id)
            .map(|c| c.resp3 as usize)
        else {
            return; // the client left: nothing to resend
        };
        let (slot, rhost, port, ask) = match r {
            crate::cluster::Redirect::Moved { slot, host, port } => (slot, host, port, false),
            crate::cluster::Redirect::Ask { slot, host, port } => (slot, host, port, true),
        };
        let rhost = if rhost.is_empty() {
            host.to_string()
        } else {
            rhost
        };
        let pool = &mut self.pools[pool_i];
        let known = pool.position(&rhost, port).is_some()
            || rhost.parse::<std::net::IpAddr>().is_ok()
            || pool.resolved.contains_key(&(rhost.clone(), port));
        if !known {
            // A host name: resolved off the loop; the request waits for the answer.
            let asked = self
                .parked
                .iter()
                .any(|w| w.pool == pool_i && w.host == rhost && w.port == port);
            self.parked.push(offload::Parked {
                pool: pool_i,
                host: rhost.clone(),
                port,
                from: host.to_string(),
                p,
                req: req.to_vec(),
                reply: reply.to_vec(),
            });
            if !asked {
                self.offload.send(offload::Job::Resolve {
                    pool: pool_i,
                    host: rhost,
                    port,
                });
            }
            return;
        }
        let (pos, ch) = match pool.add_node(&rhost, port) {
            Ok(x) => x,
            Err(e) => return deliver_err(self, &format!("ERR cannot follow redirection: {e}")),
        };
        if !ch.is_empty() {
            info!("pool {}: {}", pool.cfg.name, ch.describe());
        }
        if !ask {
            if let Some(c) = pool.cluster.as_mut() {
                if let Some(e) = c.slots.get_mut(slot as usize) {
                    *e = pos as u16;
                }
                c.wanted = true;
            }
        }
        let server = pool.order[pos];
        let ck = match self.conn_for(pool_i, server, proto, Some(id), None) {
            Ok(ck) => ck,
            Err(e) => return deliver_err(self, &e),
        };
        if ask {
            self.send_swallowed(ck, b"*1\r\n$6\r\nASKING\r\n");
        }
        let again = Pending {
            redirects: p.redirects + 1,
            sent: self.now_us,
            ..p
        };
        self.push_request(ck, again, req);
        self.mark_conn(ck);
    }

    // ----- stats port -------------------------------------------------------------------
}
