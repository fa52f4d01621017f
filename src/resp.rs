//! RESP (REdis Serialization Protocol) handling for the proxy.
//!
//! * Request side: [`parse_command`] is an incremental, zero-copy parser for what clients send
//!   (multibulk `*N\r\n$L\r\n...` and inline `PING\r\n` commands). It follows Redis 7's
//!   `processMultibulkBuffer` / `processInlineBuffer` (networking.c) rule for rule, including
//!   the exact error texts (without the leading `ERR `) and Redis's leniencies: the byte after
//!   a header's `\r` and the two bytes after a bulk payload are skipped, not checked, exactly as
//!   Redis does, so a frame forwarded verbatim is read by Redis the same way we read it.
//! * Reply side (what backends send, RESP2 and RESP3): [`ReplyScanner`] measures one complete
//!   reply of any depth and size and resumes where it stopped (no recursion: an explicit stack
//!   of the open aggregates' remaining element counts); [`parse_reply`] builds a borrowed
//!   [`Reply`] tree (only used where replies are combined); [`aggregate_elements`] gives
//!   element byte ranges of an aggregate. The reply side is strict (CRLF checked) since a
//!   desynchronised backend stream must be detected, not guessed at; a scanner error means the
//!   stream is corrupt, and [`ReplyScanner::error_context`] shows the bytes around it.
//! * Encoders (`write_*`) append to a `Vec<u8>`; integers are formatted by hand.
//!
//! Invariants:
//! * A length read from the wire is never used to preallocate: a `*1000000000` header reserves
//!   nothing, collections only grow with bytes actually present in the buffer.
//! * The scanner has no nesting bound: Redis itself nests deeply (Redis 7.0 answers the script
//!   `local a = {}; local b = {a}; a[1] = b; return a` with 7,995 nested `*1` around an error,
//!   RESP3 maps and sets likewise). A call resumes where the previous one stopped (in the
//!   element cut short, its CR search where it ended), so a reply arriving in many reads costs
//!   time linear in its size; the stack's memory is proportional to the bytes of the reply
//!   already received (16 bytes per level, each level at least 4 bytes), and a deep reply's
//!   stack is freed once it is complete. Only tree building is bounded ([`MAX_TREE_DEPTH`]
//!   aggregates): a deeper reply fails the one request whose replies are being combined,
//!   never the stream.
//! * Streamed RESP3 (`$?`, `*?`...) is allowed by the RESP3 spec but never sent by Redis; the
//!   scanner treats it as a corrupt stream.
//! * [`ParseError::Incomplete`] / `Ok(None)` is not an error: the caller reads more and calls
//!   again with the same buffer start.
//! * Nothing here panics on any input bytes (fuzzed in the tests); arithmetic on wire lengths
//!   is checked.
//!
//! The error "Protocol error: expected '$', got 'X'" comes from a static table: printable and
//! control ASCII bytes are reproduced exactly as Redis would (CR and LF shown as a space, NUL
//! truncating the text after the opening quote, like Redis's `%c` into a C string); bytes
//! from 0x80 up (not representable alone in a `&'static str`) give
//! "Protocol error: expected '$', got something else".

/// Request-side limits; `Default` = Redis's own.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted multibulk count (Redis: `INT_MAX`).
    pub max_multibulk_len: usize,
    /// Largest accepted bulk length (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Longest inline line / count string without its terminator (`PROTO_INLINE_MAX_SIZE`).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_multibulk_len: i32::MAX as usize,
            max_bulk_len: 512 * 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// Request parse outcome other than success.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ParseError {
    /// More bytes are needed; not an error.
    Incomplete,
    /// Redis's error text without the leading "ERR "; the client connection is then closed.
    Protocol(&'static str),
}

pub const ERR_MULTIBULK_LEN: &str = "Protocol error: invalid multibulk length";
pub const ERR_BULK_LEN: &str = "Protocol error: invalid bulk length";
pub const ERR_INLINE_TOO_BIG: &str = "Protocol error: too big inline request";
pub const ERR_UNBALANCED: &str = "Protocol error: unbalanced quotes in request";
pub const ERR_MBULK_TOO_BIG: &str = "Protocol error: too big mbulk count string";
pub const ERR_BULK_TOO_BIG: &str = "Protocol error: too big bulk count string";
pub const ERR_EXPECTED_DOLLAR_OTHER: &str = "Protocol error: expected '$', got something else";

const EXP_PREFIX: &[u8] = b"Protocol error: expected '$', got '";
const EXP_LEN: usize = EXP_PREFIX.len() + 2;

const fn build_expected_table() -> [[u8; EXP_LEN]; 128] {
    let mut t = [[0u8; EXP_LEN]; 128];
    let mut c = 0;
    while c < 128 {
        let mut i = 0;
        while i < EXP_PREFIX.len() {
            t[c][i] = EXP_PREFIX[i];
            i += 1;
        }
        t[c][EXP_PREFIX.len()] = if c == b'\r' as usize || c == b'\n' as usize {
            b' '
        } else {
            c as u8
        };
        t[c][EXP_LEN - 1] = b'\'';
        c += 1;
    }
    t
}

static EXPECTED_TABLE: [[u8; EXP_LEN]; 128] = build_expected_table();

/// "Protocol error: expected '$', got 'X'" as a `&'static str` (see the module doc).
fn expected_dollar(b: u8) -> &'static str {
    let Some(row) = EXPECTED_TABLE.get(b as usize) else {
        return ERR_EXPECTED_DOLLAR_OTHER;
    };
    let row: &'static [u8] = if b == 0 {
        &row[..EXP_PREFIX.len()]
    } else {
        row
    };
    std::str::from_utf8(row).unwrap_or(ERR_EXPECTED_DOLLAR_OTHER)
}

/// Argument spans of the last parsed command. Reused across calls (no per-command allocation
/// once warm).
#[derive(Default, Debug)]
pub struct Args {
    /// (start, end) into the frame buffer (multibulk) or into `data` (inline).
    spans: Vec<(usize, usize)>,
    inline: bool,
    /// Decoded inline arguments (quotes and escapes resolved).
    data: Vec<u8>,
}

impl Args {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// i-th argument. `buf` is the same slice that was passed to [`parse_command`].
    /// Out of range (or a different, shorter buffer) yields an empty slice rather than a panic.
    pub fn get<'a>(&'a self, buf: &'a [u8], i: usize) -> &'a [u8] {
        let Some(&(s, e)) = self.spans.get(i) else {
            return &[];
        };
        let src = if self.inline { &self.data[..] } else { buf };
        src.get(s..e).unwrap_or(&[])
    }

    /// All arguments in order.
    pub fn iter<'a>(&'a self, buf: &'a [u8]) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        (0..self.spans.len()).map(move |i| self.get(buf, i))
    }

    fn clear(&mut self) {
        self.spans.clear();
        self.data.clear();
        self.inline = false;
    }
}

#[inline]
fn find(hay: &[u8], b: u8) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

/// Redis `string2ll`: optional '-', no '+', no leading zeros or spaces, "-0" rejected, must fit
/// in an i64.
#[inline]
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    match *digits.first()? {
        b'1'..=b'9' => {}
        b'0' if digits.len() == 1 && !neg => return Some(0),
        _ => return None,
    }
    if digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0; // 19 digits cannot overflow a u64
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
    }
    if neg {
        (v <= i64::MAX as u64 + 1).then(|| (v as i64).wrapping_neg())
    } else {
        (v <= i64::MAX as u64).then_some(v as i64)
    }
}

/// Parse one command at the start of `buf`. On `Ok(n)`: `args` holds its arguments and the
/// frame is `buf[..n]` (for multibulk, the exact bytes, forwardable verbatim). A zero-argument
/// command (`*0`, `*-1`, blank inline line) is `Ok(n)` with empty `args`: skip it.
pub fn parse_command(buf: &[u8], limits: &Limits, args: &mut Args) -> Result<usize, ParseError> {
    args.clear();
    match buf.first() {
        None => Err(ParseError::Incomplete),
        Some(b'*') => parse_multibulk(buf, limits, args),
        Some(_) => parse_inline(buf, limits, args),
    }
}

/// A complete, well-formed line holding a plain non-negative number at `buf[at..]` (the byte
/// after the type byte): (value, index after its CRLF). None for anything else (incomplete,
/// sign, leading zero, over 18 digits, stray byte): the caller then takes its general path,
/// which gives the exact error or waits for more bytes.
#[inline]
fn line_uint(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let digits = buf.get(at..)?;
    let mut v: u64 = 0;
    let mut i = 0;
    while let Some(&c) = digits.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    // 1..=18 digits (no overflow), no leading zero, then CRLF.
    if i == 0 || i > 18 || (digits[0] == b'0' && i > 1) || digits.get(i..i + 2)? != b"\r\n" {
        return None;
    }
    Some((v, at + i + 2))
}

/// The common request, complete and well formed (`*N` then N `$len` bulks): parsed in one
/// pass. None: take the general path (which starts over).
#[inline]
fn fast_multibulk(buf: &[u8], limits: &Limits, args: &mut Args) -> Option<usize> {
    let (count, mut pos) = line_uint(buf, 1)?;
    if count == 0 || count > limits.max_multibulk_len as u64 {
        return None;
    }
    for _ in 0..count {
        if *buf.get(pos)? != b'$' {
            return None;
        }
        let (len, start) = line_uint(buf, pos + 1)?;
        if len > limits.max_bulk_len as u64 {
            return None;
        }
        let end = start + len as usize;
        if end + 2 > buf.len() {
            return None;
        }
        args.spans.push((start, end));
        pos = end + 2;
    }
    Some(pos)
}

fn parse_multibulk(buf: &[u8], limits: &Limits, args: &mut Args) -> Result<usize, ParseError> {
    if let Some(n) = fast_multibulk(buf, limits, args) {
        return Ok(n);
    }
    args.clear();
    parse_multibulk_general(buf, limits, args)
}

