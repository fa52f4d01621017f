//! End-to-end tests of the proxy's core behaviour: pipelining and ordering, placement parity
//! with the real nutcracker, the proxy's own commands, protocol errors, RESP3, and real clients
//! (redis-py, redis-benchmark). Every process is a real one on a free loopback port, owned by a
//! guard that kills it by PID; every wait is bounded; no test asserts a duration.

mod common;

use std::net::Shutdown;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    bulk, enc, free_port, holder, int, ms, pipeline, poll_until, redises, refs, secs, show,
    tmp_dir, wait_port, Proxy, Raw, Redis,
};

// ---------------------------------------------------------------------------
// Helpers (local to this file)
// ---------------------------------------------------------------------------

/// BACKENDNUM of every key, asked through the proxy in one pipeline.
fn backendnums(proxy: &Proxy, keys: &[Vec<u8>]) -> Vec<usize> {
    let cmds: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .map(|k| vec![b"BACKENDNUM".to_vec(), k.clone()])
        .collect();
    pipeline(proxy.port, &cmds)
        .iter()
        .map(|r| int(r) as usize)
        .collect()
}

/// Which server holds each key (EXISTS pipelined on every server); panics unless exactly one.
fn holders(servers: &[Redis], keys: &[Vec<u8>]) -> Vec<usize> {
    let mut found: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
    for (s, server) in servers.iter().enumerate() {
        let cmds: Vec<Vec<Vec<u8>>> = keys
            .iter()
            .map(|k| vec![b"EXISTS".to_vec(), k.clone()])
            .collect();
        for (i, r) in pipeline(server.port, &cmds).iter().enumerate() {
            if int(r) == 1 {
                found[i].push(s);
            }
        }
    }
    found
        .iter()
        .enumerate()
        .map(|(i, f)| {
            assert_eq!(f.len(), 1, "key {} found on {:?}", show(&keys[i]), f);
            f[0]
        })
        .collect()
}

fn backendnum(c: &mut redis::Connection, key: &[u8]) -> usize {
    redis::cmd("BACKENDNUM")
        .arg(key)
        .query::<i64>(c)
        .expect("BACKENDNUM") as usize
}

/// First key `mixed_key(prefix, i)` whose BACKENDNUM satisfies `want`.
fn key_where(c: &mut redis::Connection, prefix: &str, want: impl Fn(usize) -> bool) -> String {
    for i in 0..10_000 {
        let k = mixed_key(prefix, i);
        if want(backendnum(c, k.as_bytes())) {
            return k;
        }
    }
    panic!("no key with prefix {prefix} satisfies the condition");
}

/// A well-mixed key for index `i`. (Sequential keys such as `key:0..999` cluster badly under
/// twemproxy's fnv1a_64, which keeps only the low 32 bits: keys differing in their last digit
/// land within a few thousand ring positions of each other. That is nutcracker's placement too,
/// so tests that need keys on every backend use these instead.)
fn mixed_key(prefix: &str, i: u64) -> String {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{z:016x}:{prefix}:{i}")
}

/// The real twemproxy, killed by PID on drop.
struct Nutcracker {
    child: Child,
    dir: PathBuf,
}

impl Nutcracker {
    fn start(conf: &str, port: u16) -> Nutcracker {
        let dir = tmp_dir("nutcracker");
        let conf_path = dir.join("nutcracker.yml");
        std::fs::write(&conf_path, conf).expect("write nutcracker conf");
        let stats = free_port();
        let mut child = Command::new("nutcracker")
            .arg("-c")
            .arg(&conf_path)
            .arg("-s")
            .arg(stats.to_string())
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-o")
            .arg(dir.join("nutcracker.log"))
            .arg("-p")
            .arg(dir.join("nutcracker.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nutcracker (apt-get install nutcracker)");
        wait_port(port, &mut child, "nutcracker");
        Nutcracker { child, dir }
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// 1. Pipelining: 10,000 commands over 4 backends, in order and correct
// ---------------------------------------------------------------------------

#[test]
fn pipeline_10000_commands_in_order() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut bytes = Vec::new();
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for i in 0..2500 {
        let k = mixed_key("pipe", i as u64);
        let v = format!("value-{i}-{}", "x".repeat(i % 37));
        let c = format!("pipe:ctr:{}", i % 97);
        let m = format!("pipe:missing:{i}");
        bytes.extend(enc(&[b"SET", k.as_bytes(), v.as_bytes()]));
        expected.push(b"+OK\r\n".to_vec());
        bytes.extend(enc(&[b"GET", k.as_bytes()]));
        expected.push(bulk(v.as_bytes()));
        bytes.extend(enc(&[b"INCR", c.as_bytes()]));
        expected.push(format!(":{}\r\n", i / 97 + 1).into_bytes());
        bytes.extend(enc(&[b"GET", m.as_bytes()]));
        expected.push(b"$-1\r\n".to_vec());
    }
    assert_eq!(expected.len(), 10_000);
    let mut raw = proxy.raw();
    let got = raw.exchange(bytes, expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "reply {i}: got {} expected {}", show(g), show(e));
    }
    // The same through redis-rs's pipeline.
    let mut c = proxy.client();
    let mut p = redis::pipe();
    for i in 0..2500 {
        p.cmd("GET").arg(mixed_key("pipe", i));
    }
    let vals: Vec<Option<String>> = p.query(&mut c).expect("pipeline");
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(
            v.as_deref(),
            Some(format!("value-{i}-{}", "x".repeat(i % 37)).as_str())
        );
    }
    // Every backend took part.
    for s in &servers {
        let n: i64 = redis::cmd("DBSIZE").query(&mut s.client()).unwrap();
        assert!(n > 0, "backend {} got no keys", s.addr());
    }
}

