//! The stats port: nutcracker's JSON document for a plain connect, Prometheus text for
//! `GET /metrics`. Each connection gets one answer and closes.

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
        let request = self.stats_conns.get(i).and_then(|sc| {
            if sc.answered {
                return None;
            }
            let r = &sc.rbuf;
            let complete =
                r.windows(4).any(|w| w == b"\r\n\r\n") || r.windows(2).any(|w| w == b"\n\n");
            if complete || (eof && !r.is_empty()) {
                Some(r.starts_with(b"GET /metrics"))
            } else if eof {
                Some(false)
            } else {
                None
            }
        });
        let http = self
            .stats_conns
            .get(i)
            .is_some_and(|sc| sc.rbuf.starts_with(b"GET "));
        if let Some(metrics) = request {
            self.stats_answer(i, http, metrics);
        }
        self.stats_flush(i);
    }

    /// Queue the answer: HTTP-wrapped when asked over HTTP.
    pub(super) fn stats_answer(&mut self, i: usize, http: bool, metrics: bool) {
        let body = {
            let view = self.view();
            if metrics {
                crate::metrics::prometheus(&view)
            } else {
                crate::metrics::nutcracker_json(&view, &self.hostname)
            }
        };
        let Some(sc) = self.stats_conns.get_mut(i) else {
            return;
        };
        sc.answered = true;
        if http {
            let ctype = if metrics {
                "text/plain; version=0.0.4; charset=utf-8"
            } else {
                "application/json"
            };
            sc.wbuf.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        sc.wbuf.extend_from_slice(body.as_bytes());
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
            .filter(|(_, sc)| !sc.answered && now.duration_since(sc.accepted) >= STATS_WAIT)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            self.stats_answer(i, false, false);
            self.stats_flush(i);
        }
    }

    // ----- reload -----------------------------------------------------------------------
}
