//! The command table: every Redis 7 command (and every subcommand of a
//! container command such as `CONFIG GET`), where its keys are, and how
//! rustproxy routes it.
//!
//! The router asks this module three questions about a request:
//! * [`lookup`] / [`lookup_sub`]: which row describes it (and its [`Class`]:
//!   keyed, split, fanned out, answered locally, sent to one backend, refused);
//! * [`arity_ok`]: is the argument count acceptable (Redis's convention);
//! * [`key_positions`]: which arguments are keys (indices into the args).
//!
//! Invariants (checked by the tests below):
//! * every command and subcommand that `COMMAND LIST` of redis-server 7.0.15
//!   reports has a row; rows for Redis 7.2/7.4 additions and for rustproxy's
//!   own commands (group `proxy`) are there too;
//! * [`COMMANDS`] is sorted by name (byte order) and names are unique and upper
//!   case; a subcommand row is named `"CONTAINER SUB"` (one space);
//! * [`lookup`] and [`lookup_sub`] are case-insensitive and allocation-free
//!   (the name is upper-cased into a stack buffer, then binary-searched);
//! * the README's command table (`docs/commands.md`) is generated from here by
//!   [`markdown_table`]: change the table here, then regenerate the document.

pub mod flags;
pub use flags::{flag, flags, has, row_of};

use std::fmt::Write as _;

/// Where a command's keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    None,
    /// Redis's (first, last, step) convention; last < 0 counts from the end (-1 = last arg). Indices into args (0 = command name).
    Range {
        first: u8,
        last: i8,
        step: u8,
    },
    /// numkeys at args[at], keys start at args[at+1]; `extra` is one more fixed key position before it (ZUNIONSTORE dest=1, numkeys at 2), 0 = none.
    /// Covers EVAL/EVALSHA/EVAL_RO/FCALL/FCALL_RO (at 2), ZUNIONSTORE/ZINTERSTORE/ZDIFFSTORE (extra 1, at 2), ZUNION/ZINTER/ZDIFF/SINTERCARD/ZINTERCARD/LMPOP/ZMPOP (at 1), BLMPOP/BZMPOP (at 2).
    Numkeys {
        at: u8,
        extra: u8,
    },
    /// XREAD / XREADGROUP: keys follow the STREAMS token, first half of the remaining args.
    Streams,
    /// SORT: key at 1, plus the arg after a STORE token (case-insensitive) if present. GEORADIUS/GEORADIUSBYMEMBER: key at 1 plus the arg after STORE / STOREDIST.
    KeyPlusStore,
    /// MIGRATE: key at 3 unless empty, else the args after KEYS.
    Migrate,
}

/// How an N-key command is split across backends and its replies combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// MGET: one array, values in the order of the client's keys.
    Mget,
    /// MSET: `+OK` when every backend answered `+OK`.
    Mset,
    /// DEL UNLINK EXISTS TOUCH: the integer replies are summed.
    SumInt,
}

/// How replies of a command sent to every backend are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// FLUSHALL FLUSHDB SAVE BGSAVE BGREWRITEAOF CONFIG SET/REWRITE SCRIPT FLUSH
    /// FUNCTION FLUSH/DELETE/RESTORE MEMORY PURGE SLOWLOG RESET: when every backend
    /// answers a status reply, the first backend's status (`+OK`, `+Background saving
    /// started`...); otherwise one error naming the failed backends.
    AllOk,
    /// DBSIZE, LATENCY RESET: the integers are summed.
    SumInt,
    /// KEYS: the arrays are concatenated.
    ConcatArrays,
    /// SCAN: the cursor encodes the backend index.
    Scan,
    /// SCRIPT LOAD, FUNCTION LOAD: every backend must return the same reply.
    SameReply,
    /// FUNCTION LIST, FUNCTION DUMP: every backend must hold the same libraries, whatever order
    /// it lists them in (a server lists libraries and functions in its own hash-table order):
    /// the first backend's reply when they agree, otherwise an error.
    SameLibraries,
    /// SCRIPT EXISTS: element-wise, 1 only where every backend answered 1.
    AndInts,
    /// CONFIG GET, LASTSAVE, SLOWLOG GET/LEN, MEMORY STATS/DOCTOR/MALLOC-STATS,
    /// LATENCY (except RESET), ACL LIST/USERS/GETUSER/LOG/DRYRUN,
    /// MODULE LIST: an array with one element per backend, in pool order; each
    /// element is a 2-element array `[backend name, that backend's reply]`
    /// (an error reply stays an error element).
    PerBackend,
    /// CONFIG GET: Redis's shape, parameter -> value (a flat array under RESP2, a map under
    /// RESP3), from the first backend that answered; per-backend values stay reachable with
    /// `FORWARD n CONFIG GET`.
    ConfigGet,
    /// RANDOMKEY: sent with DBSIZE to every backend; the key of a backend picked at random,
    /// weighted by its key count (nil when none has keys).
    RandomKey,
    /// PUBSUB NUMSUB / SHARDNUMSUB: `[name, count, ...]` arrays, counts summed per name.
    SumPairs,
    /// SCRIPT KILL / FUNCTION KILL (sent on separate connections): `+OK` when any backend
    /// killed a script, else an error other than NOTBUSY (UNKILLABLE, BUSY) when one said so,
    /// else NOTBUSY.
    Kill,
    /// FUNCTION STATS: Redis's shape (`running_script`, `engines`): the reply of a backend
    /// running a function when one is, else the first backend's (the libraries, loaded
    /// everywhere, are counted once).
    FunctionStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Routed by its keys. One key: that key's backend. Several keys (e.g. RENAME, SMOVE, SINTER, BITOP, MSETNX, PFMERGE, EVAL with keys…): forwarded when all keys map to one backend, else "-PROXYERROR keys are on different backends".
    /// Zero keys at runtime (EVAL/FCALL with numkeys 0, MIGRATE with no key): backend 0 of the pool unless `hash=KEY` is given.
    Keyed,
    /// Split per backend (one sub-request per backend), replies reassembled.
    Split(Split),
    /// Sent to every backend, merged.
    FanOut(Merge),
    /// Answered by the proxy itself.
    Local,
    /// Keyless command sent to one backend, chosen deterministically.
    AnyBackend,
    /// Blocking command: all keys on one backend; runs on a private backend connection lent to
    /// the client until the reply arrives.
    Blocking,
    /// Refused with "-ERR <NAME> is not supported by rustproxy: <reason>"; the connection stays open.
    Refused(&'static str),
    /// A container (CONFIG, CLIENT, SCRIPT, OBJECT, ...): look up the subcommand with [`lookup_sub`].
    /// (COMMAND has subcommand rows too but is [`Class::Local`] as a whole.)
    Container,
}

#[derive(Debug)]
pub struct Spec {
    /// Upper case, e.g. "GET"; for a subcommand "CONFIG GET" (container, space, sub).
    pub name: &'static str,
    /// Redis convention, counting the command name (and for a subcommand the
    /// container name too): >0 exact, <0 minimum (abs).
    pub arity: i16,
    pub keys: Keys,
    pub class: Class,
    /// Redis's group: string, list, set, sorted-set, hash, hyperloglog, geo, stream,
    /// bitmap, generic, connection, server, scripting, pubsub, transactions, cluster,
    /// or proxy (rustproxy's own commands).
    pub group: &'static str,
    /// Numbers of the README notes ([`NOTES`]) that apply.
    pub notes: &'static [u8],
}

const fn row(
    name: &'static str,
    arity: i16,
    keys: Keys,
    class: Class,
    group: &'static str,
    notes: &'static [u8],
) -> Spec {
    Spec {
        name,
        arity,
        keys,
        class,
        group,
        notes,
    }
}

const NO_KEYS: Keys = Keys::None;
const K1: Keys = Keys::Range {
    first: 1,
    last: 1,
    step: 1,
};
const K2: Keys = Keys::Range {
    first: 2,
    last: 2,
    step: 1,
};
const K_ALL: Keys = Keys::Range {
    first: 1,
    last: -1,
    step: 1,
};
const KEYED: Class = Class::Keyed;
const LOCAL: Class = Class::Local;
const ANY: Class = Class::AnyBackend;
const CONTAINER: Class = Class::Container;

// Reasons given to clients for refused commands.
const R_BLOCKING: &str = "it waits for the replication of its own connection's writes, and clients share backend connections";
const R_MONITOR: &str = "it needs a dedicated backend connection";
const R_REPL: &str = "replication needs a direct connection to the backend";
const R_SHARED: &str = "it would affect backends shared by all clients";
const R_CLUSTER: &str = "rustproxy is not a Redis Cluster node";
const R_TRACKING: &str = "client-side caching needs a dedicated backend connection";
const R_DEBUGGER: &str = "the Lua debugger needs a dedicated backend connection";
const R_ACL: &str = "it would change the users the proxy itself logs in with";
const R_MODULE: &str = "modules belong in each backend's configuration";
const R_DEBUG: &str = "backend debugging commands are not exposed";