// ---------------------------------------------------------------------------
// 2. A slow backend does not reorder replies
// ---------------------------------------------------------------------------

#[test]
fn slow_backend_keeps_request_order() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = proxy.client();
    let a = key_where(&mut c, "slow:a:", |n| n == 0);
    let b = key_where(&mut c, "slow:b:", |n| n == 1);
    let _: () = redis::cmd("SET")
        .arg(&a)
        .arg("value-a")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&b)
        .arg("value-b")
        .query(&mut c)
        .unwrap();

    let mut raw = proxy.raw();
    let mut bytes = enc(&[b"FORWARD", b"0", b"DEBUG", b"SLEEP", b"0.3"]);
    bytes.extend(enc(&[b"GET", a.as_bytes()]));
    bytes.extend(enc(&[b"GET", b.as_bytes()]));
    bytes.extend(enc(&[b"PING"]));
    let got = raw.exchange(bytes, 4);
    assert_eq!(show(&got[0]), "+OK\\r\\n");
    assert_eq!(got[1], bulk(b"value-a"));
    assert_eq!(got[2], bulk(b"value-b"));
    assert_eq!(got[3], b"+PONG\r\n");

    // Same with the slow command on another connection, and the fast backend first.
    let mut other = proxy.raw();
    other.cmd(&[b"FORWARD", b"0", b"DEBUG", b"SLEEP", b"0.3"]);
    let mut bytes = enc(&[b"GET", b.as_bytes()]);
    bytes.extend(enc(&[b"GET", a.as_bytes()]));
    bytes.extend(enc(&[b"GET", b.as_bytes()]));
    let got = raw.exchange(bytes, 3);
    assert_eq!(got[0], bulk(b"value-b"));
    assert_eq!(got[1], bulk(b"value-a"));
    assert_eq!(got[2], bulk(b"value-b"));
    assert_eq!(other.reply(), b"+OK\r\n");
}

// ---------------------------------------------------------------------------
// 3. Placement equals nutcracker's, through both proxies
// ---------------------------------------------------------------------------

fn parity_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..2600 {
        keys.push(format!("key:{i}").into_bytes());
    }
    for i in 0..1000u32 {
        // Binary keys with bytes >= 0x80 (and a few control bytes).
        let mut k = vec![0x80 | (i % 128) as u8, 0xff, (i % 251) as u8 | 0x01];
        k.extend_from_slice(i.to_string().as_bytes());
        k.extend_from_slice(&[0xc3, 0xa9, 0x00, 0x7f]);
        keys.push(k);
    }
    for i in 0..1000 {
        keys.push(format!("user:{{{}}}:field{i}", i % 50).into_bytes());
    }
    for i in 0..150 {
        keys.push(format!("{{}}empty-tag{i}").into_bytes());
        keys.push(format!("open{{tag{i}").into_bytes());
        keys.push(format!("x}}y{{z{i}}}w").into_bytes());
        keys.push(format!("{{a{i}}}{{b}}").into_bytes());
    }
    keys
}

fn value_of(i: usize, k: &[u8]) -> Vec<u8> {
    let mut v = format!("v{i}:").into_bytes();
    v.extend_from_slice(k);
    v
}

/// `pool_body(listen)` is the YAML of the pool `p` without its name line.
fn check_parity(nservers: usize, pool_body: impl Fn(&str, &[Redis]) -> String) {
    let servers = redises(nservers);
    let nc_port = free_port();
    let nc_conf = format!(
        "p:\n{}",
        pool_body(&format!("127.0.0.1:{nc_port}"), &servers)
    );
    let _nc = Nutcracker::start(&nc_conf, nc_port);
    let proxy = Proxy::start_conf(
        "yml",
        |port| format!("p:\n{}", pool_body(&format!("127.0.0.1:{port}"), &servers)),
        &[],
    );

    let keys = parity_keys();
    assert!(keys.len() >= 5000);
    // SET everything through nutcracker.
    let cmds: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| vec![b"SET".to_vec(), k.clone(), value_of(i, k)])
        .collect();
    for (i, r) in pipeline(nc_port, &cmds).iter().enumerate() {
        assert_eq!(r, b"+OK\r\n", "nutcracker SET of {}", show(&keys[i]));
    }
    // GET everything through rustproxy.
    let cmds: Vec<Vec<Vec<u8>>> = keys
        .iter()
        .map(|k| vec![b"GET".to_vec(), k.clone()])
        .collect();
    let got = pipeline(proxy.port, &cmds);
    let mut wrong = Vec::new();
    for (i, r) in got.iter().enumerate() {
        if *r != bulk(&value_of(i, &keys[i])) {
            wrong.push(show(&keys[i]));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} keys not found through rustproxy, e.g. {:?}",
        wrong.len(),
        keys.len(),
        &wrong[..wrong.len().min(10)]
    );
    // BACKENDNUM equals where nutcracker put the key.
    let nums = backendnums(&proxy, &keys);
    let real = holders(&servers, &keys);
    let mism: Vec<String> = (0..keys.len())
        .filter(|&i| nums[i] != real[i])
        .map(|i| {
            format!(
                "{} rustproxy {} nutcracker {}",
                show(&keys[i]),
                nums[i],
                real[i]
            )
        })
        .collect();
    assert!(
        mism.is_empty(),
        "{} BACKENDNUM mismatches, e.g. {:?}",
        mism.len(),
        &mism[..mism.len().min(10)]
    );
    // Spot check with the shared harness helper.
    for k in keys.iter().step_by(500) {
        assert_eq!(holder(&servers, k), backendnum(&mut proxy.client(), k));
    }
}

