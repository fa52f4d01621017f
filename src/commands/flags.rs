//! What the proxy must know of each command besides its routing, as one byte of flags per row
//! of the command table: the ACL-like classes (write, admin), when a command may run (before
//! AUTH, in RESP2 subscribe mode, at once inside MULTI), and its effect on connections (a
//! fence before it; a change of connection state that FORWARD must refuse).
//!
//! Invariant: this is the only place that lists command names by property; every other module
//! asks `has(spec, flag)`. The lists are sorted and name rows of the table (tested).

use super::{Class, Spec};

/// What the session layer must know of a command besides routing, one bit each.
pub mod flag {
    /// Writes data: refused to `readonly` users.
    pub const WRITE: u8 = 4;
    /// Administers the server (subject to `admin_commands`).
    pub const ADMIN: u8 = 8;
    /// Runs before AUTH (AUTH, HELLO, QUIT, PING).
    pub const NO_AUTH: u8 = 16;
    /// Allowed in RESP2 subscribe mode ((P|S)(UN)SUBSCRIBE, PING, QUIT, RESET).
    pub const IN_SUBSCRIBE: u8 = 32;
    /// Runs at once between MULTI and EXEC instead of being queued.
    pub const NOT_QUEUED: u8 = 64;
    /// Runs only after every earlier reply of the client is in: it moves the client's later
    /// commands to other backend connections (protocol switch, private connection,
    /// subscriptions), so nothing sent before may overtake it or be overtaken.
    pub const FENCE: u8 = 1;
    /// Changes the state of the connection it runs on (transactions, database, protocol,
    /// subscriptions, reply mode, authentication, monitoring, replica reads): never run on a
    /// shared backend connection (FORWARD refuses it).
    pub const CONN_STATE: u8 = 2;
    /// Refused between MULTI and EXEC with Redis's `ERR Command not allowed inside a
    /// transaction` (Redis 7.0's `no-multi` flag: PSYNC, SAVE, SHUTDOWN, SYNC).
    pub const NO_MULTI: u8 = 128;
}

/// Flags (see [`flag`]) of each row of [`COMMANDS`], by row index (`row_of`); computed once.
pub fn flags(row: usize) -> u8 {
    table().get(row).copied().unwrap_or(0)
}

/// The whole table, row by row (a hot loop may keep the slice).
pub fn table() -> &'static [u8] {
    static FLAGS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FLAGS.get_or_init(|| super::COMMANDS.iter().map(flags_of).collect())
}

fn flags_of(spec: &Spec) -> u8 {
    let name = spec.name;
    let subscribe_family = matches!(
        name,
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "SUNSUBSCRIBE"
    );
    let mut f = 0;
    if WRITE.binary_search(&name).is_ok() {
        f |= flag::WRITE;
    }
    if ADMIN.binary_search(&name).is_ok() {
        f |= flag::ADMIN;
    }
    if matches!(name, "AUTH" | "HELLO" | "QUIT" | "PING") {
        f |= flag::NO_AUTH;
    }
    if subscribe_family || matches!(name, "PING" | "QUIT" | "RESET") {
        f |= flag::IN_SUBSCRIBE;
    }
    if matches!(
        name,
        "EXEC" | "DISCARD" | "MULTI" | "WATCH" | "QUIT" | "RESET"
    ) {
        f |= flag::NOT_QUEUED;
    }
    if matches!(name, "PSYNC" | "SAVE" | "SHUTDOWN" | "SYNC") {
        f |= flag::NO_MULTI;
    }
    // Blocking commands (and XREAD/XREADGROUP, blocking with BLOCK, and FORWARD, which may
    // carry one) take a private connection.
    if spec.class == Class::Blocking
        || name.starts_with("XREAD")
        || name == "FORWARD"
        || subscribe_family
        || matches!(name, "HELLO" | "RESET" | "WATCH" | "SELECT")
    {
        f |= flag::FENCE;
    }
    if subscribe_family
        || matches!(
            name,
            "MULTI"
                | "EXEC"
                | "DISCARD"
                | "WATCH"
                | "UNWATCH"
                | "SELECT"
                | "SWAPDB"
                | "HELLO"
                | "AUTH"
                | "RESET"
                | "MONITOR"
                | "READONLY"
                | "READWRITE"
                | "QUIT"
                | "SYNC"
                | "PSYNC"
                | "REPLCONF"
                | "ASKING"
                | "CLIENT REPLY"
                | "CLIENT TRACKING"
                | "CLIENT CACHING"
                | "CLIENT SETNAME"
                | "CLIENT NO-EVICT"
                | "CLIENT NO-TOUCH"
                | "CLIENT PAUSE"
                | "CLIENT UNPAUSE"
        )
    {
        f |= flag::CONN_STATE;
    }
    f
}

