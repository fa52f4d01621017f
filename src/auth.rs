//! Access control: who may connect to a pool and what each client may run.
//!
//! Pure functions and tables only; `proxy` applies them.  Pieces:
//! * [`Level`]: a client's permission level (`readonly` < `readwrite` < `admin`), and
//!   [`AdminPolicy`]: declared in `config` (the config holds them), re-exported here.
//! * [`Users`]: the pool's credentials, built from its config: the `default` user (password
//!   `requirepass`, else `redis_auth`; level `default_level`) and the `user NAME PASSWORD LEVEL`
//!   lines.  [`Users::check`] compares passwords with [`constant_time_eq`].
//! * [`is_write`] / [`is_admin`]: static, sorted tables of command rows (names as in
//!   [`crate::commands::COMMANDS`], subcommands as `"CONFIG SET"`).  The write table is Redis
//!   7.0.15's `write` flag (from `COMMAND INFO`), plus the commands Redis marks `may_replicate`
//!   (EVAL, EVALSHA, FCALL, PUBLISH, SPUBLISH; PFCOUNT stays a read, Redis flags it `readonly`
//!   too), SCRIPT LOAD/FLUSH (scripts may write), the Redis 7.4 hash-field expiry writers, and
//!   the proxy's FORWARD (it can carry anything).  The admin table is Redis 7.0.15's `admin`
//!   flag plus FLUSHALL, FLUSHDB, KEYS, SWAPDB, MIGRATE, every DEBUG, SCRIPT and FUNCTION
//!   subcommand except HELP, and the proxy's own PROXY (reload, membership) and FORWARD.
//! * [`permitted`]: the decision for one (level, command, `admin_commands` policy).
//! * [`Renames`]: `rename_command OLD NEW`, mapping what a client typed to the table name.
//!
//! Depends on `config` and `commands`; `config` does not depend on this module.
//!
//! Invariants: both tables are sorted and every name in them is a row of the command table
//! (checked by the tests); [`Renames::map`] never allocates.

use crate::commands::Spec;
use crate::config::PoolConfig;
/// The levels and the `admin_commands` policy are config vocabulary (`PoolConfig` holds
/// them); re-exported so that `auth::Level` names the same type.
pub use crate::config::{AdminPolicy, Level, LEVEL_NAMES};

/// Compare secrets without an early exit (constant time in the length of `a`).
/// Give the secret as `b` and what the client sent as `a`: the time depends only on the
/// client's own input length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        let y = if b.is_empty() { 0 } else { b[i % b.len()] };
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// The pool's users.
#[derive(Clone, Debug)]
pub struct Users {
    /// Password of the `default` user (`requirepass`, else `redis_auth`); None = no default
    /// password (then AUTH as `default` fails when other users exist).
    default_pass: Option<Vec<u8>>,
    default_level: Level,
    /// `user` lines: (name, password, level).
    named: Vec<(Vec<u8>, Vec<u8>, Level)>,
}

impl Users {
    pub fn from_config(p: &PoolConfig) -> Users {
        Users {
            default_pass: p
                .requirepass
                .as_ref()
                .or(p.redis_auth.as_ref())
                .map(|s| s.as_bytes().to_vec()),
            default_level: p.default_level,
            named: p
                .users
                .iter()
                .map(|(n, pw, l)| (n.as_bytes().to_vec(), pw.as_bytes().to_vec(), *l))
                .collect(),
        }
    }

    /// Any password configured: clients start unauthenticated and must AUTH (or HELLO AUTH).
    pub fn required(&self) -> bool {
        self.default_pass.is_some() || !self.named.is_empty()
    }

    /// Ok(level) or Err(()) for a wrong user/password. `user` is "default" for AUTH <password>.
    /// User names are case-sensitive (as in Redis); the password comparison is constant-time
    /// and done even for an unknown user.
    /// (`Err(())`: the caller answers WRONGPASS; there is nothing more to say.)
    #[allow(clippy::result_unit_err)]
    pub fn check(&self, user: &[u8], pass: &[u8]) -> Result<Level, ()> {
        let found = if user == b"default" {
            self.default_pass
                .as_deref()
                .map(|pw| (pw, self.default_level))
        } else {
            self.named
                .iter()
                .find(|(n, _, _)| n.as_slice() == user)
                .map(|(_, pw, l)| (pw.as_slice(), *l))
        };
        match found {
            Some((pw, level)) if constant_time_eq(pass, pw) => Ok(level),
            Some(_) => Err(()),
            None => {
                // Same work as a real comparison, so an unknown user is not told apart by time.
                let _ = constant_time_eq(pass, b"\0rustproxy-no-such-user");
                Err(())
            }
        }
    }

