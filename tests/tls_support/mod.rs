//! TLS test support shared by `src/tls.rs` unit tests (via `#[path]`) and integration tests
//! (`mod tls_support;`): throwaway certificates made with the `openssl` command line tool, and a
//! TLS-only redis-server on a free loopback port.
//!
//! Invariants: everything lives in a fresh temporary directory that is removed on drop; nothing
//! touches the network beyond 127.0.0.1; every wait is bounded; processes are killed by PID.
//! Test code only: failures panic with a message naming the step.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Paths of a generated PKI: a CA, a server certificate for `localhost` / `127.0.0.1` and a
/// client certificate, both signed by the CA. Keys are unencrypted PKCS#8 (P-256).
pub struct TestCerts {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A new empty directory under the system temp dir, unique within and across processes.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let d = std::env::temp_dir().join(format!(
        "rustproxy-tls-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue a leaf certificate `name`.crt / `name`.key signed by ca.crt / ca.key in `dir`.
fn issue(dir: &Path, name: &str, subject: &str, serial: &str, ext: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let extfile = format!("{name}.ext");
    std::fs::write(dir.join(&extfile), ext).expect("write openssl extension file");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ],
    );
}

/// Generate the test PKI into a fresh temp dir (removed when the value drops).
pub fn generate_certs() -> TestCerts {
    let dir = fresh_dir("certs");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-sha256",
            "-subj",
            "/CN=rustproxy test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    issue(
        &dir,
        "server",
        "/CN=localhost",
        "0x1001",
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    issue(
        &dir,
        "client",
        "/CN=rustproxy test client",
        "0x1002",
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    );
    TestCerts {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        dir,
    }
}

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A redis-server that listens only on a TLS port (plain port disabled), killed by PID on drop.
pub struct TlsRedis {
    pub tls_port: u16,
    pub child: Child,
    pub dir: PathBuf,
}

impl TlsRedis {
    /// Start it with the server certificate of `certs`; `auth_clients` is redis'
    /// `--tls-auth-clients` (`"no"`, `"yes"` or `"optional"`).
    pub fn start(certs: &TestCerts, auth_clients: &str) -> TlsRedis {
        let dir = fresh_dir("redis");
        let port = free_port();
        let path = |p: &Path| p.to_str().expect("utf8 path").to_string();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &path(&certs.server_cert),
                "--tls-key-file",
                &path(&certs.server_key),
                "--tls-ca-cert-file",
                &path(&certs.ca_cert),
                "--tls-auth-clients",
                auth_clients,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &path(&dir),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server (TLS) exited before listening on {port}: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server (TLS) did not listen on {port} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        TlsRedis {
            tls_port: port,
            child,
            dir,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