/// The row index of `spec` in [`super::COMMANDS`] (`COMMANDS.len()` for a spec not in it).
pub fn row_of(spec: &Spec) -> usize {
    let size = std::mem::size_of::<Spec>();
    let base = super::COMMANDS.as_ptr() as usize;
    let addr = spec as *const Spec as usize;
    match addr.checked_sub(base) {
        Some(off) if size != 0 && off % size == 0 && off / size < super::COMMANDS.len() => {
            off / size
        }
        _ => super::COMMANDS.len(),
    }
}

/// Whether `spec` has every bit of `f`.
pub fn has(spec: &Spec, f: u8) -> bool {
    flags(row_of(spec)) & f == f
}

/// Write commands (sorted, byte order).  Sources: Redis 7.0's `write` and `admin`/`dangerous` ACL categories, as documented in src/auth.rs.
pub static WRITE: &[&str] = &[
    "APPEND",
    "BITFIELD",
    "BITOP",
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZMPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "COPY",
    "DECR",
    "DECRBY",
    "DEL",
    "EVAL",
    "EVALSHA",
    "EXPIRE",
    "EXPIREAT",
    "FCALL",
    "FLUSHALL",
    "FLUSHDB",
    "FORWARD",
    "FUNCTION DELETE",
    "FUNCTION FLUSH",
    "FUNCTION LOAD",
    "FUNCTION RESTORE",
    "GEOADD",
    "GEORADIUS",
    "GEORADIUSBYMEMBER",
    "GEOSEARCHSTORE",
    "GETDEL",
    "GETEX",
    "GETSET",
    "HDEL",
    "HEXPIRE",
    "HEXPIREAT",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HMSET",
    "HPERSIST",
    "HPEXPIRE",
    "HPEXPIREAT",
    "HSET",
    "HSETNX",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LINSERT",
    "LMOVE",
    "LMPOP",
    "LPOP",
    "LPUSH",
    "LPUSHX",
    "LREM",
    "LSET",
    "LTRIM",
    "MIGRATE",
    "MOVE",
    "MSET",
    "MSETNX",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PFADD",
    "PFDEBUG",
    "PFMERGE",
    "PSETEX",
    "PUBLISH",
    "RENAME",
    "RENAMENX",
    "RESTORE",
    "RESTORE-ASKING",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SCRIPT FLUSH",
    "SCRIPT LOAD",
    "SDIFFSTORE",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SINTERSTORE",
    "SMOVE",
    "SORT",
    "SPOP",
    "SPUBLISH",
    "SREM",
    "SUNIONSTORE",
    "SWAPDB",
    "UNLINK",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XGROUP CREATE",
    "XGROUP CREATECONSUMER",
    "XGROUP DELCONSUMER",
    "XGROUP DESTROY",
    "XGROUP SETID",
    "XREADGROUP",
    "XSETID",
    "XTRIM",
    "ZADD",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTERSTORE",
    "ZMPOP",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANGESTORE",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZUNIONSTORE",
];