fn parse_multibulk_general(
    buf: &[u8],
    limits: &Limits,
    args: &mut Args,
) -> Result<usize, ParseError> {
    let Some(nl) = find(buf, b'\r') else {
        return Err(if buf.len() > limits.max_inline_len {
            ParseError::Protocol(ERR_MBULK_TOO_BIG)
        } else {
            ParseError::Incomplete
        });
    };
    if nl + 2 > buf.len() {
        return Err(ParseError::Incomplete);
    }
    let count = match parse_i64(&buf[1..nl]) {
        Some(v) if v <= 0 || v as u64 <= limits.max_multibulk_len as u64 => v,
        _ => return Err(ParseError::Protocol(ERR_MULTIBULK_LEN)),
    };
    let mut pos = nl + 2;
    for _ in 0..count.max(0) {
        let rest = &buf[pos..];
        let Some(nl) = find(rest, b'\r') else {
            return Err(if rest.len() > limits.max_inline_len {
                ParseError::Protocol(ERR_BULK_TOO_BIG)
            } else {
                ParseError::Incomplete
            });
        };
        if nl + 2 > rest.len() {
            return Err(ParseError::Incomplete);
        }
        if rest[0] != b'$' {
            return Err(ParseError::Protocol(expected_dollar(rest[0])));
        }
        let len = match parse_i64(&rest[1..nl]) {
            Some(v) if v >= 0 && v as u64 <= limits.max_bulk_len as u64 => v as usize,
            _ => return Err(ParseError::Protocol(ERR_BULK_LEN)),
        };
        let start = pos + nl + 2;
        match start.checked_add(len).and_then(|e| e.checked_add(2)) {
            Some(next) if next <= buf.len() => {
                args.spans.push((start, start + len));
                pos = next;
            }
            _ => return Err(ParseError::Incomplete),
        }
    }
    Ok(pos)
}

fn parse_inline(buf: &[u8], limits: &Limits, args: &mut Args) -> Result<usize, ParseError> {
    let Some(nl) = find(buf, b'\n') else {
        return Err(if buf.len() > limits.max_inline_len {
            ParseError::Protocol(ERR_INLINE_TOO_BIG)
        } else {
            ParseError::Incomplete
        });
    };
    let end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    args.inline = true;
    if split_args(&buf[..end], args).is_none() {
        args.clear();
        return Err(ParseError::Protocol(ERR_UNBALANCED));
    }
    Ok(nl + 1)
}

#[inline]
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Redis `sdssplitargs` on one inline line (C-string semantics: a NUL byte ends the line).
/// Decoded arguments go to `args.data`, spans into it. `None` = unbalanced quotes.
fn split_args(line: &[u8], args: &mut Args) -> Option<()> {
    let line = match find(line, 0) {
        Some(p) => &line[..p],
        None => line,
    };
    let at = |i: usize| -> u8 { line.get(i).copied().unwrap_or(0) };
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(());
        }
        let start = args.data.len();
        let (mut inq, mut insq, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if inq {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(h), Some(l)) = (hex_val(at(p + 2)), hex_val(at(p + 3))) {
                        args.data.push(h * 16 + l);
                        p += 3;
                    } else {
                        // "\x" not followed by two hex digits: generic escape, yields 'x'.
                        p += 1;
                        args.data.push(b'x');
                    }
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    args.data.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        o => o,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    args.data.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    args.data.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    args.data.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    _ => args.data.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.spans.push((start, args.data.len()));
    }
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// Deepest [`Reply`] tree [`parse_reply`] builds: building it recurses (so do its `write` and
/// its drop). Only the paths that combine replies build trees, and no reply they combine comes
/// near this; a deeper one fails that one request with [`RE_DEPTH`]. The scanner itself has no
/// depth bound.
pub const MAX_TREE_DEPTH: usize = 128;

const RE_TYPE: &str = "Protocol error: unknown reply type";
const RE_LEN: &str = "Protocol error: invalid reply length";
const RE_CRLF: &str = "Protocol error: expected CRLF in reply";
const RE_INT: &str = "Protocol error: invalid integer reply";
const RE_BOOL: &str = "Protocol error: invalid boolean reply";
const RE_NULL: &str = "Protocol error: invalid null reply";
const RE_STREAMED: &str = "Protocol error: streamed RESP3 replies are not supported";
/// [`parse_reply`] only: the reply is well formed but nests more than [`MAX_TREE_DEPTH`]
/// aggregates.
pub const RE_DEPTH: &str = "reply nested too deeply to combine";
const RE_INTERNAL: &str = "Protocol error: inconsistent reply";

/// Longest header line (without CRLF) for numeric reply types; longer without CRLF = garbage.
const MAX_NUM_LINE: usize = 32;

/// Bytes shown on each side of the offending byte by [`excerpt`].
const EXCERPT_SIDE: usize = 40;

/// Scanner stack entries kept after a reply completes; a deeper reply's stack is freed.
const KEEP_STACK: usize = 1024;

/// One step of reading the element at `pos`.
enum Step {
    /// Not enough bytes; resume the CR search at this index.
    Need(usize),
    /// A complete non-aggregate element ending at this index (exclusive).
    Leaf(usize),
    /// An aggregate header: element count (maps/attributes doubled), whether it is an
    /// attribute, index after the header.
    Agg(u64, bool, usize),
}

/// Reads the element header at `buf[pos]`; `from` (>= pos) is where to resume the CR search.
fn element(buf: &[u8], pos: usize, from: usize) -> Result<Step, &'static str> {
    let Some(&ty) = buf.get(pos) else {
        return Ok(Step::Need(pos));
    };
    let numeric = match ty {
        b'+' | b'-' | b',' | b'(' => false,
        b':' | b'$' | b'*' | b'_' | b'#' | b'!' | b'=' | b'%' | b'~' | b'>' | b'|' => true,
        _ => return Err(RE_TYPE),
    };
    let from = from.max(pos + 1);
    let cr = match buf.get(from..).and_then(|s| find(s, b'\r')) {
        Some(i) => from + i,
        None => {
            if numeric && buf.len() - pos > MAX_NUM_LINE + 1 {
                return Err(RE_LEN);
            }
            return Ok(Step::Need(buf.len().max(from)));
        }
    };
    if numeric && cr - pos > MAX_NUM_LINE + 1 {
        return Err(RE_LEN);
    }
    match buf.get(cr + 1) {
        None => return Ok(Step::Need(cr)),
        Some(b'\n') => {}
        Some(_) => return Err(RE_CRLF),
    }
    let line = &buf[pos + 1..cr];
    let next = cr + 2;
    match ty {
        b'+' | b'-' | b',' | b'(' => Ok(Step::Leaf(next)),
        b':' => parse_i64(line).map(|_| Step::Leaf(next)).ok_or(RE_INT),
        b'_' if line.is_empty() => Ok(Step::Leaf(next)),
        b'_' => Err(RE_NULL),
        b'#' if line == b"t" || line == b"f" => Ok(Step::Leaf(next)),
        b'#' => Err(RE_BOOL),
        _ if line == b"?" => Err(RE_STREAMED),
        b'$' | b'!' | b'=' => {
            let len = match parse_i64(line) {
                Some(-1) if ty == b'$' => return Ok(Step::Leaf(next)),
                Some(v) if v >= 0 => usize::try_from(v).map_err(|_| RE_LEN)?,
                _ => return Err(RE_LEN),
            };
            let end = next
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or(RE_LEN)?;
            if end > buf.len() {
                return Ok(Step::Need(cr));
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(RE_CRLF);
            }
            Ok(Step::Leaf(end))
        }
        _ => {
            // * % ~ > |
            let n = match parse_i64(line) {
                Some(-1) if ty == b'*' => return Ok(Step::Leaf(next)),
                Some(v) if v >= 0 => v as u64,
                _ => return Err(RE_LEN),
            };
            let pairs = matches!(ty, b'%' | b'|');
            Ok(Step::Agg(if pairs { n * 2 } else { n }, ty == b'|', next))
        }
    }
}

/// After `element(buf, pos, _)` failed: the offset of the byte the error is about (a CR not
/// followed by LF, a blob's missing terminator), else the element's start (unknown type, bad
/// number, over-long header line).
#[cold]
fn bad_byte(buf: &[u8], pos: usize) -> usize {
    let Some(cr) = buf.get(pos + 1..).and_then(|s| find(s, b'\r')) else {
        return pos;
    };
    let cr = pos + 1 + cr;
    match buf.get(cr + 1) {
        Some(b'\n') => {}
        Some(_) => return cr + 1,
        None => return pos,
    }
    if matches!(buf[pos], b'$' | b'!' | b'=') {
        let end = parse_i64(&buf[pos + 1..cr])
            .and_then(|v| usize::try_from(v).ok())
            .and_then(|len| (cr + 2).checked_add(len));
        if let Some(t) = end.and_then(|e| buf.get(e..e.checked_add(2)?)) {
            if t != b"\r\n" {
                return end.unwrap_or(pos);
            }
        }
    }
    pos
}

/// Resumable scanner: measures one complete reply, of any depth and size, without recursion
/// and without allocating per reply (its stack is reused).
///
/// State between calls: the offset of the next element to read, where to resume that
/// element's CR search, and an explicit stack of the open aggregates' remaining element
/// counts. A call therefore reads each element header once (an element cut short: its header
/// again, its CR search not), whatever the nesting: a reply arriving in many small reads costs
/// time linear in its size, and stack memory of 16 bytes per level, each level being at least
/// 4 bytes of the reply itself.
#[derive(Default, Debug)]
pub struct ReplyScanner {
    /// Start of the next element to read.
    pos: usize,
    /// Where to resume the CR search for the element at `pos`.
    hint: usize,
    /// Open aggregates, outermost first: (elements still expected, is attribute).
    stack: Vec<(u64, bool)>,
    /// After an `Err`: offset of the offending byte in the buffer of that call (kept until
    /// [`ReplyScanner::reset`]).
    failed_at: Option<usize>,
    /// Element headers read, over the scanner's life (tests: no rescans).
    #[cfg(test)]
    headers_read: usize,
}

