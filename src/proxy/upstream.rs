//! Backend connections: opening them (non-blocking connect, handshake pipelined ahead of the
//! first request), queueing requests with their typed owners, reading replies and routing each
//! one (`route` classifies, `conn_replies` acts), and failing what a broken connection
//! carried.
//!
//! Invariants:
//! - Every in-flight entry names its owner with `backend::Owner`; a reply goes to the front
//!   entry, a client's only if its id still matches (a reused slab key never gets it).
//! - Only failures of the backend (`Fail::Down`, `Broken`, `Eof`) count against its server; a
//!   connection the proxy closes for its own reasons (`Fail::Local`: its client left, a
//!   reload retired it) never marks a server down or ejects it.
//! - A client uses one shared connection per server and protocol (chosen by its id), so its
//!   requests reach each backend in its order.

use super::*;

pub(super) const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/// How a backend connection ended, which decides what happens to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fail {
    /// An idle connection closed (e.g. the backend's `timeout`): reconnect on next use.
    Idle,
    /// A connection carrying requests broke: they fail; reconnect on next use.
    Broken,
    /// The backend closed a connection that carried requests: they fail (counted as EOF).
    Eof,
    /// The backend cannot be reached or refused our handshake: down, with backoff.
    Down,
    /// The proxy closed it for its own reasons (its client left, a reload retired it): never
    /// counted against the server, whatever state the connection was in.
    Local,
}

impl Proxy {
    /// The shared connection to use for `server` (slot) of `pool` with protocol `proto` in
    /// database `db` (None: the pool's `redis_db`), connecting if needed. `pin`: a client's id, so that one client always uses the same one
    /// of the server's `server_connections` (its commands reach the backend in its order);
    /// None for the proxy's own requests (round robin).
    pub(super) fn conn_for(
        &mut self,
        pool_i: usize,
        server_i: usize,
        proto: usize,
        pin: Option<u64>,
        db: Option<u32>,
    ) -> Result<usize, String> {
        let pool = &mut self.pools[pool_i];
        let default = pool.cfg.redis_db;
        if let Some(db) = db.filter(|&d| d != default) {
            return self.db_conn_for(pool_i, server_i, proto, pin, db);
        }
        let srv = &mut pool.servers[server_i];
        let slot = pick(&mut srv.rr, srv.conns[proto].len(), pin);
        if let Some(k) = srv.conns[proto][slot] {
            return Ok(k);
        }
        let key = self.open_conn(pool_i, server_i, proto, slot, false, default)?;
        self.pools[pool_i].servers[server_i].conns[proto][slot] = Some(key);
        Ok(key)
    }

    /// `conn_for` for a database other than the pool's `redis_db`: the server's shared
    /// connections for that database, opened on first use (each SELECTs it first).
    #[cold]
    fn db_conn_for(
        &mut self,
        pool_i: usize,
        server_i: usize,
        proto: usize,
        pin: Option<u64>,
        db: u32,
    ) -> Result<usize, String> {
        let now = self.now;
        let srv = &mut self.pools[pool_i].servers[server_i];
        let n = srv.conns[proto].len();
        let i = match srv.db_conns.iter().position(|d| d.db == db) {
            Some(i) => i,
            None => {
                srv.db_conns.push(crate::backend::DbConns {
                    db,
                    conns: [vec![None; n], vec![None; n]],
                    used: now,
                });
                srv.db_conns.len() - 1
            }
        };
        let d = &mut srv.db_conns[i];
        d.used = now;
        let slot = pick(&mut srv.rr, d.conns[proto].len(), pin);
        if let Some(k) = d.conns[proto][slot] {
            return Ok(k);
        }
        let key = self.open_conn(pool_i, server_i, proto, slot, false, db)?;
        if let Some(d) = self.pools[pool_i].servers[server_i]
            .db_conns
            .iter_mut()
            .find(|d| d.db == db)
        {
            d.conns[proto][slot] = Some(key);
        }
        Ok(key)
    }

