//! Adversarial review of online rebalancing (issue 19) with numbered databases (issue 20).
//! Each test states what one Redis answers; the proxy must answer the same while keys move.
//! Real redis-servers, the real binary; waits are bounded polls, no duration is asserted.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{bulk, int, ms, poll_until, signal, strings, text, tmp_dir, Raw, Redis};

const QUICK: Duration = Duration::from_secs(10);

fn raw(port: u16) -> Raw {
    let mut r = Raw::connect(port);
    r.set_timeout(QUICK);
    r
}

struct Proc {
    child: std::process::Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `rebalance yes` pool over `backends` (`hash md5`), and an oracle pool over the same
/// servers (no rebalance) to learn a ring's placement before switching to it.
struct Setup {
    backends: Vec<Redis>,
    conf: PathBuf,
    port: u16,
    extra: String,
}

impl Setup {
    fn new(n: usize, extra: &str) -> Setup {
        let dir = tmp_dir("review-rebalance");
        Setup {
            backends: (0..n).map(|_| Redis::start_with(&[])).collect(),
            conf: dir.join("proxy.conf"),
            port: common::free_port_low(),
            extra: extra.to_string(),
        }
    }

    fn text(&self, port: u16, rebalance: bool, rate: u32, servers: &[usize]) -> String {
        let mut t = format!(
            "pool p\n  listen 127.0.0.1:{port}\n  hash md5\n  timeout 5000\n  rebalance {}\n  rebalance_rate {rate}\n{}",
            if rebalance { "yes" } else { "no" },
            self.extra
        );
        for &i in servers {
            t.push_str(&format!(
                "  server 127.0.0.1:{}:1 s{i}\n",
                self.backends[i].port
            ));
        }
        t
    }

    fn write(&self, rate: u32, servers: &[usize]) {
        std::fs::write(&self.conf, self.text(self.port, true, rate, servers)).unwrap();
    }