/// Admin commands (sorted, byte order).  Sources: Redis 7.0's `write` and `admin`/`dangerous` ACL categories, as documented in src/auth.rs.
pub static ADMIN: &[&str] = &[
    "ACL DELUSER",
    "ACL DRYRUN",
    "ACL GETUSER",
    "ACL LIST",
    "ACL LOAD",
    "ACL LOG",
    "ACL SAVE",
    "ACL SETUSER",
    "ACL USERS",
    "BGREWRITEAOF",
    "BGSAVE",
    "CLIENT KILL",
    "CLIENT LIST",
    "CLIENT NO-EVICT",
    "CLIENT PAUSE",
    "CLIENT UNBLOCK",
    "CLIENT UNPAUSE",
    "CLUSTER ADDSLOTS",
    "CLUSTER ADDSLOTSRANGE",
    "CLUSTER BUMPEPOCH",
    "CLUSTER COUNT-FAILURE-REPORTS",
    "CLUSTER DELSLOTS",
    "CLUSTER DELSLOTSRANGE",
    "CLUSTER FAILOVER",
    "CLUSTER FLUSHSLOTS",
    "CLUSTER FORGET",
    "CLUSTER MEET",
    "CLUSTER REPLICAS",
    "CLUSTER REPLICATE",
    "CLUSTER RESET",
    "CLUSTER SAVECONFIG",
    "CLUSTER SET-CONFIG-EPOCH",
    "CLUSTER SETSLOT",
    "CLUSTER SLAVES",
    "CONFIG GET",
    "CONFIG RESETSTAT",
    "CONFIG REWRITE",
    "CONFIG SET",
    "DEBUG",
    "DEBUG *",
    "DEBUG OBJECT",
    "FAILOVER",
    "FLUSHALL",
    "FLUSHDB",
    "FORWARD",
    "FUNCTION DELETE",
    "FUNCTION DUMP",
    "FUNCTION FLUSH",
    "FUNCTION KILL",
    "FUNCTION LIST",
    "FUNCTION LOAD",
    "FUNCTION RESTORE",
    "FUNCTION STATS",
    "KEYS",
    "LATENCY DOCTOR",
    "LATENCY GRAPH",
    "LATENCY HISTOGRAM",
    "LATENCY HISTORY",
    "LATENCY LATEST",
    "LATENCY RESET",
    "MIGRATE",
    "MODULE LIST",
    "MODULE LOAD",
    "MODULE LOADEX",
    "MODULE UNLOAD",
    "MONITOR",
    "PFDEBUG",
    "PFSELFTEST",
    "PROXY",
    "PSYNC",
    "REPLCONF",
    "REPLICAOF",
    "SAVE",
    "SCRIPT DEBUG",
    "SCRIPT EXISTS",
    "SCRIPT FLUSH",
    "SCRIPT KILL",
    "SCRIPT LOAD",
    "SHUTDOWN",
    "SLAVEOF",
    "SLOWLOG GET",
    "SLOWLOG LEN",
    "SLOWLOG RESET",
    "SWAPDB",
    "SYNC",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::lookup;

    fn has_name(name: &str, f: u8) -> bool {
        has(lookup(name.as_bytes()).expect(name), f)
    }

    #[test]
    fn lists_are_sorted_rows() {
        for table in [WRITE, ADMIN] {
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{table:?}");
            for n in table {
                assert!(super::super::COMMANDS.iter().any(|s| s.name == *n), "{n}");
            }
        }
    }

    #[test]
    fn fences_and_connection_state() {
        for n in [
            "HELLO",
            "RESET",
            "WATCH",
            "SUBSCRIBE",
            "BLPOP",
            "XREAD",
            "FORWARD",
            "SELECT",
        ] {
            assert!(has_name(n, flag::FENCE), "{n} fences");
        }
        for n in ["GET", "SET", "MGET", "PING", "MULTI", "EXEC"] {
            assert!(!has_name(n, flag::FENCE), "{n} does not fence");
        }
        for n in [
            "MULTI",
            "SELECT",
            "SUBSCRIBE",
            "HELLO",
            "AUTH",
            "RESET",
            "READONLY",
            "QUIT",
        ] {
            assert!(has_name(n, flag::CONN_STATE), "{n} changes the connection");
        }
        assert!(!has_name("GET", flag::CONN_STATE));
    }

    #[test]
    fn session_rules() {
        assert!(has_name("AUTH", flag::NO_AUTH) && !has_name("GET", flag::NO_AUTH));
        assert!(has_name("PING", flag::IN_SUBSCRIBE) && !has_name("SET", flag::IN_SUBSCRIBE));
        assert!(has_name("EXEC", flag::NOT_QUEUED) && !has_name("INCR", flag::NOT_QUEUED));
        assert!(has_name("SET", flag::WRITE) && !has_name("GET", flag::WRITE));
        assert!(has_name("FLUSHALL", flag::ADMIN) && !has_name("GET", flag::ADMIN));
        // Redis 7.0.15's no-multi commands, exactly (COMMAND INFO flags `no_multi`).
        let no_multi: Vec<&str> = super::super::COMMANDS
            .iter()
            .filter(|s| has(s, flag::NO_MULTI))
            .map(|s| s.name)
            .collect();
        assert_eq!(no_multi, ["PSYNC", "SAVE", "SHUTDOWN", "SYNC"]);
    }
}
