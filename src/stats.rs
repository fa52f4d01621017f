//! Counters, latency histograms and the slow log, in one place. Rendering (INFO, Prometheus,
//! twemproxy JSON) lives in `metrics`.
//!
//! Invariants:
//! * Everything here is owned by the single event-loop thread: counters are plain integers,
//!   bumping one is an add, never a lock or an atomic.
//! * Nothing allocates per request: [`Stats::record_command`], [`Stats::record_rejected`],
//!   [`Histogram::record`] and [`Stats::sample_ops`] only add to memory allocated up front
//!   (`Stats::default()` sizes `commands_by` to the command table once). Only a request that
//!   is actually slow allocates (its [`SlowLog`] entry), and the slow log is bounded.
//! * A [`Histogram`] is fixed memory: [`HIST_BUCKETS`] `u64` counters allocated by `new`,
//!   never resized; values beyond [`HIST_MAX_USEC`] land in the last bucket.
//! * Counters only go up, except `reset` (CONFIG RESETSTAT) which zeroes the cumulative ones;
//!   gauges (connected clients, in-flight requests) are not stored here but read by the caller
//!   from the live state, and `Stats::started_unix` survives a reset (uptime is not a stat).

use std::collections::VecDeque;

use crate::commands::{Spec, COMMANDS};
use crate::resp;

// ---------------------------------------------------------------------------------------------
// Histogram

/// Linear sub-buckets per power of two (16: relative bucket width <= 1/16 = 6.25%).
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Values below 2^MAX_EXP microseconds (about 19 hours) get their own bucket.
const MAX_EXP: u32 = 36;
/// Number of buckets: values 0..16 exactly, then 16 sub-buckets for each power 2^4..2^35.
pub const HIST_BUCKETS: usize = SUB + (MAX_EXP - SUB_BITS) as usize * SUB;
/// Largest value with its own bucket; larger values are counted in the last bucket.
pub const HIST_MAX_USEC: u64 = (1 << MAX_EXP) - 1;

/// Fixed-memory latency histogram in microseconds: log-linear buckets (HdrHistogram-like: the
/// values 0..=15 exactly, then for each power of two 16 linear sub-buckets, up to 2^36 us).
/// `record` is O(1) and never allocates; the bucket array is allocated once by `new`.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

#[inline]
fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS
    if msb >= MAX_EXP {
        return HIST_BUCKETS - 1;
    }
    let shift = msb - SUB_BITS;
    let sub = ((v >> shift) as usize) - SUB; // top SUB_BITS bits after the leading one
    SUB + shift as usize * SUB + sub
}

/// Smallest and largest value (inclusive) of bucket `i`.
#[inline]
fn bucket_range(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64);
    }
    let shift = ((i - SUB) / SUB) as u32;
    let sub = ((i - SUB) % SUB) as u64;
    let lo = (SUB as u64 + sub) << shift;
    (lo, lo + (1u64 << shift) - 1)
}

impl Histogram {
    /// Heap bytes held by one histogram (constant).
    pub const HEAP_BYTES: usize = HIST_BUCKETS * std::mem::size_of::<u64>();

