//! Both config parsers on arbitrary UTF-8: never panic; a config that parses renders to native
//! text that parses back to the same config (modulo path, format and server line numbers, as
//! config.rs's own round-trip test compares).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustproxy::config::{self, Config};

/// Keep the fuzzer off the network: server and listen hosts that are not IP literals would go
/// to getaddrinfo (and on to DNS). This definition interposes libc's for this binary only, and
/// answers "no such name" (EAI_NONAME) for every name. IP literals never reach it.
#[no_mangle]
pub extern "C" fn getaddrinfo(
    _node: *const std::ffi::c_char,
    _service: *const std::ffi::c_char,
    _hints: *const std::ffi::c_void,
    _res: *mut *mut std::ffi::c_void,
) -> std::ffi::c_int {
    -2 // EAI_NONAME
}

fn round_trip(c: &Config, origin: &str) {
    let text = config::render_native(c);
    let mut back = config::parse_native(&text, "rendered")
        .unwrap_or_else(|e| panic!("{origin} config renders to unparsable text: {e}\n{text}"));
    back.path = c.path.clone();
    back.format = c.format;
    for (bp, cp) in back.pools.iter_mut().zip(&c.pools) {
        for (bs, cs) in bp.servers.iter_mut().zip(&cp.servers) {
            bs.line = cs.line;
        }
    }
    assert_eq!(
        &back, c,
        "{origin} config does not round-trip through:\n{text}"
    );
    // Rendering is a fixed point.
    assert_eq!(config::render_native(&back), text);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = config::parse_native(text, "fuzz") {
        round_trip(&c, "native");
    }
    if let Ok(c) = config::parse_nutcracker(text, "fuzz.yml") {
        round_trip(&c, "nutcracker");
    }
    let _ = config::detect_format(std::path::Path::new("fuzz.conf"), text);
});
