//! rustproxy command line: parse options (nutcracker-compatible where
//! nutcracker has the flag), load and fully validate the configuration, then
//! set up logging and hand over to the event loop.
//!
//! Invariants: the configuration is completely validated before any socket
//! is bound or any file (log, pid) is written; configuration errors are
//! reported as `file:line: message`.
//!
//! Exit codes: 0 success, 1 configuration or runtime error, 2 bad usage.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use getopts::Options;
use rustproxy::{config, proxy};

mod top;

const EXIT_CONFIG: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn options() -> Options {
    let mut o = Options::new();
    o.optflag("h", "help", "show this help and exit");
    o.optflag("V", "version", "show version and exit");
    o.optflag(
        "t",
        "test-conf",
        "check the configuration and exit (binds nothing)",
    );
    o.optflag(
        "",
        "convert",
        "print the configuration in native proxy.conf format and exit",
    );
    o.optflag("D", "describe-stats", "print stats names and exit");
    o.optopt(
        "c",
        "conf-file",
        "configuration file, native or nutcracker YAML",
        "FILE",
    );
    o.optopt(
        "l",
        "listen",
        "listen address of a one-pool setup (with -b)",
        "ADDR",
    );
    o.optopt(
        "b",
        "backends",
        "backends of that pool: host:port[:weight],... (with -l)",
        "LIST",
    );
    o.optopt(
        "",
        "command-stats",
        "per-command stats, latency and slow log: yes (default) or no",
        "BOOL",
    );
    o.optopt(
        "",
        "cluster",
        "a Redis Cluster pool (with -l): seed nodes host:port,...",
        "SEEDS",
    );
    o.optopt(
        "v",
        "verbose",
        "log level: error|warn|info|debug|trace or nutcracker's 0..11 (default info)",
        "LEVEL",
    );
    o.optopt("", "verbosity", "same as --verbose", "LEVEL");
    o.optopt("o", "output", "log file (default stderr)", "FILE");
    o.optopt(
        "s",
        "stats-port",
        "enable the stats listener on this port (default 22222)",
        "PORT",
    );
    o.optopt(
        "a",
        "stats-addr",
        "enable the stats listener on this address (default 127.0.0.1)",
        "ADDR",
    );
    o.optopt(
        "i",
        "stats-interval",
        "stats interval in ms (default 30000)",
        "MS",
    );
    o.optopt("p", "pid-file", "write the process id to FILE", "FILE");
    o.optflag(
        "d",
        "daemonize",
        "not supported: warns and stays in the foreground (use a supervisor)",
    );
    o.optopt(
        "m",
        "mbuf-size",
        "accepted for nutcracker compatibility, ignored",
        "N",
    );
    o.optopt(
        "",
        "top",
        "show a live view of a running proxy (host:port, port or socket path)",
        "ADDR",
    );
    o.optopt("", "top-count", "with --top: stop after N views", "N");
    for (key, hint, help) in config::POOL_OPTIONS {
        o.optopt("", &key.replace('_', "-"), help, hint);
    }
    o
}

