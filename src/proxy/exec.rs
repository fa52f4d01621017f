//! Client input to backend output: a client's bytes are read and parsed in place, each command
//! passes its fence and checks (auth, permissions, subscribe and MULTI contexts), `router::plan`
//! says what to do, and the request is forwarded, split, fanned out or answered locally.
//! Replies come back through `deliver_to`, the one entry into a client's chain for backend
//! replies.
//!
//! Invariants:
//! - A chain slot is pushed before anything is sent, so replies leave in request order.
//! - A command that moves the client between backend connections (HELLO, WATCH, RESET,
//!   (un)subscribe, blocking commands) runs only when the client's chain is empty; a held
//!   command stays unparsed in `rbuf` (`Exec::Deferred`) and the client is served again when
//!   its last reply leaves. With the pinned shared connection (`conn_for`) this keeps a
//!   client's commands in its order on every backend.
//! - Flow control: a client with `max_pending` replies outstanding, or more than `max_output`
//!   reply bytes waiting (unread output plus replies held in its chain), is not read until
//!   both halve. Only a subscriber past `pubsub_max_output` is disconnected.

use super::*;
use crate::client::ReplyMode;

/// Whether a command ran or is held back at a fence (see `Proxy::execute`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exec {
    Done,
    Deferred,
}

