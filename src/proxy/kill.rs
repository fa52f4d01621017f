//! Commands that reach past a client's own requests: SCRIPT KILL and FUNCTION KILL (on
//! separate, new connections to every backend, since the shared ones wait behind the busy
//! script), CLIENT KILL (the proxy's own clients) and CLIENT UNBLOCK (a client blocked on its
//! private backend connection is unblocked by the backend itself).
//!
//! Invariants:
//! - Every answer goes through the caller's chain, in request order; a separate connection
//!   carries one request, for one part of the caller's slot, and closes once it is answered.
//! - A separate connection is never shared and never lent: nothing else waits behind it.
//! - CLIENT UNBLOCK acts on the backend's client (by the id its private connection reported),
//!   never by closing the connection: a reply the backend already sent (an element popped) is
//!   still delivered, so nothing is lost.

use super::*;
use crate::backend::Owner;

/// `CLIENT ID`, asked once on a private connection before its first blocking command.
const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";

/// `Conn::backend_id` before `CLIENT ID` was asked.
pub(super) const ID_UNKNOWN: u64 = 0;
/// `Conn::backend_id` while the answer to `CLIENT ID` is on its way.
pub(super) const ID_PENDING: u64 = u64::MAX;
/// `Conn::backend_id` when the backend refused `CLIENT ID` (renamed away, say).
pub(super) const ID_REFUSED: u64 = u64::MAX - 1;

/// The backend client id in a reply to `CLIENT ID` (`ID_REFUSED` when it is not an id).
pub(super) fn backend_id_of(reply: &[u8]) -> u64 {
    reply
        .strip_prefix(b":")
        .and_then(|r| r.strip_suffix(b"\r\n"))
        .and_then(router::parse_u64)
        .filter(|&id| id != ID_UNKNOWN && id < ID_REFUSED)
        .unwrap_or(ID_REFUSED)
}

/// Redis's client types (`getClientTypeByName`) as the proxy's clients can be: None for an
/// unknown name; Some(None) for master/replica (no proxy client is one).
fn client_type(name: &[u8]) -> Option<Option<bool>> {
    match name.to_ascii_lowercase().as_slice() {
        b"normal" => Some(Some(false)),
        b"pubsub" => Some(Some(true)),
        b"master" | b"slave" | b"replica" => Some(None),
        _ => None,
    }
}

/// What `CLIENT KILL` filters on (Redis 7.0's new form).
#[derive(Default)]
struct Filter {
    id: Option<u64>,
    addr: Option<Vec<u8>>,
    laddr: Option<Vec<u8>>,
    user: Option<Vec<u8>>,
    /// Some(pubsub?) or, for master/replica, a type no proxy client has.
    kind: Option<Option<bool>>,
    skipme: bool,
}

impl Proxy {
    /// Before a blocking command on private connection `ck`: learn the backend's client id of
    /// that connection (once per connection), for CLIENT UNBLOCK.
    pub(super) fn ask_backend_id(&mut self, ck: usize) {
        let Some(conn) = self.conns.get_mut(ck) else {
            return;
        };
        if conn.backend_id != ID_UNKNOWN {
            return;
        }
        conn.backend_id = ID_PENDING;
        let p = Pending::internal(Owner::BackendId, self.now_us);
        self.push_request(ck, p, CLIENT_ID);
    }

    /// Send `bytes` to the server in slot `slot` of pool `pool_i` on a new connection of its
    /// own, for part `part` of client `k`'s slot `seq`; the connection closes once answered.
    fn send_separate(
        &mut self,
        k: usize,
        pool_i: usize,
        slot: usize,
        bytes: &[u8],
        seq: u64,
        part: u32,
    ) {
        let default = self.pools[pool_i].cfg.redis_db;
        match self.open_conn(pool_i, slot, 0, 0, true, default) {
            Ok(ck) => {
                self.send_on(ck, k, bytes, seq, part, false);
                if let Some(conn) = self.conns.get_mut(ck) {
                    // Closed when its last reply is in (see `conn_replies`).
                    conn.retiring = true;
                }
            }
            Err(e) => self.fail_slot(k, seq, part, &e),
        }
    }

    /// SCRIPT KILL / FUNCTION KILL: to every backend of the pool on a separate connection,
    /// merged as one Redis answers (`Merge::Kill`).
    pub(super) fn script_kill(&mut self, k: usize, frame: &[u8], args: &Args) {
        let Some(pool_i) = self.clients.get(k).map(|c| c.pool) else {
            return;
        };
        let pool = &self.pools[pool_i];
        let slots: Vec<usize> = pool.order.clone();
        if slots.is_empty() {
            // No backend (a cluster pool before its first slot map): nothing runs.
            return self.reply_err(k, "NOTBUSY No scripts in execution right now.");
        }
        let combine = Combine::Merge {
            merge: Merge::Kill,
            names: pool.names.clone(),
        };
        let Some(seq) = self.push_multi(k, slots.len(), combine) else {
            return;
        };
        let bytes = encode_args(args, frame, 0..args.len());
        for (part, slot) in slots.into_iter().enumerate() {
            self.send_separate(k, pool_i, slot, &bytes, seq, part as u32);
        }
    }

