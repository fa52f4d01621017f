//! The per-client reply chain: one slot per request, in request order.
//!
//! Invariants:
//! - A slot is pushed when a request is accepted from the client, before anything is sent to a
//!   backend, so slot order is request order.
//! - Slots fill in any order (backends answer independently) but bytes leave only from the head:
//!   `drain_ready` moves the leading run of ready slots to the client's output, nothing else does.
//! - Every reply goes through here, local and error replies included; the only shortcut
//!   (`Chain::is_empty` -> write straight to the output) is the same thing with an empty chain.
//! - A slot is addressed by a sequence number (`head + index`), never by position, so a reply that
//!   arrives after its client is gone or after the slot was failed (timeout) is simply dropped.
//! - Each request is counted once, by the `Sink`, when its reply leaves (command stats at once,
//!   slow ones queued for the slow log); replies waiting out of order sit in pooled buffers.
//! - A slot marked `quiet` (`CLIENT REPLY OFF|SKIP`) leaves like any other, counted, but its
//!   bytes are not written: suppression happens here, in order, and nowhere else.

use crate::clock::Micros;
use crate::combine::Combine;
use std::collections::VecDeque;

/// What one request's reply is waiting for.
pub enum Slot {
    /// One backend reply will fill it, copied verbatim.
    Waiting,
    /// The reply is complete; it waits for the slots before it.
    Ready(Vec<u8>),
    /// Several sub-replies (split or fan-out) to combine.
    Multi(Box<Multi>),
}

/// The parts of a split or fanned-out request.
pub struct Multi {
    /// One entry per sub-request; empty until its reply arrives (a reply is never empty).
    pub parts: Vec<Vec<u8>>,
    /// Sub-replies still outstanding.
    pub remaining: usize,
    /// How to put the parts together.
    pub combine: Combine,
}

impl Multi {
    pub fn new(nparts: usize, combine: Combine) -> Multi {
        Multi {
            parts: vec![Vec::new(); nparts],
            remaining: nparts,
            combine,
        }
    }
}

/// `Meta::cmd` of a reply that answers no command of the client (a pub/sub message).
pub const NO_CMD: u16 = u16::MAX;
/// `Meta::backend` when no single backend served the request.
pub const NO_BACKEND: u16 = u16::MAX;
/// Parked replies reuse buffers from a pool the caller owns (`Sink::spare`, shared by all
/// clients): at most this many are kept, each of at most `SPARE_MAX_CAP` bytes (1 MiB in all).
pub const SPARE_MAX: usize = 256;
const SPARE_MAX_CAP: usize = 4096;

/// Bytes of the first argument kept for the slow log.
pub const SNIP: usize = 24;

/// What the stats need of a request: which command, when it arrived, its first argument.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// Row of the command table, or NO_CMD.
    pub cmd: u16,
    /// When the request was read (event-loop clock).
    pub started: Micros,
    pub argc: u32,
    /// Config position of the backend that served it (NO_BACKEND for local, split, fan-out).
    pub backend: u16,
    pub snip_len: u8,
    /// The reply is consumed and counted but not sent (`CLIENT REPLY OFF|SKIP`): it still
    /// holds its place in the chain, so later replies keep their order.
    pub quiet: bool,
    pub snip: [u8; SNIP],
}

impl Meta {
    pub fn new(cmd: u16, started: Micros) -> Meta {
        Meta {
            cmd,
            started,
            argc: 0,
            backend: NO_BACKEND,
            snip_len: 0,
            quiet: false,
            snip: [0; SNIP],
        }
    }

    /// Keep (the start of) the first argument for the slow log.
    pub fn with_arg(mut self, argc: usize, first: &[u8]) -> Meta {
        let n = first.len().min(SNIP);
        self.snip[..n].copy_from_slice(&first[..n]);
        self.snip_len = n as u8;
        self.argc = argc as u32;
        self
    }
}

/// A request whose reply left the chain and took at least the slow-log threshold: kept for
/// the proxy, which adds what the log shows of the client.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    /// Slab key and id of the client.
    pub client: (usize, u64),
    pub meta: Meta,
    pub usec: u64,
}

