//! Issue 20: Redis's numbered databases on static pools (`SELECT n`, `MOVE`, `SWAPDB`,
//! `FLUSHDB`/`SCAN`/`DBSIZE` per database, `redis_db`, per-database backend connections).
//!
//! Every test runs real redis-servers on free loopback ports and the real binary; where "what
//! one Redis does" is the expectation, the same byte stream also goes to one plain redis-server
//! and the replies are compared byte for byte. Waits are bounded polls; no duration is asserted.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use rustproxy::resp::Reply;

use common::{
    bulk, enc, enc_many, int, ms, poll_until, redises, refs, strings, text, Proxy, Raw, Redis,
};

const QUICK: Duration = Duration::from_secs(5);

fn raw(port: u16) -> Raw {
    let mut r = Raw::connect(port);
    r.set_timeout(QUICK);
    r
}

/// `cmd` on database `db` of a backend, directly (not through the proxy).
fn direct(r: &Redis, db: u32, args: &[&str]) -> Vec<u8> {
    let mut c = raw(r.port);
    let sel = c.call_str(&["SELECT", &db.to_string()]);
    assert_eq!(sel, b"+OK\r\n");
    c.call_str(args)
}

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

#[test]
fn keys_in_a_database_are_invisible_from_another_on_every_backend() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = raw(proxy.port);
    let ks = keys(400, "k");
    assert_eq!(c.call_str(&["SELECT", "3"]), b"+OK\r\n");
    for k in &ks {
        assert_eq!(c.call_str(&["SET", k, "in3"]), b"+OK\r\n");
    }
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 400);
    assert_eq!(c.call_str(&["SELECT", "0"]), b"+OK\r\n");
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 0);
    for k in &ks {
        assert_eq!(c.call_str(&["GET", k]), b"$-1\r\n", "{k} leaked into db 0");
        assert_eq!(c.call_str(&["SET", k, "in0"]), b"+OK\r\n");
    }
    // The keys spread over the backends, each key in both databases with its own value.
    let mut total = 0;
    let mut holding = 0;
    for s in &servers {
        let n3 = int(&direct(s, 3, &["DBSIZE"]));
        let n0 = int(&direct(s, 0, &["DBSIZE"]));
        assert_eq!(
            n3, n0,
            "backend {}: db 3 and db 0 hold the same names",
            s.port
        );
        holding += usize::from(n3 > 0);
        total += n3;
    }
    assert!(holding >= 2, "the keys did not spread over backends");
    assert_eq!(total, 400);
    assert_eq!(c.call_str(&["SELECT", "3"]), b"+OK\r\n");
    for k in &ks {
        assert_eq!(c.call_str(&["GET", k]), bulk(b"in3"));
    }
    // Placement does not depend on the database.
    for k in ks.iter().take(10) {
        let b3 = c.call_str(&["BACKENDNUM", k]);
        c.call_str(&["SELECT", "0"]);
        assert_eq!(c.call_str(&["BACKENDNUM", k]), b3);
        c.call_str(&["SELECT", "3"]);
    }
}

