//! Commands the proxy answers itself: PING/ECHO/QUIT/SELECT/HELLO/AUTH/RESET, INFO, SLOWLOG,
//! CLIENT (KILL, UNBLOCK: kill.rs; PAUSE: pause.rs), BACKEND/BACKENDNUM/BACKENDS, FORWARD and PROXY
//! (COMMAND: introspect.rs).
//!
//! Invariants: every answer goes through the client's chain (`reply`), in request order;
//! FORWARD never runs a command that would change the state of a shared backend connection.

use super::*;
use crate::client::ReplyMode;

impl Proxy {
    pub(super) fn proxy_cmd(&mut self, k: usize, frame: &[u8], args: &Args) {
        let mut out = Vec::new();
        let Some(pool_i) = self.clients.get(k).map(|c| c.pool) else {
            return;
        };
        let sub = args.get(frame, 1).to_ascii_uppercase();
        let argc = args.len();
        let result = match (sub.as_slice(), argc) {
            (b"RELOAD", 2) => return self.reload_cmd(k, false),
            (b"RELOAD", 3) if args.get(frame, 2).eq_ignore_ascii_case(b"DRYRUN") => {
                return self.reload_cmd(k, true)
            }
            (b"ADDBACKEND", 4 | 5) => {
                let name = String::from_utf8_lossy(args.get(frame, 2)).into_owned();
                let addr = String::from_utf8_lossy(args.get(frame, 3)).into_owned();
                let weight = if argc == 5 {
                    String::from_utf8_lossy(args.get(frame, 4)).into_owned()
                } else {
                    "1".into()
                };
                match crate::config::parse_server(&format!("{addr}:{weight} {name}"), 0) {
                    Ok(s) => self.membership(pool_i, Some(s), None),
                    Err(e) => Err(e.to_string()),
                }
            }
            (b"REBALANCE", 3) => self.rebalance_cmd(pool_i, args.get(frame, 2)),
            (b"REMOVEBACKEND", 3) => {
                let name = String::from_utf8_lossy(args.get(frame, 2)).into_owned();
                self.membership(pool_i, None, Some(&name))
            }
            (b"BACKENDS", 2) => {
                let pool = &self.pools[pool_i];
                // Removed servers still drained by a rebalance come last (no position).
                let draining: Vec<usize> = pool.rebalance.as_ref().map_or(Vec::new(), |rb| {
                    rb.sources
                        .iter()
                        .filter(|s| !s.done && pool.servers[s.slot].retired)
                        .map(|s| s.slot)
                        .collect()
                });
                resp::write_array_len(&mut out, pool.len() + draining.len());
                for (i, &slot) in pool.order.iter().enumerate() {
                    let s = &pool.servers[slot];
                    let state = if s.is_ejected() {
                        "ejected"
                    } else if s.is_down(self.now) {
                        "down"
                    } else {
                        "up"
                    };
                    let line = format!(
                        "{i} {} {}:{} weight={} state={state}",
                        s.name, s.host, s.port, s.weight
                    );
                    resp::write_bulk(&mut out, line.as_bytes());
                }
                for slot in &draining {
                    let s = &pool.servers[*slot];
                    let line = format!(
                        "- {} {}:{} weight={} state=draining",
                        s.name, s.host, s.port, s.weight
                    );
                    resp::write_bulk(&mut out, line.as_bytes());
                }
                return self.reply(k, &out);
            }
            _ => Err("usage: PROXY RELOAD [DRYRUN] | PROXY BACKENDS | PROXY ADDBACKEND name host:port [weight] | PROXY REMOVEBACKEND name | PROXY REBALANCE STATUS|PAUSE|RESUME".into()),
        };
        match result {
            Ok(msg) => resp::write_bulk(&mut out, msg.as_bytes()),
            Err(e) => reply_error(&mut out, &format!("ERR {e}")),
        }
        self.reply(k, &out);
    }