    /// Close per-database connections nobody used for `db_idle_timeout` and with nothing in
    /// flight.
    pub(super) fn close_idle_db_conns(&mut self) {
        let now = self.now;
        let mut retire = Vec::new();
        let conns = &self.conns;
        for pool in &mut self.pools {
            let idle = Duration::from_millis(pool.cfg.db_idle_timeout_ms);
            if idle.is_zero() {
                continue;
            }
            for srv in &mut pool.servers {
                srv.db_conns.retain(|d| {
                    let mut open = d.conns.iter().flatten().flatten();
                    // Something still in flight: a later command must not overtake it on a
                    // new connection.
                    if now.duration_since(d.used) < idle
                        || open.any(|&ck| conns.get(ck).is_some_and(|c| !c.inflight.is_empty()))
                    {
                        return true;
                    }
                    retire.extend(d.conns.iter().flatten().flatten().copied());
                    false
                });
            }
        }
        for ck in retire {
            self.retire_conn(ck);
        }
    }

    /// Open a connection to a server (non-blocking connect) with its handshake queued.
    /// `private`: lent to one client at a time (not in the server's shared list).
    pub(super) fn open_conn(
        &mut self,
        pool_i: usize,
        server_i: usize,
        proto: usize,
        slot: usize,
        private: bool,
        db: u32,
    ) -> Result<usize, String> {
        let now = self.now;
        let pool = &mut self.pools[pool_i];
        let connect_timeout = Duration::from_millis(pool.cfg.connect_timeout_ms.max(1));
        let srv = &mut pool.servers[server_i];
        if srv.is_down(now) {
            return Err(srv.down_error());
        }
        let addr = srv.addr;
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("connect failed: {e}");
                warn!("b{server_i}({}) {addr} {msg}", srv.name);
                srv.connect_failed(now, &msg);
                return Err(srv.down_error());
            }
        };
        let _ = stream.set_nodelay(true);
        if pool.cfg.tcpkeepalive {
            set_keepalive(&stream);
        }
        let stream = match &pool.tls_client {
            Some(cfg) => {
                let name = pool.cfg.backend_tls_name(&srv.host);
                match crate::tls::TlsStream::client(stream, cfg.clone(), name) {
                    Ok(t) => Stream::Tls(Box::new(t)),
                    Err(e) => {
                        let msg = format!("TLS setup failed: {e}");
                        srv.connect_failed(now, &msg);
                        return Err(srv.down_error());
                    }
                }
            }
            None => Stream::Tcp(stream),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Conn {
            stream,
            pool: pool_i,
            server: server_i,
            proto,
            slot,
            db,
            hold: None,
            state: ConnState::Connecting,
            connect_deadline: now + connect_timeout,
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: ReadBuf::default(),
            scanner: ReplyScanner::default(),
            inflight: Default::default(),
            orphans: 0,
            retiring: false,
            private,
            owner: None,
            returning: false,
            blocked_keys: Vec::new(),
            backend_id: 0,
            pubsub: false,
            reqs: Default::default(),
            track: pool.cfg.cluster,
            writable: false,
            dirty: false,
        };
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            Kind::Conn(key).token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let msg = format!("register failed: {e}");
            srv.connect_failed(now, &msg);
            return Err(srv.down_error());
        }
        // Handshake, pipelined ahead of the first client request: protocol, credentials,
        // database. Replies to these are checked and swallowed (INTERNAL).
        let internal = Pending::internal(Owner::Handshake, self.now_us);
        // Credentials: the server line's user=/password=, else the pool's backend_username /
        // backend_password, else nutcracker's redis_auth (password only).
        let server_cfg = pool
            .order
            .iter()
            .position(|&s| s == server_i)
            .and_then(|pos| pool.cfg.servers.get(pos));
        let auth = pool.cfg.backend_auth(server_cfg);
        let password = auth.map(|(_, pw)| pw);
        let username = auth.and_then(|(u, _)| u).unwrap_or("default");
        if proto == 1 {
            match &password {
                Some(pw) => resp::write_command(
                    &mut conn.wbuf,
                    [
                        &b"HELLO"[..],
                        b"3",
                        b"AUTH",
                        username.as_bytes(),
                        pw.as_bytes(),
                    ],
                ),
                None => conn.wbuf.extend_from_slice(HELLO3),
            }
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        } else if let Some(pw) = &password {
            if username == "default" {
                resp::write_command(&mut conn.wbuf, [&b"AUTH"[..], pw.as_bytes()]);
            } else {
                resp::write_command(
                    &mut conn.wbuf,
                    [&b"AUTH"[..], username.as_bytes(), pw.as_bytes()],
                );
            }
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        }
        if srv.readonly {
            conn.wbuf.extend_from_slice(b"*1\r\n$8\r\nREADONLY\r\n");
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        }
        if pool.cfg.redis_db != 0 {
            let db = pool.cfg.redis_db.to_string();
            resp::write_command(&mut conn.wbuf, [&b"SELECT"[..], db.as_bytes()]);
            conn.inflight.push_back(internal);
            if conn.track {
                conn.reqs.push_back(Box::default());
            }
        }
        if db != pool.cfg.redis_db {
            queue_select(&mut conn, db, self.now_us);
        }
        srv.stats.connections += 1;
        if private {
            srv.private_open += 1;
        }
        debug!(
            "b{server_i}({}) connecting to {addr} (resp{}{})",
            srv.name,
            proto + 2,
            if private { ", private" } else { "" }
        );
        entry.insert(conn);
        Ok(key)
    }

    /// Queue `bytes` (one complete request) on a connection of the server at config position
    /// `pos`, for chain slot `seq` (part `part`) of client `k`. Err: the server cannot take it
    /// (message for the client).
    pub(super) fn send(
        &mut self,
        k: usize,
        pos: usize,
        bytes: &[u8],
        seq: u64,
        part: u32,
    ) -> Result<(), String> {
        let Some(c) = self.clients.get(k) else {
            return Ok(());
        };
        let (pool_i, proto, id, db) = (c.pool, c.resp3 as usize, c.id, c.db());
        let Some(&server) = self.pools[pool_i].order.get(pos) else {
            return Err("ERR no such backend (the configuration changed)".into());
        };
        let ck = match held_conn(c, &self.conns, server) {
            Some(ck) => ck,
            None => self.conn_for(pool_i, server, proto, Some(id), db)?,
        };
        let mut p = Pending::new(Owner::Client { key: k, id }, seq, part, false, self.now_us);
        if self.hot_tag != 0 {
            p.hot = self.hot_tag;
            if let Some(c) = self.pools[pool_i].cache.as_mut() {
                c.write_begin(p.hot);
            }
        }
        self.push_request(ck, p, bytes);
        Ok(())
    }

    /// The connection client `k` uses for the server in slot `server`, the same for every
    /// command so its commands reach that backend in its order: its private connection when
    /// that is to this server (WATCH), else, for a RESP3 subscriber, its subscription connection
    /// to it (a message its own PUBLISH causes then arrives before the PUBLISH's reply, as on
    /// one Redis), else its pinned shared connection.
    pub(super) fn client_conn(&mut self, k: usize, server: usize) -> Result<usize, String> {
        let Some(c) = self.clients.get(k) else {
            return Err("ERR client gone".into());
        };
        if let Some(ck) = held_conn(c, &self.conns, server) {
            return Ok(ck);
        }
        let (pool_i, proto, id, db) = (c.pool, c.resp3 as usize, c.id, c.db());
        self.conn_for(pool_i, server, proto, Some(id), db)
    }

    /// The owner of a reply client `k` waits for (Swallow when the client is gone).
    pub(super) fn owner_of(&self, k: usize) -> Owner {
        match self.clients.get(k) {
            Some(c) => Owner::Client { key: k, id: c.id },
            None => Owner::Swallow,
        }
    }

    /// Queue `bytes` on connection `ck` for client `k`'s slot `seq`.
    pub(super) fn send_on(
        &mut self,
        ck: usize,
        k: usize,
        bytes: &[u8],
        seq: u64,
        part: u32,
        blocking: bool,
    ) {
        let mut p = Pending::new(self.owner_of(k), seq, part, blocking, self.now_us);
        // A write of a pool with a hot-key cache (a blocking one): held until its reply, unless
        // it names several keys (a blocked BLMOVE must not stop every fetch of the pool).
        if self.hot_tag != 0 && !(blocking && self.hot_tag == crate::hotcache::ANY_KEY) {
            p.hot = self.hot_tag;
            if let Some(c) = self.conns.get(ck).map(|c| c.pool) {
                if let Some(cache) = self.pools[c].cache.as_mut() {
                    cache.write_begin(p.hot);
                }
            }
        }
        self.push_request(ck, p, bytes);
    }

    /// Queue a proxy-made request on connection `ck` whose reply nobody waits for.
    pub(super) fn send_swallowed(&mut self, ck: usize, bytes: &[u8]) {
        let p = Pending::internal(Owner::Swallow, self.now_us);
        self.push_request(ck, p, bytes);
    }

    /// Queue one request and its in-flight entry on connection `ck`.
    pub(super) fn push_request(&mut self, ck: usize, p: Pending, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(ck) else {
            return;
        };
        conn.wbuf.extend_from_slice(bytes);
        conn.inflight.push_back(p);
        if conn.track {
            conn.reqs.push_back(bytes.into());
        }
        let st = &mut self.pools[conn.pool].servers[conn.server].stats;
        st.requests += 1;
        st.request_bytes += bytes.len() as u64;
        self.mark_conn(ck);
    }

    // ----- private connections, blocking commands, transactions ---------------------------
    //
    // Private connections are named by the server's slot (its stable identity), never by its
    // config position, so a reload that shifts positions cannot redirect them. A connection is
    // lent only when idle (no owner, nothing in flight); one given back while busy joins the
    // idle list when its last reply arrives (`park_private`).

    /// `closed`: the event says the peer closed (or errored): read to the end even after a
    /// short read, since no further edge will come.
    pub(super) fn conn_event(&mut self, k: usize, readable: bool, writable: bool, closed: bool) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if writable {
            conn.writable = true;
            if conn.state == ConnState::Connecting {
                let Some(tcp) = conn.stream.tcp() else {
                    return;
                };
                match tcp.take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => {
                        return self.conn_failed(k, &format!("connect failed: {e}"), Fail::Down);
                    }
                }
                match tcp.peer_addr() {
                    Ok(_) => {
                        conn.state = ConnState::Up;
                        // With a handshake queued, the server counts as up once it answers.
                        let handshake = conn
                            .inflight
                            .front()
                            .is_some_and(|p| p.owner == Owner::Handshake);
                        if !handshake {
                            self.pools[conn.pool].servers[conn.server].connected(conn.server);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => {
                        return self.conn_failed(k, &format!("connect failed: {e}"), Fail::Down);
                    }
                }
            }
            self.mark_conn(k);
        }
        if readable {
            self.conn_readable(k, closed);
        }
    }

    pub(super) fn conn_readable(&mut self, k: usize, closed: bool) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            if conn.state == ConnState::Connecting {
                return;
            }
            let n = match conn.rbuf.read_from(&mut conn.stream, 16 * 1024) {
                Ok(0) => {
                    let how = if conn.inflight.is_empty() {
                        Fail::Idle
                    } else {
                        Fail::Eof
                    };
                    return self.conn_failed(k, "connection closed by the backend", how);
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.conn_failed(k, &format!("read error: {e}"), Fail::Broken),
            };
            let short = n < 16 * 1024;
            if let Err((e, how)) = self.conn_replies(k) {
                return self.conn_failed(k, &e, how);
            }
            if short && !closed {
                // Edge-triggered: whatever arrives after this read (bytes or the peer's close)
                // announces itself with a new event.
                return;
            }
        }
        // Budget used with data possibly still waiting: serve it next tick.
        if !self.again_conns.contains(&k) {
            self.again_conns.push(k);
        }
    }

    /// Dispatch every complete reply in the connection's buffer: each is classified by
    /// `route` (a pub/sub message, a stray push, or the reply of the front in-flight entry,
    /// whose typed owner says where it goes) and then acted on.
    #[inline(always)]
    pub(super) fn conn_replies(&mut self, k: usize) -> Result<(), (String, Fail)> {
        let Some(conn) = self.conns.get_mut(k) else {
            return Ok(());
        };
        // Taken out so replies can be handed to clients while borrowing it.
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut result = Ok(());
        loop {
            let data = rbuf.filled();
            if data.is_empty() {
                break;
            }
            let Some(conn) = self.conns.get_mut(k) else {
                break;
            };
            let n = match conn.scanner.scan(data) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    result = Err((format!("protocol error from backend: {e}"), Fail::Broken));
                    break;
                }
            };
            let reply = &data[..n];
            let (p, req) = match route(conn, reply) {
                Route::Message(owner) => {
                    // Out of band, to the subscriber (if it is still subscribed), in arrival
                    // order; never a reply to a request.
                    let msg = reply.to_vec();
                    rbuf.consume(n);
                    if let Some((owner, id)) = owner {
                        self.push_to(owner, id, &msg);
                    }
                    continue;
                }
                Route::Stray => {
                    // On a tracking connection a push is an invalidation; elsewhere dropped.
                    let pool_i = conn.pool;
                    if self.pools[pool_i].cache.is_some() {
                        let push = reply.to_vec();
                        rbuf.consume(n);
                        self.hot_push(k, pool_i, &push);
                    } else {
                        rbuf.consume(n);
                    }
                    continue;
                }
                Route::Unexpected => {
                    result = Err(("reply to no request".to_string(), Fail::Broken));
                    break;
                }
                Route::Reply(p, req) => (p, req),
            };
            let conn = if p.hot != 0 {
                // A write's reply (hot-key cache): its key may be fetched again.
                let pool_i = conn.pool;
                self.hot_write_end(pool_i, p.hot);
                match self.conns.get_mut(k) {
                    Some(conn) => conn,
                    None => break,
                }
            } else {
                conn
            };
            let srv = &mut self.pools[conn.pool].servers[conn.server];
            srv.stats.replies += 1;
            srv.stats.response_bytes += n as u64;
            srv.failure_count = 0;
            match p.owner {
                Owner::Handshake => {
                    if matches!(reply.first(), Some(b'-') | Some(b'!')) {
                        result = Err((
                            format!(
                                "handshake refused: {}",
                                String::from_utf8_lossy(reply).trim_end()
                            ),
                            Fail::Down,
                        ));
                        break;
                    }
                    if conn
                        .inflight
                        .front()
                        .is_none_or(|p| p.owner != Owner::Handshake)
                    {
                        srv.connected(conn.server);
                    }
                }
                Owner::Refresh => {
                    let (pool_i, host) = (conn.pool, srv.host.clone());
                    let reply = reply.to_vec();
                    rbuf.consume(n);
                    self.cluster_slots_reply(pool_i, &host, &reply);
                    continue;
                }
                Owner::Select => {
                    if !conn.inflight.iter().any(|p| p.owner == Owner::Select) {
                        // The last SELECT is in: what waited behind it may go.
                        conn.hold = None;
                        if !conn.dirty && conn.pending_output() > 0 {
                            conn.dirty = true;
                            self.dirty_conns.push(k);
                        }
                    }
                    if matches!(reply.first(), Some(b'-') | Some(b'!')) {
                        // What follows was meant for that database: it fails, never runs in
                        // another one. The backend is fine (its `databases` is smaller than
                        // the pool's).
                        result = Err((
                            format!(
                                "refused SELECT {}: {}",
                                conn.db,
                                String::from_utf8_lossy(reply).trim_end()
                            ),
                            Fail::Local,
                        ));
                        break;
                    }
                }
                Owner::Swallow | Owner::Orphan => {}
                Owner::Move { .. } | Owner::Mover { .. } | Owner::Barrier { .. } => {
                    let reply = reply.to_vec();
                    rbuf.consume(n);
                    self.rebalance_reply(k, p, &reply);
                    continue;
                }
                Owner::BackendId => conn.backend_id = super::kill::backend_id_of(reply),
                Owner::Track { pool } => {
                    let reply = reply.to_vec();
                    rbuf.consume(n);
                    if let Err(e) = self.hot_reply(k, pool, p.part, &reply) {
                        result = Err((e, Fail::Local));
                        break;
                    }
                    continue;
                }
                Owner::Client { key, id } => {
                    if !p.blocking {
                        srv.stats.latency.record(since(self.now_us, p.sent));
                    }
                    // A private connection's request (blocking, WATCH) must not move to a
                    // shared connection: its client gets the redirection error instead.
                    // (Only cluster pools keep `req`: static pools skip the checks.)
                    if let Some(req) = req.filter(|_| {
                        !conn.private
                            && !p.blocking
                            && (reply.starts_with(b"-MOVED ") || reply.starts_with(b"-ASK "))
                    }) {
                        let (pool_i, host) = (conn.pool, srv.host.clone());
                        let reply = reply.to_vec();
                        rbuf.consume(n);
                        self.redirect(pool_i, &host, p, &req, &reply);
                        continue;
                    }
                    if p.confirm {
                        let reply = reply.to_vec();
                        rbuf.consume(n);
                        self.confirm(p, &reply);
                        continue;
                    }
                    self.deliver_to(key, Some(id), p.seq, p.part, reply);
                    if p.blocking {
                        self.unblock(key, id);
                    }
                }
            }
            rbuf.consume(n);
        }
        if let Some(conn) = self.conns.get_mut(k) {
            rbuf.shrink(64 * 1024);
            conn.rbuf = rbuf;
            if result.is_ok() && conn.inflight.is_empty() {
                if conn.retiring {
                    return Err(("retired by a reload".into(), Fail::Local));
                }
                if conn.returning {
                    self.park_private(k);
                }
            }
        }
        result
    }

    /// A connection broke, never came up, or is closed by the proxy: fail everything it
    /// carried, in order. Only `Down`, `Broken` and `Eof` count against its server.
    pub(super) fn conn_failed(&mut self, k: usize, why: &str, how: Fail) {
        let Some(mut conn) = self.conns.try_remove(k) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if self.pools[conn.pool].cache.is_some() {
            self.hot_conn_lost(k, conn.pool, conn.server);
        }
        let now = self.now;
        let srv = &mut self.pools[conn.pool].servers[conn.server];
        if !conn.private {
            if srv.conns[conn.proto].get(conn.slot) == Some(&Some(k)) {
                srv.conns[conn.proto][conn.slot] = None;
            } else if let Some(d) = srv.db_conns.iter_mut().find(|d| d.db == conn.db) {
                if d.conns[conn.proto].get(conn.slot) == Some(&Some(k)) {
                    d.conns[conn.proto][conn.slot] = None;
                }
            }
        }
        let how = if conn.state == ConnState::Connecting && how != Fail::Local {
            Fail::Down
        } else {
            how
        };
        match how {
            Fail::Down => {
                // Logged once per outage, not once per retry.
                if srv.connect_failures == 0 {
                    warn!("b{}({}) {} down: {why}", conn.server, srv.name, srv.addr);
                }
                srv.connect_failed(now, why);
            }
            Fail::Broken | Fail::Eof => {
                if how == Fail::Eof {
                    srv.stats.eof += 1;
                }
                // A corrupt stream is logged with the bytes around the error (the read buffer
                // is positioned at the failing reply).
                let around = conn
                    .scanner
                    .error_context(conn.rbuf.filled())
                    .map_or(String::new(), |c| format!("; bytes around it: {c}"));
                warn!("b{}({}) {} {why}{around}", conn.server, srv.name, srv.addr);
                srv.last_error = why.to_string();
                srv.stats.failures += 1;
            }
            Fail::Idle | Fail::Local => {
                debug!("b{}({}) {} {why}", conn.server, srv.name, srv.addr)
            }
        }
        if conn.private {
            srv.private_open = srv.private_open.saturating_sub(1);
            for list in &mut srv.idle_private {
                list.retain(|&x| x != k);
            }
        }
        let msg = format!("ERR backend {} ({}) {why}", srv.name, srv.addr);
        if let Some((owner, id)) = conn.owner {
            if let Some(c) = self.clients.get_mut(owner).filter(|c| c.id == id) {
                if c.private == Some(k) {
                    c.private = None;
                }
                // A WATCH on the lost connection is gone: the transaction must not run.
                if let Some(t) = c.txn.as_mut().filter(|t| t.watching) {
                    t.watching = false;
                    t.dirty = true;
                }
                if let Some(sub) = c.sub.as_mut() {
                    let before = sub.conns.len();
                    sub.conns.retain(|&(_, ck)| ck != k);
                    if sub.conns.len() != before && how != Fail::Local {
                        // Its subscriptions there are gone (backend restart, CLIENT KILL):
                        // like a Redis restart, the subscriber's connection closes once its
                        // replies are out, so its library reconnects and resubscribes.
                        debug!(
                            "c{owner}#{id} {} closed: subscription connection lost",
                            c.peer
                        );
                        c.closing = Closing::AfterReplies;
                    }
                }
            }
            self.maybe_finish(owner);
        }
        if matches!(how, Fail::Down | Fail::Broken | Fail::Eof) {
            self.pools[conn.pool].server_failed(conn.server, now);
            if let Some(c) = self.pools[conn.pool].cluster.as_mut() {
                // A node failed: a replica may be taking over its slots.
                c.wanted = true;
            }
        }
        if conn.private {
            self.rebalance_forget(conn.pool, k);
        }
        for p in conn.inflight.drain(..) {
            if p.hot != 0 {
                self.hot_write_end(conn.pool, p.hot);
            }
            let Some((key, id)) = p.client() else {
                if matches!(
                    p.owner,
                    Owner::Move { .. } | Owner::Mover { .. } | Owner::Barrier { .. }
                ) {
                    self.rebalance_lost(conn.pool, conn.server, p, &msg);
                }
                continue;
            };
            self.pools[conn.pool].servers[conn.server].stats.errors += 1;
            let mut e = Vec::with_capacity(msg.len() + 3);
            reply_error(&mut e, &msg);
            self.stats.errors += 1;
            if p.confirm {
                // A subscription request that will never be confirmed.
                if let Some(sub) = self
                    .clients
                    .get_mut(key)
                    .filter(|c| c.id == id)
                    .and_then(|c| c.sub.as_mut())
                {
                    sub.pending = sub.pending.saturating_sub(1);
                    sub.expect.remove(&(p.seq, p.part));
                }
            }
            self.deliver_to(key, Some(id), p.seq, p.part, &e);
            self.maybe_end_sub(key);
            if p.blocking {
                self.unblock(key, id);
            }
        }
    }

    // ----- timers -----------------------------------------------------------------------

    pub(super) fn flush_conn(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        conn.dirty = false;
        if conn.state != ConnState::Up || !conn.writable {
            return;
        }
        let end = conn.hold.unwrap_or(conn.wbuf.len());
        if let Err(e) = conn
            .stream
            .write_out(&conn.wbuf[..end], &mut conn.wpos, &mut conn.writable)
        {
            return self.conn_failed(k, &format!("write error: {e}"), Fail::Broken);
        }
        if !conn.writable {
            // Blocked (maybe on TLS records alone): the rest goes when the socket drains.
            return;
        }
        if conn.wpos == conn.wbuf.len() {
            if conn.hold.is_some() {
                conn.hold = Some(0);
            }
            conn.wbuf.clear();
            conn.wpos = 0;
            if conn.wbuf.capacity() > 1024 * 1024 {
                conn.wbuf = Vec::new();
            }
        }
    }

    /// A connection no longer wanted: close now when idle, else once its replies are in.
    pub(super) fn retire_conn(&mut self, k: usize) {
        if let Some(conn) = self.conns.get_mut(k) {
            if conn.inflight.is_empty() && conn.pending_output() == 0 {
                self.conn_failed(k, "retired by a reload", Fail::Local);
            } else {
                conn.retiring = true;
            }
        }
    }
}

