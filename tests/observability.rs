//! Observability end to end: INFO (parsed by redis-py and redis-rs), exact command counters,
//! latency percentiles, the Prometheus exposition on the stats port (checked by a strict
//! parser written here), nutcracker's JSON document compared key for key with the real
//! nutcracker 0.5.0, SLOWLOG, INFO BACKEND and INFO forwarded to a backend.
//!
//! Real redis-server / nutcracker processes on free loopback ports, killed by PID on drop;
//! every wait is bounded; no durations are asserted.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, ms, secs, tmp_dir, wait_listening, wait_port, wait_until, Proxy, Redis};

// ---------------------------------------------------------------------------------------------
// helpers

/// `INFO args...` through redis-rs, as text.
fn info(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd("INFO");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query::<String>(c)
        .unwrap_or_else(|e| panic!("INFO {args:?}: {e}"))
}

/// `k:v` lines of an INFO text (comments and blank lines skipped).
fn info_map(text: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in text.split("\r\n") {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("INFO line without ':': {line:?}"));
        assert!(
            m.insert(k.to_string(), v.to_string()).is_none(),
            "duplicate INFO key {k}"
        );
    }
    m
}

/// `a=1,b=2` -> map.
fn kv(v: &str) -> HashMap<String, String> {
    v.split(',')
        .map(|p| {
            let (a, b) = p
                .split_once('=')
                .unwrap_or_else(|| panic!("no '=' in {p:?} of {v:?}"));
            (a.to_string(), b.to_string())
        })
        .collect()
}

fn num(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k)
        .unwrap_or_else(|| panic!("missing {k} in {m:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{k}={:?}: {e}", m[k]))
}

fn fnum(m: &HashMap<String, String>, k: &str) -> f64 {
    m.get(k)
        .unwrap_or_else(|| panic!("missing {k} in {m:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{k}={:?}: {e}", m[k]))
}

/// Read everything until the peer closes (bounded by the read timeout).
fn read_to_close(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("stats port read: {e} (got {} bytes so far)", out.len()),
        }
    }
}

/// Plain connect to a stats port: the JSON document, then close.
fn stats_json(port: u16) -> String {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats port");
    String::from_utf8(read_to_close(s)).expect("utf8 json")
}

/// `GET /metrics` over HTTP/1.1: (status line, headers, body).
fn http_metrics(port: u16) -> (String, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
        .unwrap();
    let raw = String::from_utf8(read_to_close(s)).expect("utf8 http");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers, body.to_string())
}

/// A proxy with the stats port on.
fn proxy_with_stats(backends: &[&Redis]) -> (Proxy, u16) {
    let sp = free_port();
    let p = Proxy::start(backends, &["-s", &sp.to_string(), "-a", "127.0.0.1"]);
    wait_stats(sp);
    (p, sp)
}

fn wait_stats(port: u16) {
    wait_listening(port, "the stats port");
}

fn python_ok() -> bool {
    Command::new("python3")
        .args(["-c", "import redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------
// Minimal strict JSON (objects, strings, numbers) for the nutcracker document.

#[derive(Debug, Clone, PartialEq)]
enum J {
    Obj(Vec<(String, J)>),
    Str(String),
    Num(f64),
}

struct JP<'a> {
    b: &'a [u8],
    i: usize,
}

impl JP<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }
    fn expect(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.b.get(self.i).copied(),
            Some(c),
            "json: expected {:?} at {} in {}",
            c as char,
            self.i,
            String::from_utf8_lossy(self.b)
        );
        self.i += 1;
    }
    fn string(&mut self) -> String {
        self.expect(b'"');
        let mut s = Vec::new();
        loop {
            let c = *self.b.get(self.i).expect("json: unterminated string");
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.b[self.i];
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => s.push(e),
                        b'n' => s.push(b'\n'),
                        b't' => s.push(b'\t'),
                        b'r' => s.push(b'\r'),
                        b'u' => {
                            let h = std::str::from_utf8(&self.b[self.i..self.i + 4]).unwrap();
                            let cp = u32::from_str_radix(h, 16).expect("json: \\u");
                            self.i += 4;
                            let ch = char::from_u32(cp).expect("json: code point");
                            s.extend_from_slice(ch.to_string().as_bytes());
                        }
                        _ => panic!("json: bad escape {}", e as char),
                    }
                }
                c if c < 0x20 => panic!("json: raw control character in string"),
                c => s.push(c),
            }
        }
        String::from_utf8(s).expect("json: utf8")
    }
    fn value(&mut self) -> J {
        self.ws();
        match self.b.get(self.i).copied() {
            Some(b'{') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return J::Obj(items);
                }
                loop {
                    let k = self.string();
                    self.expect(b':');
                    let v = self.value();
                    assert!(
                        !items.iter().any(|(x, _)| *x == k),
                        "json: duplicate key {k:?}"
                    );
                    items.push((k, v));
                    self.ws();
                    match self.b.get(self.i).copied() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return J::Obj(items);
                        }
                        other => panic!("json: expected , or }} got {other:?} at {}", self.i),
                    }
                }
            }
            Some(b'"') => J::Str(self.string()),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let st = self.i;
                while self.i < self.b.len()
                    && matches!(
                        self.b[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.b[st..self.i]).unwrap();
                J::Num(
                    t.parse()
                        .unwrap_or_else(|e| panic!("json number {t:?}: {e}")),
                )
            }
            other => panic!("json: unexpected {other:?} at {}", self.i),
        }
    }
}

fn parse_json(s: &str) -> J {
    let mut p = JP {
        b: s.as_bytes(),
        i: 0,
    };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, s.len(), "json: trailing bytes in {s:?}");
    v
}

fn obj(j: &J) -> &[(String, J)] {
    match j {
        J::Obj(v) => v,
        other => panic!("not an object: {other:?}"),
    }
}

fn jget<'a>(j: &'a J, k: &str) -> &'a J {
    obj(j)
        .iter()
        .find(|(x, _)| x == k)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("json: no key {k:?} in {j:?}"))
}

