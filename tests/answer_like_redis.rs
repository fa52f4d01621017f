//! Issue #18, "Answer like Redis": behaviours the proxy must share with one redis-server 7.0,
//! each tested against real redis-server processes (loopback only; every wait bounded; no
//! duration asserted; servers and the proxy killed by PID on drop).
//!
//! 1. SCRIPT KILL / FUNCTION KILL reach a busy backend on separate connections.
//! 2. CLIENT KILL (old and new forms) and CLIENT UNBLOCK over the proxy's own clients.
//! 3. COMMAND GETKEYS: Redis's order of checks and its texts.
//! 4. Transactions: nested MULTI, WATCH inside MULTI.
//! 5. XGROUP DESTROY unblocks XREADGROUP with -NOGROUP.

mod common;

use common::*;

fn call(r: &mut Raw, args: &[&str]) -> Vec<u8> {
    r.call_str(args)
}

fn send(r: &mut Raw, args: &[&str]) {
    let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
    r.cmd(&a);
}

/// Send `args` until the reply is `want` (bounded); the replies seen before must be `retry`.
fn until(r: &mut Raw, args: &[&str], want: &[u8], retry: &[u8]) {
    poll_until(
        &format!("{args:?} -> {}", show(want)),
        secs(20),
        ms(20),
        || {
            let got = call(r, args);
            if got == want {
                Ok(())
            } else {
                assert_eq!(show(&got), show(retry), "{args:?}");
                Err(show(&got))
            }
        },
    );
}

const NOTBUSY: &[u8] = b"-NOTBUSY No scripts in execution right now.\r\n";

/// Backends that report a long script after 20 ms (so SCRIPT KILL may stop it).
fn busy_backends(n: usize) -> Vec<Redis> {
    (0..n)
        .map(|_| Redis::start_with(&["--busy-reply-threshold", "20"]))
        .collect()
}

// ------------------------------------------------------------------- 1. SCRIPT / FUNCTION KILL

#[test]
fn script_kill_reaches_a_busy_backend_on_a_separate_connection() {
    let servers = busy_backends(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut a = proxy.raw();
    let mut b = proxy.raw();
    let mut direct = Raw::connect(servers[1].port);
    // Nothing runs: NOTBUSY, Redis's text.
    assert_eq!(show(&call(&mut b, &["SCRIPT", "KILL"])), show(NOTBUSY));
    assert_eq!(show(&call(&mut b, &["FUNCTION", "KILL"])), show(NOTBUSY));
    assert_eq!(show(&call(&mut direct, &["SCRIPT", "KILL"])), show(NOTBUSY));

    // A runaway script on backend 0 (numkeys 0); the shared connection waits behind it.
    send(&mut a, &["EVAL", "while true do end", "0"]);
    until(&mut b, &["SCRIPT", "KILL"], b"+OK\r\n", NOTBUSY);
    let killed = a.expect_reply("the killed script's reply");
    assert!(
        killed.starts_with(b"-ERR ")
            && show(&killed).contains("Script killed by user with SCRIPT KILL"),
        "{}",
        show(&killed)
    );
    // The backend serves again, through the proxy.
    assert_eq!(call(&mut a, &["SET", "k", "v"]), b"+OK\r\n");
    assert_eq!(show(&call(&mut b, &["SCRIPT", "KILL"])), show(NOTBUSY));

    // FUNCTION KILL: a function looping forever (no-writes).
    let lib = "#!lua name=spin\nredis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}";
    assert_eq!(
        show(&call(&mut a, &["FUNCTION", "LOAD", lib])),
        show(b"$4\r\nspin\r\n")
    );
    send(&mut a, &["FCALL", "spin", "0"]);
    until(&mut b, &["FUNCTION", "KILL"], b"+OK\r\n", NOTBUSY);
    let killed = a.expect_reply("the killed function's reply");
    assert!(
        killed.starts_with(b"-ERR ") && show(&killed).contains("killed by user"),
        "{}",
        show(&killed)
    );
    assert_eq!(show(&call(&mut b, &["FUNCTION", "KILL"])), show(NOTBUSY));

    // A script that wrote cannot be killed: Redis's UNKILLABLE text, from the busy backend.
    send(
        &mut a,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], 'x') while true do end",
            "1",
            "w",
        ],
    );
    poll_until("UNKILLABLE", secs(20), ms(20), || {
        let got = call(&mut b, &["SCRIPT", "KILL"]);
        if got.starts_with(b"-UNKILLABLE Sorry the script already executed write commands") {
            Ok(())
        } else {
            assert_eq!(show(&got), show(NOTBUSY));
            Err(show(&got))
        }
    });
}