impl Proxy {
    /// A client was announced readable: read under the budget and serve what arrived.
    /// `closed`: the event says the peer closed (or errored): read to the end even after a
    /// short read, since no further edge will come.
    /// `hangup`: the event itself says the peer went away (a blocked client is freed at once).
    pub(super) fn client_readable(&mut self, k: usize, closed: bool, hangup: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut budget_used = true;
        for _ in 0..READ_BUDGET {
            let Some(c) = self.clients.get_mut(k) else {
                budget_used = false;
                break;
            };
            if c.blocked && hangup && c.closing == Closing::No {
                // Like Redis, a blocked client that hangs up is freed at once; its private
                // connection closes with it so the backend stops blocking for nobody.
                debug!("c{k}#{} {} closed while blocked", c.id, c.peer);
                self.close_client(k);
                budget_used = false;
                break;
            }
            if c.stalled() || c.closing.after_input() {
                // Resumed later through `again`, which reads again (none after the peer's
                // close: what it sent is all in `rbuf`).
                budget_used = false;
                break;
            }
            let n = match c.stream.read(&mut scratch) {
                Ok(0) if !c.rbuf.is_empty() => {
                    // Half-closed with commands held: they still run (see `Closing`);
                    // `serve_buffered` ends it once nothing complete is left.
                    c.closing = Closing::AfterInput;
                    if !self.again.contains(&k) {
                        self.again.push(k);
                    }
                    budget_used = false;
                    break;
                }
                Ok(0) => {
                    // Half-closed: answer what was asked, then close.
                    c.closing = Closing::AfterReplies;
                    self.maybe_finish(k);
                    budget_used = false;
                    break;
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => {
                    budget_used = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if !c.rbuf.is_empty() && !would_block(&e) => {
                    // Reset with commands held: they still run, their replies are dropped.
                    debug!(
                        "c{k}#{} {} read error: {e} (held commands still run)",
                        c.id, c.peer
                    );
                    c.closing = Closing::AfterInputDiscard;
                    c.wbuf.clear();
                    c.wpos = 0;
                    if !self.again.contains(&k) {
                        self.again.push(k);
                    }
                    budget_used = false;
                    break;
                }
                Err(e) => {
                    debug!("c{k}#{} {} read error: {e}", c.id, c.peer);
                    self.close_client(k);
                    budget_used = false;
                    break;
                }
            };
            self.stats.net_input_bytes += n as u64;
            c.last_active = self.now_us;
            if c.rbuf.is_empty() {
                let used = self.serve(k, &scratch[..n]);
                if let Some(c) = self.clients.get_mut(k) {
                    if used < n && c.closing == Closing::No {
                        c.rbuf.extend_from_slice(&scratch[used..n]);
                    }
                }
            } else {
                c.rbuf.extend_from_slice(&scratch[..n]);
                self.serve_buffered(k);
            }
            if n < scratch.len() && !closed {
                // Short read: the socket is drained; edge-triggered polling announces the next
                // bytes (or the peer's close) with a new event.
                budget_used = false;
                break;
            }
        }
        if budget_used && !self.again.contains(&k) {
            self.again.push(k);
        }
        self.scratch = scratch;
    }

    /// Serve again a client whose budget ran out or which was resumed after backpressure.
    pub(super) fn client_resume(&mut self, k: usize) {
        let Some(c) = self.clients.get(k) else {
            return;
        };
        if c.stalled() {
            return;
        }
        if !c.rbuf.is_empty() {
            self.serve_buffered(k);
        }
        // Read to WouldBlock: edge-triggered polling will not announce what already waits.
        // Not a hang-up: a client resumed while blocked again must stay.
        self.client_readable(k, true, false);
    }

    /// Serve the client's buffered input (`rbuf`).
    pub(super) fn serve_buffered(&mut self, k: usize) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let buf = std::mem::take(&mut c.rbuf);
        let used = self.serve(k, &buf);
        if let Some(c) = self.clients.get_mut(k) {
            if c.closing <= Closing::AfterInputDiscard {
                let mut buf = buf;
                buf.drain(..used);
                if buf.is_empty() && buf.capacity() > READ_CHUNK {
                    buf = Vec::new();
                }
                c.rbuf = buf;
            }
            if c.closing.after_input() && !c.stalled() {
                // The peer is gone and nothing held is left (at most a command it never
                // finished sending): its replies go out, then it closes.
                c.rbuf = Vec::new();
                c.closing = Closing::AfterReplies;
                self.maybe_finish(k);
            }
        }
    }

    /// Parse and execute the complete requests at the start of `data`; returns bytes consumed.
    pub(super) fn serve(&mut self, k: usize, data: &[u8]) -> usize {
        let mut args = std::mem::take(&mut self.args);
        let mut pos = 0;
        while pos < data.len() {
            let Some(c) = self.clients.get(k) else {
                break;
            };
            if c.stalled() {
                break;
            }
            let limits = self.pools[c.pool].limits;
            match resp::parse_command(&data[pos..], &limits, &mut args) {
                Ok(n) => {
                    let frame = &data[pos..pos + n];
                    if !args.is_empty() && self.command(k, frame, &args) == Exec::Deferred {
                        // Held at a fence: stays unparsed until the chain is empty.
                        break;
                    }
                    pos += n;
                }
                Err(ParseError::Incomplete) => break,
                Err(ParseError::Protocol(msg)) => {
                    self.stats.errors += 1;
                    if let Some(c) = self.clients.get_mut(k) {
                        debug!("c{k}#{} {} protocol error: {msg}", c.id, c.peer);
                        let mut e = Vec::with_capacity(msg.len() + 8);
                        resp::write_error(&mut e, format!("ERR {msg}").as_bytes());
                        let meta = Meta::new(NO_CMD, self.now_us);
                        c.chain.reply(&e, &mut c.wbuf, meta, sink!(self, k, c.id));
                        c.closing = Closing::AfterReplies;
                        self.mark_client(k);
                        self.maybe_finish(k);
                    }
                    pos = data.len();
                    break;
                }
            }
        }
        self.args = args;
        pos
    }

    /// Execute one command (or hold it back at a fence).
    pub(super) fn command(&mut self, k: usize, frame: &[u8], args: &Args) -> Exec {
        self.stats.commands += 1;
        let pool_i = match self.clients.get_mut(k) {
            Some(c) => {
                c.commands = c.commands.wrapping_add(1);
                c.pool
            }
            None => return Exec::Done,
        };
        let renames = &self.pools[pool_i].renames;
        if !renames.is_empty() {
            let typed = args.get(frame, 0);
            match renames.map(typed) {
                None => {
                    // Renamed away (rename_command OLD NEW, or disabled with ""): unknown.
                    self.stats.record_rejected(None);
                    self.cur = Meta::new(NO_CMD, self.now_us);
                    self.quiet_unrouted(k);
                    let e = router::unknown_command(args, frame);
                    self.unknown_in_multi(k);
                    self.quiet_unrouted(k);
                    self.reply_err(k, &e);
                    return Exec::Done;
                }
                Some(orig) if !orig.eq_ignore_ascii_case(typed) => {
                    // Typed the new name: run the original, re-encoded under its real name.
                    let mut rebuilt = Vec::with_capacity(frame.len() + 16);
                    let parts =
                        std::iter::once(orig).chain((1..args.len()).map(|i| args.get(frame, i)));
                    resp::write_command(&mut rebuilt, parts.collect::<Vec<_>>());
                    let mut args2 = Args::default();
                    if resp::parse_command(&rebuilt, &resp::Limits::default(), &mut args2).is_ok() {
                        return self.command_resolved(k, &rebuilt, &args2);
                    }
                }
                Some(_) => {}
            }
        }
        self.command_resolved(k, frame, args)
    }

    /// Execute one command whose name is the table's (after rename_command).
    pub(super) fn command_resolved(&mut self, k: usize, frame: &[u8], args: &Args) -> Exec {
        let spec = match router::resolve(args, frame) {
            Ok(s) => s,
            Err(e) => {
                self.stats.record_rejected(None);
                self.cur = Meta::new(NO_CMD, self.now_us);
                self.unknown_in_multi(k);
                self.quiet_unrouted(k);
                self.reply_err(k, &e);
                return Exec::Done;
            }
        };
        let first = if args.len() > 1 {
            args.get(frame, 1)
        } else {
            b""
        };
        let row = command_index(spec).min(u16::MAX as usize) as u16;
        self.cur = if self.config.command_stats {
            Meta::new(row, self.now_us).with_arg(args.len(), first)
        } else {
            Meta::new(NO_CMD, self.now_us)
        };
        let done = self.execute(k, spec, row, frame, args);
        self.cur.cmd = NO_CMD;
        if done == Exec::Deferred {
            // Counted again when it runs.
            self.stats.commands -= 1;
            if let Some(c) = self.clients.get_mut(k) {
                c.commands = c.commands.wrapping_sub(1);
            }
        }
        done
    }

    /// An unknown command inside MULTI makes EXEC fail, as in Redis (EXECABORT).
    fn unknown_in_multi(&mut self, k: usize) {
        if let Some(t) = self
            .clients
            .get_mut(k)
            .and_then(|c| c.txn.as_mut())
            .filter(|t| t.in_multi)
        {
            t.dirty = true;
        }
    }

    /// Execute one resolved command (`self.cur` describes it).
    /// `row`: the command's row of the table (`command_index`).
    /// Commands that move the client between backend connections (and blocking ones, which
    /// take a private connection) wait at a fence until every earlier reply is in, so no
    /// command of the client overtakes another on its way to a backend.
    pub(super) fn execute(
        &mut self,
        k: usize,
        spec: &'static Spec,
        row: u16,
        frame: &[u8],
        args: &Args,
    ) -> Exec {
        // CLIENT PAUSE: the command waits in the client's input until the pause ends.
        if self.pause_holds(k, spec, args.len()) {
            return Exec::Deferred;
        }
        // What the checks below need of the client, read in one lookup.
        let (pool_i, authed, level, resp2_subscribed, in_multi) = match self.clients.get_mut(k) {
            Some(c) => {
                if !c.chain.is_empty()
                    && (c.fence
                        || crate::commands::flags(row as usize) & crate::commands::flag::FENCE != 0)
                {
                    c.draining = true;
                    return Exec::Deferred;
                }
                c.fence = false;
                c.last_command = row;
                if let Some(m) = c.meta.as_deref_mut() {
                    if m.reply_mode != ReplyMode::On {
                        quiet_by_mode(m, &mut self.cur);
                    }
                }
                (
                    c.pool,
                    c.authed,
                    c.level,
                    !c.resp3 && c.subscribed(),
                    c.in_multi(),
                )
            }
            None => return Exec::Done,
        };
        if self.pools[pool_i].rebalance.is_some() {
            match self.gate(k, spec, frame, args) {
                rebalance::Gate::Pass => {}
                rebalance::Gate::Defer => return Exec::Deferred,
                rebalance::Gate::Fail(e) => {
                    // Queued in MULTI: the transaction cannot run without it (EXECABORT).
                    self.unknown_in_multi(k);
                    self.reject(k, &e);
                    return Exec::Done;
                }
            }
        }
        self.run_command(
            k,
            spec,
            frame,
            args,
            (pool_i, authed, level, resp2_subscribed, in_multi),
        );
        Exec::Done
    }

    /// Run one command that passed its fence; `ctx`: what the checks need of the client.
    // Inlined into `execute` (the per-request path) whatever the inliner's budget says.
    #[inline(always)]
    fn run_command(
        &mut self,
        k: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
        ctx: (usize, bool, crate::config::Level, bool, bool),
    ) {
        let (pool_i, authed, level, resp2_subscribed, in_multi) = ctx;
        use crate::commands::{flag, has};
        if !authed && !has(spec, flag::NO_AUTH) {
            return self.reject(k, "NOAUTH Authentication required.");
        }
        let policy = self.pools[pool_i].cfg.admin_commands;
        if let Err(e) = crate::auth::permitted(level, spec, policy) {
            return self.reject(k, &e);
        }
        if spec.name.starts_with("CLUSTER ") && self.pools[pool_i].cluster.is_some() {
            // Cluster pools answer the tooling commands: KEYSLOT here, the rest from a node.
            if spec.name == "CLUSTER KEYSLOT" && args.len() == 3 {
                let slot = crate::cluster::key_slot(args.get(frame, 2));
                let mut out = Vec::new();
                resp::write_int(&mut out, slot as i64);
                return self.reply(k, &out);
            }
            let bytes = encode_args(args, frame, 0..args.len());
            return self.forward(k, 0, &bytes);
        }
        if spec.name == "CONFIG SET"
            && args.len() == 4
            && args.get(frame, 2).eq_ignore_ascii_case(b"loglevel")
        {
            // The proxy's own log level (Redis's names or ours), not the backends'.
            let level = match args.get(frame, 3).to_ascii_lowercase().as_slice() {
                b"trace" => Some(log::LevelFilter::Trace),
                b"debug" | b"verbose" => Some(log::LevelFilter::Debug),
                b"info" | b"notice" => Some(log::LevelFilter::Info),
                b"warn" | b"warning" => Some(log::LevelFilter::Warn),
                b"error" => Some(log::LevelFilter::Error),
                _ => None,
            };
            return match level {
                Some(l) => {
                    log::set_max_level(l);
                    info!("log level set to {l}");
                    self.reply(k, b"+OK\r\n")
                }
                None => self.reject(
                    k,
                    "ERR Invalid argument for CONFIG SET 'loglevel': use debug, verbose, notice, warning, trace, info, warn or error",
                ),
            };
        }
        if resp2_subscribed && !has(spec, flag::IN_SUBSCRIBE) {
            let msg = format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                spec.name.to_ascii_lowercase().replace(' ', "|")
            );
            return self.reply_err(k, &msg);
        }
        let mut hot_tag = 0;
        if (self.pools[pool_i].cache.is_some() || self.pools.len() > 1) && hot::writes(spec) {
            // Before it is forwarded (or queued): the client reads its own write, and so do
            // readers of other pools of the proxy (over the same backends, perhaps).
            if self.pools[pool_i].cache.is_some() {
                hot_tag = self.hot_write(pool_i, spec, frame, args);
            }
            if self.pools.len() > 1 {
                self.hot_write_others(pool_i, spec, frame, args);
            }
        }
        if matches!(spec.name, "FLUSHDB" | "FLUSHALL" | "SWAPDB")
            && self.pools[pool_i].rebalance.is_some()
        {
            // They reach the new ring's servers only: a draining server's keys would come back
            // (FLUSHDB) or land in the other database (SWAPDB) when they move.
            self.unknown_in_multi(k);
            let name = &self.pools[pool_i].cfg.name;
            let msg = format!(
                "ERR {} is refused while pool {name} is rebalancing: retry once INFO rebalance shows state=idle",
                spec.name
            );
            return self.reject(k, &msg);
        }
        if in_multi && !has(spec, flag::NOT_QUEUED) {
            self.queue_in_multi(k, spec, frame, args);
            return self.check_pressure(k);
        }
        if matches!(spec.name, "MOVE" | "COPY" | "SWAPDB") {
            if let Some(e) = self.db_args(k, spec, frame, args) {
                return self.reject(k, e);
            }
        }
        let pool = &self.pools[pool_i];
        let target = pool.target();
        let plan = router::plan(spec, args, frame, &target, &mut self.keys);
        // Requests `send` queues for this command carry the write's tag (hot-key cache).
        if hot_tag != 0 {
            self.hot_tag = hot_tag;
        }
        match plan {
            Plan::Local(spec) => self.local(k, spec, frame, args),
            Plan::Error(e) => self.reject(k, &e),
            Plan::Forward { .. } | Plan::Blocking { .. } => {
                let blocking = matches!(plan, Plan::Blocking { .. });
                let (server, argc, reencode) = plan.one_backend().unwrap_or_default();
                if self.pools[pool_i].hot.tick() {
                    self.hot_sample(k, pool_i, spec, frame, args, server);
                }
                let bytes = if reencode {
                    Some(encode_args(args, frame, 0..argc))
                } else {
                    None
                };
                let bytes = bytes.as_deref().unwrap_or(frame);
                if blocking {
                    // Every key: BLPOP k1 k2 or BLMOVE src dst must not stay blocked on a
                    // server that no longer owns one of them (see `follow_moves`).
                    let keys = self.routing_keys(pool_i, spec, frame, args);
                    self.blocking(k, server, bytes, keys);
                } else if self.pools[pool_i].cache.is_some()
                    && spec.name == "GET"
                    && args.len() == 2
                    && self.hot_get(k, pool_i, args.get(frame, 1), server)
                {
                    // Answered from the hot-key cache, through the chain.
                } else if let Some(slot) = self.replica_for(pool_i, spec, frame, args) {
                    self.forward_slot(k, slot, bytes);
                } else {
                    self.forward(k, server, bytes);
                }
            }
            Plan::Split {
                split,
                step,
                groups,
                order,
            } => {
                if self.pools[pool_i].hot.tick() {
                    self.hot_sample_split(k, pool_i, spec, frame, args, &groups);
                }
                self.split(k, frame, args, split, step, groups, order)
            }
            Plan::FanOut(merge) => {
                let bytes = if args.is_inline() {
                    Some(encode_args(args, frame, 0..args.len()))
                } else {
                    None
                };
                self.fan_out(k, merge, bytes.as_deref().unwrap_or(frame));
            }
            Plan::Scan { server, cursor } => {
                let mut cur = Vec::with_capacity(20);
                resp::write_usize(&mut cur, cursor as usize);
                let mut req = Vec::with_capacity(frame.len() + 16);
                resp::write_array_len(&mut req, args.len());
                for i in 0..args.len() {
                    if i == 1 {
                        resp::write_bulk(&mut req, &cur);
                    } else {
                        resp::write_bulk(&mut req, args.get(frame, i));
                    }
                }
                let nservers = self.pools[pool_i].len();
                self.send_multi(k, Combine::Scan { server, nservers }, &[(server, req)]);
            }
        }
        if hot_tag != 0 {
            self.hot_tag = 0;
        }
        self.check_pressure(k);
    }

