//! Helpers shared by the config rooms' unit tests (compiled for tests only): parse shortcuts
//! that keep the error's file and line, minimal pools, and the render -> parse round trip.

use super::model::{Config, ConfigError};
use super::{parse_native, parse_nutcracker, render_native};

pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The smallest valid pool (listen on line 2, server on line 3).
pub const MIN: &str = "pool p\n listen 127.0.0.1:6380\n server 127.0.0.1:7001\n";

/// [`MIN`] without indentation; a key appended to it is on line 4.
pub const AUTH_POOL: &str = "pool p\nlisten 127.0.0.1:6380\nserver 127.0.0.1:7001\n";

pub fn native(text: &str) -> Result<Config, ConfigError> {
    parse_native(text, "t.conf")
}

/// The error of a native config that must fail: (line, message).
pub fn native_err(text: &str) -> (usize, String) {
    let e = native(text).expect_err("expected an error");
    assert_eq!(e.file, "t.conf");
    (e.line, e.msg)
}

/// Each `(text, line, want)`: [`AUTH_POOL`] followed by `text` fails at `line` with a message
/// that contains `want`.
pub fn assert_pool_errors(cases: &[(&str, usize, &str)]) {
    for (text, line, want) in cases {
        let (l, msg) = native_err(&format!("{AUTH_POOL}{text}"));
        assert_eq!(l, *line, "{text}: {msg}");
        assert!(msg.contains(want), "{text}: {msg}");
    }
}

/// The error of a nutcracker config that must fail: (line, message).
pub fn yaml_err(text: &str) -> (usize, String) {
    let e = parse_nutcracker(text, "t.yml").expect_err("expected an error");
    (e.line, e.msg)
}

/// `parse_native(render_native(c)) == c`, apart from what the native text does not carry.
pub fn assert_round_trip(c: &Config) {
    let text = render_native(c);
    let mut back = parse_native(&text, "rendered").unwrap_or_else(|e| panic!("{e}\n{text}"));
    back.path = c.path.clone();
    back.format = c.format;
    for (bp, cp) in back.pools.iter_mut().zip(&c.pools) {
        for (bs, cs) in bp.servers.iter_mut().zip(&cp.servers) {
            bs.line = cs.line;
        }
    }
    assert_eq!(&back, c, "{text}");
}