// ------------------------------------------------------------------- 2. CLIENT KILL / UNBLOCK

/// The reply of one redis-server and of the proxy to the same command, byte for byte.
fn same(p: &mut Raw, d: &mut Raw, args: &[&str]) {
    assert_eq!(show(&call(p, args)), show(&call(d, args)), "{args:?}");
}

#[test]
fn client_kill_acts_on_the_proxys_clients_with_redis_texts() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    for args in [
        vec!["CLIENT", "KILL", "1.2.3.4:5"],
        vec!["CLIENT", "KILL", "id"],
        vec!["CLIENT", "KILL", "ID", "99999"],
        vec!["CLIENT", "KILL", "ID", "abc"],
        vec!["CLIENT", "KILL", "ID", "0"],
        vec!["CLIENT", "KILL", "foo", "bar"],
        vec!["CLIENT", "KILL", "TYPE", "foo"],
        vec!["CLIENT", "KILL", "TYPE", "master"],
        vec!["CLIENT", "KILL", "TYPE", "replica"],
        vec!["CLIENT", "KILL", "SKIPME", "maybe"],
        vec!["CLIENT", "KILL", "USER", "nosuch"],
        vec!["CLIENT", "KILL", "ID", "1", "TYPE"],
        vec!["CLIENT", "KILL", "ADDR", "1.2.3.4:5", "SKIPME", "no"],
        vec!["CLIENT", "NO-EVICT", "maybe"],
        vec!["CLIENT", "NO-EVICT", "on"],
        vec!["CLIENT", "NO-EVICT", "off"],
        vec!["CLIENT", "UNBLOCK", "abc"],
        vec!["CLIENT", "UNBLOCK", "1", "foo"],
        vec!["CLIENT", "UNBLOCK", "99999"],
        vec!["CLIENT", "UNBLOCK", "99999", "ERROR"],
        vec!["CLIENT", "UNBLOCK", "1", "TIMEOUT", "x"],
    ] {
        same(&mut p, &mut d, &args);
    }

    // By ID: the victim's connection closes; the count is 1.
    let mut victim = proxy.raw();
    let vid = int(&call(&mut victim, &["CLIENT", "ID"]));
    let got = call(&mut p, &["CLIENT", "KILL", "ID", &vid.to_string()]);
    assert_eq!(show(&got), ":1\\r\\n");
    victim.assert_closed("killed by id");

    // Old form by address: +OK, then closed.
    let mut victim = proxy.raw();
    assert_eq!(call(&mut victim, &["PING"]), b"+PONG\r\n");
    let addr = victim.stream.local_addr().unwrap().to_string();
    assert_eq!(call(&mut p, &["CLIENT", "KILL", &addr]), b"+OK\r\n");
    victim.assert_closed("killed by addr");

    // TYPE pubsub kills subscribers only; SKIPME no kills the caller too (after its reply).
    let mut sub = proxy.raw();
    let _ = call(&mut sub, &["SUBSCRIBE", "ch"]);
    let mut other = proxy.raw();
    assert_eq!(call(&mut other, &["PING"]), b"+PONG\r\n");
    assert_eq!(
        show(&call(&mut p, &["CLIENT", "KILL", "TYPE", "pubsub"])),
        ":1\\r\\n"
    );
    sub.assert_closed("pubsub killed");
    assert_eq!(call(&mut other, &["PING"]), b"+PONG\r\n");
    let got = call(
        &mut p,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"],
    );
    // The caller, `other` and the direct-comparison-free rest: every normal client.
    assert!(int(&got) >= 2, "{}", show(&got));
    p.assert_closed("the caller killed itself");
    other.assert_closed("normal killed");
}

