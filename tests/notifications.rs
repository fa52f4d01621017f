//! Keyspace notifications through the proxy (issue #18): `CONFIG SET notify-keyspace-events`
//! reaches every backend; `SUBSCRIBE __keyspace@0__:<key>` is placed on the key's backend and
//! `__keyevent@0__:<event>` on every backend, so a client sees the notifications one Redis would
//! send.

mod common;

use std::time::Duration;

use common::*;

fn sub_reply(kind: &str, ch: &str, n: i64) -> Vec<u8> {
    let mut v = b"*3\r\n".to_vec();
    v.extend(bulk(kind.as_bytes()));
    v.extend(bulk(ch.as_bytes()));
    v.extend(format!(":{n}\r\n").into_bytes());
    v
}

fn message(ch: &str, payload: &str) -> Vec<u8> {
    let mut v = b"*3\r\n".to_vec();
    v.extend(bulk(b"message"));
    v.extend(bulk(ch.as_bytes()));
    v.extend(bulk(payload.as_bytes()));
    v
}

#[test]
fn keyspace_and_keyevent_notifications_reach_the_subscriber() {
    let servers = redises(3);
    // md5 spreads short similar keys over every backend (fnv1a_64 would not).
    let proxy = Proxy::start(&refs(&servers), &["--hash", "md5"]);
    let mut admin = proxy.raw();
    assert_eq!(
        admin.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"]),
        b"+OK\r\n"
    );
    for s in &servers {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query(&mut s.client())
            .unwrap();
        assert!(
            v[1].contains('K') && v[1].contains('E'),
            "backend {}: {v:?}",
            s.port
        );
    }
    // Keys on (at least two) different backends.
    let keys: Vec<String> = (0..40).map(|i| format!("nk{i}")).collect();
    let mut sub = proxy.raw();
    sub.set_timeout(Duration::from_secs(10));
    let mut n = 0;
    for k in &keys {
        let ch = format!("__keyspace@0__:{k}");
        n += 1;
        assert_eq!(
            sub.call(&[b"SUBSCRIBE", ch.as_bytes()]),
            sub_reply("subscribe", &ch, n)
        );
    }
    let ev = "__keyevent@0__:set";
    n += 1;
    assert_eq!(
        sub.call(&[b"SUBSCRIBE", ev.as_bytes()]),
        sub_reply("subscribe", ev, n)
    );
    for k in &keys {
        assert_eq!(admin.call(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
    }
    // Every SET gives one keyspace message (from the key's backend) and one keyevent message
    // (from whichever backend the key is on); order across backends may vary.
    let mut want: Vec<Vec<u8>> = Vec::new();
    for k in &keys {
        want.push(message(&format!("__keyspace@0__:{k}"), "set"));
        want.push(message(ev, k));
    }
    let mut got = Vec::new();
    for i in 0..want.len() {
        got.push(
            sub.next_reply()
                .unwrap_or_else(|e| panic!("notification {i} of {}: {e}", want.len())),
        );
    }
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let mut spread: Vec<usize> = keys
        .iter()
        .map(|k| holder(&servers, k.as_bytes()))
        .collect();
    spread.sort();
    spread.dedup();
    assert!(spread.len() > 1, "keys all on one backend");
}