    pub fn new() -> Self {
        Histogram {
            // vec! of zeroes uses the zeroed allocator: untouched pages cost no RSS.
            counts: vec![0u64; HIST_BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, usec: u64) {
        self.counts[bucket_of(usec)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(usec);
        self.max = self.max.max(usec);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the recorded values (saturating).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Largest recorded value (0 if empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Upper bound (inclusive) of the bucket holding the `p`-th percentile (`p` in 0..=100,
    /// clamped), never above the largest recorded value; 0 if empty. The true percentile is
    /// at most 6.25% below the returned value.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let p = if p.is_nan() {
            100.0
        } else {
            p.clamp(0.0, 100.0)
        };
        // Rank of the wanted sample, 1-based: ceil(p% of count), at least 1.
        let rank = ((p / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // The last bucket also holds everything above HIST_MAX_USEC.
                let hi = if i == HIST_BUCKETS - 1 {
                    u64::MAX
                } else {
                    bucket_range(i).1
                };
                return hi.min(self.max);
            }
        }
        self.max
    }

    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.sum = 0;
        self.max = 0;
    }

    /// Cumulative counts at the given upper bounds (for Prometheus `le` buckets): for each
    /// bound, the number of values in buckets lying entirely at or below it. Never overstates
    /// (a value counted is <= the bound); may leave out values of the one bucket straddling
    /// the bound. Bounds need not be sorted.
    pub fn cumulative(&self, bounds_usec: &[u64]) -> Vec<u64> {
        bounds_usec
            .iter()
            .map(|&b| {
                let i = bucket_of(b);
                // Buckets before i end below b; bucket i counts when it ends exactly at b.
                let end = if b <= HIST_MAX_USEC && bucket_range(i).1 == b {
                    i + 1
                } else {
                    i
                };
                self.counts[..end].iter().sum()
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Instantaneous rates

/// Samples kept for an instantaneous rate (Redis's `STATS_METRIC_SAMPLES`).
const RATE_SAMPLES: usize = 16;

/// Redis's `trackInstantaneousMetric`: a per-second rate sampled about every 100 ms, the
/// instantaneous value being the mean of the last 16 samples.
#[derive(Default, Debug, Clone)]
pub struct Rate {
    samples: [u64; RATE_SAMPLES],
    idx: usize,
    last_ms: u64,
    last_value: u64,
    started: bool,
}

impl Rate {
    /// Feed the current value of a cumulative counter at time `now_ms`.
    pub fn sample(&mut self, now_ms: u64, value: u64) {
        if !self.started {
            self.started = true;
        } else {
            let dt = now_ms.saturating_sub(self.last_ms);
            if dt == 0 {
                return;
            }
            let dv = value.saturating_sub(self.last_value);
            self.samples[self.idx] = dv.saturating_mul(1000) / dt;
            self.idx = (self.idx + 1) % RATE_SAMPLES;
        }
        self.last_ms = now_ms;
        self.last_value = value;
    }

    /// Mean per-second rate over the last samples.
    pub fn get(&self) -> u64 {
        self.samples.iter().sum::<u64>() / RATE_SAMPLES as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Per-command and proxy-wide counters

/// Per-command counters, like Redis's commandstats.
#[derive(Default, Debug, Clone)]
pub struct CommandStats {
    /// Commands that ran (including the ones that answered an error), as Redis counts `calls`.
    pub calls: u64,
    /// Total time of the calls, microseconds.
    pub usec: u64,
    /// Refused before running: arity, unknown subcommand, disabled, refused class, NOAUTH.
    pub rejected_calls: u64,
    /// Ran, answered an error (also counted in `calls`).
    pub failed_calls: u64,
    pub latency: Histogram,
}

/// Index of a command table row (`commands::COMMANDS`) by its address; O(1).
/// A `Spec` that is not a row of the table gives `COMMANDS.len()`, an index that
/// [`Stats::record_command`] and [`Stats::record_rejected`] ignore.
pub fn command_index(spec: &'static Spec) -> usize {
    crate::commands::row_of(spec)
}

/// `"CONFIG GET"` -> `"config|get"`: Redis's name for a command in commandstats.
pub fn stat_name(spec_name: &str) -> String {
    spec_name
        .chars()
        .map(|c| {
            if c == ' ' {
                '|'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Distinct error codes kept in [`Stats::error_codes`] (Redis 7.2 stops at 128 too).
pub const ERROR_CODES_MAX: usize = 128;

/// The code of an error reply: its first word when a space comes within 32 bytes, else `ERR`
/// (Redis's `afterErrorReply`). Codes are printable: a byte that is not becomes `_`.
fn error_code(reply: &[u8]) -> &[u8] {
    let text = match reply.first() {
        Some(b'!') => {
            // RESP3 blob error: !<len>\r\n<text>\r\n
            let start = reply
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(reply.len(), |i| i + 2);
            &reply[start.min(reply.len())..]
        }
        _ => reply.get(1..).unwrap_or_default(),
    };
    let head = &text[..text.len().min(32)];
    match head.iter().position(|&b| b == b' ') {
        Some(n) if n > 0 && head[..n].iter().all(|b| b.is_ascii_graphic() && *b != b':') => {
            &head[..n]
        }
        _ => b"ERR",
    }
}

/// Proxy-wide counters.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Client connections accepted since start.
    pub connections_received: u64,
    /// Client connections refused (max_clients).
    pub rejected_connections: u64,
    /// Commands read from clients (each pipelined command counts once).
    pub commands: u64,
    /// Error replies the proxy produced (protocol, routing, backend-down, timeout...).
    pub errors: u64,
    /// Requests failed by the request timeout.
    pub timeouts: u64,
    /// AUTH / HELLO AUTH attempts with a wrong user or password.
    pub auth_failures: u64,
    /// Bytes read from clients / written to clients.
    pub net_input_bytes: u64,
    pub net_output_bytes: u64,
    /// Per command table row (`commands::COMMANDS[i]`), see [`command_index`].
    pub commands_by: Vec<CommandStats>,
    /// Commands whose name is not in the table.
    pub unknown_commands: u64,
    /// Error replies sent to clients by error code (the first word: `ERR`, `WRONGTYPE`...),
    /// whoever made them, in order of first appearance: Redis's errorstats. At most
    /// [`ERROR_CODES_MAX`] codes; replies with a code past that are counted in
    /// `error_codes_overflow` (a script can make up any number of codes).
    pub error_codes: Vec<(Box<[u8]>, u64)>,
    pub error_codes_overflow: u64,
    /// Unix time the proxy started (kept by `reset`).
    pub started_unix: u64,
    pub ops_rate: Rate,
    pub input_rate: Rate,
    pub output_rate: Rate,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_received: 0,
            rejected_connections: 0,
            commands: 0,
            errors: 0,
            timeouts: 0,
            auth_failures: 0,
            net_input_bytes: 0,
            net_output_bytes: 0,
            commands_by: (0..COMMANDS.len())
                .map(|_| CommandStats::default())
                .collect(),
            unknown_commands: 0,
            error_codes: Vec::new(),
            error_codes_overflow: 0,
            started_unix: 0,
            ops_rate: Rate::default(),
            input_rate: Rate::default(),
            output_rate: Rate::default(),
        }
    }
}

impl Stats {
    /// CONFIG RESETSTAT: zero every counter, histogram and rate; `started_unix` is kept.
    /// Allocation-free (the per-command array is reused).
    pub fn reset(&mut self) {
        self.connections_received = 0;
        self.rejected_connections = 0;
        self.commands = 0;
        self.errors = 0;
        self.timeouts = 0;
        self.auth_failures = 0;
        self.net_input_bytes = 0;
        self.net_output_bytes = 0;
        for c in &mut self.commands_by {
            c.calls = 0;
            c.usec = 0;
            c.rejected_calls = 0;
            c.failed_calls = 0;
            c.latency.reset();
        }
        self.unknown_commands = 0;
        self.error_codes.clear();
        self.error_codes_overflow = 0;
        self.ops_rate = Rate::default();
        self.input_rate = Rate::default();
        self.output_rate = Rate::default();
    }

    /// A command of row `idx` ran for `usec` microseconds; `failed`: it answered an error.
    /// An out-of-range `idx` is ignored.
    #[inline]
    pub fn record_command(&mut self, idx: usize, usec: u64, failed: bool) {
        if let Some(c) = self.commands_by.get_mut(idx) {
            c.calls += 1;
            c.usec = c.usec.saturating_add(usec);
            c.failed_calls += failed as u64;
            c.latency.record(usec);
        }
    }

    /// A command was refused before running: `Some(row)` (arity, refused class, NOAUTH...)
    /// or `None` for an unknown command name. An out-of-range row is ignored.
    #[inline]
    pub fn record_rejected(&mut self, idx: Option<usize>) {
        match idx {
            Some(i) => {
                if let Some(c) = self.commands_by.get_mut(i) {
                    c.rejected_calls += 1;
                }
            }
            None => self.unknown_commands += 1,
        }
    }

    /// An error reply (`-CODE text\r\n`, or a RESP3 blob error) left for a client: counted
    /// under its code, Redis's way (the text up to the first space within 32 bytes, else `ERR`).
    #[cold]
    #[inline(never)]
    pub fn record_error_reply(&mut self, reply: &[u8]) {
        let code = error_code(reply);
        if let Some(e) = self.error_codes.iter_mut().find(|(c, _)| &c[..] == code) {
            e.1 += 1;
        } else if self.error_codes.len() < ERROR_CODES_MAX {
            self.error_codes.push((code.into(), 1));
        } else {
            self.error_codes_overflow += 1;
        }
    }

    /// The errorstats as (code, count), in order of first appearance.
    pub fn error_replies(&self) -> Vec<(String, u64)> {
        self.error_codes
            .iter()
            .map(|(c, n)| (String::from_utf8_lossy(c).into_owned(), *n))
            .collect()
    }

    /// Call about every 100 ms with a monotonic millisecond clock.
    pub fn sample_ops(&mut self, now_ms: u64) {
        self.ops_rate.sample(now_ms, self.commands);
        self.input_rate.sample(now_ms, self.net_input_bytes);
        self.output_rate.sample(now_ms, self.net_output_bytes);
    }

    /// Commands per second (Redis's `instantaneous_ops_per_sec`).
    pub fn instantaneous_ops(&self) -> u64 {
        self.ops_rate.get()
    }

    /// Client input, KiB per second (Redis's `instantaneous_input_kbps`).
    pub fn instantaneous_input_kbps(&self) -> f64 {
        self.input_rate.get() as f64 / 1024.0
    }

    /// Client output, KiB per second (Redis's `instantaneous_output_kbps`).
    pub fn instantaneous_output_kbps(&self) -> f64 {
        self.output_rate.get() as f64 / 1024.0
    }
}

/// Per-backend counters.
#[derive(Default, Debug, Clone)]
pub struct ServerStats {
    /// Requests sent (sub-requests of split commands count one each).
    pub requests: u64,
    /// Bytes of the requests sent.
    pub request_bytes: u64,
    /// Replies received (including ones dropped because their client left).
    pub replies: u64,
    /// Bytes of the replies received.
    pub response_bytes: u64,
    /// Requests answered with a proxy-made error (down, timeout, connection lost).
    pub errors: u64,
    pub timeouts: u64,
    /// Connections opened to this backend.
    pub connections: u64,
    /// Times the backend went down (connection failure).
    pub failures: u64,
    /// Connections the backend closed (EOF read); twemproxy's `server_eof`.
    pub eof: u64,
    /// Times it was ejected from the ring (auto_eject_hosts).
    pub ejections: u64,
    /// Time of the last ejection, microseconds since the epoch (0: never); twemproxy's
    /// `server_ejected_at`. Not a counter: kept by `reset`.
    pub ejected_at_usec: u64,
    /// Backend round trip (request written -> reply read), microseconds.
    pub latency: Histogram,
}

impl ServerStats {
    /// Zero the counters and the histogram (allocation-free); `ejected_at_usec` is kept.
    pub fn reset(&mut self) {
        // Destructured so that a new field must be considered here.
        let ServerStats {
            requests,
            request_bytes,
            replies,
            response_bytes,
            errors,
            timeouts,
            connections,
            failures,
            eof,
            ejections,
            ejected_at_usec: _,
            latency,
        } = self;
        for c in [
            requests,
            request_bytes,
            replies,
            response_bytes,
            errors,
            timeouts,
            connections,
            failures,
            eof,
            ejections,
        ] {
            *c = 0;
        }
        latency.reset();
    }
}

// ---------------------------------------------------------------------------------------------
// Slow log

/// Redis's `SLOWLOG_ENTRY_MAX_ARGC`.
pub const SLOWLOG_MAX_ARGC: usize = 32;
/// Redis's `SLOWLOG_ENTRY_MAX_STRING`.
pub const SLOWLOG_MAX_STRING: usize = 128;
/// Entries SLOWLOG GET returns without a count (Redis: 10).
pub const SLOWLOG_DEFAULT_GET: usize = 10;

#[derive(Debug, Clone)]
struct SlowEntry {
    id: u64,
    time: u64,
    usec: u64,
    args: Vec<Vec<u8>>,
    client_addr: String,
    client_name: String,
    backend: String,
}

/// Slow log with Redis's SLOWLOG semantics: commands taking at least the threshold are kept,
/// newest first, in a ring of at most `max_len` entries; ids keep increasing across resets.
#[derive(Debug, Clone)]
pub struct SlowLog {
    entries: VecDeque<SlowEntry>,
    max_len: usize,
    pub threshold_usec: i64,
    next_id: u64,
}

impl SlowLog {
    /// `threshold_usec`: < 0 disables, 0 logs every command (Redis `slowlog-log-slower-than`);
    /// `max_len`: Redis `slowlog-max-len`.
    pub fn new(max_len: usize, threshold_usec: i64) -> Self {
        SlowLog {
            entries: VecDeque::new(),
            max_len,
            threshold_usec,
            next_id: 0,
        }
    }

    /// CONFIG SET slowlog-max-len / slowlog-log-slower-than: takes effect at once (the ring
    /// is trimmed to the new length).
    pub fn configure(&mut self, max_len: usize, threshold_usec: i64) {
        self.max_len = max_len;
        self.threshold_usec = threshold_usec;
        self.entries.truncate(max_len);
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn threshold_usec(&self) -> i64 {
        self.threshold_usec
    }

    /// Whether a command of `usec` would be logged: check this before gathering arguments.
    #[inline]
    pub fn is_slow(&self, usec: u64) -> bool {
        self.threshold_usec >= 0 && usec >= self.threshold_usec as u64
    }

    /// Log the command if it took at least the threshold. `args` includes the command name
    /// (`&[&[u8]]` or `resp::Args::iter`); it is truncated like Redis does: at most 32
    /// arguments (the 32nd becomes "... (N more arguments)"), each at most 128 bytes
    /// followed by "... (N more bytes)".
    pub fn maybe_push<A: AsRef<[u8]>>(
        &mut self,
        unix_secs: u64,
        usec: u64,
        args: impl IntoIterator<Item = A>,
        client_addr: &str,
        client_name: &str,
        backend: &str,
    ) {
        if !self.is_slow(usec) {
            return;
        }
        let mut kept: Vec<Vec<u8>> = Vec::new();
        let mut extra = 0usize;
        for a in args {
            if kept.len() < SLOWLOG_MAX_ARGC {
                let a = a.as_ref();
                let mut v = a[..a.len().min(SLOWLOG_MAX_STRING)].to_vec();
                if a.len() > SLOWLOG_MAX_STRING {
                    v.extend_from_slice(
                        format!("... ({} more bytes)", a.len() - SLOWLOG_MAX_STRING).as_bytes(),
                    );
                }
                kept.push(v);
            } else {
                extra += 1;
            }
        }
        if extra > 0 {
            // argc > 32: the last slot says how many were left out, itself included.
            kept[SLOWLOG_MAX_ARGC - 1] = format!("... ({} more arguments)", extra + 1).into_bytes();
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_front(SlowEntry {
            id,
            time: unix_secs,
            usec,
            args: kept,
            client_addr: client_addr.to_string(),
            client_name: client_name.to_string(),
            backend: backend.to_string(),
        });
        self.entries.truncate(self.max_len);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// SLOWLOG RESET (ids keep increasing, as in Redis).
    pub fn reset(&mut self) {
        self.entries.clear();
    }

    /// SLOWLOG GET [count] reply: newest first, `None` = 10 entries (Redis's default; a count
    /// of -1 maps to `Some(usize::MAX)`). Each entry is Redis 7's six elements
    /// `[id, timestamp, usec, [args...], client addr, client name]` plus a seventh, the name of
    /// the backend that served the command (empty if none).
    pub fn write_get(&self, count: Option<usize>, out: &mut Vec<u8>) {
        let n = count.unwrap_or(SLOWLOG_DEFAULT_GET).min(self.entries.len());
        resp::write_array_len(out, n);
        for e in self.entries.iter().take(n) {
            resp::write_array_len(out, 7);
            resp::write_int(out, e.id as i64);
            resp::write_int(out, e.time as i64);
            resp::write_int(out, e.usec as i64);
            resp::write_array_len(out, e.args.len());
            for a in &e.args {
                resp::write_bulk(out, a);
            }
            resp::write_bulk(out, e.client_addr.as_bytes());
            resp::write_bulk(out, e.client_name.as_bytes());
            resp::write_bulk(out, e.backend.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{parse_reply, Reply};

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut prev_hi: Option<u64> = None;
        for i in 0..HIST_BUCKETS {
            let (lo, hi) = bucket_range(i);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "bucket {i}");
            }
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(hi), i);
            // relative width <= 1/16
            assert!((hi - lo) * 16 <= lo.max(16), "bucket {i} too wide");
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some(HIST_MAX_USEC));
        assert_eq!(bucket_of(u64::MAX), HIST_BUCKETS - 1);
        assert_eq!(bucket_of(HIST_MAX_USEC + 1), HIST_BUCKETS - 1);
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), 0);
        for v in 1..=10_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.sum(), 10_000 * 10_001 / 2);
        let (p50, p99, p999) = (h.percentile(50.0), h.percentile(99.0), h.percentile(99.9));
        assert!(p50 <= p99 && p99 <= p999 && p999 <= h.max());
        for (got, want) in [(p50, 5000u64), (p99, 9900), (p999, 9990)] {
            assert!(got >= want, "{got} < {want}");
            assert!(got as f64 <= want as f64 * 1.0625 + 1.0, "{got} vs {want}");
        }
        assert_eq!(h.percentile(100.0), 10_000);
        assert_eq!(h.percentile(0.0), 1);
        // Small values are exact.
        let mut h = Histogram::new();
        for v in [3u64, 3, 3, 7] {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 3);
        assert_eq!(h.percentile(99.0), 7);
        // Huge values clamp to the last bucket but report the real max.
        h.record(u64::MAX / 2);
        assert_eq!(h.percentile(100.0), u64::MAX / 2);
    }

    #[test]
    fn histogram_monotone_on_skewed_data() {
        let mut h = Histogram::new();
        let mut x: u64 = 12345;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // exponential-ish: mostly small, a tail of large values
            h.record((x % 1000) * (1 << (x % 12)));
        }
        let mut prev = 0;
        for p in [0.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0] {
            let v = h.percentile(p);
            assert!(v >= prev);
            prev = v;
        }
    }

    #[test]
    fn histogram_fixed_memory_and_reset() {
        let size = std::mem::size_of::<Histogram>();
        let mut h = Histogram::new();
        for v in 0..100_000u64 {
            h.record(v * 997);
        }
        assert_eq!(std::mem::size_of_val(&h), size);
        assert_eq!(h.counts.len(), HIST_BUCKETS);
        assert_eq!(Histogram::HEAP_BYTES, HIST_BUCKETS * 8);
        h.reset();
        assert_eq!(
            (h.count(), h.sum(), h.max(), h.percentile(99.0)),
            (0, 0, 0, 0)
        );
        assert_eq!(h.counts.len(), HIST_BUCKETS);
        assert!(h.counts.iter().all(|&c| c == 0));
    }

    #[test]
    fn histogram_cumulative() {
        let mut h = Histogram::new();
        for v in [5u64, 50, 99, 100, 1000, 5000, 2_000_000] {
            h.record(v);
        }
        let c = h.cumulative(&[0, 5, 96, 100, 1_023, 10_000, u64::MAX]);
        assert_eq!(c, vec![0, 1, 2, 3, 5, 6, 7]);
        for w in c.windows(2) {
            assert!(w[0] <= w[1]);
        }
    }

    #[test]
    fn command_index_by_address() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(command_index(spec), i);
        }
        static OTHER: Spec = Spec {
            name: "X",
            arity: 1,
            keys: crate::commands::Keys::None,
            class: crate::commands::Class::Keyed,
            group: "x",
            notes: &[],
        };
        assert_eq!(command_index(&OTHER), COMMANDS.len());
        let get = crate::commands::lookup(b"get").unwrap();
        assert_eq!(COMMANDS[command_index(get)].name, "GET");
        assert_eq!(stat_name("CONFIG GET"), "config|get");
    }

    #[test]
    fn stats_record_and_reset() {
        let mut s = Stats {
            started_unix: 42,
            ..Stats::default()
        };
        assert_eq!(s.commands_by.len(), COMMANDS.len());
        let i = command_index(crate::commands::lookup(b"get").unwrap());
        s.record_command(i, 10, false);
        s.record_command(i, 30, true);
        s.record_command(usize::MAX, 30, true);
        s.record_rejected(Some(i));
        s.record_rejected(None);
        s.record_rejected(Some(COMMANDS.len()));
        let c = &s.commands_by[i];
        assert_eq!(
            (c.calls, c.usec, c.failed_calls, c.rejected_calls),
            (2, 40, 1, 1)
        );
        assert_eq!(c.latency.count(), 2);
        assert_eq!(s.unknown_commands, 1);
        s.commands = 5;
        s.reset();
        assert_eq!(s.started_unix, 42);
        assert_eq!(s.commands_by.len(), COMMANDS.len());
        assert_eq!(s.commands_by[i].calls, 0);
        assert_eq!(s.commands_by[i].latency.count(), 0);
        assert_eq!((s.commands, s.unknown_commands), (0, 0));

        let mut ss = ServerStats {
            requests: 3,
            ejected_at_usec: 7,
            ..ServerStats::default()
        };
        ss.latency.record(5);
        ss.reset();
        assert_eq!(
            (ss.requests, ss.ejected_at_usec, ss.latency.count()),
            (0, 7, 0)
        );
        ss.latency.record(5);
        assert_eq!(ss.latency.count(), 1);
    }

    #[test]
    fn ops_sampler() {
        let mut s = Stats::default();
        let mut now = 1_000_000;
        s.sample_ops(now);
        assert_eq!(s.instantaneous_ops(), 0);
        for _ in 0..20 {
            now += 100;
            s.commands += 50; // 500/s
            s.net_input_bytes += 1024; // 10 KiB/s
            s.sample_ops(now);
        }
        assert_eq!(s.instantaneous_ops(), 500);
        assert!((s.instantaneous_input_kbps() - 10.0).abs() < 1e-9);
        s.sample_ops(now); // same instant: ignored
        assert_eq!(s.instantaneous_ops(), 500);
    }

    fn get(log: &SlowLog, count: Option<usize>) -> Vec<Vec<Reply<'static>>> {
        let mut out = Vec::new();
        log.write_get(count, &mut out);
        let out: &'static [u8] = Box::leak(out.into_boxed_slice());
        let (r, n) = parse_reply(out).unwrap().unwrap();
        assert_eq!(n, out.len());
        let Reply::Array(items) = r else {
            panic!("not an array")
        };
        items
            .into_iter()
            .map(|e| match e {
                Reply::Array(v) => v,
                _ => panic!("entry not an array"),
            })
            .collect()
    }

    #[test]
    fn slowlog_threshold_and_ring() {
        let mut log = SlowLog::new(3, 100);
        log.maybe_push(1, 99, [&b"GET"[..], b"k"], "1.2.3.4:5", "", "b0");
        assert!(log.is_empty());
        for i in 0..5u64 {
            log.maybe_push(
                10 + i,
                100 + i,
                [&b"GET"[..], b"k"],
                "1.2.3.4:5",
                "me",
                "b0",
            );
        }
        assert_eq!(log.len(), 3);
        let e = get(&log, None);
        assert_eq!(e.len(), 3);
        // newest first, ids continue
        assert_eq!(e[0][0], Reply::Integer(4));
        assert_eq!(e[2][0], Reply::Integer(2));
        assert_eq!(e[0][1], Reply::Integer(14));
        assert_eq!(e[0][2], Reply::Integer(104));
        assert_eq!(
            e[0][3],
            Reply::Array(vec![Reply::Bulk(b"GET"), Reply::Bulk(b"k")])
        );
        assert_eq!(e[0][4], Reply::Bulk(b"1.2.3.4:5"));
        assert_eq!(e[0][5], Reply::Bulk(b"me"));
        assert_eq!(e[0][6], Reply::Bulk(b"b0"));
        assert_eq!(get(&log, Some(1)).len(), 1);
        assert_eq!(get(&log, Some(0)).len(), 0);
        assert_eq!(get(&log, Some(usize::MAX)).len(), 3);
        log.reset();
        assert_eq!(log.len(), 0);
        log.maybe_push(1, 1000, [b"PING"], "a", "", "");
        assert_eq!(get(&log, None)[0][0], Reply::Integer(5));

        let mut off = SlowLog::new(10, -1);
        off.maybe_push(1, u64::MAX, [b"PING"], "a", "", "");
        assert!(off.is_empty());
        let mut all = SlowLog::new(10, 0);
        all.maybe_push(1, 0, [b"PING"], "a", "", "");
        assert_eq!(all.len(), 1);
        all.configure(0, 0);
        assert!(all.is_empty());
    }

    #[test]
    fn slowlog_truncation() {
        let mut log = SlowLog::new(10, 0);
        let big = [b'x'; 200];
        let args: Vec<&[u8]> = std::iter::once(&b"MSET"[..])
            .chain(std::iter::repeat_n(&big[..], 39))
            .collect(); // argc 40
        log.maybe_push(1, 5, &args, "a", "", "");
        let e = get(&log, None);
        let Reply::Array(a) = &e[0][3] else { panic!() };
        assert_eq!(a.len(), 32);
        assert_eq!(a[0], Reply::Bulk(b"MSET"));
        let mut want = vec![b'x'; 128];
        want.extend_from_slice(b"... (72 more bytes)");
        assert_eq!(a[1], Reply::Bulk(Box::leak(want.into_boxed_slice())));
        assert_eq!(a[31], Reply::Bulk(b"... (9 more arguments)"));

        // exactly 32 arguments of exactly 128 bytes: untouched
        let b128 = vec![b'y'; 128];
        let args: Vec<&[u8]> = std::iter::repeat_n(&b128[..], 32).collect();
        log.maybe_push(1, 5, args.iter(), "a", "", "");
        let e = get(&log, None);
        let Reply::Array(a) = &e[0][3] else { panic!() };
        assert_eq!(a.len(), 32);
        assert!(a
            .iter()
            .all(|x| *x == Reply::Bulk(Box::leak(b128.clone().into_boxed_slice()))));
    }
}