/// Key sets: top level (scalars and pool names), per pool (scalars and server names), per server.
#[derive(Debug, PartialEq)]
struct Shape {
    top: BTreeSet<String>,
    pools: BTreeMap<String, BTreeSet<String>>,
    servers: BTreeMap<(String, String), BTreeSet<String>>,
}

fn shape(doc: &J) -> Shape {
    let mut s = Shape {
        top: BTreeSet::new(),
        pools: BTreeMap::new(),
        servers: BTreeMap::new(),
    };
    for (k, v) in obj(doc) {
        s.top.insert(k.clone());
        if let J::Obj(items) = v {
            let mut pk = BTreeSet::new();
            for (sk, sv) in items {
                pk.insert(sk.clone());
                if let J::Obj(si) = sv {
                    s.servers.insert(
                        (k.clone(), sk.clone()),
                        si.iter().map(|(x, _)| x.clone()).collect(),
                    );
                    for (_, leaf) in si {
                        assert!(
                            matches!(leaf, J::Num(_)),
                            "server stat not a number: {leaf:?}"
                        );
                    }
                }
            }
            s.pools.insert(k.clone(), pk);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// A strict Prometheus text-format (0.0.4) checker.

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    ty: Option<String>,
    samples: Vec<Sample>,
}

fn valid_metric_name(n: &str) -> bool {
    let mut cs = n.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut cs = n.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with("__")
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("prometheus: bad value {v:?}: {e}")),
    }
}

/// `name{a="b",c="d"} value [timestamp]`
fn parse_sample_line(l: &str) -> Sample {
    let (name, rest) = match l.find(['{', ' ']) {
        Some(i) => (&l[..i], &l[i..]),
        None => panic!("prometheus: sample without value: {l:?}"),
    };
    assert!(
        valid_metric_name(name),
        "prometheus: bad metric name {name:?} in {l:?}"
    );
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix('{') {
        let b = r.as_bytes();
        let mut i = 0;
        loop {
            if b.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let eq = r[i..]
                .find('=')
                .unwrap_or_else(|| panic!("prometheus: no '=' in {l:?}"))
                + i;
            let lname = &r[i..eq];
            assert!(
                valid_label_name(lname),
                "prometheus: bad label name {lname:?} in {l:?}"
            );
            assert_eq!(
                b.get(eq + 1),
                Some(&b'"'),
                "prometheus: unquoted label value in {l:?}"
            );
            let mut j = eq + 2;
            let mut val = String::new();
            loop {
                match b.get(j) {
                    None => panic!("prometheus: unterminated label value in {l:?}"),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        match b.get(j + 1) {
                            Some(b'\\') => val.push('\\'),
                            Some(b'"') => val.push('"'),
                            Some(b'n') => val.push('\n'),
                            other => panic!("prometheus: bad escape {other:?} in {l:?}"),
                        }
                        j += 2;
                    }
                    Some(_) => {
                        let ch = r[j..].chars().next().unwrap();
                        val.push(ch);
                        j += ch.len_utf8();
                    }
                }
            }
            assert!(
                !labels.iter().any(|(n, _): &(String, String)| n == lname),
                "prometheus: duplicate label {lname} in {l:?}"
            );
            labels.push((lname.to_string(), val));
            i = j + 1;
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                other => panic!("prometheus: expected , or }} after label, got {other:?} in {l:?}"),
            }
        }
        rest = &r[i..];
    }
    let rest = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("prometheus: no single space before the value in {l:?}"));
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().unwrap());
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .unwrap_or_else(|e| panic!("prometheus: bad timestamp {ts:?} in {l:?}: {e}"));
    }
    assert!(
        parts.next().is_none(),
        "prometheus: trailing fields in {l:?}"
    );
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// Parse and validate the whole exposition; families in order of appearance.
fn parse_prometheus(text: &str) -> Vec<(String, Family)> {
    assert!(
        text.ends_with('\n'),
        "prometheus: text must end with a newline"
    );
    let mut fams: Vec<(String, Family)> = Vec::new();
    let mut seen_samples: BTreeSet<String> = BTreeSet::new();
    let idx = |fams: &Vec<(String, Family)>, n: &str| fams.iter().position(|(x, _)| x == n);
    for l in text.lines() {
        assert!(!l.is_empty(), "prometheus: empty line");
        assert!(
            !l.ends_with(' ') && !l.starts_with(' '),
            "prometheus: stray space in {l:?}"
        );
        if let Some(c) = l.strip_prefix('#') {
            let c = c
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("prometheus: bad comment {l:?}"));
            let (kw, rest) = c.split_once(' ').unwrap_or((c, ""));
            if kw != "HELP" && kw != "TYPE" {
                continue; // plain comment
            }
            let (name, arg) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("prometheus: {kw} without text: {l:?}"));
            assert!(valid_metric_name(name), "prometheus: bad name in {l:?}");
            let i = match idx(&fams, name) {
                Some(i) => {
                    assert_eq!(
                        i,
                        fams.len() - 1,
                        "prometheus: family {name} metadata not contiguous"
                    );
                    assert!(
                        fams[i].1.samples.is_empty(),
                        "prometheus: {kw} of {name} after its samples"
                    );
                    i
                }
                None => {
                    fams.push((name.to_string(), Family::default()));
                    fams.len() - 1
                }
            };
            let f = &mut fams[i].1;
            if kw == "HELP" {
                assert!(f.help.is_none(), "prometheus: second HELP for {name}");
                assert!(!arg.is_empty(), "prometheus: empty HELP for {name}");
                f.help = Some(arg.to_string());
            } else {
                assert!(f.ty.is_none(), "prometheus: second TYPE for {name}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                    "prometheus: bad type {arg:?} for {name}"
                );
                f.ty = Some(arg.to_string());
            }
            continue;
        }
        let s = parse_sample_line(l);
        // The sample belongs to the family declared last (samples of a family are contiguous).
        let (fname, fam) = fams
            .last_mut()
            .unwrap_or_else(|| panic!("prometheus: sample before any TYPE: {l:?}"));
        let ty = fam
            .ty
            .clone()
            .unwrap_or_else(|| panic!("prometheus: no TYPE for {fname}"));
        let ok = if ty == "histogram" {
            s.name == format!("{fname}_bucket")
                || s.name == format!("{fname}_sum")
                || s.name == format!("{fname}_count")
        } else {
            s.name == *fname
        };
        assert!(
            ok,
            "prometheus: sample {} under family {fname} ({ty})",
            s.name
        );
        if ty == "counter" {
            assert!(s.value >= 0.0, "prometheus: negative counter {l:?}");
        }
        let key = format!("{}{:?}", s.name, s.labels);
        assert!(
            seen_samples.insert(key),
            "prometheus: duplicate sample {l:?}"
        );
        fam.samples.push(s);
    }
    for (name, f) in &fams {
        assert!(f.help.is_some(), "prometheus: family {name} has no HELP");
        assert!(f.ty.is_some(), "prometheus: family {name} has no TYPE");
        if f.ty.as_deref() == Some("counter") {
            assert!(
                name.ends_with("_total"),
                "prometheus: counter {name} not named *_total"
            );
        }
        if f.ty.as_deref() == Some("histogram") {
            check_histogram(name, f);
        }
    }
    fams
}