fn yaml_servers(servers: &[Redis], spec: impl Fn(usize, &Redis) -> String) -> String {
    servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("   - {}\n", spec(i, s)))
        .collect()
}

#[test]
fn placement_parity_fnv1a_64_ketama_default() {
    check_parity(4, |listen, servers| {
        format!(
            "  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n{}",
            yaml_servers(servers, |_, s| format!("{}:1", s.addr()))
        )
    });
}

#[test]
fn placement_parity_murmur_modula_weights_tag() {
    check_parity(4, |listen, servers| {
        format!(
            "  listen: {listen}\n  hash: murmur\n  distribution: modula\n  hash_tag: \"{{}}\"\n  redis: true\n  servers:\n{}",
            yaml_servers(servers, |i, s| format!("{}:{}", s.addr(), [1, 2, 3, 1][i]))
        )
    });
}

#[test]
fn placement_parity_md5_ketama_named_weights_tag() {
    check_parity(4, |listen, servers| {
        format!(
            "  listen: {listen}\n  hash: md5\n  distribution: ketama\n  hash_tag: \"{{}}\"\n  auto_eject_hosts: false\n  redis: true\n  servers:\n{}",
            yaml_servers(servers, |i, s| format!(
                "{}:{} server{}",
                s.addr(),
                [2, 1, 1, 3][i],
                i + 1
            ))
        )
    });
}

#[test]
fn placement_parity_hsieh_ketama_colon_tag() {
    check_parity(3, |listen, servers| {
        format!(
            "  listen: {listen}\n  hash: hsieh\n  distribution: ketama\n  hash_tag: \"::\"\n  redis: true\n  servers:\n{}",
            yaml_servers(servers, |i, s| format!("{}:1 node-{}", s.addr(), i))
        )
    });
}

// ---------------------------------------------------------------------------
// 4. BACKEND / BACKENDNUM / BACKENDS
// ---------------------------------------------------------------------------

#[test]
fn backend_commands_agree_with_placement() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let keys: Vec<Vec<u8>> = (0..500).map(|i| format!("bk:{i}").into_bytes()).collect();
    let mut c = proxy.client();
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("1").query(&mut c).unwrap();
    }
    let nums = backendnums(&proxy, &keys);
    let real = holders(&servers, &keys);
    assert_eq!(nums, real);
    // BACKEND names the same server.
    let names: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    for (i, k) in keys.iter().enumerate().step_by(25) {
        let name: String = redis::cmd("BACKEND").arg(k).query(&mut c).unwrap();
        assert_eq!(name, names[real[i]]);
        assert_eq!(holder(&servers, k), real[i]);
    }
    // BACKENDS: the backend names in config order (unnamed: host:port), so that
    // BACKEND key == BACKENDS[BACKENDNUM key].
    let mut raw = proxy.raw();
    let mut expect = format!("*{}\r\n", servers.len()).into_bytes();
    for s in &servers {
        expect.extend(bulk(s.addr().as_bytes()));
    }
    assert_eq!(show(&raw.call(&[b"BACKENDS"])), show(&expect));
    // Several keys: an array, in argument order.
    let mut expect = b"*3\r\n".to_vec();
    for i in [0, 1, 2] {
        expect.extend(bulk(names[real[i]].as_bytes()));
    }
    assert_eq!(
        show(&raw.call(&[b"BACKEND", &keys[0], &keys[1], &keys[2]])),
        show(&expect)
    );
    let expect = format!(":{}\r\n:{}\r\n", real[3], real[4]);
    let got = raw.call(&[b"BACKENDNUM", &keys[3], &keys[4]]);
    assert_eq!(show(&got), show(format!("*2\r\n{expect}").as_bytes()));
    // One key: not an array.
    assert_eq!(
        raw.call(&[b"BACKENDNUM", &keys[5]]),
        format!(":{}\r\n", real[5]).into_bytes()
    );
}

#[test]
fn backends_with_named_servers_in_config_order() {
    let servers = redises(3);
    let proxy = Proxy::start_conf(
        "yml",
        |port| {
            format!(
                "pool:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n{}",
                yaml_servers(&servers, |i, s| format!(
                    "{}:1 {}",
                    s.addr(),
                    ["zeta", "alpha", "mid"][i]
                ))
            )
        },
        &[],
    );
    let mut raw = proxy.raw();
    let mut expect = b"*3\r\n".to_vec();
    for (i, s) in servers.iter().enumerate() {
        let _ = s;
        expect.extend(bulk(["zeta", "alpha", "mid"][i].as_bytes()));
    }
    assert_eq!(show(&raw.call(&[b"BACKENDS"])), show(&expect));
    // The addresses are in PROXY BACKENDS.
    let detail = show(&raw.call(&[b"PROXY", b"BACKENDS"]));
    for (i, s) in servers.iter().enumerate() {
        assert!(
            detail.contains(&format!("{i} {} {}", ["zeta", "alpha", "mid"][i], s.addr())),
            "{detail}"
        );
    }
    // FORWARD by name reaches that server.
    assert_eq!(
        raw.call(&[b"FORWARD", b"alpha", b"SET", b"only-on-alpha", b"1"]),
        b"+OK\r\n"
    );
    let n: i64 = redis::cmd("EXISTS")
        .arg("only-on-alpha")
        .query(&mut servers[1].client())
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(raw.call(&[b"FORWARD", b"mid", b"PING"]), b"+PONG\r\n");
    let key = b"some-key";
    let num = int(&raw.call(&[b"BACKENDNUM", key]));
    let name = raw.call(&[b"BACKEND", key]);
    assert_eq!(
        name,
        bulk(["zeta", "alpha", "mid"][num as usize].as_bytes())
    );
}