    /// Whether a user of that name exists (`default` always does).
    pub fn exists(&self, user: &[u8]) -> bool {
        user == b"default" || self.named.iter().any(|(n, _, _)| n.as_slice() == user)
    }

    /// Level of the `default` user (`default_level`, default Admin): what clients have when no
    /// password is required (so `default_level readonly` without passwords makes a read-only
    /// pool), and what `AUTH <password>` grants.
    pub fn default_level(&self) -> Level {
        self.default_level
    }
}

/// Does `spec` write data (or may it: scripts, FORWARD)?  A container row (`CONFIG`) is never a
/// write; ask about its subcommand row.
pub fn is_write(spec: &Spec) -> bool {
    crate::commands::has(spec, crate::commands::flag::WRITE)
}

/// Is `spec` an admin command (subject to `admin_commands`)?  PROXY counts as a whole
/// (including PROXY BACKENDS); DEBUG includes DEBUG OBJECT and the refused `DEBUG *` row.
pub fn is_admin(spec: &Spec) -> bool {
    crate::commands::has(spec, crate::commands::flag::ADMIN)
}

/// Ok, or Redis-style error text (without '-'): "NOPERM this user has no permissions to run the
/// 'flushall' command" (Redis 7's ACL wording; lowercase name, '|' for subcommands), and for
/// Disabled: "ERR <NAME> is disabled by the proxy's configuration (admin_commands disabled)".
pub fn permitted(level: Level, spec: &Spec, policy: AdminPolicy) -> Result<(), String> {
    let noperm = || {
        let name = spec.name.to_ascii_lowercase().replace(' ', "|");
        Err(format!(
            "NOPERM this user has no permissions to run the '{name}' command"
        ))
    };
    if level == Level::Admin && policy != AdminPolicy::Disabled {
        // The common case (no users configured): nothing to look up per request.
        return Ok(());
    }
    if is_admin(spec) {
        match policy {
            AdminPolicy::Disabled => {
                return Err(format!(
                    "ERR {} is disabled by the proxy's configuration (admin_commands disabled)",
                    spec.name
                ))
            }
            AdminPolicy::AdminOnly if level < Level::Admin => return noperm(),
            _ => {}
        }
    }
    if level == Level::ReadOnly && is_write(spec) {
        return noperm();
    }
    Ok(())
}

/// `rename_command OLD NEW` lines of a pool.
#[derive(Clone, Debug, Default)]
pub struct Renames {
    /// (NEW as configured, OLD's table name); NEW is never empty.
    new_to_old: Vec<(Box<[u8]>, &'static str)>,
    /// Table names that were renamed away or disabled (`NEW` = "").
    hidden: Vec<&'static str>,
}

impl Renames {
    /// From `PoolConfig::rename_commands` (validated by the config: OLD is a top-level
    /// command, NEW is not a command name).  An OLD that is not in the table is ignored.
    pub fn from_config(p: &PoolConfig) -> Renames {
        let mut r = Renames::default();
        for (old, new) in &p.rename_commands {
            let Some(spec) = crate::commands::lookup(old.as_bytes()) else {
                continue;
            };
            r.hidden.push(spec.name);
            if !new.is_empty() {
                r.new_to_old
                    .push((new.as_bytes().to_vec().into_boxed_slice(), spec.name));
            }
        }
        r
    }

    /// No renames: [`Renames::map`] is the identity.
    pub fn is_empty(&self) -> bool {
        self.hidden.is_empty()
    }