fn usage(o: &Options) -> String {
    let brief = format!(
        "Usage: rustproxy [-c FILE] [-l ADDR -b ADDR[,ADDR...]] [options]\n\n\
         rustproxy {} - a Redis sharding proxy (twemproxy-compatible placement).\n\
         Give either -c FILE (native proxy.conf or nutcracker YAML) or -l and -b\n\
         for a single pool; the pool options below apply to -l/-b only.",
        env!("CARGO_PKG_VERSION")
    );
    format!(
        "{}\nExit status: 0 ok, 1 configuration or runtime error, 2 bad usage.\n",
        o.usage(&brief)
    )
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("rustproxy: {msg}");
    eprintln!("Try 'rustproxy --help' for more information.");
    ExitCode::from(EXIT_USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = options();
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    if m.opt_present("h") {
        print!("{}", usage(&opts));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("V") {
        println!("rustproxy {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("D") {
        print!("{}", rustproxy::metrics::describe());
        return ExitCode::SUCCESS;
    }
    if let Some(extra) = m.free.first() {
        return usage_error(format!("unexpected argument '{extra}'"));
    }
    match m.opt_str("top") {
        Some(addr) => return top::main(&addr, m.opt_str("top-count").as_deref()),
        None if m.opt_present("top-count") => return usage_error("--top-count needs --top"),
        None => {}
    }

    // Command-line overrides (usage errors before touching the config).
    let level = match m.opt_str("v").or_else(|| m.opt_str("verbosity")) {
        Some(v) => match config::parse_log_level(&v) {
            Ok(l) => Some(l),
            Err(e) => return usage_error(format!("-v: {e}")),
        },
        None => None,
    };
    let stats_port = match m.opt_str("s").map(|s| s.parse::<u16>()) {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => return usage_error("-s/--stats-port needs a port number"),
        None => None,
    };
    let stats_addr = match m.opt_str("a") {
        Some(a) => match resolve_ip(&a) {
            Some(ip) => Some(ip),
            None => return usage_error(format!("-a/--stats-addr: cannot resolve '{a}'")),
        },
        None => None,
    };
    let stats_interval = match m.opt_str("i").map(|s| s.parse::<u64>()) {
        Some(Ok(i)) => Some(i),
        Some(Err(_)) => return usage_error("-i/--stats-interval needs a number of milliseconds"),
        None => None,
    };
    let mbuf = m.opt_str("m");
    if let Some(v) = &mbuf {
        if config::parse_size("mbuf-size", v).is_err() {
            return usage_error(format!("-m/--mbuf-size: bad size '{v}'"));
        }
    }
    let pool_opts: Vec<(String, String)> = config::POOL_OPTIONS
        .iter()
        .filter_map(|(key, _, _)| {
            m.opt_str(&key.replace('_', "-"))
                .map(|v| (key.to_string(), v))
        })
        .collect();

    // Load and validate.
    let (listen, mut backends) = (m.opt_str("l"), m.opt_str("b"));
    let mut pool_opts = pool_opts;
    if let Some(seeds) = m.opt_str("cluster") {
        if backends.is_some() {
            return usage_error("--cluster and -b are alternatives: the seeds are the backends");
        }
        backends = Some(seeds);
        pool_opts.push(("cluster".to_string(), "yes".to_string()));
    }
    let loaded = match (m.opt_str("c"), listen, backends) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return usage_error("-c cannot be combined with -l/-b")
        }
        (Some(_), None, None) if !pool_opts.is_empty() => {
            let flags: Vec<String> = pool_opts
                .iter()
                .map(|(k, _)| format!("--{}", k.replace('_', "-")))
                .collect();
            return usage_error(format!(
                "{} apply only with -l/-b; set them in the configuration file",
                flags.join(", ")
            ));
        }
        (Some(file), None, None) => config::load(Path::new(&file)),
        (None, Some(l), Some(b)) => config::from_cli(&l, &b, &pool_opts),
        (None, Some(_), None) => return usage_error("-l/--listen needs -b/--backends"),
        (None, None, Some(_)) => return usage_error("-b/--backends needs -l/--listen"),
        (None, None, None) => {
            return usage_error("no configuration: give -c FILE, or -l ADDR and -b LIST")
        }
    };
    let source = m.opt_str("c").unwrap_or_else(|| "command line".to_string());
    let mut cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rustproxy: {e}");
            if m.opt_present("t") {
                eprintln!("rustproxy: configuration file '{source}' syntax is invalid");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(l) = level {
        cfg.log_level = l;
    }
    if let Some(v) = m.opt_str("command-stats") {
        match config::parse_flag("command_stats", &v) {
            Ok(b) => cfg.command_stats = b,
            Err(e) => return usage_error(format!("--command-stats: {e}")),
        }
    }
    if let Some(o) = m.opt_str("o") {
        cfg.log_file = Some(PathBuf::from(o));
    }
    if stats_port.is_some() || stats_addr.is_some() {
        let ip = stats_addr
            .or(cfg.stats_listen.map(|a| a.ip()))
            .unwrap_or(config::DEFAULT_STATS_ADDR);
        let port = stats_port
            .or(cfg.stats_listen.map(|a| a.port()))
            .unwrap_or(config::DEFAULT_STATS_PORT);
        cfg.stats_listen = Some(SocketAddr::new(ip, port));
    }
    if let Some(i) = stats_interval {
        cfg.stats_interval_ms = i;
    }

    if m.opt_present("t") {
        println!("rustproxy: configuration file '{source}' syntax is ok");
        return ExitCode::SUCCESS;
    }
    if m.opt_present("convert") {
        print!("{}", config::render_native(&cfg));
        return ExitCode::SUCCESS;
    }

    if let Err(e) = init_logging(&cfg) {
        eprintln!("rustproxy: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if m.opt_present("d") {
        log::warn!(
            "daemonize is not supported; running in the foreground (run under a supervisor)"
        );
    }
    if mbuf.is_some() {
        log::info!("-m/--mbuf-size is accepted for nutcracker compatibility and ignored");
    }
    let pid_file = m.opt_str("p").map(PathBuf::from);
    if let Some(p) = &pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            log::error!("cannot write pid file '{}': {e}", p.display());
            eprintln!("rustproxy: cannot write pid file '{}': {e}", p.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    log::info!(
        "rustproxy {} starting with {} pool(s) from {source}",
        env!("CARGO_PKG_VERSION"),
        cfg.pools.len()
    );
    let result = proxy::run(cfg);
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("rustproxy: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// An IP literal or a host name (first address).
fn resolve_ip(a: &str) -> Option<IpAddr> {
    if let Ok(ip) = a.trim_start_matches('[').trim_end_matches(']').parse() {
        return Some(ip);
    }
    (a, 0u16).to_socket_addrs().ok()?.next().map(|s| s.ip())
}

/// The log file, reopened (by path) at the next write after SIGUSR1, so a rotated file is let go.
struct ReopenFile {
    path: PathBuf,
    file: std::fs::File,
    reopen: Arc<AtomicBool>,
}

impl std::io::Write for ReopenFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.reopen.swap(false, Ordering::Relaxed) {
            if let Ok(f) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                self.file = f;
            }
        }
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn init_logging(cfg: &config::Config) -> Result<(), String> {
    use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode, WriteLogger};
    let lc = ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Error)
        .build();
    match &cfg.log_file {
        Some(path) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file '{}': {e}", path.display()))?;
            // SIGUSR1 reopens the file (logrotate's `postrotate kill -USR1`).
            let reopen = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&reopen))
                .map_err(|e| format!("cannot install the SIGUSR1 handler: {e}"))?;
            let w = ReopenFile {
                path: path.clone(),
                file: f,
                reopen,
            };
            WriteLogger::init(log::LevelFilter::Trace, lc, w).map_err(|e| e.to_string())?;
        }
        None => {
            let color = if std::io::stderr().is_terminal() {
                ColorChoice::Auto
            } else {
                ColorChoice::Never
            };
            TermLogger::init(log::LevelFilter::Trace, lc, TerminalMode::Stderr, color)
                .map_err(|e| e.to_string())?;
        }
    }
    // The logger passes everything; the `log` facade's max level filters, so that
    // `CONFIG SET loglevel` and a reload can change it at run time.
    log::set_max_level(cfg.log_level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> getopts::Matches {
        options()
            .parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn nutcracker_command_lines_parse() {
        let m = parse(&[
            "-c",
            "conf/nutcracker.yml",
            "-v",
            "6",
            "-s",
            "22222",
            "-a",
            "0.0.0.0",
            "-i",
            "10000",
            "-p",
            "/tmp/n.pid",
            "-d",
            "-m",
            "512",
            "-o",
            "/tmp/n.log",
        ]);
        assert_eq!(m.opt_str("c").as_deref(), Some("conf/nutcracker.yml"));
        assert!(m.opt_present("d"));
        let m = parse(&["--verbosity=11", "--test-conf", "--conf-file=x"]);
        assert_eq!(m.opt_str("verbosity").as_deref(), Some("11"));
        assert!(m.opt_present("t"));
    }

    #[test]
    fn pool_options_become_long_flags() {
        let m = parse(&[
            "-l",
            "127.0.0.1:1",
            "-b",
            "127.0.0.1:2",
            "--hash-tag",
            "{}",
            "--server-connections=2",
        ]);
        assert_eq!(m.opt_str("hash-tag").as_deref(), Some("{}"));
        assert_eq!(m.opt_str("server-connections").as_deref(), Some("2"));
        let text = usage(&options());
        for (k, _, _) in config::POOL_OPTIONS {
            assert!(text.contains(&format!("--{}", k.replace('_', "-"))), "{k}");
        }
    }

    #[test]
    fn resolve_ip_accepts_literals() {
        assert_eq!(resolve_ip("0.0.0.0"), Some(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(resolve_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(
            resolve_ip("localhost").map(|ip| ip.is_loopback()),
            Some(true)
        );
    }
}
