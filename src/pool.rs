//! A pool: its configuration, its servers, its ring, and what a reload changes.
//!
//! Invariants:
//! - `servers` is a list of stable slots: a server keeps its slot, and so its connections,
//!   in-flight requests and counters, for as long as it stays in the configuration. Connections
//!   and in-flight entries refer to servers by slot.
//! - `order[i]` is the slot of the i-th server of the configuration: positions are what users see
//!   (BACKENDNUM, BACKENDS, FORWARD n) and what the ring returns. A removed server leaves `order`
//!   at once (no new requests) but keeps its slot, marked `retired`, while its connections drain.
//! - The ring is rebuilt whenever membership, weights or ejection change, from `order`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::backend::Server;
use crate::config::{PoolConfig, ServerConfig};
use crate::resp::Limits;
use crate::ring::{node_identity, Ring, RingNode};

pub struct Pool {
    pub cfg: PoolConfig,
    /// Stable server slots (see the module comment).
    pub servers: Vec<Server>,
    /// Config order -> slot.
    pub order: Vec<usize>,
    pub ring: Ring,
    /// Server names in config order, shared by fan-out combiners for their error messages.
    pub names: Rc<Vec<String>>,
    pub limits: Limits,
    /// Connected clients of this pool.
    pub clients: usize,
    /// Removed by a reload: no listener; its clients drain.
    pub removed: bool,
    /// Who may log in, at which level (requirepass / redis_auth / user lines).
    pub users: crate::auth::Users,
    /// rename_command.
    pub renames: crate::auth::Renames,
    /// TLS for clients (tls_cert_file) and to backends (backend_tls); loaded by the proxy.
    pub tls_server: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub tls_client: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Redis Cluster pools: the slot map (None for static pools).
    pub cluster: Option<ClusterMap>,
    /// Bumped whenever the ring is rebuilt (membership, weights, ejection): state that
    /// remembered where a key lived (a queued transaction) re-checks it when this changed.
    pub generation: u64,
    /// Cluster node names resolved off the loop (see `proxy::offload`), by (host, port).
    pub resolved: std::collections::HashMap<(String, u16), std::net::SocketAddr>,
    /// `rebalance yes`: the rebalance in progress (moving keys are moved before they are
    /// served), and the last one finished (for INFO); see `rebalance.rs`.
    pub rebalance: Option<Box<crate::rebalance::Rebalance>>,
    pub last_rebalance: Option<Box<crate::rebalance::Rebalance>>,
    pub rebalances: u64,
    /// Registration connections (slot, connection, fingerprint announced), one per server,
    /// named after the ring this process serves (the multi-process barrier).
    pub registrations: Vec<(usize, usize, u64)>,
    /// Hot-key detection (`hotkeys`), and the hot-key cache (`hotkey_cache`; None: off).
    pub hot: crate::hotkeys::HotKeys,
    pub cache: Option<Box<crate::hotcache::HotCache>>,
}

pub use crate::cluster::NO_NODE;

/// The slot map of a cluster pool. Invariant: every entry is NO_NODE or a position in `order`.
pub struct ClusterMap {
    /// Slot -> config position of the master serving it.
    pub slots: Vec<u16>,
    pub last_refresh: Instant,
    /// A refresh was asked for (MOVED, a node failure) and not sent yet.
    pub wanted: bool,
    /// A CLUSTER SLOTS request is in flight (since `sent`).
    pub in_flight: bool,
    pub sent: Instant,
    /// Replicas per slot range (start, end, server slots of the replicas), sorted by start;
    /// used by `read_from replica|prefer-replica`.
    pub replicas: Vec<(u16, u16, Vec<usize>)>,
    /// Round-robin cursor over a range's replicas.
    pub rr: usize,
}

/// Load a pool's TLS configurations (certificate files are read now, so a bad file is a
/// start-up or reload error, not a per-connection one).
#[allow(clippy::type_complexity)]
pub fn tls_configs(
    cfg: &PoolConfig,
) -> Result<
    (
        Option<std::sync::Arc<rustls::ServerConfig>>,
        Option<std::sync::Arc<rustls::ClientConfig>>,
    ),
    String,