/// Wait until the proxy's INFO counts `n` blocked clients.
fn wait_blocked(r: &mut Raw, n: usize) {
    let want = format!("blocked_clients:{n}\r\n");
    poll_until(&want, secs(20), ms(10), || {
        let info = String::from_utf8_lossy(&call(r, &["INFO", "clients"])).into_owned();
        if info.contains(&want) {
            Ok(())
        } else {
            Err(info)
        }
    });
}

#[test]
fn client_unblock_ends_a_blocked_command_like_redis() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut admin = proxy.raw();
    for (reason, want) in [
        (None, "*-1\r\n"),
        (Some("TIMEOUT"), "*-1\r\n"),
        (
            Some("ERROR"),
            "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
        ),
    ] {
        let mut blocked = proxy.raw();
        let id = int(&call(&mut blocked, &["CLIENT", "ID"]));
        send(&mut blocked, &["BLPOP", "empty{t}", "0"]);
        let mut args = vec!["CLIENT".to_string(), "UNBLOCK".into(), id.to_string()];
        args.extend(reason.map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // As the suite does: wait for INFO's blocked_clients, then unblock at once.
        wait_blocked(&mut admin, 1);
        assert_eq!(show(&call(&mut admin, &args)), ":1\\r\\n");
        assert_eq!(
            show(&blocked.expect_reply("unblocked")),
            show(want.as_bytes())
        );
        // The client is served again.
        assert_eq!(call(&mut blocked, &["PING"]), b"+PONG\r\n");
        assert_eq!(show(&call(&mut admin, &args)), ":0\\r\\n");
    }
    // XREAD BLOCK too.
    let mut blocked = proxy.raw();
    let id = int(&call(&mut blocked, &["CLIENT", "ID"]));
    send(
        &mut blocked,
        &["XREAD", "BLOCK", "0", "STREAMS", "s{t}", "$"],
    );
    wait_blocked(&mut admin, 1);
    assert_eq!(
        call(&mut admin, &["CLIENT", "UNBLOCK", &id.to_string()]),
        b":1\r\n"
    );
    assert_eq!(show(&blocked.expect_reply("unblocked xread")), "*-1\\r\\n");
}

// ------------------------------------------------------------------- 3. COMMAND GETKEYS

#[test]
fn command_getkeys_matches_redis() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    for args in [
        vec!["COMMAND", "GETKEYS", "EVAL", "return 1", "0"],
        vec!["COMMAND", "GETKEYS", "EVAL", "return 1", "1", "a"],
        vec!["COMMAND", "GETKEYS", "EVAL", "return 1", "-1"],
        vec!["COMMAND", "GETKEYS", "EVAL", "return 1", "5", "a"],
        vec!["COMMAND", "GETKEYS", "FCALL", "f", "0"],
        vec!["COMMAND", "GETKEYS", "ZUNION", "0", "a"],
        vec!["COMMAND", "GETKEYS", "ZUNIONSTORE", "d", "0"],
        vec!["COMMAND", "GETKEYS", "PING", "x"],
        vec!["COMMAND", "GETKEYS", "PING", "x", "y", "z"],
        vec!["COMMAND", "GETKEYS", "CONFIG", "GET", "x"],
        vec!["COMMAND", "GETKEYS", "LCS", "a", "b"],
        vec!["COMMAND", "GETKEYS", "SET", "a"],
        vec!["COMMAND", "GETKEYS", "NOSUCH", "a"],
        vec!["COMMAND", "GETKEYS", "GET"],
    ] {
        same(&mut p, &mut d, &args);
    }
}