/// Where finished requests are counted: the command stats at once (the reply's tick is its
/// end), the slow ones also queued for the slow log.
pub struct Sink<'a> {
    pub stats: &'a mut crate::stats::Stats,
    pub now: Micros,
    /// Slow-log threshold in µs; negative: the log is off.
    pub slow_usec: i64,
    pub slow: &'a mut Vec<Done>,
    /// Buffers for parked replies (see `SPARE_MAX`).
    pub spare: &'a mut Vec<Vec<u8>>,
    /// Slab key and id of the client whose chain this is.
    pub client: (usize, u64),
}

impl Sink<'_> {
    fn finish(&mut self, meta: Meta, reply: &[u8]) {
        let failed = is_error(reply);
        if failed {
            // Every error reply, whoever made it (INFO errorstats).
            self.stats.record_error_reply(reply);
        }
        if meta.cmd == NO_CMD {
            return;
        }
        let usec = crate::clock::since(self.now, meta.started);
        self.stats.record_command(meta.cmd as usize, usec, failed);
        if self.slow_usec >= 0 && usec >= self.slow_usec as u64 {
            self.slow.push(Done {
                client: self.client,
                meta,
                usec,
            });
        }
    }
}

#[derive(Default)]
pub struct Chain {
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Pushed by the client reader when a request is accepted; popped only by `drain_ready`.
    slots: VecDeque<(Slot, Meta)>,
    /// Bytes held in the chain (replies waiting for earlier ones, parts waiting to be
    /// combined): with the unread output, what flow control bounds.
    parked: usize,
}

/// A buffer holding `bytes`, taken from the pool when it has one.
fn parked(spare: &mut Vec<Vec<u8>>, bytes: &[u8]) -> Vec<u8> {
    let mut b = spare.pop().unwrap_or_default();
    b.extend_from_slice(bytes);
    b
}

/// Give a small buffer back to the pool (a large one, or one over the pool's size, is freed).
fn give_back(spare: &mut Vec<Vec<u8>>, mut b: Vec<u8>) {
    if b.capacity() > 0 && b.capacity() <= SPARE_MAX_CAP && spare.len() < SPARE_MAX {
        b.clear();
        spare.push(b);
    }
}

/// Take back the last `n` bytes written to `out`: the reply of a quiet slot (kept off the
/// common path: write first, then undo in the rare quiet case).
#[cold]
fn unwrite(out: &mut Vec<u8>, n: usize) {
    out.truncate(out.len() - n);
}

fn is_error(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(b'-') | Some(b'!'))
}

/// What happened when a reply was delivered to a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Bytes were appended to the output.
    Written,
    /// Stored; earlier slots are still waiting.
    Stored,
    /// The slot no longer exists (failed by a timeout, or never existed): reply dropped.
    Dropped,
}

impl Chain {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Reply bytes held in the chain (see `parked`).
    pub fn parked_bytes(&self) -> usize {
        self.parked
    }

    /// Sequence number the next pushed slot will get.
    pub fn next_seq(&self) -> u64 {
        self.head + self.slots.len() as u64
    }

    pub fn push(&mut self, slot: Slot, meta: Meta) -> u64 {
        let seq = self.next_seq();
        self.slots.push_back((slot, meta));
        seq
    }

    /// A complete reply produced now (local answer or error): written at once when nothing is
    /// ahead of it, else queued behind the pending slots.
    pub fn reply(&mut self, bytes: &[u8], out: &mut Vec<u8>, meta: Meta, sink: &mut Sink) {
        if self.slots.is_empty() {
            out.extend_from_slice(bytes);
            if meta.quiet {
                unwrite(out, bytes.len());
            }
            self.head += 1;
            sink.finish(meta, bytes);
        } else {
            self.parked += bytes.len();
            self.slots
                .push_back((Slot::Ready(parked(sink.spare, bytes)), meta));
        }
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let i = seq.checked_sub(self.head)?;
        if (i as usize) < self.slots.len() {
            Some(i as usize)
        } else {
            None
        }
    }