/// README notes: note number -> text. Numbers are 1..=N in order.
pub static NOTES: &[(u8, &str)] = &[
    (1, "All keys must map to the same backend, otherwise the proxy replies `-PROXYERROR keys are on different backends`; use hash tags (`{...}`) to keep related keys together."),
    (2, "With numkeys 0 the script or function runs on backend 0 of the pool unless `hash=KEY` is given. A script must only access the keys it declares."),
    (3, "Split into one sub-command per backend and the replies reassembled (MGET: values in key order; MSET: `+OK` when every backend answered OK; DEL/UNLINK/EXISTS/TOUCH: the sum). Not atomic across backends."),
    (4, "Sent to every backend; when all succeed the reply is the first backend's status reply, otherwise one error naming the failed backends."),
    (5, "Sent to every backend; the reply is an array with one `[backend name, backend reply]` pair per backend, in pool order."),
    (6, "Sent to every backend; the integer replies are summed."),
    (7, "Sent to every backend; the arrays are concatenated."),
    (8, "The cursor encodes the backend index: backends are scanned one after another; COUNT/MATCH/TYPE apply per backend."),
    (9, "Sent to every backend; all must give the same reply (e.g. the same SHA1), otherwise an error."),
    (10, "Sent to every backend; an element is 1 only when every backend has that script."),
    (11, "Sent with DBSIZE to every backend; the key comes from a backend picked at random, weighted by its key count, so every key can come back (nil when no backend has keys)."),
    (12, "With BLOCK it is refused (blocking commands are not supported); without BLOCK all streams must be on one backend."),
    (13, "BY and GET patterns are read on the sorted key's backend; a STORE destination must be on the same backend."),
    (14, "Sent to one backend of the pool (always the same one)."),
    (15, "Redis's help text from one backend; it may list subcommands that rustproxy refuses."),
    (16, "Answered by the proxy about the client's connection to the proxy, not the shared backend connections."),
    (17, "Answered `+OK` by the proxy but has no effect: backend connections are shared by all clients."),
    (18, "Answered by the proxy: the client's later commands run in that database on every backend (pool key `databases`, default 16; cluster pools accept only 0)."),
    (19, "Answered by the proxy with its own information; use FORWARD to ask a backend."),
    (20, "The proxy's own clock."),
    (21, "COMMAND, COMMAND COUNT, COMMAND LIST [FILTERBY ...], COMMAND INFO and COMMAND DOCS describe one command set: backend 0's commands, as it describes them (so later Redis commands appear when the backends have them), plus the proxy's own (BACKEND, BACKENDNUM, BACKENDS, FORWARD, PROXY), which the proxy adds in Redis's shapes; COUNT is the number of COMMAND's entries and of LIST's top-level names. COMMAND GETKEYS answers from this table, so it agrees with how the proxy routes; COMMAND HELP and GETKEYSANDFLAGS come from backend 0."),
    (22, "rustproxy's own command (see the README section on proxy commands)."),
    (23, "The keys must be on one backend; host and port are as seen from that backend."),
    (24, "Resets the proxy's own statistics only."),
    (25, "The proxy suppresses the client's replies itself, in order: OFF sends none until CLIENT REPLY ON (whose `+OK` is sent), SKIP drops the next command's reply. Every reply is still read from the backends; pub/sub messages are still delivered (as Redis 7.2 does)."),
    (26, "Answered by the proxy as a master without replicas."),
    (27, "Redis 7.2/7.4 command: forwarded as-is, so the backends must support it."),
    (28, "Answered by the proxy with the user the client authenticated as."),
    (29, "All keys must be on one backend. The command runs on a private backend connection lent to the client until the reply arrives (at most `private_connections` per backend); the client's later commands wait for it, as in Redis. A client that disconnects while blocked closes that connection."),
    (30, "MULTI queues commands in the proxy (`+QUEUED`); every key of the transaction must be on one backend (else the command gets `-PROXYERROR keys are on different backends` and EXEC answers `-EXECABORT`). EXEC sends MULTI...EXEC as one block to that backend, which runs it atomically. WATCH pins the client to a private connection to the watched keys' backend until EXEC, DISCARD or UNWATCH."),
    (31, "Channels are placed like keys (hash, hash tag): publisher and subscribers of a channel meet on one backend. A subscribed client holds a private connection to each backend its channels live on, and returns them when it unsubscribes from everything. Subscription counts in the replies are the client's totals."),
    (32, "Patterns are subscribed on every backend (a private connection to each), so a pattern sees messages of every channel; confirmations are answered once."),
    (33, "Patterns are subscribed on every backend, so one backend's count is the proxy's count."),
    (34, "Sent to every backend; the counts of each channel are summed."),
    (35, "The proxy's own slow log: requests slower than `slowlog-log-slower-than` (10 ms) from arrival to reply, Redis's reply shape plus a 7th element naming the backend. A backend's own slow log: `FORWARD n SLOWLOG GET`."),
    (36, "Sent to every backend; all must hold the same libraries (compared whatever order each backend lists its libraries and functions in), otherwise an error; the reply is the first backend's."),
    (37, "Answered in Redis's shape (parameter -> value) with the first backend's values; when backends are configured differently, `FORWARD n CONFIG GET ...` shows each one's. CONFIG SET goes to every backend."),
    (38, "Answered by the proxy about its own clients: the old form `CLIENT KILL addr:port` (`+OK` or `-ERR No such client`) and the filters ID, ADDR, LADDR, USER, TYPE (normal, pubsub; master and replica match none), SKIPME, with Redis's errors; the reply is the number of clients closed."),
    (39, "A client blocked on its private backend connection is unblocked there: the proxy sends `CLIENT UNBLOCK` for that connection's backend client id on a separate connection, so the blocked client gets Redis's own timeout reply or `-UNBLOCKED` error; the reply is the backend's 1 or 0."),
    (40, "Sent on a separate, new connection to every backend (the shared ones wait behind the busy script): `+OK` when any backend killed a script, an UNKILLABLE (or BUSY) error when a backend gave one, else `-NOTBUSY No scripts in execution right now.`"),
    (41, "A pause of the proxy's clients, as Redis pauses its own: while it lasts, commands it covers (ALL: every command; WRITE: writes, commands that may replicate such as EVAL, FCALL, PUBLISH, PFCOUNT, and EXEC of a transaction holding one) wait in their client's input and run when it ends (timeout or CLIENT UNPAUSE); waiting clients count as blocked. Errors found before execution are answered at once. Clients of a backend not going through the proxy are not paused."),
    (42, "Sent to every backend; answered in Redis's shape: the `running_script` of a backend running a function (else nil), and the engines' library and function counts of the first backend (libraries are loaded on every backend, so these are the counts one Redis would give)."),
    (43, "The proxy's own hot-key detection for the client's pool (README \"Hot keys\"), in Valkey's shape: GET [COUNT n] gives the hottest keys, each a map (RESP2: a flat array) of key, db, qps, plus the proxy's reads, writes (per second) and backend; RESET forgets the counts. A backend's own: `FORWARD n HOTKEYS ...`."),
];

