//! Pub/sub: (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE on private connections, confirmations counted
//! in request order, messages delivered through the chain, and subscriptions that follow their
//! channel when a reload moves it.
//!
//! Invariants:
//! - A channel lives on the server its name hashes to (the ring, or a cluster's slot map for
//!   shard channels); patterns on every server. `Sub::home` remembers where each channel is,
//!   by server slot.
//! - Subscribe mode follows request order: the sets change when a request is read, so a
//!   command after the last UNSUBSCRIBE is not refused and a message sent before an
//!   UNSUBSCRIBE was processed never reaches a client that left.
//! - A subscriber whose subscription connection is lost (backend restart, CLIENT KILL) is
//!   closed once its replies are out, as a Redis restart would, so its library resubscribes.

use super::*;

impl Proxy {
    /// Queue a (un)subscription whose reply is a confirmation for client `k`'s slot `seq`.
    fn send_confirmed(&mut self, ck: usize, k: usize, req: &[u8], seq: u64, part: u32) {
        let mut p = Pending::new(self.owner_of(k), seq, part, false, self.now_us);
        p.confirm = true;
        self.push_request(ck, p, req);
    }

    /// A private connection for client `k`'s subscriptions on the server in slot `slot`.
    pub(super) fn pubsub_conn(&mut self, k: usize, slot: usize) -> Result<usize, String> {
        if let Some(ck) = self
            .clients
            .get(k)
            .and_then(|c| c.sub.as_ref())
            .and_then(|s| s.conn_at(slot))
        {
            return Ok(ck);
        }
        // A RESP3 client's private connection to this server (WATCH, blocking) becomes its
        // subscription connection too: one connection per server keeps its order.
        let private = self
            .clients
            .get(k)
            .filter(|c| c.resp3)
            .and_then(|c| c.private)
            .filter(|&ck| self.conns.get(ck).is_some_and(|cn| cn.server == slot));
        if let Some(ck) = private {
            if let Some(conn) = self.conns.get_mut(ck) {
                conn.pubsub = true;
            }
            if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut()) {
                sub.conns.push((slot, ck));
            }
            return Ok(ck);
        }
        // Borrow through the same pool as blocking commands, without disturbing `private`.
        let held = self.clients.get_mut(k).and_then(|c| c.private.take());
        let got = self.acquire_private(k, slot);
        if let Some(c) = self.clients.get_mut(k) {
            c.private = held;
        }
        let ck = got?;
        if let Some(conn) = self.conns.get_mut(ck) {
            conn.pubsub = true;
        }
        if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut()) {
            sub.conns.push((slot, ck));
        }
        Ok(ck)
    }

    /// (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE. Channels live on the backend their name hashes
    /// to; patterns on every backend. Each channel or pattern is one part of one chain slot, so
    /// confirmations come back in request order; a pattern's confirmation is taken from
    /// backend 0 and the others' are swallowed.
    pub(super) fn pubsub_cmd(&mut self, k: usize, spec: &'static Spec, frame: &[u8], args: &Args) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let pool_i = c.pool;
        let name = spec.name;
        let pattern = name.starts_with('P');
        let unsub = name.contains("UNSUB");
        // Subscriptions live on private connections: the client's next command (a PUBLISH
        // under RESP3, a GET after the last UNSUBSCRIBE) waits for the confirmations.
        c.fence = true;
        let mut names: Vec<Vec<u8>> = (1..args.len())
            .map(|i| args.get(frame, i).to_vec())
            .collect();
        if unsub && names.is_empty() {
            if let Some(sub) = c.sub.as_ref() {
                let set = match name {
                    "UNSUBSCRIBE" => &sub.channels,
                    "PUNSUBSCRIBE" => &sub.patterns,
                    _ => &sub.shard,
                };
                names = set.iter().cloned().collect();
                names.sort();
            }
            if names.is_empty() {
                // Nothing to leave: Redis's one confirmation with a nil name.
                let mut out = Vec::new();
                let kind = name.to_ascii_lowercase();
                write_push_len(&mut out, 3, c.resp3);
                resp::write_bulk(&mut out, kind.as_bytes());
                resp::write_nil(&mut out, c.resp3);
                let count = c.sub.as_ref().map_or(0, |s| {
                    if name == "SUNSUBSCRIBE" {
                        s.shard.len()
                    } else {
                        s.channels.len() + s.patterns.len()
                    }
                });
                resp::write_int(&mut out, count as i64);
                self.reply(k, &out);
                self.maybe_end_sub(k);
                return;
            }
        }
        if !unsub {
            c.sub.get_or_insert_with(Default::default);
        }
        let nparts = names.len();
        let seq = c.chain.push(
            Slot::Multi(Box::new(Multi::new(nparts, Combine::Concat))),
            self.cur,
        );
        if let Some(sub) = c.sub.as_mut() {
            sub.pending += nparts;
            // The counts the confirmations will report, in request order.
            for (part, ch) in names.iter().enumerate() {
                let set = match name {
                    "SUBSCRIBE" | "UNSUBSCRIBE" => &mut sub.channels,
                    "PSUBSCRIBE" | "PUNSUBSCRIBE" => &mut sub.patterns,
                    _ => &mut sub.shard,
                };
                if unsub {
                    set.remove(ch);
                } else if set.insert(ch.clone()) {
                    // Taken back if the backend refuses it.
                    sub.adding.insert((seq, part as u32), ch.clone());
                }
                let count = if matches!(name, "SSUBSCRIBE" | "SUNSUBSCRIBE") {
                    sub.shard.len()
                } else {
                    sub.channels.len() + sub.patterns.len()
                };
                sub.expect.insert((seq, part as u32), count);
            }
        }
        let slots = self.pools[pool_i].order.clone();
        for (part, ch) in names.iter().enumerate() {
            let req = {
                let mut r = Vec::with_capacity(ch.len() + 32);
                resp::write_command(&mut r, [name.as_bytes(), ch.as_slice()]);
                r
            };
            let part = part as u32;
            if pattern || keyevent(name, ch) {
                // On every server; the first one's confirmation answers the client.
                for (i, &slot) in slots.iter().enumerate() {
                    let ck = if unsub {
                        self.clients
                            .get(k)
                            .and_then(|c| c.sub.as_ref())
                            .and_then(|s| s.conn_at(slot))
                            .ok_or_else(String::new)
                    } else {
                        self.pubsub_conn(k, slot)
                    };
                    match (ck, i) {
                        (Ok(ck), 0) => self.send_confirmed(ck, k, &req, seq, part),
                        (Ok(ck), _) => self.send_swallowed(ck, &req),
                        (Err(_), 0) if unsub => self.local_confirm(k, seq, part, name, ch),
                        (Err(e), 0) => self.fail_sub_part(k, seq, part, &e, name, ch),
                        (Err(e), _) => {
                            if !e.is_empty() {
                                warn!("c{k} pattern subscription on backend {i} failed: {e}");
                            }
                        }
                    }
                }
            } else {
                // Where the channel's name hashes to: the ring, or a cluster's slot map (a
                // shard channel must be on its slot's master).
                let Some(slot) = self.pools[pool_i].owner_slot(channel_key(ch)) else {
                    self.fail_sub_part(
                        k,
                        seq,
                        part,
                        "ERR no backend available for this channel",
                        name,
                        ch,
                    );
                    continue;
                };
                let shard = matches!(name, "SSUBSCRIBE" | "SUNSUBSCRIBE");
                let ck = if unsub {
                    self.clients
                        .get_mut(k)
                        .and_then(|c| c.sub.as_mut())
                        .and_then(|s| s.leave(shard, ch, slot))
                        .ok_or_else(String::new)
                } else {
                    self.pubsub_conn(k, slot)
                };
                match ck {
                    Ok(ck) => {
                        if !unsub {
                            if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut())
                            {
                                sub.home.insert((shard, ch.clone()), slot);
                            }
                        }
                        self.send_confirmed(ck, k, &req, seq, part)
                    }
                    Err(_) if unsub => self.local_confirm(k, seq, part, name, ch),
                    Err(e) => self.fail_sub_part(k, seq, part, &e, name, ch),
                }
            }
        }
    }

    /// A (un)subscription that could not be sent: its error in place of the confirmation, and
    /// a subscription that did not happen leaves the client's set.
    pub(super) fn fail_sub_part(
        &mut self,
        k: usize,
        seq: u64,
        part: u32,
        msg: &str,
        name: &str,
        ch: &[u8],
    ) {
        if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut()) {
            sub.pending = sub.pending.saturating_sub(1);
            sub.expect.remove(&(seq, part));
            match name {
                "SUBSCRIBE" => {
                    sub.channels.remove(ch);
                }
                "PSUBSCRIBE" => {
                    sub.patterns.remove(ch);
                }
                "SSUBSCRIBE" => {
                    sub.shard.remove(ch);
                }
                _ => {}
            }
        }
        self.fail_slot(k, seq, part, msg);
        self.maybe_end_sub(k);
    }

    /// Confirm an unsubscribe the backends need not hear about (not subscribed there).
    pub(super) fn local_confirm(&mut self, k: usize, seq: u64, part: u32, name: &str, ch: &[u8]) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let resp3 = c.resp3;
        let mut out = Vec::new();
        write_push_len(&mut out, 3, resp3);
        resp::write_bulk(&mut out, name.to_ascii_lowercase().as_bytes());
        resp::write_bulk(&mut out, ch);
        let mut count = 0;
        if let Some(sub) = c.sub.as_mut() {
            sub.pending = sub.pending.saturating_sub(1);
            count = sub.expect.remove(&(seq, part)).unwrap_or(0);
        }
        resp::write_int(&mut out, count as i64);
        self.deliver_to(k, None, seq, part, &out);
        self.maybe_end_sub(k);
    }

    /// A (un)subscribe confirmation from a backend: track the client's subscriptions and
    /// answer with its total count (a backend only knows its own share).
    pub(super) fn confirm(&mut self, p: Pending, reply: &[u8]) {
        let Some((key, id)) = p.client() else {
            return;
        };
        let Some(c) = self.clients.get_mut(key).filter(|c| c.id == id) else {
            return;
        };
        let resp3 = c.resp3;
        let mut out = Vec::new();
        if let (Some(sub), Some(b'-' | b'!')) = (c.sub.as_mut(), reply.first()) {
            // Refused (e.g. -MOVED for a shard channel): the subscription did not happen.
            sub.pending = sub.pending.saturating_sub(1);
            sub.expect.remove(&(p.seq, p.part));
            if let Some(ch) = sub.adding.remove(&(p.seq, p.part)) {
                sub.channels.remove(&ch);
                sub.patterns.remove(&ch);
                sub.shard.remove(&ch);
            }
        } else if let (Some(sub), Ok(Some((Reply::Array(items) | Reply::Push(items), _)))) =
            (c.sub.as_mut(), resp::parse_reply(reply))
        {
            sub.pending = sub.pending.saturating_sub(1);
            sub.adding.remove(&(p.seq, p.part));
            let expected = sub.expect.remove(&(p.seq, p.part));
            if let (Some(Reply::Bulk(kind)), Some(Reply::Bulk(ch)), Some(count)) =
                (items.first(), items.get(1), expected)
            {
                write_push_len(&mut out, 3, resp3);
                resp::write_bulk(&mut out, kind);
                resp::write_bulk(&mut out, ch);
                resp::write_int(&mut out, count as i64);
            }
        }
        if out.is_empty() {
            out.extend_from_slice(reply);
        }
        self.deliver_to(key, Some(id), p.seq, p.part, &out);
        self.maybe_end_sub(key);
    }

    /// A message for a subscriber: through its chain, after whatever it is waiting for.
    /// Only messages of channels/patterns the client is still subscribed to are delivered: the
    /// subscription sets change when an (un)subscribe is read, so a message a backend sent
    /// before processing an UNSUBSCRIBE never reaches a client that has left subscribe mode.
    pub(super) fn push_to(&mut self, k: usize, id: u64, msg: &[u8]) {
        let Some(sub) = self
            .clients
            .get(k)
            .filter(|c| c.id == id)
            .and_then(|c| c.sub.as_ref())
        else {
            return;
        };
        let wanted = match resp::parse_reply(msg) {
            Ok(Some((Reply::Array(items) | Reply::Push(items), _))) => {
                match (items.first(), items.get(1)) {
                    (Some(Reply::Bulk(b"message")), Some(Reply::Bulk(ch))) => {
                        sub.channels.contains(*ch)
                    }
                    (Some(Reply::Bulk(b"pmessage")), Some(Reply::Bulk(pat))) => {
                        sub.patterns.contains(*pat)
                    }
                    (Some(Reply::Bulk(b"smessage")), Some(Reply::Bulk(ch))) => {
                        sub.shard.contains(*ch)
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if wanted {
            // Not a command's reply: no command stats for it.
            self.reply_meta(k, msg, Meta::new(NO_CMD, self.now_us));
        }
    }

    /// Leave subscribe mode when nothing is subscribed or pending: give the connections back.
    pub(super) fn maybe_end_sub(&mut self, k: usize) {
        let done = self
            .clients
            .get(k)
            .and_then(|c| c.sub.as_ref())
            .is_some_and(|s| s.is_empty() && s.pending == 0);
        if !done {
            return;
        }
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        let private = c.private;
        let Some(sub) = c.sub.take() else {
            return;
        };
        for (_, ck) in sub.conns {
            if Some(ck) == private {
                // Still the client's private connection (WATCH): it stays, in pub/sub mode
                // (late messages are dropped), and closes when given back.
                continue;
            }
            // Not pooled: a backend may still be sending messages published before it processed
            // the last unsubscribe. The connection stays in pub/sub mode (messages dropped) and
            // closes once its remaining confirmations are in.
            if let Some(conn) = self.conns.get_mut(ck) {
                conn.owner = None;
            }
            self.retire_conn(ck);
        }
    }

    /// Close every subscription connection of client `k` (disconnect, RESET).
    pub(super) fn drop_subscriptions(&mut self, k: usize) {
        let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.take()) else {
            return;
        };
        for (_, ck) in sub.conns {
            if let Some(conn) = self.conns.get_mut(ck) {
                conn.owner = None;
            }
            self.conn_failed(ck, "subscriber gone", Fail::Local);
        }
    }

    /// Move client `k`'s subscriptions to where their channels live now (see `follow_moves`).
    pub(super) fn move_subscriptions(&mut self, pool_i: usize, k: usize) {
        let Some(sub) = self.clients.get(k).and_then(|c| c.sub.as_ref()) else {
            return;
        };
        let pool = &self.pools[pool_i];
        let mut moves = Vec::new();
        for ((shard, ch), &home) in &sub.home {
            let now = pool.owner_slot(channel_key(ch));
            if let Some(now) = now.filter(|&n| n != home) {
                moves.push((*shard, ch.clone(), home, now));
            }
        }
        // Subscribed on every server: patterns, and keyevent notification channels.
        let patterns: Vec<(&[u8], Vec<u8>)> = sub
            .patterns
            .iter()
            .map(|p| (&b"PSUBSCRIBE"[..], p.clone()))
            .chain(
                sub.channels
                    .iter()
                    .filter(|c| keyevent("SUBSCRIBE", c))
                    .map(|c| (&b"SUBSCRIBE"[..], c.clone())),
            )
            .collect();
        let missing: Vec<usize> = if patterns.is_empty() {
            Vec::new()
        } else {
            pool.order
                .iter()
                .copied()
                .filter(|&slot| sub.conn_at(slot).is_none())
                .collect()
        };
        let gone: Vec<(usize, usize)> = sub
            .conns
            .iter()
            .copied()
            .filter(|&(slot, _)| pool.servers[slot].retired)
            .collect();
        for (shard, ch, home, now) in moves {
            let (unsub, subscribe): (&[u8], &[u8]) = if shard {
                (b"SUNSUBSCRIBE", b"SSUBSCRIBE")
            } else {
                (b"UNSUBSCRIBE", b"SUBSCRIBE")
            };
            let old = self
                .clients
                .get(k)
                .and_then(|c| c.sub.as_ref())
                .and_then(|s| s.conn_at(home));
            if let Some(ck) = old {
                let mut req = Vec::new();
                resp::write_command(&mut req, [unsub, ch.as_slice()]);
                self.send_swallowed(ck, &req);
            }
            match self.pubsub_conn(k, now) {
                Ok(ck) => {
                    let mut req = Vec::new();
                    resp::write_command(&mut req, [subscribe, ch.as_slice()]);
                    self.send_swallowed(ck, &req);
                    if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut()) {
                        sub.home.insert((shard, ch), now);
                    }
                }
                Err(e) => warn!("c{k} subscription could not follow its channel: {e}"),
            }
        }
        for slot in missing {
            if let Ok(ck) = self.pubsub_conn(k, slot) {
                for (cmd, p) in &patterns {
                    let mut req = Vec::new();
                    resp::write_command(&mut req, [*cmd, p.as_slice()]);
                    self.send_swallowed(ck, &req);
                }
            }
        }
        for (slot, ck) in gone {
            if let Some(sub) = self.clients.get_mut(k).and_then(|c| c.sub.as_mut()) {
                sub.conns.retain(|&(s, _)| s != slot);
            }
            if let Some(conn) = self.conns.get_mut(ck) {
                conn.owner = None;
            }
            self.retire_conn(ck);
        }
    }
}

/// `*n` (RESP2) or `>n` (RESP3 push), the frame of pub/sub confirmations and messages.
pub(super) fn write_push_len(out: &mut Vec<u8>, n: usize, resp3: bool) {
    if resp3 {
        out.push(b'>');
        resp::write_usize(out, n);
        out.extend_from_slice(b"\r\n");
    } else {
        resp::write_array_len(out, n);
    }
}

/// A published message (`message`, `pmessage`, `smessage`), as opposed to a reply.
pub(super) fn is_message(reply: &[u8]) -> bool {
    if !matches!(reply.first(), Some(b'*') | Some(b'>')) {
        return false;
    }
    let Some(nl) = reply.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let rest = &reply[nl + 1..];
    rest.starts_with(b"$7\r\nmessage\r\n")
        || rest.starts_with(b"$8\r\npmessage\r\n")
        || rest.starts_with(b"$8\r\nsmessage\r\n")
}

/// What a channel is placed by: the key of a keyspace notification channel
/// (`__keyspace@<db>__:<key>`: its messages come from the key's backend), else the name.
pub(super) fn channel_key(ch: &[u8]) -> &[u8] {
    if let Some(rest) = ch.strip_prefix(b"__keyspace@") {
        if let Some(i) = rest.windows(3).position(|w| w == b"__:") {
            return &rest[i + 3..];
        }
    }
    ch
}

/// A keyevent notification channel (`__keyevent@<db>__:<event>`): every backend publishes
/// on it, so it is subscribed on every backend, like a pattern.
pub(super) fn keyevent(name: &str, ch: &[u8]) -> bool {
    matches!(name, "SUBSCRIBE" | "UNSUBSCRIBE") && ch.starts_with(b"__keyevent@")
}