    /// Every key a command routes by (a `hash=` hint when the pool takes them, else its keys),
    /// for state that must follow the keys across reloads.
    pub(super) fn routing_keys(
        &mut self,
        pool_i: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
    ) -> Vec<Vec<u8>> {
        let (argc, hinted) =
            router::hash_hint(spec, args, frame, self.pools[pool_i].cfg.hash_override);
        if hinted {
            return vec![router::hint_key(args, frame).to_vec()];
        }
        let mut keys = std::mem::take(&mut self.keys);
        let found = crate::commands::key_positions(spec, argc, &|i| args.get(frame, i), &mut keys)
            .map(|()| keys.iter().map(|&i| args.get(frame, i).to_vec()).collect())
            .unwrap_or_default();
        self.keys = keys;
        found
    }

    /// Stop reading a client with too many replies outstanding, or too many reply bytes
    /// waiting for it (high-water marks `max_pending` and `max_output`).
    #[inline(always)]
    pub(super) fn check_pressure(&mut self, k: usize) {
        if let Some(c) = self.clients.get_mut(k) {
            let cfg = &self.pools[c.pool].cfg;
            if c.chain.len() >= cfg.max_pending.max(1) || c.queued_bytes() > cfg.max_output {
                c.paused = true;
            }
        }
    }