/// Every command, sorted by name (byte order).
#[rustfmt::skip]
pub static COMMANDS: &[Spec] = &[
    row("ACL", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("ACL CAT", -2, NO_KEYS, ANY, "server", &[14]),
    row("ACL DELUSER", -3, NO_KEYS, Class::Refused(R_ACL), "server", &[]),
    row("ACL DRYRUN", -4, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("ACL GENPASS", -2, NO_KEYS, ANY, "server", &[14]),
    row("ACL GETUSER", 3, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("ACL HELP", 2, NO_KEYS, ANY, "server", &[15]),
    row("ACL LIST", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("ACL LOAD", 2, NO_KEYS, Class::Refused(R_ACL), "server", &[]),
    row("ACL LOG", -2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("ACL SAVE", 2, NO_KEYS, Class::Refused(R_ACL), "server", &[]),
    row("ACL SETUSER", -3, NO_KEYS, Class::Refused(R_ACL), "server", &[]),
    row("ACL USERS", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("ACL WHOAMI", 2, NO_KEYS, LOCAL, "server", &[28]),
    row("APPEND", 3, K1, KEYED, "string", &[]),
    row("ASKING", 1, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("AUTH", -2, NO_KEYS, LOCAL, "connection", &[]),
    row("BACKEND", -2, K1, LOCAL, "proxy", &[22]),
    row("BACKENDNUM", -2, K1, LOCAL, "proxy", &[22]),
    row("BACKENDS", 1, NO_KEYS, LOCAL, "proxy", &[22]),
    row("BGREWRITEAOF", 1, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("BGSAVE", -1, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("BITCOUNT", -2, K1, KEYED, "bitmap", &[]),
    row("BITFIELD", -2, K1, KEYED, "bitmap", &[]),
    row("BITFIELD_RO", -2, K1, KEYED, "bitmap", &[]),
    row("BITOP", -4, Keys::Range { first: 2, last: -1, step: 1 }, KEYED, "bitmap", &[1]),
    row("BITPOS", -3, K1, KEYED, "bitmap", &[]),
    row("BLMOVE", 6, Keys::Range { first: 1, last: 2, step: 1 }, Class::Blocking, "list", &[29]),
    row("BLMPOP", -5, Keys::Numkeys { at: 2, extra: 0 }, Class::Blocking, "list", &[29]),
    row("BLPOP", -3, Keys::Range { first: 1, last: -2, step: 1 }, Class::Blocking, "list", &[29]),
    row("BRPOP", -3, Keys::Range { first: 1, last: -2, step: 1 }, Class::Blocking, "list", &[29]),
    row("BRPOPLPUSH", 4, Keys::Range { first: 1, last: 2, step: 1 }, Class::Blocking, "list", &[29]),
    row("BZMPOP", -5, Keys::Numkeys { at: 2, extra: 0 }, Class::Blocking, "sorted-set", &[29]),
    row("BZPOPMAX", -3, Keys::Range { first: 1, last: -2, step: 1 }, Class::Blocking, "sorted-set", &[29]),
    row("BZPOPMIN", -3, Keys::Range { first: 1, last: -2, step: 1 }, Class::Blocking, "sorted-set", &[29]),
    row("CLIENT", -2, NO_KEYS, CONTAINER, "connection", &[]),
    row("CLIENT CACHING", 3, NO_KEYS, Class::Refused(R_TRACKING), "connection", &[]),
    row("CLIENT GETNAME", 2, NO_KEYS, LOCAL, "connection", &[16]),
    row("CLIENT GETREDIR", 2, NO_KEYS, Class::Refused(R_TRACKING), "connection", &[]),
    row("CLIENT HELP", 2, NO_KEYS, ANY, "connection", &[15]),
    row("CLIENT ID", 2, NO_KEYS, LOCAL, "connection", &[16]),
    row("CLIENT INFO", 2, NO_KEYS, LOCAL, "connection", &[16]),
    row("CLIENT KILL", -3, NO_KEYS, LOCAL, "connection", &[38]),
    row("CLIENT LIST", -2, NO_KEYS, LOCAL, "connection", &[16]),
    row("CLIENT NO-EVICT", 3, NO_KEYS, LOCAL, "connection", &[17]),
    row("CLIENT NO-TOUCH", 3, NO_KEYS, LOCAL, "connection", &[17, 27]),
    row("CLIENT PAUSE", -3, NO_KEYS, LOCAL, "connection", &[41]),
    row("CLIENT REPLY", 3, NO_KEYS, LOCAL, "connection", &[25]),
    row("CLIENT SETINFO", 4, NO_KEYS, LOCAL, "connection", &[16, 27]),
    row("CLIENT SETNAME", 3, NO_KEYS, LOCAL, "connection", &[16]),
    row("CLIENT TRACKING", -3, NO_KEYS, Class::Refused(R_TRACKING), "connection", &[]),
    row("CLIENT TRACKINGINFO", 2, NO_KEYS, Class::Refused(R_TRACKING), "connection", &[]),
    row("CLIENT UNBLOCK", -3, NO_KEYS, LOCAL, "connection", &[39]),
    row("CLIENT UNPAUSE", 2, NO_KEYS, LOCAL, "connection", &[41]),
    row("CLUSTER", -2, NO_KEYS, CONTAINER, "cluster", &[]),
    row("CLUSTER ADDSLOTS", -3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER ADDSLOTSRANGE", -4, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER BUMPEPOCH", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER COUNT-FAILURE-REPORTS", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER COUNTKEYSINSLOT", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER DELSLOTS", -3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER DELSLOTSRANGE", -4, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER FAILOVER", -2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER FLUSHSLOTS", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER FORGET", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER GETKEYSINSLOT", 4, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER HELP", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER INFO", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER KEYSLOT", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER LINKS", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER MEET", -4, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER MYID", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER MYSHARDID", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[27]),
    row("CLUSTER NODES", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER REPLICAS", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER REPLICATE", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER RESET", -2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER SAVECONFIG", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER SET-CONFIG-EPOCH", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER SETSLOT", -4, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER SHARDS", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER SLAVES", 3, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("CLUSTER SLOTS", 2, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("COMMAND", -1, NO_KEYS, LOCAL, "server", &[21]),
    row("COMMAND COUNT", 2, NO_KEYS, LOCAL, "server", &[21]),
    row("COMMAND DOCS", -2, NO_KEYS, LOCAL, "server", &[21]),
    row("COMMAND GETKEYS", -4, NO_KEYS, LOCAL, "server", &[21]),
    row("COMMAND GETKEYSANDFLAGS", -4, NO_KEYS, LOCAL, "server", &[21]),
    row("COMMAND HELP", 2, NO_KEYS, LOCAL, "server", &[21]),
    row("COMMAND INFO", -2, NO_KEYS, LOCAL, "server", &[21]),
    row("COMMAND LIST", -2, NO_KEYS, LOCAL, "server", &[21]),
    row("CONFIG", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("CONFIG GET", -3, NO_KEYS, Class::FanOut(Merge::ConfigGet), "server", &[37]),
    row("CONFIG HELP", 2, NO_KEYS, ANY, "server", &[15]),
    row("CONFIG RESETSTAT", 2, NO_KEYS, LOCAL, "server", &[24]),
    row("CONFIG REWRITE", 2, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("CONFIG SET", -4, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("COPY", -3, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "generic", &[1]),
    row("DBSIZE", 1, NO_KEYS, Class::FanOut(Merge::SumInt), "server", &[6]),
    row("DEBUG", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("DEBUG *", -2, NO_KEYS, Class::Refused(R_DEBUG), "server", &[]),
    row("DEBUG OBJECT", 3, K2, KEYED, "server", &[]),
    row("DECR", 2, K1, KEYED, "string", &[]),
    row("DECRBY", 3, K1, KEYED, "string", &[]),
    row("DEL", -2, K_ALL, Class::Split(Split::SumInt), "generic", &[3]),
    row("DISCARD", 1, NO_KEYS, LOCAL, "transactions", &[30]),
    row("DUMP", 2, K1, KEYED, "generic", &[]),
    row("ECHO", 2, NO_KEYS, LOCAL, "connection", &[]),
    row("EVAL", -3, Keys::Numkeys { at: 2, extra: 0 }, KEYED, "scripting", &[1, 2]),
    row("EVALSHA", -3, Keys::Numkeys { at: 2, extra: 0 }, KEYED, "scripting", &[1, 2]),
    row("EVALSHA_RO", -3, Keys::Numkeys { at: 2, extra: 0 }, KEYED, "scripting", &[1, 2]),
    row("EVAL_RO", -3, Keys::Numkeys { at: 2, extra: 0 }, KEYED, "scripting", &[1, 2]),
    row("EXEC", 1, NO_KEYS, LOCAL, "transactions", &[30]),
    row("EXISTS", -2, K_ALL, Class::Split(Split::SumInt), "generic", &[3]),
    row("EXPIRE", -3, K1, KEYED, "generic", &[]),
    row("EXPIREAT", -3, K1, KEYED, "generic", &[]),
    row("EXPIRETIME", 2, K1, KEYED, "generic", &[]),
    row("FAILOVER", -1, NO_KEYS, Class::Refused(R_SHARED), "server", &[]),
    row("FCALL", -3, Keys::Numkeys { at: 2, extra: 0 }, KEYED, "scripting", &[1, 2]),
    row("FCALL_RO", -3, Keys::Numkeys { at: 2, extra: 0 }, KEYED, "scripting", &[1, 2]),
    row("FLUSHALL", -1, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("FLUSHDB", -1, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("FORWARD", -3, NO_KEYS, LOCAL, "proxy", &[22]),
    row("FUNCTION", -2, NO_KEYS, CONTAINER, "scripting", &[]),
    row("FUNCTION DELETE", 3, NO_KEYS, Class::FanOut(Merge::AllOk), "scripting", &[4]),
    row("FUNCTION DUMP", 2, NO_KEYS, Class::FanOut(Merge::SameLibraries), "scripting", &[36]),
    row("FUNCTION FLUSH", -2, NO_KEYS, Class::FanOut(Merge::AllOk), "scripting", &[4]),
    row("FUNCTION HELP", 2, NO_KEYS, ANY, "scripting", &[15]),
    row("FUNCTION KILL", 2, NO_KEYS, LOCAL, "scripting", &[40]),
    row("FUNCTION LIST", -2, NO_KEYS, Class::FanOut(Merge::SameLibraries), "scripting", &[36]),
    row("FUNCTION LOAD", -3, NO_KEYS, Class::FanOut(Merge::SameReply), "scripting", &[9]),
    row("FUNCTION RESTORE", -3, NO_KEYS, Class::FanOut(Merge::AllOk), "scripting", &[4]),
    row("FUNCTION STATS", 2, NO_KEYS, Class::FanOut(Merge::FunctionStats), "scripting", &[42]),
    row("GEOADD", -5, K1, KEYED, "geo", &[]),
    row("GEODIST", -4, K1, KEYED, "geo", &[]),
    row("GEOHASH", -2, K1, KEYED, "geo", &[]),
    row("GEOPOS", -2, K1, KEYED, "geo", &[]),
    row("GEORADIUS", -6, Keys::KeyPlusStore, KEYED, "geo", &[1]),
    row("GEORADIUSBYMEMBER", -5, Keys::KeyPlusStore, KEYED, "geo", &[1]),
    row("GEORADIUSBYMEMBER_RO", -5, K1, KEYED, "geo", &[]),
    row("GEORADIUS_RO", -6, K1, KEYED, "geo", &[]),
    row("GEOSEARCH", -7, K1, KEYED, "geo", &[]),
    row("GEOSEARCHSTORE", -8, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "geo", &[1]),
    row("GET", 2, K1, KEYED, "string", &[]),
    row("GETBIT", 3, K1, KEYED, "bitmap", &[]),
    row("GETDEL", 2, K1, KEYED, "string", &[]),
    row("GETEX", -2, K1, KEYED, "string", &[]),
    row("GETRANGE", 4, K1, KEYED, "string", &[]),
    row("GETSET", 3, K1, KEYED, "string", &[]),
    row("HDEL", -3, K1, KEYED, "hash", &[]),
    row("HELLO", -1, NO_KEYS, LOCAL, "connection", &[]),
    row("HEXISTS", 3, K1, KEYED, "hash", &[]),
    row("HEXPIRE", -6, K1, KEYED, "hash", &[27]),
    row("HEXPIREAT", -6, K1, KEYED, "hash", &[27]),
    row("HEXPIRETIME", -5, K1, KEYED, "hash", &[27]),
    row("HGET", 3, K1, KEYED, "hash", &[]),
    row("HGETALL", 2, K1, KEYED, "hash", &[]),
    row("HINCRBY", 4, K1, KEYED, "hash", &[]),
    row("HINCRBYFLOAT", 4, K1, KEYED, "hash", &[]),
    row("HKEYS", 2, K1, KEYED, "hash", &[]),
    row("HLEN", 2, K1, KEYED, "hash", &[]),
    row("HMGET", -3, K1, KEYED, "hash", &[]),
    row("HMSET", -4, K1, KEYED, "hash", &[]),
    row("HOTKEYS", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("HOTKEYS GET", -2, NO_KEYS, LOCAL, "server", &[43]),
    row("HOTKEYS HELP", 2, NO_KEYS, LOCAL, "server", &[43]),
    row("HOTKEYS RESET", 2, NO_KEYS, LOCAL, "server", &[43]),
    row("HPERSIST", -5, K1, KEYED, "hash", &[27]),
    row("HPEXPIRE", -6, K1, KEYED, "hash", &[27]),
    row("HPEXPIREAT", -6, K1, KEYED, "hash", &[27]),
    row("HPEXPIRETIME", -5, K1, KEYED, "hash", &[27]),
    row("HPTTL", -5, K1, KEYED, "hash", &[27]),
    row("HRANDFIELD", -2, K1, KEYED, "hash", &[]),
    row("HSCAN", -3, K1, KEYED, "hash", &[]),
    row("HSET", -4, K1, KEYED, "hash", &[]),
    row("HSETNX", 4, K1, KEYED, "hash", &[]),
    row("HSTRLEN", 3, K1, KEYED, "hash", &[]),
    row("HTTL", -5, K1, KEYED, "hash", &[27]),
    row("HVALS", 2, K1, KEYED, "hash", &[]),
    row("INCR", 2, K1, KEYED, "string", &[]),
    row("INCRBY", 3, K1, KEYED, "string", &[]),
    row("INCRBYFLOAT", 3, K1, KEYED, "string", &[]),
    row("INFO", -1, NO_KEYS, LOCAL, "server", &[19]),
    row("KEYS", 2, NO_KEYS, Class::FanOut(Merge::ConcatArrays), "generic", &[7]),
    row("LASTSAVE", 1, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("LATENCY", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("LATENCY DOCTOR", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("LATENCY GRAPH", 3, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("LATENCY HELP", 2, NO_KEYS, ANY, "server", &[15]),
    row("LATENCY HISTOGRAM", -2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("LATENCY HISTORY", 3, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("LATENCY LATEST", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("LATENCY RESET", -2, NO_KEYS, Class::FanOut(Merge::SumInt), "server", &[6]),
    row("LCS", -3, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "string", &[1]),
    row("LINDEX", 3, K1, KEYED, "list", &[]),
    row("LINSERT", 5, K1, KEYED, "list", &[]),
    row("LLEN", 2, K1, KEYED, "list", &[]),
    row("LMOVE", 5, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "list", &[1]),
    row("LMPOP", -4, Keys::Numkeys { at: 1, extra: 0 }, KEYED, "list", &[1]),
    row("LOLWUT", -1, NO_KEYS, ANY, "server", &[14]),
    row("LPOP", -2, K1, KEYED, "list", &[]),
    row("LPOS", -3, K1, KEYED, "list", &[]),
    row("LPUSH", -3, K1, KEYED, "list", &[]),
    row("LPUSHX", -3, K1, KEYED, "list", &[]),
    row("LRANGE", 4, K1, KEYED, "list", &[]),
    row("LREM", 4, K1, KEYED, "list", &[]),
    row("LSET", 4, K1, KEYED, "list", &[]),
    row("LTRIM", 4, K1, KEYED, "list", &[]),
    row("MEMORY", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("MEMORY DOCTOR", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("MEMORY HELP", 2, NO_KEYS, ANY, "server", &[15]),
    row("MEMORY MALLOC-STATS", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("MEMORY PURGE", 2, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("MEMORY STATS", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("MEMORY USAGE", -3, K2, KEYED, "server", &[]),
    row("MGET", -2, K_ALL, Class::Split(Split::Mget), "string", &[3]),
    row("MIGRATE", -6, Keys::Migrate, KEYED, "generic", &[1, 23]),
    row("MODULE", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("MODULE HELP", 2, NO_KEYS, ANY, "server", &[15]),
    row("MODULE LIST", 2, NO_KEYS, Class::FanOut(Merge::PerBackend), "server", &[5]),
    row("MODULE LOAD", -3, NO_KEYS, Class::Refused(R_MODULE), "server", &[]),
    row("MODULE LOADEX", -3, NO_KEYS, Class::Refused(R_MODULE), "server", &[]),
    row("MODULE UNLOAD", 3, NO_KEYS, Class::Refused(R_MODULE), "server", &[]),
    row("MONITOR", 1, NO_KEYS, Class::Refused(R_MONITOR), "server", &[]),
    row("MOVE", 3, K1, KEYED, "generic", &[]),
    row("MSET", -3, Keys::Range { first: 1, last: -1, step: 2 }, Class::Split(Split::Mset), "string", &[3]),
    row("MSETNX", -3, Keys::Range { first: 1, last: -1, step: 2 }, KEYED, "string", &[1]),
    row("MULTI", 1, NO_KEYS, LOCAL, "transactions", &[30]),
    row("OBJECT", -2, NO_KEYS, CONTAINER, "generic", &[]),
    row("OBJECT ENCODING", 3, K2, KEYED, "generic", &[]),
    row("OBJECT FREQ", 3, K2, KEYED, "generic", &[]),
    row("OBJECT HELP", 2, NO_KEYS, ANY, "generic", &[15]),
    row("OBJECT IDLETIME", 3, K2, KEYED, "generic", &[]),
    row("OBJECT REFCOUNT", 3, K2, KEYED, "generic", &[]),
    row("PERSIST", 2, K1, KEYED, "generic", &[]),
    row("PEXPIRE", -3, K1, KEYED, "generic", &[]),
    row("PEXPIREAT", -3, K1, KEYED, "generic", &[]),
    row("PEXPIRETIME", 2, K1, KEYED, "generic", &[]),
    row("PFADD", -2, K1, KEYED, "hyperloglog", &[]),
    row("PFCOUNT", -2, K_ALL, KEYED, "hyperloglog", &[1]),
    row("PFDEBUG", 3, K2, KEYED, "hyperloglog", &[]),
    row("PFMERGE", -2, K_ALL, KEYED, "hyperloglog", &[1]),
    row("PFSELFTEST", 1, NO_KEYS, ANY, "hyperloglog", &[14]),
    row("PING", -1, NO_KEYS, LOCAL, "connection", &[]),
    row("PROXY", -2, NO_KEYS, LOCAL, "proxy", &[22]),
    row("PSETEX", 4, K1, KEYED, "string", &[]),
    row("PSUBSCRIBE", -2, NO_KEYS, LOCAL, "pubsub", &[32]),
    row("PSYNC", -3, NO_KEYS, Class::Refused(R_REPL), "server", &[]),
    row("PTTL", 2, K1, KEYED, "generic", &[]),
    row("PUBLISH", 3, K1, KEYED, "pubsub", &[31]),
    row("PUBSUB", -2, NO_KEYS, CONTAINER, "pubsub", &[]),
    row("PUBSUB CHANNELS", -2, NO_KEYS, Class::FanOut(Merge::ConcatArrays), "pubsub", &[7]),
    row("PUBSUB HELP", 2, NO_KEYS, ANY, "pubsub", &[15]),
    row("PUBSUB NUMPAT", 2, NO_KEYS, ANY, "pubsub", &[33]),
    row("PUBSUB NUMSUB", -2, NO_KEYS, Class::FanOut(Merge::SumPairs), "pubsub", &[34]),
    row("PUBSUB SHARDCHANNELS", -2, NO_KEYS, Class::FanOut(Merge::ConcatArrays), "pubsub", &[7]),
    row("PUBSUB SHARDNUMSUB", -2, NO_KEYS, Class::FanOut(Merge::SumPairs), "pubsub", &[34]),
    row("PUNSUBSCRIBE", -1, NO_KEYS, LOCAL, "pubsub", &[32]),
    row("QUIT", -1, NO_KEYS, LOCAL, "connection", &[]),
    row("RANDOMKEY", 1, NO_KEYS, Class::FanOut(Merge::RandomKey), "generic", &[11]),
    row("READONLY", 1, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("READWRITE", 1, NO_KEYS, Class::Refused(R_CLUSTER), "cluster", &[]),
    row("RENAME", 3, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "generic", &[1]),
    row("RENAMENX", 3, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "generic", &[1]),
    row("REPLCONF", -1, NO_KEYS, Class::Refused(R_REPL), "server", &[]),
    row("REPLICAOF", 3, NO_KEYS, Class::Refused(R_SHARED), "server", &[]),
    row("RESET", 1, NO_KEYS, LOCAL, "connection", &[]),
    row("RESTORE", -4, K1, KEYED, "generic", &[]),
    row("RESTORE-ASKING", -4, K1, Class::Refused(R_CLUSTER), "server", &[]),
    row("ROLE", 1, NO_KEYS, LOCAL, "server", &[26]),
    row("RPOP", -2, K1, KEYED, "list", &[]),
    row("RPOPLPUSH", 3, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "list", &[1]),
    row("RPUSH", -3, K1, KEYED, "list", &[]),
    row("RPUSHX", -3, K1, KEYED, "list", &[]),
    row("SADD", -3, K1, KEYED, "set", &[]),
    row("SAVE", 1, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("SCAN", -2, NO_KEYS, Class::FanOut(Merge::Scan), "generic", &[8]),
    row("SCARD", 2, K1, KEYED, "set", &[]),
    row("SCRIPT", -2, NO_KEYS, CONTAINER, "scripting", &[]),
    row("SCRIPT DEBUG", 3, NO_KEYS, Class::Refused(R_DEBUGGER), "scripting", &[]),
    row("SCRIPT EXISTS", -3, NO_KEYS, Class::FanOut(Merge::AndInts), "scripting", &[10]),
    row("SCRIPT FLUSH", -2, NO_KEYS, Class::FanOut(Merge::AllOk), "scripting", &[4]),
    row("SCRIPT HELP", 2, NO_KEYS, ANY, "scripting", &[15]),
    row("SCRIPT KILL", 2, NO_KEYS, LOCAL, "scripting", &[40]),
    row("SCRIPT LOAD", 3, NO_KEYS, Class::FanOut(Merge::SameReply), "scripting", &[9]),
    row("SDIFF", -2, K_ALL, KEYED, "set", &[1]),
    row("SDIFFSTORE", -3, K_ALL, KEYED, "set", &[1]),
    row("SELECT", 2, NO_KEYS, LOCAL, "connection", &[18]),
    row("SET", -3, K1, KEYED, "string", &[]),
    row("SETBIT", 4, K1, KEYED, "bitmap", &[]),
    row("SETEX", 4, K1, KEYED, "string", &[]),
    row("SETNX", 3, K1, KEYED, "string", &[]),
    row("SETRANGE", 4, K1, KEYED, "string", &[]),
    row("SHUTDOWN", -1, NO_KEYS, Class::Refused(R_SHARED), "server", &[]),
    row("SINTER", -2, K_ALL, KEYED, "set", &[1]),
    row("SINTERCARD", -3, Keys::Numkeys { at: 1, extra: 0 }, KEYED, "set", &[1]),
    row("SINTERSTORE", -3, K_ALL, KEYED, "set", &[1]),
    row("SISMEMBER", 3, K1, KEYED, "set", &[]),
    row("SLAVEOF", 3, NO_KEYS, Class::Refused(R_SHARED), "server", &[]),
    row("SLOWLOG", -2, NO_KEYS, CONTAINER, "server", &[]),
    row("SLOWLOG GET", -2, NO_KEYS, LOCAL, "server", &[35]),
    row("SLOWLOG HELP", 2, NO_KEYS, ANY, "server", &[15]),
    row("SLOWLOG LEN", 2, NO_KEYS, LOCAL, "server", &[35]),
    row("SLOWLOG RESET", 2, NO_KEYS, LOCAL, "server", &[35]),
    row("SMEMBERS", 2, K1, KEYED, "set", &[]),
    row("SMISMEMBER", -3, K1, KEYED, "set", &[]),
    row("SMOVE", 4, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "set", &[1]),
    row("SORT", -2, Keys::KeyPlusStore, KEYED, "generic", &[1, 13]),
    row("SORT_RO", -2, K1, KEYED, "generic", &[]),
    row("SPOP", -2, K1, KEYED, "set", &[]),
    row("SPUBLISH", 3, K1, KEYED, "pubsub", &[31]),
    row("SRANDMEMBER", -2, K1, KEYED, "set", &[]),
    row("SREM", -3, K1, KEYED, "set", &[]),
    row("SSCAN", -3, K1, KEYED, "set", &[]),
    row("SSUBSCRIBE", -2, K_ALL, LOCAL, "pubsub", &[31]),
    row("STRLEN", 2, K1, KEYED, "string", &[]),
    row("SUBSCRIBE", -2, NO_KEYS, LOCAL, "pubsub", &[31]),
    row("SUBSTR", 4, K1, KEYED, "string", &[]),
    row("SUNION", -2, K_ALL, KEYED, "set", &[1]),
    row("SUNIONSTORE", -3, K_ALL, KEYED, "set", &[1]),
    row("SUNSUBSCRIBE", -1, K_ALL, LOCAL, "pubsub", &[31]),
    row("SWAPDB", 3, NO_KEYS, Class::FanOut(Merge::AllOk), "server", &[4]),
    row("SYNC", 1, NO_KEYS, Class::Refused(R_REPL), "server", &[]),
    row("TIME", 1, NO_KEYS, LOCAL, "server", &[20]),
    row("TOUCH", -2, K_ALL, Class::Split(Split::SumInt), "generic", &[3]),
    row("TTL", 2, K1, KEYED, "generic", &[]),
    row("TYPE", 2, K1, KEYED, "generic", &[]),
    row("UNLINK", -2, K_ALL, Class::Split(Split::SumInt), "generic", &[3]),
    row("UNSUBSCRIBE", -1, NO_KEYS, LOCAL, "pubsub", &[31]),
    row("UNWATCH", 1, NO_KEYS, LOCAL, "transactions", &[30]),
    row("WAIT", 3, NO_KEYS, Class::Refused(R_BLOCKING), "generic", &[]),
    row("WAITAOF", 4, NO_KEYS, Class::Refused(R_BLOCKING), "generic", &[27]),
    row("WATCH", -2, K_ALL, LOCAL, "transactions", &[30]),
    row("XACK", -4, K1, KEYED, "stream", &[]),
    row("XADD", -5, K1, KEYED, "stream", &[]),
    row("XAUTOCLAIM", -6, K1, KEYED, "stream", &[]),
    row("XCLAIM", -6, K1, KEYED, "stream", &[]),
    row("XDEL", -3, K1, KEYED, "stream", &[]),
    row("XGROUP", -2, NO_KEYS, CONTAINER, "stream", &[]),
    row("XGROUP CREATE", -5, K2, KEYED, "stream", &[]),
    row("XGROUP CREATECONSUMER", 5, K2, KEYED, "stream", &[]),
    row("XGROUP DELCONSUMER", 5, K2, KEYED, "stream", &[]),
    row("XGROUP DESTROY", 4, K2, KEYED, "stream", &[]),
    row("XGROUP HELP", 2, NO_KEYS, ANY, "stream", &[15]),
    row("XGROUP SETID", -5, K2, KEYED, "stream", &[]),
    row("XINFO", -2, NO_KEYS, CONTAINER, "stream", &[]),
    row("XINFO CONSUMERS", 4, K2, KEYED, "stream", &[]),
    row("XINFO GROUPS", 3, K2, KEYED, "stream", &[]),
    row("XINFO HELP", 2, NO_KEYS, ANY, "stream", &[15]),
    row("XINFO STREAM", -3, K2, KEYED, "stream", &[]),
    row("XLEN", 2, K1, KEYED, "stream", &[]),
    row("XPENDING", -3, K1, KEYED, "stream", &[]),
    row("XRANGE", -4, K1, KEYED, "stream", &[]),
    row("XREAD", -4, Keys::Streams, KEYED, "stream", &[1, 12]),
    row("XREADGROUP", -7, Keys::Streams, KEYED, "stream", &[1, 12]),
    row("XREVRANGE", -4, K1, KEYED, "stream", &[]),
    row("XSETID", -3, K1, KEYED, "stream", &[]),
    row("XTRIM", -4, K1, KEYED, "stream", &[]),
    row("ZADD", -4, K1, KEYED, "sorted-set", &[]),
    row("ZCARD", 2, K1, KEYED, "sorted-set", &[]),
    row("ZCOUNT", 4, K1, KEYED, "sorted-set", &[]),
    row("ZDIFF", -3, Keys::Numkeys { at: 1, extra: 0 }, KEYED, "sorted-set", &[1]),
    row("ZDIFFSTORE", -4, Keys::Numkeys { at: 2, extra: 1 }, KEYED, "sorted-set", &[1]),
    row("ZINCRBY", 4, K1, KEYED, "sorted-set", &[]),
    row("ZINTER", -3, Keys::Numkeys { at: 1, extra: 0 }, KEYED, "sorted-set", &[1]),
    row("ZINTERCARD", -3, Keys::Numkeys { at: 1, extra: 0 }, KEYED, "sorted-set", &[1]),
    row("ZINTERSTORE", -4, Keys::Numkeys { at: 2, extra: 1 }, KEYED, "sorted-set", &[1]),
    row("ZLEXCOUNT", 4, K1, KEYED, "sorted-set", &[]),
    row("ZMPOP", -4, Keys::Numkeys { at: 1, extra: 0 }, KEYED, "sorted-set", &[1]),
    row("ZMSCORE", -3, K1, KEYED, "sorted-set", &[]),
    row("ZPOPMAX", -2, K1, KEYED, "sorted-set", &[]),
    row("ZPOPMIN", -2, K1, KEYED, "sorted-set", &[]),
    row("ZRANDMEMBER", -2, K1, KEYED, "sorted-set", &[]),
    row("ZRANGE", -4, K1, KEYED, "sorted-set", &[]),
    row("ZRANGEBYLEX", -4, K1, KEYED, "sorted-set", &[]),
    row("ZRANGEBYSCORE", -4, K1, KEYED, "sorted-set", &[]),
    row("ZRANGESTORE", -5, Keys::Range { first: 1, last: 2, step: 1 }, KEYED, "sorted-set", &[1]),
    row("ZRANK", 3, K1, KEYED, "sorted-set", &[]),
    row("ZREM", -3, K1, KEYED, "sorted-set", &[]),
    row("ZREMRANGEBYLEX", 4, K1, KEYED, "sorted-set", &[]),
    row("ZREMRANGEBYRANK", 4, K1, KEYED, "sorted-set", &[]),
    row("ZREMRANGEBYSCORE", 4, K1, KEYED, "sorted-set", &[]),
    row("ZREVRANGE", -4, K1, KEYED, "sorted-set", &[]),
    row("ZREVRANGEBYLEX", -4, K1, KEYED, "sorted-set", &[]),
    row("ZREVRANGEBYSCORE", -4, K1, KEYED, "sorted-set", &[]),
    row("ZREVRANK", 3, K1, KEYED, "sorted-set", &[]),
    row("ZSCAN", -3, K1, KEYED, "sorted-set", &[]),
    row("ZSCORE", 3, K1, KEYED, "sorted-set", &[]),
    row("ZUNION", -3, Keys::Numkeys { at: 1, extra: 0 }, KEYED, "sorted-set", &[1]),
    row("ZUNIONSTORE", -4, Keys::Numkeys { at: 2, extra: 1 }, KEYED, "sorted-set", &[1]),
];

/// Longest name (or "CONTAINER SUB") that can match a row.
const MAX_NAME: usize = 48;

fn find(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .binary_search_by(|s| s.name.as_bytes().cmp(name))
        .ok()
        .map(|i| &COMMANDS[i])
}

/// Upper-cases `src` into `buf` at `at`; false when it does not fit or holds a space.
fn put_upper(buf: &mut [u8; MAX_NAME], at: usize, src: &[u8]) -> bool {
    if src.is_empty() || src.len() > MAX_NAME - at || src.contains(&b' ') {
        return false;
    }
    for (d, s) in buf[at..].iter_mut().zip(src) {
        *d = s.to_ascii_uppercase();
    }
    true
}

/// The row of a top-level command (never a subcommand row). Case-insensitive, no heap allocation.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    // Pipelines repeat one command: remember the last row found (per thread, so still no
    // allocation and no locking), which turns the binary search into one comparison.
    thread_local! {
        static LAST: std::cell::Cell<Option<&'static Spec>> = const { std::cell::Cell::new(None) };
    }
    if let Some(spec) = LAST.with(|l| l.get()) {
        // Clients send names in capitals mostly: an exact match is the cheapest test.
        if spec.name.as_bytes() == name || spec.name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(spec);
        }
    }
    let mut buf = [0u8; MAX_NAME];
    if !put_upper(&mut buf, 0, name) {
        return None;
    }
    let found = find(&buf[..name.len()]);
    if found.is_some() {
        LAST.with(|l| l.set(found));
    }
    found
}

/// The row of `"CONTAINER SUB"` (case-insensitive, no heap allocation); None = unknown subcommand.
/// When there is no such row but the container has a catch-all `"CONTAINER *"` row
/// (only `DEBUG *`, refused), that row is returned.
pub fn lookup_sub(container: &'static Spec, sub: &[u8]) -> Option<&'static Spec> {
    let mut buf = [0u8; MAX_NAME];
    let c = container.name.as_bytes();
    if c.len() + 2 > MAX_NAME {
        return None;
    }
    buf[..c.len()].copy_from_slice(c);
    buf[c.len()] = b' ';
    let at = c.len() + 1;
    if put_upper(&mut buf, at, sub) {
        if let Some(spec) = find(&buf[..at + sub.len()]) {
            return Some(spec);
        }
    }
    buf[at] = b'*';
    find(&buf[..at + 1])
}

/// Arity check with Redis's convention (`argc` counts the command name).
pub fn arity_ok(spec: &Spec, argc: usize) -> bool {
    let a = spec.arity;
    if a >= 0 {
        argc == a as usize
    } else {
        argc >= a.unsigned_abs() as usize
    }
}

/// Returned by [`key_positions`] for an argument count Redis rejects with
/// "wrong number of arguments" (MSET/MSETNX with an unpaired key): the caller
/// should send Redis's full text, `-ERR wrong number of arguments for '<name>' command`,
/// exactly as for a failed [`arity_ok`].
pub const ERR_WRONG_ARGS: &str = "ERR wrong number of arguments";
const ERR_NOT_INT: &str = "ERR value is not an integer or out of range";
const ERR_SYNTAX: &str = "ERR syntax error";
const ERR_NEG_KEYS: &str = "ERR Number of keys can't be negative";
const ERR_TOO_MANY_KEYS: &str = "ERR Number of keys can't be greater than number of args";
const ERR_NUMKEYS_GT0: &str = "ERR numkeys should be greater than 0";
const ERR_BAD_NUMKEYS: &str = "ERR Bad number of keys provided";
const ERR_UNBALANCED: &str =
    "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.";
const ERR_MIGRATE_KEYS: &str =
    "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string";

/// Redis's error texts for a bad numkeys argument: (zero allowed, not an integer, too small, too big).
fn numkeys_errors(name: &str) -> (bool, &'static str, &'static str, &'static str) {
    let at_least_one = match name {
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" => {
            return (true, ERR_NOT_INT, ERR_NEG_KEYS, ERR_TOO_MANY_KEYS)
        }
        // Functions word it their own way (functions.c).
        "FCALL" | "FCALL_RO" => return (true, ERR_BAD_NUMKEYS, ERR_NEG_KEYS, ERR_TOO_MANY_KEYS),
        "SINTERCARD" => return (false, ERR_NUMKEYS_GT0, ERR_NUMKEYS_GT0, ERR_TOO_MANY_KEYS),
        "ZUNION" => "ERR at least 1 input key is needed for 'zunion' command",
        "ZINTER" => "ERR at least 1 input key is needed for 'zinter' command",
        "ZDIFF" => "ERR at least 1 input key is needed for 'zdiff' command",
        "ZUNIONSTORE" => "ERR at least 1 input key is needed for 'zunionstore' command",
        "ZINTERSTORE" => "ERR at least 1 input key is needed for 'zinterstore' command",
        "ZDIFFSTORE" => "ERR at least 1 input key is needed for 'zdiffstore' command",
        "ZINTERCARD" => "ERR at least 1 input key is needed for 'zintercard' command",
        // LMPOP ZMPOP BLMPOP BZMPOP
        _ => return (false, ERR_NUMKEYS_GT0, ERR_NUMKEYS_GT0, ERR_SYNTAX),
    };
    (false, ERR_NOT_INT, at_least_one, ERR_SYNTAX)
}

/// Redis's string2ll: optional '-', no leading zeros, no '+', no spaces, fits in i64.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

fn eq_ic(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Index of the STREAMS token of an XREAD/XREADGROUP, and whether BLOCK was given.
/// Err = Redis's syntax error (unknown option, missing STREAMS).
fn scan_xread<'a>(
    argc: usize,
    arg: &dyn Fn(usize) -> &'a [u8],
) -> Result<(usize, bool), &'static str> {
    let mut block = false;
    let mut i = 1;
    while i < argc {
        let a = arg(i);
        let more = argc - i - 1;
        if eq_ic(a, b"STREAMS") && more > 0 {
            return Ok((i, block));
        } else if (eq_ic(a, b"BLOCK") || eq_ic(a, b"COUNT")) && more > 0 {
            block |= eq_ic(a, b"BLOCK");
            i += 2;
        } else if eq_ic(a, b"GROUP") && more > 1 {
            i += 3;
        } else if eq_ic(a, b"NOACK") {
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    Err(ERR_SYNTAX)
}

/// XREAD / XREADGROUP with a BLOCK option (refused at runtime: blocking).
/// `argc`/`arg` are the whole request, as for [`key_positions`].
pub fn is_blocking_xread<'a>(argc: usize, arg: &dyn Fn(usize) -> &'a [u8]) -> bool {
    matches!(scan_xread(argc, arg), Ok((_, true)))
}

/// Positions (indices into args, ascending) of every key of this command, pushed into
/// `out` (cleared first). `arg(i)` returns args[i], `argc` = number of args including the
/// command name (for a subcommand row, including the container name). Call after
/// [`arity_ok`]. Err = the args are malformed for key extraction; the text is Redis's
/// error (without the leading `-`), except [`ERR_WRONG_ARGS`], see there.
/// A [`Class::Keyed`] command may legitimately have no keys (EVAL with numkeys 0).
pub fn key_positions<'a>(
    spec: &Spec,
    argc: usize,
    arg: &dyn Fn(usize) -> &'a [u8],
    out: &mut Vec<usize>,
) -> Result<(), &'static str> {
    out.clear();
    match spec.keys {
        Keys::None => {}
        Keys::Range { first, last, step } => {
            let (first, step) = (usize::from(first), usize::from(step.max(1)));
            if first == 0 || first >= argc {
                return Ok(());
            }
            if last == -1 && step > 1 && !(argc - first).is_multiple_of(step) {
                return Err(ERR_WRONG_ARGS);
            }
            let last = if last < 0 {
                match argc.checked_sub(usize::from(last.unsigned_abs())) {
                    Some(l) => l,
                    None => return Ok(()),
                }
            } else {
                (last as usize).min(argc - 1)
            };
            out.extend((first..=last).step_by(step));
        }
        Keys::Numkeys { at, extra } => {
            let at = usize::from(at);
            if at >= argc {
                return Err(ERR_SYNTAX);
            }
            let (zero_ok, not_int, too_small, too_big) = numkeys_errors(spec.name);
            let n = parse_int(arg(at)).ok_or(not_int)?;
            if n < 0 || (n == 0 && !zero_ok) {
                return Err(too_small);
            }
            let n = usize::try_from(n).map_err(|_| too_big)?;
            if n > argc - at - 1 {
                return Err(too_big);
            }
            if extra != 0 {
                out.push(usize::from(extra));
            }
            out.extend(at + 1..at + 1 + n);
        }
        Keys::Streams => {
            let (pos, _) = scan_xread(argc, arg)?;
            let rest = argc - pos - 1;
            if !rest.is_multiple_of(2) {
                return Err(ERR_UNBALANCED);
            }
            out.extend(pos + 1..pos + 1 + rest / 2);
        }
        Keys::KeyPlusStore => {
            if argc < 2 {
                return Ok(());
            }
            out.push(1);
            let mut store = None;
            if spec.name.starts_with("SORT") {
                // Like Redis's sortGetKeys: skip the arguments of LIMIT, GET and BY.
                let mut i = 2;
                while i < argc {
                    let a = arg(i);
                    if eq_ic(a, b"LIMIT") {
                        i += 3;
                    } else if eq_ic(a, b"GET") || eq_ic(a, b"BY") {
                        i += 2;
                    } else if eq_ic(a, b"STORE") && i + 1 < argc {
                        store = Some(i + 1);
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
            } else {
                // GEORADIUS[BYMEMBER]: options start at 5 at the earliest (Redis's georadiusGetKeys).
                let mut i = 5;
                while i < argc {
                    let a = arg(i);
                    if (eq_ic(a, b"STORE") || eq_ic(a, b"STOREDIST")) && i + 1 < argc {
                        store = Some(i + 1);
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
            }
            out.extend(store);
        }
        Keys::Migrate => {
            // MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw] [KEYS key...]
            if argc < 4 {
                return Ok(());
            }
            let key_given = !arg(3).is_empty();
            let mut i = 6;
            while i < argc {
                let a = arg(i);
                if eq_ic(a, b"AUTH") {
                    i += 2;
                } else if eq_ic(a, b"AUTH2") {
                    i += 3;
                } else if eq_ic(a, b"KEYS") {
                    if key_given {
                        return Err(ERR_MIGRATE_KEYS);
                    }
                    out.extend(i + 1..argc);
                    return Ok(());
                } else {
                    i += 1;
                }
            }
            if key_given {
                out.push(3);
            }
        }
    }
    Ok(())
}

fn support(class: Class) -> String {
    match class {
        Class::Keyed => "yes".into(),
        Class::Split(_) => "split".into(),
        Class::FanOut(_) => "all backends".into(),
        Class::Local => "proxy".into(),
        Class::Blocking => "private connection".into(),
        Class::AnyBackend => "one backend".into(),
        Class::Refused(reason) => format!("no ({reason})"),
        Class::Container => "see subcommands".into(),
    }
}

/// The README command table (markdown), generated from [`COMMANDS`], followed by the
/// numbered notes ([`NOTES`]).
pub fn markdown_table() -> String {
    let mut s = String::new();
    s.push_str("<!-- Generated from src/commands.rs by rustproxy::commands::markdown_table(); do not edit. -->\n\n");
    s.push_str("Support: **yes** = routed by key; **split** = split per backend; **all backends** = sent to every backend and the replies merged; **proxy** = answered by rustproxy itself; **one backend** = sent to one backend; **no** = refused with the reason given (the connection stays open).\n\n");
    s.push_str("| Command | Group | Support | Notes |\n|---|---|---|---|\n");
    for spec in COMMANDS {
        let notes: Vec<String> = spec.notes.iter().map(u8::to_string).collect();
        let name = match spec.name.strip_suffix(" *") {
            Some(container) => format!("`{container}` (other subcommands)"),
            None => format!("`{}`", spec.name),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            name,
            spec.group,
            support(spec.class),
            notes.join(", ")
        );
    }
    s.push_str("\nNotes:\n\n");
    for (n, text) in NOTES {
        let _ = writeln!(s, "{n}. {text}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand `COMMAND LIST` reports in redis-server 7.0.15.
    #[rustfmt::skip]
    const REDIS_7_0_15: &[&str] = &[
    "ACL", "ACL CAT", "ACL DELUSER", "ACL DRYRUN", "ACL GENPASS", "ACL GETUSER", "ACL HELP",
    "ACL LIST", "ACL LOAD", "ACL LOG", "ACL SAVE", "ACL SETUSER", "ACL USERS", "ACL WHOAMI",
    "APPEND", "ASKING", "AUTH", "BGREWRITEAOF", "BGSAVE", "BITCOUNT", "BITFIELD", "BITFIELD_RO",
    "BITOP", "BITPOS", "BLMOVE", "BLMPOP", "BLPOP", "BRPOP", "BRPOPLPUSH", "BZMPOP", "BZPOPMAX",
    "BZPOPMIN", "CLIENT", "CLIENT CACHING", "CLIENT GETNAME", "CLIENT GETREDIR", "CLIENT HELP",
    "CLIENT ID", "CLIENT INFO", "CLIENT KILL", "CLIENT LIST", "CLIENT NO-EVICT", "CLIENT PAUSE",
    "CLIENT REPLY", "CLIENT SETNAME", "CLIENT TRACKING", "CLIENT TRACKINGINFO",
    "CLIENT UNBLOCK", "CLIENT UNPAUSE", "CLUSTER", "CLUSTER ADDSLOTS", "CLUSTER ADDSLOTSRANGE",
    "CLUSTER BUMPEPOCH", "CLUSTER COUNT-FAILURE-REPORTS", "CLUSTER COUNTKEYSINSLOT",
    "CLUSTER DELSLOTS", "CLUSTER DELSLOTSRANGE", "CLUSTER FAILOVER", "CLUSTER FLUSHSLOTS",
    "CLUSTER FORGET", "CLUSTER GETKEYSINSLOT", "CLUSTER HELP", "CLUSTER INFO",
    "CLUSTER KEYSLOT", "CLUSTER LINKS", "CLUSTER MEET", "CLUSTER MYID", "CLUSTER NODES",
    "CLUSTER REPLICAS", "CLUSTER REPLICATE", "CLUSTER RESET", "CLUSTER SAVECONFIG",
    "CLUSTER SET-CONFIG-EPOCH", "CLUSTER SETSLOT", "CLUSTER SHARDS", "CLUSTER SLAVES",
    "CLUSTER SLOTS", "COMMAND", "COMMAND COUNT", "COMMAND DOCS", "COMMAND GETKEYS",
    "COMMAND GETKEYSANDFLAGS", "COMMAND HELP", "COMMAND INFO", "COMMAND LIST", "CONFIG",
    "CONFIG GET", "CONFIG HELP", "CONFIG RESETSTAT", "CONFIG REWRITE", "CONFIG SET", "COPY",
    "DBSIZE", "DEBUG", "DECR", "DECRBY", "DEL", "DISCARD", "DUMP", "ECHO", "EVAL", "EVALSHA",
    "EVALSHA_RO", "EVAL_RO", "EXEC", "EXISTS", "EXPIRE", "EXPIREAT", "EXPIRETIME", "FAILOVER",
    "FCALL", "FCALL_RO", "FLUSHALL", "FLUSHDB", "FUNCTION", "FUNCTION DELETE", "FUNCTION DUMP",
    "FUNCTION FLUSH", "FUNCTION HELP", "FUNCTION KILL", "FUNCTION LIST", "FUNCTION LOAD",
    "FUNCTION RESTORE", "FUNCTION STATS", "GEOADD", "GEODIST", "GEOHASH", "GEOPOS", "GEORADIUS",
    "GEORADIUSBYMEMBER", "GEORADIUSBYMEMBER_RO", "GEORADIUS_RO", "GEOSEARCH", "GEOSEARCHSTORE",
    "GET", "GETBIT", "GETDEL", "GETEX", "GETRANGE", "GETSET", "HDEL", "HELLO", "HEXISTS",
    "HGET", "HGETALL", "HINCRBY", "HINCRBYFLOAT", "HKEYS", "HLEN", "HMGET", "HMSET",
    "HRANDFIELD", "HSCAN", "HSET", "HSETNX", "HSTRLEN", "HVALS", "INCR", "INCRBY",
    "INCRBYFLOAT", "INFO", "KEYS", "LASTSAVE", "LATENCY", "LATENCY DOCTOR", "LATENCY GRAPH",
    "LATENCY HELP", "LATENCY HISTOGRAM", "LATENCY HISTORY", "LATENCY LATEST", "LATENCY RESET",
    "LCS", "LINDEX", "LINSERT", "LLEN", "LMOVE", "LMPOP", "LOLWUT", "LPOP", "LPOS", "LPUSH",
    "LPUSHX", "LRANGE", "LREM", "LSET", "LTRIM", "MEMORY", "MEMORY DOCTOR", "MEMORY HELP",
    "MEMORY MALLOC-STATS", "MEMORY PURGE", "MEMORY STATS", "MEMORY USAGE", "MGET", "MIGRATE",
    "MODULE", "MODULE HELP", "MODULE LIST", "MODULE LOAD", "MODULE LOADEX", "MODULE UNLOAD",
    "MONITOR", "MOVE", "MSET", "MSETNX", "MULTI", "OBJECT", "OBJECT ENCODING", "OBJECT FREQ",
    "OBJECT HELP", "OBJECT IDLETIME", "OBJECT REFCOUNT", "PERSIST", "PEXPIRE", "PEXPIREAT",
    "PEXPIRETIME", "PFADD", "PFCOUNT", "PFDEBUG", "PFMERGE", "PFSELFTEST", "PING", "PSETEX",
    "PSUBSCRIBE", "PSYNC", "PTTL", "PUBLISH", "PUBSUB", "PUBSUB CHANNELS", "PUBSUB HELP",
    "PUBSUB NUMPAT", "PUBSUB NUMSUB", "PUBSUB SHARDCHANNELS", "PUBSUB SHARDNUMSUB",
    "PUNSUBSCRIBE", "QUIT", "RANDOMKEY", "READONLY", "READWRITE", "RENAME", "RENAMENX",
    "REPLCONF", "REPLICAOF", "RESET", "RESTORE", "RESTORE-ASKING", "ROLE", "RPOP", "RPOPLPUSH",
    "RPUSH", "RPUSHX", "SADD", "SAVE", "SCAN", "SCARD", "SCRIPT", "SCRIPT DEBUG",
    "SCRIPT EXISTS", "SCRIPT FLUSH", "SCRIPT HELP", "SCRIPT KILL", "SCRIPT LOAD", "SDIFF",
    "SDIFFSTORE", "SELECT", "SET", "SETBIT", "SETEX", "SETNX", "SETRANGE", "SHUTDOWN", "SINTER",
    "SINTERCARD", "SINTERSTORE", "SISMEMBER", "SLAVEOF", "SLOWLOG", "SLOWLOG GET",
    "SLOWLOG HELP", "SLOWLOG LEN", "SLOWLOG RESET", "SMEMBERS", "SMISMEMBER", "SMOVE", "SORT",
    "SORT_RO", "SPOP", "SPUBLISH", "SRANDMEMBER", "SREM", "SSCAN", "SSUBSCRIBE", "STRLEN",
    "SUBSCRIBE", "SUBSTR", "SUNION", "SUNIONSTORE", "SUNSUBSCRIBE", "SWAPDB", "SYNC", "TIME",
    "TOUCH", "TTL", "TYPE", "UNLINK", "UNSUBSCRIBE", "UNWATCH", "WAIT", "WATCH", "XACK", "XADD",
    "XAUTOCLAIM", "XCLAIM", "XDEL", "XGROUP", "XGROUP CREATE", "XGROUP CREATECONSUMER",
    "XGROUP DELCONSUMER", "XGROUP DESTROY", "XGROUP HELP", "XGROUP SETID", "XINFO",
    "XINFO CONSUMERS", "XINFO GROUPS", "XINFO HELP", "XINFO STREAM", "XLEN", "XPENDING",
    "XRANGE", "XREAD", "XREADGROUP", "XREVRANGE", "XSETID", "XTRIM", "ZADD", "ZCARD", "ZCOUNT",
    "ZDIFF", "ZDIFFSTORE", "ZINCRBY", "ZINTER", "ZINTERCARD", "ZINTERSTORE", "ZLEXCOUNT",
    "ZMPOP", "ZMSCORE", "ZPOPMAX", "ZPOPMIN", "ZRANDMEMBER", "ZRANGE", "ZRANGEBYLEX",
    "ZRANGEBYSCORE", "ZRANGESTORE", "ZRANK", "ZREM", "ZREMRANGEBYLEX", "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYLEX", "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN",
    "ZSCORE", "ZUNION", "ZUNIONSTORE",
    ];

    fn keys_of(name: &str, args: &[&str]) -> Result<Vec<usize>, &'static str> {
        let mut it = name.split(' ');
        let mut spec = lookup(it.next().unwrap().as_bytes()).unwrap();
        if let Some(sub) = it.next() {
            spec = lookup_sub(spec, sub.as_bytes()).unwrap();
        }
        assert!(arity_ok(spec, args.len()), "{name} {args:?}");
        let mut out = vec![99];
        key_positions(spec, args.len(), &|i| args[i].as_bytes(), &mut out)?;
        Ok(out)
    }

    fn words(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    #[test]
    fn rows_are_consistent() {
        for w in COMMANDS.windows(2) {
            assert!(
                w[0].name < w[1].name,
                "unsorted/duplicate: {} {}",
                w[0].name,
                w[1].name
            );
        }
        let groups = [
            "string",
            "list",
            "set",
            "sorted-set",
            "hash",
            "hyperloglog",
            "geo",
            "stream",
            "bitmap",
            "generic",
            "connection",
            "server",
            "scripting",
            "pubsub",
            "transactions",
            "cluster",
            "proxy",
        ];
        for s in COMMANDS {
            assert_ne!(s.arity, 0, "{}", s.name);
            assert!(groups.contains(&s.group), "{} {}", s.name, s.group);
            assert_eq!(s.name, s.name.to_ascii_uppercase());
            assert!(s.name.len() < MAX_NAME);
            let parts: Vec<&str> = s.name.split(' ').collect();
            assert!(
                parts.len() <= 2 && parts.iter().all(|p| !p.is_empty()),
                "{}",
                s.name
            );
            if parts.len() == 2 {
                let parent = lookup(parts[0].as_bytes()).expect(s.name);
                assert!(
                    parent.class == Class::Container || parent.name == "COMMAND",
                    "{}",
                    s.name
                );
                assert!(s.arity >= 2 || s.arity <= -2, "{}", s.name);
                assert!(std::ptr::eq(
                    lookup_sub(parent, parts[1].as_bytes()).unwrap(),
                    s
                ));
            } else {
                assert!(std::ptr::eq(lookup(s.name.as_bytes()).unwrap(), s));
            }
            if s.class == Class::Container {
                let prefix = format!("{} ", s.name);
                assert!(
                    COMMANDS.iter().any(|c| c.name.starts_with(&prefix)),
                    "{}",
                    s.name
                );
            }
            if matches!(s.class, Class::Keyed | Class::Split(_)) {
                assert_ne!(s.keys, Keys::None, "{}", s.name);
            }
            if let Class::Refused(r) = s.class {
                assert!(!r.is_empty() && !r.ends_with('.'));
            }
            let min_argc = s.arity.unsigned_abs() as i32;
            if let Keys::Range { first, last, step } = s.keys {
                let (first, last) = (i32::from(first), i32::from(last));
                assert!(first >= 1 && step >= 1, "{}", s.name);
                if last >= 0 {
                    assert!(first <= last && last < min_argc, "{}", s.name);
                } else if s.name != "SUNSUBSCRIBE" {
                    assert!(min_argc + last >= first, "{}", s.name);
                }
                if s.arity > 0 {
                    assert!(first < min_argc, "{}", s.name);
                }
            }
            if let Keys::Numkeys { at, extra } = s.keys {
                assert!(i32::from(at) < min_argc && extra < at, "{}", s.name);
            }
            for n in s.notes {
                assert!(NOTES.iter().any(|(k, _)| k == n), "{} note {n}", s.name);
            }
        }
        for (i, (n, _)) in NOTES.iter().enumerate() {
            assert_eq!(usize::from(*n), i + 1);
            assert!(
                COMMANDS.iter().any(|s| s.notes.contains(n)),
                "note {n} unused"
            );
        }
    }

    #[test]
    fn every_redis_7_0_command_has_a_row() {
        for name in REDIS_7_0_15 {
            let mut it = name.split(' ');
            let top = lookup(it.next().unwrap().as_bytes()).expect(name);
            if let Some(sub) = it.next() {
                let spec = lookup_sub(top, sub.to_ascii_lowercase().as_bytes()).expect(name);
                assert_eq!(&spec.name, name);
            }
        }
    }

    #[test]
    fn lookup_cases() {
        assert_eq!(lookup(b"get").unwrap().name, "GET");
        assert_eq!(lookup(b"GeT").unwrap().name, "GET");
        assert_eq!(lookup(b"evalsha_ro").unwrap().name, "EVALSHA_RO");
        assert_eq!(lookup(b"restore-asking").unwrap().name, "RESTORE-ASKING");
        assert!(lookup(b"GETT").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(b"config get").is_none());
        assert!(lookup(b"DEBUG *").is_none());
        assert!(lookup(&[b'a'; 1000]).is_none());
        assert!(lookup(&[0xff; 40]).is_none());
        let config = lookup(b"config").unwrap();
        assert_eq!(config.class, Class::Container);
        assert_eq!(lookup_sub(config, b"get").unwrap().name, "CONFIG GET");
        assert_eq!(
            lookup_sub(config, b"ReSetStat").unwrap().class,
            Class::Local
        );
        assert!(lookup_sub(config, b"nope").is_none());
        assert!(lookup_sub(config, b"").is_none());
        assert!(lookup_sub(config, b"get x").is_none());
        assert!(lookup_sub(config, &[b'g'; 1000]).is_none());
        let debug = lookup(b"debug").unwrap();
        assert_eq!(lookup_sub(debug, b"object").unwrap().class, Class::Keyed);
        assert!(matches!(
            lookup_sub(debug, b"sleep").unwrap().class,
            Class::Refused(_)
        ));
        assert!(matches!(
            lookup_sub(debug, &[b's'; 1000]).unwrap().class,
            Class::Refused(_)
        ));
        assert_eq!(lookup(b"backends").unwrap().group, "proxy");
        assert_eq!(lookup(b"mget").unwrap().class, Class::Split(Split::Mget));
        assert_eq!(
            lookup(b"keys").unwrap().class,
            Class::FanOut(Merge::ConcatArrays)
        );
        assert_eq!(lookup(b"multi").unwrap().class, Class::Local);
        assert_eq!(lookup(b"blpop").unwrap().class, Class::Blocking);
    }

    #[test]
    fn arity() {
        let get = lookup(b"GET").unwrap();
        assert!(arity_ok(get, 2) && !arity_ok(get, 1) && !arity_ok(get, 3));
        let mset = lookup(b"MSET").unwrap();
        assert!(!arity_ok(mset, 2) && arity_ok(mset, 3) && arity_ok(mset, 7));
    }

    #[test]
    fn key_positions_cases() {
        assert_eq!(keys_of("GET", &words("GET k")), Ok(vec![1]));
        assert_eq!(
            keys_of("MSET", &words("MSET a 1 b 2 c 3")),
            Ok(vec![1, 3, 5])
        );
        assert_eq!(keys_of("MSET", &words("MSET a 1 b")), Err(ERR_WRONG_ARGS));
        assert_eq!(keys_of("DEL", &words("DEL a b c")), Ok(vec![1, 2, 3]));
        assert_eq!(keys_of("BLPOP", &words("BLPOP a b 0")), Ok(vec![1, 2]));
        assert_eq!(
            keys_of("BITOP", &words("BITOP AND d a b")),
            Ok(vec![2, 3, 4])
        );
        assert_eq!(keys_of("PING", &words("PING")), Ok(vec![]));
        assert_eq!(keys_of("EVAL", &words("EVAL s 0")), Ok(vec![]));
        assert_eq!(keys_of("EVAL", &words("EVAL s 0 a b")), Ok(vec![]));
        assert_eq!(keys_of("EVAL", &words("EVAL s 2 a b c")), Ok(vec![3, 4]));
        assert_eq!(keys_of("EVAL", &words("EVAL s x a")), Err(ERR_NOT_INT));
        assert_eq!(keys_of("EVAL", &words("EVAL s 01 a")), Err(ERR_NOT_INT));
        assert_eq!(
            keys_of("EVAL", &words("EVAL s 99999999999999999999 a")),
            Err(ERR_NOT_INT)
        );
        assert_eq!(keys_of("EVAL", &words("EVAL s -1 a")), Err(ERR_NEG_KEYS));
        assert_eq!(
            keys_of("EVAL", &words("EVAL s 3 a b")),
            Err(ERR_TOO_MANY_KEYS)
        );
        assert_eq!(keys_of("FCALL", &words("FCALL f 1 a x")), Ok(vec![3]));
        assert_eq!(
            keys_of("FCALL", &words("FCALL f notanumber")),
            Err(ERR_BAD_NUMKEYS)
        );
        assert_eq!(
            keys_of("FCALL_RO", &words("FCALL_RO f -1")),
            Err(ERR_NEG_KEYS)
        );
        assert_eq!(
            keys_of("ZUNIONSTORE", &words("ZUNIONSTORE d 2 a b WEIGHTS 1 2")),
            Ok(vec![1, 3, 4])
        );
        assert_eq!(
            keys_of("ZUNIONSTORE", &words("ZUNIONSTORE d 0 a")),
            Err("ERR at least 1 input key is needed for 'zunionstore' command")
        );
        assert_eq!(keys_of("ZUNION", &words("ZUNION 5 a b")), Err(ERR_SYNTAX));
        assert_eq!(
            keys_of("SINTERCARD", &words("SINTERCARD 2 a b LIMIT 1")),
            Ok(vec![2, 3])
        );
        assert_eq!(
            keys_of("SINTERCARD", &words("SINTERCARD x a")),
            Err(ERR_NUMKEYS_GT0)
        );
        assert_eq!(keys_of("LMPOP", &words("LMPOP 2 a b LEFT")), Ok(vec![2, 3]));
        assert_eq!(
            keys_of("BLMPOP", &words("BLMPOP 0 2 a b LEFT COUNT 2")),
            Ok(vec![3, 4])
        );
        assert_eq!(
            keys_of("BZMPOP", &words("BZMPOP 0 0 a MIN")),
            Err(ERR_NUMKEYS_GT0)
        );
        assert_eq!(
            keys_of("XREAD", &words("XREAD STREAMS a b 0 0")),
            Ok(vec![2, 3])
        );
        assert_eq!(
            keys_of("XREAD", &words("XREAD COUNT 2 STREAMS streams 0")),
            Ok(vec![4])
        );
        assert_eq!(
            keys_of("XREAD", &words("XREAD STREAMS a b 0")),
            Err(ERR_UNBALANCED)
        );
        assert_eq!(
            keys_of("XREAD", &words("XREAD COUNT 1 a b")),
            Err(ERR_SYNTAX)
        );
        assert_eq!(
            keys_of(
                "XREADGROUP",
                &words("XREADGROUP GROUP g streams NOACK STREAMS a >")
            ),
            Ok(vec![6])
        );
        assert_eq!(keys_of("SORT", &words("SORT k")), Ok(vec![1]));
        assert_eq!(keys_of("SORT", &words("SORT k STORE d")), Ok(vec![1, 3]));
        assert_eq!(
            keys_of("SORT", &words("sort k by w_* limit 0 1 get store store d")),
            Ok(vec![1, 10])
        );
        assert_eq!(keys_of("SORT", &words("SORT k STORE")), Ok(vec![1]));
        assert_eq!(keys_of("SORT_RO", &words("SORT_RO k")), Ok(vec![1]));
        assert_eq!(
            keys_of("GEORADIUS", &words("GEORADIUS k 15 37 200 km STOREDIST d")),
            Ok(vec![1, 7])
        );
        assert_eq!(
            keys_of(
                "GEORADIUSBYMEMBER",
                &words("GEORADIUSBYMEMBER k m 200 km COUNT 2 store d")
            ),
            Ok(vec![1, 8])
        );
        assert_eq!(
            keys_of("GEORADIUS", &words("GEORADIUS k 15 37 200 km")),
            Ok(vec![1])
        );
        assert_eq!(
            keys_of("MIGRATE", &words("MIGRATE h 1 k 0 10")),
            Ok(vec![3])
        );
        let args = [
            "MIGRATE", "h", "1", "", "0", "10", "AUTH2", "keys", "pw", "KEYS", "a", "b",
        ];
        assert_eq!(keys_of("MIGRATE", &args), Ok(vec![10, 11]));
        assert_eq!(
            keys_of("MIGRATE", &words("MIGRATE h 1 k 0 10 KEYS a")),
            Err(ERR_MIGRATE_KEYS)
        );
        assert_eq!(
            keys_of("MIGRATE", &["MIGRATE", "h", "1", "", "0", "10"]),
            Ok(vec![])
        );
        assert_eq!(
            keys_of("OBJECT ENCODING", &words("OBJECT ENCODING k")),
            Ok(vec![2])
        );
        assert_eq!(
            keys_of("MEMORY USAGE", &words("MEMORY USAGE k SAMPLES 5")),
            Ok(vec![2])
        );
        assert_eq!(
            keys_of("XINFO STREAM", &words("XINFO STREAM k FULL")),
            Ok(vec![2])
        );
        assert_eq!(
            keys_of("CONFIG GET", &words("CONFIG GET maxmemory")),
            Ok(vec![])
        );
    }

    #[test]
    fn blocking_xread() {
        let block = |s: &str| {
            let a = words(s);
            is_blocking_xread(a.len(), &|i| a[i].as_bytes())
        };
        assert!(block("XREAD BLOCK 0 STREAMS a 0"));
        assert!(block("xreadgroup group g c block 10 streams a >"));
        assert!(!block("XREAD COUNT 1 STREAMS block 0"));
        assert!(!block("XREAD STREAMS a 0"));
    }

    #[test]
    fn routing_decisions() {
        let class = |n: &str| {
            let mut it = n.split(' ');
            let top = lookup(it.next().unwrap().as_bytes()).unwrap();
            it.next()
                .map_or(top, |s| lookup_sub(top, s.as_bytes()).unwrap())
                .class
        };
        for n in ["MGET", "MSET", "DEL", "UNLINK", "EXISTS", "TOUCH"] {
            assert!(matches!(class(n), Class::Split(_)), "{n}");
        }
        for n in [
            "RENAME",
            "SMOVE",
            "SUNIONSTORE",
            "ZINTERCARD",
            "LMOVE",
            "BITOP",
            "MSETNX",
            "PFMERGE",
            "EVAL",
            "FCALL_RO",
            "SORT",
            "COPY",
            "GEOSEARCHSTORE",
            "ZMPOP",
            "XREADGROUP",
            "DUMP",
            "RESTORE",
            "OBJECT FREQ",
            "DEBUG OBJECT",
            "XGROUP SETID",
            "XINFO CONSUMERS",
            "HEXPIRE",
            "MOVE",
        ] {
            assert_eq!(class(n), Class::Keyed, "{n}");
        }
        assert_eq!(class("SUBSCRIBE"), Class::Local);
        assert_eq!(class("PUBLISH"), Class::Keyed);
        assert_eq!(class("PUBSUB NUMSUB"), Class::FanOut(Merge::SumPairs));
        for n in [
            "WAIT",
            "WAITAOF",
            "MONITOR",
            "PSYNC",
            "CLUSTER SLOTS",
            "SHUTDOWN",
            "CLIENT TRACKING",
            "ACL SETUSER",
            "MODULE LOAD",
            "READONLY",
            "DEBUG SLEEP",
        ] {
            assert!(matches!(class(n), Class::Refused(_)), "{n}");
        }
        for n in [
            "PING",
            "ECHO",
            "QUIT",
            "SELECT",
            "HELLO",
            "AUTH",
            "RESET",
            "INFO",
            "TIME",
            "COMMAND",
            "COMMAND DOCS",
            "CLIENT SETNAME",
            "CLIENT NO-TOUCH",
            "CLIENT KILL",
            "CLIENT UNBLOCK",
            "SCRIPT KILL",
            "FUNCTION KILL",
            "CONFIG RESETSTAT",
            "BACKEND",
            "FORWARD",
            "PROXY",
        ] {
            assert_eq!(class(n), Class::Local, "{n}");
        }
        assert_eq!(class("SCRIPT EXISTS"), Class::FanOut(Merge::AndInts));
        assert_eq!(class("FUNCTION LOAD"), Class::FanOut(Merge::SameReply));
        assert_eq!(class("SCAN"), Class::FanOut(Merge::Scan));
        assert_eq!(class("RANDOMKEY"), Class::FanOut(Merge::RandomKey));
        assert_eq!(class("CONFIG SET"), Class::FanOut(Merge::AllOk));
        assert_eq!(class("CONFIG GET"), Class::FanOut(Merge::ConfigGet));
        assert_eq!(class("DBSIZE"), Class::FanOut(Merge::SumInt));
    }

    #[test]
    fn markdown() {
        let md = markdown_table();
        assert!(md.contains("| `GET` | string | yes |  |"));
        assert!(md.contains("| `MULTI` | transactions | proxy | 30 |"));
        assert!(md.contains("| `BLPOP` | list | private connection | 29 |"));
        assert!(md.contains("\n1. All keys"));
        assert_eq!(md.matches("\n| `").count(), COMMANDS.len());
        assert!(md.contains("| `DEBUG` (other subcommands) | server | no ("));
    }
}
