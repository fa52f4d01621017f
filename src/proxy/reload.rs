//! Configuration applied live: SIGHUP / PROXY RELOAD and PROXY ADDBACKEND/REMOVEBACKEND.
//!
//! Invariants: an invalid file changes nothing (everything that can fail happens before
//! anything is applied); unchanged servers keep their slot, connections and in-flight
//! requests; removed ones drain and close; state that outlives the change follows its key
//! (`follow_moves`): subscriptions move, blocked clients whose key moved get an error.

use super::*;

impl Proxy {
    /// Re-read the configuration file and apply the difference without dropping clients:
    /// unchanged backends keep their connections and in-flight requests, added ones connect on
    /// first use, removed ones finish their in-flight requests and close; added pools listen,
    /// removed pools stop accepting and their clients drain. An invalid file changes nothing.
    /// `dry_run`: only validate and describe. The file is read and resolved, and certificates
    /// loaded, off the loop (`offload`); `finish_reload` applies the answer. `reply`: the
    /// PROXY RELOAD chain slot that waits for the outcome.
    pub(super) fn start_reload(&mut self, dry_run: bool, reply: offload::ReplyTo) {
        let Some(path) = self.config.path.clone() else {
            let e = "no configuration file to reload (started with -l/-b)".to_string();
            return self.finish_reload(Err(e), dry_run, reply);
        };
        // Servers given as IP addresses: read here (a local file, bounded); host names: the
        // file is read and resolved on the offload thread.
        if let Some(r) = crate::config::load_without_dns(&path) {
            let loaded = r.map_err(|e| e.to_string()).and_then(offload::with_tls);
            return self.finish_reload(loaded, dry_run, reply);
        }
        if !self.offload.send(offload::Job::Load {
            path,
            dry_run,
            reply,
        }) {
            self.finish_reload(Err("the reload worker is gone".into()), dry_run, reply);
        }
    }

    /// Apply a loaded configuration (or report why it could not be), log it, remember it for
    /// INFO, and answer the client that asked.
    pub(super) fn finish_reload(
        &mut self,
        loaded: Result<offload::Loaded, String>,
        dry_run: bool,
        reply: offload::ReplyTo,
    ) {
        let result = loaded.and_then(|(new, tls)| self.apply_reload(new, tls, dry_run));
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match &result {
            Ok(msg) if !dry_run => {
                info!("reload: {msg}");
                self.last_reload = Some((unix, true, msg.clone()));
            }
            Err(e) if !dry_run => {
                error!("reload failed, nothing changed: {e}");
                self.last_reload = Some((unix, false, e.clone()));
            }
            _ => {}
        }
        if let Some((k, id, seq)) = reply {
            let mut out = Vec::new();
            match result {
                Ok(msg) => resp::write_bulk(&mut out, msg.as_bytes()),
                Err(e) => reply_error(&mut out, &format!("ERR {e}")),
            }
            self.deliver_to(k, Some(id), seq, WHOLE, &out);
        }
    }