// ------------------------------------------------------------------- 4. transactions

#[test]
fn nested_multi_and_watch_inside_multi_answer_like_redis() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    for args in [
        vec!["MULTI"],
        vec!["MULTI"],
        vec!["WATCH", "x"],
        vec!["SET", "x", "1"],
        vec!["EXEC"],
    ] {
        same(&mut p, &mut d, &args);
    }
}

// ------------------------------------------------------------------- 5. XGROUP DESTROY

#[test]
fn xgroup_destroy_unblocks_xreadgroup_with_nogroup() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut admin = proxy.raw();
    assert_eq!(
        call(
            &mut admin,
            &["XGROUP", "CREATE", "st", "g", "$", "MKSTREAM"]
        ),
        b"+OK\r\n"
    );
    let mut blocked = proxy.raw();
    let id = int(&call(&mut blocked, &["CLIENT", "ID"]));
    send(
        &mut blocked,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "st",
            ">",
        ],
    );
    // Wait until the backend has it blocked (CLIENT UNBLOCK with a bad id answers 0 and
    // INFO blocked_clients of the backend counts it).
    let holder = holder(&servers, b"st");
    let mut direct = Raw::connect(servers[holder].port);
    poll_until("blocked on the backend", secs(20), ms(20), || {
        let info = String::from_utf8_lossy(&call(&mut direct, &["INFO", "clients"])).into_owned();
        if info.contains("blocked_clients:1\r\n") {
            Ok(())
        } else {
            Err(info)
        }
    });
    let _ = id;
    assert_eq!(
        call(&mut admin, &["XGROUP", "DESTROY", "st", "g"]),
        b":1\r\n"
    );
    let got = blocked.expect_reply("XREADGROUP after XGROUP DESTROY");
    assert!(got.starts_with(b"-NOGROUP "), "{}", show(&got));
    assert_eq!(call(&mut blocked, &["PING"]), b"+PONG\r\n");
}

// ------------------------------------------------------------------- 6. INFO sections

/// INFO's section selection as Redis 7.0 selects (the suite's info-command unit): Redis's
/// sections carry Redis's fields only; the proxy's own fields are in `# Proxy`, not in the
/// default, and in `all` / `everything`.
#[test]
fn info_selects_sections_like_redis() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    let info = |r: &mut Raw, args: &[&str]| -> String {
        let mut a = vec!["INFO"];
        a.extend_from_slice(args);
        text(&call(r, &a))
    };
    let heads = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# "))
            .map(String::from)
            .collect()
    };
    // The same sections as one redis-server, in its order, for each selection.
    for args in [
        &[][..],
        &["default"][..],
        &["cpu", "default"][..],
        &["cpu", "sentinel"][..],
        &["commandSTATS"][..],
        &["replication", "server"][..],
        &["nosuch"][..],
    ] {
        assert_eq!(
            heads(&info(&mut p, args)),
            heads(&info(&mut d, args)),
            "{args:?}"
        );
    }
    for arg in ["", "default", "all", "everything"] {
        let args: &[&str] = if arg.is_empty() { &[] } else { &[arg] };
        let t = info(&mut p, args);
        assert!(
            t.contains("redis_version:") && t.contains("used_cpu_user:"),
            "{arg}"
        );
        assert!(
            t.contains("used_memory:") && !t.contains("sentinel_tilt"),
            "{arg}"
        );
        assert_eq!(
            t.contains("rejected_calls"),
            arg == "all" || arg == "everything",
            "INFO {arg}"
        );
    }
    let all = info(&mut p, &["cpu", "all"]);
    assert!(all.contains("master_repl_offset:0\r\n"), "{all}");
    assert_eq!(all.matches("used_cpu_user_children").count(), 1);
    assert!(all.contains("# Proxy\r\nrustproxy_version:"), "{all}");
    let proxy_sec = info(&mut p, &["proxy"]);
    assert!(proxy_sec.contains("total_rejected_calls:"), "{proxy_sec}");
    assert!(!info(&mut p, &["stats"]).contains("total_rejected_calls"));
}

