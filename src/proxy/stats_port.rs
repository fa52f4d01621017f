//! The stats port: nutcracker's JSON document for a plain connect, and a small HTTP/1.x server
//! for monitoring and load balancers: `GET /` (the JSON), `GET /metrics` (Prometheus text),
//! `GET /health` (200 while the event loop runs) and `GET /ready` (200 when every pool listens
//! and has a backend up, else 503); any other path is 404, another method 405. Each connection
//! gets one answer and closes.
//!
//! Invariants:
//! - A connection that sends nothing within `STATS_WAIT`, or sends bytes that are not an HTTP
//!   request line, gets the bare JSON document, as nutcracker's clients expect.
//! - Answers are computed from the proxy's state in the event loop; nothing here blocks. `/ready`
//!   may open (non-blocking) a connection to a backend that has none, so that a backend that went
//!   away, or came back, is noticed without client traffic; it never waits for it.

use super::*;

/// A connection to the stats port: nutcracker's JSON document for a plain connect, or an
/// HTTP GET (`/metrics`: Prometheus text; anything else: the JSON).
pub(super) struct StatsConn {
    stream: TcpStream,
    accepted: Instant,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    answered: bool,
}

/// How long a stats connection may stay silent before it gets the JSON document (nutcracker's
/// clients just connect and read).
pub(super) const STATS_WAIT: Duration = Duration::from_millis(100);

/// How long a connection that started an HTTP request line may take to finish its headers; then
/// it is answered from what it sent.
pub(super) const HTTP_WAIT: Duration = Duration::from_secs(2);

const TEXT: &str = "text/plain; charset=utf-8";

/// What a stats connection asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// Nothing, or bytes that are not an HTTP request line: the bare JSON document (nutcracker).
    Bare,
    /// An HTTP request; `head`: HEAD (headers only).
    Http { head: bool, route: Route },
}

/// The HTTP resource asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// `/`: nutcracker's JSON document.
    Json,
    /// `/metrics`: Prometheus text.
    Metrics,
    /// `/health`: alive.
    Health,
    /// `/ready`: listening, and a backend up in every pool.
    Ready,
    NotFound,
    /// A method other than GET or HEAD.
    BadMethod,
}

/// Classify what a stats connection sent: `METHOD /path[?query] [HTTP/x.y]` is HTTP (the query is
/// ignored); anything else, nothing included, is `Ask::Bare`.
pub(super) fn parse_request(buf: &[u8]) -> Ask {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Ask::Bare;
    };
    if !method.iter().all(u8::is_ascii_uppercase) || !target.starts_with(b"/") {
        return Ask::Bare;
    }
    if words.next().is_some_and(|v| !v.starts_with(b"HTTP/")) {
        return Ask::Bare;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head = method == b"HEAD";
    let route = if method != b"GET" && !head {
        Route::BadMethod
    } else {
        match path {
            b"/" => Route::Json,
            b"/metrics" => Route::Metrics,
            b"/health" => Route::Health,
            b"/ready" => Route::Ready,
            _ => Route::NotFound,
        }
    };
    Ask::Http { head, route }
}