> {
    let server = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(c), Some(k)) => Some(crate::tls::server_config(
            c,
            k,
            cfg.tls_client_ca_file.as_deref(),
        )?),
        _ => None,
    };
    let client = if cfg.backend_tls {
        Some(crate::tls::client_config(
            cfg.backend_tls_ca_file.as_deref(),
            cfg.backend_tls_cert_file.as_deref(),
            cfg.backend_tls_key_file.as_deref(),
            cfg.backend_tls_insecure,
        )?)
    } else {
        None
    };
    Ok((server, client))
}

/// What applying a new configuration to a pool changed.
#[derive(Default, Debug)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub reweighted: Vec<String>,
    /// Slots of removed servers: their connections close once their in-flight requests are done.
    pub retired: Vec<usize>,
    /// Connections no longer needed (fewer `server_connections`): close once idle.
    pub retire_conns: Vec<usize>,
    pub ring_changed: bool,
    pub settings_changed: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.reweighted.is_empty()
            && !self.ring_changed
            && !self.settings_changed
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", self.added.join(" ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(" ")));
        }
        if !self.reweighted.is_empty() {
            parts.push(format!("reweighted {}", self.reweighted.join(" ")));
        }
        if self.ring_changed && self.added.is_empty() && self.removed.is_empty() {
            parts.push("ring rebuilt".into());
        }
        if self.settings_changed {
            parts.push("settings changed".into());
        }
        if parts.is_empty() {
            "unchanged".into()
        } else {
            parts.join(", ")
        }
    }
}

fn new_server(s: &ServerConfig, nconns: usize) -> Server {
    Server::new(
        s.display_name(),
        s.host.clone(),
        s.port,
        s.addr,
        s.weight,
        nconns,
    )
}

fn limits(cfg: &PoolConfig) -> Limits {
    Limits {
        max_bulk_len: cfg.max_request,
        ..Limits::default()
    }
}

/// Same server for a reload: same address and same name (the name places keys).
fn same_server(a: &ServerConfig, b: &Server) -> bool {
    a.host == b.host && a.port == b.port && a.display_name() == b.name
}

/// What applying `new` to a pool configured with `old` would change (for dry runs and logs).
pub fn describe_diff(old: &PoolConfig, new: &PoolConfig) -> String {
    let key = |s: &ServerConfig| (s.host.clone(), s.port, s.display_name());
    let mut ch = Changes::default();
    for s in &new.servers {
        match old.servers.iter().find(|o| key(o) == key(s)) {
            None => ch.added.push(s.display_name()),
            Some(o) if o.weight != s.weight => ch.reweighted.push(s.display_name()),
            Some(_) => {}
        }
    }
    for o in &old.servers {
        if !new.servers.iter().any(|s| key(s) == key(o)) {
            ch.removed.push(o.display_name());
        }
    }
    ch.ring_changed = old.hash != new.hash
        || old.distribution != new.distribution
        || old.hash_tag != new.hash_tag
        || old.servers.iter().map(key).collect::<Vec<_>>()
            != new.servers.iter().map(key).collect::<Vec<_>>();
    let mut o = old.clone();
    o.servers = new.servers.clone();
    ch.settings_changed = o != *new;
    ch.describe()
}

impl Pool {
    pub fn new(cfg: PoolConfig) -> Pool {
        let servers: Vec<Server> = cfg
            .servers
            .iter()
            .map(|s| new_server(s, cfg.server_connections))
            .collect();
        let order = (0..servers.len()).collect();
        let mut p = Pool {
            users: crate::auth::Users::from_config(&cfg),
            renames: crate::auth::Renames::from_config(&cfg),
            tls_server: None,
            tls_client: None,
            cluster: if cfg.cluster {
                Some(ClusterMap {
                    slots: vec![NO_NODE; crate::cluster::SLOTS],
                    last_refresh: Instant::now(),
                    wanted: true,
                    in_flight: false,
                    sent: Instant::now(),
                    replicas: Vec::new(),
                    rr: 0,
                })
            } else {
                None
            },
            limits: limits(&cfg),
            ring: Ring::build(cfg.hash, cfg.distribution, &[]),
            names: Rc::new(Vec::new()),
            cfg,
            servers,
            order,
            clients: 0,
            removed: false,
            generation: 0,
            resolved: Default::default(),
            rebalance: None,
            last_rebalance: None,
            rebalances: 0,
            registrations: Vec::new(),
            hot: crate::hotkeys::HotKeys::new(0, 1, 1, 0),
            cache: None,
        };
        p.hot_configure();
        p.rebuild();
        p
    }