/// One histogram series: (le, cumulative count) buckets, _sum, _count.
type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

/// Buckets cumulative, le increasing and ending in +Inf == _count; _sum present, per label set.
fn check_histogram(name: &str, f: &Family) {
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for s in &f.samples {
        let base: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        let e = series.entry(base).or_default();
        if s.name.ends_with("_bucket") {
            let le = s
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .unwrap_or_else(|| panic!("{name}: bucket without le"));
            e.0.push((parse_value(&le.1), s.value));
        } else if s.name.ends_with("_sum") {
            assert!(e.1.is_none(), "{name}: two _sum");
            e.1 = Some(s.value);
        } else {
            assert!(e.2.is_none(), "{name}: two _count");
            e.2 = Some(s.value);
        }
    }
    for (labels, (buckets, sum, count)) in &series {
        assert!(!buckets.is_empty(), "{name}{labels:?}: no buckets");
        for w in buckets.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "{name}{labels:?}: le not increasing: {buckets:?}"
            );
            assert!(
                w[0].1 <= w[1].1,
                "{name}{labels:?}: buckets not cumulative: {buckets:?}"
            );
        }
        let last = buckets.last().unwrap();
        assert!(
            last.0.is_infinite() && last.0 > 0.0,
            "{name}{labels:?}: last bucket not +Inf"
        );
        let count = count.unwrap_or_else(|| panic!("{name}{labels:?}: no _count"));
        assert_eq!(last.1, count, "{name}{labels:?}: +Inf bucket != _count");
        let sum = sum.unwrap_or_else(|| panic!("{name}{labels:?}: no _sum"));
        assert!(sum >= 0.0);
    }
}

fn fam<'a>(fams: &'a [(String, Family)], n: &str) -> &'a Family {
    &fams
        .iter()
        .find(|(x, _)| x == n)
        .unwrap_or_else(|| panic!("no family {n}"))
        .1
}

/// The value of the sample `name` whose labels include all of `want`.
fn sample(fams: &[(String, Family)], fname: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    let f = fam(fams, fname);
    let hits: Vec<&Sample> = f
        .samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name} {want:?}: {hits:?}");
    hits[0].value
}

// ---------------------------------------------------------------------------------------------
// 1. INFO parses with redis-py and redis-rs