// ---------------------------------------------------------------------------
// 5. The hash=KEY hint
// ---------------------------------------------------------------------------

#[test]
fn hash_hint_routes_by_hint_key() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &["--hash-override", "yes"]);
    let mut c = proxy.client();
    let a_num = backendnum(&mut c, b"a");
    let x = key_where(&mut c, "x", |n| n != a_num);
    let x_num = backendnum(&mut c, x.as_bytes());
    let hint = format!("hash={x}");

    let mut raw = proxy.raw();
    assert_eq!(raw.call(&[b"SET", b"a", b"1", hint.as_bytes()]), b"+OK\r\n");
    assert_eq!(holder(&servers, b"a"), x_num, "key a not on hint's backend");
    for s in &servers {
        let n: i64 = redis::cmd("EXISTS")
            .arg(&hint)
            .query(&mut s.client())
            .unwrap();
        assert_eq!(n, 0, "the hint was stored as a key");
        let v: Option<String> = redis::cmd("GET").arg("a").query(&mut s.client()).unwrap();
        if v.is_some() {
            assert_eq!(v.as_deref(), Some("1"));
        }
    }
    assert_eq!(raw.call(&[b"GET", b"a", hint.as_bytes()]), bulk(b"1"));
    // Without the hint the key is looked up on its own backend, where it is not.
    assert_eq!(raw.call(&[b"GET", b"a"]), b"$-1\r\n");

    // SET k hash=x: hash=x is the value (SET needs it).
    assert_eq!(raw.call(&[b"SET", b"k", hint.as_bytes()]), b"+OK\r\n");
    let k_num = backendnum(&mut c, b"k");
    assert_eq!(holder(&servers, b"k"), k_num);
    assert_eq!(raw.call(&[b"GET", b"k"]), bulk(hint.as_bytes()));
    // An inline hint works too.
    raw.send(format!("GET a {hint}\r\n").as_bytes());
    assert_eq!(raw.reply(), bulk(b"1"));
}

// ---------------------------------------------------------------------------
// 6. Inline commands
// ---------------------------------------------------------------------------

#[test]
fn inline_commands_mixed_with_multibulk() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut raw = proxy.raw();
    let mut bytes = b"PING\r\nSET foo bar\r\nGET foo\r\n".to_vec();
    bytes.extend(enc(&[b"GET", b"foo"]));
    bytes.extend_from_slice(b"SET \"quoted key\" \"a b\\x41\\n\"\r\n");
    bytes.extend(enc(&[b"GET", b"quoted key"]));
    bytes.extend_from_slice(b"GET 'quoted key'\r\n");
    bytes.extend_from_slice(b"ECHO \"\"\r\n");
    bytes.extend_from_slice(b"  PING   hello  \n");
    bytes.extend_from_slice(b"\r\n"); // empty line: ignored
    bytes.extend(enc(&[b"PING"]));
    let got = raw.exchange(bytes, 10);
    let expect: Vec<Vec<u8>> = vec![
        b"+PONG\r\n".to_vec(),
        b"+OK\r\n".to_vec(),
        bulk(b"bar"),
        bulk(b"bar"),
        b"+OK\r\n".to_vec(),
        bulk(b"a bA\n"),
        bulk(b"a bA\n"),
        bulk(b""),
        bulk(b"hello"),
        b"+PONG\r\n".to_vec(),
    ];
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert_eq!(show(g), show(e), "reply {i}");
    }
    // Unbalanced quotes: a protocol error that closes the connection.
    raw.send(b"GET \"foo\r\n");
    assert_eq!(
        show(&raw.reply()),
        show(b"-ERR Protocol error: unbalanced quotes in request\r\n")
    );
    assert!(raw.closed());
}

// ---------------------------------------------------------------------------
// 7. A malformed request closes only its own client
// ---------------------------------------------------------------------------

#[test]
fn protocol_error_closes_only_that_client() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut b = proxy.client();
    let _: () = redis::cmd("SET")
        .arg("pe")
        .arg("val")
        .query(&mut b)
        .unwrap();

    let mut a = proxy.raw();
    a.send(b"*1\r\n$-5\r\n");
    assert_eq!(
        show(&a.reply()),
        show(b"-ERR Protocol error: invalid bulk length\r\n")
    );
    assert!(a.closed(), "client A should be closed");

    let v: String = redis::cmd("GET").arg("pe").query(&mut b).unwrap();
    assert_eq!(v, "val");

    let mut a2 = proxy.raw();
    a2.send(b"*abc\r\n");
    assert_eq!(
        show(&a2.reply()),
        show(b"-ERR Protocol error: invalid multibulk length\r\n")
    );
    assert!(a2.closed());

    // A valid pipelined GET before the garbage gets its reply first.
    let mut a3 = proxy.raw();
    let mut bytes = enc(&[b"GET", b"pe"]);
    bytes.extend(enc(&[b"PING"]));
    bytes.extend_from_slice(b"*1\r\n$-5\r\n");
    bytes.extend(enc(&[b"PING"])); // after the error: never answered
    a3.send(&bytes);
    assert_eq!(a3.reply(), bulk(b"val"));
    assert_eq!(a3.reply(), b"+PONG\r\n");
    assert_eq!(
        show(&a3.reply()),
        show(b"-ERR Protocol error: invalid bulk length\r\n")
    );
    assert!(a3.closed());

    // Other garbage: a non-'$' element.
    let mut a4 = proxy.raw();
    a4.send(b"*1\r\n:5\r\n");
    assert_eq!(
        show(&a4.reply()),
        show(b"-ERR Protocol error: expected '$', got ':'\r\n")
    );
    assert!(a4.closed());

    let v: String = redis::cmd("GET").arg("pe").query(&mut b).unwrap();
    assert_eq!(v, "val");
    let mut fresh = proxy.raw();
    assert_eq!(fresh.call(&[b"GET", b"pe"]), bulk(b"val"));
}