/// Which of `n` shared connections to use: the client's pinned one (`pin`: its id), else
/// round robin (the proxy's own requests).
#[inline]
fn pick(rr: &mut usize, n: usize, pin: Option<u64>) -> usize {
    if n == 1 {
        0
    } else if let Some(id) = pin {
        (id % n as u64) as usize
    } else {
        *rr = rr.wrapping_add(1);
        *rr % n
    }
}

/// Queue `SELECT db` on a connection and record the database as the connection's; what is
/// queued after it waits (`Conn::hold`) until the backend accepts it.
pub(super) fn queue_select(conn: &mut Conn, db: u32, now_us: crate::clock::Micros) {
    let n = db.to_string();
    resp::write_command(&mut conn.wbuf, [&b"SELECT"[..], n.as_bytes()]);
    conn.inflight
        .push_back(Pending::internal(Owner::Select, now_us));
    if conn.track {
        conn.reqs.push_back(Box::default());
    }
    conn.db = db;
    conn.hold = Some(conn.wbuf.len());
}

/// The connection a client holds for `server`, if any (see `Proxy::client_conn`).
#[inline]
fn held_conn(c: &Client, conns: &Slab<Conn>, server: usize) -> Option<usize> {
    if let Some(ck) = c.private {
        if conns.get(ck).is_some_and(|cn| cn.server == server) {
            return Some(ck);
        }
    }
    match &c.sub {
        Some(sub) if c.resp3 => sub.conn_at(server),
        _ => None,
    }
}