#[test]
fn info_keyspace_sums_every_database_over_the_backends() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = raw(proxy.port);
    // Before any key: the section is there and empty, as in a fresh Redis.
    let empty = text(&c.call_str(&["INFO", "keyspace"]));
    assert_eq!(empty.trim_end(), "# Keyspace");
    for k in keys(400, "a") {
        assert_eq!(c.call_str(&["SET", &k, "v"]), b"+OK\r\n");
    }
    for k in keys(30, "t") {
        assert_eq!(c.call_str(&["SET", &k, "v", "EX", "1000"]), b"+OK\r\n");
    }
    assert_eq!(c.call_str(&["SELECT", "5"]), b"+OK\r\n");
    for k in keys(420, "b") {
        assert_eq!(c.call_str(&["SET", &k, "v"]), b"+OK\r\n");
    }
    let lines = |sec: &str| -> Vec<String> {
        sec.lines()
            .filter(|l| l.starts_with("db"))
            .map(|l| l.split(",avg_ttl").next().unwrap_or_default().to_string())
            .collect()
    };
    let want = vec![
        "db0:keys=430,expires=30".to_string(),
        "db5:keys=420,expires=0".to_string(),
    ];
    for section in [
        &["INFO", "keyspace"][..],
        &["INFO"],
        &["INFO", "all"],
        &["INFO", "everything"],
    ] {
        let got = text(&c.call_str(section));
        assert_eq!(lines(&got), want, "{section:?}");
        // The Keyspace section keeps its place among the others.
        if section.len() == 1 {
            assert!(got.find("# Cluster").unwrap() < got.find("# Keyspace").unwrap());
        }
    }
    // A section list without keyspace asks no backend for it.
    assert!(!text(&c.call_str(&["INFO", "server"])).contains("db0:"));
    // With one backend down, INFO still answers with the others' keys.
    let mut servers = servers;
    let gone = servers.remove(0);
    let lost = int(&direct(&gone, 0, &["DBSIZE"]));
    drop(gone);
    let got = text(&c.call_str(&["INFO", "keyspace"]));
    let n0: i64 = lines(&got)
        .iter()
        .find(|l| l.starts_with("db0:"))
        .and_then(|l| l["db0:keys=".len()..].split(',').next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(n0, 430 - lost, "{got}");
}

#[test]
fn select_errors_are_redis_texts() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let reference = Redis::start();
    let stream: &[&[&str]] = &[
        &["SELECT", "16"],
        &["SELECT", "-1"],
        &["SELECT", "abc"],
        &["SELECT"],
        &["SELECT", "1", "2"],
        &["SELECT", "15"],
        &["MOVE", "k", "16"],
        &["MOVE", "k", "x"],
        &["SWAPDB", "0", "16"],
        &["SWAPDB", "x", "1"],
        &["SWAPDB", "1", "y"],
        &["COPY", "a", "b", "DB", "99"],
    ];
    let mut p = raw(proxy.port);
    let mut r = raw(reference.port);
    for cmd in stream {
        assert_eq!(
            p.call_str(cmd),
            r.call_str(cmd),
            "{cmd:?}: proxy and redis-server differ"
        );
    }
    // `databases 1` keeps the old behaviour: only database 0.
    let one = Proxy::start(&refs(&servers), &["--databases", "1"]);
    let mut c = raw(one.port);
    assert_eq!(c.call_str(&["SELECT", "0"]), b"+OK\r\n");
    let e = text(&c.call_str(&["SELECT", "1"]));
    assert!(e.contains("only database 0"), "{e}");
    assert_eq!(
        text(&c.call_str(&["MOVE", "k", "1"])),
        "-ERR DB index is out of range"
    );
    // A smaller `databases` bounds SELECT below the backends' own count.
    let four = Proxy::start(&refs(&servers), &["--databases", "4"]);
    let mut c = raw(four.port);
    assert_eq!(c.call_str(&["SELECT", "3"]), b"+OK\r\n");
    assert_eq!(
        text(&c.call_str(&["SELECT", "4"])),
        "-ERR DB index is out of range"
    );
}

#[test]
fn move_copy_and_swapdb_between_databases() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = raw(proxy.port);
    for k in keys(20, "m") {
        assert_eq!(c.call_str(&["SET", &k, "v"]), b"+OK\r\n");
        assert_eq!(int(&c.call_str(&["MOVE", &k, "5"])), 1);
        assert_eq!(c.call_str(&["GET", &k]), b"$-1\r\n");
    }
    assert_eq!(c.call_str(&["SELECT", "5"]), b"+OK\r\n");
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 20);
    assert_eq!(c.call_str(&["GET", "m:7"]), bulk(b"v"));
    // COPY into another database (same key, so same backend).
    assert_eq!(int(&c.call_str(&["COPY", "m:7", "m:7", "DB", "6"])), 1);
    assert_eq!(c.call_str(&["SELECT", "6"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["GET", "m:7"]), bulk(b"v"));
    // SWAPDB on every backend: db 5's keys are now in db 1, and db 1's (none) in db 5.
    assert_eq!(c.call_str(&["SWAPDB", "5", "1"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["SELECT", "1"]), b"+OK\r\n");
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 20);
    assert_eq!(c.call_str(&["SELECT", "5"]), b"+OK\r\n");
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 0);
    for s in &servers {
        assert_eq!(int(&direct(s, 5, &["DBSIZE"])), 0);
    }
}