    /// Resume a paused client once its backlog halved (low-water marks: half of each limit).
    pub(super) fn maybe_resume(&mut self, k: usize) {
        if let Some(c) = self.clients.get_mut(k) {
            if c.paused {
                let cfg = &self.pools[c.pool].cfg;
                let max = cfg.max_pending.max(1);
                if c.chain.len() <= max / 2 && c.queued_bytes() <= cfg.max_output / 2 {
                    c.paused = false;
                    if !self.again.contains(&k) {
                        self.again.push(k);
                    }
                }
            }
        }
    }

    /// A command refused before it was resolved (unknown, wrong arity) follows the client's
    /// `CLIENT REPLY` mode like any other.
    fn quiet_unrouted(&mut self, k: usize) {
        if let Some(m) = self.clients.get_mut(k).and_then(|c| c.meta.as_mut()) {
            quiet_by_mode(m, &mut self.cur);
        }
    }

    /// Refuse the current command before running it (counted as rejected, not as a call).
    pub(super) fn reject(&mut self, k: usize, msg: &str) {
        self.stats.record_rejected(Some(self.cur.cmd as usize));
        self.cur.cmd = NO_CMD;
        self.reply_err(k, msg);
    }

    pub(super) fn reply_err(&mut self, k: usize, msg: &str) {
        self.stats.errors += 1;
        let mut e = Vec::with_capacity(msg.len() + 3);
        reply_error(&mut e, msg);
        self.reply(k, &e);
    }

