//! Security features end to end: client AUTH (requirepass, users and levels, HELLO AUTH,
//! auth_failures), backend credentials (redis_auth, backend_password, ACL users, restarts,
//! refused handshakes), admin restrictions and renames, TLS on both sides (and mutual TLS),
//! safe defaults, and (printed, not asserted) the throughput cost of client-side TLS.
//!
//! Real redis-server processes on free loopback ports, killed by PID; every wait is bounded.

mod common;
mod tls_support;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tls_support::{generate_certs, TestCerts, TlsRedis};

// ---------------------------------------------------------------------------
// helpers

fn p(path: &Path) -> String {
    path.to_str().expect("utf8 path").to_string()
}

/// A native config with one pool listening on 127.0.0.1:PORT, `servers` and `extra` keys.
fn conf(servers: &[String], extra: &str) -> impl Fn(u16) -> String {
    let servers: String = servers.iter().map(|s| format!("server {s}\n")).collect();
    let extra = extra.to_string();
    move |port| format!("pool p\nlisten 127.0.0.1:{port}\n{servers}{extra}\n")
}

fn start(servers: &[&Redis], extra: &str) -> Proxy {
    let list: Vec<String> = servers.iter().map(|r| r.addr()).collect();
    Proxy::start_conf("conf", conf(&list, extra), &[])
}

fn s(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn call(raw: &mut Raw, args: &[&str]) -> String {
    s(&raw.call_str(args))
}

/// The value of `key` in the proxy's INFO (queried by an authenticated raw connection).
fn info_field(raw: &mut Raw, key: &str) -> String {
    let text = call(raw, &["INFO", "proxy"]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in INFO:\n{text}"))
        .trim()
        .to_string()
}

/// redis-rs reports NOAUTH / WRONGPASS as ErrorKind::AuthenticationFailed (its own text, not
/// the server's); a server error reaching the caller otherwise carries the server's text.
fn is_auth_err(e: &redis::RedisError, server_text: &str) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed || e.to_string().contains(server_text)
}

/// A redis-server with `requirepass` (set after start-up: the harness checks the server's pid
/// with an unauthenticated INFO).
fn redis_with_pass(pass: &str) -> Redis {
    let r = Redis::start();
    let mut d = r.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(pass)
        .query(&mut d)
        .expect("CONFIG SET requirepass");
    r
}

fn client_url(url: &str) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(url)?;
    let conn = c.get_connection_with_timeout(Duration::from_secs(10))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(conn)
}

fn redis_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// redis-cli over TLS to 127.0.0.1:port with the test CA (and a client cert when asked).
fn tls_cli(certs: &TestCerts, port: u16, client_cert: bool, cmd: &[&str]) -> (bool, String) {
    let (ca, cert, key) = (
        p(&certs.ca_cert),
        p(&certs.client_cert),
        p(&certs.client_key),
    );
    let port = port.to_string();
    let mut args: Vec<&str> = vec!["--tls", "--cacert", &ca, "-h", "127.0.0.1", "-p", &port];
    if client_cert {
        args.extend(["--cert", &cert, "--key", &key]);
    }
    args.extend(cmd);
    redis_cli(&args)
}