#[test]
fn flushdb_of_one_database_leaves_the_others() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = raw(proxy.port);
    for k in keys(30, "f") {
        c.call_str(&["SET", &k, "zero"]);
    }
    c.call_str(&["SELECT", "5"]);
    for k in keys(30, "f") {
        c.call_str(&["SET", &k, "five"]);
    }
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 30);
    assert_eq!(c.call_str(&["FLUSHDB"]), b"+OK\r\n");
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 0);
    c.call_str(&["SELECT", "0"]);
    assert_eq!(int(&c.call_str(&["DBSIZE"])), 30);
    assert_eq!(c.call_str(&["GET", "f:3"]), bulk(b"zero"));
}

#[test]
fn scan_keys_and_randomkey_see_only_the_selected_database() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = raw(proxy.port);
    for k in keys(25, "zero") {
        c.call_str(&["SET", &k, "0"]);
    }
    c.call_str(&["SELECT", "2"]);
    let want: BTreeSet<String> = keys(40, "two").into_iter().collect();
    for k in &want {
        c.call_str(&["SET", k, "2"]);
    }
    let mut got = BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..1000 {
        let r = c.call_str(&["SCAN", &cursor, "COUNT", "7"]);
        let Reply::Array(items) = common::parsed(&r) else {
            panic!("SCAN reply {}", common::show(&r));
        };
        let (Reply::Bulk(cur), Reply::Array(ks)) = (&items[0], &items[1]) else {
            panic!("SCAN reply {}", common::show(&r));
        };
        cursor = String::from_utf8_lossy(cur).into_owned();
        for k in ks {
            if let Reply::Bulk(k) = k {
                got.insert(String::from_utf8_lossy(k).into_owned());
            }
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0", "SCAN did not finish");
    assert_eq!(got, want);
    let ks: BTreeSet<String> = strings(&c.call_str(&["KEYS", "*"])).into_iter().collect();
    assert_eq!(ks, want);
    for _ in 0..20 {
        let k = text(&c.call_str(&["RANDOMKEY"]));
        assert!(
            want.contains(&k),
            "RANDOMKEY gave {k} from another database"
        );
    }
}

/// A pipeline that switches databases in the middle, written in odd chunks: every reply in
/// order and every command in its database, byte for byte as one redis-server answers.
#[test]
fn pipelines_switching_databases_match_one_redis() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let reference = Redis::start();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for round in 0..6 {
        for db in ["0", "1", "2", "1", "0", "15"] {
            cmds.push(vec!["SELECT".into(), db.into()]);
            for i in 0..5 {
                let k = format!("p:{i}");
                cmds.push(vec!["INCR".into(), k.clone()]);
                cmds.push(vec!["APPEND".into(), format!("a:{i}"), db.into()]);
                if i % 2 == round % 2 {
                    cmds.push(vec!["MGET".into(), k, format!("a:{i}"), "p:3".into()]);
                }
            }
            cmds.push(vec!["DBSIZE".into()]);
            if round == 3 {
                cmds.push(vec!["MOVE".into(), "p:1".into(), "7".into()]);
                cmds.push(vec!["SELECT".into(), "7".into()]);
                cmds.push(vec!["GET".into(), "p:1".into()]);
            }
        }
    }
    cmds.push(vec!["SELECT".into(), "0".into()]);
    let bytes = enc_many(&cmds);
    let chunks = |r: &mut Raw| {
        // Odd chunk sizes, so commands (and SELECTs) are cut anywhere.
        let mut i = 0;
        let mut n = 1;
        while i < bytes.len() {
            let end = (i + n).min(bytes.len());
            r.send(&bytes[i..end]);
            i = end;
            n = n * 7 % 61 + 1;
        }
        r.expect_replies(cmds.len(), "pipeline")
    };
    let mut p = raw(proxy.port);
    let mut r = raw(reference.port);
    let got = chunks(&mut p);
    let want = chunks(&mut r);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            common::show(g),
            common::show(w),
            "reply {i} to {:?} differs",
            cmds[i]
        );
    }
}