    /// A complete reply made by the proxy for the command being executed, through the chain.
    pub(super) fn reply(&mut self, k: usize, bytes: &[u8]) {
        self.reply_meta(k, bytes, self.cur);
    }

    pub(super) fn reply_meta(&mut self, k: usize, bytes: &[u8], meta: Meta) {
        if let Some(c) = self.clients.get_mut(k) {
            if c.wbuf.capacity() == 0 {
                c.wbuf = self.buffers.pop().unwrap_or_default();
            }
            c.chain
                .reply(bytes, &mut c.wbuf, meta, sink!(self, k, c.id));
            self.mark_client(k);
            self.over_limits(k);
        }
    }

    /// Flow control after reply bytes were queued for client `k`: past `max_output` (unread
    /// output plus replies held in its chain) the client is paused (no further request of it
    /// is read or forwarded) until it reads; a subscriber past `pubsub_max_output` is
    /// disconnected, since messages cannot be held back. True: the client is being closed.
    pub(super) fn over_limits(&mut self, k: usize) -> bool {
        let Some(c) = self.clients.get_mut(k) else {
            return true;
        };
        let cfg = &self.pools[c.pool].cfg;
        let queued = c.queued_bytes();
        if queued <= cfg.max_output.min(cfg.pubsub_max_output) {
            return false;
        }
        if c.sub.is_some() && queued > cfg.pubsub_max_output {
            if c.closing != Closing::Now {
                warn!(
                    "c{k}#{} {} closed: subscriber over pubsub_max_output ({queued} bytes unread)",
                    c.id, c.peer
                );
                c.closing = Closing::Now;
                self.closing.push(k);
            }
            return true;
        }
        if queued > cfg.max_output {
            c.paused = true;
        }
        false
    }

