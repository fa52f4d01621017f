//! Work that may block, kept off the event loop: reading and resolving a configuration file
//! for a reload, and resolving a host name a cluster node announces in MOVED/ASK. One helper
//! thread runs the jobs in order; each answer comes back through the poll (a `mio::Waker`)
//! and is applied on the loop thread, so the loop never waits on a disk or a DNS server.
//!
//! Invariants: the helper thread touches no proxy state (it gets owned inputs and returns
//! owned results); jobs are answered in the order they were sent; a reload and its reply
//! happen on the loop thread, as before.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

use super::*;

/// The poll token of the waker (outside every `Kind`'s range of slab keys).
pub(super) const WAKER: Token = Token(usize::MAX);

/// Who waits for a reload's outcome: a client's chain slot (PROXY RELOAD), or nobody (SIGHUP).
pub(super) type ReplyTo = Option<(usize, u64, u64)>;

/// A pool's TLS configurations (for clients, to backends), loaded from their files.
pub(super) type TlsPair = (
    Option<std::sync::Arc<rustls::ServerConfig>>,
    Option<std::sync::Arc<rustls::ClientConfig>>,
);

/// A configuration read for a reload, with each pool's TLS configurations.
pub(super) type Loaded = (Config, Vec<TlsPair>);

pub(super) enum Job {
    Load {
        path: PathBuf,
        dry_run: bool,
        reply: ReplyTo,
    },
    Resolve {
        pool: usize,
        host: String,
        port: u16,
    },
}

pub(super) enum Answer {
    Loaded {
        result: Result<Loaded, String>,
        dry_run: bool,
        reply: ReplyTo,
    },
    Resolved {
        pool: usize,
        host: String,
        port: u16,
        result: Result<SocketAddr, String>,
    },
}

pub(super) struct Offload {
    jobs: Sender<Job>,
    answers: Receiver<Answer>,
}

impl Offload {
    /// Start the helper thread; it ends when the proxy (the job sender) is dropped.
    pub(super) fn start(poll: &Poll) -> io::Result<Offload> {
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let (jobs, todo) = channel::<Job>();
        let (done, answers) = channel::<Answer>();
        std::thread::Builder::new()
            .name("rustproxy-offload".into())
            .spawn(move || {
                while let Ok(job) = todo.recv() {
                    let answer = match job {
                        Job::Load {
                            path,
                            dry_run,
                            reply,
                        } => Answer::Loaded {
                            result: load(&path),
                            dry_run,
                            reply,
                        },
                        Job::Resolve { pool, host, port } => {
                            let result = (host.as_str(), port)
                                .to_socket_addrs()
                                .map_err(|e| e.to_string())
                                .and_then(|mut a| a.next().ok_or_else(|| "no address".into()));
                            Answer::Resolved {
                                pool,
                                host,
                                port,
                                result,
                            }
                        }
                    };
                    if done.send(answer).is_err() || waker.wake().is_err() {
                        break;
                    }
                }
            })?;
        Ok(Offload { jobs, answers })
    }

    pub(super) fn send(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

impl Proxy {
    /// The waker fired: apply every answer that came back.
    pub(super) fn offload_answers(&mut self) {
        loop {
            let answer = match self.offload.answers.try_recv() {
                Ok(a) => a,
                Err(_) => return,
            };
            match answer {
                Answer::Loaded {
                    result,
                    dry_run,
                    reply,
                } => self.finish_reload(result, dry_run, reply),
                Answer::Resolved {
                    pool,
                    host,
                    port,
                    result,
                } => self.resolved(pool, host, port, result),
            }
        }
    }

    /// A cluster node's name was resolved: remember it, and resend the requests that were
    /// redirected to it meanwhile (or fail them).
    fn resolved(&mut self, pool_i: usize, host: String, port: u16, r: Result<SocketAddr, String>) {
        let waiting: Vec<Parked> = {
            let (now, later): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|w| w.pool == pool_i && w.host == host && w.port == port);
            self.parked = later;
            now
        };
        match r {
            Ok(addr) => {
                if let Some(p) = self.pools.get_mut(pool_i) {
                    p.resolved.insert((host.clone(), port), addr);
                }
                for w in waiting {
                    self.redirect(pool_i, &w.from, w.p, &w.req, &w.reply);
                }
            }
            Err(e) => {
                warn!("cannot resolve cluster node {host}:{port}: {e}");
                for w in waiting {
                    if let Some((key, id)) = w.p.client() {
                        let mut out = Vec::new();
                        reply_error(
                            &mut out,
                            &format!("ERR cannot follow redirection to {host}:{port}: {e}"),
                        );
                        self.deliver_to(key, Some(id), w.p.seq, w.p.part, &out);
                    }
                }
            }
        }
    }
}

/// Read a configuration and load its pools' certificates (on the helper thread).
fn load(path: &std::path::Path) -> Result<Loaded, String> {
    let config = crate::config::load(path).map_err(|e| e.to_string())?;
    let mut tls = Vec::with_capacity(config.pools.len());
    for pc in &config.pools {
        tls.push(crate::pool::tls_configs(pc).map_err(|e| format!("pool {}: {e}", pc.name))?);
    }
    Ok((config, tls))
}

/// A redirected request waiting for its target's name to be resolved.
pub(super) struct Parked {
    pub pool: usize,
    pub host: String,
    pub port: u16,
    /// The node that answered MOVED/ASK (its host, for empty-host redirections).
    pub from: String,
    pub p: Pending,
    pub req: Vec<u8>,
    pub reply: Vec<u8>,
}