    fn apply_reload(
        &mut self,
        new: Config,
        tls: Vec<offload::TlsPair>,
        dry_run: bool,
    ) -> Result<String, String> {
        let mut summary = Vec::new();
        // Phase 1: everything that can fail (binding new listen addresses), nothing applied.
        let mut new_listeners: Vec<(usize, Option<Listener>)> = Vec::new();
        for (ni, pc) in new.pools.iter().enumerate() {
            let existing = self
                .pools
                .iter()
                .position(|p| !p.removed && p.cfg.name == pc.name);
            let rebind = match existing {
                Some(i) => self.pools[i].cfg.listen != pc.listen,
                None => true,
            };
            if rebind && !dry_run {
                let l = bind(&pc.listen, pc.backlog, pc.reuseport).map_err(|e| {
                    format!(
                        "pool {}: cannot listen on {}: {e}",
                        pc.name,
                        listen_name(&pc.listen)
                    )
                })?;
                new_listeners.push((ni, Some(l)));
            }
            if let Some(i) = existing {
                // A rebalance that is idle but not yet wound up (that happens on the tick)
                // ends now, so a change made once INFO shows state=idle is not refused.
                self.maybe_finish_rebalance(i);
            }
            if let Some(why) = existing.and_then(|i| self.rebalance_refuses(i, pc)) {
                return Err(why);
            }
            match existing {
                Some(i) => {
                    let d = crate::pool::describe_diff(&self.pools[i].cfg, pc);
                    summary.push(format!("pool {}: {d}", pc.name));
                }
                None => summary.push(format!("pool {}: added", pc.name)),
            }
        }
        for p in &self.pools {
            if !p.removed && !new.pools.iter().any(|n| n.name == p.cfg.name) {
                summary.push(format!("pool {}: removed", p.cfg.name));
            }
        }
        if dry_run {
            return Ok(summary.join("; "));
        }
        // Phase 2: apply.
        log::set_max_level(new.log_level);
        for (ni, pc) in new.pools.iter().enumerate() {
            let listener = new_listeners
                .iter_mut()
                .find(|(i, _)| *i == ni)
                .and_then(|(_, l)| l.take());
            match self
                .pools
                .iter()
                .position(|p| !p.removed && p.cfg.name == pc.name)
            {
                Some(i) => {
                    let mut pc = pc.clone();
                    if self.pools[i].cluster.is_some() && pc.cluster {
                        // A cluster pool's servers are the masters the cluster names, not the
                        // seeds in the file: keep them (and the slot map's positions).
                        pc.servers = self.pools[i].cfg.servers.clone();
                    }
                    let old = self.old_placement(i);
                    let ch = self.pools[i].reconfigure(pc);
                    (self.pools[i].tls_server, self.pools[i].tls_client) = tls[ni].clone();
                    self.retire_changes(i, &ch);
                    self.start_rebalance(i, old, &ch);
                    if let Some(l) = listener {
                        self.replace_listener(i, l);
                    }
                }
                None => {
                    let i = self.pools.len();
                    let mut pool = Pool::new(pc.clone());
                    (pool.tls_server, pool.tls_client) = tls[ni].clone();
                    self.pools.push(pool);
                    self.listeners.push(None);
                    if let Some(l) = listener {
                        self.replace_listener(i, l);
                    }
                }
            }
        }
        for i in 0..self.pools.len() {
            let p = &self.pools[i];
            if !p.removed && !new.pools.iter().any(|n| n.name == p.cfg.name) {
                self.pools[i].removed = true;
                self.close_listener(i);
                let keys: Vec<usize> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.pool == i)
                    .map(|(k, _)| k)
                    .collect();
                for k in keys {
                    if let Some(c) = self.clients.get_mut(k) {
                        c.closing = Closing::AfterReplies;
                    }
                    self.maybe_finish(k);
                }
            }
        }
        self.config = new;
        Ok(summary.join("; "))
    }

    /// Stop accepting on pool `i`'s listener (the socket closes when dropped).
    pub(super) fn close_listener(&mut self, i: usize) {
        if let Some(mut l) = self.listeners.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    pub(super) fn replace_listener(&mut self, i: usize, mut l: Listener) {
        self.close_listener(i);
        let token = Kind::Listener(i).token();
        let r = self
            .poll
            .registry()
            .register(&mut l, token, Interest::READABLE);
        match r {
            Ok(()) => self.listeners[i] = Some(l),
            Err(e) => error!("pool {}: register listener: {e}", self.pools[i].cfg.name),
        }
    }

    /// Retire what a pool change freed: the connections of removed servers (shared and idle
    /// private ones) and connections beyond a lowered `server_connections`.
    pub(super) fn retire_changes(&mut self, pool_i: usize, ch: &crate::pool::Changes) {
        let mut retire = ch.retire_conns.clone();
        for slot in &ch.retired {
            retire.extend(self.pools[pool_i].servers[*slot].drain_conns());
        }
        for k in retire {
            self.retire_conn(k);
        }
        if ch.ring_changed || !ch.retired.is_empty() {
            self.follow_moves(pool_i);
        }
    }

    /// After the pool's servers or ring changed: state that lives on one server follows its
    /// key. A client blocked on a key whose server left or no longer owns it gets an error
    /// (its wait cannot move without losing its place); each subscription moves to its
    /// channel's new owner (unsubscribed on the old, subscribed on the new, confirmations
    /// swallowed); patterns are added on new servers; connections to removed servers close.
    pub(super) fn follow_moves(&mut self, pool_i: usize) {
        let pool = &self.pools[pool_i];
        // Blocked clients.
        let mut stale = Vec::new();
        for (ck, conn) in self.conns.iter() {
            if conn.pool != pool_i || !conn.private || conn.owner.is_none() || conn.pubsub {
                continue;
            }
            let gone = pool.servers[conn.server].retired;
            let moved = conn
                .blocked_keys
                .iter()
                .any(|key| pool.owner_slot(key) != Some(conn.server));
            if gone || moved {
                stale.push(ck);
            }
        }
        for ck in stale {
            let Some(conn) = self.conns.get(ck) else {
                continue;
            };
            if !conn.blocked_keys.is_empty()
                || self.pools[pool_i].servers[conn.server].retired
                    && conn.inflight.iter().any(|p| p.blocking)
            {
                self.conn_failed(
                    ck,
                    "no longer serves this key (the configuration changed): retry the command",
                    Fail::Local,
                );
            }
        }
        // Subscribers.
        let subscribers: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.pool == pool_i && c.sub.is_some())
            .map(|(k, _)| k)
            .collect();
        for k in subscribers {
            self.move_subscriptions(pool_i, k);
        }
    }

    /// PROXY ADDBACKEND / REMOVEBACKEND: change the running membership of the client's pool.
    pub(super) fn membership(
        &mut self,
        pool_i: usize,
        add: Option<crate::config::ServerConfig>,
        remove: Option<&str>,
    ) -> Result<String, String> {
        let pool = &self.pools[pool_i];
        if !pool.cfg.membership_commands {
            return Err(
                "membership commands are disabled for this pool (membership_commands no)".into(),
            );
        }
        let mut cfg = pool.cfg.clone();
        if let Some(s) = add {
            let name = s.display_name();
            if cfg.servers.iter().any(|o| o.display_name() == name) {
                return Err(format!("backend '{name}' already exists"));
            }
            cfg.servers.push(s);
        }
        if let Some(name) = remove {
            let before = cfg.servers.len();
            cfg.servers.retain(|o| o.display_name() != name);
            if cfg.servers.len() == before {
                return Err(format!("unknown backend '{name}'"));
            }
            if cfg.servers.is_empty() {
                return Err("cannot remove the last backend of a pool".into());
            }
        }
        self.maybe_finish_rebalance(pool_i);
        if let Some(why) = self.rebalance_refuses(pool_i, &cfg) {
            return Err(why);
        }
        let old = self.old_placement(pool_i);
        let ch = self.pools[pool_i].reconfigure(cfg);
        self.retire_changes(pool_i, &ch);
        self.start_rebalance(pool_i, old, &ch);
        let msg = ch.describe();
        info!("pool {}: {msg}", self.pools[pool_i].cfg.name);
        Ok(msg)
    }
}
