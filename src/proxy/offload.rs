//! Work that may block, kept off the event loop: resolving the host names of a configuration
//! being reloaded, and a host name a cluster node announces in MOVED/ASK. One helper thread,
//! started on the first such job, runs the jobs in order; each answer comes back through the
//! poll (a `mio::Waker`) and is applied on the loop thread, so the loop never waits on a DNS
//! server. A reload whose servers are all IP addresses is read on the loop (a local file and
//! its certificates: bounded) and needs no thread.
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

/// The helper thread, started on its first job: a second thread makes glibc take its
/// multi-threaded paths in every syscall wrapper and allocation (about 300 more user-space
/// instructions per request at pipeline 1, measured), so a proxy that never needs DNS off the
/// loop never starts it.
pub(super) struct Offload {
    waker: std::sync::Arc<mio::Waker>,
    worker: Option<(Sender<Job>, Receiver<Answer>)>,
}

impl Offload {
    /// Register the waker; the thread starts with the first job.
    pub(super) fn new(poll: &Poll) -> io::Result<Offload> {
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        Ok(Offload {
            waker,
            worker: None,
        })
    }

    /// Queue a job (starting the thread if needed); false if the thread cannot run.
    pub(super) fn send(&mut self, job: Job) -> bool {
        if self.worker.is_none() {
            match start(std::sync::Arc::clone(&self.waker)) {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    warn!("cannot start the offload thread: {e}");
                    return false;
                }
            }
        }
        self.worker
            .as_ref()
            .is_some_and(|(jobs, _)| jobs.send(job).is_ok())
    }

    fn try_recv(&self) -> Option<Answer> {
        self.worker.as_ref().and_then(|(_, a)| a.try_recv().ok())
    }
}

/// Start the helper thread; it ends when the proxy (the job sender) is dropped.
fn start(waker: std::sync::Arc<mio::Waker>) -> io::Result<(Sender<Job>, Receiver<Answer>)> {
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
    Ok((jobs, answers))
}

impl Proxy {
    /// The waker fired: apply every answer that came back.
    pub(super) fn offload_answers(&mut self) {
        loop {
            let Some(answer) = self.offload.try_recv() else {
                return;
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
    with_tls(config)
}

/// Load a configuration's certificates (local files).
pub(super) fn with_tls(config: Config) -> Result<Loaded, String> {
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