#[test]
fn info_parses_with_redis_py_and_redis_rs() {
    let rs = common::redises(2);
    let p = Proxy::start(&[&rs[0], &rs[1]], &[]);
    let mut c = p.client();
    let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut c).unwrap();
    let _: Option<String> = redis::cmd("GET").arg("a").query(&mut c).unwrap();

    // redis-rs: InfoDict for the default INFO and for INFO all.
    for args in [&[][..], &["all"][..], &["everything"][..], &["default"][..]] {
        let mut cmd = redis::cmd("INFO");
        for a in args {
            cmd.arg(*a);
        }
        let d: redis::InfoDict = cmd.query(&mut c).expect("InfoDict");
        assert!(d.get::<String>("redis_version").is_some(), "INFO {args:?}");
        assert_eq!(
            d.get::<u32>("process_id"),
            Some(p.child.id()),
            "INFO {args:?}"
        );
        assert_eq!(d.get::<u16>("tcp_port"), Some(p.port), "INFO {args:?}");
        assert!(d.get::<u64>("connected_clients").unwrap_or(0) >= 1);
        assert_eq!(d.get::<String>("role").as_deref(), Some("master"));
        let all = args.first().is_some_and(|a| *a != "default");
        // The proxy's own sections are in `all`/`everything`, not in the default.
        assert_eq!(
            d.get::<String>("backend0").is_some() && d.get::<String>("backend1").is_some(),
            all,
            "INFO {args:?}"
        );
        assert_eq!(
            d.get::<String>("cmdstat_get").is_some(),
            all,
            "INFO {args:?}"
        );
        assert_eq!(
            d.get::<String>("latency_percentiles_usec_get").is_some(),
            all,
            "INFO {args:?}"
        );
    }
    // Every default section header, in Redis's order, and the text is CRLF separated.
    let text = info(&mut c, &[]);
    let heads: Vec<&str> = text.split("\r\n").filter(|l| l.starts_with("# ")).collect();
    assert_eq!(
        heads,
        [
            "# Server",
            "# Clients",
            "# Memory",
            "# Persistence",
            "# Stats",
            "# Replication",
            "# CPU",
            "# Modules",
            "# Errorstats",
            "# Cluster",
            "# Keyspace"
        ]
    );
    let all = info(&mut c, &["all"]);
    let heads: Vec<&str> = all.split("\r\n").filter(|l| l.starts_with("# ")).collect();
    assert_eq!(
        heads,
        [
            "# Server",
            "# Clients",
            "# Memory",
            "# Persistence",
            "# Stats",
            "# Replication",
            "# CPU",
            "# Modules",
            "# Commandstats",
            "# Errorstats",
            "# Latencystats",
            "# Cluster",
            "# Keyspace",
            "# Proxy",
            "# Backends"
        ]
    );
    // Several sections at once, any case; unknown section: empty.
    let two = info(&mut c, &["CPU", "server"]);
    let heads: Vec<&str> = two.split("\r\n").filter(|l| l.starts_with("# ")).collect();
    assert_eq!(heads, ["# Server", "# CPU"]);
    assert_eq!(info(&mut c, &["nosuchsection"]), "");
    info_map(&all); // well formed, no duplicate keys

    // redis-py's parser (RESP2 and RESP3).
    assert!(
        python_ok(),
        "python3 with the `redis` module is required (pip install redis)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/info_parse.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(p.port.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "redis-py INFO parse failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. counters match the traffic exactly

#[test]
fn counters_match_traffic_exactly() {
    let rs = common::redises(2);
    let (p, sp) = proxy_with_stats(&[&rs[0], &rs[1]]);
    let mut c = p.client();
    const N: usize = 37; // GETs
    const M: usize = 23; // SETs
    const K: usize = 5; // unknown commands
    const J: usize = 4; // wrong-arity GETs
    const W: usize = 3; // GETs failing on the backend (WRONGTYPE)

    // Setup (before the reset): a list key, and where every key lives.
    let _: i64 = redis::cmd("RPUSH")
        .arg("obs:list")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let keys: Vec<String> = (0..N.max(M)).map(|i| format!("obs:key:{i}")).collect();
    let mut per_backend = [0u64; 2];
    let nums: Vec<usize> = redis::cmd("BACKENDNUM").arg(&keys).query(&mut c).unwrap();
    for (i, &b) in nums.iter().enumerate() {
        if i < N {
            per_backend[b] += 1; // GET
        }
        if i < M {
            per_backend[b] += 1; // SET
        }
    }
    let lb: usize = redis::cmd("BACKENDNUM")
        .arg("obs:list")
        .query(&mut c)
        .unwrap();
    per_backend[lb] += W as u64;

    let r: String = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    assert_eq!(r, "OK");

    for k in keys.iter().take(M) {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut c).unwrap();
    }
    for k in keys.iter().take(N) {
        let v: Option<String> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
        let _ = v;
    }
    for i in 0..K {
        let e = redis::cmd("NOSUCHCOMMAND")
            .arg(i)
            .query::<redis::Value>(&mut c);
        assert!(e.is_err(), "unknown command answered {e:?}");
    }
    for i in 0..J {
        let mut cmd = redis::cmd("GET");
        if i % 2 == 1 {
            cmd.arg("a").arg("b");
        }
        let e = cmd.query::<redis::Value>(&mut c);
        let msg = format!("{:?}", e.expect_err("wrong arity must fail"));
        assert!(msg.contains("wrong number of arguments"), "{msg}");
    }
    for _ in 0..W {
        let e = redis::cmd("GET")
            .arg("obs:list")
            .query::<redis::Value>(&mut c);
        let msg = format!("{:?}", e.expect_err("WRONGTYPE"));
        assert!(msg.contains("WRONGTYPE"), "{msg}");
    }

    // Metrics first (the stats port does not count as a command), then INFO.
    let (_, _, body) = http_metrics(sp);
    let fams = parse_prometheus(&body);
    let text = info(&mut c, &["all"]);
    let m = info_map(&text);

    let get = kv(&m["cmdstat_get"]);
    assert_eq!(num(&get, "calls"), (N + W) as u64, "cmdstat_get {get:?}");
    assert_eq!(num(&get, "failed_calls"), W as u64, "cmdstat_get {get:?}");
    assert_eq!(num(&get, "rejected_calls"), J as u64, "cmdstat_get {get:?}");
    let set = kv(&m["cmdstat_set"]);
    assert_eq!(num(&set, "calls"), M as u64, "{set:?}");
    assert_eq!(num(&set, "failed_calls"), 0, "{set:?}");
    assert_eq!(num(&set, "rejected_calls"), 0, "{set:?}");
    // Nothing else ran after the reset but CONFIG RESETSTAT itself (counted once it answered)
    // and this INFO (counted once its reply leaves, i.e. not in its own text).
    for (k, v) in &m {
        if let Some(cmd) = k.strip_prefix("cmdstat_") {
            assert!(
                ["get", "set", "config|resetstat"].contains(&cmd),
                "unexpected commandstats row {k}:{v}"
            );
        }
    }
    assert!(
        !m.contains_key("cmdstat_backendnum"),
        "stats before the reset survived"
    );
    assert!(
        !m.contains_key("cmdstat_rpush"),
        "stats before the reset survived"
    );
    assert_eq!(num(&m, "unknown_commands"), K as u64);
    assert_eq!(num(&m, "total_rejected_calls"), J as u64);
    assert_eq!(num(&m, "total_failed_calls"), W as u64);
    // Proxy-made error replies: unknown command and wrong arity (WRONGTYPE is the backend's).
    assert_eq!(num(&m, "proxy_error_replies"), (K + J) as u64);
    // Redis's meaning: every error reply sent, the backends' included.
    assert_eq!(num(&m, "total_error_replies"), (K + J + W) as u64);
    // Commands read since the reset: the traffic plus this INFO (read before it rendered).
    assert_eq!(
        num(&m, "total_commands_processed"),
        (N + M + K + J + W + 1) as u64
    );

    // Per-backend requests: exactly the forwarded GETs and SETs, on the right backend.
    let mut sum = 0;
    for (b, want) in per_backend.iter().enumerate() {
        let line = kv(&m[&format!("backend{b}")]);
        assert_eq!(num(&line, "requests"), *want, "backend{b} {line:?}");
        assert_eq!(num(&line, "replies"), *want, "backend{b} {line:?}");
        assert_eq!(num(&line, "errors"), 0, "backend{b} {line:?}");
        assert_eq!(num(&line, "in_flight"), 0, "backend{b} {line:?}");
        assert_eq!(line["addr"], rs[b].addr());
        assert_eq!(line["state"], "up");
        sum += num(&line, "requests");
    }
    assert_eq!(sum, (N + M + W) as u64);

    // The same counters in the Prometheus exposition (scraped just before INFO).
    let cmd_get = [("cmd", "get")];
    let cmd_set = [("cmd", "set")];
    let pv = |n: &str, l: &[(&str, &str)]| sample(&fams, n, n, l) as u64;
    assert_eq!(pv("rustproxy_commands_total", &cmd_get), (N + W) as u64);
    assert_eq!(pv("rustproxy_command_errors_total", &cmd_get), W as u64);
    assert_eq!(pv("rustproxy_command_rejected_total", &cmd_get), J as u64);
    assert_eq!(pv("rustproxy_commands_total", &cmd_set), M as u64);
    assert_eq!(pv("rustproxy_unknown_commands_total", &[]), K as u64);
    assert_eq!(pv("rustproxy_error_replies_total", &[]), (K + J) as u64);
    assert_eq!(
        pv("rustproxy_commands_processed_total", &[]),
        (N + M + K + J + W) as u64
    );
    assert_eq!(
        sample(
            &fams,
            "rustproxy_command_latency_seconds",
            "rustproxy_command_latency_seconds_count",
            &cmd_get
        ) as u64,
        (N + W) as u64
    );
    for (b, want) in per_backend.iter().enumerate() {
        let addr = rs[b].addr();
        let l = [("addr", addr.as_str())];
        assert_eq!(
            pv("rustproxy_backend_requests_total", &l),
            *want,
            "backend {b}"
        );
        assert_eq!(
            pv("rustproxy_backend_replies_total", &l),
            *want,
            "backend {b}"
        );
        assert_eq!(
            sample(
                &fams,
                "rustproxy_backend_latency_seconds",
                "rustproxy_backend_latency_seconds_count",
                &l
            ) as u64,
            *want,
            "backend {b}"
        );
    }

    // And nutcracker's per-server "requests" in the JSON document, read after that INFO: its
    // Keyspace section asked each backend once (INFO keyspace).
    let per_backend: Vec<u64> = per_backend.iter().map(|n| n + 1).collect();
    let doc = parse_json(&stats_json(sp));
    let pool = obj(&doc)
        .iter()
        .find(|(_, v)| matches!(v, J::Obj(_)))
        .map(|(_, v)| v)
        .expect("a pool in the JSON");
    for (b, want) in per_backend.iter().enumerate() {
        let srv = jget(pool, &rs[b].addr());
        assert_eq!(
            jget(srv, "requests"),
            &J::Num(*want as f64),
            "server {b} in JSON"
        );
        assert_eq!(
            jget(srv, "responses"),
            &J::Num(*want as f64),
            "server {b} in JSON"
        );
    }

    // RESETSTAT again zeroes them.
    let _: String = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let m = info_map(&info(&mut c, &["all"]));
    assert!(!m.contains_key("cmdstat_get"), "{m:?}");
    assert_eq!(num(&m, "unknown_commands"), 0);
    assert_eq!(num(&m, "total_error_replies"), 0);
    for b in 0..2 {
        assert_eq!(num(&kv(&m[&format!("backend{b}")]), "requests"), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. latency percentiles

#[test]
fn latency_percentiles_are_monotone_after_slow_traffic() {
    let rs = common::redises(2);
    let p = Proxy::start(&[&rs[0], &rs[1]], &[]);
    let mut c = p.client();
    let _: String = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    // Keys on backend 0.
    let mut on0 = Vec::new();
    for i in 0..1000 {
        let k = format!("lat:{i}");
        let b: usize = redis::cmd("BACKENDNUM").arg(&k).query(&mut c).unwrap();
        if b == 0 {
            on0.push(k);
        }
        if on0.len() == 20 {
            break;
        }
    }
    assert_eq!(on0.len(), 20);
    // Slow backend 0 a few times, with GETs queued behind each sleep.
    let mut raw = p.raw();
    for round in 0..3 {
        raw.cmd(&[b"FORWARD", b"0", b"DEBUG", b"SLEEP", b"0.02"]);
        for k in &on0 {
            raw.cmd(&[b"GET", k.as_bytes()]);
        }
        assert_eq!(raw.reply(), b"+OK\r\n", "round {round}");
        for _ in &on0 {
            assert_eq!(raw.reply(), b"$-1\r\n");
        }
    }
    // And some fast traffic on both backends.
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("lat:f{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }

    let m = info_map(&info(&mut c, &["all"]));
    for cmd in ["get", "forward", "set"] {
        let key = format!("latency_percentiles_usec_{cmd}");
        let l = kv(m.get(&key).unwrap_or_else(|| panic!("no {key}")));
        let (p50, p99, p999) = (fnum(&l, "p50"), fnum(&l, "p99"), fnum(&l, "p99.9"));
        assert!(p50 > 0.0, "{key}: {l:?}");
        assert!(p50 <= p99 && p99 <= p999, "{key} not monotone: {l:?}");
    }
    for b in 0..2 {
        let line = kv(&m[&format!("backend{b}")]);
        let (p50, p99) = (
            num(&line, "latency_p50_usec"),
            num(&line, "latency_p99_usec"),
        );
        assert!(p50 <= p99, "backend{b}: {line:?}");
        // Backend 0 got the slowed traffic; backend 1 may by chance get none of these keys.
        if b == 0 || num(&line, "requests") > 0 {
            assert!(p50 > 0, "backend{b}: {line:?}");
        }
    }
    let b0 = info_map(&info(&mut c, &["BACKEND", "0"]));
    let ps: Vec<u64> = [
        "latency_p50_usec",
        "latency_p90_usec",
        "latency_p99_usec",
        "latency_p99.9_usec",
        "latency_max_usec",
    ]
    .iter()
    .map(|k| num(&b0, k))
    .collect();
    assert!(ps[0] > 0, "{b0:?}");
    assert!(
        ps.windows(2).all(|w| w[0] <= w[1]),
        "INFO BACKEND 0 percentiles not monotone: {ps:?}"
    );
    assert_eq!(num(&b0, "latency_count"), num(&b0, "requests"), "{b0:?}");
    assert!(num(&b0, "latency_sum_usec") >= num(&b0, "latency_max_usec"));
}

// ---------------------------------------------------------------------------------------------
// 4. /metrics is valid Prometheus exposition

#[test]
fn metrics_endpoint_is_valid_prometheus() {
    let rs = common::redises(3);
    let (p, sp) = proxy_with_stats(&[&rs[0], &rs[1], &rs[2]]);
    let mut c = p.client();
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("m:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let _: Vec<Option<String>> = redis::cmd("MGET")
        .arg((0..50).map(|i| format!("m:{i}")).collect::<Vec<_>>())
        .query(&mut c)
        .unwrap();
    let _ = redis::cmd("GET").query::<redis::Value>(&mut c); // a rejection
    let _ = redis::cmd("FOO").query::<redis::Value>(&mut c); // an unknown command
    let _: i64 = redis::cmd("LPUSH")
        .arg("m:l")
        .arg("a")
        .query(&mut c)
        .unwrap();
    let _ = redis::cmd("INCR").arg("m:l").query::<redis::Value>(&mut c); // failed on the backend

    let (status, headers, body) = http_metrics(sp);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let h: HashMap<_, _> = headers.into_iter().collect();
    assert!(h["content-type"].starts_with("text/plain"), "{h:?}");
    assert!(h["content-type"].contains("version=0.0.4"), "{h:?}");
    assert_eq!(h["content-length"].parse::<usize>().unwrap(), body.len());

    let fams = parse_prometheus(&body);
    for f in [
        "rustproxy_commands_processed_total",
        "rustproxy_connected_clients",
        "rustproxy_commands_total",
        "rustproxy_command_latency_seconds",
        "rustproxy_backend_requests_total",
        "rustproxy_backend_latency_seconds",
        "rustproxy_backend_up",
    ] {
        fam(&fams, f);
    }
    // Per-backend series for every backend.
    for r in &rs {
        let a = r.addr();
        assert_eq!(
            sample(
                &fams,
                "rustproxy_backend_up",
                "rustproxy_backend_up",
                &[("addr", &a)]
            ),
            1.0
        );
    }

    // Counters equal INFO (INFO read after the scrape; nothing else happens in between).
    let m = info_map(&info(&mut c, &["all"]));
    let pv = |n: &str, l: &[(&str, &str)]| sample(&fams, n, n, l) as u64;
    assert_eq!(
        pv("rustproxy_commands_processed_total", &[]) + 1,
        num(&m, "total_commands_processed")
    );
    assert_eq!(
        pv("rustproxy_connections_received_total", &[]),
        num(&m, "total_connections_received")
    );
    assert_eq!(
        pv("rustproxy_unknown_commands_total", &[]),
        num(&m, "unknown_commands")
    );
    assert_eq!(
        pv("rustproxy_error_replies_total", &[]),
        num(&m, "proxy_error_replies")
    );
    assert_eq!(
        pv("rustproxy_timeouts_total", &[]),
        num(&m, "total_timeouts")
    );
    assert_eq!(
        pv("rustproxy_connected_clients", &[]),
        num(&m, "connected_clients")
    );
    for (k, v) in &m {
        let Some(cmd) = k.strip_prefix("cmdstat_") else {
            continue;
        };
        let row = kv(v);
        let l = [("cmd", cmd)];
        assert_eq!(
            pv("rustproxy_commands_total", &l),
            num(&row, "calls"),
            "{k}"
        );
        assert_eq!(
            pv("rustproxy_command_errors_total", &l),
            num(&row, "failed_calls"),
            "{k}"
        );
        assert_eq!(
            pv("rustproxy_command_rejected_total", &l),
            num(&row, "rejected_calls"),
            "{k}"
        );
    }
    let rejected: f64 = fam(&fams, "rustproxy_command_rejected_total")
        .samples
        .iter()
        .map(|s| s.value)
        .sum();
    let failed: f64 = fam(&fams, "rustproxy_command_errors_total")
        .samples
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(rejected as u64, num(&m, "total_rejected_calls"));
    assert_eq!(failed as u64, num(&m, "total_failed_calls"));
    assert!(num(&m, "total_failed_calls") >= 1 && num(&m, "total_rejected_calls") >= 1);
    for b in 0..rs.len() {
        let line = kv(&m[&format!("backend{b}")]);
        let a = line["addr"].clone();
        let l = [("addr", a.as_str())];
        assert_eq!(
            pv("rustproxy_backend_requests_total", &l),
            num(&line, "requests"),
            "backend{b}"
        );
        assert_eq!(
            pv("rustproxy_backend_replies_total", &l),
            num(&line, "replies"),
            "backend{b}"
        );
        assert_eq!(
            pv("rustproxy_backend_errors_total", &l),
            num(&line, "errors"),
            "backend{b}"
        );
        assert_eq!(
            pv("rustproxy_backend_connections", &l),
            num(&line, "connections"),
            "backend{b}"
        );
    }

    // A stats connection that says something else than GET /metrics over HTTP gets JSON.
    let mut s = TcpStream::connect(("127.0.0.1", sp)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let raw = String::from_utf8(read_to_close(s)).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("http answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    parse_json(body);
}

// ---------------------------------------------------------------------------------------------
// 5. nutcracker JSON has nutcracker 0.5.0's keys

struct Nut {
    child: Child,
}

impl Drop for Nut {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nutcracker_json_has_the_keys_of_real_nutcracker() {
    let rs = common::redises(3);
    let dir = tmp_dir("ncjson");
    let yaml = |port_a: u16, port_b: u16| {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port_a}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - {}:1\n   - {}:1\n\
             beta:\n  listen: 127.0.0.1:{port_b}\n  hash: murmur\n  distribution: modula\n  hash_tag: \"{{}}\"\n  redis: true\n  servers:\n   - {}:1 cache-one\n   - {}:2 cache-two\n   - {}:1 cache-three\n",
            rs[0].addr(), rs[1].addr(), rs[0].addr(), rs[1].addr(), rs[2].addr()
        )
    };
    // nutcracker
    let (na, nb, ns) = (free_port(), free_port(), free_port());
    let ny = dir.join("nut.yml");
    std::fs::write(&ny, yaml(na, nb)).unwrap();
    let mut nut = Nut {
        child: Command::new("/usr/sbin/nutcracker")
            .args([
                "-c",
                ny.to_str().unwrap(),
                "-s",
                &ns.to_string(),
                "-a",
                "127.0.0.1",
            ])
            .args(["-o", dir.join("nut.log").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/nutcracker"),
    };
    wait_port(na, &mut nut.child, "nutcracker");
    wait_port(ns, &mut nut.child, "nutcracker stats");
    // rustproxy with the same YAML (other ports)
    let (ra, rb, rsp) = (free_port(), free_port(), free_port());
    let ry = dir.join("rust.yml");
    std::fs::write(&ry, yaml(ra, rb)).unwrap();
    let p = Proxy::spawn(
        ra,
        &[
            "-c".into(),
            ry.to_string_lossy().into_owned(),
            "-s".into(),
            rsp.to_string(),
        ],
    );
    wait_stats(rsp);

    // Some traffic through both pools of both proxies.
    for port in [na, nb, ra, rb] {
        let mut c = common::Raw::connect(port);
        for i in 0..20 {
            let k = format!("j:{i}");
            assert_eq!(
                c.call(&[b"SET", k.as_bytes(), b"v"]),
                b"+OK\r\n",
                "port {port}"
            );
        }
    }

    let nj = stats_json(ns);
    let rj = stats_json(rsp);
    let (nd, rd) = (parse_json(&nj), parse_json(&rj));
    let (nshape, rshape) = (shape(&nd), shape(&rd));
    assert_eq!(
        rshape.top, nshape.top,
        "top-level keys\nnutcracker: {nj}\nrustproxy:  {rj}"
    );
    assert_eq!(
        rshape.pools, nshape.pools,
        "pool keys\nnutcracker: {nj}\nrustproxy:  {rj}"
    );
    assert_eq!(
        rshape.servers, nshape.servers,
        "server keys\nnutcracker: {nj}\nrustproxy:  {rj}"
    );
    // Same value types key by key.
    for (k, v) in obj(&nd) {
        let rv = jget(&rd, k);
        assert_eq!(
            std::mem::discriminant(v),
            std::mem::discriminant(rv),
            "type of {k}: nutcracker {v:?} rustproxy {rv:?}"
        );
    }
    assert_eq!(jget(&nd, "service"), &J::Str("nutcracker".into()));
    assert_eq!(jget(&rd, "service"), &J::Str("rustproxy".into()));
    // The scalar keys come first, in nutcracker's order (pool order may differ: JSON objects
    // are unordered, and nutcracker 0.5.0 lists its pools in reverse order).
    let scalars = |d: &J| {
        obj(d)
            .iter()
            .filter(|(_, v)| !matches!(v, J::Obj(_)))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(scalars(&rd), scalars(&nd));
    // 20 requests per pool.
    for pool in ["alpha", "beta"] {
        let total = |d: &J| -> f64 {
            obj(jget(d, pool))
                .iter()
                .filter_map(|(_, v)| match v {
                    J::Obj(_) => match jget(v, "requests") {
                        J::Num(n) => Some(*n),
                        _ => None,
                    },
                    _ => None,
                })
                .sum()
        };
        // nutcracker only folds its counters into the document every stats interval (30 s),
        // so its values are not compared; rustproxy's are live.
        assert_eq!(total(&rd), 20.0, "rustproxy {pool}");
    }
    drop(p);
    drop(nut);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 6. SLOWLOG

fn slowlog_get(c: &mut redis::Connection) -> Vec<redis::Value> {
    match redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query::<redis::Value>(c)
        .unwrap()
    {
        redis::Value::Array(v) => v,
        other => panic!("SLOWLOG GET: {other:?}"),
    }
}

fn bulk(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// (args, backend) of the entries whose command is FORWARD; asserts the 7-element shape.
fn forward_entries(entries: &[redis::Value]) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for e in entries {
        let redis::Value::Array(f) = e else {
            panic!("entry not an array: {e:?}")
        };
        assert_eq!(f.len(), 7, "slowlog entry shape: {f:?}");
        assert!(matches!(f[0], redis::Value::Int(_)), "{f:?}");
        assert!(matches!(f[1], redis::Value::Int(_)), "{f:?}");
        assert!(matches!(f[2], redis::Value::Int(_)), "{f:?}");
        let redis::Value::Array(args) = &f[3] else {
            panic!("args not an array: {f:?}")
        };
        let args: Vec<String> = args.iter().map(bulk).collect();
        bulk(&f[4]);
        bulk(&f[5]);
        let backend = bulk(&f[6]);
        if args
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case("forward"))
        {
            out.push((args, backend));
        }
    }
    out
}

#[test]
fn slowlog_records_slow_requests_len_and_reset() {
    let rs = common::redises(2);
    let p = Proxy::start(&[&rs[0], &rs[1]], &[]);
    let mut c = p.client();
    let r: String = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    assert_eq!(r, "OK");
    assert_eq!(
        redis::cmd("SLOWLOG")
            .arg("LEN")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert!(slowlog_get(&mut c).is_empty());

    let r: String = redis::cmd("FORWARD")
        .arg("0")
        .arg("DEBUG")
        .arg("SLEEP")
        .arg("0.05")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, "OK");
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert!(len >= 1, "SLOWLOG LEN {len}");
    let entries = slowlog_get(&mut c);
    assert_eq!(entries.len() as i64, len);
    let fw = forward_entries(&entries);
    assert_eq!(fw.len(), 1, "one FORWARD entry expected: {entries:?}");
    let m = info_map(&info(&mut c, &["proxy"]));
    assert_eq!(num(&m, "slowlog_len") as i64, len);

    // SLOWLOG GET 0 / GET 1.
    match redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(0)
        .query::<redis::Value>(&mut c)
        .unwrap()
    {
        redis::Value::Array(v) => assert!(v.is_empty()),
        other => panic!("{other:?}"),
    }

    let r: String = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    assert_eq!(r, "OK");
    assert_eq!(
        redis::cmd("SLOWLOG")
            .arg("LEN")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert!(slowlog_get(&mut c).is_empty());
}

/// The 7th element names the backend that served the command. For `FORWARD n ...` that is
/// backend n, whatever backend a *key* named "n" would hash to.
#[test]
fn slowlog_names_the_forward_target_backend() {
    let rs = common::redises(4);
    let p = Proxy::start(&[&rs[0], &rs[1], &rs[2], &rs[3]], &[]);
    let mut c = p.client();
    let backends: Vec<String> = redis::cmd("BACKENDS").query(&mut c).unwrap();
    // A backend index whose decimal text, taken as a key, hashes elsewhere.
    let target = (0..4)
        .find(|i| {
            redis::cmd("BACKENDNUM")
                .arg(i.to_string())
                .query::<usize>(&mut c)
                .unwrap()
                != *i
        })
        .expect("some index hashes to another backend");
    let _: String = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let r: String = redis::cmd("FORWARD")
        .arg(target.to_string())
        .arg("DEBUG")
        .arg("SLEEP")
        .arg("0.05")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, "OK");
    let fw = forward_entries(&slowlog_get(&mut c));
    assert_eq!(fw.len(), 1, "{fw:?}");
    // BACKENDS entries are backend names (an unnamed backend is named host:port).
    let want_name = backends[target].clone();
    assert_eq!(
        fw[0].1, want_name,
        "slowlog backend of `FORWARD {target} DEBUG SLEEP 0.05` (BACKENDS: {backends:?})"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. INFO BACKEND and forwarded INFO

#[test]
fn info_backend_and_forwarded_info() {
    let rs = common::redises(2);
    let (a0, a1) = (rs[0].addr(), rs[1].addr());
    let p = Proxy::start_conf(
        "conf",
        |port| {
            format!(
                "pool main\n    listen 127.0.0.1:{port}\n    server {a0}:1 shard-a\n    server {a1}:1 shard-b\n"
            )
        },
        &[],
    );
    let mut c = p.client();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("ib:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }

    let sum: u64 = (0..2)
        .map(|b| {
            num(
                &info_map(&info(&mut c, &["BACKEND", &b.to_string()])),
                "requests",
            )
        })
        .sum();
    assert_eq!(sum, 50, "the SETs, nothing else (INFO BACKEND is local)");
    for (i, name) in [(0usize, "shard-a"), (1, "shard-b")] {
        let addr = rs[i].addr();
        for sel in [i.to_string(), name.to_string(), addr.clone()] {
            let text = info(&mut c, &["BACKEND", &sel]);
            assert!(
                text.starts_with("# Backend\r\n"),
                "INFO BACKEND {sel}: {text}"
            );
            let m = info_map(&text);
            assert_eq!(num(&m, "index"), i as u64, "INFO BACKEND {sel}");
            assert_eq!(m["name"], name);
            assert_eq!(m["addr"], addr);
            assert_eq!(m["pool"], "main");
            assert_eq!(m["state"], "up");
            assert_eq!(num(&m, "requests"), num(&m, "replies"));
        }

        // Forwarded to the backend itself.
        for sel in [i.to_string(), name.to_string()] {
            let text = info(&mut c, &[&sel, "server"]);
            let m = info_map(&text);
            assert!(m.contains_key("redis_version"), "INFO {sel} server: {text}");
            assert_eq!(num(&m, "tcp_port"), rs[i].port as u64, "INFO {sel} server");
            assert_eq!(
                num(&m, "process_id"),
                rs[i].pid() as u64,
                "INFO {sel} server"
            );
            assert!(
                !m.contains_key("rustproxy_version"),
                "answered by the proxy: {text}"
            );
        }
        let text = info(&mut c, &[&i.to_string()]);
        assert!(
            text.contains("# Keyspace"),
            "INFO {i} (default sections): {text}"
        );
        assert_eq!(num(&info_map(&text), "tcp_port"), rs[i].port as u64);
    }
    // The proxy's own INFO server: its port, not a backend's.
    let m = info_map(&info(&mut c, &["server"]));
    assert_eq!(num(&m, "tcp_port"), p.port as u64);
    // The proxy's own fields are in its own section (Redis's carry Redis's fields only).
    assert!(!m.contains_key("rustproxy_version"));
    let m = info_map(&info(&mut c, &["proxy"]));
    assert!(m.contains_key("rustproxy_version"));
    // Unknown backend.
    let e = redis::cmd("INFO")
        .arg("BACKEND")
        .arg("nosuch")
        .query::<String>(&mut c);
    let msg = format!("{:?}", e.expect_err("unknown backend"));
    assert!(msg.contains("unknown backend"), "{msg}");
    let e = redis::cmd("INFO")
        .arg("BACKEND")
        .arg("7")
        .query::<String>(&mut c);
    assert!(e.is_err(), "INFO BACKEND 7 of 2: {e:?}");
}

/// SIGUSR1 reopens the log file (logrotate's `postrotate` step): after the file is renamed, new
/// lines go to a new file at the configured path.
#[test]
fn sigusr1_reopens_the_log_file() {
    let r = common::Redis::start();
    let dir = common::tmp_dir("logrotate");
    let log = dir.join("proxy.log");
    let port = common::free_port();
    let args: Vec<String> = vec![
        "-l".into(),
        format!("127.0.0.1:{port}"),
        "-b".into(),
        r.addr(),
        "-v".into(),
        "debug".into(),
        "-o".into(),
        log.to_string_lossy().into_owned(),
    ];
    let proxy = common::Proxy::spawn(port, &args);
    let mut c = proxy.raw();
    assert_eq!(c.call(&[b"PING"]), b"+PONG\r\n");
    let rotated = dir.join("proxy.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    common::signal(proxy.child.id(), "USR1");
    // The reopen happens at the next log line; connections log at debug level. Bounded.
    wait_until("a new log file after SIGUSR1", secs(4), ms(20), || {
        let mut d = proxy.raw();
        assert_eq!(d.call(&[b"PING"]), b"+PONG\r\n");
        std::fs::metadata(&log)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    assert!(std::fs::read_to_string(&rotated)
        .unwrap_or_default()
        .contains("starting"));
    let _ = std::fs::remove_dir_all(&dir);
}