#[test]
fn transactions_and_watch_run_in_the_selected_database() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let reference = Redis::start();
    // MULTI after SELECT 2; WATCH in db 0 then SELECT 4 (Redis remembers the watched key's
    // database); a write to the watched key in db 0 by another client aborts EXEC; one in db 4
    // does not.
    let stream: Vec<Vec<&str>> = vec![
        vec!["SELECT", "2"],
        vec!["MULTI"],
        vec!["SET", "{t}a", "two"],
        vec!["INCR", "{t}n"],
        vec!["EXEC"],
        vec!["GET", "{t}a"],
        vec!["SELECT", "0"],
        vec!["GET", "{t}a"],
        vec!["WATCH", "{t}w"],
        vec!["SELECT", "4"],
        vec!["MULTI"],
        vec!["SET", "{t}w", "four"],
        vec!["EXEC"],
        vec!["GET", "{t}w"],
        vec!["SELECT", "0"],
        vec!["GET", "{t}w"],
        vec!["SELECT", "2"],
        vec!["MULTI"],
        vec!["SELECT", "3"],
        vec!["EXEC"],
        vec!["GET", "{t}a"],
    ];
    let run = |port: u16, interfere: bool| -> Vec<String> {
        let mut c = raw(port);
        let mut other = raw(port);
        let mut out = Vec::new();
        for (i, cmd) in stream.iter().enumerate() {
            if interfere && i == 10 {
                // Between WATCH (db 0) and EXEC (db 4): touch the watched key in db 4 only.
                other.call_str(&["SELECT", "4"]);
                other.call_str(&["SET", "{t}w", "other"]);
            }
            out.push(common::show(&c.call_str(cmd)));
        }
        out
    };
    let got = run(proxy.port, true);
    let want = run(reference.port, true);
    // The proxy refuses SELECT inside MULTI (documented; the transaction is discarded and the
    // client stays in db 2): compare everything before it.
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if i >= 18 {
            continue;
        }
        assert_eq!(g, w, "reply {i} to {:?}", stream[i]);
    }
    assert!(
        got[18].contains("select"),
        "SELECT inside MULTI: {}",
        got[18]
    );
    assert!(got[19].contains("EXECABORT"), "{}", got[19]);
    // And the watch on db 0 is honoured: a write there aborts.
    let mut c = raw(proxy.port);
    let mut other = raw(proxy.port);
    c.call_str(&["WATCH", "{t}x"]);
    c.call_str(&["SELECT", "4"]);
    other.call_str(&["SET", "{t}x", "changed-in-0"]);
    c.call_str(&["MULTI"]);
    c.call_str(&["SET", "{t}x", "mine"]);
    assert_eq!(
        c.call_str(&["EXEC"]),
        b"*-1\r\n",
        "a write in db 0 must abort"
    );
    // The transactions ran in their databases on the backend that holds {t}.
    let h = servers
        .iter()
        .find(|s| direct(s, 2, &["EXISTS", "{t}a"]) == b":1\r\n")
        .expect("db 2 holds {t}a on some backend");
    assert_eq!(direct(h, 0, &["EXISTS", "{t}a"]), b":0\r\n");
}