/// What one complete reply read from a backend connection is.
pub(super) enum Route {
    /// A pub/sub message on a subscription connection, for its owner (client key, id).
    Message(Option<(usize, u64)>),
    /// A RESP3 push on a shared connection: no request of ours asked for it; dropped.
    Stray,
    /// The reply of the front in-flight entry (popped), with the request's bytes when the
    /// connection keeps them (cluster pools, to follow MOVED/ASK).
    Reply(Pending, Option<Box<[u8]>>),
    /// A reply with nothing in flight: the stream is out of step; the connection must close.
    Unexpected,
}

/// Classify one reply and pop what it answers (see `Route`).
#[inline]
pub(super) fn route(conn: &mut Conn, reply: &[u8]) -> Route {
    let q = Queue {
        inflight: &mut conn.inflight,
        reqs: &mut conn.reqs,
        track: conn.track,
        orphans: &mut conn.orphans,
    };
    classify(conn.pubsub, conn.proto == 1, conn.owner, q, reply)
}

/// What `classify` pops from: a connection's in-flight queue and what goes with it.
pub(super) struct Queue<'a> {
    pub inflight: &'a mut std::collections::VecDeque<Pending>,
    pub reqs: &'a mut std::collections::VecDeque<Box<[u8]>>,
    pub track: bool,
    pub orphans: &'a mut usize,
}