// ---------------------------------------------------------------------------
// 8. Connection and proxy commands
// ---------------------------------------------------------------------------

#[test]
fn local_commands_and_errors() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut r = proxy.raw();
    assert_eq!(r.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(r.call(&[b"PING", b"msg"]), bulk(b"msg"));
    assert_eq!(r.call(&[b"ping", b"msg"]), bulk(b"msg"));
    assert_eq!(r.call(&[b"ECHO", b"hi there"]), bulk(b"hi there"));
    assert_eq!(r.call(&[b"SELECT", b"0"]), b"+OK\r\n");
    assert_eq!(r.call(&[b"SELECT", b"1"]), b"+OK\r\n");
    let e = r.call(&[b"SELECT", b"16"]);
    assert_eq!(show(&e), show(b"-ERR DB index is out of range\r\n"));
    assert_eq!(r.call(&[b"SELECT", b"0"]), b"+OK\r\n");
    assert_eq!(r.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(
        show(&r.call(&[b"foo", b"a", b"b"])),
        show(b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n")
    );
    assert_eq!(
        show(&r.call(&[b"foo"])),
        show(b"-ERR unknown command 'foo', with args beginning with: \r\n")
    );
    assert_eq!(
        show(&r.call(&[b"GET"])),
        show(b"-ERR wrong number of arguments for 'get' command\r\n")
    );
    assert_eq!(
        show(&r.call(&[b"SET", b"k"])),
        show(b"-ERR wrong number of arguments for 'set' command\r\n")
    );
    assert_eq!(r.call(&[b"FORWARD", b"0", b"PING"]), b"+PONG\r\n");
    assert_eq!(r.call(&[b"FORWARD", b"1", b"ECHO", b"x"]), bulk(b"x"));
    let name = servers[1].addr();
    assert_eq!(
        r.call(&[b"FORWARD", name.as_bytes(), b"SET", b"fw", b"1"]),
        b"+OK\r\n"
    );
    let n: i64 = redis::cmd("EXISTS")
        .arg("fw")
        .query(&mut servers[1].client())
        .unwrap();
    assert_eq!(n, 1);
    let e = r.call(&[b"FORWARD", b"99", b"PING"]);
    assert!(e.starts_with(b"-"), "FORWARD 99: {}", show(&e));
    let e = r.call(&[b"FORWARD", b"nosuch", b"PING"]);
    assert!(e.starts_with(b"-"), "FORWARD nosuch: {}", show(&e));
    assert_eq!(r.call(&[b"PING"]), b"+PONG\r\n");
    // Backend errors pass through unchanged.
    let _ = r.call(&[b"SET", b"str", b"x"]);
    assert_eq!(
        show(&r.call(&[b"LPUSH", b"str", b"y"])),
        show(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    );
    // QUIT: +OK then closed; pipelined commands after QUIT are not answered.
    let mut bytes = enc(&[b"PING", b"before"]);
    bytes.extend(enc(&[b"QUIT"]));
    bytes.extend(enc(&[b"PING", b"after"]));
    r.send(&bytes);
    assert_eq!(r.reply(), bulk(b"before"));
    assert_eq!(r.reply(), b"+OK\r\n");
    assert!(r.closed(), "QUIT did not close the connection");
    // QUIT waits for replies still in flight.
    let mut r2 = proxy.raw();
    let mut bytes = enc(&[b"FORWARD", b"0", b"DEBUG", b"SLEEP", b"0.2"]);
    bytes.extend(enc(&[b"GET", b"str"]));
    bytes.extend(enc(&[b"QUIT"]));
    r2.send(&bytes);
    assert_eq!(r2.reply(), b"+OK\r\n");
    assert_eq!(r2.reply(), bulk(b"x"));
    assert_eq!(r2.reply(), b"+OK\r\n");
    assert!(r2.closed());
}

// ---------------------------------------------------------------------------
// 9. A client leaving with requests in flight
// ---------------------------------------------------------------------------

#[test]
fn departed_client_replies_are_not_misdelivered() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = proxy.client();
    let mut early = proxy.client();
    let mut slow_keys = Vec::new();
    for i in 0..10_000 {
        let k = mixed_key("gone", i);
        if backendnum(&mut c, k.as_bytes()) == 0 {
            slow_keys.push(k);
            if slow_keys.len() == 20 {
                break;
            }
        }
    }
    for k in &slow_keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(format!("old-{k}"))
            .query(&mut c)
            .unwrap();
    }
    for round in 0..3 {
        {
            let mut a = proxy.raw();
            let mut bytes = enc(&[b"FORWARD", b"0", b"DEBUG", b"SLEEP", b"0.3"]);
            for i in 0..1000 {
                bytes.extend(enc(&[b"GET", slow_keys[i % slow_keys.len()].as_bytes()]));
            }
            a.send(&bytes);
            // Give the proxy a moment to read and forward (likelihood only; nothing asserted).
            std::thread::sleep(Duration::from_millis(50));
            let _ = a.stream.shutdown(Shutdown::Both);
        }
        // A new client (likely in the departed one's slot) gets only its own replies.
        let mut b = proxy.raw();
        let mut bytes = Vec::new();
        let mut expect = Vec::new();
        for (i, k) in slow_keys.iter().enumerate() {
            let mine = format!("mine:{round}:{i}");
            bytes.extend(enc(&[b"ECHO", mine.as_bytes()]));
            expect.push(bulk(mine.as_bytes()));
            bytes.extend(enc(&[b"GET", k.as_bytes()]));
            expect.push(bulk(format!("old-{k}").as_bytes()));
            bytes.extend(enc(&[b"SET", mine.as_bytes(), k.as_bytes()]));
            expect.push(b"+OK\r\n".to_vec());
            bytes.extend(enc(&[b"GET", mine.as_bytes()]));
            expect.push(bulk(k.as_bytes()));
        }
        let got = b.exchange(bytes, expect.len());
        for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
            assert_eq!(show(g), show(e), "round {round} reply {i}");
        }
        let pong: String = redis::cmd("PING").query(&mut early).unwrap();
        assert_eq!(pong, "PONG");
    }
    let mut proxy = proxy;
    assert!(proxy.alive(), "proxy died");
    let v: String = redis::cmd("GET")
        .arg(&slow_keys[0])
        .query(&mut early)
        .unwrap();
    assert_eq!(v, format!("old-{}", slow_keys[0]));
    // Nothing extra arrives for a fresh client.
    let mut f = proxy.raw();
    assert_eq!(f.call(&[b"PING", b"last"]), bulk(b"last"));
    f.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let res = std::io::Read::read(&mut f.stream, &mut buf);
    let alive = proxy.alive();
    match res {
        Ok(n) => panic!(
            "unexpected {n} bytes: {} (proxy alive: {alive})\nproxy log:\n{}",
            show(&buf[..n]),
            proxy.log()
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e} ({:?}), proxy alive: {alive}\nproxy log:\n{}",
            e.kind(),
            proxy.log()
        ),
    }
}