#[test]
fn a_blocked_pop_in_db1_is_woken_by_a_push_in_db1_only() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut waiter = raw(proxy.port);
    waiter.call_str(&["SELECT", "1"]);
    waiter.send(&enc(&[b"BLPOP", b"q", b"0"]));
    let mut pusher = raw(proxy.port);
    // The waiter is blocked on its private connection once a push in db 1 would wake it; a
    // push in db 0 must not.
    assert_eq!(int(&pusher.call_str(&["LPUSH", "q", "zero"])), 1);
    waiter.assert_quiet(ms(300), "BLPOP in db 1 woken by a push in db 0");
    pusher.call_str(&["SELECT", "1"]);
    assert_eq!(int(&pusher.call_str(&["LPUSH", "q", "one"])), 1);
    let r = waiter.expect_reply("BLPOP");
    assert_eq!(strings(&r), ["q", "one"]);
    pusher.call_str(&["SELECT", "0"]);
    assert_eq!(pusher.call_str(&["LPOP", "q"]), bulk(b"zero"));
    // The private connection, lent next to a db-0 client, runs there.
    let mut zero = raw(proxy.port);
    zero.send(&enc(&[b"BLPOP", b"q", b"0"]));
    pusher.call_str(&["LPUSH", "q", "again"]);
    assert_eq!(strings(&zero.expect_reply("BLPOP")), ["q", "again"]);
}

#[test]
fn reset_client_list_and_resp3_subscribers_follow_the_database() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = raw(proxy.port);
    c.call_str(&["SELECT", "9"]);
    let info = text(&c.call_str(&["CLIENT", "INFO"]));
    assert!(info.contains(" db=9 "), "{info}");
    let list = text(&c.call_str(&["CLIENT", "LIST"]));
    assert!(list.contains(" db=9 "), "{list}");
    assert_eq!(c.call_str(&["RESET"]), b"+RESET\r\n");
    let info = text(&c.call_str(&["CLIENT", "INFO"]));
    assert!(info.contains(" db=0 "), "RESET goes back to db 0: {info}");
    // A RESP3 subscriber's commands go over its subscription connection: SELECT moves it.
    c.call_str(&["HELLO", "3"]);
    c.call_str(&["SUBSCRIBE", "ch"]);
    c.call_str(&["SELECT", "6"]);
    for k in keys(10, "s") {
        assert_eq!(c.call_str(&["SET", &k, "six"]), b"+OK\r\n");
    }
    let in6: i64 = servers
        .iter()
        .map(|s| int(&direct(s, 6, &["DBSIZE"])))
        .sum();
    let in0: i64 = servers
        .iter()
        .map(|s| int(&direct(s, 0, &["DBSIZE"])))
        .sum();
    assert_eq!((in6, in0), (10, 0));
}

/// `redis_db`: the database every connection starts in (twemproxy's meaning); SELECT names
/// backend databases directly.
#[test]
fn redis_db_is_where_clients_start() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--redis-db", "2"]);
    let mut c = raw(proxy.port);
    c.call_str(&["SET", "r", "start"]);
    c.call_str(&["SELECT", "0"]);
    c.call_str(&["SET", "r", "zero"]);
    let h = servers
        .iter()
        .find(|s| direct(s, 2, &["EXISTS", "r"]) == b":1\r\n")
        .expect("key in db 2");
    assert_eq!(direct(h, 2, &["GET", "r"]), bulk(b"start"));
    assert_eq!(direct(h, 0, &["GET", "r"]), bulk(b"zero"));
    c.call_str(&["RESET"]);
    assert_eq!(c.call_str(&["GET", "r"]), bulk(b"start"));
}