    /// Forward one request to one server; its reply fills one chain slot.
    pub(super) fn forward(&mut self, k: usize, server: usize, bytes: &[u8]) {
        self.cur.backend = server.min(u16::MAX as usize - 1) as u16;
        let seq = match self.clients.get_mut(k) {
            Some(c) => c.chain.push(Slot::Waiting, self.cur),
            None => return,
        };
        if let Err(e) = self.send(k, server, bytes, seq, WHOLE) {
            self.fail_slot(k, seq, WHOLE, &e);
        }
    }

    /// Cluster pools with `read_from`: the replica (server slot) that should serve this
    /// read-only keyed command, if any.
    // Inlined: for every keyed command of a static pool it is one test (`cluster.is_none()`).
    #[inline(always)]
    pub(super) fn replica_for(
        &mut self,
        pool_i: usize,
        spec: &'static Spec,
        frame: &[u8],
        args: &Args,
    ) -> Option<usize> {
        let pool = &self.pools[pool_i];
        if pool.cluster.is_none()
            || pool.cfg.read_from == crate::config::ReadFrom::Master
            || spec.class != crate::commands::Class::Keyed
            || crate::auth::is_write(spec)
        {
            return None;
        }
        let mut keys = std::mem::take(&mut self.keys);
        let first =
            crate::commands::key_positions(spec, args.len(), &|i| args.get(frame, i), &mut keys)
                .ok()
                .and_then(|()| keys.first().copied());
        self.keys = keys;
        let slot = crate::cluster::key_slot(args.get(frame, first?));
        self.pools[pool_i].read_slot(slot, self.now)
    }