// ------------------------------------------------------------------- 7. CLIENT PAUSE

#[test]
fn client_pause_holds_commands_at_the_proxy_like_redis() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    for args in [
        vec!["CLIENT", "PAUSE", "abc"],
        vec!["CLIENT", "PAUSE", "-1"],
        vec!["CLIENT", "PAUSE", "10", "foo"],
        vec!["CLIENT", "PAUSE", "10", "ALL", "x"],
    ] {
        same(&mut p, &mut d, &args);
    }

    // WRITE: reads go on, writes wait (counted as blocked), syntax errors answer at once.
    assert_eq!(
        call(&mut p, &["CLIENT", "PAUSE", "60000", "WRITE"]),
        b"+OK\r\n"
    );
    let mut w = proxy.raw();
    send(&mut w, &["SET", "foo", "bar"]);
    wait_blocked(&mut p, 1);
    let mut r = proxy.raw();
    assert_eq!(call(&mut r, &["GET", "foo"]), b"$-1\r\n");
    assert!(call(&mut r, &["SET", "foo"]).starts_with(b"-ERR wrong number of arguments"));
    // A read-only transaction runs; one that writes waits.
    assert_eq!(call(&mut r, &["MULTI"]), b"+OK\r\n");
    assert_eq!(call(&mut r, &["GET", "foo"]), b"+QUEUED\r\n");
    assert_eq!(call(&mut r, &["EXEC"]), b"*1\r\n$-1\r\n");
    let mut t = proxy.raw();
    assert_eq!(call(&mut t, &["MULTI"]), b"+OK\r\n");
    assert_eq!(call(&mut t, &["INCR", "n"]), b"+QUEUED\r\n");
    send(&mut t, &["EXEC"]);
    wait_blocked(&mut p, 2);
    assert_eq!(call(&mut p, &["CLIENT", "UNPAUSE"]), b"+OK\r\n");
    assert_eq!(w.expect_reply("SET after UNPAUSE"), b"+OK\r\n");
    assert_eq!(t.expect_reply("EXEC after UNPAUSE"), b"*1\r\n:1\r\n");
    assert_eq!(call(&mut r, &["GET", "foo"]), b"$3\r\nbar\r\n");

    // ALL, ended by its timeout: every command waits, then runs in order.
    assert_eq!(call(&mut p, &["CLIENT", "PAUSE", "300", "ALL"]), b"+OK\r\n");
    send(&mut r, &["GET", "foo"]);
    send(&mut r, &["PING"]);
    assert_eq!(r.expect_reply("GET after the pause"), b"$3\r\nbar\r\n");
    assert_eq!(r.expect_reply("PING after the pause"), b"+PONG\r\n");
}

#[test]
fn client_tracking_redirect_is_refused_at_once() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut other = proxy.raw();
    let id = int(&call(&mut other, &["CLIENT", "ID"]));
    let mut p = proxy.raw();
    let got = call(
        &mut p,
        &["CLIENT", "TRACKING", "on", "REDIRECT", &id.to_string()],
    );
    assert!(
        got.starts_with(b"-ERR CLIENT TRACKING is not supported by rustproxy"),
        "{}",
        show(&got)
    );
    assert_eq!(call(&mut p, &["PING"]), b"+PONG\r\n");
}

// ------------------------------------------------------------------- 8. FUNCTION STATS