    /// Deliver a single-backend reply to the slot `seq`. A reply that must wait for earlier
    /// slots is parked in a buffer from `sink.spare` (returned there once it leaves).
    pub fn deliver(
        &mut self,
        seq: u64,
        reply: &[u8],
        out: &mut Vec<u8>,
        sink: &mut Sink,
    ) -> Delivered {
        let Some(i) = self.index(seq) else {
            return Delivered::Dropped;
        };
        match self.slots[i].0 {
            Slot::Waiting => {}
            _ => return Delivered::Dropped,
        }
        if i == 0 {
            out.extend_from_slice(reply);
            if let Some((slot, meta)) = self.slots.pop_front() {
                // `Waiting` (checked above) owns nothing: no drop glue on the per-reply path.
                std::mem::forget(slot);
                if meta.quiet {
                    unwrite(out, reply.len());
                }
                sink.finish(meta, reply);
            }
            self.head += 1;
            self.drain_ready(out, sink);
            Delivered::Written
        } else {
            self.parked += reply.len();
            self.slots[i].0 = Slot::Ready(parked(sink.spare, reply));
            Delivered::Stored
        }
    }

    /// Deliver part `part` of a multi slot. When it was the last part, the parts are combined
    /// (`resp3` picks the encoding of proxy-made values) and the slot becomes ready.
    pub fn deliver_part(
        &mut self,
        seq: u64,
        part: usize,
        reply: &[u8],
        resp3: bool,
        out: &mut Vec<u8>,
        sink: &mut Sink,
    ) -> Delivered {
        let Some(i) = self.index(seq) else {
            return Delivered::Dropped;
        };
        let Slot::Multi(m) = &mut self.slots[i].0 else {
            return Delivered::Dropped;
        };
        let Some(p) = m.parts.get_mut(part) else {
            return Delivered::Dropped;
        };
        if !p.is_empty() {
            return Delivered::Dropped;
        }
        *p = parked(sink.spare, reply);
        self.parked += reply.len();
        m.remaining -= 1;
        if m.remaining > 0 {
            return Delivered::Stored;
        }
        if i == 0 {
            // At the head: combined straight into the output.
            let start = out.len();
            self.parked -= m.parts.iter().map(Vec::len).sum::<usize>();
            m.combine.combine(&m.parts, resp3, out);
            m.parts.drain(..).for_each(|b| give_back(sink.spare, b));
            if let Some((_, meta)) = self.slots.pop_front() {
                sink.finish(meta, &out[start..]);
                if meta.quiet {
                    out.truncate(start);
                }
            }
            self.head += 1;
            self.drain_ready(out, sink);
            Delivered::Written
        } else {
            let mut bytes = sink.spare.pop().unwrap_or_default();
            m.combine.combine(&m.parts, resp3, &mut bytes);
            self.parked -= m.parts.iter().map(Vec::len).sum::<usize>();
            self.parked += bytes.len();
            m.parts.drain(..).for_each(|b| give_back(sink.spare, b));
            self.slots[i].0 = Slot::Ready(bytes);
            Delivered::Stored
        }
    }

    /// Move the leading run of ready slots to `out` (their buffers back to `sink.spare`). Returns
    /// how many left the chain.
    pub fn drain_ready(&mut self, out: &mut Vec<u8>, sink: &mut Sink) -> usize {
        let mut n = 0;
        while let Some((Slot::Ready(_), _)) = self.slots.front() {
            if let Some((Slot::Ready(b), meta)) = self.slots.pop_front() {
                self.parked -= b.len();
                out.extend_from_slice(&b);
                if meta.quiet {
                    unwrite(out, b.len());
                }
                sink.finish(meta, &b);
                give_back(sink.spare, b);
            }
            self.head += 1;
            n += 1;
        }
        n
    }