    /// Forward one request to a server by slot (a cluster replica); its reply fills one slot.
    pub(super) fn forward_slot(&mut self, k: usize, server_slot: usize, bytes: &[u8]) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let (pool_i, proto, id, db) = (c.pool, c.resp3 as usize, c.id, c.db());
        let seq = c.chain.push(Slot::Waiting, self.cur);
        match self.conn_for(pool_i, server_slot, proto, Some(id), db) {
            Ok(ck) => self.send_on(ck, k, bytes, seq, WHOLE, false),
            Err(e) => self.fail_slot(k, seq, WHOLE, &e),
        }
    }

    /// Send one sub-request per entry of `reqs` (server, bytes) into one multi slot.
    /// Push client `k`'s chain slot for a request sent in `nparts` parts; None: no such client.
    pub(super) fn push_multi(&mut self, k: usize, nparts: usize, combine: Combine) -> Option<u64> {
        let c = self.clients.get_mut(k)?;
        Some(
            c.chain
                .push(Slot::Multi(Box::new(Multi::new(nparts, combine))), self.cur),
        )
    }

    pub(super) fn send_multi(&mut self, k: usize, combine: Combine, reqs: &[(usize, Vec<u8>)]) {
        let Some(seq) = self.push_multi(k, reqs.len(), combine) else {
            return;
        };
        for (part, (server, bytes)) in reqs.iter().enumerate() {
            if let Err(e) = self.send(k, *server, bytes, seq, part as u32) {
                self.fail_slot(k, seq, part as u32, &e);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn split(
        &mut self,
        k: usize,
        frame: &[u8],
        args: &Args,
        split: Split,
        step: usize,
        groups: Vec<(usize, Vec<u32>)>,
        order: Vec<(u32, u32)>,
    ) {
        let name = args.get(frame, 0);
        let partial = self
            .clients
            .get(k)
            .is_some_and(|c| self.pools[c.pool].cfg.split_partial);
        let combine = match split {
            Split::Mget => Combine::Mget { order, partial },
            Split::Mset => Combine::Mset,
            Split::SumInt => Combine::SumInt { partial },
        };
        let Some(seq) = self.push_multi(k, groups.len(), combine) else {
            return;
        };
        // Each sub-request is built in one reused buffer, then copied to its connection.
        let mut req = std::mem::take(&mut self.subreq);
        for (part, (server, firsts)) in groups.iter().enumerate() {
            req.clear();
            resp::write_array_len(&mut req, 1 + firsts.len() * step);
            resp::write_bulk(&mut req, name);
            for &f in firsts {
                for j in 0..step {
                    resp::write_bulk(&mut req, args.get(frame, f as usize + j));
                }
            }
            if let Err(e) = self.send(k, *server, &req, seq, part as u32) {
                self.fail_slot(k, seq, part as u32, &e);
            }
        }
        if req.capacity() <= KEEP_OUTPUT {
            req.clear();
            self.subreq = req;
        }
    }

    // Cold (admin fan-outs): kept out of the per-request path.
    #[inline(never)]
    pub(super) fn fan_out(&mut self, k: usize, merge: Merge, bytes: &[u8]) {
        let Some(c) = self.clients.get(k) else {
            return;
        };
        let pool = &self.pools[c.pool];
        let mut reqs: Vec<(usize, Vec<u8>)> = Vec::with_capacity(pool.len() * 2);
        if merge == Merge::RandomKey {
            // Each backend's key count first, to weight its key (see `Combine`).
            reqs.extend((0..pool.len()).map(|s| (s, b"*1\r\n$6\r\nDBSIZE\r\n".to_vec())));
        }
        reqs.extend((0..pool.len()).map(|s| (s, bytes.to_vec())));
        let combine = Combine::Merge {
            merge,
            names: pool.names.clone(),
        };
        self.send_multi(k, combine, &reqs);
    }

    /// Answer a slot (or one part of it) with a proxy-made error.
    pub(super) fn fail_slot(&mut self, k: usize, seq: u64, part: u32, msg: &str) {
        self.stats.errors += 1;
        let mut e = Vec::with_capacity(msg.len() + 3);
        reply_error(&mut e, msg);
        self.deliver_to(k, None, seq, part, &e);
    }

    /// Hand a reply to client `k`'s chain. `id`: when given, the client must still be that one.
    pub(super) fn deliver_to(
        &mut self,
        k: usize,
        id: Option<u64>,
        seq: u64,
        part: u32,
        reply: &[u8],
    ) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if id.is_some_and(|id| id != c.id) {
            return;
        }
        if c.wbuf.capacity() == 0 {
            c.wbuf = self.buffers.pop().unwrap_or_default();
        }
        let d = if part == WHOLE {
            c.chain
                .deliver(seq, reply, &mut c.wbuf, sink!(self, k, c.id))
        } else {
            c.chain.deliver_part(
                seq,
                part as usize,
                reply,
                c.resp3,
                &mut c.wbuf,
                sink!(self, k, c.id),
            )
        };
        if d == Delivered::Dropped {
            return;
        }
        let over = {
            let cfg = &self.pools[c.pool].cfg;
            c.queued_bytes() > cfg.max_output.min(cfg.pubsub_max_output)
        };
        let c = if over {
            if self.over_limits(k) {
                return;
            }
            match self.clients.get_mut(k) {
                Some(c) => c,
                None => return,
            }
        } else {
            c
        };
        if c.draining && c.chain.is_empty() {
            // The command held at a fence can run now.
            c.draining = false;
            if !self.again.contains(&k) {
                self.again.push(k);
            }
        }
        if d == Delivered::Written {
            if !c.dirty {
                c.dirty = true;
                self.dirty_clients.push(k);
            }
            let (paused, finishing) = (c.paused, c.closing == Closing::AfterReplies);
            self.settle(k, paused, finishing);
        }
    }

    /// After output moved: resume a paused client whose backlog shrank, close one that asked to
    /// go once everything is out. The flags are the client's, read by the caller (no lookup
    /// when neither applies, the common case).
    #[inline]
    pub(super) fn settle(&mut self, k: usize, paused: bool, finishing: bool) {
        if paused {
            self.maybe_resume(k);
        }
        if finishing {
            self.maybe_finish(k);
        }
    }

    // ----- backend events ---------------------------------------------------------------
}

/// The command about to run, of a client whose `CLIENT REPLY` mode is `m`: its reply is
/// suppressed under OFF and SKIP (SKIP lasts one command).
#[cold]
#[inline(never)]
fn quiet_by_mode(m: &mut crate::client::Identity, cur: &mut Meta) {
    match m.reply_mode {
        ReplyMode::On => {}
        ReplyMode::Off => cur.quiet = true,
        ReplyMode::Skip => {
            cur.quiet = true;
            m.reply_mode = ReplyMode::On;
        }
    }
}

/// Encode args[range] as a multibulk request.
pub(super) fn encode_args(args: &Args, frame: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 16);
    resp::write_array_len(&mut out, range.len());
    for i in range {
        resp::write_bulk(&mut out, args.get(frame, i));
    }
    out
}