    /// PROXY RELOAD [DRYRUN]: answered when the reload, run off the loop, is done.
    fn reload_cmd(&mut self, k: usize, dry_run: bool) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let (id, seq) = (c.id, c.chain.push(Slot::Waiting, self.cur));
        self.start_reload(dry_run, Some((k, id, seq)));
    }

    // ----- local commands ---------------------------------------------------------------

    pub(super) fn local(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let resp3 = self.clients.get(k).is_some_and(|c| c.resp3);
        let mut out = Vec::new();
        let argc = args.len();
        let arg = |i: usize| args.get(frame, i);
        match spec.name {
            "PING" if argc > 2 => {
                // Redis: PING takes at most one argument.
                reply_error(&mut out, "ERR wrong number of arguments for 'ping' command");
            }
            "PING"
                if self
                    .clients
                    .get(k)
                    .is_some_and(|c| c.subscribed() && !c.resp3) =>
            {
                resp::write_array_len(&mut out, 2);
                resp::write_bulk(&mut out, b"pong");
                resp::write_bulk(&mut out, if argc > 1 { arg(1) } else { b"" });
            }
            "PING" => {
                if argc > 1 {
                    resp::write_bulk(&mut out, arg(1));
                } else {
                    resp::write_simple(&mut out, b"PONG");
                }
            }
            "ECHO" => resp::write_bulk(&mut out, arg(1)),
            "QUIT" => {
                resp::write_simple(&mut out, b"OK");
                self.reply(k, &out);
                if let Some(c) = self.clients.get_mut(k) {
                    c.closing = Closing::AfterReplies;
                }
                self.maybe_finish(k);
                return;
            }
            "SELECT" => match self.select(k, arg(1)) {
                Ok(()) => resp::write_simple(&mut out, b"OK"),
                Err(e) => reply_error(&mut out, e),
            },
            "HELLO" => return self.hello(k, frame, args),
            "AUTH" => {
                // AUTH password | AUTH username password (username must be "default").
                let (user, pass) = if argc >= 3 {
                    (arg(1), arg(2))
                } else {
                    (&b"default"[..], arg(1))
                };
                if argc > 3 {
                    reply_error(&mut out, "ERR syntax error");
                } else {
                    match self.check_auth(k, user, pass) {
                        Ok(()) => resp::write_simple(&mut out, b"OK"),
                        Err(e) => reply_error(&mut out, e),
                    }
                }
            }
            "RESET" => {
                // Redis's RESET: no transaction, no subscriptions, RESP2, and back to the
                // default user (who must authenticate again when a password is required).
                self.end_txn(k, true);
                self.drop_subscriptions(k);
                if let Some(c) = self.clients.get_mut(k) {
                    let users = &self.pools[c.pool].users;
                    c.authed = !users.required();
                    c.level = users.default_level();
                    if let Some(m) = c.meta.as_mut() {
                        m.user = None;
                        // Like Redis, RESET turns replies back on (and its own is sent).
                        m.reply_mode = ReplyMode::On;
                        self.cur.quiet = false;
                    }
                    if c.resp3 {
                        // A held private connection (none after the above, but a blocked one
                        // cannot be here: blocked clients are not read) stays per protocol.
                        c.resp3 = false;
                    }
                    // Back to the database a new connection starts in.
                    if let Some(m) = c.meta.as_mut() {
                        m.db = None;
                    }
                }
                resp::write_simple(&mut out, b"RESET");
            }
            "TIME" => {
                let d = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                resp::write_array_len(&mut out, 2);
                resp::write_bulk(&mut out, d.as_secs().to_string().as_bytes());
                resp::write_bulk(&mut out, d.subsec_micros().to_string().as_bytes());
            }
            "INFO" => return self.info_cmd(k, frame, args),
            "SLOWLOG GET" => {
                let count = if argc > 2 {
                    match router::parse_i64(arg(2)) {
                        Some(n) if n < 0 => Some(usize::MAX),
                        Some(n) => Some(n as usize),
                        None => {
                            reply_error(&mut out, "ERR value is not an integer or out of range");
                            return self.reply(k, &out);
                        }
                    }
                } else {
                    None
                };
                self.slowlog.write_get(count, &mut out);
            }
            "SLOWLOG LEN" => resp::write_int(&mut out, self.slowlog.len() as i64),
            "SLOWLOG RESET" => {
                self.slowlog.reset();
                resp::write_simple(&mut out, b"OK");
            }
            "BACKEND" | "BACKENDNUM" => {
                let Some(c) = self.clients.get(k) else {
                    return;
                };
                let pool = &self.pools[c.pool];
                let target = pool.target();
                let many = argc > 2;
                if many {
                    resp::write_array_len(&mut out, argc - 1);
                }
                for i in 1..argc {
                    match target.pick(arg(i)) {
                        Some(s) if spec.name == "BACKEND" => match pool.order.get(s) {
                            Some(&slot) => {
                                resp::write_bulk(&mut out, pool.servers[slot].name.as_bytes())
                            }
                            None => resp::write_nil(&mut out, resp3),
                        },
                        Some(s) => resp::write_int(&mut out, s as i64),
                        None => resp::write_nil(&mut out, resp3),
                    }
                }
            }
            "BACKENDS" => {
                let Some(c) = self.clients.get(k) else {
                    return;
                };
                let pool = &self.pools[c.pool];
                resp::write_array_len(&mut out, pool.len());
                // Backend names, so that BACKEND key == BACKENDS[BACKENDNUM key]
                // (redis-shatter's contract); addresses are in PROXY BACKENDS.
                for s in pool.order.iter().map(|&slot| &pool.servers[slot]) {
                    resp::write_bulk(&mut out, s.name.as_bytes());
                }
            }
            "FORWARD" => return self.forward_cmd(k, frame, args),
            "HOTKEYS GET" | "HOTKEYS RESET" | "HOTKEYS HELP" => {
                return self.hotkeys_cmd(k, spec, frame, args)
            }
            "PROXY" => return self.proxy_cmd(k, frame, args),
            "SCRIPT KILL" | "FUNCTION KILL" => return self.script_kill(k, frame, args),
            "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => {
                return self.txn_cmd(k, spec, frame, args)
            }
            "SUBSCRIBE" | "SSUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "SUNSUBSCRIBE"
            | "PUNSUBSCRIBE" => {
                // Confirmations are pushes: Redis sends them whatever CLIENT REPLY says.
                self.cur.quiet = false;
                return self.pubsub_cmd(k, spec, frame, args);
            }
            name if name.starts_with("CLIENT ") => {
                return self.client_cmd(k, spec, frame, args);
            }
            "COMMAND" => return self.command_cmd(k, frame, args),
            "ROLE" => {
                resp::write_array_len(&mut out, 3);
                resp::write_bulk(&mut out, b"master");
                resp::write_int(&mut out, 0);
                resp::write_array_len(&mut out, 0);
            }
            "ACL WHOAMI" => {
                let user = self
                    .clients
                    .get(k)
                    .and_then(|c| c.meta.as_ref())
                    .and_then(|m| m.user.clone())
                    .unwrap_or_else(|| b"default".to_vec());
                resp::write_bulk(&mut out, &user);
            }
            "CONFIG RESETSTAT" => {
                self.stats.reset();
                for p in &mut self.pools {
                    for s in &mut p.servers {
                        s.stats.reset();
                    }
                }
                resp::write_simple(&mut out, b"OK");
            }
            other => reply_error(
                &mut out,
                &format!("ERR {other} is not supported by rustproxy"),
            ),
        }
        self.reply(k, &out);
    }

    /// Check AUTH credentials: the pool's users (requirepass / redis_auth for `default`, `user`
    /// lines), compared in constant time. Failures are counted and logged (at most once a
    /// second per pool).
    pub(super) fn check_auth(
        &mut self,
        k: usize,
        user: &[u8],
        pass: &[u8],
    ) -> Result<(), &'static str> {
        let Some(c) = self.clients.get_mut(k) else {
            return Ok(());
        };
        let pool = &self.pools[c.pool];
        if !pool.users.required() && user == b"default" {
            // Like Redis's default user without a password.
            return Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        }
        match pool.users.check(user, pass) {
            Ok(level) => {
                c.authed = true;
                c.level = level;
                if user == b"default" {
                    if let Some(m) = c.meta.as_mut() {
                        m.user = None;
                    }
                } else {
                    c.meta_mut().user = Some(user.to_vec());
                }
                Ok(())
            }
            Err(()) => {
                self.stats.auth_failures += 1;
                if self
                    .last_auth_log
                    .is_none_or(|t| self.now.duration_since(t) >= Duration::from_secs(1))
                {
                    self.last_auth_log = Some(self.now);
                    warn!(
                        "c{k}#{} {} failed AUTH as '{}' ({} failures so far)",
                        c.id,
                        c.peer,
                        String::from_utf8_lossy(user),
                        self.stats.auth_failures
                    );
                }
                Err("WRONGPASS invalid username-password pair or user is disabled.")
            }
        }
    }

    pub(super) fn hello(&mut self, k: usize, frame: &[u8], args: &Args) {
        let mut out = Vec::new();
        let argc = args.len();
        let mut proto = None;
        let mut i = 1;
        if argc > 1 {
            match router::parse_i64(args.get(frame, 1)) {
                Some(v @ 2..=3) => proto = Some(v),
                Some(_) => {
                    reply_error(&mut out, "NOPROTO unsupported protocol version");
                    return self.reply(k, &out);
                }
                None => {
                    reply_error(
                        &mut out,
                        "ERR Protocol version is not an integer or out of range",
                    );
                    return self.reply(k, &out);
                }
            }
            i = 2;
        }
        let mut setname = None;
        while i < argc {
            let opt = args.get(frame, i);
            if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < argc {
                let (user, pass) = (args.get(frame, i + 1), args.get(frame, i + 2));
                if let Err(e) = self.check_auth(k, user, pass) {
                    reply_error(&mut out, e);
                    return self.reply(k, &out);
                }
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < argc {
                setname = Some(args.get(frame, i + 1).to_vec());
                i += 2;
            } else {
                let o = String::from_utf8_lossy(opt);
                reply_error(&mut out, &format!("ERR Syntax error in HELLO option '{o}'"));
                return self.reply(k, &out);
            }
        }
        if let Some(name) = &setname {
            if !valid_client_name(name) {
                reply_error(
                    &mut out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
                return self.reply(k, &out);
            }
        }
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if !c.authed {
            reply_error(
                &mut out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return self.reply(k, &out);
        }
        let switch = proto.is_some_and(|p| (p == 3) != c.resp3);
        if let Some(p) = proto {
            c.resp3 = p == 3;
        }
        if switch {
            // Connections the client holds (WATCH, subscriptions) switch with it; shared ones
            // are per protocol already. HELLO runs at a fence: nothing of the client is in
            // flight on them.
            let held: Vec<usize> = c
                .private
                .into_iter()
                .chain(c.sub.iter().flat_map(|s| s.conns.iter().map(|&(_, ck)| ck)))
                .collect();
            let proto = c.resp3 as usize;
            let hello: &[u8] = if proto == 1 {
                HELLO3
            } else {
                b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n"
            };
            for ck in held {
                if let Some(conn) = self.conns.get_mut(ck) {
                    conn.proto = proto;
                }
                self.send_swallowed(ck, hello);
            }
        }
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if let Some(name) = setname {
            c.meta_mut().name = Some(name);
        }
        let resp3 = c.resp3;
        let id = c.id;
        resp::write_map_len(&mut out, 7, resp3);
        resp::write_bulk(&mut out, b"server");
        resp::write_bulk(&mut out, b"redis");
        resp::write_bulk(&mut out, b"version");
        resp::write_bulk(&mut out, REDIS_COMPAT_VERSION.as_bytes());
        resp::write_bulk(&mut out, b"proto");
        resp::write_int(&mut out, if resp3 { 3 } else { 2 });
        resp::write_bulk(&mut out, b"id");
        resp::write_int(&mut out, id as i64);
        resp::write_bulk(&mut out, b"mode");
        resp::write_bulk(&mut out, b"standalone");
        resp::write_bulk(&mut out, b"role");
        resp::write_bulk(&mut out, b"master");
        resp::write_bulk(&mut out, b"modules");
        resp::write_array_len(&mut out, 0);
        self.reply(k, &out);
    }

    pub(super) fn client_cmd(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let mut out = Vec::new();
        let now = self.now_us;
        let resp3 = self.clients.get(k).is_some_and(|c| c.resp3);
        match spec.name {
            "CLIENT SETNAME" => {
                let name = args.get(frame, 2);
                if !valid_client_name(name) {
                    reply_error(
                        &mut out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                } else {
                    if let Some(c) = self.clients.get_mut(k) {
                        c.meta_mut().name = if name.is_empty() {
                            None
                        } else {
                            Some(name.to_vec())
                        };
                    }
                    resp::write_simple(&mut out, b"OK");
                }
            }
            "CLIENT GETNAME" => match self.clients.get(k).and_then(|c| c.name()) {
                Some(n) => resp::write_bulk(&mut out, n),
                None => resp::write_nil(&mut out, resp3),
            },
            "CLIENT ID" => {
                let id = self.clients.get(k).map_or(0, |c| c.id);
                resp::write_int(&mut out, id as i64);
            }
            "CLIENT SETINFO" => {
                let attr = args.get(frame, 2);
                let val = args.get(frame, 3).to_vec();
                if let Some(c) = self.clients.get_mut(k) {
                    if attr.eq_ignore_ascii_case(b"LIB-NAME") {
                        c.meta_mut().lib_name = Some(val);
                        resp::write_simple(&mut out, b"OK");
                    } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
                        c.meta_mut().lib_ver = Some(val);
                        resp::write_simple(&mut out, b"OK");
                    } else {
                        let a = String::from_utf8_lossy(attr);
                        reply_error(&mut out, &format!("ERR Unrecognized option '{a}'"));
                    }
                }
            }
            "CLIENT INFO" => {
                if let Some(c) = self.clients.get(k) {
                    let line = client_line(c, now, &self.pools[c.pool], frame.len());
                    resp::write_verbatim(&mut out, b"txt", line.as_bytes(), resp3);
                }
            }
            "CLIENT LIST" => {
                let mut text = String::new();
                for (key, c) in self.clients.iter() {
                    let current = if key == k { frame.len() } else { 0 };
                    text.push_str(&client_line(c, now, &self.pools[c.pool], current));
                }
                resp::write_verbatim(&mut out, b"txt", text.as_bytes(), resp3);
            }
            "CLIENT REPLY" => {
                // The proxy suppresses the replies itself (`Meta::quiet` of each chain slot):
                // every reply is still read from the backends, in order.
                let mode = args.get(frame, 2);
                let Some(c) = self.clients.get_mut(k) else {
                    return;
                };
                if mode.eq_ignore_ascii_case(b"ON") {
                    if let Some(m) = c.meta.as_mut() {
                        m.reply_mode = ReplyMode::On;
                    }
                    // Its own +OK is sent, even after OFF or SKIP.
                    self.cur.quiet = false;
                    resp::write_simple(&mut out, b"OK");
                } else if mode.eq_ignore_ascii_case(b"OFF") {
                    c.meta_mut().reply_mode = ReplyMode::Off;
                    self.cur.quiet = true;
                    resp::write_simple(&mut out, b"OK");
                } else if mode.eq_ignore_ascii_case(b"SKIP") {
                    if c.reply_mode() != ReplyMode::Off {
                        c.meta_mut().reply_mode = ReplyMode::Skip;
                    }
                    self.cur.quiet = true;
                    resp::write_simple(&mut out, b"OK");
                } else {
                    reply_error(&mut out, "ERR syntax error");
                }
            }
            "CLIENT NO-EVICT" | "CLIENT NO-TOUCH" => {
                // Redis's reply shape; no effect (backend connections are shared).
                let v = args.get(frame, 2);
                if v.eq_ignore_ascii_case(b"on") || v.eq_ignore_ascii_case(b"off") {
                    resp::write_simple(&mut out, b"OK");
                } else {
                    reply_error(&mut out, "ERR syntax error");
                }
            }
            "CLIENT KILL" => return self.client_kill(k, frame, args),
            "CLIENT PAUSE" => return self.client_pause(k, frame, args),
            "CLIENT UNPAUSE" => return self.client_unpause(k),
            "CLIENT UNBLOCK" => return self.client_unblock(k, frame, args),
            other => reply_error(
                &mut out,
                &format!("ERR {other} is not supported by rustproxy"),
            ),
        }
        self.reply(k, &out);
    }

    /// FORWARD <index|name> command args...: sent verbatim to that backend, reply verbatim.
    pub(super) fn forward_cmd(&mut self, k: usize, frame: &[u8], args: &Args) {
        let Some(c) = self.clients.get(k) else {
            return;
        };
        let pool = &self.pools[c.pool];
        let which = args.get(frame, 1);
        let server = router::parse_u64(which)
            .map(|i| i as usize)
            .filter(|&i| i < pool.len())
            .or_else(|| {
                pool.order
                    .iter()
                    .map(|&slot| &pool.servers[slot])
                    .position(|s| {
                        s.name.as_bytes() == which
                            || format!("{}:{}", s.host, s.port).as_bytes() == which
                    })
            });
        // The command runs on a connection other clients share: one that would change that
        // connection's state is refused; a blocking one gets a private connection.
        let inner = crate::commands::lookup(args.get(frame, 2)).map(|spec| {
            match (spec.class, args.len() > 3) {
                (crate::commands::Class::Container, true) => {
                    crate::commands::lookup_sub(spec, args.get(frame, 3)).unwrap_or(spec)
                }
                _ => spec,
            }
        });
        if let Some(spec) = inner {
            let row = command_index(spec);
            if crate::commands::flags(row) & crate::commands::flag::CONN_STATE != 0 {
                let name = spec.name.to_ascii_lowercase().replace(' ', "|");
                return self.reply_err(
                    k,
                    &format!("ERR FORWARD cannot run '{name}': it changes the state of a backend connection that other clients share"),
                );
            }
        }
        let blocking = inner.is_some_and(|s| s.class == crate::commands::Class::Blocking)
            || (inner.is_some_and(|s| s.name.starts_with("XREAD"))
                && (3..args.len()).any(|i| args.get(frame, i).eq_ignore_ascii_case(b"BLOCK")));
        match server {
            Some(s) => {
                let bytes = encode_args(args, frame, 2..args.len());
                if blocking {
                    self.blocking(k, s, &bytes, Vec::new());
                } else {
                    self.forward(k, s, &bytes);
                }
            }
            None => {
                let w = String::from_utf8_lossy(which).into_owned();
                self.reply_err(k, &format!("ERR unknown backend '{w}'"));
            }
        }
    }

    /// The view of everything the stats renderers show.
    pub(super) fn view(&self) -> crate::metrics::View<'_> {
        let now = self.now;
        let pools = self
            .pools
            .iter()
            .filter(|p| !p.removed)
            .map(|p| crate::metrics::PoolView {
                name: &p.cfg.name,
                listen: listen_name(&p.cfg.listen),
                hash: p.cfg.hash.name(),
                distribution: p.cfg.distribution.name(),
                clients: p.clients,
                rebalance: p.cfg.rebalance.then(|| {
                    let (rb, last) = (p.rebalance.as_deref(), p.last_rebalance.as_deref());
                    match rb.or(last) {
                        Some(r) => [
                            match r.state() {
                                crate::rebalance::State::Idle => 0,
                                crate::rebalance::State::Running => 1,
                                crate::rebalance::State::Waiting => 2,
                                crate::rebalance::State::Paused => 3,
                                crate::rebalance::State::Failed => 4,
                            },
                            r.epoch,
                            r.scanned,
                            r.moved,
                            r.failed,
                            r.backends_left() as u64,
                        ],
                        None => [0; 6],
                    }
                }),
                servers: p
                    .order
                    .iter()
                    .map(|&slot| {
                        let s = &p.servers[slot];
                        let mut connections = 0;
                        let mut in_flight = 0;
                        let mut out_bytes = 0;
                        for ck in s.conns.iter().flatten().flatten() {
                            if let Some(c) = self.conns.get(*ck) {
                                connections += 1;
                                in_flight += c.inflight.len();
                                out_bytes += c.pending_output();
                            }
                        }
                        crate::metrics::ServerView {
                            name: &s.name,
                            addr: s.addr.to_string(),
                            state: if s.is_ejected() {
                                "ejected"
                            } else if s.is_down(now) {
                                "down"
                            } else {
                                "up"
                            },
                            connections: connections + s.private_open,
                            in_flight,
                            out_queue_bytes: out_bytes,
                            stats: &s.stats,
                        }
                    })
                    .collect(),
            })
            .collect();
        crate::metrics::View {
            version: env!("CARGO_PKG_VERSION"),
            redis_version: REDIS_COMPAT_VERSION,
            pid: std::process::id(),
            uptime_secs: now.duration_since(self.started).as_secs(),
            config_file: self.config.path.as_ref().map(|p| p.display().to_string()),
            now_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            connected_clients: self.clients.len(),
            max_clients: self.pools.iter().map(|p| p.cfg.max_clients).sum(),
            // Blocked as the backend sees it: a blocking command goes after the `CLIENT ID` of
            // its connection, so once that answered the backend holds the command (tools wait
            // on this count before they push, or CLIENT UNBLOCK).
            blocked_clients: self
                .clients
                .iter()
                .filter(|(_, c)| {
                    c.blocked
                        && c.private
                            .and_then(|ck| self.conns.get(ck))
                            .is_none_or(|cn| cn.backend_id != super::kill::ID_PENDING)
                })
                .count(),
            stats: &self.stats,
            pools,
            slowlog_len: self.slowlog.len(),
            rss_bytes: rss_bytes(),
            peak_rss_bytes: peak_rss_bytes(),
            last_reload: self.last_reload.clone(),
        }
    }

    /// INFO [section...] | INFO BACKEND <n|name> | INFO <n|name> [section] (forwarded).
    pub(super) fn info_cmd(&mut self, k: usize, frame: &[u8], args: &Args) {
        let Some((pool_i, resp3)) = self.clients.get(k).map(|c| (c.pool, c.resp3)) else {
            return;
        };
        let argc = args.len();
        let mut out = Vec::new();
        let find = |p: &Pool, w: &[u8]| -> Option<usize> {
            router::parse_u64(w)
                .map(|i| i as usize)
                .filter(|&i| i < p.len())
                .or_else(|| {
                    p.order.iter().position(|&slot| {
                        let s = &p.servers[slot];
                        s.name.as_bytes() == w || format!("{}:{}", s.host, s.port).as_bytes() == w
                    })
                })
        };
        if argc >= 2 {
            let first = args.get(frame, 1);
            if first.eq_ignore_ascii_case(b"BACKEND") && argc == 3 {
                let text = match find(&self.pools[pool_i], args.get(frame, 2)) {
                    Some(pos) => {
                        let view = self.view();
                        let vp = self
                            .pools
                            .iter()
                            .filter(|p| !p.removed)
                            .position(|p| std::ptr::eq(p, &self.pools[pool_i]))
                            .unwrap_or(0);
                        crate::metrics::info_backend(&view, vp, pos)
                    }
                    None => {
                        let w = String::from_utf8_lossy(args.get(frame, 2)).into_owned();
                        return self.reply_err(k, &format!("ERR unknown backend '{w}'"));
                    }
                };
                resp::write_verbatim(&mut out, b"txt", text.as_bytes(), resp3);
                return self.reply(k, &out);
            }
            if let Some(pos) = find(&self.pools[pool_i], first) {
                let mut req = Vec::new();
                resp::write_array_len(&mut req, argc - 1);
                resp::write_bulk(&mut req, b"INFO");
                for i in 2..argc {
                    resp::write_bulk(&mut req, args.get(frame, i));
                }
                return self.forward(k, pos, &req);
            }
        }
        let section: Vec<String> = (1..argc)
            .map(|i| String::from_utf8_lossy(args.get(frame, i)).into_owned())
            .collect();
        let section = section.join(" ");
        let view = self.view();
        let mut text = crate::metrics::info(&view, if argc > 1 { Some(&section) } else { None });
        // The proxy's own section (not in the default set): asked by name, or with all.
        let rebalance = section.split_ascii_whitespace().any(|w| {
            ["rebalance", "all", "everything"]
                .iter()
                .any(|n| w.eq_ignore_ascii_case(n))
        });
        if rebalance && self.pools.iter().any(|p| p.cfg.rebalance) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            text.push_str(&self.rebalance_info());
        }
        // Hot keys: the proxy's own section, asked by name or with everything (not in `all`,
        // whose sections tools expect to be Redis's and the proxy's fixed ones).
        let hot = section.split_ascii_whitespace().any(|w| {
            ["hotkeys", "everything"]
                .iter()
                .any(|n| w.eq_ignore_ascii_case(n))
        });
        if hot {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            text.push_str(&crate::hotkeys::info(&self.hot_view(crate::hotkeys::SHOWN)));
        }
        // Keyspace: the backends' databases, summed (one INFO keyspace to each backend).
        const HEAD: &str = "# Keyspace\r\n";
        if let Some(at) = text.find(HEAD).map(|i| i + HEAD.len()) {
            if !self.pools[pool_i].is_empty() {
                let combine = crate::combine::Combine::Info { text, at };
                let req = b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n";
                let reqs: Vec<(usize, Vec<u8>)> = (0..self.pools[pool_i].len())
                    .map(|s| (s, req.to_vec()))
                    .collect();
                return self.send_multi(k, combine, &reqs);
            }
        }
        resp::write_verbatim(&mut out, b"txt", text.as_bytes(), resp3);
        self.reply(k, &out);
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub(super) fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Peak resident set size of this process (VmHWM of /proc/self/status).
fn peak_rss_bytes() -> Option<u64> {
    crate::metrics::proc_kib_field("/proc/self/status", "VmHWM:")
}

/// Redis's glob (`stringmatchlen`, case-sensitive): `*`, `?`, `[...]` with ranges and `^`,
/// and `\` escapes. Iterative, with one backtrack point for the last `*`.
pub(super) fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class_match(pat, p, s[i]),
            Some(b'\\') if p + 1 < pat.len() => (pat[p + 1] == s[i]).then_some(p + 2),
            Some(&c) => (c == s[i]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(np) => {
                p = np;
                i += 1;
            }
            None => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pat[p]` against `c`: the position after the class when it matches.
fn class_match(pat: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pat.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut hit = false;
    while j < pat.len() && pat[j] != b']' {
        if pat[j] == b'\\' && j + 1 < pat.len() {
            hit |= pat[j + 1] == c;
            j += 2;
        } else if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            let (a, b) = (pat[j].min(pat[j + 2]), pat[j].max(pat[j + 2]));
            hit |= (a..=b).contains(&c);
            j += 3;
        } else {
            hit |= pat[j] == c;
            j += 1;
        }
    }
    // An unterminated class runs to the end of the pattern, as in Redis.
    let end = if j < pat.len() { j + 1 } else { j };
    (hit != negate).then_some(end)
}

pub(super) fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// A client's `addr` and `laddr` as CLIENT LIST shows them (and CLIENT KILL matches them).
pub(super) fn client_addrs(c: &Client, pool: &Pool) -> (String, String) {
    match &c.stream {
        Stream::Unix(_) => {
            let name = format!("{}:0", listen_name(&pool.cfg.listen));
            (name.clone(), name)
        }
        other => (
            c.peer.to_string(),
            other
                .tcp()
                .and_then(|s| s.local_addr().ok())
                .map_or_else(|| listen_name(&pool.cfg.listen), |a| a.to_string()),
        ),
    }
}

/// `current`: the length of the command being executed when `c` is the caller (Redis counts
/// it in the caller's `qbuf`: the proxy parses it in place, outside `rbuf`).
pub(super) fn client_line(c: &Client, now: Micros, pool: &Pool, current: usize) -> String {
    use std::fmt::Write as _;
    use std::os::fd::AsRawFd;
    let lossy = |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or_default()).into_owned();
    let meta = c.meta.as_deref();
    let fd = match &c.stream {
        Stream::Unix(s) => s.as_raw_fd(),
        other => other.tcp().map_or(-1, |s| s.as_raw_fd()),
    };
    let (addr, laddr) = client_addrs(c, pool);
    let unix = matches!(c.stream, Stream::Unix(_));
    let sub = c.sub.as_deref();
    let counts = sub.map_or((0, 0, 0), |s| {
        (s.channels.len(), s.patterns.len(), s.shard.len())
    });
    let txn = c.txn.as_deref();
    let mut flags = String::new();
    if c.subscribed() {
        flags.push('P');
    }
    if c.in_multi() {
        flags.push('x');
    }
    if c.blocked {
        flags.push('b');
    }
    if c.closing == Closing::AfterReplies {
        flags.push('c');
    }
    if c.closing == Closing::Now {
        flags.push('A');
    }
    if unix {
        flags.push('U');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let multi = match txn {
        Some(t) if t.in_multi => t.count as i64,
        _ => -1,
    };
    let multi_mem = txn.map_or(0, |t| {
        t.queued.capacity() + t.keys.iter().map(Vec::capacity).sum::<usize>()
    });
    let sub_mem = sub.map_or(0, |s| {
        std::mem::size_of::<crate::client::Sub>()
            + s.channels
                .iter()
                .chain(&s.patterns)
                .chain(&s.shard)
                .map(|n| 2 * (n.len() + 32))
                .sum::<usize>()
    });
    let tot_mem = std::mem::size_of::<Client>()
        + c.rbuf.capacity()
        + c.wbuf.capacity()
        + c.chain.parked_bytes()
        + c.chain.len() * std::mem::size_of::<(Slot, Meta)>()
        + meta.map_or(0, |_| std::mem::size_of::<crate::client::Identity>())
        + txn.map_or(0, |_| std::mem::size_of::<crate::client::Txn>())
        + multi_mem
        + sub_mem;
    let mut events = String::new();
    if !c.stalled() {
        events.push('r');
    }
    if c.pending_output() > 0 {
        events.push('w');
    }
    let mut line = String::with_capacity(400);
    // Redis 7.0's fields in its order, then lib-name and lib-ver where Redis 7.2 puts them.
    let _ = writeln!(
        line,
        "id={} addr={} laddr={laddr} fd={fd} name={} age={} idle={} flags={flags} db={} \
         sub={} psub={} ssub={} multi={multi} qbuf={} qbuf-free={} argv-mem=0 multi-mem={multi_mem} \
         rbs={} rbp={} obl={} oll={} omem={} tot-mem={tot_mem} events={events} cmd={} user={} \
         redir=-1 resp={} lib-name={} lib-ver={}",
        c.id,
        addr,
        lossy(c.name()),
        since(now, c.created) / 1_000_000,
        since(now, c.last_active) / 1_000_000,
        c.db().unwrap_or(pool.cfg.redis_db),
        counts.0,
        counts.1,
        counts.2,
        c.rbuf.len() + current,
        c.rbuf.capacity() - c.rbuf.len(),
        c.rbuf.capacity(),
        c.rbuf.capacity(),
        c.pending_output(),
        c.chain.len(),
        c.wbuf.capacity(),
        crate::commands::COMMANDS
            .get(c.last_command as usize)
            .map_or("NULL".to_string(), |s| s.name.to_ascii_lowercase().replace(' ', "|")),
        lossy(meta.and_then(|m| m.user.as_deref()).or(Some(b"default"))),
        if c.resp3 { 3 } else { 2 },
        lossy(meta.and_then(|m| m.lib_name.as_deref())),
        lossy(meta.and_then(|m| m.lib_ver.as_deref())),
    );
    line
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_matches_like_redis() {
        for (p, s, want) in [
            ("xa*", "xadd", true),
            ("xa*", "xack", true),
            ("xa*", "get", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("g?t", "get", true),
            ("g?t", "gt", false),
            ("*set*", "hsetnx", true),
            ("[gs]et", "set", true),
            ("[^gs]et", "set", false),
            ("[a-c]*", "bitop", true),
            ("[c-a]*", "bitop", true),
            ("h\\*", "h*", true),
            ("h\\*", "hx", false),
            ("*x*y", "axbxcy", true),
            ("a*b*c", "abxbc", true),
            ("a*b*c", "abxbd", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), want, "{p} ~ {s}");
        }
    }
}