fn python(args: &[&str]) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/security.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 (with the redis module)");
    (
        out.status.success(),
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Connect to a redis-server directly with a password (for checks behind the proxy).
fn direct(port: u16, auth: &str) -> redis::Connection {
    client_url(&format!("redis://{auth}@127.0.0.1:{port}/")).expect("direct connection")
}

// ---------------------------------------------------------------------------
// 1. AUTH flows

const USERS: &str = "requirepass pw\nuser ro ropw readonly\nuser rw rwpw readwrite\n\
                     user adm admpw admin\ndefault_level readwrite\nadmin_commands admin\n";

#[test]
fn auth_raw_flows_noauth_wrongpass_hello_and_failures_counted() {
    let r = Redis::start();
    let proxy = start(&[&r], USERS);

    let mut c = proxy.raw();
    // Before AUTH: only AUTH/HELLO/QUIT/PING run.
    for cmd in [
        vec!["GET", "k"],
        vec!["SET", "k", "v"],
        vec!["INFO"],
        vec!["MGET", "a", "b"],
    ] {
        assert_eq!(
            call(&mut c, &cmd),
            "-NOAUTH Authentication required.\r\n",
            "{cmd:?}"
        );
    }
    assert_eq!(call(&mut c, &["PING"]), "+PONG\r\n");
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    // Three failures: AUTH default, AUTH user, HELLO AUTH.
    assert_eq!(call(&mut c, &["AUTH", "nope"]), wrongpass);
    assert_eq!(call(&mut c, &["AUTH", "ro", "pw"]), wrongpass);
    assert_eq!(call(&mut c, &["HELLO", "3", "AUTH", "adm", "x"]), wrongpass);
    // Still unauthenticated after failures.
    assert_eq!(
        call(&mut c, &["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(call(&mut c, &["HELLO", "3"]).starts_with("-NOAUTH HELLO must be called"));
    // Unknown user: fourth failure.
    assert_eq!(call(&mut c, &["AUTH", "mallory", "pw"]), wrongpass);
    assert_eq!(call(&mut c, &["AUTH", "pw"]), "+OK\r\n");
    assert_eq!(call(&mut c, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(call(&mut c, &["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(info_field(&mut c, "auth_failures"), "4");

    // HELLO 3 AUTH user pass in one go: a RESP3 map, then commands work (RESP3 replies).
    let mut h = proxy.raw();
    let hello = call(&mut h, &["HELLO", "3", "AUTH", "adm", "admpw"]);
    assert!(hello.starts_with('%'), "HELLO reply: {hello:?}");
    assert!(hello.contains("proto"), "{hello:?}");
    assert_eq!(call(&mut h, &["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(call(&mut h, &["FLUSHALL"]), "+OK\r\n");
    assert_eq!(call(&mut h, &["GET", "k"]), "_\r\n");
    // Re-AUTH with a wrong password keeps the earlier login (as Redis does): fifth failure.
    assert_eq!(call(&mut h, &["AUTH", "adm", "bad"]), wrongpass);
    assert_eq!(call(&mut h, &["SET", "k", "again"]), "+OK\r\n");
    assert_eq!(info_field(&mut h, "auth_failures"), "5");

    // The failures are logged (rate-limited: at most one line a second).
    let t0 = Instant::now();
    let mut b = proxy.raw();
    for _ in 0..50 {
        assert_eq!(call(&mut b, &["AUTH", "brute-force"]), wrongpass);
    }
    let elapsed = t0.elapsed().as_secs();
    assert_eq!(info_field(&mut h, "auth_failures"), "55");
    let log = proxy.log();
    let lines = log.lines().filter(|l| l.contains("failed AUTH")).count();
    assert!(lines >= 1, "no failed AUTH log line:\n{log}");
    assert!(
        lines as u64 <= elapsed + 3,
        "{lines} failed-AUTH log lines for 55 failures (not rate-limited):\n{log}"
    );
    // The password itself is never logged.
    assert!(!log.contains("brute-force"), "password in the log:\n{log}");
}

#[test]
fn auth_without_password_configured() {
    let r = Redis::start();
    let proxy = start(&[&r], "");
    let mut c = proxy.raw();
    assert_eq!(
        call(&mut c, &["AUTH", "whatever"]),
        "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"
    );
    // No login needed: commands run.
    assert_eq!(call(&mut c, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(info_field(&mut c, "auth_failures"), "0");
}

#[test]
fn auth_redis_rs_urls_and_levels() {
    let r = Redis::start();
    let proxy = start(&[&r], USERS);
    let port = proxy.port;

    // No credentials in the URL: connecting works (nothing sent), commands get NOAUTH.
    let mut anon = connect(port);
    let e = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut anon)
        .unwrap_err();
    assert!(is_auth_err(&e, "Authentication required"), "{e:?}");

    // Password in the URL (AUTH pw): the default user, readwrite; admin_commands admin.
    let mut def = client_url(&format!("redis://:pw@127.0.0.1:{port}/")).expect("AUTH pw");
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut def).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut def).unwrap();
    assert_eq!(v, "v");
    let e = redis::cmd("FLUSHALL").query::<()>(&mut def).unwrap_err();
    assert!(
        e.to_string()
            .contains("no permissions to run the 'flushall' command"),
        "{e}"
    );

    // Wrong password in the URL: the connection fails with WRONGPASS.
    let e = client_url(&format!("redis://:bad@127.0.0.1:{port}/"))
        .err()
        .expect("bad pw");
    assert!(is_auth_err(&e, "WRONGPASS"), "{e:?}");
    let e = client_url(&format!("redis://ro:rwpw@127.0.0.1:{port}/"))
        .err()
        .expect("bad pw");
    assert!(is_auth_err(&e, "WRONGPASS"), "{e:?}");

    // readonly user: reads ok, writes NOPERM (exact text), admin commands NOPERM.
    let mut ro = client_url(&format!("redis://ro:ropw@127.0.0.1:{port}/")).expect("ro");
    let v: String = redis::cmd("GET").arg("k").query(&mut ro).unwrap();
    assert_eq!(v, "v");
    let vs: Vec<Option<String>> = redis::cmd("MGET")
        .arg("k")
        .arg("nope")
        .query(&mut ro)
        .unwrap();
    assert_eq!(vs, vec![Some("v".to_string()), None]);
    let mut raw = proxy.raw();
    assert_eq!(call(&mut raw, &["AUTH", "ro", "ropw"]), "+OK\r\n");
    assert_eq!(
        call(&mut raw, &["SET", "k", "x"]),
        "-NOPERM this user has no permissions to run the 'set' command\r\n"
    );
    assert_eq!(
        call(&mut raw, &["DEL", "k"]),
        "-NOPERM this user has no permissions to run the 'del' command\r\n"
    );
    assert!(call(&mut raw, &["KEYS", "*"]).starts_with("-NOPERM"));
    assert!(call(&mut raw, &["CONFIG", "SET", "maxmemory", "0"]).starts_with("-NOPERM"));
    for cmd in ["SET", "INCR", "LPUSH", "EVAL"] {
        let mut q = redis::cmd(cmd);
        match cmd {
            "SET" => q.arg("k").arg("x"),
            "INCR" => q.arg("n"),
            "LPUSH" => q.arg("l").arg("a"),
            _ => q.arg("return 1").arg(0),
        };
        let e = q.query::<redis::Value>(&mut ro).unwrap_err();
        let want = format!("no permissions to run the '{}' command", cmd.to_lowercase());
        assert!(e.to_string().contains(&want), "{cmd}: {e}");
    }
    let v: String = redis::cmd("GET").arg("k").query(&mut ro).unwrap();
    assert_eq!(v, "v", "a refused write changed the data");

    // readwrite user: writes ok; FLUSHALL/CONFIG SET/KEYS/FORWARD refused (admin_commands admin).
    let mut rw = client_url(&format!("redis://rw:rwpw@127.0.0.1:{port}/")).expect("rw");
    let _: () = redis::cmd("SET")
        .arg("k2")
        .arg("v2")
        .query(&mut rw)
        .unwrap();
    let n: i64 = redis::cmd("INCR").arg("n").query(&mut rw).unwrap();
    assert_eq!(n, 1);
    let mut raw = proxy.raw();
    assert_eq!(call(&mut raw, &["AUTH", "rw", "rwpw"]), "+OK\r\n");
    for (cmd, name) in [
        (vec!["FLUSHALL"], "flushall"),
        (vec!["FLUSHDB"], "flushdb"),
        (vec!["CONFIG", "SET", "maxmemory", "0"], "config|set"),
        (vec!["CONFIG", "GET", "maxmemory"], "config|get"),
        (vec!["KEYS", "*"], "keys"),
        (vec!["FORWARD", "0", "GET", "k"], "forward"),
    ] {
        assert_eq!(
            call(&mut raw, &cmd),
            format!("-NOPERM this user has no permissions to run the '{name}' command\r\n"),
            "{cmd:?}"
        );
    }
    assert_eq!(call(&mut raw, &["GET", "k2"]), "$2\r\nv2\r\n");

    // admin user: everything.
    let mut adm = client_url(&format!("redis://adm:admpw@127.0.0.1:{port}/")).expect("adm");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut adm).unwrap();
    assert!(keys.contains(&"k2".to_string()), "{keys:?}");
    let _: redis::Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut adm)
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut adm).unwrap();
    let v: Option<String> = redis::cmd("GET").arg("k2").query(&mut adm).unwrap();
    assert_eq!(v, None);
    let mut direct_conn = r.client();
    let n: i64 = redis::cmd("DBSIZE").query(&mut direct_conn).unwrap();
    assert_eq!(n, 0, "FLUSHALL by admin did not reach the backend");
}

#[test]
fn auth_redis_py_password_and_username() {
    let r = Redis::start();
    let proxy = start(&[&r], USERS);
    let (ok, out) = python(&["auth", &proxy.port.to_string()]);
    assert!(
        ok,
        "redis-py auth script failed:\n{out}\nproxy log:\n{}",
        proxy.log()
    );
}

// ---------------------------------------------------------------------------
// 2. Backend credentials

#[test]
fn backend_redis_auth_nutcracker_semantics() {
    let r = redis_with_pass("s3cret");
    let proxy = start(&[&r], "redis_auth s3cret\n");
    // Clients must AUTH with the same password.
    let mut c = proxy.raw();
    assert_eq!(
        call(&mut c, &["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    let e = client_url(&format!("redis://:wrong@127.0.0.1:{}/", proxy.port)).err();
    assert!(e.is_some(), "a wrong password was accepted");
    let mut ok = client_url(&format!("redis://:s3cret@127.0.0.1:{}/", proxy.port)).unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut ok).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut ok).unwrap();
    assert_eq!(v, "v");
    let mut d = direct(r.port, ":s3cret");
    let v: String = redis::cmd("GET").arg("k").query(&mut d).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn backend_password_separate_from_requirepass_and_restart() {
    let mut r = redis_with_pass("s3cret");
    let port = r.port;
    let proxy = start(
        &[&r],
        "requirepass clientpw\nbackend_password s3cret\ntimeout 2000\n",
    );
    // The backend password is not a client password.
    let e = client_url(&format!("redis://:s3cret@127.0.0.1:{}/", proxy.port)).err();
    assert!(
        e.is_some(),
        "the backend password was accepted from a client"
    );
    let mut c = client_url(&format!("redis://:clientpw@127.0.0.1:{}/", proxy.port)).unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v1").query(&mut c).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v1");

    // Restart the backend (same port, same password): the proxy re-authenticates.
    let old_pid = r.pid();
    r.kill();
    drop(r);
    // The port may linger briefly; retry the start (bounded).
    let r2 = poll_until(
        "redis-server to restart on the same port",
        secs(5),
        ms(100),
        || {
            std::panic::catch_unwind(|| Redis::start_on(port, &["--requirepass", "s3cret"]))
                .map_err(|_| "start failed")
        },
    );
    assert_ne!(r2.pid(), old_pid);
    let set = try_poll_until(secs(15), ms(50), || {
        redis::cmd("SET").arg("k").arg("v2").query::<()>(&mut c)
    });
    assert!(
        set.is_ok(),
        "no success after the backend restart: {}\n{}",
        set.unwrap_err(),
        proxy.log()
    );
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v2");
    let mut d = direct(port, ":s3cret");
    let v: String = redis::cmd("GET").arg("k").query(&mut d).unwrap();
    assert_eq!(v, "v2");
}

/// `ACL SETUSER` on a plain redis-server through a direct connection.
fn acl_user(r: &Redis, user: &str, pass: &str) {
    let mut d = r.client();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg("on")
        .arg(format!(">{pass}"))
        .arg("~*")
        .arg("+@all")
        .query(&mut d)
        .expect("ACL SETUSER");
}

#[test]
fn backend_acl_user() {
    let r = Redis::start();
    acl_user(&r, "app", "apppw");
    // Lock the default user so only `app` can run commands.
    let mut d = r.client();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("off")
        .query(&mut d)
        .unwrap();
    drop(d);
    let proxy = start(&[&r], "backend_username app\nbackend_password apppw\n");
    let mut c = proxy.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    let vs: Vec<Option<String>> = redis::cmd("MGET").arg("k").arg("x").query(&mut c).unwrap();
    assert_eq!(vs, vec![Some("v".into()), None]);
    let mut d = direct(r.port, "app:apppw");
    let v: String = redis::cmd("GET").arg("k").query(&mut d).unwrap();
    assert_eq!(v, "v");
    // The proxy's backend connections run as `app`.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut d).unwrap();
    let apps = list.lines().filter(|l| l.contains(" user=app ")).count();
    assert!(
        apps >= 2,
        "proxy connection not authenticated as app:\n{list}"
    );
}

#[test]
fn backend_server_line_credentials_override_pool() {
    let a = Redis::start();
    let b = redis_with_pass("bpw");
    acl_user(&a, "alice", "apw");
    let servers = vec![
        format!("{} user=alice password=apw", a.addr()),
        format!("{} password=bpw", b.addr()),
    ];
    let proxy = Proxy::start_conf(
        "conf",
        conf(
            &servers,
            // md5: twemproxy's fnv1a_64 (the default) spreads short similar keys poorly.
            "backend_password wrong\nhash md5\n",
        ),
        &[],
    );
    let mut c = proxy.client();
    for i in 0..40 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let mut da = direct(a.port, "alice:apw");
    let mut db = direct(b.port, ":bpw");
    let na: i64 = redis::cmd("DBSIZE").query(&mut da).unwrap();
    let nb: i64 = redis::cmd("DBSIZE").query(&mut db).unwrap();
    assert_eq!(na + nb, 40);
    assert!(na > 0 && nb > 0, "{na} {nb}");
}

#[test]
fn backend_wrong_password_refused_named_no_hot_loop() {
    let r = redis_with_pass("s3cret");
    let proxy = start(&[&r], "backend_password not-it\n");
    let mut c = proxy.raw();
    let reply = call(&mut c, &["GET", "k"]);
    assert!(reply.starts_with('-'), "{reply:?}");
    assert!(
        reply.contains(&r.addr()),
        "the error does not name the backend: {reply:?}"
    );
    // Keep asking for ~1 s (bounded by count): every request fails, none hangs.
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(1) && n < 5000 {
        let reply = call(&mut c, &["SET", "k", "v"]);
        assert!(reply.starts_with("-"), "{reply:?}");
        n += 1;
    }
    let log = proxy.log();
    assert!(
        log.contains("handshake refused"),
        "no handshake refusal in the log:\n{log}"
    );
    assert!(log.contains("WRONGPASS"), "{log}");
    assert!(
        !log.contains("not-it"),
        "backend password in the log:\n{log}"
    );
    let lines = log.lines().count();
    assert!(
        lines < 100,
        "{lines} log lines after ~1 s of refusals (hot loop?):\n{log}"
    );
    // The backend saw few connection attempts (backoff), not one per request.
    let mut d = direct(r.port, ":s3cret");
    let info: String = redis::cmd("INFO").arg("stats").query(&mut d).unwrap();
    let conns: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "wrong backend password: {n} requests, {conns} backend connections, {lines} log lines"
    );
    assert!(
        conns < 50,
        "{conns} connections to the backend for {n} requests (no backoff)"
    );

    // With preconnect and no client traffic at all, the refused backend is retried with
    // backoff too: ~1 s idle costs a handful of connections, not hundreds.
    drop(c);
    drop(proxy);
    let before = backend_connections(&mut d);
    let idle = start(&[&r], "backend_password not-it\npreconnect yes\n");
    idle.wait_log("handshake refused", secs(2));
    std::thread::sleep(Duration::from_secs(1));
    let idle_conns = backend_connections(&mut d).saturating_sub(before + 1);
    let lines = idle.log().lines().count();
    eprintln!("wrong backend password, preconnect, idle ~1 s: {idle_conns} backend connections, {lines} log lines");
    assert!(
        idle_conns < 30,
        "{idle_conns} reconnects in ~1 s idle (hot loop)"
    );
    assert!(
        lines < 100,
        "{lines} log lines in ~1 s idle:\n{}",
        idle.log()
    );
}

fn backend_connections(d: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(d).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------
// 3. Admin restrictions and renames

#[test]
fn admin_commands_disabled() {
    let r = Redis::start();
    let proxy = start(
        &[&r],
        "requirepass pw\nuser adm admpw admin\nadmin_commands disabled\n",
    );
    let mut c = proxy.raw();
    assert_eq!(call(&mut c, &["AUTH", "adm", "admpw"]), "+OK\r\n");
    assert_eq!(call(&mut c, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(
        call(&mut c, &["FLUSHALL"]),
        "-ERR FLUSHALL is disabled by the proxy's configuration (admin_commands disabled)\r\n"
    );
    for cmd in [
        vec!["KEYS", "*"],
        vec!["FLUSHDB"],
        vec!["CONFIG", "SET", "maxmemory", "0"],
    ] {
        let reply = call(&mut c, &cmd);
        assert!(
            reply.starts_with("-ERR ") && reply.contains("admin_commands disabled"),
            "{cmd:?}: {reply:?}"
        );
    }
    assert_eq!(call(&mut c, &["GET", "k"]), "$1\r\nv\r\n");
    let mut d = r.client();
    let n: i64 = redis::cmd("DBSIZE").query(&mut d).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn admin_commands_admin_only() {
    let r = Redis::start();
    let proxy = start(
        &[&r],
        "requirepass pw\nuser adm admpw admin\nadmin_commands admin\ndefault_level readwrite\n",
    );
    let mut c = proxy.raw();
    assert_eq!(call(&mut c, &["AUTH", "pw"]), "+OK\r\n");
    assert_eq!(call(&mut c, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(
        call(&mut c, &["FLUSHALL"]),
        "-NOPERM this user has no permissions to run the 'flushall' command\r\n"
    );
    let mut a = proxy.raw();
    assert_eq!(call(&mut a, &["AUTH", "adm", "admpw"]), "+OK\r\n");
    assert!(call(&mut a, &["KEYS", "*"]).starts_with("*1\r\n"));
    assert_eq!(call(&mut a, &["FLUSHALL"]), "+OK\r\n");
    assert_eq!(call(&mut c, &["GET", "k"]), "$-1\r\n");
}

#[test]
fn rename_command_disable_and_rename() {
    let r = Redis::start();
    let proxy = start(
        &[&r],
        "rename_command FLUSHALL \"\"\nrename_command CONFIG MYCONFIG\n",
    );
    let mut c = proxy.raw();
    assert_eq!(call(&mut c, &["SET", "k", "v"]), "+OK\r\n");
    let reply = call(&mut c, &["FLUSHALL"]);
    assert!(
        reply.starts_with("-ERR unknown command 'FLUSHALL'"),
        "{reply:?}"
    );
    let reply = call(&mut c, &["flushall"]);
    assert!(reply.starts_with("-ERR unknown command"), "{reply:?}");
    let reply = call(&mut c, &["CONFIG", "GET", "maxmemory"]);
    assert!(
        reply.starts_with("-ERR unknown command 'CONFIG'"),
        "{reply:?}"
    );
    let reply = call(&mut c, &["MYCONFIG", "GET", "maxmemory"]);
    assert!(reply.contains("$9\r\nmaxmemory\r\n"), "{reply:?}");
    let reply = call(
        &mut c,
        &["myconfig", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    assert_eq!(reply, "+OK\r\n");
    let mut d = r.client();
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut d)
        .unwrap();
    assert_eq!(v[1], "allkeys-lru");
    // The data survived the refused FLUSHALL.
    assert_eq!(call(&mut c, &["GET", "k"]), "$1\r\nv\r\n");
    // Renames apply inside MULTI too.
    assert_eq!(call(&mut c, &["MULTI"]), "+OK\r\n");
    let reply = call(&mut c, &["FLUSHALL"]);
    assert!(reply.starts_with("-ERR unknown command"), "{reply:?}");
    let _ = call(&mut c, &["DISCARD"]);
    assert_eq!(call(&mut c, &["GET", "k"]), "$1\r\nv\r\n");
}

// ---------------------------------------------------------------------------
// 4. TLS

fn tls_listener_keys(certs: &TestCerts) -> String {
    format!(
        "tls_cert_file {}\ntls_key_file {}\n",
        p(&certs.server_cert),
        p(&certs.server_key)
    )
}

fn backend_tls_keys(certs: &TestCerts) -> String {
    format!(
        "backend_tls yes\nbackend_tls_ca_file {}\n",
        p(&certs.ca_cert)
    )
}

/// Plain TCP to a TLS port: send PING, expect no +PONG (closed, an alert, or nothing).
fn plain_ping_fails(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(b"PING\r\n");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    for _ in 0..10 {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => break,
        }
    }
    let text = s_lossy(&buf);
    assert!(
        !text.contains("PONG"),
        "plain TCP got an answer from the TLS port: {text:?}"
    );
    text
}

fn s_lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tls_client_side() {
    let certs = generate_certs();
    let r = Redis::start();
    let proxy = start(&[&r], &tls_listener_keys(&certs));
    let (ok, out) = tls_cli(&certs, proxy.port, false, &["PING"]);
    assert!(ok && out.trim() == "PONG", "{out}\n{}", proxy.log());
    let (ok, out) = tls_cli(&certs, proxy.port, false, &["SET", "tk", "tv"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = tls_cli(&certs, proxy.port, false, &["GET", "tk"]);
    assert!(ok && out.trim() == "tv", "{out}");
    let mut d = r.client();
    let v: String = redis::cmd("GET").arg("tk").query(&mut d).unwrap();
    assert_eq!(v, "tv");

    let (ok, out) = python(&["tls", &proxy.port.to_string(), &p(&certs.ca_cert)]);
    assert!(
        ok,
        "redis-py over TLS failed:\n{out}\nproxy log:\n{}",
        proxy.log()
    );

    // Plain TCP to the TLS listener gets no Redis reply; the proxy keeps serving.
    plain_ping_fails(proxy.port);
    // A client that does not trust the certificate fails verification.
    let (_, out) = redis_cli(&[
        "--tls",
        "-h",
        "127.0.0.1",
        "-p",
        &proxy.port.to_string(),
        "PING",
    ]);
    assert!(
        !out.contains("PONG"),
        "an untrusted certificate was accepted: {out}"
    );
    let (ok, out) = tls_cli(&certs, proxy.port, false, &["PING"]);
    assert!(ok && out.trim() == "PONG", "{out}");
}

#[test]
fn tls_backend_side() {
    let certs = generate_certs();
    let t1 = TlsRedis::start(&certs, "no");
    let t2 = TlsRedis::start(&certs, "no");
    let servers = vec![
        format!("127.0.0.1:{}", t1.tls_port),
        format!("127.0.0.1:{}", t2.tls_port),
    ];
    let keys = format!("{}hash md5\n", backend_tls_keys(&certs));
    let proxy = Proxy::start_conf("conf", conf(&servers, &keys), &[]);
    let mut c = proxy.client();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("bk{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let mut m = redis::cmd("MGET");
    for i in 0..50 {
        m.arg(format!("bk{i}"));
    }
    m.arg("missing");
    let vs: Vec<Option<i64>> = m
        .query(&mut c)
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let want: Vec<Option<i64>> = (0..50).map(Some).chain([None]).collect();
    assert_eq!(vs, want);
    // Both TLS backends hold keys (redis-cli over TLS, directly).
    let mut total = 0;
    for port in [t1.tls_port, t2.tls_port] {
        let (ok, out) = tls_cli(&certs, port, false, &["DBSIZE"]);
        assert!(ok, "{out}");
        let n: i64 = out.trim().parse().unwrap_or_else(|_| panic!("{out}"));
        assert!(
            n > 0,
            "backend {port} holds no key ({out:?}); servers {servers:?}"
        );
        total += n;
    }
    assert_eq!(total, 50);

    // backend_tls_server_name: localhost is in the certificate; a wrong name is refused.
    let keys = format!(
        "{}backend_tls_server_name localhost\n",
        backend_tls_keys(&certs)
    );
    let ok_proxy = Proxy::start_conf("conf", conf(&servers[..1], &keys), &[]);
    let mut c = ok_proxy.client();
    let _: () = redis::cmd("SET")
        .arg("sn")
        .arg(7)
        .query(&mut c)
        .unwrap_or_else(|e| panic!("{e}\n{}", ok_proxy.log()));
    let v: i64 = redis::cmd("GET").arg("sn").query(&mut c).unwrap();
    assert_eq!(v, 7);
    let keys = format!(
        "{}backend_tls_server_name evil.example\n",
        backend_tls_keys(&certs)
    );
    let bad_proxy = Proxy::start_conf("conf", conf(&servers[..1], &keys), &[]);
    let mut c = bad_proxy.raw();
    let reply = call(&mut c, &["GET", "bk0"]);
    assert!(
        reply.starts_with('-'),
        "a certificate for the wrong name was accepted: {reply:?}"
    );
    // A proxy without backend_tls cannot talk to a TLS-only backend.
    let plain_proxy = Proxy::start_conf("conf", conf(&servers[..1], "timeout 1000\n"), &[]);
    let mut c = plain_proxy.raw();
    let reply = call(&mut c, &["GET", "bk0"]);
    assert!(reply.starts_with('-'), "{reply:?}");
}

#[test]
fn tls_both_sides_and_backend_client_cert() {
    let certs = generate_certs();
    // The backend requires a client certificate: the proxy presents one.
    let t = TlsRedis::start(&certs, "yes");
    let servers = vec![format!("127.0.0.1:{}", t.tls_port)];
    let keys = format!(
        "{}{}backend_tls_cert_file {}\nbackend_tls_key_file {}\n",
        tls_listener_keys(&certs),
        backend_tls_keys(&certs),
        p(&certs.client_cert),
        p(&certs.client_key)
    );
    let proxy = Proxy::start_conf("conf", conf(&servers, &keys), &[]);
    let (ok, out) = tls_cli(&certs, proxy.port, false, &["SET", "both", "yes"]);
    assert!(ok && out.trim() == "OK", "{out}\n{}", proxy.log());
    let (ok, out) = tls_cli(&certs, proxy.port, false, &["MGET", "both", "nope"]);
    assert!(ok && out.contains("yes"), "{out}");
    let (ok, out) = python(&["tls", &proxy.port.to_string(), &p(&certs.ca_cert)]);
    assert!(
        ok,
        "redis-py over TLS on both sides failed:\n{out}\nproxy log:\n{}",
        proxy.log()
    );
    let (ok, out) = tls_cli(&certs, t.tls_port, true, &["GET", "both"]);
    assert!(ok && out.trim() == "yes", "{out}");

    // Without the client certificate, that backend refuses the proxy.
    let keys = format!("{}{}", tls_listener_keys(&certs), backend_tls_keys(&certs));
    let nocert = Proxy::start_conf("conf", conf(&servers, &keys), &[]);
    let (_, out) = tls_cli(&certs, nocert.port, false, &["GET", "both"]);
    assert!(!out.contains("yes"), "{out}");
}

#[test]
fn tls_mutual_client_certificates() {
    let certs = generate_certs();
    let r = Redis::start();
    let keys = format!(
        "{}tls_client_ca_file {}\n",
        tls_listener_keys(&certs),
        p(&certs.ca_cert)
    );
    let proxy = start(&[&r], &keys);
    // Without a client certificate: refused.
    let (_, out) = tls_cli(&certs, proxy.port, false, &["PING"]);
    assert!(
        !out.contains("PONG"),
        "a client without a certificate was served: {out}"
    );
    let (ok, out) = python(&["tls", &proxy.port.to_string(), &p(&certs.ca_cert)]);
    assert!(
        !ok,
        "redis-py without a client certificate was served:\n{out}"
    );
    // With one: served.
    let (ok, out) = tls_cli(&certs, proxy.port, true, &["PING"]);
    assert!(ok && out.trim() == "PONG", "{out}\n{}", proxy.log());
    let (ok, out) = tls_cli(&certs, proxy.port, true, &["SET", "m", "1"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = python(&[
        "mtls",
        &proxy.port.to_string(),
        &p(&certs.ca_cert),
        &p(&certs.client_cert),
        &p(&certs.client_key),
    ]);
    assert!(
        ok,
        "redis-py with a client certificate failed:\n{out}\n{}",
        proxy.log()
    );
    // A certificate from another CA is refused.
    let other = generate_certs();
    let (_, out) = redis_cli(&[
        "--tls",
        "--cacert",
        &p(&certs.ca_cert),
        "--cert",
        &p(&other.client_cert),
        "--key",
        &p(&other.client_key),
        "-h",
        "127.0.0.1",
        "-p",
        &proxy.port.to_string(),
        "PING",
    ]);
    assert!(
        !out.contains("PONG"),
        "a certificate from another CA was accepted: {out}"
    );
    plain_ping_fails(proxy.port);
}

// ---------------------------------------------------------------------------
// 5. Safe defaults

#[test]
fn example_config_listens_on_loopback() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.conf.example");
    let cfg = rustproxy::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.pools.is_empty());
    for pool in &cfg.pools {
        match &pool.listen {
            rustproxy::config::Listen::Tcp(a) => {
                assert!(a.ip().is_loopback(), "pool {} listens on {a}", pool.name)
            }
            rustproxy::config::Listen::Unix { .. } => {}
        }
        assert!(!pool.backend_tls_insecure);
        assert_eq!(pool.admin_commands, rustproxy::auth::AdminPolicy::All);
    }
}

#[test]
fn non_loopback_listen_without_password_warns() {
    let r = Redis::start();
    let dir = tmp_dir("warn");
    let log = dir.join("proxy.log");
    let port = free_port();
    let args: Vec<String> = vec![
        "-l".into(),
        format!("0.0.0.0:{port}"),
        "-b".into(),
        r.addr(),
        "-o".into(),
        p(&log),
    ];
    let proxy = Proxy::spawn(port, &args);
    let text = wait_file_text(&log, "without a password", secs(4));
    assert!(
        text.contains("listens on 0.0.0.0") && text.contains("without a password"),
        "no warning in the log:\n{text}"
    );
    drop(proxy);

    // With requirepass (or on loopback): no warning.
    let port = free_port();
    let log2 = dir.join("proxy2.log");
    let cfg = dir.join("p.conf");
    std::fs::write(
        &cfg,
        format!(
            "pool p\nlisten 0.0.0.0:{port}\nrequirepass x\nserver {}\n",
            r.addr()
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(port, &["-c".into(), p(&cfg), "-o".into(), p(&log2)]);
    let mut c = proxy.raw();
    assert_eq!(call(&mut c, &["AUTH", "x"]), "+OK\r\n");
    let text = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(!text.contains("without a password"), "{text}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// 6. Throughput cost of client-side TLS (printed, not asserted)

fn bench(port: u16, tls: Option<&TestCerts>) -> String {
    let port = port.to_string();
    let mut args: Vec<String> = vec![];
    if let Some(c) = tls {
        args.extend(["--tls".into(), "--cacert".into(), p(&c.ca_cert)]);
    }
    args.extend(
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "get,set",
            "-n",
            "20000",
            "-P",
            "16",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let out = Command::new("redis-benchmark")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // -q prints progress with '\r'; keep the final lines.
    text.split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn tls_throughput_cost() {
    let certs = generate_certs();
    let r = Redis::start();
    let tls_proxy = start(&[&r], &tls_listener_keys(&certs));
    let plain_proxy = start(&[&r], "");
    let plain = bench(plain_proxy.port, None);
    let tls = bench(tls_proxy.port, Some(&certs));
    eprintln!("redis-benchmark -t get,set -n 20000 -P 16 through rustproxy:");
    eprintln!("  plain: {plain}");
    eprintln!("  TLS:   {tls}");
    assert!(
        !plain.is_empty(),
        "redis-benchmark produced nothing (plain)"
    );
    assert!(
        !tls.is_empty(),
        "redis-benchmark produced nothing (TLS)\n{}",
        tls_proxy.log()
    );
}