    /// The table name for what the client typed (case-insensitive): the OLD name when `typed`
    /// is a NEW name, None when `typed` is an OLD name that was renamed away or disabled (reply
    /// "unknown command"), `typed` itself otherwise.
    pub fn map<'a>(&'a self, typed: &'a [u8]) -> Option<&'a [u8]> {
        if self.hidden.is_empty() {
            return Some(typed);
        }
        if let Some((_, old)) = self
            .new_to_old
            .iter()
            .find(|(new, _)| new.eq_ignore_ascii_case(typed))
        {
            return Some(old.as_bytes());
        }
        if self
            .hidden
            .iter()
            .any(|old| old.as_bytes().eq_ignore_ascii_case(typed))
        {
            return None;
        }
        Some(typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{lookup, lookup_sub, COMMANDS};
    use crate::config::{parse_native, PoolConfig};

    fn spec(name: &str) -> &'static Spec {
        match name.split_once(' ') {
            None => lookup(name.as_bytes()).unwrap(),
            Some((c, s)) => lookup_sub(lookup(c.as_bytes()).unwrap(), s.as_bytes()).unwrap(),
        }
    }

    fn pool(extra: &str) -> PoolConfig {
        let text = format!("pool p\nlisten 127.0.0.1:6380\nserver 127.0.0.1:7001\n{extra}");
        parse_native(&text, "t.conf")
            .unwrap_or_else(|e| panic!("{e}"))
            .pools
            .remove(0)
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"x", b""));
        // Repeating the shorter secret must not make a prefix match.
        assert!(!constant_time_eq(b"abab", b"ab"));
    }

    #[test]
    fn users_check() {
        // No password at all: open pool, default level admin.
        let u = Users::from_config(&pool(""));
        assert!(!u.required());
        assert_eq!(u.default_level(), Level::Admin);
        assert_eq!(u.check(b"default", b""), Err(()));

        let u = Users::from_config(&pool("redis_auth old\n"));
        assert!(u.required());
        assert_eq!(u.check(b"default", b"old"), Ok(Level::Admin));
        assert_eq!(u.check(b"default", b"ol"), Err(()));

        // requirepass wins over redis_auth for clients.
        let u = Users::from_config(&pool(
            "redis_auth old\nrequirepass new\ndefault_level readwrite\n\
             user alice apw readonly\nuser bob \"b p w\" admin\n",
        ));
        assert!(u.required());
        assert_eq!(u.check(b"default", b"new"), Ok(Level::ReadWrite));
        assert_eq!(u.check(b"default", b"old"), Err(()));
        assert_eq!(u.check(b"alice", b"apw"), Ok(Level::ReadOnly));
        assert_eq!(u.check(b"bob", b"b p w"), Ok(Level::Admin));
        assert_eq!(u.check(b"bob", b"apw"), Err(()));
        assert_eq!(u.check(b"Alice", b"apw"), Err(()));
        assert_eq!(u.check(b"carol", b"apw"), Err(()));
        assert_eq!(u.default_level(), Level::ReadWrite);

        // Only named users: the default user has no password and cannot log in.
        let u = Users::from_config(&pool("user alice apw readwrite\n"));
        assert!(u.required());
        assert_eq!(u.check(b"default", b""), Err(()));
        assert_eq!(u.check(b"default", b"apw"), Err(()));
        assert_eq!(u.check(b"alice", b"apw"), Ok(Level::ReadWrite));

        // default_level without passwords: a read-only open pool.
        let u = Users::from_config(&pool("default_level readonly\n"));
        assert!(!u.required());
        assert_eq!(u.default_level(), Level::ReadOnly);
    }

    #[test]
    fn tables_are_sorted_rows() {
        use crate::commands::flags::{ADMIN, WRITE};
        for table in [WRITE, ADMIN] {
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{table:?}");
            for n in table {
                assert!(COMMANDS.iter().any(|s| s.name == *n), "{n} is not a row");
            }
        }
    }

    #[test]
    fn write_commands() {
        for n in [
            "SET",
            "DEL",
            "UNLINK",
            "EXPIRE",
            "INCR",
            "MSET",
            "LPUSH",
            "BLPOP",
            "XADD",
            "XREADGROUP",
            "XGROUP CREATE",
            "SORT",
            "FLUSHALL",
            "FLUSHDB",
            "SWAPDB",
            "MIGRATE",
            "EVAL",
            "EVALSHA",
            "FCALL",
            "FUNCTION LOAD",
            "SCRIPT LOAD",
            "PUBLISH",
            "HEXPIRE",
            "FORWARD",
        ] {
            assert!(is_write(spec(n)), "{n}");
        }
        for n in [
            "GET",
            "MGET",
            "EXISTS",
            "PFCOUNT",
            "EVAL_RO",
            "EVALSHA_RO",
            "FCALL_RO",
            "SORT_RO",
            "CONFIG GET",
            "CONFIG SET",
            "CONFIG",
            "KEYS",
            "SCAN",
            "PING",
            "AUTH",
            "MULTI",
            "EXEC",
            "SUBSCRIBE",
            "INFO",
            "PROXY",
        ] {
            assert!(!is_write(spec(n)), "{n}");
        }
    }

