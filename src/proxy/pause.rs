//! CLIENT PAUSE / CLIENT UNPAUSE at the proxy: while a pause lasts, the commands it covers
//! (every command with ALL; with WRITE, the commands that write or may replicate, and an EXEC
//! whose transaction holds one) wait in their client's input, unparsed, as Redis postpones
//! them; they run in order when the pause ends (timeout or UNPAUSE).
//!
//! Invariants:
//! - A held client is `blocked` (not read, counted in INFO blocked_clients, exempt from the
//!   idle timeout, like Redis's postponed clients) and its command is still in its input, so
//!   it runs exactly once, after the pause, in its place among the client's requests.
//! - Errors found before execution (unknown command, arity) are answered at once, as Redis
//!   does: the hold is checked only for a command that resolved.
//! - Held clients are named by (slab key, id): one that left meanwhile is skipped.

use super::*;
use crate::commands::{flag, has};

/// The proxy's pause state (none while `until` is 0).
#[derive(Default)]
pub(super) struct Pause {
    /// End of the pause on the event-loop clock; 0: not paused.
    until: Micros,
    /// ALL (every command) rather than WRITE.
    all: bool,
    /// Clients whose next command waits for the end of the pause.
    held: Vec<(usize, u64)>,
}

/// A write or a command that may replicate (Redis 7.0's `write` and `may-replicate` flags).
fn may_write(spec: &Spec) -> bool {
    has(spec, flag::WRITE) || spec.name == "PFCOUNT"
}

/// Whether a queued transaction holds a command that [`may_write`].
fn txn_writes(queued: &[u8]) -> bool {
    let limits = resp::Limits::default();
    let mut args = Args::default();
    let mut pos = 0;
    while pos < queued.len() {
        let Ok(n) = resp::parse_command(&queued[pos..], &limits, &mut args) else {
            // Not expected (the proxy encoded it): hold, to be safe.
            return true;
        };
        let frame = &queued[pos..pos + n];
        if let Ok(spec) = router::resolve(&args, frame) {
            if may_write(spec) {
                return true;
            }
        }
        pos += n;
    }
    false
}

impl Proxy {
    /// Called before client `k` runs `spec` with `argc` arguments: true when a pause holds it (the client is then
    /// blocked until the pause ends and the command stays unparsed).
    #[inline]
    pub(super) fn pause_holds(&mut self, k: usize, spec: &'static Spec, argc: usize) -> bool {
        if self.pause.until == 0 || !crate::commands::arity_ok(spec, argc) {
            return false;
        }
        if self.now_us >= self.pause.until {
            self.unpause();
            return false;
        }
        let Some(c) = self.clients.get_mut(k) else {
            return false;
        };
        // WRITE: a write queued inside MULTI is answered QUEUED (its EXEC waits), as in Redis.
        let queued = c.in_multi() && !has(spec, flag::NOT_QUEUED);
        let hold = self.pause.all
            || (may_write(spec) && !queued)
            || (spec.name == "EXEC"
                && c.txn
                    .as_ref()
                    .is_some_and(|t| t.in_multi && txn_writes(&t.queued)));
        if hold {
            c.blocked = true;
            self.pause.held.push((k, c.id));
        }
        hold
    }

    /// CLIENT PAUSE timeout [WRITE|ALL]: Redis's parsing and errors; a pause already in force
    /// is only ever extended (the later end, the stricter mode).
    pub(super) fn client_pause(&mut self, k: usize, frame: &[u8], args: &Args) {
        let argc = args.len();
        if argc > 4 {
            return self.client_syntax_error(k, frame, args);
        }
        let mut all = true;
        if argc == 4 {
            let m = args.get(frame, 3);
            if m.eq_ignore_ascii_case(b"WRITE") {
                all = false;
            } else if !m.eq_ignore_ascii_case(b"ALL") {
                return self.reply_err(k, "ERR CLIENT PAUSE mode must be WRITE or ALL");
            }
        }
        let ms = match router::parse_i64(args.get(frame, 2)) {
            Some(ms) if ms < 0 => return self.reply_err(k, "ERR timeout is negative"),
            Some(ms) => ms as u64,
            None => return self.reply_err(k, "ERR timeout is not an integer or out of range"),
        };
        let until = self.now_us.saturating_add(ms.saturating_mul(1000)).max(1);
        if self.pause.until == 0 {
            self.pause.all = all;
        } else {
            self.pause.all |= all;
        }
        self.pause.until = self.pause.until.max(until);
        self.reply(k, b"+OK\r\n");
    }

    /// CLIENT UNPAUSE: the pause ends now.
    pub(super) fn client_unpause(&mut self, k: usize) {
        self.unpause();
        self.reply(k, b"+OK\r\n");
    }

    /// Timers: end a pause whose time is up.
    pub(super) fn pause_tick(&mut self) {
        if self.pause.until != 0 && self.now_us >= self.pause.until {
            self.unpause();
        }
    }

    /// End the pause: every held client runs its waiting command (next tick, in the order
    /// they were held).
    fn unpause(&mut self) {
        self.pause.until = 0;
        self.pause.all = false;
        for (k, id) in std::mem::take(&mut self.pause.held) {
            let Some(c) = self.clients.get_mut(k).filter(|c| c.id == id) else {
                continue;
            };
            c.blocked = false;
            if !self.again.contains(&k) {
                self.again.push(k);
            }
        }
    }
}