    /// The routing inputs of this pool, for the router.
    pub fn target(&self) -> crate::router::Target<'_> {
        crate::router::Target {
            ring: &self.ring,
            tag: self.cfg.hash_tag,
            nservers: self.len(),
            disabled: &self.cfg.disable_commands,
            slots: self.cluster.as_ref().map(|c| c.slots.as_slice()),
            hash_override: self.cfg.hash_override,
        }
    }

    /// The slot (stable identity) of the server that owns `key` now (ring or cluster slot
    /// map, hash tag applied); None when no server is live.
    pub fn owner_slot(&self, key: &[u8]) -> Option<usize> {
        self.target()
            .pick(key)
            .and_then(|pos| self.order.get(pos).copied())
    }

    /// Number of configured (non-retired) servers.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Rebuild the ring and the name list from `order` (ejected servers get no points).
    pub fn rebuild(&mut self) {
        let nodes: Vec<RingNode> = self
            .cfg
            .servers
            .iter()
            .zip(&self.order)
            .map(|(s, &slot)| RingNode {
                identity: node_identity(&s.host, s.port, s.name.as_deref()),
                weight: s.weight,
                live: !self.servers[slot].is_ejected(),
            })
            .collect();
        self.ring = Ring::build(self.cfg.hash, self.cfg.distribution, &nodes);
        self.generation += 1;
        self.names = Rc::new(
            self.order
                .iter()
                .map(|&s| self.servers[s].name.clone())
                .collect(),
        );
    }

    /// A server (by slot) failed; eject it if that was one failure too many.
    pub fn server_failed(&mut self, slot: usize, now: Instant) {
        let cfg = &self.cfg;
        let retry = Duration::from_millis(cfg.server_retry_timeout_ms);
        let Some(srv) = self.servers.get_mut(slot) else {
            return;
        };
        if srv.retired {
            return;
        }
        if srv.failed(now, cfg.auto_eject_hosts, cfg.server_failure_limit, retry) {
            warn!(
                "b{slot}({}) {} ejected from pool {} for {} ms after {} failures",
                srv.name, srv.addr, cfg.name, cfg.server_retry_timeout_ms, cfg.server_failure_limit
            );
            self.rebuild();
        }
    }

    /// Bring back ejected servers whose retry time came.
    pub fn uneject_due(&mut self, now: Instant) {
        let mut changed = false;
        for (i, srv) in self.servers.iter_mut().enumerate() {
            if matches!(srv.ejected_until, Some(t) if now >= t) {
                srv.ejected_until = None;
                // Give it a fresh connect attempt right away.
                srv.down_until = None;
                info!(
                    "b{i}({}) {} back in the ring of pool {}",
                    srv.name, srv.addr, self.cfg.name
                );
                changed = true;
            }
        }
        if changed {
            self.rebuild();
        }
    }

    /// Position of the server at host:port, if configured.
    pub fn position(&self, host: &str, port: u16) -> Option<usize> {
        self.order.iter().position(|&slot| {
            let s = &self.servers[slot];
            s.port == port && (s.host == host || s.addr.ip().to_string() == host)
        })
    }

    /// Add a server (a cluster node named by a redirect) and return its position.
    /// A name that is not an IP address must be in `resolved` (names are resolved off the
    /// event loop); Err otherwise.
    pub fn add_node(&mut self, host: &str, port: u16) -> Result<(usize, Changes), String> {
        if let Some(p) = self.position(host, port) {
            return Ok((p, Changes::default()));
        }
        let s = if host.parse::<std::net::IpAddr>().is_ok() {
            crate::config::parse_server(&format!("{host}:{port}"), 0)?
        } else {
            let addr = self
                .resolved
                .get(&(host.to_string(), port))
                .ok_or_else(|| format!("{host}:{port} is not resolved yet"))?;
            let mut s = crate::config::parse_server(&format!("{addr}"), 0)?;
            s.host = host.to_string();
            s
        };
        let mut cfg = self.cfg.clone();
        cfg.servers.push(s);
        let ch = self.reconfigure(cfg);
        let pos = self.position(host, port).ok_or("node not added")?;
        Ok((pos, ch))
    }

    /// Apply a CLUSTER SLOTS answer: the masters become the servers (known ones keep their
    /// slot and connections), and the slot map is rebuilt.
    pub fn apply_slots(&mut self, ranges: &[crate::cluster::Range]) -> Result<Changes, String> {
        let mut masters: Vec<(String, u16)> = ranges.iter().map(|r| r.master.clone()).collect();
        masters.sort();
        masters.dedup();
        if masters.is_empty() {
            return Err("CLUSTER SLOTS named no master".into());
        }
        let mut cfg = self.cfg.clone();
        cfg.servers = masters
            .iter()
            .map(|(h, p)| crate::config::parse_server(&format!("{h}:{p}"), 0))
            .collect::<Result<_, _>>()?;
        let ch = self.reconfigure(cfg);
        let mut slots = vec![NO_NODE; crate::cluster::SLOTS];
        for r in ranges {
            let Some(pos) = self.position(&r.master.0, r.master.1) else {
                continue;
            };
            for s in r.start..=r.end.min(crate::cluster::SLOTS as u16 - 1) {
                slots[s as usize] = pos as u16;
            }
        }
        let mut replicas = Vec::with_capacity(ranges.len());
        if self.cfg.read_from != crate::config::ReadFrom::Master {
            for r in ranges {
                let slots: Vec<usize> = r
                    .replicas
                    .iter()
                    .filter_map(|(h, p)| self.replica_server(h, *p))
                    .collect();
                replicas.push((r.start, r.end, slots));
            }
            replicas.sort_by_key(|r| r.0);
        }
        if let Some(c) = self.cluster.as_mut() {
            c.slots = slots;
            c.replicas = replicas;
            c.last_refresh = Instant::now();
            c.wanted = false;
            c.in_flight = false;
        }
        Ok(ch)
    }

    /// The server slot of a replica at host:port (READONLY connections), created on first use.
    /// Replica slots are outside `order`: not listed by BACKENDS, not fan-out targets.
    fn replica_server(&mut self, host: &str, port: u16) -> Option<usize> {
        if let Some(i) = self
            .servers
            .iter()
            .position(|s| s.readonly && !s.retired && s.port == port && s.host == host)
        {
            return Some(i);
        }
        let sc = crate::config::parse_server(&format!("{host}:{port}"), 0).ok()?;
        let mut srv = new_server(&sc, self.cfg.server_connections);
        srv.readonly = true;
        self.servers.push(srv);
        Some(self.servers.len() - 1)
    }

    /// Cluster pools with `read_from`: the server slot to read `slot` from (a replica when the
    /// setting and the topology allow), or None for "its master".
    pub fn read_slot(&mut self, slot: u16, now: Instant) -> Option<usize> {
        let prefer = self.cfg.read_from;
        if prefer == crate::config::ReadFrom::Master {
            return None;
        }
        let c = self.cluster.as_mut()?;
        let i = c.replicas.partition_point(|r| r.0 <= slot).checked_sub(1)?;
        let (start, end, reps) = &c.replicas[i];
        if slot < *start || slot > *end || reps.is_empty() {
            return None;
        }
        c.rr = c.rr.wrapping_add(1);
        let n = reps.len();
        for j in 0..n {
            let s = reps[(c.rr + j) % n];
            if !self.servers[s].is_down(now) {
                return Some(s);
            }
        }
        // Every replica is down: `prefer-replica` falls back to the master; `replica` too,
        // rather than failing a read the master can answer.
        None
    }

    /// (Re)build the hot-key detector and cache from the configuration, empty.
    fn hot_configure(&mut self) {
        let c = &self.cfg;
        self.hot =
            crate::hotkeys::HotKeys::new(c.hotkeys, c.hotkeys_sample, c.hotkeys_window_ms, 0);
        self.cache = (c.hotkey_cache > 0 && c.hotkeys > 0 && !c.cluster).then(|| {
            Box::new(crate::hotcache::HotCache::new(
                c.hotkey_cache,
                c.hotkey_cache_max_value,
                c.hotkey_cache_threshold,
            ))
        });
    }

    /// Apply a new configuration of this pool (same name). Unchanged servers keep their slot;
    /// added ones get a new slot; removed ones are retired (see `Changes::retired`).
    pub fn reconfigure(&mut self, cfg: PoolConfig) -> Changes {
        let mut ch = Changes::default();
        let mut order = Vec::with_capacity(cfg.servers.len());
        let mut kept = vec![false; self.servers.len()];
        // Connections select `redis_db` in their handshake: a new one means new connections
        // (the old ones drain; clients' later commands go to the new ones).
        let reselect = self.cfg.redis_db != cfg.redis_db;
        for s in &cfg.servers {
            let found = self
                .order
                .iter()
                .copied()
                .find(|&slot| !kept[slot] && same_server(s, &self.servers[slot]));
            let slot = match found {
                Some(slot) => {
                    kept[slot] = true;
                    let srv = &mut self.servers[slot];
                    if srv.weight != s.weight {
                        ch.reweighted.push(srv.name.clone());
                        srv.weight = s.weight;
                    }
                    srv.addr = s.addr;
                    if reselect {
                        ch.retire_conns.extend(srv.drain_conns());
                    }
                    let dropped = srv.resize_conns(cfg.server_connections);
                    ch.retire_conns.extend(dropped);
                    slot
                }
                None => {
                    ch.added.push(s.display_name());
                    self.servers.push(new_server(s, cfg.server_connections));
                    kept.push(true);
                    self.servers.len() - 1
                }
            };
            order.push(slot);
        }
        for &slot in &self.order {
            if !kept[slot] {
                let srv = &mut self.servers[slot];
                srv.retired = true;
                ch.removed.push(srv.name.clone());
                ch.retired.push(slot);
            }
        }
        let ring_inputs_changed = self.cfg.hash != cfg.hash
            || self.cfg.distribution != cfg.distribution
            || self.cfg.hash_tag != cfg.hash_tag
            || self.order != order
            || !ch.reweighted.is_empty();
        ch.ring_changed = ring_inputs_changed;
        if let Some(c) = self.cache.as_mut() {
            // A removed server's tracking connection goes with it.
            for &slot in &ch.retired {
                if let Some(&Some(ck)) = c.tracking.get(slot) {
                    ch.retire_conns.push(ck);
                }
            }
        }
        let mut old = self.cfg.clone();
        old.servers = cfg.servers.clone();
        ch.settings_changed = old != cfg;
        let hot_changed = (old.hotkeys, old.hotkeys_sample, old.hotkeys_window_ms)
            != (cfg.hotkeys, cfg.hotkeys_sample, cfg.hotkeys_window_ms)
            || (
                old.hotkey_cache,
                old.hotkey_cache_threshold,
                old.hotkey_cache_max_value,
            ) != (
                cfg.hotkey_cache,
                cfg.hotkey_cache_threshold,
                cfg.hotkey_cache_max_value,
            )
            || reselect;
        self.cfg = cfg;
        if hot_changed {
            // New settings start from nothing; the old cache's tracking connections close.
            if let Some(c) = self.cache.take() {
                ch.retire_conns.extend(c.tracking.iter().flatten());
            }
            self.hot_configure();
        }
        self.order = order;
        self.limits = limits(&self.cfg);
        self.users = crate::auth::Users::from_config(&self.cfg);
        self.renames = crate::auth::Renames::from_config(&self.cfg);
        self.rebuild();
        ch
    }
}