// ---------------------------------------------------------------------------
// 10. RESP3
// ---------------------------------------------------------------------------

#[test]
fn resp3_hello_and_nulls() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = proxy.client();
    let a = key_where(&mut c, "r3a:", |n| n == 0);
    let m = key_where(&mut c, "r3m:", |n| n != 0);
    let mut r = proxy.raw();
    let hello = r.call(&[b"HELLO", b"3"]);
    assert!(hello.starts_with(b"%7\r\n"), "HELLO 3: {}", show(&hello));
    assert!(
        hello
            .windows(b"$5\r\nproto\r\n:3\r\n".len())
            .any(|w| w == b"$5\r\nproto\r\n:3\r\n"),
        "{}",
        show(&hello)
    );
    assert_eq!(r.call(&[b"SET", a.as_bytes(), b"va"]), b"+OK\r\n");
    assert_eq!(r.call(&[b"GET", a.as_bytes()]), bulk(b"va"));
    assert_eq!(show(&r.call(&[b"GET", m.as_bytes()])), "_\\r\\n");
    let mut expect = b"*3\r\n".to_vec();
    expect.extend(bulk(b"va"));
    expect.extend_from_slice(b"_\r\n");
    expect.extend(bulk(b"va"));
    assert_eq!(
        show(&r.call(&[b"MGET", a.as_bytes(), m.as_bytes(), a.as_bytes()])),
        show(&expect)
    );
    // A RESP3-only reply type from a backend: HGETALL is a map.
    assert_eq!(r.call(&[b"HSET", b"h3", b"f", b"v"]), b":1\r\n");
    let mut expect = b"%1\r\n".to_vec();
    expect.extend(bulk(b"f"));
    expect.extend(bulk(b"v"));
    assert_eq!(show(&r.call(&[b"HGETALL", b"h3"])), show(&expect));
    assert_eq!(show(&r.call(&[b"CLIENT", b"GETNAME"])), "_\\r\\n");
    assert_eq!(
        r.call(&[b"CLIENT", b"SETINFO", b"lib-name", b"x"]),
        b"+OK\r\n"
    );
    assert_eq!(
        r.call(&[b"CLIENT", b"SETINFO", b"lib-ver", b"1.0"]),
        b"+OK\r\n"
    );
    assert_eq!(r.call(&[b"CLIENT", b"SETNAME", b"myname"]), b"+OK\r\n");
    assert_eq!(r.call(&[b"CLIENT", b"GETNAME"]), bulk(b"myname"));

    // Back to RESP2.
    let hello = r.call(&[b"HELLO", b"2"]);
    assert!(hello.starts_with(b"*14\r\n"), "HELLO 2: {}", show(&hello));
    assert_eq!(r.call(&[b"GET", m.as_bytes()]), b"$-1\r\n");
    let mut expect = b"*2\r\n".to_vec();
    expect.extend(bulk(b"va"));
    expect.extend_from_slice(b"$-1\r\n");
    assert_eq!(
        show(&r.call(&[b"MGET", a.as_bytes(), m.as_bytes()])),
        show(&expect)
    );
    let mut expect = b"*2\r\n".to_vec();
    expect.extend(bulk(b"f"));
    expect.extend(bulk(b"v"));
    assert_eq!(show(&r.call(&[b"HGETALL", b"h3"])), show(&expect));
    assert_eq!(r.call(&[b"CLIENT", b"GETNAME"]), bulk(b"myname"));

    // Mixed: a RESP2 and a RESP3 client pipelining on the same backends.
    let mut r3 = proxy.raw();
    assert!(r3.call(&[b"HELLO", b"3"]).starts_with(b"%7"));
    let mut r2 = proxy.raw();
    let mut b3 = Vec::new();
    let mut b2 = Vec::new();
    for _ in 0..200 {
        b3.extend(enc(&[b"GET", m.as_bytes()]));
        b2.extend(enc(&[b"GET", m.as_bytes()]));
    }
    r3.send(&b3);
    r2.send(&b2);
    for _ in 0..200 {
        assert_eq!(r3.reply(), b"_\r\n");
        assert_eq!(r2.reply(), b"$-1\r\n");
    }
}