/// FUNCTION STATS in Redis's shape (one reply, not one per backend): the libraries are loaded
/// on every backend, so one backend's counts are what one Redis would say.
#[test]
fn function_stats_answers_in_redis_shape() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let lib = "#!lua name=lib1\nredis.register_function('f1', function() return 1 end)\nredis.register_function('f2', function() return 2 end)";
    assert_eq!(call(&mut p, &["FUNCTION", "LOAD", lib]), b"$4\r\nlib1\r\n");
    let mut d = Raw::connect(servers[2].port);
    same(&mut p, &mut d, &["FUNCTION", "STATS"]);
    assert_eq!(call(&mut p, &["FUNCTION", "FLUSH"]), b"+OK\r\n");
    same(&mut p, &mut d, &["FUNCTION", "STATS"]);
}

// ------------------------------------------------------------------- 9. introspection details

/// COMMAND LIST names subcommands as Redis does (`config|get`); CLIENT INFO counts the command
/// being run in the caller's qbuf; total_error_replies counts every error reply sent, the
/// backends' included (Redis's meaning).
#[test]
fn introspection_details_match_redis() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    let list = strings(&call(&mut p, &["COMMAND", "LIST"]));
    for name in ["client|list", "config|get", "get", "command|getkeys"] {
        assert!(list.iter().any(|n| n == name), "{name} in COMMAND LIST");
    }
    let sorted = |v: Vec<u8>| {
        let mut s = strings(&v);
        s.sort();
        s
    };
    let args = ["COMMAND", "LIST", "FILTERBY", "PATTERN", "config|*"];
    assert_eq!(sorted(call(&mut p, &args)), sorted(call(&mut d, &args)));

    let field = |line: &str, f: &str| -> String {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{f}=")))
            .unwrap_or_else(|| panic!("{f} in {line}"))
            .to_string()
    };
    for r in [&mut p, &mut d] {
        let line = text(&call(r, &["CLIENT", "INFO"]));
        assert_eq!(field(&line, "qbuf"), "26", "{line}");
        assert_eq!(field(&line, "flags"), "N", "{line}");
    }

    assert_eq!(call(&mut p, &["CONFIG", "RESETSTAT"]), b"+OK\r\n");
    assert_eq!(call(&mut p, &["SET", "s", "x"]), b"+OK\r\n");
    assert!(call(&mut p, &["LPUSH", "s", "x"]).starts_with(b"-WRONGTYPE"));
    let stats = text(&call(&mut p, &["INFO", "stats"]));
    assert!(stats.contains("total_error_replies:1\r\n"), "{stats}");
}

// ------------------------------------------------------------------- 10. CLIENT REPLY OFF

/// Subscription confirmations are pushes: Redis sends them even under CLIENT REPLY OFF (the
/// suite's "PubSub messages with CLIENT REPLY OFF"); byte for byte like one redis-server.
#[test]
fn subscribe_confirmations_ignore_client_reply_off() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    let mut pubp = proxy.raw();
    let mut pubd = Raw::connect(servers[0].port);
    for (r, publisher) in [(&mut p, &mut pubp), (&mut d, &mut pubd)] {
        let _ = call(r, &["HELLO", "3"]);
        send(r, &["CLIENT", "REPLY", "OFF"]);
        send(r, &["SUBSCRIBE", "channel"]);
        send(r, &["PSUBSCRIBE", "ch*"]);
        let confirms = r.expect_replies(2, "confirmations under REPLY OFF");
        assert_eq!(
            show(&confirms.concat()),
            show(b">3\r\n$9\r\nsubscribe\r\n$7\r\nchannel\r\n:1\r\n>3\r\n$10\r\npsubscribe\r\n$3\r\nch*\r\n:2\r\n")
        );
        assert_eq!(call(publisher, &["PUBLISH", "channel", "hello"]), b":2\r\n");
        let msgs = r.expect_replies(2, "messages under REPLY OFF");
        assert!(show(&msgs[0]).contains("message"), "{}", show(&msgs[0]));
        send(r, &["UNSUBSCRIBE", "channel"]);
        send(r, &["PUNSUBSCRIBE", "ch*"]);
        let confirms = r.expect_replies(2, "unsubscribe confirmations under REPLY OFF");
        assert_eq!(
            show(&confirms.concat()),
            show(b">3\r\n$11\r\nunsubscribe\r\n$7\r\nchannel\r\n:1\r\n>3\r\n$12\r\npunsubscribe\r\n$3\r\nch*\r\n:0\r\n")
        );
    }
}