/// Clients that never leave db 0 open exactly the connections they did before; another
/// database's connections open on first use and close after `db_idle_timeout`.
#[test]
fn database_connections_open_lazily_and_close_when_idle() {
    let servers = redises(1);
    let proxy = Proxy::start(
        &refs(&servers),
        &["--server-connections", "2", "--db-idle-timeout", "300"],
    );
    let backend_dbs = || -> Vec<String> {
        let list = text(&direct(&servers[0], 0, &["CLIENT", "LIST"]));
        list.lines()
            .filter(|l| !l.contains("cmd=client"))
            .filter_map(|l| {
                l.split(' ')
                    .find(|f| f.starts_with("db="))
                    .map(str::to_string)
            })
            .collect()
    };
    let mut c = raw(proxy.port);
    for i in 0..8 {
        // Several clients, pinned to both shared connections.
        let mut d = raw(proxy.port);
        d.call_str(&["SET", &format!("x{i}"), "1"]);
    }
    c.call_str(&["GET", "x"]);
    let before = backend_dbs();
    assert!(before.iter().all(|d| d == "db=0"), "{before:?}");
    assert!(before.len() <= 2, "db-0 clients opened {before:?}");
    c.call_str(&["SELECT", "3"]);
    c.call_str(&["SET", "y", "1"]);
    assert!(backend_dbs().iter().any(|d| d == "db=3"));
    c.call_str(&["SELECT", "0"]);
    poll_until(
        "db 3 connection closed when idle",
        Duration::from_secs(10),
        ms(50),
        || {
            let now = backend_dbs();
            if now.iter().any(|d| d == "db=3") {
                Err(format!("{now:?}"))
            } else {
                Ok(())
            }
        },
    );
    // And it reopens on use.
    c.call_str(&["SELECT", "3"]);
    assert_eq!(c.call_str(&["GET", "y"]), bulk(b"1"));
}

/// A backend with fewer databases than the pool's `databases`: commands in the missing
/// database fail with the backend's reason, never run in another database, and the backend
/// is not marked down.
#[test]
fn a_database_the_backend_lacks_fails_clearly() {
    let small = Redis::start_with(&["--databases", "4"]);
    let proxy = Proxy::start(&[&small], &[]);
    let mut c = raw(proxy.port);
    assert_eq!(c.call_str(&["SET", "k", "zero"]), b"+OK\r\n");
    assert_eq!(c.call_str(&["SELECT", "8"]), b"+OK\r\n");
    let e = text(&c.call_str(&["SET", "k", "eight"]));
    assert!(e.starts_with("-ERR") && e.contains("SELECT 8"), "{e}");
    // A private connection (blocking pop) re-selected for the client: the pop must not run
    // in db 0, where the list is.
    let mut other = raw(proxy.port);
    assert_eq!(int(&other.call_str(&["RPUSH", "q", "x"])), 1);
    let e = text(&c.call_str(&["BLPOP", "q", "1"]));
    assert!(e.starts_with("-ERR") && e.contains("SELECT 8"), "{e}");
    c.call_str(&["SELECT", "0"]);
    assert_eq!(c.call_str(&["GET", "k"]), bulk(b"zero"));
    assert_eq!(int(&c.call_str(&["LLEN", "q"])), 1);
    // The backend is not blamed: db 0 keeps working for everyone.
    assert_eq!(other.call_str(&["GET", "k"]), bulk(b"zero"));
}

/// Client URLs with a database, in two client libraries: redis-rs (this crate's tests) and
/// redis-py.
#[test]
fn client_urls_with_a_database() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let url = format!("redis://127.0.0.1:{}/3", proxy.port);
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut con = client.get_connection().expect("connect");
    let _: () = redis::cmd("SET")
        .arg("url-rs")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let n3: i64 = servers
        .iter()
        .map(|s| int(&direct(s, 3, &["EXISTS", "url-rs"])))
        .sum();
    assert_eq!(n3, 1, "redis-rs with /3 wrote to db 3");
    let script = format!(
        "import redis\nr = redis.Redis.from_url('redis://127.0.0.1:{}/5')\nr.set('url-py', 'v')\nprint(r.get('url-py').decode(), r.dbsize())\n",
        proxy.port
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v 1");
    let n5: i64 = servers
        .iter()
        .map(|s| int(&direct(s, 5, &["EXISTS", "url-py"])))
        .sum();
    assert_eq!(n5, 1, "redis-py with /5 wrote to db 5");
}