// ---------------------------------------------------------------------------
// 11. redis-py with default settings, RESP2 and RESP3
// ---------------------------------------------------------------------------

#[test]
fn redis_py_client() {
    let ok = Command::new("python3")
        .args(["-c", "import redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with the `redis` module is required (pip install redis)"
    );
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/redis_py_smoke.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(proxy.port.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "redis-py script failed ({}):\nstdout:\n{}\nstderr:\n{}\nproxy log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
}

// ---------------------------------------------------------------------------
// 12. redis-benchmark
// ---------------------------------------------------------------------------

#[test]
fn redis_benchmark_runs_clean() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &proxy.port.to_string()])
        .args(["-t", "get,set", "-n", "20000", "-P", "16", "-q"])
        .output()
        .expect("run redis-benchmark");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "redis-benchmark failed: {text}");
    let bad: Vec<&str> = text
        .split(['\n', '\r'])
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("err ")
        })
        .collect();
    assert!(bad.is_empty(), "error lines: {bad:?}\nfull output: {text}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    let mut proxy = proxy;
    assert!(proxy.alive());
}

// ---------------------------------------------------------------------------
// 13. Keys spread over all backends
// ---------------------------------------------------------------------------

#[test]
fn keys_spread_over_all_backends() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut c = proxy.client();
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SET").arg(mixed_key("spread", i)).arg(i).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let sizes: Vec<i64> = servers
        .iter()
        .map(|s| redis::cmd("DBSIZE").query(&mut s.client()).unwrap())
        .collect();
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| mixed_key("spread", i).into_bytes())
        .collect();
    let mut per = vec![0; servers.len()];
    for n in backendnums(&proxy, &keys) {
        per[n] += 1;
    }
    for (s, n) in servers.iter().zip(&sizes) {
        assert!(
            *n > 0,
            "backend {} holds no keys: DBSIZE per backend {sizes:?}, BACKENDNUM counts {per:?}, \
             BACKENDS {}\nproxy log:\n{}",
            s.addr(),
            show(&proxy.raw().call(&[b"BACKENDS"])),
            proxy.log()
        );
    }
    let total: i64 = sizes.iter().sum();
    assert_eq!(total, 1000);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 1000, "DBSIZE through the proxy sums the backends");
}

// ---------------------------------------------------------------------------
// Extra: timeouts, fragmented input, split commands in pipelines, large values
// ---------------------------------------------------------------------------

/// A request that times out gets an error; the backend's late replies are discarded, so the
/// next request on that backend gets its own reply.
#[test]
fn timed_out_replies_are_discarded_not_shifted() {
    let servers = redises(2);
    let proxy = Proxy::start(&refs(&servers), &["--timeout", "200"]);
    let mut c = proxy.client();
    let a = key_where(&mut c, "to:a:", |n| n == 0);
    let b = key_where(&mut c, "to:b:", |n| n == 0);
    let other = key_where(&mut c, "to:o:", |n| n == 1);
    let _: () = redis::cmd("SET")
        .arg(&a)
        .arg("value-a")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&b)
        .arg("value-b")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&other)
        .arg("value-o")
        .query(&mut c)
        .unwrap();

    let mut r = proxy.raw();
    let mut bytes = enc(&[b"FORWARD", b"0", b"DEBUG", b"SLEEP", b"0.8"]);
    bytes.extend(enc(&[b"GET", a.as_bytes()]));
    bytes.extend(enc(&[b"GET", other.as_bytes()]));
    let got = r.exchange(bytes, 3);
    assert!(got[0].starts_with(b"-ERR timeout"), "{}", show(&got[0]));
    assert!(got[1].starts_with(b"-ERR timeout"), "{}", show(&got[1]));
    assert_eq!(got[2], bulk(b"value-o"));
    // Queued behind the late replies of the sleeping backend: each reply is either a timeout
    // (still behind the sleep) or b's own value, never a late reply meant for someone else.
    poll_until("backend 0 to answer GET b again", secs(20), ms(10), || {
        let g = r.call(&[b"GET", b.as_bytes()]);
        if g == bulk(b"value-b") {
            return Ok(());
        }
        assert!(g.starts_with(b"-ERR timeout"), "misdelivered: {}", show(&g));
        Err(show(&g))
    });
    assert_eq!(r.call(&[b"GET", a.as_bytes()]), bulk(b"value-a"));
    let mut r2 = proxy.raw();
    assert_eq!(r2.call(&[b"GET", b.as_bytes()]), bulk(b"value-b"));
}