impl ReplyScanner {
    /// `buf` starts at the beginning of the reply being measured; between calls that returned
    /// `Ok(None)` the caller only appends to `buf`. `Ok(Some(n))`: the reply is `buf[..n]` and
    /// the scanner is reset. `Err`: the stream is corrupt (the scanner is reset too, and
    /// [`ReplyScanner::error_context`] shows where).
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, &'static str> {
        if self.pos == 0 && self.stack.is_empty() {
            if let Some(n) = fast_reply(buf) {
                self.hint = 0;
                return Ok(Some(n));
            }
        }
        loop {
            #[cfg(test)]
            {
                self.headers_read += 1;
            }
            let step = match element(buf, self.pos, self.hint) {
                Ok(s) => s,
                Err(e) => {
                    let at = bad_byte(buf, self.pos);
                    self.reset();
                    self.failed_at = Some(at);
                    return Err(e);
                }
            };
            match step {
                Step::Need(h) => {
                    self.hint = h;
                    return Ok(None);
                }
                Step::Leaf(end) => {
                    self.pos = end;
                    self.hint = end;
                    if self.complete_one() {
                        self.finish();
                        return Ok(Some(end));
                    }
                }
                Step::Agg(n, attr, next) => {
                    self.pos = next;
                    self.hint = next;
                    if n > 0 {
                        self.stack.push((n, attr));
                    } else if !attr && self.complete_one() {
                        self.finish();
                        return Ok(Some(next));
                    }
                }
            }
        }
    }

    /// One element finished: pop finished aggregates. True when the whole reply is complete.
    fn complete_one(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            top.0 -= 1;
            if top.0 > 0 {
                return false;
            }
            let attr = top.1;
            self.stack.pop();
            if attr {
                // The attribute is done; the reply it decorates is still to come.
                return false;
            }
        }
        true
    }

    /// A reply is complete (the stack is empty): ready for the next one. A deep reply's stack
    /// memory is given back.
    #[inline]
    fn finish(&mut self) {
        self.pos = 0;
        self.hint = 0;
        if self.stack.capacity() > KEEP_STACK {
            self.stack = Vec::new();
        }
    }

    /// Forget the reply in progress (and the last error).
    pub fn reset(&mut self) {
        self.stack.clear();
        self.finish();
        self.failed_at = None;
    }

    /// After [`ReplyScanner::scan`] returned `Err` for `buf`: the bytes around the offending
    /// one, escaped and bounded (see [`excerpt`]), for the log. `None` if no scan failed
    /// since the last [`ReplyScanner::reset`].
    pub fn error_context(&self, buf: &[u8]) -> Option<String> {
        self.failed_at.map(|at| excerpt(buf, at))
    }
}

/// `buf[at]` in context, for a log line: up to [`EXCERPT_SIDE`] bytes each side, escaped
/// (`\r`, `\n`, `\xNN`...), `^` marking the offset:
/// `byte 12 of 34: "*1\r\n*1\r\n*1\r\n" ^ "?garbage\r\n"...`.
pub fn excerpt(buf: &[u8], at: usize) -> String {
    let at = at.min(buf.len());
    let lo = at.saturating_sub(EXCERPT_SIDE);
    let hi = buf.len().min(at + EXCERPT_SIDE);
    format!(
        "byte {at} of {}: {}\"{}\" ^ \"{}\"{}",
        buf.len(),
        if lo > 0 { "..." } else { "" },
        buf[lo..at].escape_ascii(),
        buf[at..hi].escape_ascii(),
        if hi < buf.len() { "..." } else { "" },
    )
}

/// The common replies (status, error, bulk string, and flat arrays of those, as MGET
/// returns), complete and well formed: their length in one pass. None: take the general path.
#[inline]
fn fast_reply(buf: &[u8]) -> Option<usize> {
    if buf.first() != Some(&b'*') {
        return fast_leaf(buf);
    }
    let (n, mut pos) = line_uint(buf, 1)?;
    for _ in 0..n {
        pos += fast_leaf(buf.get(pos..)?)?;
    }
    Some(pos)
}

#[inline]
fn fast_leaf(buf: &[u8]) -> Option<usize> {
    match *buf.first()? {
        b'$' if buf.starts_with(b"$-1\r\n") => Some(5),
        b'$' => {
            let (len, start) = line_uint(buf, 1)?;
            let end = start
                .checked_add(usize::try_from(len).ok()?)?
                .checked_add(2)?;
            (buf.get(end - 2..end)? == b"\r\n").then_some(end)
        }
        b'+' | b'-' => {
            let cr = find(buf, b'\r')?;
            (buf.get(cr + 1) == Some(&b'\n')).then_some(cr + 2)
        }
        _ => None,
    }
}

/// Stateless convenience: length of the complete reply at `buf` start.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    ReplyScanner::default().scan(buf)
}

/// A parsed reply borrowing from the buffer (used only where replies are combined).
/// Attributes (`|`) are skipped: the reply they decorate is returned, and the reported length
/// includes them.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    Bulk(&'a [u8]),
    /// `$-1`, `*-1`, `_`
    Nil,
    Array(Vec<Reply<'a>>),
    Double(&'a [u8]),
    Boolean(bool),
    BigNumber(&'a [u8]),
    BlobError(&'a [u8]),
    /// Includes the "txt:" prefix.
    Verbatim(&'a [u8]),
    Map(Vec<(Reply<'a>, Reply<'a>)>),
    Set(Vec<Reply<'a>>),
    Push(Vec<Reply<'a>>),
}

/// Parse the complete reply at `buf` start; `Ok(None)` if incomplete. A well-formed reply
/// nesting more than [`MAX_TREE_DEPTH`] aggregates gives `Err(RE_DEPTH)` (attributes, skipped,
/// do not count).
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, &'static str> {
    let Some(n) = reply_len(buf)? else {
        return Ok(None);
    };
    // The reply is complete and well formed; `build` recurses at most MAX_TREE_DEPTH deep.
    let (r, end) = build(&buf[..n], 0, 0)?;
    if end != n {
        return Err(RE_INTERNAL);
    }
    Ok(Some((r, end)))
}

/// The reply at `pos`, `depth` aggregates down.
fn build(buf: &[u8], mut pos: usize, depth: usize) -> Result<(Reply<'_>, usize), &'static str> {
    loop {
        match element(buf, pos, pos)? {
            Step::Need(_) => return Err(RE_INTERNAL),
            Step::Leaf(end) => return Ok((leaf(buf, pos, end)?, end)),
            Step::Agg(n, true, next) => {
                // Attribute: skip its pairs, then parse the reply it decorates.
                pos = next;
                for _ in 0..n {
                    pos += reply_len(&buf[pos..])?.ok_or(RE_INTERNAL)?;
                }
            }
            Step::Agg(_, false, _) if depth >= MAX_TREE_DEPTH => return Err(RE_DEPTH),
            Step::Agg(n, false, mut next) => {
                let ty = buf[pos];
                // Never trust the count: at most one element per 3 bytes actually present.
                let cap = (n as usize).min((buf.len() - next) / 3);
                if ty == b'%' {
                    let mut pairs = Vec::with_capacity(cap / 2);
                    for _ in 0..n / 2 {
                        let (k, e) = build(buf, next, depth + 1)?;
                        let (v, e) = build(buf, e, depth + 1)?;
                        pairs.push((k, v));
                        next = e;
                    }
                    return Ok((Reply::Map(pairs), next));
                }
                let mut items = Vec::with_capacity(cap);
                for _ in 0..n {
                    let (r, e) = build(buf, next, depth + 1)?;
                    items.push(r);
                    next = e;
                }
                let r = match ty {
                    b'~' => Reply::Set(items),
                    b'>' => Reply::Push(items),
                    _ => Reply::Array(items),
                };
                return Ok((r, next));
            }
        }
    }
}

/// Value of a complete non-aggregate element `buf[pos..end]`.
fn leaf(buf: &[u8], pos: usize, end: usize) -> Result<Reply<'_>, &'static str> {
    let el = &buf[pos..end];
    let cr = find(el, b'\r').ok_or(RE_INTERNAL)?;
    let line = &el[1..cr];
    let blob = || el.get(cr + 2..el.len().saturating_sub(2)).unwrap_or(&[]);
    Ok(match el[0] {
        b'+' => Reply::Simple(line),
        b'-' => Reply::Error(line),
        b':' => Reply::Integer(parse_i64(line).ok_or(RE_INT)?),
        b'$' if line == b"-1" => Reply::Nil,
        b'$' => Reply::Bulk(blob()),
        b'*' | b'_' => Reply::Nil,
        b',' => Reply::Double(line),
        b'#' => Reply::Boolean(line == b"t"),
        b'(' => Reply::BigNumber(line),
        b'!' => Reply::BlobError(blob()),
        b'=' => Reply::Verbatim(blob()),
        _ => return Err(RE_INTERNAL),
    })
}

impl Reply<'_> {
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_) | Reply::BlobError(_))
    }

    /// Re-encode. With `resp3 == false`: map -> flat array, set/push -> array, double and big
    /// number -> bulk, boolean -> integer 1/0, verbatim -> bulk without its "xxx:" prefix,
    /// blob error -> simple error, nil -> `$-1`.
    pub fn write(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Simple(s) => write_simple(out, s),
            Reply::Error(e) => write_error(out, e),
            Reply::Integer(v) => write_int(out, *v),
            Reply::Bulk(b) => write_bulk(out, b),
            Reply::Nil => write_nil(out, resp3),
            Reply::Double(d) => write_double(out, d, resp3),
            Reply::Boolean(b) => write_bool(out, *b, resp3),
            Reply::BigNumber(b) if resp3 => write_line(out, b'(', b),
            Reply::BigNumber(b) => write_bulk(out, b),
            Reply::BlobError(b) if resp3 => write_blob(out, b'!', b),
            Reply::BlobError(b) => write_error(out, b),
            Reply::Verbatim(v) if resp3 => write_blob(out, b'=', v),
            Reply::Verbatim(v) => match v.get(3) {
                Some(b':') => write_bulk(out, &v[4..]),
                _ => write_bulk(out, v),
            },
            Reply::Array(items) => {
                write_array_len(out, items.len());
                items.iter().for_each(|r| r.write(out, resp3));
            }
            Reply::Set(items) => {
                write_set_len(out, items.len(), resp3);
                items.iter().for_each(|r| r.write(out, resp3));
            }
            Reply::Push(items) => {
                write_header(out, if resp3 { b'>' } else { b'*' }, items.len() as u64);
                items.iter().for_each(|r| r.write(out, resp3));
            }
            Reply::Map(pairs) => {
                write_map_len(out, pairs.len(), resp3);
                for (k, v) in pairs {
                    k.write(out, resp3);
                    v.write(out, resp3);
                }
            }
        }
    }
}

/// For an aggregate reply at `buf` start (`*` `~` `>` `%`, optionally preceded by attributes),
/// its type byte, with `out` set to each element's byte range (map: keys and values, 2*count
/// ranges). `Ok(None)` if incomplete or not an aggregate (`*-1` counts as nil, not aggregate).
pub fn aggregate_elements(
    buf: &[u8],
    out: &mut Vec<(usize, usize)>,
) -> Result<Option<u8>, &'static str> {
    out.clear();
    let r = aggregate_ranges(buf, out);
    if !matches!(r, Ok(Some(_))) {
        out.clear();
    }
    r
}