/// The routing decision, without sockets: `pubsub`, `resp3` and `owner` describe the
/// connection. On a RESP3 connection only a push is a message (a RESP3 subscriber's other
/// commands share it, and an array reply may start with "message").
#[inline]
pub(super) fn classify(
    pubsub: bool,
    resp3: bool,
    owner: Option<(usize, u64)>,
    q: Queue,
    reply: &[u8],
) -> Route {
    if pubsub {
        if is_message(reply) && (!resp3 || reply.first() == Some(&b'>')) {
            return Route::Message(owner);
        }
    } else if reply.first() == Some(&b'>') {
        return Route::Stray;
    }
    let Some(p) = q.inflight.pop_front() else {
        return Route::Unexpected;
    };
    let req = if q.track { q.reqs.pop_front() } else { None };
    *q.orphans = q.orphans.saturating_sub(1);
    Route::Reply(p, req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn client(key: usize, id: u64, seq: u64) -> Pending {
        Pending::new(Owner::Client { key, id }, seq, WHOLE, false, 0)
    }

    fn run(pubsub: bool, inflight: &mut VecDeque<Pending>, reply: &[u8]) -> Route {
        let mut reqs = VecDeque::new();
        let mut orphans = 0;
        let q = Queue {
            inflight,
            reqs: &mut reqs,
            track: false,
            orphans: &mut orphans,
        };
        classify(pubsub, false, Some((7, 70)), q, reply)
    }

    #[test]
    fn replies_go_to_the_front_entry_in_order() {
        let mut q: VecDeque<Pending> = [
            Pending::internal(Owner::Handshake, 0),
            client(1, 10, 0),
            client(2, 20, 5),
        ]
        .into();
        let owners: Vec<Owner> = (0..3)
            .map(|_| match run(false, &mut q, b"+OK\r\n") {
                Route::Reply(p, None) => p.owner,
                _ => panic!("not a reply"),
            })
            .collect();
        assert_eq!(
            owners,
            [
                Owner::Handshake,
                Owner::Client { key: 1, id: 10 },
                Owner::Client { key: 2, id: 20 }
            ]
        );
        assert!(matches!(run(false, &mut q, b"+OK\r\n"), Route::Unexpected));
    }

    #[test]
    fn pushes_on_shared_connections_are_stray_and_pop_nothing() {
        let mut q: VecDeque<Pending> = [client(1, 10, 0)].into();
        let push = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n";
        assert!(matches!(run(false, &mut q, push), Route::Stray));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn messages_on_subscription_connections_go_to_the_owner() {
        let mut q: VecDeque<Pending> = [client(7, 70, 3)].into();
        let msg = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n";
        assert!(matches!(
            run(true, &mut q, msg),
            Route::Message(Some((7, 70)))
        ));
        assert_eq!(q.len(), 1, "a message answers no request");
        // A confirmation is the reply of the front entry.
        let conf = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n";
        assert!(matches!(run(true, &mut q, conf), Route::Reply(p, _) if p.seq == 3));
    }

    #[test]
    fn orphans_are_counted_down_and_cluster_requests_kept() {
        let mut inflight: VecDeque<Pending> = [Pending::internal(Owner::Orphan, 0)].into();
        let mut reqs: VecDeque<Box<[u8]>> = [Box::from(&b"GET k"[..])].into();
        let mut orphans = 1;
        let q = Queue {
            inflight: &mut inflight,
            reqs: &mut reqs,
            track: true,
            orphans: &mut orphans,
        };
        match classify(false, false, None, q, b"$-1\r\n") {
            Route::Reply(p, Some(req)) => {
                assert_eq!(p.owner, Owner::Orphan);
                assert_eq!(&*req, b"GET k");
            }
            _ => panic!("not a reply"),
        }
        assert_eq!(orphans, 0);
        assert!(reqs.is_empty());
    }
}