/// Requests arriving one byte at a time (multibulk and inline) are parsed and answered in order.
#[test]
fn requests_split_into_single_bytes() {
    let servers = redises(3);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut r = proxy.raw();
    r.stream.set_nodelay(true).unwrap();
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    for i in 0..30 {
        let k = format!("frag:{i}");
        let v = format!("v\r\n{i}");
        bytes.extend(enc(&[b"SET", k.as_bytes(), v.as_bytes()]));
        expect.push(b"+OK\r\n".to_vec());
        bytes.extend_from_slice(format!("GET {k}\r\n").as_bytes());
        expect.push(bulk(v.as_bytes()));
    }
    bytes.extend(enc(&[b"MGET", b"frag:0", b"frag:1", b"frag:2", b"frag:3"]));
    let mut m = b"*4\r\n".to_vec();
    for i in 0..4 {
        m.extend(bulk(format!("v\r\n{i}").as_bytes()));
    }
    expect.push(m);
    for chunk in bytes.chunks(1) {
        r.send(chunk);
    }
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(show(&r.reply()), show(e), "reply {i}");
    }
}

/// Split and fanned-out commands (MGET, MSET, DEL, EXISTS, DBSIZE) interleaved with plain
/// ones in one pipeline over 4 backends, with large values.
#[test]
fn split_commands_in_a_pipeline() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let mut bytes = Vec::new();
    let mut expect: Vec<Vec<u8>> = Vec::new();
    let big = vec![b'z'; 300_000];
    for round in 0..100 {
        let keys: Vec<String> = (0..8).map(|j| format!("sp:{round}:{j}")).collect();
        let vals: Vec<String> = (0..8).map(|j| format!("val:{round}:{j}")).collect();
        let mut mset: Vec<&[u8]> = vec![b"MSET"];
        for (k, v) in keys.iter().zip(&vals) {
            mset.push(k.as_bytes());
            mset.push(v.as_bytes());
        }
        bytes.extend(enc(&mset));
        expect.push(b"+OK\r\n".to_vec());
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        let mut m = b"*10\r\n".to_vec();
        for (k, v) in keys.iter().zip(&vals) {
            mget.push(k.as_bytes());
            m.extend(bulk(v.as_bytes()));
        }
        mget.push(b"sp:none");
        m.extend_from_slice(b"$-1\r\n");
        mget.push(keys[0].as_bytes());
        m.extend(bulk(vals[0].as_bytes()));
        bytes.extend(enc(&mget));
        expect.push(m);
        if round % 10 == 0 {
            let bk = format!("sp:big:{round}");
            bytes.extend(enc(&[b"SET", bk.as_bytes(), &big]));
            expect.push(b"+OK\r\n".to_vec());
            bytes.extend(enc(&[b"GET", bk.as_bytes()]));
            expect.push(bulk(&big));
            bytes.extend(enc(&[b"DEL", bk.as_bytes()]));
            expect.push(b":1\r\n".to_vec());
        }
        let mut ex: Vec<&[u8]> = vec![b"EXISTS"];
        ex.extend(keys.iter().map(|k| k.as_bytes()));
        ex.push(b"sp:none");
        ex.push(keys[1].as_bytes());
        bytes.extend(enc(&ex));
        expect.push(b":9\r\n".to_vec());
        let mut del: Vec<&[u8]> = vec![b"DEL"];
        del.extend(keys[..4].iter().map(|k| k.as_bytes()));
        del.push(b"sp:none");
        bytes.extend(enc(&del));
        expect.push(b":4\r\n".to_vec());
        bytes.extend(enc(&[b"DBSIZE"]));
        expect.push(format!(":{}\r\n", 4 * (round + 1)).into_bytes());
    }
    let mut raw = proxy.raw();
    let got = raw.exchange(bytes, expect.len());
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        if g != e {
            panic!(
                "reply {i}: got {} expected {}",
                show(&g[..g.len().min(200)]),
                show(&e[..e.len().min(200)])
            );
        }
    }
}

/// Many clients pipelining at once over the same shared backend connections: each gets exactly
/// its own replies, in its own order.
#[test]
fn concurrent_pipelining_clients_get_their_own_replies() {
    let servers = redises(4);
    let proxy = Proxy::start(&refs(&servers), &[]);
    let port = proxy.port;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut raw = Raw::connect(port);
                let mut bytes = Vec::new();
                let mut expect = Vec::new();
                for i in 0..1500 {
                    let k = format!("cc:{t}:{}", i % 300);
                    let v = format!("t{t}-i{i}");
                    match i % 3 {
                        0 => {
                            bytes.extend(enc(&[b"SET", k.as_bytes(), v.as_bytes()]));
                            expect.push(b"+OK\r\n".to_vec());
                        }
                        1 => {
                            bytes.extend(enc(&[b"ECHO", v.as_bytes()]));
                            expect.push(bulk(v.as_bytes()));
                        }
                        _ => {
                            let prev = format!("t{t}-i{}", i - 2);
                            let pk = format!("cc:{t}:{}", (i - 2) % 300);
                            bytes.extend(enc(&[b"GET", pk.as_bytes()]));
                            expect.push(bulk(prev.as_bytes()));
                        }
                    }
                }
                let got = raw.exchange(bytes, expect.len());
                for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
                    assert_eq!(show(g), show(e), "client {t} reply {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}