// ------------------------------------------------------------------- 11. COMMAND consistency

/// COMMAND, COMMAND COUNT, COMMAND LIST and COMMAND INFO describe one command set: backend
/// 0's commands (as that redis-server describes them) plus the proxy's own.
#[test]
fn command_count_list_and_info_agree() {
    let servers = redises(1);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut p = proxy.raw();
    let mut d = Raw::connect(servers[0].port);
    let own = ["backend", "backendnum", "backends", "forward", "proxy"];
    let count = int(&call(&mut p, &["COMMAND", "COUNT"]));
    assert_eq!(
        count,
        int(&call(&mut d, &["COMMAND", "COUNT"])) + own.len() as i64
    );
    let all = call(&mut p, &["COMMAND"]);
    let rustproxy::resp::Reply::Array(entries) = parsed(&all) else {
        panic!("COMMAND: {}", brief(&all));
    };
    assert_eq!(entries.len() as i64, count);
    let list = strings(&call(&mut p, &["COMMAND", "LIST"]));
    let top: Vec<&String> = list.iter().filter(|n| !n.contains('|')).collect();
    assert_eq!(top.len() as i64, count);
    for name in own {
        assert!(list.iter().any(|n| n == name), "{name} in COMMAND LIST");
    }
    // INFO: the backend's entries as they are, the proxy's own in Redis's shape, in order.
    let got = call(
        &mut p,
        &["COMMAND", "INFO", "get", "backend", "nosuch", "set"],
    );
    let rustproxy::resp::Reply::Array(items) = parsed(&got) else {
        panic!("COMMAND INFO: {}", brief(&got));
    };
    assert_eq!(items.len(), 4);
    let want = call(&mut d, &["COMMAND", "INFO", "get", "nosuch", "set"]);
    let rustproxy::resp::Reply::Array(want) = parsed(&want) else {
        panic!("direct COMMAND INFO");
    };
    assert_eq!(format!("{:?}", items[0]), format!("{:?}", want[0]));
    assert_eq!(format!("{:?}", items[2]), format!("{:?}", want[1]));
    assert_eq!(format!("{:?}", items[3]), format!("{:?}", want[2]));
    let rustproxy::resp::Reply::Array(mine) = &items[1] else {
        panic!("COMMAND INFO backend: {:?}", items[1]);
    };
    assert_eq!(
        format!("{:?}", mine[0]),
        format!("{:?}", rustproxy::resp::Reply::Bulk(b"backend"))
    );
    assert_eq!(mine.len(), 10);
    // Only the proxy's own: answered without the backend's full list.
    let docs = call(&mut p, &["COMMAND", "DOCS", "forward"]);
    assert!(
        docs.starts_with(b"*2\r\n$7\r\nforward\r\n"),
        "{}",
        brief(&docs)
    );
    let info = call(&mut p, &["COMMAND", "INFO", "proxy"]);
    assert!(
        info.starts_with(b"*1\r\n*10\r\n$5\r\nproxy\r\n"),
        "{}",
        brief(&info)
    );
    // PATTERN matches the proxy's own too; the backend's syntax errors stay Redis's.
    let back = strings(&call(
        &mut p,
        &["COMMAND", "LIST", "FILTERBY", "PATTERN", "back*"],
    ));
    assert_eq!(back, ["backend", "backendnum", "backends"]);
    same(&mut p, &mut d, &["COMMAND", "LIST", "FILTERBY", "PATTERN"]);
}