    /// Return memory after a burst: an empty chain keeps no large allocation.
    pub fn shrink(&mut self) {
        if self.slots.is_empty() && self.slots.capacity() > 64 {
            self.slots = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Meta {
        Meta::new(0, 0)
    }

    /// A sink whose slow-log threshold (0 µs) keeps every finished request.
    macro_rules! sink {
        ($stats:ident, $slow:ident) => {
            &mut Sink {
                stats: &mut $stats,
                now: 5,
                slow_usec: 0,
                slow: &mut $slow,
                spare: &mut Vec::new(),
                client: (1, 1),
            }
        };
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut c = Chain::default();
        let mut out = Vec::new();
        let (mut stats, mut slow) = (crate::stats::Stats::default(), Vec::new());
        let a = c.push(Slot::Waiting, m());
        let b = c.push(Slot::Waiting, m());
        c.reply(b"+local\r\n", &mut out, m(), sink!(stats, slow));
        assert!(out.is_empty());
        assert_eq!(
            c.deliver(b, b"$1\r\nb\r\n", &mut out, sink!(stats, slow)),
            Delivered::Stored
        );
        assert!(out.is_empty());
        assert_eq!(
            c.deliver(a, b"$1\r\na\r\n", &mut out, sink!(stats, slow)),
            Delivered::Written
        );
        assert_eq!(out, b"$1\r\na\r\n$1\r\nb\r\n+local\r\n");
        assert_eq!(slow.len(), 3);
        assert!(slow.iter().all(|d| d.usec == 5 && d.client == (1, 1)));
        assert!(c.is_empty());
        // A reply for a slot that is gone is dropped.
        assert_eq!(
            c.deliver(a, b"+x\r\n", &mut out, sink!(stats, slow)),
            Delivered::Dropped
        );
        // Local reply on an empty chain goes straight out.
        c.reply(b"+PONG\r\n", &mut out, m(), sink!(stats, slow));
        assert!(out.ends_with(b"+PONG\r\n"));
        let d = c.push(Slot::Waiting, m());
        assert_eq!(d, a + 4);
    }

    #[test]
    fn quiet_slots_leave_in_order_unwritten() {
        let mut c = Chain::default();
        let mut out = Vec::new();
        let (mut stats, mut slow) = (crate::stats::Stats::default(), Vec::new());
        let quiet = Meta { quiet: true, ..m() };
        let a = c.push(Slot::Waiting, quiet);
        let b = c.push(Slot::Waiting, m());
        let q = c.push(Slot::Waiting, quiet);
        let d = c.push(Slot::Multi(Box::new(Multi::new(1, Combine::Concat))), quiet);
        c.reply(b"-ERR quiet\r\n", &mut out, quiet, sink!(stats, slow));
        assert_eq!(
            c.deliver(q, b"+q\r\n", &mut out, sink!(stats, slow)),
            Delivered::Stored
        );
        assert_eq!(
            c.deliver(b, b"+b\r\n", &mut out, sink!(stats, slow)),
            Delivered::Stored
        );
        assert!(out.is_empty());
        c.deliver(a, b"+a\r\n", &mut out, sink!(stats, slow));
        assert_eq!(out, b"+b\r\n");
        c.deliver_part(d, 0, b"+d\r\n", false, &mut out, sink!(stats, slow));
        assert_eq!(out, b"+b\r\n");
        assert!(c.is_empty());
        assert_eq!(c.parked_bytes(), 0);
        // Counted all the same (the slow log sees every one, the error is in errorstats).
        assert_eq!(slow.len(), 5);
        assert_eq!(stats.error_replies(), vec![("ERR".to_string(), 1)]);
        // On an empty chain too.
        c.reply(b"+x\r\n", &mut out, quiet, sink!(stats, slow));
        assert_eq!(out, b"+b\r\n");
    }

    #[test]
    fn double_delivery_is_dropped() {
        let mut c = Chain::default();
        let mut out = Vec::new();
        let (mut stats, mut slow) = (crate::stats::Stats::default(), Vec::new());
        let _a = c.push(Slot::Waiting, m());
        let b = c.push(Slot::Waiting, m());
        assert_eq!(
            c.deliver(b, b"+1\r\n", &mut out, sink!(stats, slow)),
            Delivered::Stored
        );
        assert_eq!(
            c.deliver(b, b"+2\r\n", &mut out, sink!(stats, slow)),
            Delivered::Dropped
        );
    }
}