    fn spawn(conf: &std::path::Path, port: u16) -> Proc {
        let log = std::fs::File::create(conf.with_extension("log")).unwrap();
        let child = std::process::Command::new(common::bin())
            .args(["-c", conf.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rustproxy");
        common::wait_listening(port, "rustproxy");
        Proc { child }
    }

    fn start(&self) -> Proc {
        Setup::spawn(&self.conf, self.port)
    }

    /// Owner (index in `servers`) of each key under the ring of `servers`.
    fn placement(&self, servers: &[usize], keys: &[String]) -> Vec<usize> {
        let port = common::free_port_low();
        let conf = self.conf.with_file_name(format!("oracle-{port}.conf"));
        std::fs::write(&conf, self.text(port, false, 1, servers)).unwrap();
        let _p = Setup::spawn(&conf, port);
        let mut r = raw(port);
        keys.iter()
            .map(|k| int(&r.call_str(&["BACKENDNUM", k])) as usize)
            .collect()
    }

    /// Owner (index in `servers`) of each key under the ring of `servers`, with the config
    /// text passed through `edit`.
    fn placement_with(
        &self,
        servers: &[usize],
        keys: &[String],
        edit: impl Fn(String) -> String,
    ) -> Vec<usize> {
        let port = common::free_port_low();
        let conf = self.conf.with_file_name(format!("oracle-{port}.conf"));
        std::fs::write(&conf, edit(self.text(port, false, 1, servers))).unwrap();
        let _p = Setup::spawn(&conf, port);
        let mut r = raw(port);
        keys.iter()
            .map(|k| int(&r.call_str(&["BACKENDNUM", k])) as usize)
            .collect()
    }

    fn reload(&self, p: &Proc) {
        signal(p.child.id(), "HUP");
    }
}

fn info_rebalance(port: u16) -> String {
    text(&raw(port).call_str(&["INFO", "rebalance"]))
}

fn wait_epoch(port: u16, epoch: u64) -> String {
    poll_until("the new ring", QUICK, ms(20), || {
        let t = info_rebalance(port);
        if t.contains(&format!("epoch={epoch},")) {
            Ok(t)
        } else {
            Err(t)
        }
    })
}

fn wait_idle(port: u16, epoch: u64) -> String {
    poll_until(
        "rebalance to finish",
        Duration::from_secs(60),
        ms(50),
        || {
            let t = info_rebalance(port);
            if t.contains("state=idle") && t.contains(&format!("epoch={epoch},")) {
                Ok(t)
            } else {
                Err(t)
            }
        },
    )
}

fn text_or_raw(r: &[u8]) -> String {
    String::from_utf8_lossy(r).into_owned()
}

/// Whether `key` exists in database `db` of backend `r`.
fn exists_on(r: &Redis, db: u32, key: &str) -> bool {
    let mut d = raw(r.port);
    assert_eq!(d.call_str(&["SELECT", &db.to_string()]), b"+OK\r\n");
    int(&d.call_str(&["EXISTS", key])) == 1
}

/// The names whose owner under `after` (from `Setup::placement`) is server `owner`.
fn owned_by<'a>(names: &'a [String], after: &[usize], owner: usize) -> Vec<&'a String> {
    names
        .iter()
        .zip(after)
        .filter(|(_, &o)| o == owner)
        .map(|(k, _)| k)
        .collect()
}

/// Wait (bounded) until `backend` holds one blocked client (`what` blocked there).
fn wait_blocked(backend: &Redis, what: &str) {
    poll_until(&format!("{what} to block"), QUICK, ms(20), || {
        let t = text(&raw(backend.port).call_str(&["INFO", "clients"]));
        if t.contains("blocked_clients:1") {
            Ok(())
        } else {
            Err(t)
        }
    });
}

/// `MOVE key db` and `COPY key key DB n` while the key in the other database has not moved
/// yet. One Redis: the destination exists, so MOVE answers 0 and COPY answers 0, and the key
/// in the other database keeps its value.
#[test]
fn move_and_copy_into_another_database_see_its_key_not_moved_yet() {
    let s = Setup::new(2, "  membership_commands yes\n");
    s.write(1, &[0]);
    let p = s.start();
    let mut c = raw(s.port);
    let names: Vec<String> = (0..80).map(|i| format!("key:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    assert_eq!(c.call_str(&["SELECT", "1"]), b"+OK\r\n");
    for k in &names {
        assert_eq!(c.call_str(&["SET", k, &format!("db1:{k}")]), b"+OK\r\n");
    }
    assert_eq!(c.call_str(&["SELECT", "0"]), b"+OK\r\n");
    s.write(1, &[0, 1]);
    s.reload(&p);
    wait_epoch(s.port, 1);
    let paused = text(&c.call_str(&["PROXY", "REBALANCE", "PAUSE"]));
    assert!(
        paused.contains("epoch=1") && !paused.contains("state=idle"),
        "{paused}"
    );
    let moving: Vec<&String> = names
        .iter()
        .zip(&after)
        .filter(|(k, &o)| o == 1 && exists_on(&s.backends[0], 1, k))
        .map(|(k, _)| k)
        .collect();
    assert!(moving.len() >= 4, "too few keys left to move: {moving:?}");
    let (mv, cp) = (moving[0], moving[1]);
    assert_eq!(c.call_str(&["SET", mv, "db0"]), b"+OK\r\n");
    assert_eq!(
        c.call_str(&["MOVE", mv, "1"]),
        b":0\r\n",
        "MOVE {mv} 1: database 1 holds {mv} (still on its old owner)"
    );
    assert_eq!(c.call_str(&["SET", cp, "db0"]), b"+OK\r\n");
    assert_eq!(
        c.call_str(&["COPY", cp, cp, "DB", "1"]),
        b":0\r\n",
        "COPY {cp} {cp} DB 1: database 1 holds {cp} (still on its old owner)"
    );
    assert_eq!(c.call_str(&["SELECT", "1"]), b"+OK\r\n");
    for k in [mv, cp] {
        assert_eq!(
            c.call_str(&["GET", k]),
            bulk(format!("db1:{k}").as_bytes()),
            "database 1's {k}"
        );
    }
}

/// A client blocked in `BLMOVE src dst` before the change, where `src` stays and `dst` moves.
/// One Redis: after `LPUSH src x`, BLMOVE answers x and `dst` holds its old elements then x.
#[test]
fn blmove_blocked_across_the_change_whose_destination_moves() {
    let s = Setup::new(2, "");
    s.write(50_000, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..64).map(|i| format!("list:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let src = owned_by(&names, &after, 0)[0];
    let dst = owned_by(&names, &after, 1)[0];
    let mut c = raw(s.port);
    assert_eq!(c.call_str(&["RPUSH", dst, "a"]), b":1\r\n");
    let mut blocked = raw(s.port);
    blocked.cmd(&[
        b"BLMOVE",
        src.as_bytes(),
        dst.as_bytes(),
        b"LEFT",
        b"RIGHT",
        b"0",
    ]);
    wait_blocked(&s.backends[0], "BLMOVE");
    s.write(50_000, &[0, 1]);
    s.reload(&p);
    wait_idle(s.port, 1);
    assert_eq!(c.call_str(&["LPUSH", src, "x"]), b":1\r\n");
    let got = blocked.reply();
    // A blocked client whose key moved may get an error and retry (documented): then nothing
    // moved, x stays in src. Otherwise BLMOVE answered x and dst holds a, x.
    let want_dst = if got.starts_with(b"-") {
        assert_eq!(strings(&c.call_str(&["LRANGE", src, "0", "-1"])), vec!["x"]);
        vec!["a"]
    } else {
        assert_eq!(got, bulk(b"x"), "BLMOVE's reply: {}", text(&got));
        vec!["a", "x"]
    };
    assert_eq!(
        strings(&c.call_str(&["LRANGE", dst, "0", "-1"])),
        want_dst,
        "{dst} after BLMOVE (A holds {dst}: {})",
        exists_on(&s.backends[0], 0, dst)
    );
    assert!(
        !exists_on(&s.backends[0], 0, dst),
        "{dst} left on its old owner"
    );
}

/// A client blocked in `BLPOP k1 k2` before the change, where k1 stays and k2 moves.
/// One Redis: `RPUSH k2 x` wakes it with [k2, x].
#[test]
fn blpop_blocked_on_two_keys_across_the_change_one_of_which_moves() {
    let s = Setup::new(2, "");
    s.write(50_000, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..64).map(|i| format!("q:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let k1 = owned_by(&names, &after, 0)[0];
    let k2 = owned_by(&names, &after, 1)[0];
    let mut blocked = raw(s.port);
    blocked.cmd(&[b"BLPOP", k1.as_bytes(), k2.as_bytes(), b"3"]);
    wait_blocked(&s.backends[0], "BLPOP");
    s.write(50_000, &[0, 1]);
    s.reload(&p);
    wait_idle(s.port, 1);
    let mut c = raw(s.port);
    assert_eq!(c.call_str(&["RPUSH", k2, "x"]), b":1\r\n");
    let got = blocked.reply();
    // An error asking to retry is documented for a blocked client whose key moved; a timeout
    // (nil) while an element was pushed to one of its keys is not what Redis does.
    if !got.starts_with(b"-") {
        let want = format!("*2\r\n${}\r\n{k2}\r\n$1\r\nx\r\n", k2.len());
        assert_eq!(
            text_or_raw(&got),
            text_or_raw(want.as_bytes()),
            "BLPOP {k1} {k2}'s reply after RPUSH {k2} x"
        );
    }
}

/// Every key on every backend (databases `dbs`) sits on the backend BACKENDNUM names, once.
fn audit(s: &Setup, servers: &[usize], dbs: &[u32]) {
    let mut c = raw(s.port);
    for &db in dbs {
        let mut seen = std::collections::BTreeMap::new();
        for (pos, &i) in servers.iter().enumerate() {
            let mut d = raw(s.backends[i].port);
            assert_eq!(d.call_str(&["SELECT", &db.to_string()]), b"+OK\r\n");
            for k in strings(&d.call_str(&["KEYS", "*"])) {
                let owner = int(&c.call_str(&["BACKENDNUM", &k])) as usize;
                assert_eq!(owner, pos, "db {db}: {k} on s{i}, owner position {owner}");
                assert!(seen.insert(k.clone(), i).is_none(), "db {db}: {k} twice");
            }
        }
        // Servers not in the ring any more hold nothing.
        for (i, r) in s.backends.iter().enumerate() {
            if !servers.contains(&i) {
                let mut d = raw(r.port);
                assert_eq!(d.call_str(&["SELECT", &db.to_string()]), b"+OK\r\n");
                assert_eq!(int(&d.call_str(&["DBSIZE"])), 0, "db {db}: s{i} not empty");
            }
        }
    }
}

/// Commands with unusual key positions, CLIENT REPLY OFF, a pipeline written one byte at a
/// time, MULTI queued across the change and SELECT inside MULTI, all on keys that have not
/// moved yet (the mover is paused). Each reply is what one Redis answers.
#[test]
fn unusual_commands_on_keys_not_moved_yet() {
    let s = Setup::new(2, "");
    s.write(1, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..200).map(|i| format!("k:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let mv: Vec<&str> = names
        .iter()
        .zip(&after)
        .filter(|(_, &o)| o == 1)
        .map(|(k, _)| k.as_str())
        .collect();
    let st: Vec<&str> = names
        .iter()
        .zip(&after)
        .filter(|(_, &o)| o == 0)
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(mv.len() > 30 && st.len() > 5);
    let mut c = raw(s.port);
    let ok = |c: &mut Raw, a: &[&str]| {
        let r = c.call_str(a);
        assert!(!r.starts_with(b"-"), "{a:?}: {}", text(&r));
    };
    for k in mv.iter().chain(&st).take(mv.len() + st.len()) {
        ok(&mut c, &["SET", k, &format!("v:{k}")]);
    }
    ok(&mut c, &["DEL", mv[2]]);
    ok(&mut c, &["RPUSH", mv[2], "b", "c"]);
    ok(&mut c, &["SET", mv[3], "12345"]);
    ok(&mut c, &["SET", mv[4], "ttl", "PX", "100000000"]);
    ok(&mut c, &["DEL", mv[6]]);
    ok(&mut c, &["RPUSH", mv[6], "3", "1", "2"]);
    ok(&mut c, &["DEL", mv[8]]);
    ok(&mut c, &["XADD", mv[8], "1-1", "f", "v"]);
    ok(&mut c, &["XGROUP", "CREATE", mv[8], "g", "0"]);
    ok(&mut c, &["SET", mv[12], "5"]);
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut c, &["SET", mv[15], "db1-old"]);
    ok(&mut c, &["SELECT", "0"]);
    // A transaction queued before the change.
    let mut t = raw(s.port);
    assert_eq!(t.call_str(&["MULTI"]), b"+OK\r\n");
    assert_eq!(t.call_str(&["SET", mv[14], "txn"]), b"+QUEUED\r\n");

    s.write(1, &[0, 1]);
    s.reload(&p);
    wait_epoch(s.port, 1);
    let paused = text(&c.call_str(&["PROXY", "REBALANCE", "PAUSE"]));
    assert!(paused.contains("epoch=1"), "{paused}");

    assert_eq!(
        c.call_str(&["EXISTS", mv[0], mv[1], st[0], "none:x"]),
        b":3\r\n"
    );
    assert_eq!(c.call_str(&["TYPE", mv[2]]), b"+list\r\n");
    assert_eq!(c.call_str(&["OBJECT", "ENCODING", mv[3]]), bulk(b"int"));
    let pttl = int(&c.call_str(&["PTTL", mv[4]]));
    assert!(pttl > 1_000_000, "PTTL {} = {pttl}", mv[4]);
    assert_eq!(
        c.call_str(&["EVAL", "return redis.call('GET', KEYS[1])", "1", mv[5]]),
        bulk(format!("v:{}", mv[5]).as_bytes())
    );
    assert_eq!(c.call_str(&["SORT", mv[6], "STORE", mv[7]]), b":3\r\n");
    assert_eq!(
        strings(&c.call_str(&["LRANGE", mv[7], "0", "-1"])),
        vec!["1", "2", "3"]
    );
    let xr = c.call_str(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", mv[8], ">"]);
    assert!(
        text_or_raw(&xr).contains("1-1"),
        "XREADGROUP: {}",
        text_or_raw(&xr)
    );
    // CLIENT REPLY OFF: nothing is written until ON's +OK; the writes happen.
    c.send(
        &[
            enc(&["CLIENT", "REPLY", "OFF"]),
            enc(&["SET", mv[9], "new"]),
            enc(&["DEL", mv[10]]),
            enc(&["GET", mv[11]]),
            enc(&["CLIENT", "REPLY", "ON"]),
        ]
        .concat(),
    );
    assert_eq!(c.reply(), b"+OK\r\n");
    assert_eq!(c.call_str(&["GET", mv[9]]), bulk(b"new"));
    assert_eq!(c.call_str(&["EXISTS", mv[10]]), b":0\r\n");
    // A pipeline written one byte at a time, moving and staying keys mixed.
    let cmds: Vec<Vec<&str>> = vec![
        vec!["SET", mv[11], "a"],
        vec!["GET", st[1]],
        vec!["INCR", mv[12]],
        vec!["GET", mv[11]],
        vec!["DEL", mv[13]],
        vec!["EXISTS", mv[13]],
        vec!["MGET", st[2], mv[16], mv[13]],
        vec!["GET", st[3]],
    ];
    let bytes: Vec<u8> = cmds.iter().flat_map(|a| enc(a)).collect();
    for b in &bytes {
        c.send(std::slice::from_ref(b));
    }
    let want: Vec<Vec<u8>> = vec![
        b"+OK\r\n".to_vec(),
        bulk(format!("v:{}", st[1]).as_bytes()),
        b":6\r\n".to_vec(),
        bulk(b"a"),
        b":1\r\n".to_vec(),
        b":0\r\n".to_vec(),
        [
            b"*3\r\n".to_vec(),
            bulk(format!("v:{}", st[2]).as_bytes()),
            bulk(format!("v:{}", mv[16]).as_bytes()),
            b"$-1\r\n".to_vec(),
        ]
        .concat(),
        bulk(format!("v:{}", st[3]).as_bytes()),
    ];
    for (i, w) in want.iter().enumerate() {
        let got = c.reply();
        assert_eq!(
            text_or_raw(&got),
            text_or_raw(w),
            "pipelined reply {i} ({:?})",
            cmds[i]
        );
    }
    // The transaction queued before the change: EXECABORT (documented) or it ran where the
    // key is read from now.
    let exec = t.call_str(&["EXEC"]);
    if !exec.starts_with(b"-EXECABORT") {
        assert_eq!(exec, b"*1\r\n+OK\r\n", "EXEC");
        assert_eq!(c.call_str(&["GET", mv[14]]), bulk(b"txn"));
    }
    // SELECT inside MULTI: the SET runs in database 1 (and the client stays there).
    assert_eq!(t.call_str(&["MULTI"]), b"+OK\r\n");
    let sel = t.call_str(&["SELECT", "1"]);
    if sel == b"+QUEUED\r\n" {
        assert_eq!(t.call_str(&["SET", mv[15], "db1-new"]), b"+QUEUED\r\n");
        let exec = t.call_str(&["EXEC"]);
        assert_eq!(text_or_raw(&exec), "*2\r\n+OK\r\n+OK\r\n", "EXEC");
        assert_eq!(t.call_str(&["GET", mv[15]]), bulk(b"db1-new"));
        assert_eq!(t.call_str(&["SELECT", "0"]), b"+OK\r\n");
        assert_eq!(
            t.call_str(&["GET", mv[15]]),
            bulk(format!("v:{}", mv[15]).as_bytes())
        );
    } else {
        let _ = t.call_str(&["DISCARD"]);
    }
    let resumed = text(&c.call_str(&["PROXY", "REBALANCE", "RESUME"]));
    assert!(resumed.contains("epoch=1"), "{resumed}");
    // Finish quickly: a reload changing only the rate applies to the running mover.
    s.write(50_000, &[0, 1]);
    s.reload(&p);
    wait_idle(s.port, 1);
    audit(&s, &[0, 1], &[0, 1]);
}

fn enc(args: &[&str]) -> Vec<u8> {
    let b: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    common::enc(&b)
}

/// PROXY ADDBACKEND starts a rebalance; a second membership change while it runs is refused
/// with the reason and changes nothing; a reload changing only `rebalance_rate` applies; then
/// PROXY REMOVEBACKEND of a server whose keys are in several databases moves them all.
#[test]
fn membership_commands_second_change_refused_and_removal_across_databases() {
    let s = Setup::new(3, "  membership_commands yes\n");
    s.write(1, &[0, 1]);
    let p = s.start();
    let mut c = raw(s.port);
    let names: Vec<String> = (0..150).map(|i| format!("m:{i}")).collect();
    for db in ["0", "2", "5"] {
        assert_eq!(c.call_str(&["SELECT", db]), b"+OK\r\n");
        for k in &names {
            assert_eq!(
                c.call_str(&["SET", k, &format!("{db}:{k}"), "EX", "100000"]),
                b"+OK\r\n"
            );
        }
    }
    assert_eq!(c.call_str(&["SELECT", "0"]), b"+OK\r\n");
    let add = c.call_str(&[
        "PROXY",
        "ADDBACKEND",
        "s2",
        &format!("127.0.0.1:{}", s.backends[2].port),
    ]);
    assert!(!add.starts_with(b"-"), "ADDBACKEND: {}", text(&add));
    wait_epoch(s.port, 1);
    let backends = c.call_str(&["BACKENDS"]);
    assert_eq!(strings(&backends).len(), 3);
    // A second change while rebalancing: refused, with the reason, and nothing changes.
    let again = c.call_str(&["PROXY", "REMOVEBACKEND", "s0"]);
    assert!(
        text_or_raw(&again).starts_with("-") && text_or_raw(&again).contains("rebalanc"),
        "REMOVEBACKEND while rebalancing: {}",
        text_or_raw(&again)
    );
    assert_eq!(c.call_str(&["BACKENDS"]), backends);
    let info = info_rebalance(s.port);
    assert!(info.contains("epoch=1,"), "{info}");
    // A reload with only the rate changed (the file names the same three servers): accepted.
    s.write(50_000, &[0, 1, 2]);
    s.reload(&p);
    wait_idle(s.port, 1);
    assert_eq!(c.call_str(&["BACKENDS"]), backends);
    // Remove s0, whose keys are in databases 0, 2 and 5.
    let rm = c.call_str(&["PROXY", "REMOVEBACKEND", "s0"]);
    assert!(!rm.starts_with(b"-"), "REMOVEBACKEND: {}", text(&rm));
    wait_idle(s.port, 2);
    for db in ["0", "2", "5"] {
        assert_eq!(c.call_str(&["SELECT", db]), b"+OK\r\n");
        for k in &names {
            assert_eq!(
                c.call_str(&["GET", k]),
                bulk(format!("{db}:{k}").as_bytes()),
                "db {db}"
            );
            let ttl = int(&c.call_str(&["TTL", k]));
            assert!(ttl > 1000, "db {db} {k}: TTL {ttl}");
        }
    }
    audit(&s, &[1, 2], &[0, 2, 5]);
}

/// `hash_override yes` places `SET a 1 hash=h` by `h`; the mover and the serve rule place keys
/// by their names. One Redis (the documented contract): `GET a hash=h` answers 1 after any
/// change. Either the combination is refused by the config check, or the key is found.
#[test]
fn hash_override_keys_survive_a_rebalance_or_the_config_is_refused() {
    let s = Setup::new(2, "  hash_override yes\n");
    s.write(50_000, &[0]);
    let dir = s.conf.parent().unwrap().to_path_buf();
    let log = dir.join("hint.log");
    let mut child = std::process::Command::new(common::bin())
        .args(["-c", s.conf.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let refused = poll_until("the proxy to listen or exit", QUICK, ms(20), || {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(true);
        }
        if std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
            return Ok(false);
        }
        Err("neither")
    });
    if refused {
        let t = std::fs::read_to_string(&log).unwrap();
        assert!(
            t.contains("hash_override"),
            "refused without naming it: {t}"
        );
        return;
    }
    let p = Proc { child };
    let hints: Vec<String> = (0..64).map(|i| format!("h:{i}")).collect();
    let after = s.placement(&[0, 1], &hints);
    let names: Vec<String> = (0..64).map(|i| format!("a:{i}")).collect();
    let after_names = s.placement(&[0, 1], &names);
    // A hint that moves, a key name that stays.
    let h = hints.iter().zip(&after).find(|(_, &o)| o == 1).unwrap().0;
    let a = names
        .iter()
        .zip(&after_names)
        .find(|(_, &o)| o == 0)
        .unwrap()
        .0;
    let mut c = raw(s.port);
    assert_eq!(
        c.call_str(&["SET", a, "1", &format!("hash={h}")]),
        b"+OK\r\n"
    );
    s.write(50_000, &[0, 1]);
    s.reload(&p);
    wait_idle(s.port, 1);
    assert_eq!(
        c.call_str(&["GET", a, &format!("hash={h}")]),
        bulk(b"1"),
        "GET {a} hash={h}"
    );
}

/// FLUSHDB and SWAPDB while a removed server still drains (the mover paused). One Redis: after
/// FLUSHDB no key of the database exists, and after SWAPDB 1 2 database 1's keys are read in
/// database 2; nothing comes back or lands in the wrong database when the drain finishes.
#[test]
fn flushdb_and_swapdb_while_a_removed_server_drains() {
    let s = Setup::new(2, "");
    s.write(1, &[0, 1]);
    let p = s.start();
    let mut c = raw(s.port);
    let names: Vec<String> = (0..120).map(|i| format!("f:{i}")).collect();
    for db in ["1", "0"] {
        assert_eq!(c.call_str(&["SELECT", db]), b"+OK\r\n");
        for k in &names {
            assert_eq!(c.call_str(&["SET", k, &format!("{db}:{k}")]), b"+OK\r\n");
        }
    }
    s.write(1, &[0]);
    s.reload(&p);
    wait_epoch(s.port, 1);
    let paused = text(&c.call_str(&["PROXY", "REBALANCE", "PAUSE"]));
    assert!(paused.contains("epoch=1"), "{paused}");
    let draining: Vec<&String> = names
        .iter()
        .filter(|k| exists_on(&s.backends[1], 0, k) && exists_on(&s.backends[1], 1, k))
        .collect();
    assert!(draining.len() >= 4, "too few keys left on s1: {draining:?}");
    // FLUSHDB: either refused while rebalancing (then nothing changed), or none of database
    // 0's keys exists any more, also once the drain is done.
    let flushed = c.call_str(&["FLUSHDB"]);
    let flushed = if flushed.starts_with(b"-") {
        assert!(text(&flushed).contains("rebalanc"), "{}", text(&flushed));
        assert_eq!(
            c.call_str(&["GET", draining[0]]),
            bulk(format!("0:{}", draining[0]).as_bytes())
        );
        false
    } else {
        assert_eq!(flushed, b"+OK\r\n");
        for k in &draining[..2] {
            assert_eq!(c.call_str(&["GET", k]), b"$-1\r\n", "{k} after FLUSHDB");
        }
        true
    };
    // SWAPDB 1 2: either refused, or database 1's keys are read in database 2.
    let swapped = c.call_str(&["SWAPDB", "1", "2"]);
    let swapped = if swapped.starts_with(b"-") {
        assert!(text(&swapped).contains("rebalanc"), "{}", text(&swapped));
        false
    } else {
        assert_eq!(swapped, b"+OK\r\n");
        true
    };
    let (from, to) = if swapped { ("2", "1") } else { ("1", "2") };
    assert_eq!(c.call_str(&["SELECT", from]), b"+OK\r\n");
    let k = draining[2];
    assert_eq!(
        c.call_str(&["GET", k]),
        bulk(format!("1:{k}").as_bytes()),
        "{k} in database {from}"
    );
    assert_eq!(c.call_str(&["SELECT", to]), b"+OK\r\n");
    assert_eq!(
        c.call_str(&["GET", draining[3]]),
        b"$-1\r\n",
        "database {to}"
    );
    // A transaction holding a refused command does not run at all.
    assert_eq!(c.call_str(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["SET", "txn:probe", "1"]), b"+QUEUED\r\n");
    let fl = c.call_str(&["FLUSHALL"]);
    let exec = c.call_str(&["EXEC"]);
    if fl.starts_with(b"-") {
        assert!(
            exec.starts_with(b"-EXECABORT"),
            "EXEC: {}",
            text_or_raw(&exec)
        );
        assert_eq!(c.call_str(&["EXISTS", "txn:probe"]), b":0\r\n");
    }
    let fl_ran = !fl.starts_with(b"-");
    // Let the drain finish: nothing comes back, nothing lands in the wrong database.
    assert!(text(&c.call_str(&["PROXY", "REBALANCE", "RESUME"])).contains("epoch=1"));
    s.write(50_000, &[0]);
    s.reload(&p);
    wait_idle(s.port, 1);
    let n = names.len() as i64;
    let want = |db: &str| -> i64 {
        if fl_ran {
            return 0;
        }
        match db {
            "0" if flushed => 0,
            "0" => n,
            d if d == from => n,
            _ => 0,
        }
    };
    for db in ["0", "1", "2"] {
        assert_eq!(c.call_str(&["SELECT", db]), b"+OK\r\n");
        assert_eq!(
            int(&c.call_str(&["DBSIZE"])),
            want(db),
            "DBSIZE of database {db}"
        );
    }
    audit(&s, &[0], &[0, 1, 2]);
}

/// WATCH of a key that stays, taken before the change; then a transaction on a key that moved.
/// One Redis: nothing touched the watched key, so EXEC runs: [OK], and the key reads back.
/// (An error or a nil EXEC is acceptable as long as the write is not half-done or stranded.)
#[test]
fn watch_before_the_change_then_a_transaction_on_a_moved_key() {
    let s = Setup::new(2, "");
    s.write(50_000, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..64).map(|i| format!("w:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let stay = owned_by(&names, &after, 0)[0];
    let moves = owned_by(&names, &after, 1)[0];
    let mut c = raw(s.port);
    assert_eq!(c.call_str(&["SET", stay, "s"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["SET", moves, "old"]), b"+OK\r\n");
    let mut t = raw(s.port);
    assert_eq!(t.call_str(&["WATCH", stay]), b"+OK\r\n");
    s.write(50_000, &[0, 1]);
    s.reload(&p);
    wait_idle(s.port, 1);
    assert_eq!(t.call_str(&["MULTI"]), b"+OK\r\n");
    let q = t.call_str(&["SET", moves, "new"]);
    let exec = t.call_str(&["EXEC"]);
    let ran = exec == b"*1\r\n+OK\r\n";
    assert!(
        ran || exec.starts_with(b"-") || exec == b"*-1\r\n",
        "SET: {} EXEC: {}",
        text_or_raw(&q),
        text_or_raw(&exec)
    );
    let want = if ran { "new" } else { "old" };
    assert_eq!(
        c.call_str(&["GET", moves]),
        bulk(want.as_bytes()),
        "after EXEC {}",
        text_or_raw(&exec)
    );
    audit(&s, &[0, 1], &[0]);
}

/// XREADGROUP BLOCK on two streams, blocked before the change; the second stream moves.
/// One Redis: XADD to the second stream wakes it with that entry.
#[test]
fn xreadgroup_blocked_on_two_streams_one_of_which_moves() {
    let s = Setup::new(2, "");
    s.write(50_000, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..64).map(|i| format!("x:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let s1 = owned_by(&names, &after, 0)[0];
    let s2 = owned_by(&names, &after, 1)[0];
    let mut c = raw(s.port);
    for st in [s1, s2] {
        assert_eq!(
            c.call_str(&["XGROUP", "CREATE", st, "g", "$", "MKSTREAM"]),
            b"+OK\r\n"
        );
    }
    let mut blocked = raw(s.port);
    blocked.cmd(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c",
        b"BLOCK",
        b"3000",
        b"STREAMS",
        s1.as_bytes(),
        s2.as_bytes(),
        b">",
        b">",
    ]);
    wait_blocked(&s.backends[0], "XREADGROUP");
    s.write(50_000, &[0, 1]);
    s.reload(&p);
    wait_idle(s.port, 1);
    assert_eq!(c.call_str(&["XADD", s2, "5-1", "f", "v"]), bulk(b"5-1"));
    let got = blocked.reply();
    if !got.starts_with(b"-") {
        assert!(
            text_or_raw(&got).contains("5-1"),
            "XREADGROUP's reply after XADD {s2}: {}",
            text_or_raw(&got)
        );
    }
    audit(&s, &[0, 1], &[0]);
}

/// Pipelines written in odd chunks, mixing SELECT, SET, DEL, INCR and GET over keys that move
/// and keys that stay, from several clients on disjoint keys, while 1 server grows to 3 and
/// then one is removed. Every reply is checked against a model of one Redis.
#[test]
fn chunked_pipelines_with_select_against_a_model_across_two_rebalances() {
    use std::collections::HashMap;
    let s = Setup::new(3, "  membership_commands yes\n");
    s.write(3000, &[0]);
    let p = s.start();
    let port = s.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = raw(port);
    // Keys to move: 3000 per database.
    for db in ["0", "1"] {
        assert_eq!(c.call_str(&["SELECT", db]), b"+OK\r\n");
        let mut bytes = Vec::new();
        for i in 0..3000 {
            bytes.extend(enc(&["SET", &format!("bg:{i}"), db]));
        }
        for r in c.exchange(bytes, 3000) {
            assert_eq!(r, b"+OK\r\n");
        }
    }
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut r = raw(port);
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
                let mut rnd = move |n: u64| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % n
                };
                // (db, key) -> value (None: absent); counters are values too.
                let mut model: HashMap<(u64, String), Option<String>> = HashMap::new();
                let mut db = 0u64;
                let mut ops = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || ops < 2000 {
                    let n = 1 + rnd(10) as usize;
                    let mut bytes = Vec::new();
                    let mut want: Vec<Vec<u8>> = Vec::new();
                    for _ in 0..n {
                        let key = format!("w{w}:{}", rnd(120));
                        let slot = (db, key.clone());
                        let cur = model.get(&slot).cloned().flatten();
                        match rnd(6) {
                            0 => {
                                db = rnd(2);
                                bytes.extend(enc(&["SELECT", &db.to_string()]));
                                want.push(b"+OK\r\n".to_vec());
                            }
                            1 => {
                                let v = format!("v{ops}");
                                bytes.extend(enc(&["SET", &key, &v]));
                                want.push(b"+OK\r\n".to_vec());
                                model.insert(slot, Some(v));
                            }
                            2 => {
                                bytes.extend(enc(&["DEL", &key]));
                                want.push(format!(":{}\r\n", cur.is_some() as u8).into_bytes());
                                model.insert(slot, None);
                            }
                            3 => match cur.as_deref().map(|v| v.parse::<i64>()) {
                                Some(Err(_)) => {
                                    bytes.extend(enc(&["GET", &key]));
                                    want.push(bulk(cur.unwrap().as_bytes()));
                                }
                                other => {
                                    let next = other.map_or(1, |r| r.unwrap() + 1);
                                    bytes.extend(enc(&["INCR", &key]));
                                    want.push(format!(":{next}\r\n").into_bytes());
                                    model.insert(slot, Some(next.to_string()));
                                }
                            },
                            _ => {
                                bytes.extend(enc(&["GET", &key]));
                                want.push(match cur {
                                    Some(v) => bulk(v.as_bytes()),
                                    None => b"$-1\r\n".to_vec(),
                                });
                            }
                        }
                        ops += 1;
                    }
                    // Written in odd chunks.
                    let mut at = 0;
                    while at < bytes.len() {
                        let len = (1 + rnd(37) as usize).min(bytes.len() - at);
                        r.send(&bytes[at..at + len]);
                        at += len;
                    }
                    for (i, wnt) in want.iter().enumerate() {
                        let got = r.reply();
                        assert_eq!(
                            text_or_raw(&got),
                            text_or_raw(wnt),
                            "worker {w}, reply {i} of a pipeline of {n} (op {ops})"
                        );
                    }
                }
                (model, ops)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let add = |name: &str, i: usize| {
        let r = raw(port).call_str(&[
            "PROXY",
            "ADDBACKEND",
            name,
            &format!("127.0.0.1:{}", s.backends[i].port),
        ]);
        assert!(!r.starts_with(b"-"), "{}", text_or_raw(&r));
    };
    add("s1", 1);
    wait_idle(port, 1);
    // Second change: a refused one while the first runs is tested elsewhere; here, after idle.
    add("s2", 2);
    wait_idle(port, 2);
    let rm = raw(port).call_str(&["PROXY", "REMOVEBACKEND", "s0"]);
    assert!(!rm.starts_with(b"-"), "{}", text_or_raw(&rm));
    wait_idle(port, 3);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut r = raw(port);
    for (w, h) in workers.into_iter().enumerate() {
        let (model, ops) = h.join().expect("worker");
        assert!(ops >= 2000);
        for ((db, key), v) in model {
            assert_eq!(r.call_str(&["SELECT", &db.to_string()]), b"+OK\r\n");
            let want = match v {
                Some(v) => bulk(v.as_bytes()),
                None => b"$-1\r\n".to_vec(),
            };
            assert_eq!(
                r.call_str(&["GET", &key]),
                want,
                "worker {w}: db {db} {key}"
            );
        }
    }
    for db in ["0", "1"] {
        assert_eq!(r.call_str(&["SELECT", db]), b"+OK\r\n");
        for i in (0..3000).step_by(7) {
            assert_eq!(
                r.call_str(&["GET", &format!("bg:{i}")]),
                bulk(db.as_bytes())
            );
        }
    }
    audit(&s, &[1, 2], &[0, 1]);
    drop(p);
}

/// A function library loaded through the proxy before servers are added, then FCALL on a key
/// that moved to a new server. One Redis: FCALL runs the function (the library is there).
/// Found by review, not fixed: the added server has no libraries (nor cached scripts), so the
/// proxy answers `-ERR Function not found`; the README now tells operators to load them first.
#[test]
#[ignore = "open bug: functions are not copied to an added server (README: load them before adding)"]
fn fcall_on_a_key_moved_to_an_added_server() {
    let s = Setup::new(2, "");
    s.write(50_000, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..64).map(|i| format!("fn:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let k = owned_by(&names, &after, 1)[0];
    let mut c = raw(s.port);
    let lib = "#!lua name=revlib\nredis.register_function('revget', function(keys) return redis.call('GET', keys[1]) end)";
    assert_eq!(c.call_str(&["FUNCTION", "LOAD", lib]), bulk(b"revlib"));
    assert_eq!(c.call_str(&["SET", k, "v"]), b"+OK\r\n");
    s.write(50_000, &[0, 1]);
    s.reload(&p);
    wait_idle(s.port, 1);
    let got = c.call_str(&["FCALL", "revget", "1", k]);
    assert_eq!(
        text_or_raw(&got),
        text_or_raw(&bulk(b"v")),
        "FCALL revget 1 {k} after {k} moved to the added server"
    );
}

/// A reload turning `rebalance no` (same servers) while keys are still moving, and PROXY
/// RELOAD of a change that moves keys while rebalancing. One Redis: every key keeps reading
/// back. The refused reload answers an error naming the rebalance, and nothing changes.
#[test]
fn reloads_during_a_rebalance_keep_every_key_readable() {
    let s = Setup::new(3, "");
    s.write(1, &[0]);
    let p = s.start();
    let mut c = raw(s.port);
    let names: Vec<String> = (0..300).map(|i| format!("r:{i}")).collect();
    for k in &names {
        assert_eq!(c.call_str(&["SET", k, k]), b"+OK\r\n");
    }
    s.write(1, &[0, 1]);
    s.reload(&p);
    wait_epoch(s.port, 1);
    // A change that moves keys, by PROXY RELOAD: refused with the reason.
    s.write(1, &[0, 1, 2]);
    let r = c.call_str(&["PROXY", "RELOAD"]);
    assert!(
        r.starts_with(b"-") && text(&r).contains("rebalanc"),
        "PROXY RELOAD while rebalancing: {}",
        text_or_raw(&r)
    );
    assert_eq!(strings(&c.call_str(&["BACKENDS"])).len(), 2);
    // Same servers, `rebalance no`: either refused, or every key still reads back.
    std::fs::write(&s.conf, s.text(s.port, false, 1, &[0, 1])).unwrap();
    let r = c.call_str(&["PROXY", "RELOAD"]);
    let mut missing = Vec::new();
    for k in &names {
        if c.call_str(&["GET", k]) != bulk(k.as_bytes()) {
            missing.push(k.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "after PROXY RELOAD with rebalance no ({}): {} keys missing, e.g. {:?}",
        text_or_raw(&r),
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// A change that moves keys both ways between two servers (the hash function changes), then
/// one MGET over a key moving s0 -> s1 and one moving s1 -> s0, keys not moved yet (mover
/// paused). One Redis: MGET answers both values. (Two MIGRATEs crossing between the same two
/// servers block each other until their timeout.)
#[test]
fn one_command_over_keys_moving_both_ways_between_two_servers() {
    let s = Setup::new(2, "");
    s.write(1, &[0, 1]);
    let p = s.start();
    let names: Vec<String> = (0..200).map(|i| format!("b:{i}")).collect();
    let fnv = |t: String| t.replace("hash md5", "hash fnv1a_64");
    let before = s.placement(&[0, 1], &names);
    let after = s.placement_with(&[0, 1], &names, fnv);
    let ab = names
        .iter()
        .zip(before.iter().zip(&after))
        .find(|(_, (&b, &a))| b == 0 && a == 1)
        .unwrap()
        .0;
    let ba = names
        .iter()
        .zip(before.iter().zip(&after))
        .find(|(_, (&b, &a))| b == 1 && a == 0)
        .unwrap()
        .0;
    let mut c = raw(s.port);
    for k in &names {
        assert_eq!(c.call_str(&["SET", k, k]), b"+OK\r\n");
    }
    std::fs::write(&s.conf, fnv(s.text(s.port, true, 1, &[0, 1]))).unwrap();
    s.reload(&p);
    wait_epoch(s.port, 1);
    let paused = text(&c.call_str(&["PROXY", "REBALANCE", "PAUSE"]));
    assert!(paused.contains("epoch=1"), "{paused}");
    assert!(exists_on(&s.backends[0], 0, ab) && exists_on(&s.backends[1], 0, ba));
    let got = c.call_str(&["MGET", ab, ba]);
    assert_eq!(
        text_or_raw(&got),
        format!("*2\r\n${}\r\n{ab}\r\n${}\r\n{ba}\r\n", ab.len(), ba.len()),
        "MGET {ab} {ba}"
    );
    assert!(text(&c.call_str(&["PROXY", "REBALANCE", "RESUME"])).contains("epoch=1"));
    std::fs::write(&s.conf, fnv(s.text(s.port, true, 50_000, &[0, 1]))).unwrap();
    s.reload(&p);
    wait_idle(s.port, 1);
    for k in &names {
        assert_eq!(c.call_str(&["GET", k]), bulk(k.as_bytes()), "{k}");
    }
}

/// Two proxy processes (reuseport) and a change that moves keys both ways between two servers
/// (the hash function changes). Each process's movers and clients avoid crossing MIGRATEs of
/// their own; the question is whether the two processes cross each other's (both servers then
/// block until MIGRATE's timeout). One Redis: nothing fails; here: no failed move, no key lost.
/// Found by review, not fixed: they do cross (`-IOERR error or timeout reading to target
/// instance` on the movers, failed=176 of 6000 keys, both servers frozen 5 s each time); no key
/// was lost and the audit passed, the moves were retried.
#[test]
#[ignore = "open bug: MIGRATEs of two proxy processes cross between two servers (IOERR after MIGRATE's timeout)"]
fn two_processes_moving_keys_both_ways() {
    let s = Setup::new(2, "  reuseport yes\n");
    s.write(50_000, &[0, 1]);
    let p1 = s.start();
    let p2 = s.start();
    let mut c = raw(s.port);
    let names: Vec<String> = (0..6000).map(|i| format!("t:{i}")).collect();
    let mut bytes = Vec::new();
    for k in &names {
        bytes.extend(enc(&["SET", k, k]));
    }
    for r in c.exchange(bytes, names.len()) {
        assert_eq!(r, b"+OK\r\n");
    }
    let fnv = |t: String| t.replace("hash md5", "hash fnv1a_64");
    std::fs::write(&s.conf, fnv(s.text(s.port, true, 50_000, &[0, 1]))).unwrap();
    s.reload(&p1);
    s.reload(&p2);
    // Both processes idle: every fresh connection (either process) says so, 30 times running.
    let mut streak = 0;
    let mut last = String::new();
    poll_until(
        "both processes idle",
        Duration::from_secs(120),
        ms(20),
        || {
            last = info_rebalance(s.port);
            if last.contains("state=idle") && last.contains("epoch=1,") {
                streak += 1;
            } else {
                streak = 0;
            }
            if streak >= 30 {
                Ok(())
            } else {
                Err(last.clone())
            }
        },
    );
    let mut missing = 0;
    for k in &names {
        if c.call_str(&["GET", k]) != bulk(k.as_bytes()) {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "keys not read back");
    audit(&s, &[0, 1], &[0]);
    let logs: String = std::fs::read_to_string(s.conf.with_extension("log")).unwrap_or_default();
    assert!(
        !logs.contains("IOERR") && !last.contains("failed=") || last.contains("failed=0"),
        "{last}\n{}",
        logs.lines()
            .filter(|l| l.contains("IOERR") || l.contains("fail"))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop((p1, p2));
}

/// A client writes keys that have not moved yet (mover paused) and closes its connection at
/// once, without reading the replies. One Redis executes every command it read before the
/// close: the writes happen.
/// Found by review, fixed: the commands held unparsed while their keys move (the same for
/// one held at a fence) were dropped when the client's connection ended, so the writes after
/// the first were lost. They now run (`Closing::AfterInput`).
#[test]
fn writes_sent_just_before_a_close_are_not_lost() {
    let s = Setup::new(2, "");
    s.write(1, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..100).map(|i| format!("c:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let mv: Vec<&String> = owned_by(&names, &after, 1);
    let mut c = raw(s.port);
    for k in &mv {
        assert_eq!(c.call_str(&["SET", k, "old"]), b"+OK\r\n");
    }
    s.write(1, &[0, 1]);
    s.reload(&p);
    wait_epoch(s.port, 1);
    let paused = text(&c.call_str(&["PROXY", "REBALANCE", "PAUSE"]));
    assert!(paused.contains("epoch=1"), "{paused}");
    let todo: Vec<&String> = mv
        .iter()
        .copied()
        .filter(|k| exists_on(&s.backends[0], 0, k))
        .take(5)
        .collect();
    assert!(!todo.is_empty());
    {
        let mut w = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let mut bytes = Vec::new();
        for k in &todo {
            bytes.extend(enc(&["SET", k, "new"]));
        }
        std::io::Write::write_all(&mut w, &bytes).unwrap();
        // Dropped: closed without reading.
    }
    for k in &todo {
        poll_until("the write", Duration::from_secs(5), ms(20), || {
            let got = c.call_str(&["GET", k]);
            if got == bulk(b"new") {
                Ok(())
            } else {
                Err(format!("{k}: {}", text_or_raw(&got)))
            }
        });
    }
}

/// One command naming a key that has not moved yet twice (MGET k k, EXISTS k k, DEL k k).
/// One Redis: MGET answers the value twice, EXISTS counts 2, DEL deletes it once (1).
#[test]
fn a_moving_key_named_twice_in_one_command() {
    let s = Setup::new(2, "");
    s.write(1, &[0]);
    let p = s.start();
    let names: Vec<String> = (0..100).map(|i| format!("d:{i}")).collect();
    let after = s.placement(&[0, 1], &names);
    let mv: Vec<&String> = owned_by(&names, &after, 1);
    let mut c = raw(s.port);
    for k in &mv {
        assert_eq!(c.call_str(&["SET", k, "v"]), b"+OK\r\n");
    }
    s.write(1, &[0, 1]);
    s.reload(&p);
    wait_epoch(s.port, 1);
    let paused = text(&c.call_str(&["PROXY", "REBALANCE", "PAUSE"]));
    assert!(paused.contains("epoch=1"), "{paused}");
    let todo: Vec<&String> = mv
        .iter()
        .copied()
        .filter(|k| exists_on(&s.backends[0], 0, k))
        .take(3)
        .collect();
    assert_eq!(todo.len(), 3);
    let got = c.call_str(&["MGET", todo[0], todo[0]]);
    assert_eq!(
        text_or_raw(&got),
        "*2\r\n$1\r\nv\r\n$1\r\nv\r\n",
        "MGET k k"
    );
    let got = c.call_str(&["EXISTS", todo[1], todo[1]]);
    assert_eq!(text_or_raw(&got), ":2\r\n", "EXISTS k k");
    let got = c.call_str(&["DEL", todo[2], todo[2]]);
    assert_eq!(text_or_raw(&got), ":1\r\n", "DEL k k");
}