    /// CLIENT KILL addr:port | CLIENT KILL [ID id] [ADDR a] [LADDR a] [USER u] [TYPE t]
    /// [SKIPME yes|no]: Redis 7.0's parsing, errors and replies, over the proxy's clients.
    pub(super) fn client_kill(&mut self, k: usize, frame: &[u8], args: &Args) {
        let argc = args.len();
        let arg = |i: usize| args.get(frame, i);
        let Some(me) = self.clients.get(k).map(|c| c.id) else {
            return;
        };
        let old_form = argc == 3;
        let mut f = Filter {
            skipme: true,
            ..Filter::default()
        };
        if old_form {
            f.addr = Some(arg(2).to_vec());
            f.skipme = false;
        } else if !argc.is_multiple_of(2) {
            return self.reply_err(k, "ERR syntax error");
        } else {
            let mut i = 2;
            while i + 1 < argc {
                let (opt, val) = (arg(i).to_ascii_uppercase(), arg(i + 1));
                match opt.as_slice() {
                    b"ID" => match router::parse_i64(val) {
                        Some(id) if id >= 1 => f.id = Some(id as u64),
                        _ => return self.reply_err(k, "ERR client-id should be greater than 0"),
                    },
                    b"TYPE" => match client_type(val) {
                        Some(t) => f.kind = Some(t),
                        None => {
                            let v = String::from_utf8_lossy(val);
                            return self.reply_err(k, &format!("ERR Unknown client type '{v}'"));
                        }
                    },
                    b"ADDR" => f.addr = Some(val.to_vec()),
                    b"LADDR" => f.laddr = Some(val.to_vec()),
                    b"USER" => {
                        let known = self
                            .clients
                            .get(k)
                            .is_some_and(|c| self.pools[c.pool].users.exists(val));
                        if !known {
                            let v = String::from_utf8_lossy(val);
                            return self.reply_err(k, &format!("ERR No such user '{v}'"));
                        }
                        f.user = Some(val.to_vec());
                    }
                    b"SKIPME" => {
                        if val.eq_ignore_ascii_case(b"yes") {
                            f.skipme = true;
                        } else if val.eq_ignore_ascii_case(b"no") {
                            f.skipme = false;
                        } else {
                            return self.reply_err(k, "ERR syntax error");
                        }
                    }
                    _ => return self.reply_err(k, "ERR syntax error"),
                }
                i += 2;
            }
        }
        let mut victims = Vec::new();
        for (key, c) in self.clients.iter() {
            if c.closing == Closing::Now || (f.skipme && c.id == me) {
                continue;
            }
            let pool = &self.pools[c.pool];
            let (addr, laddr) = super::builtin::client_addrs(c, pool);
            let user = c
                .meta
                .as_ref()
                .and_then(|m| m.user.as_deref())
                .unwrap_or(b"default");
            let hit = f.id.is_none_or(|id| id == c.id)
                && f.addr.as_deref().is_none_or(|a| a == addr.as_bytes())
                && f.laddr.as_deref().is_none_or(|a| a == laddr.as_bytes())
                && f.user.as_deref().is_none_or(|u| u == user)
                && f.kind.is_none_or(|t| t == Some(c.subscribed()));
            if hit {
                victims.push(key);
            }
        }
        let n = victims.len();
        let mut out = Vec::new();
        if old_form {
            if n == 0 {
                return self.reply_err(k, "ERR No such client");
            }
            resp::write_simple(&mut out, b"OK");
        } else {
            resp::write_int(&mut out, n as i64);
        }
        self.reply(k, &out);
        for key in victims {
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            if key == k {
                // Like Redis: the caller gets its reply, then its connection closes.
                c.closing = Closing::AfterReplies;
                self.maybe_finish(k);
            } else {
                debug!("c{key}#{} {} closed by CLIENT KILL", c.id, c.peer);
                c.closing = Closing::Now;
                self.closing.push(key);
            }
        }
    }

    /// Redis's answer to a CLIENT subcommand given too many arguments (its own arity allows
    /// them, the subcommand does not).
    pub(super) fn client_syntax_error(&mut self, k: usize, frame: &[u8], args: &Args) {
        let sub = String::from_utf8_lossy(args.get(frame, 1));
        self.reply_err(
            k,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
            ),
        );
    }

    /// CLIENT UNBLOCK id [TIMEOUT|ERROR]: a proxy client blocked on its private connection is
    /// unblocked by its backend (`CLIENT UNBLOCK <backend id>` on a separate connection), so
    /// it gets Redis's own timeout reply or `-UNBLOCKED` error; the reply is the backend's.
    pub(super) fn client_unblock(&mut self, k: usize, frame: &[u8], args: &Args) {
        let argc = args.len();
        if argc > 4 {
            return self.client_syntax_error(k, frame, args);
        }
        let reason: &[u8] = if argc == 4 {
            let r = args.get(frame, 3);
            if r.eq_ignore_ascii_case(b"TIMEOUT") {
                b"TIMEOUT"
            } else if r.eq_ignore_ascii_case(b"ERROR") {
                b"ERROR"
            } else {
                return self.reply_err(k, "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
            }
        } else {
            b"TIMEOUT"
        };
        let Some(id) = router::parse_i64(args.get(frame, 2)) else {
            return self.reply_err(k, "ERR value is not an integer or out of range");
        };
        let target = self
            .clients
            .iter()
            .find(|(_, c)| c.id as i64 == id && c.blocked)
            .and_then(|(_, c)| c.private)
            .and_then(|ck| self.conns.get(ck))
            .filter(|cn| !matches!(cn.backend_id, ID_UNKNOWN | ID_PENDING | ID_REFUSED))
            .map(|cn| (cn.pool, cn.server, cn.backend_id));
        let Some((tpool, slot, bid)) = target else {
            return self.reply(k, b":0\r\n");
        };
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let seq = c.chain.push(Slot::Waiting, self.cur);
        let bid = bid.to_string();
        let mut req = Vec::new();
        resp::write_command(
            &mut req,
            [&b"CLIENT"[..], b"UNBLOCK", bid.as_bytes(), reason],
        );
        self.send_separate(k, tpool, slot, &req, seq, WHOLE);
    }
}