impl Proxy {
    pub(super) fn stats_accept(&mut self) {
        loop {
            let Some(l) = &self.stats_listener else {
                return;
            };
            let mut stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("stats accept failed: {e}");
                    return;
                }
            };
            let entry = self.stats_conns.vacant_entry();
            let token = Kind::Stats(entry.key() + 1).token();
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_ok()
            {
                entry.insert(StatsConn {
                    stream,
                    accepted: self.now,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    wpos: 0,
                    answered: false,
                });
            }
        }
    }

    pub(super) fn stats_event(&mut self, i: usize) {
        let mut eof = false;
        if let Some(sc) = self.stats_conns.get_mut(i) {
            let mut tmp = [0u8; 4096];
            loop {
                match sc.stream.read(&mut tmp) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) if sc.rbuf.len() < 16 * 1024 => sc.rbuf.extend_from_slice(&tmp[..n]),
                    Ok(_) => continue,
                    Err(e) if would_block(&e) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        } else {
            return;
        }
        let ask = self.stats_conns.get(i).and_then(|sc| {
            let r = &sc.rbuf;
            let complete =
                r.windows(4).any(|w| w == b"\r\n\r\n") || r.windows(2).any(|w| w == b"\n\n");
            (!sc.answered && (complete || eof)).then(|| parse_request(r))
        });
        if let Some(ask) = ask {
            self.stats_answer(i, ask);
        }
        self.stats_flush(i);
    }

    /// Queue the answer: bare JSON, or an HTTP response.
    pub(super) fn stats_answer(&mut self, i: usize, ask: Ask) {
        let (head_only, route) = match ask {
            Ask::Bare => (false, None),
            Ask::Http { head, route } => (head, Some(route)),
        };
        let (status, ctype, body) = match route {
            None | Some(Route::Json) => (
                "200 OK",
                "application/json",
                crate::metrics::nutcracker_json(&self.view(), &self.hostname),
            ),
            Some(Route::Metrics) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::prometheus(&self.view())
                    + &crate::hotkeys::prometheus(&self.hot_view(crate::hotkeys::SHOWN)),
            ),
            Some(Route::Health) => ("200 OK", TEXT, "ok\n".to_string()),
            Some(Route::Ready) => {
                let (ready, why) = self.readiness();
                self.ready_probe();
                let status = if ready {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                (status, TEXT, why)
            }
            Some(Route::NotFound) => (
                "404 Not Found",
                TEXT,
                "not found: the stats port serves /, /metrics, /health and /ready\n".to_string(),
            ),
            Some(Route::BadMethod) => (
                "405 Method Not Allowed",
                TEXT,
                "method not allowed: GET or HEAD\n".to_string(),
            ),
        };
        let Some(sc) = self.stats_conns.get_mut(i) else {
            return;
        };
        sc.answered = true;
        if route.is_some() {
            let allow = if route == Some(Route::BadMethod) {
                "Allow: GET, HEAD\r\n"
            } else {
                ""
            };
            sc.wbuf.extend_from_slice(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}\
                     Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        if !head_only {
            sc.wbuf.extend_from_slice(body.as_bytes());
        }
    }

    /// Ready: every pool listens and has at least one backend up (not ejected, and its last
    /// connect did not fail). The text says which pool is not and why.
    fn readiness(&self) -> (bool, String) {
        let now = self.now;
        let mut ready = true;
        let mut text = String::new();
        for (pi, p) in self.pools.iter().enumerate().filter(|(_, p)| !p.removed) {
            let listening = self.listeners.get(pi).is_some_and(Option::is_some);
            let up = p
                .order
                .iter()
                .map(|&s| &p.servers[s])
                .filter(|s| !s.retired && !s.is_ejected() && s.connect_failures == 0)
                .count();
            let ok = listening && up > 0;
            ready &= ok;
            text.push_str(&format!(
                "pool {}: {}, {up} of {} backends up",
                p.cfg.name,
                if listening {
                    "listening"
                } else {
                    "not listening"
                },
                p.order.len()
            ));
            if !ok {
                // The first backend's reason is enough to start looking.
                if let Some(s) = p.order.first().map(|&s| &p.servers[s]) {
                    let state = if s.is_ejected() {
                        "ejected"
                    } else if s.is_down(now) || s.connect_failures > 0 {
                        "down"
                    } else {
                        "up"
                    };
                    text.push_str(&format!(
                        " ({} {state}: {})",
                        s.name,
                        s.last_error.replace(['\r', '\n'], " ")
                    ));
                }
            }
            text.push('\n');
        }
        let head = if ready { "ready\n" } else { "not ready\n" };
        (ready, format!("{head}{text}"))
    }

    /// Connect (non-blocking) to every backend that has no shared connection and is not in its
    /// reconnect backoff, as `preconnect` does at start: the outcome shows in the next `/ready`.
    fn ready_probe(&mut self) {
        let now = self.now;
        for pi in 0..self.pools.len() {
            if self.pools[pi].removed {
                continue;
            }
            for oi in 0..self.pools[pi].order.len() {
                let si = self.pools[pi].order[oi];
                let s = &self.pools[pi].servers[si];
                if s.retired || s.is_down(now) || s.conns[0].iter().any(Option::is_some) {
                    continue;
                }
                let _ = self.conn_for(pi, si, 0, None, None);
            }
        }
    }

    /// Write what is queued; close once the answer is out.
    pub(super) fn stats_flush(&mut self, i: usize) {
        let Some(sc) = self.stats_conns.get_mut(i) else {
            return;
        };
        while sc.wpos < sc.wbuf.len() {
            match sc.stream.write(&sc.wbuf[sc.wpos..]) {
                Ok(0) => break,
                Ok(n) => sc.wpos += n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if sc.answered {
            let mut sc = self.stats_conns.remove(i);
            let _ = self.poll.registry().deregister(&mut sc.stream);
        }
    }

    /// Stats connections that said nothing get the JSON document (nutcracker's behaviour).
    pub(super) fn stats_timers(&mut self) {
        let now = self.now;
        let due: Vec<usize> = self
            .stats_conns
            .iter()
            .filter(|(_, sc)| {
                let wait = if sc.rbuf.first().is_some_and(u8::is_ascii_uppercase) {
                    HTTP_WAIT
                } else {
                    STATS_WAIT
                };
                !sc.answered && now.duration_since(sc.accepted) >= wait
            })
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let ask = self
                .stats_conns
                .get(i)
                .map_or(Ask::Bare, |sc| parse_request(&sc.rbuf));
            self.stats_answer(i, ask);
            self.stats_flush(i);
        }
    }

    // ----- reload -----------------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(head: bool, route: Route) -> Ask {
        Ask::Http { head, route }
    }

    #[test]
    fn requests_are_classified() {
        assert_eq!(parse_request(b""), Ask::Bare);
        assert_eq!(parse_request(b"\r\n"), Ask::Bare);
        assert_eq!(parse_request(b"stats\n"), Ask::Bare);
        assert_eq!(parse_request(b"get /metrics HTTP/1.1\r\n\r\n"), Ask::Bare);
        assert_eq!(parse_request(b"GET metrics HTTP/1.1\r\n\r\n"), Ask::Bare);
        assert_eq!(parse_request(b"GET / SMTP\r\n\r\n"), Ask::Bare);
        let cases: [(&[u8], Ask); 10] = [
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                http(false, Route::Json),
            ),
            (
                b"GET /metrics HTTP/1.1\r\n\r\n",
                http(false, Route::Metrics),
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0\n\n",
                http(false, Route::Metrics),
            ),
            (b"GET /health HTTP/1.0\r\n\r\n", http(false, Route::Health)),
            (b"HEAD /ready HTTP/1.1\r\n\r\n", http(true, Route::Ready)),
            (b"GET /ready\r\n", http(false, Route::Ready)),
            (b"GET /nope HTTP/1.1\r\n\r\n", http(false, Route::NotFound)),
            (
                b"GET /metrics/ HTTP/1.1\r\n\r\n",
                http(false, Route::NotFound),
            ),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                http(false, Route::BadMethod),
            ),
            (b"GET /ready HTTP/1.1", http(false, Route::Ready)),
        ];
        for (req, want) in cases {
            assert_eq!(parse_request(req), want, "{}", String::from_utf8_lossy(req));
        }
    }
}