fn aggregate_ranges(buf: &[u8], out: &mut Vec<(usize, usize)>) -> Result<Option<u8>, &'static str> {
    let mut pos = 0;
    loop {
        let Step::Agg(n, attr, next) = element(buf, pos, pos)? else {
            return Ok(None);
        };
        let ty = buf[pos];
        pos = next;
        for _ in 0..n {
            let Some(len) = reply_len(&buf[pos..])? else {
                return Ok(None);
            };
            if !attr {
                out.push((pos, pos + len));
            }
            pos += len;
        }
        if !attr {
            return Ok(Some(ty));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------------------------

/// Writes the decimal digits of `v` so that they end just before `buf[end]`; returns where
/// they start.
fn digits_before(buf: &mut [u8], end: usize, mut v: u64) -> usize {
    let mut i = end;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = [0u8; 20];
    let i = digits_before(&mut b, 20, v);
    out.extend_from_slice(&b[i..]);
}

/// Decimal digits of `v`.
pub fn write_usize(out: &mut Vec<u8>, v: usize) {
    write_u64(out, v as u64);
}

/// `ty` + decimal `n` + CRLF, assembled on the stack and appended in one copy.
fn write_header(out: &mut Vec<u8>, ty: u8, n: u64) {
    let mut b = [0u8; 23];
    b[21] = b'\r';
    b[22] = b'\n';
    let mut i = digits_before(&mut b, 21, n);
    i -= 1;
    b[i] = ty;
    out.extend_from_slice(&b[i..]);
}

/// `ty` + line with CR/LF replaced by spaces + CRLF.
fn write_line(out: &mut Vec<u8>, ty: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.push(ty);
    let start = out.len();
    out.extend_from_slice(s);
    for c in &mut out[start..] {
        if *c == b'\r' || *c == b'\n' {
            *c = b' ';
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn write_blob(out: &mut Vec<u8>, ty: u8, b: &[u8]) {
    out.reserve(b.len() + 16);
    write_header(out, ty, b.len() as u64);
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// `+s\r\n` (CR/LF inside `s` replaced by spaces).
pub fn write_simple(out: &mut Vec<u8>, s: &[u8]) {
    write_line(out, b'+', s);
}

/// `-msg\r\n`; `msg` includes its prefix (e.g. `ERR unknown command`); CR/LF become spaces.
pub fn write_error(out: &mut Vec<u8>, msg: &[u8]) {
    write_line(out, b'-', msg);
}

pub fn write_int(out: &mut Vec<u8>, v: i64) {
    out.push(b':');
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
    out.extend_from_slice(b"\r\n");
}

pub fn write_bulk(out: &mut Vec<u8>, b: &[u8]) {
    write_blob(out, b'$', b);
}

/// `$-1\r\n` or (RESP3) `_\r\n`.
pub fn write_nil(out: &mut Vec<u8>, resp3: bool) {
    out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" });
}

pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    write_header(out, b'*', n as u64);
}

/// `%n` or (RESP2) `*2n`.
pub fn write_map_len(out: &mut Vec<u8>, n_pairs: usize, resp3: bool) {
    if resp3 {
        write_header(out, b'%', n_pairs as u64);
    } else {
        write_header(out, b'*', (n_pairs as u64).saturating_mul(2));
    }
}

/// `~n` or (RESP2) `*n`.
pub fn write_set_len(out: &mut Vec<u8>, n: usize, resp3: bool) {
    write_header(out, if resp3 { b'~' } else { b'*' }, n as u64);
}

/// `,v` or (RESP2) a bulk string.
pub fn write_double(out: &mut Vec<u8>, v: &[u8], resp3: bool) {
    if resp3 {
        write_line(out, b',', v);
    } else {
        write_bulk(out, v);
    }
}

/// `#t`/`#f` or (RESP2) `:1`/`:0`.
pub fn write_bool(out: &mut Vec<u8>, v: bool, resp3: bool) {
    out.extend_from_slice(match (resp3, v) {
        (true, true) => b"#t\r\n",
        (true, false) => b"#f\r\n",
        (false, true) => b":1\r\n",
        (false, false) => b":0\r\n",
    });
}

/// `=len\r\nfmt:text\r\n` or (RESP2) a bulk of `text`.
pub fn write_verbatim(out: &mut Vec<u8>, fmt: &[u8; 3], text: &[u8], resp3: bool) {
    if !resp3 {
        return write_bulk(out, text);
    }
    out.reserve(text.len() + 20);
    write_header(out, b'=', text.len() as u64 + 4);
    out.extend_from_slice(fmt);
    out.push(b':');
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// Multibulk-encode a command.
pub fn write_command<'b, I: IntoIterator<Item = &'b [u8]>>(out: &mut Vec<u8>, args: I)
where
    I::IntoIter: ExactSizeIterator,
{
    let it = args.into_iter();
    write_array_len(out, it.len());
    for a in it {
        write_bulk(out, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<Vec<Vec<u8>>, ParseError>;

    /// Parse one command, returning (args, frame length).
    fn cmd(buf: &[u8]) -> (R, usize) {
        let mut a = Args::default();
        match parse_command(buf, &Limits::default(), &mut a) {
            Ok(n) => (Ok(a.iter(buf).map(|x| x.to_vec()).collect()), n),
            Err(e) => (Err(e), 0),
        }
    }

    fn v(args: &[&str]) -> R {
        Ok(args.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    fn proto(s: &'static str) -> R {
        Err(ParseError::Protocol(s))
    }

    const INC: R = Err(ParseError::Incomplete);

    /// The one-pass paths (requests and replies) agree with the general parsers on tricky
    /// numbers, on every prefix of each input: same result, same length, same arguments.
    #[test]
    fn fast_paths_agree_with_general_parsers() {
        let requests: &[&[u8]] = &[
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*01\r\n$4\r\nPING\r\n",
            b"*1\r\n$04\r\nPING\r\n",
            b"*1\r\n$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*1\r\n$+4\r\nPING\r\n",
            b"*1\r\n$4\rPING\r\n",
            b"*1\r\n$4\r\nPINGxx",
            b"*2\r\n$3\r\nGET\r\n:3\r\n",
            b"*1\r\n$1234567890123456789\r\nx\r\n",
            b"*99999999999999999999\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n",
        ];
        let limits = Limits::default();
        for req in requests {
            for end in 0..=req.len() {
                let buf = &req[..end];
                let mut fast = Args::default();
                let got = parse_command(buf, &limits, &mut fast);
                let mut general = Args::default();
                let want = if buf.first() == Some(&b'*') {
                    parse_multibulk_general(buf, &limits, &mut general)
                } else {
                    parse_command(buf, &limits, &mut general)
                };
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(buf));
                if got.is_ok() {
                    let a: Vec<_> = fast.iter(buf).collect();
                    let b: Vec<_> = general.iter(buf).collect();
                    assert_eq!(a, b, "{:?}", String::from_utf8_lossy(buf));
                }
            }
        }
        let replies: &[&[u8]] = &[
            b"$3\r\nabc\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$03\r\nabc\r\n",
            b"$3\r\nabcd\r\n",
            b"$3\r\nab\r\n\r\n",
            b"+OK\r\n",
            b"+OK\rX\n",
            b"-ERR x\r\n",
            b":12\r\n",
            b"$-2\r\n",
            b"*3\r\n$1\r\na\r\n$-1\r\n+OK\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"*2\r\n*1\r\n$1\r\na\r\n$0\r\n\r\n",
            b"*0\r\n",
            b"*-1\r\n",
            b"*02\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"*1\r\n$2\r\nab\r\n$",
        ];
        for r in replies {
            for end in 0..=r.len() {
                let buf = &r[..end];
                let got = ReplyScanner::default().scan(buf);
                let mut general = ReplyScanner::default();
                // The general scanner alone: one byte at a time is never the fast path.
                let want = (|| {
                    for i in 1..=buf.len() {
                        match general.scan(&buf[..i])? {
                            Some(n) => return Ok(Some(n)),
                            None => continue,
                        }
                    }
                    Ok(None)
                })();
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(buf));
            }
        }
    }

    /// Tiny deterministic PRNG (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn multibulk_table() {
        let big = format!("*{}", "1".repeat(64 * 1024 + 1));
        let bigb = format!("*1\r\n${}", "1".repeat(64 * 1024 + 1));
        let cases: Vec<(&[u8], R)> = vec![
            (
                b"*2\r\n$3\r\nGET\r\n$10\r\nkey:000001\r\n",
                v(&["GET", "key:000001"]),
            ),
            (b"*1\r\n$0\r\n\r\n", v(&[""])),
            (
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n",
                v(&["SET", "k", "a\r\nb"]),
            ),
            (b"*0\r\n", v(&[])),
            (b"*-1\r\n", v(&[])),
            (b"*-5\r\n", v(&[])),
            (b"*1\r\n$3\r\nGETxx", v(&["GET"])), // Redis skips the bulk's CRLF unchecked
            (b"*2\r\n$3\r\nGET\r\n", INC),
            (b"*1000000000\r\n", INC),
            (b"*1\r\n$536870912\r\n", INC),
            (b"*1\r\n", INC),
            (b"*", INC),
            (b"*1\r", INC),
            (b"*abc\r\n", proto(ERR_MULTIBULK_LEN)),
            (b"*\r\n", proto(ERR_MULTIBULK_LEN)),
            (b"*01\r\n", proto(ERR_MULTIBULK_LEN)),
            (b"*+1\r\n", proto(ERR_MULTIBULK_LEN)),
            (b"*2147483648\r\n", proto(ERR_MULTIBULK_LEN)),
            (b"*99999999999999999999\r\n", proto(ERR_MULTIBULK_LEN)),
            (b"*1\r\n$-5\r\n", proto(ERR_BULK_LEN)),
            (b"*1\r\n$-1\r\n", proto(ERR_BULK_LEN)),
            (b"*1\r\n$99999999999\r\n", proto(ERR_BULK_LEN)),
            (b"*1\r\n$536870913\r\n", proto(ERR_BULK_LEN)),
            (b"*1\r\n$\r\n", proto(ERR_BULK_LEN)),
            (b"*1\r\n$1x\r\n", proto(ERR_BULK_LEN)),
            (
                b"*1\r\nx\r\n",
                proto("Protocol error: expected '$', got 'x'"),
            ),
            (
                b"*1\r\n:1\r\n",
                proto("Protocol error: expected '$', got ':'"),
            ),
            (
                b"*1\r\n\r\n",
                proto("Protocol error: expected '$', got ' '"),
            ),
            (
                b"*1\r\n\x00\r\n",
                proto("Protocol error: expected '$', got '"),
            ),
            (
                b"*1\r\n\x01\r\n",
                proto("Protocol error: expected '$', got '\x01'"),
            ),
            (b"*1\r\n\xff\r\n", proto(ERR_EXPECTED_DOLLAR_OTHER)),
            (big.as_bytes(), proto(ERR_MBULK_TOO_BIG)),
            (&big.as_bytes()[..64 * 1024], INC),
            (bigb.as_bytes(), proto(ERR_BULK_TOO_BIG)),
        ];
        for (input, want) in cases {
            let (got, n) = cmd(input);
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
            if got.is_ok() {
                assert_eq!(n, input.len(), "{:?}", String::from_utf8_lossy(input));
            }
        }
        // Count string exactly at the limit plus CRLF: parsed, and rejected as invalid number.
        let s = format!("*{}\r\n", "0".repeat(65535));
        assert_eq!(cmd(s.as_bytes()).0, proto(ERR_MULTIBULK_LEN));
        // Frame length stops at the frame end in a pipeline.
        let (got, n) = cmd(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!((got, n), (v(&["PING"]), 14));
    }

    #[test]
    fn inline_table() {
        let big = "a".repeat(64 * 1024 + 1);
        let cases: Vec<(&[u8], R)> = vec![
            (b"PING\r\n", v(&["PING"])),
            (b"PING\n", v(&["PING"])),
            (b" \tGET  key \r\n", v(&["GET", "key"])),
            (b"\n", v(&[])),
            (b"\r\n", v(&[])),
            (b" \t\x0b\r\n", v(&[])),
            (
                b"SET k \"a b\\n\\r\\t\\b\\a\\\\\\\"\\x41\\xzz\"\n",
                v(&["SET", "k", "a b\n\r\t\x08\x07\\\"Axzz"]),
            ),
            (b"SET k 'it\\'s \"x\"'\n", v(&["SET", "k", "it's \"x\""])),
            (b"SET k 'a\\n'\n", v(&["SET", "k", "a\\n"])),
            (b"ECHO \"\"\n", v(&["ECHO", ""])),
            (b"ECHO ''\n", v(&["ECHO", ""])),
            (b"ECHO a\"b c\"\n", v(&["ECHO", "ab c"])),
            (b"ECHO a\rb\n", v(&["ECHO", "a", "b"])),
            (b"ECHO a\x00 b\n", v(&["ECHO", "a"])),
            (b"ECHO a\x0bb\n", v(&["ECHO", "a\x0bb"])),
            (b"ECHO \"a\"\x0b\n", v(&["ECHO", "a"])),
            (b"PING", INC),
            (b"PING\r", INC),
            (b"ECHO \"a\n", proto(ERR_UNBALANCED)),
            (b"ECHO 'a\r\n", proto(ERR_UNBALANCED)),
            (b"ECHO \"a\"x\n", proto(ERR_UNBALANCED)),
            (b"ECHO 'a'x\n", proto(ERR_UNBALANCED)),
            (b"ECHO \"a\\\"\n", proto(ERR_UNBALANCED)),
            (b"ECHO 'a\\'\n", proto(ERR_UNBALANCED)),
            (b"ECHO \"a\\\n", proto(ERR_UNBALANCED)),
            (b"ECHO \"a\x00\"\n", proto(ERR_UNBALANCED)),
            (big.as_bytes(), proto(ERR_INLINE_TOO_BIG)),
            (&big.as_bytes()[..64 * 1024], INC),
        ];
        for (input, want) in cases {
            let (got, n) = cmd(input);
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
            if got.is_ok() {
                assert_eq!(n, input.len());
            }
        }
        let mut a = Args::default();
        let buf = b"GET k\r\n";
        parse_command(buf, &Limits::default(), &mut a).unwrap();
        assert!(a.is_inline() && a.len() == 2 && !a.is_empty());
        assert_eq!(a.get(buf, 5), b""); // out of range: empty, no panic
        parse_command(b"*1\r\n$1\r\nx\r\n", &Limits::default(), &mut a).unwrap();
        assert!(!a.is_inline());
    }

    #[test]
    fn custom_limits() {
        let l = Limits {
            max_multibulk_len: 2,
            max_bulk_len: 3,
            max_inline_len: 4,
        };
        let mut a = Args::default();
        assert_eq!(
            parse_command(b"*3\r\n", &l, &mut a),
            Err(ParseError::Protocol(ERR_MULTIBULK_LEN))
        );
        assert_eq!(
            parse_command(b"*1\r\n$4\r\n", &l, &mut a),
            Err(ParseError::Protocol(ERR_BULK_LEN))
        );
        assert_eq!(
            parse_command(b"PINGG", &l, &mut a),
            Err(ParseError::Protocol(ERR_INLINE_TOO_BIG))
        );
        assert_eq!(
            parse_command(b"PING", &l, &mut a),
            Err(ParseError::Incomplete)
        );
        assert_eq!(parse_command(b"*1\r\n$3\r\nabc\r\n", &l, &mut a), Ok(13));
    }

    #[test]
    fn hostile_count_does_not_allocate() {
        let mut a = Args::default();
        let buf = b"*1000000000\r\n$1\r\nx\r\n";
        assert_eq!(
            parse_command(buf, &Limits::default(), &mut a),
            Err(ParseError::Incomplete)
        );
        assert!(a.spans.capacity() < 64, "capacity {}", a.spans.capacity());
        assert_eq!(reply_len(b"*1000000000\r\n"), Ok(None));
        assert_eq!(parse_reply(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
        let mut out = Vec::new();
        assert_eq!(
            aggregate_elements(b"%4611686018427387904\r\n:1\r\n", &mut out),
            Ok(None)
        );
        assert!(out.capacity() < 64);
    }

    const PIPELINE: &[u8] = b"*2\r\n$3\r\nGET\r\n$10\r\nkey:000001\r\nPING\r\n*0\r\n\
        *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nSET a \"b c\"\n\r\n*1\r\n$4\r\nPING\r\n";

    fn pipeline_expected() -> Vec<Vec<Vec<u8>>> {
        [
            v(&["GET", "key:000001"]),
            v(&["PING"]),
            v(&[]),
            v(&["SET", "k", ""]),
        ]
        .into_iter()
        .chain([v(&["SET", "a", "b c"]), v(&[]), v(&["PING"])])
        .map(|r| r.unwrap())
        .collect()
    }

    /// Feeds `stream` in the given chunks like the event loop would.
    fn feed_commands(stream: &[u8], cuts: &[usize]) -> Vec<Vec<Vec<u8>>> {
        let (mut buf, mut got, mut a) = (Vec::new(), Vec::new(), Args::default());
        let mut prev = 0;
        for &c in cuts.iter().chain([stream.len()].iter()) {
            buf.extend_from_slice(&stream[prev..c]);
            prev = c;
            loop {
                match parse_command(&buf, &Limits::default(), &mut a) {
                    Ok(n) => {
                        got.push(a.iter(&buf).map(|x| x.to_vec()).collect());
                        buf.drain(..n);
                    }
                    Err(ParseError::Incomplete) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        assert!(buf.is_empty());
        got
    }

    #[test]
    fn request_prefixes_and_splits() {
        let want = pipeline_expected();
        // Every proper prefix of each single frame is Incomplete.
        let mut rest = PIPELINE;
        while !rest.is_empty() {
            let (_, n) = cmd(rest);
            assert!(n > 0);
            for i in 0..n {
                assert_eq!(
                    cmd(&rest[..i]).0,
                    INC,
                    "prefix {:?}",
                    String::from_utf8_lossy(&rest[..i])
                );
            }
            rest = &rest[n..];
        }
        for cut in 0..=PIPELINE.len() {
            assert_eq!(feed_commands(PIPELINE, &[cut]), want, "cut {cut}");
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..500 {
            let mut cuts: Vec<usize> = (0..rng.below(8))
                .map(|_| rng.below(PIPELINE.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(feed_commands(PIPELINE, &cuts), want, "cuts {cuts:?}");
        }
    }

    #[test]
    fn write_command_roundtrip() {
        let mut rest = PIPELINE;
        let mut a = Args::default();
        let mut b = Args::default();
        while !rest.is_empty() {
            let n = parse_command(rest, &Limits::default(), &mut a).unwrap();
            let mut enc = Vec::new();
            write_command(&mut enc, a.iter(rest));
            let m = parse_command(&enc, &Limits::default(), &mut b).unwrap();
            assert_eq!(m, enc.len());
            assert!(a.iter(rest).eq(b.iter(&enc)));
            if !a.is_inline() && !a.is_empty() {
                assert_eq!(&enc[..], &rest[..n]);
            }
            rest = &rest[n..];
        }
        let bin: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        write_command(&mut enc, [&b"SET"[..], b"", &bin]);
        assert_eq!(cmd(&enc).0, Ok(vec![b"SET".to_vec(), vec![], bin]));
    }

    fn bulk(s: &str) -> Reply<'_> {
        Reply::Bulk(s.as_bytes())
    }

    /// (reply bytes, expected parse) — every entry is a complete, valid reply.
    fn valid_replies() -> Vec<(&'static [u8], Reply<'static>)> {
        use Reply::*;
        vec![
            (b"+OK\r\n", Simple(b"OK")),
            (b"+\r\n", Simple(b"")),
            (b"-ERR bad\r\n", Error(b"ERR bad")),
            (b":0\r\n", Integer(0)),
            (b":-9223372036854775808\r\n", Integer(i64::MIN)),
            (b":9223372036854775807\r\n", Integer(i64::MAX)),
            (b"$5\r\nhello\r\n", bulk("hello")),
            (b"$0\r\n\r\n", bulk("")),
            (b"$4\r\na\r\nb\r\n", bulk("a\r\nb")),
            (b"$-1\r\n", Nil),
            (b"*-1\r\n", Nil),
            (b"_\r\n", Nil),
            (b"*0\r\n", Array(vec![])),
            (
                b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
                Array(vec![bulk("a"), Array(vec![Integer(1)])]),
            ),
            (
                b"*3\r\n$1\r\na\r\n$-1\r\n*0\r\n",
                Array(vec![bulk("a"), Nil, Array(vec![])]),
            ),
            (b",3.14\r\n", Double(b"3.14")),
            (b",-inf\r\n", Double(b"-inf")),
            (b"#t\r\n", Boolean(true)),
            (b"#f\r\n", Boolean(false)),
            (
                b"(3492890328409238509324850943850943825024385\r\n",
                BigNumber(b"3492890328409238509324850943850943825024385"),
            ),
            (
                b"!21\r\nSYNTAX invalid syntax\r\n",
                BlobError(b"SYNTAX invalid syntax"),
            ),
            (b"=15\r\ntxt:Some string\r\n", Verbatim(b"txt:Some string")),
            (
                b"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n",
                Map(vec![(Simple(b"a"), Integer(1)), (Simple(b"b"), Integer(2))]),
            ),
            (b"%0\r\n", Map(vec![])),
            (b"~2\r\n+a\r\n+b\r\n", Set(vec![Simple(b"a"), Simple(b"b")])),
            (
                b">3\r\n+message\r\n+ch\r\n$2\r\nhi\r\n",
                Push(vec![Simple(b"message"), Simple(b"ch"), bulk("hi")]),
            ),
            (b"|1\r\n+ttl\r\n:3600\r\n$3\r\nval\r\n", bulk("val")),
            (b"|0\r\n:7\r\n", Integer(7)),
            (
                b"*2\r\n|1\r\n+a\r\n*1\r\n:1\r\n:2\r\n:3\r\n",
                Array(vec![Integer(2), Integer(3)]),
            ),
            (
                b"|1\r\n+a\r\n:1\r\n|1\r\n+b\r\n:2\r\n*1\r\n_\r\n",
                Array(vec![Nil]),
            ),
        ]
    }

    #[test]
    fn reply_table() {
        for (input, want) in valid_replies() {
            let s = String::from_utf8_lossy(input);
            assert_eq!(reply_len(input), Ok(Some(input.len())), "{s}");
            assert_eq!(
                parse_reply(input),
                Ok(Some((want.clone(), input.len()))),
                "{s}"
            );
            // Trailing bytes are not part of the reply.
            let mut more = input.to_vec();
            more.extend_from_slice(b"+next\r\n");
            assert_eq!(reply_len(&more), Ok(Some(input.len())), "{s}");
            // Every proper prefix is incomplete, for all three readers.
            for i in 0..input.len() {
                assert_eq!(reply_len(&input[..i]), Ok(None), "{s} prefix {i}");
                assert_eq!(parse_reply(&input[..i]), Ok(None), "{s} prefix {i}");
            }
            let mut sc = ReplyScanner::default();
            for i in 0..input.len() {
                assert_eq!(sc.scan(&input[..i]), Ok(None), "{s} growing {i}");
            }
            assert_eq!(sc.scan(input), Ok(Some(input.len())), "{s}");
            // Re-encoding (RESP3) reproduces canonical input; attributes are dropped.
            let mut out = Vec::new();
            want.write(&mut out, true);
            let nil2 = input.windows(3).any(|w| w == b"$-1" || w == b"*-1");
            if !input.contains(&b'|') && !nil2 {
                assert_eq!(String::from_utf8_lossy(&out), s);
            }
            out.clear();
            want.write(&mut out, false);
            assert!(
                matches!(reply_len(&out), Ok(Some(n)) if n == out.len()),
                "{s}"
            );
            assert!(!out
                .iter()
                .any(|&c| b"_,#(!=%~>|".contains(&c) && out[0] == c));
        }
    }

    #[test]
    fn invalid_replies() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"x\r\n", RE_TYPE),
            (b"\r\n", RE_TYPE),
            (b";3\r\nabc\r\n", RE_TYPE),
            (b"+OK\rX", RE_CRLF),
            (b"$3\r\nabcXY", RE_CRLF),
            (b"$?\r\n;3\r\nabc\r\n;0\r\n", RE_STREAMED),
            (b"*?\r\n", RE_STREAMED),
            (b"$-2\r\n", RE_LEN),
            (b"!-1\r\n", RE_LEN),
            (b"%-1\r\n", RE_LEN),
            (b"*abc\r\n", RE_LEN),
            (b"*1\r\n$x\r\n", RE_LEN),
            (b"$111111111111111111111111111111111111", RE_LEN),
            (b":12a\r\n", RE_INT),
            (b":\r\n", RE_INT),
            (b"#x\r\n", RE_BOOL),
            (b"_x\r\n", RE_NULL),
            (b"*2\r\n:1\r\n?\r\n", RE_TYPE),
        ];
        for (input, want) in cases {
            let s = String::from_utf8_lossy(input);
            assert_eq!(reply_len(input), Err(want), "{s}");
            assert_eq!(parse_reply(input), Err(want), "{s}");
            let mut sc = ReplyScanner::default();
            let first_err = (0..=input.len()).find_map(|i| sc.scan(&input[..i]).err());
            assert_eq!(first_err, Some(want), "{s}");
        }
        // A long chain of attributes is flat, not deep.
        let chain = format!("{}:1\r\n", "|1\r\n+a\r\n:1\r\n".repeat(10_000));
        assert_eq!(
            parse_reply(chain.as_bytes()),
            Ok(Some((Reply::Integer(1), chain.len())))
        );
    }

    #[test]
    fn scanner_resumes_over_split_stream() {
        let replies = valid_replies();
        let stream: Vec<u8> = replies
            .iter()
            .flat_map(|(b, _)| b.iter().copied())
            .collect();
        let want: Vec<usize> = replies.iter().map(|(b, _)| b.len()).collect();
        let run = |cuts: &[usize]| -> Vec<usize> {
            let (mut buf, mut got, mut sc, mut prev) =
                (Vec::new(), Vec::new(), ReplyScanner::default(), 0);
            for &c in cuts.iter().chain([stream.len()].iter()) {
                buf.extend_from_slice(&stream[prev..c]);
                prev = c;
                while let Some(n) = sc.scan(&buf).unwrap() {
                    got.push(n);
                    buf.drain(..n);
                }
            }
            got
        };
        assert_eq!(run(&(0..stream.len()).collect::<Vec<_>>()), want); // byte by byte
        for cut in 0..=stream.len() {
            assert_eq!(run(&[cut]), want);
        }
        let mut rng = Rng(42);
        for _ in 0..300 {
            let mut cuts: Vec<usize> = (0..rng.below(12))
                .map(|_| rng.below(stream.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(run(&cuts), want, "{cuts:?}");
        }
    }

    #[test]
    fn scanner_does_not_rescan_big_array() {
        // 100k elements fed in 1 KiB chunks: resumption means total work is linear; the
        // observable property is that the scanner's position advances monotonically.
        let mut stream = b"*100000\r\n".to_vec();
        for i in 0..100_000 {
            write_int(&mut stream, i);
        }
        let mut sc = ReplyScanner::default();
        let mut last = 0;
        for end in (0..stream.len()).step_by(1024) {
            assert_eq!(sc.scan(&stream[..end]), Ok(None));
            assert!(
                sc.pos >= last && sc.pos + 24 >= end.saturating_sub(1),
                "{} {}",
                sc.pos,
                end
            );
            last = sc.pos;
        }
        assert_eq!(sc.scan(&stream), Ok(Some(stream.len())));
    }

    /// How deep Redis 7.0 nests its answer to
    /// `EVAL "local a = {}; local b = {a}; a[1] = b; return a" 0`: this many `*1` headers,
    /// then `-ERR reached lua stack limit` (measured against redis-server 7.0.15, RESP2 and
    /// RESP3 alike).
    const REDIS_LUA_DEPTH: usize = 7995;

    fn lua_reply(depth: usize) -> Vec<u8> {
        let mut v = b"*1\r\n".repeat(depth);
        v.extend_from_slice(b"-ERR reached lua stack limit\r\n");
        v
    }

    const LEAVES: [&[u8]; 9] = [
        b":1\r\n",
        b"$3\r\nabc\r\n",
        b"+OK\r\n",
        b"_\r\n",
        b"#t\r\n",
        b",1.5\r\n",
        b"$-1\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"*0\r\n",
    ];

    /// A valid reply nesting one level per `(kind, count, at)`, outermost first, around
    /// `leaf`; at each level the nested part is element `at % elements` and the other elements
    /// are leaves. Kinds (mod 8): array, map (`count` pairs), set, push, an attribute then an
    /// array, the value of an attribute (the decorated reply follows it), an attribute of
    /// `count` pairs holding the nested part then a leaf, a `count`-element array.
    fn nest(levels: &[(u8, usize, usize)], leaf: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut tails: Vec<Vec<u8>> = Vec::with_capacity(levels.len());
        for (i, &(kind, count, at)) in levels.iter().enumerate() {
            let c = count.max(1) as u64;
            let (ty, n, after): (u8, u64, &[u8]) = match kind % 8 {
                0 | 7 => (b'*', c, b""),
                1 => (b'%', c, b""),
                2 => (b'~', c, b""),
                3 => (b'>', c, b""),
                4 => {
                    out.extend_from_slice(b"|1\r\n+ttl\r\n:3600\r\n");
                    (b'*', c, b"")
                }
                5 => (b'|', 1, b":7\r\n"),
                _ => (b'|', c, b"$1\r\nx\r\n"),
            };
            write_header(&mut out, ty, n);
            let elements = if matches!(ty, b'%' | b'|') { 2 * n } else { n } as usize;
            let at = if kind % 8 == 5 { 1 } else { at % elements };
            for j in 0..at {
                out.extend_from_slice(LEAVES[(i + j) % LEAVES.len()]);
            }
            let mut tail = Vec::new();
            for j in at + 1..elements {
                tail.extend_from_slice(LEAVES[(i + j) % LEAVES.len()]);
            }
            tail.extend_from_slice(after);
            tails.push(tail);
        }
        out.extend_from_slice(leaf);
        for t in tails.iter().rev() {
            out.extend_from_slice(t);
        }
        out
    }

    fn random_levels(rng: &mut Rng, depth: usize) -> Vec<(u8, usize, usize)> {
        (0..depth)
            .map(|_| (rng.below(8) as u8, 1 + rng.below(3), rng.below(8)))
            .collect()
    }

    /// Scans `stream` (one or more replies back to back) fed in the reads delimited by `cuts`,
    /// the way the event loop does; returns the reply lengths. Also checks that the scanner
    /// resumes instead of rescanning.
    fn scan_in_reads(stream: &[u8], cuts: &[usize]) -> Result<Vec<usize>, &'static str> {
        let (mut start, mut end, mut got, mut calls) = (0, 0, Vec::new(), 0);
        let mut sc = ReplyScanner::default();
        for &c in cuts.iter().chain([stream.len()].iter()) {
            end = c.clamp(end, stream.len());
            while let Some(n) = sc.scan(&stream[start..end])? {
                got.push(n);
                start += n;
            }
            calls += 1;
        }
        assert_eq!(start, stream.len(), "leftover bytes");
        // No rescans: each element's header is read once, plus once more per call that
        // stopped inside an element.
        let elements = stream.windows(2).filter(|w| w == b"\r\n").count();
        assert!(
            sc.headers_read <= elements + calls,
            "{} headers read for {elements} elements in {calls} calls",
            sc.headers_read
        );
        Ok(got)
    }

    fn random_cuts(rng: &mut Rng, len: usize, max: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..rng.below(max)).map(|_| rng.below(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    /// Every proper prefix is incomplete (fresh scanner each time: for small inputs), and the
    /// whole input is one reply, for reply_len and a growing scanner alike.
    fn assert_one_reply(input: &[u8], fresh_prefixes: bool) {
        assert_eq!(reply_len(input), Ok(Some(input.len())));
        let mut more = input.to_vec();
        more.extend_from_slice(b":9\r\n");
        assert_eq!(reply_len(&more), Ok(Some(input.len())));
        if fresh_prefixes {
            for i in 0..input.len() {
                assert_eq!(reply_len(&input[..i]), Ok(None), "prefix {i}");
            }
        }
        let every: Vec<usize> = (0..input.len()).collect();
        assert_eq!(scan_in_reads(input, &every), Ok(vec![input.len()]));
    }

    #[test]
    fn redis_lua_recursive_table_depth() {
        let reply = lua_reply(REDIS_LUA_DEPTH);
        assert_eq!(reply.len(), 32010); // as redis-server 7.0 sends it
        assert_one_reply(&reply, false);
        let mut rng = Rng(0xDEE9);
        let mut stream = reply.clone();
        stream.extend_from_slice(b"$3\r\nabc\r\n");
        stream.extend_from_slice(&reply);
        let want = vec![reply.len(), 9, reply.len()];
        for _ in 0..200 {
            let cuts = random_cuts(&mut rng, stream.len(), 64);
            assert_eq!(scan_in_reads(&stream, &cuts), Ok(want.clone()), "{cuts:?}");
        }
        for chunk in [1, 2, 3, 5, 7, 1000, 16 * 1024] {
            let cuts: Vec<usize> = (chunk..stream.len()).step_by(chunk).collect();
            assert_eq!(scan_in_reads(&stream, &cuts), Ok(want.clone()), "{chunk}");
        }
        // Too deep to build a tree from (a combining path fails that request), but measurable.
        assert_eq!(parse_reply(&reply), Err(RE_DEPTH));
        let mut r = Vec::new();
        assert_eq!(aggregate_elements(&reply, &mut r), Ok(Some(b'*')));
        assert_eq!(r, vec![(4, reply.len())]);
        // Every proper prefix, fresh scanner, on a shorter chain of the same shape.
        assert_one_reply(&lua_reply(300), true);
    }

    #[test]
    fn deeper_than_redis_is_accepted_without_recursion() {
        // 125x Redis's depth (4 MB of headers) in one read, then in 64 KiB reads.
        let reply = lua_reply(1_000_000);
        assert_eq!(reply_len(&reply), Ok(Some(reply.len())));
        let cuts: Vec<usize> = (65536..reply.len()).step_by(65536).collect();
        assert_eq!(scan_in_reads(&reply, &cuts), Ok(vec![reply.len()]));
        // The scanner gives back a deep reply's stack memory once the reply is done.
        let mut sc = ReplyScanner::default();
        assert_eq!(sc.scan(&reply[..reply.len() - 1]), Ok(None));
        assert!(sc.stack.len() == 1_000_000);
        assert_eq!(sc.scan(&reply), Ok(Some(reply.len())));
        assert!(sc.stack.capacity() <= KEEP_STACK);
        // Attributes nest just as deep.
        let mut attrs = b"|1\r\n+a\r\n".repeat(100_000);
        attrs.extend_from_slice(&b":1\r\n".repeat(100_001));
        assert_one_reply(&attrs, false);
        assert_eq!(
            parse_reply(&attrs),
            Ok(Some((Reply::Integer(1), attrs.len())))
        );
    }

    #[test]
    fn resp3_aggregates_and_attributes_nested_at_any_depth() {
        let mut rng = Rng(0x5EED);
        // Each kind alone, at Redis's depth.
        for kind in 0..8u8 {
            let levels = vec![(kind, 2, 1); REDIS_LUA_DEPTH];
            let reply = nest(&levels, b"-ERR reached lua stack limit\r\n");
            assert_one_reply(&reply, false);
            for _ in 0..5 {
                let cuts = random_cuts(&mut rng, reply.len(), 100);
                assert_eq!(
                    scan_in_reads(&reply, &cuts),
                    Ok(vec![reply.len()]),
                    "{kind}"
                );
            }
        }
        // Kinds mixed at random, deep.
        for _ in 0..4 {
            let levels = random_levels(&mut rng, 20_000);
            let reply = nest(&levels, LEAVES[rng.below(LEAVES.len())]);
            assert_eq!(reply_len(&reply), Ok(Some(reply.len())));
            let mut stream = reply.clone();
            stream.extend_from_slice(&reply);
            for _ in 0..5 {
                let cuts = random_cuts(&mut rng, stream.len(), 200);
                assert_eq!(
                    scan_in_reads(&stream, &cuts),
                    Ok(vec![reply.len(), reply.len()])
                );
            }
        }
        // Every proper prefix (fresh scanner) and byte by byte, shallower.
        for _ in 0..20 {
            let depth = 1 + rng.below(60);
            let levels = random_levels(&mut rng, depth);
            let reply = nest(&levels, LEAVES[rng.below(LEAVES.len())]);
            assert_one_reply(&reply, true);
            // Shallow enough to build: the tree re-encodes to a complete reply.
            let (tree, n) = parse_reply(&reply).unwrap().unwrap();
            assert_eq!(n, reply.len());
            for resp3 in [false, true] {
                let mut out = Vec::new();
                tree.write(&mut out, resp3);
                assert_eq!(reply_len(&out), Ok(Some(out.len())));
            }
        }
    }

    #[test]
    fn tree_depth_bound_only_in_parse_reply() {
        let ok = nest(&vec![(0, 1, 0); MAX_TREE_DEPTH], b":1\r\n");
        assert!(parse_reply(&ok).unwrap().is_some());
        for kind in [0u8, 1, 2, 3, 4, 7] {
            let deep = nest(&vec![(kind, 1, 0); MAX_TREE_DEPTH + 1], b":1\r\n");
            assert_eq!(reply_len(&deep), Ok(Some(deep.len())), "{kind}");
            assert_eq!(parse_reply(&deep), Err(RE_DEPTH), "{kind}");
            // Still incomplete (not an error) while the reply is cut short.
            assert_eq!(parse_reply(&deep[..deep.len() - 1]), Ok(None), "{kind}");
        }
        // Attributes are skipped, not built: they do not count.
        let attrs = nest(&vec![(5, 1, 0); MAX_TREE_DEPTH * 4], b":1\r\n");
        assert_eq!(
            parse_reply(&attrs),
            Ok(Some((Reply::Integer(7), attrs.len())))
        );
    }

    #[test]
    fn big_arrays_in_small_reads() {
        let mut rng = Rng(0xB16);
        // A million mixed elements, flat; a map of 200k pairs; an array of 100k small arrays.
        let mut flat = b"*1000000\r\n".to_vec();
        for i in 0..1_000_000 {
            flat.extend_from_slice(LEAVES[i % LEAVES.len()]);
        }
        let mut map = b"%200000\r\n".to_vec();
        for i in 0..400_000 {
            flat_leaf_or_int(&mut map, i);
        }
        let mut nested = b"*100000\r\n".to_vec();
        for i in 0..100_000 {
            nested.extend_from_slice(b"*2\r\n");
            write_int(&mut nested, i);
            write_bulk(&mut nested, b"v");
        }
        for reply in [&flat, &map, &nested] {
            assert_eq!(reply_len(reply), Ok(Some(reply.len())));
            for chunk in [4096, 16 * 1024, 65536] {
                let cuts: Vec<usize> = (chunk..reply.len()).step_by(chunk).collect();
                assert_eq!(scan_in_reads(reply, &cuts), Ok(vec![reply.len()]));
            }
            let cuts = random_cuts(&mut rng, reply.len(), 2000);
            assert_eq!(scan_in_reads(reply, &cuts), Ok(vec![reply.len()]));
        }
        // Byte by byte through a stretch of the flat array.
        let cut: Vec<usize> = (0..50_000)
            .chain((50_000..flat.len()).step_by(8192))
            .collect();
        assert_eq!(scan_in_reads(&flat, &cut), Ok(vec![flat.len()]));
        // Declared counts far beyond what arrived allocate nothing and stay incomplete.
        let mut sc = ReplyScanner::default();
        let mut huge = b"*9223372036854775807\r\n%4611686018427387903\r\n".to_vec();
        huge.extend_from_slice(&b":1\r\n".repeat(1000));
        assert_eq!(sc.scan(&huge), Ok(None));
        assert!(sc.stack.capacity() < 64);
    }

    fn flat_leaf_or_int(out: &mut Vec<u8>, i: usize) {
        if i.is_multiple_of(3) {
            write_int(out, i as i64);
        } else {
            out.extend_from_slice(LEAVES[i % LEAVES.len()]);
        }
    }

    #[test]
    fn scanner_error_context() {
        for (input, at, shown) in [
            (
                &b"$3\r\nabcXY"[..],
                7,
                "byte 7 of 9: \"$3\\r\\nabc\" ^ \"XY\"",
            ),
            (
                b"*1\r\n*1\r\n?garbage\r\n",
                8,
                "\"*1\\r\\n*1\\r\\n\" ^ \"?garbage\\r\\n\"",
            ),
            (b"*2\r\n:1\r\n:x\r\n", 8, "^ \":x\\r\\n\""),
            (b"+OK\rX", 4, "\"+OK\\r\" ^ \"X\""),
            (b"\x00\xff\r\n", 0, "\"\" ^ \"\\x00\\xff\\r\\n\""),
        ] {
            let mut sc = ReplyScanner::default();
            let first_err = (0..=input.len()).find_map(|i| sc.scan(&input[..i]).err());
            assert!(first_err.is_some());
            assert_eq!(sc.failed_at, Some(at), "{input:?}");
            let ctx = sc.error_context(input).unwrap();
            assert!(ctx.contains(shown), "{ctx}");
            // The scanner is reset: the next reply scans normally.
            assert_eq!(sc.scan(b"*1\r\n:1\r\n"), Ok(Some(8)));
            sc.reset();
            assert_eq!(sc.error_context(input), None);
        }
        // Bounded, escaped, elided on both sides.
        let mut long = lua_reply(REDIS_LUA_DEPTH);
        long.splice(16000..16000, b"\x01garbage".iter().copied());
        let mut sc = ReplyScanner::default();
        assert_eq!(sc.scan(&long), Err(RE_TYPE));
        let ctx = sc.error_context(&long).unwrap();
        assert!(
            ctx.starts_with("byte 16000 of 32018: ...\"*1\\r\\n"),
            "{ctx}"
        );
        assert!(ctx.contains("\" ^ \"\\x01garbage*1\\r\\n") && ctx.ends_with("\"..."));
        assert!(ctx.len() < 4 * (2 * EXCERPT_SIDE) + 64, "{ctx}");
        assert!(ctx.bytes().all(|c| (b' '..=b'~').contains(&c)));
    }

    #[test]
    fn aggregate_element_ranges() {
        let mut out = Vec::new();
        let buf = b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:5\r\n+tail\r\n";
        assert_eq!(aggregate_elements(buf, &mut out), Ok(Some(b'*')));
        assert_eq!(out, vec![(4, 11), (11, 16), (16, 24)]);
        let buf = b"|1\r\n+a\r\n:1\r\n%1\r\n+k\r\n|1\r\n+x\r\n:0\r\n+v\r\n";
        assert_eq!(aggregate_elements(buf, &mut out), Ok(Some(b'%')));
        let els: Vec<&[u8]> = out.iter().map(|&(s, e)| &buf[s..e]).collect();
        assert_eq!(els, vec![&b"+k\r\n"[..], b"|1\r\n+x\r\n:0\r\n+v\r\n"]);
        for (input, want) in [
            (&b"~0\r\n"[..], Ok(Some(b'~'))),
            (b">1\r\n+m\r\n", Ok(Some(b'>'))),
            (b"*-1\r\n", Ok(None)),
            (b"$1\r\na\r\n", Ok(None)),
            (b"*2\r\n:1\r\n", Ok(None)),
            (b"*2\r\n:1\r\n:x\r\n", Err(RE_INT)),
        ] {
            assert_eq!(aggregate_elements(input, &mut out), want);
        }
        assert!(out.is_empty());
    }

    #[test]
    fn encoders() {
        let mut o = Vec::new();
        write_simple(&mut o, b"OK");
        write_error(&mut o, b"ERR a\r\nb");
        write_int(&mut o, -42);
        write_int(&mut o, i64::MIN);
        write_bulk(&mut o, b"hi");
        write_nil(&mut o, false);
        write_nil(&mut o, true);
        write_array_len(&mut o, 0);
        write_map_len(&mut o, 2, true);
        write_map_len(&mut o, 2, false);
        write_set_len(&mut o, 3, true);
        write_set_len(&mut o, 3, false);
        write_double(&mut o, b"1.5", true);
        write_double(&mut o, b"1.5", false);
        write_bool(&mut o, true, true);
        write_bool(&mut o, false, false);
        write_verbatim(&mut o, b"txt", b"hey", true);
        write_verbatim(&mut o, b"txt", b"hey", false);
        write_usize(&mut o, 0);
        write_usize(&mut o, 18446744073709551615);
        let want =
            "+OK\r\n-ERR a  b\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n$-1\r\n_\r\n*0\r\n\
            %2\r\n*4\r\n~3\r\n*3\r\n,1.5\r\n$3\r\n1.5\r\n#t\r\n:0\r\n=7\r\ntxt:hey\r\n$3\r\nhey\r\n\
            018446744073709551615";
        assert_eq!(String::from_utf8_lossy(&o), want);
        let r = Reply::Map(vec![(
            Reply::Verbatim(b"txt:x"),
            Reply::BlobError(b"E\r\nx"),
        )]);
        o.clear();
        r.write(&mut o, false);
        assert_eq!(o, b"*2\r\n$1\r\nx\r\n-E  x\r\n");
        assert!(Reply::BlobError(b"x").is_error() && Reply::Error(b"x").is_error());
        assert!(!Reply::Nil.is_error());
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(7);
        let alphabet = b"*$+-:_,#(!=%~>|?0123456789\r\n \"'\\xab\x00";
        let seeds: Vec<&[u8]> = valid_replies()
            .into_iter()
            .map(|(b, _)| b)
            .chain([PIPELINE])
            .collect();
        let mut a = Args::default();
        let mut out = Vec::new();
        let iters = std::env::var("RESP_FUZZ_ITERS")
            .ok()
            .and_then(|s| s.parse().ok());
        for i in 0..iters.unwrap_or(30_000) {
            let mut buf: Vec<u8> = if i % 2 == 0 {
                (0..rng.below(40))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            } else {
                seeds[rng.below(seeds.len())].to_vec()
            };
            for _ in 0..rng.below(4) {
                if !buf.is_empty() {
                    let p = rng.below(buf.len());
                    buf[p] = if rng.below(2) == 0 {
                        alphabet[rng.below(alphabet.len())]
                    } else {
                        rng.next() as u8
                    };
                }
            }
            if let Ok(n) = parse_command(&buf, &Limits::default(), &mut a) {
                assert!(n <= buf.len());
                a.iter(&buf).for_each(|x| assert!(x.len() <= buf.len()));
            }
            let len = reply_len(&buf);
            if let Ok(Some(n)) = len {
                assert!(n <= buf.len());
            }
            let parsed = parse_reply(&buf);
            assert_eq!(parsed.clone().map(|o| o.map(|(_, n)| n)), len);
            if let Ok(Some((r, _))) = parsed {
                r.write(&mut out, i % 4 == 1);
            }
            let mut ranges = Vec::new();
            if let Ok(Some(_)) = aggregate_elements(&buf, &mut ranges) {
                assert!(ranges.iter().all(|&(s, e)| s <= e && e <= buf.len()));
            }
        }
    }
}