    #[test]
    fn admin_commands() {
        for n in [
            "FORWARD",
            "PROXY",
            "FLUSHALL",
            "FLUSHDB",
            "CONFIG SET",
            "CONFIG REWRITE",
            "CONFIG RESETSTAT",
            "CONFIG GET",
            "KEYS",
            "SCRIPT LOAD",
            "SCRIPT FLUSH",
            "FUNCTION DELETE",
            "DEBUG OBJECT",
            "DEBUG SLEEP",
            "SHUTDOWN",
            "SAVE",
            "BGSAVE",
            "BGREWRITEAOF",
            "SWAPDB",
            "MIGRATE",
            "CLIENT KILL",
            "MONITOR",
        ] {
            assert!(is_admin(spec(n)), "{n}");
        }
        for n in [
            "GET",
            "SET",
            "SCRIPT HELP",
            "CONFIG HELP",
            "CLIENT SETNAME",
            "INFO",
            "BACKEND",
            "EVAL",
            "DEL",
        ] {
            assert!(!is_admin(spec(n)), "{n}");
        }
    }

    #[test]
    fn permitted_matrix() {
        use AdminPolicy::*;
        use Level::*;
        let ok = Ok(());
        let noperm = |n: &str| {
            Err(format!(
                "NOPERM this user has no permissions to run the '{n}' command"
            ))
        };
        // (command, level, policy, expected)
        let get = spec("GET");
        let set = spec("SET");
        let flushall = spec("FLUSHALL");
        let keys = spec("KEYS");
        let config_set = spec("CONFIG SET");
        for policy in [All, AdminOnly, Disabled] {
            for level in [ReadOnly, ReadWrite, Admin] {
                assert_eq!(permitted(level, get, policy), ok);
                let want = if level == ReadOnly {
                    noperm("set")
                } else {
                    Ok(())
                };
                assert_eq!(permitted(level, set, policy), want);
            }
        }
        // all: any level runs admin commands, but readonly still cannot write.
        assert_eq!(permitted(ReadOnly, keys, All), ok);
        assert_eq!(permitted(ReadOnly, config_set, All), ok);
        assert_eq!(permitted(ReadOnly, flushall, All), noperm("flushall"));
        assert_eq!(permitted(ReadWrite, flushall, All), ok);
        assert_eq!(permitted(Admin, flushall, All), ok);
        // admin: only admins.
        assert_eq!(permitted(ReadOnly, keys, AdminOnly), noperm("keys"));
        assert_eq!(
            permitted(ReadWrite, config_set, AdminOnly),
            noperm("config|set")
        );
        assert_eq!(
            permitted(ReadWrite, flushall, AdminOnly),
            noperm("flushall")
        );
        assert_eq!(permitted(Admin, flushall, AdminOnly), ok);
        assert_eq!(permitted(Admin, config_set, AdminOnly), ok);
        // disabled: nobody.
        for level in [ReadOnly, ReadWrite, Admin] {
            assert_eq!(
                permitted(level, flushall, Disabled),
                Err(
                    "ERR FLUSHALL is disabled by the proxy's configuration (admin_commands disabled)"
                        .into()
                )
            );
            assert_eq!(
                permitted(level, config_set, Disabled),
                Err(
                    "ERR CONFIG SET is disabled by the proxy's configuration (admin_commands disabled)"
                        .into()
                )
            );
        }
    }

    #[test]
    fn renames() {
        let r = Renames::from_config(&pool(""));
        assert!(r.is_empty());
        assert_eq!(r.map(b"get"), Some(&b"get"[..]));
        assert_eq!(r.map(b"flushall"), Some(&b"flushall"[..]));

        let r = Renames::from_config(&pool(
            "rename_command flushall \"\"\nrename_command CONFIG my-config\nrename_command keys Keys2\n",
        ));
        assert!(!r.is_empty());
        assert_eq!(r.map(b"FLUSHALL"), None);
        assert_eq!(r.map(b"flushAll"), None);
        assert_eq!(r.map(b"config"), None);
        assert_eq!(r.map(b"MY-CONFIG"), Some(&b"CONFIG"[..]));
        assert_eq!(r.map(b"my-config"), Some(&b"CONFIG"[..]));
        assert_eq!(r.map(b"keys2"), Some(&b"KEYS"[..]));
        assert_eq!(r.map(b"keys"), None);
        assert_eq!(r.map(b"get"), Some(&b"get"[..]));
        assert_eq!(r.map(b"nosuch"), Some(&b"nosuch"[..]));
    }
}
