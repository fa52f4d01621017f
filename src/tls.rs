//! TLS for the event loop: a rustls connection wrapped around a non-blocking mio `TcpStream`,
//! for both sides (the proxy as a TLS server for its clients and as a TLS client of its
//! backends), and the loading of rustls configurations from PEM files.
//!
//! The crypto provider is always `ring`, passed explicitly, so no process-wide default is needed.
//!
//! Invariants, relied on by an edge-triggered caller:
//! - `Read` drains: it returns `WouldBlock` only when rustls holds no plaintext and the socket
//!   itself said `WouldBlock`. It also fills `buf` as far as it can, so a short read (fewer bytes
//!   than asked) means the socket was read to `WouldBlock` or to its end; the end then shows as
//!   `Ok(0)` on the next call. `Ok(0)` is the end of the stream: the peer's close_notify, or TCP
//!   EOF (with or without close_notify; RESP framing detects truncation on its own).
//! - `Write` is bounded: it accepts new plaintext only when no TLS records are left over from
//!   before, and at most 16 KiB per call, so the rustls buffers never grow past about one call's
//!   worth. Records that could not be written stay in rustls until `flush_tls`; `wants_write`
//!   says whether any are left. `Write` returns `WouldBlock` only when the socket did, or while
//!   the handshake is in progress and rustls' handshake-time plaintext buffer (64 KiB) is full.
//! - The handshake advances only through this type's calls: `Read` processes the peer's
//!   handshake messages and sends replies; `flush_tls` sends what is queued (a client's
//!   ClientHello is queued at construction and goes out on the first `flush_tls`/`Write`).
//! - Fatal TLS errors come back as `ErrorKind::InvalidData` carrying rustls' message, after a
//!   best-effort attempt to send the alert. Nothing here panics.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use log::warn;
use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
};

/// Most plaintext one `Write::write` call hands to rustls.
const MAX_WRITE: usize = 16 * 1024;

/// A TLS connection over a non-blocking mio TCP stream. `Read`/`Write` carry plaintext.
pub struct TlsStream {
    pub sock: TcpStream,
    conn: Connection,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("handshaking", &self.conn.is_handshaking())
            .field("wants_write", &self.conn.wants_write())
            .finish()
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl TlsStream {
    /// Server side of an accepted connection: waits for the client's hello.
    pub fn server(sock: TcpStream, cfg: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(cfg).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn: Connection::Server(conn),
        })
    }

    /// Client side (the socket may still be connecting). `server_name` is the DNS name or IP
    /// literal the server's certificate must match; the ClientHello is queued right away and is
    /// sent by the first `flush_tls` (or `Write`) once the socket is connected.
    pub fn client(
        sock: TcpStream,
        cfg: Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<TlsStream> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid TLS server name {server_name:?}: {e}"),
            )
        })?;
        let conn = ClientConnection::new(cfg, name).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn: Connection::Client(conn),
        })
    }

    /// Write buffered TLS records to the socket until done or WouldBlock. Ok(true): nothing left.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// TLS records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The handshake has not completed yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Queue a close_notify alert and try to send it (best effort: errors and WouldBlock are
    /// ignored). Optional politeness before closing the socket; no plaintext can follow.
    pub fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_tls();
    }

    /// Move decrypted plaintext into `buf`: `Ok(n > 0)`, `Ok(0)` for the peer's close_notify
    /// (or TCP EOF seen earlier), `Err(WouldBlock)` when rustls holds none. Never blocks.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn.reader().read(buf) {
            // TCP EOF without close_notify, once the plaintext is gone: the end of the stream.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        // An error sending our handshake/alert records; reported only if nothing else is.
        let mut flush_err: Option<io::Error> = None;
        loop {
            match self.take_plaintext(&mut buf[n..]) {
                Ok(0) => return Ok(n),
                Ok(k) => {
                    n += k;
                    if n == buf.len() {
                        return Ok(n);
                    }
                    // rustls is now empty: fall through to the socket for more.
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                // TCP EOF. With data in hand return it; the next call sees EOF again.
                Ok(0) => return Ok(n),
                Ok(_) => {}
                Err(e) if would_block(&e) => {
                    return match (n, flush_err) {
                        (0, Some(fe)) => Err(fe),
                        (0, None) => Err(e),
                        _ => Ok(n),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert for the peer: try to send it, then fail.
                let _ = self.flush_tls();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS error: {e}"),
                ));
            }
            // Handshake messages, alerts, session tickets, key updates: send what we can now;
            // what is left waits for the caller's flush_tls on WRITABLE.
            if let Err(e) = self.flush_tls() {
                flush_err = Some(e);
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.conn.wants_write() && !self.flush_tls()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let take = buf.len().min(MAX_WRITE);
        let n = self.conn.writer().write(&buf[..take])?;
        if n == 0 {
            // Handshake still running and rustls' pre-handshake buffer is full.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // WouldBlock shows as Ok(false): the records stay queued for the next flush_tls.
        self.flush_tls()?;
        Ok(n)
    }

    /// Send queued TLS records; `WouldBlock` if some are still left.
    fn flush(&mut self) -> io::Result<()> {
        if self.flush_tls()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

impl Source for TlsStream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock.register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.sock.deregister(r)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Every certificate in a PEM file (at least one).
fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn load_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{what} {}: no private key found", path.display())
        }
        e => format!("{what} {}: bad PEM: {e}", path.display()),
    })
}

/// A root store holding every certificate of a PEM file.
fn load_roots(what: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Server-side config: cert chain + key (PEM files); when client_ca_file is given, clients must
/// present a cert signed by it.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs("tls_cert_file", cert_file)?;
    let key = load_key("tls_key_file", key_file)?;
    let p = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&p))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS server setup: {e}"))?;
    let builder = match client_ca_file {
        Some(ca) => {
            let roots = load_roots("tls_ca_cert_file", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), p)
                .build()
                .map_err(|e| format!("tls_ca_cert_file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_cert_file {} / tls_key_file {}: {e}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    Ok(Arc::new(cfg))
}

/// Client-side config: trust roots from ca_file (required unless `insecure`, which disables
/// verification — for tests/dev only, logs a warning); optional client cert+key for mutual TLS.
pub fn client_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, String> {
    let p = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&p))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client setup: {e}"))?;
    let builder = if insecure {
        warn!("TLS certificate verification is disabled (insecure): for tests/development only");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                p.signature_verification_algorithms,
            )))
    } else {
        let ca = ca_file.ok_or_else(|| {
            "tls_ca_cert_file: required to verify TLS servers (or choose insecure mode)".to_string()
        })?;
        builder.with_root_certificates(load_roots("tls_ca_cert_file", ca)?)
    };
    let cfg = match (cert_file, key_file) {
        (Some(c), Some(k)) => {
            let certs = load_certs("tls_cert_file", c)?;
            let key = load_key("tls_key_file", k)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "tls_cert_file {} / tls_key_file {}: {e}",
                    c.display(),
                    k.display()
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err("tls_cert_file given without tls_key_file".to_string()),
        (None, Some(_)) => return Err("tls_key_file given without tls_cert_file".to_string()),
    };
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate (insecure mode) but still checks handshake signatures, so
/// the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
#[path = "../tests/tls_support/mod.rs"]
mod tls_support;

#[cfg(test)]
mod tests {
    use super::tls_support::{generate_certs, TestCerts, TlsRedis};
    use super::*;
    use mio::net::TcpListener;
    use mio::{Events, Poll};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const DEADLINE: Duration = Duration::from_secs(20);

    fn err_of<T>(r: Result<T, String>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn configs_load() {
        let c = generate_certs();
        server_config(&c.server_cert, &c.server_key, None).expect("server config");
        server_config(&c.server_cert, &c.server_key, Some(&c.ca_cert)).expect("mtls server");
        client_config(Some(&c.ca_cert), None, None, false).expect("client config");
        client_config(
            Some(&c.ca_cert),
            Some(&c.client_cert),
            Some(&c.client_key),
            false,
        )
        .expect("mtls client");
        client_config(None, None, None, true).expect("insecure client");
    }

    #[test]
    fn config_errors_name_file_and_problem() {
        let c = generate_certs();
        let missing = c.dir.join("nope.pem");
        let e = err_of(server_config(&missing, &c.server_key, None));
        assert!(
            e.starts_with("tls_cert_file ") && e.contains("nope.pem"),
            "{e}"
        );
        assert!(e.contains("No such file"), "{e}");

        let garbage = c.dir.join("garbage.pem");
        std::fs::write(&garbage, b"this is not PEM at all\n\x00\xff").expect("write");
        let e = err_of(server_config(&garbage, &c.server_key, None));
        assert!(e.contains("garbage.pem: no certificate found"), "{e}");
        let e = err_of(server_config(&c.server_cert, &garbage, None));
        assert!(e.contains("garbage.pem: no private key found"), "{e}");
        // A certificate where the key should be.
        let e = err_of(server_config(&c.server_cert, &c.server_cert, None));
        assert!(e.contains("no private key found"), "{e}");
        // Broken PEM body.
        let broken = c.dir.join("broken.pem");
        std::fs::write(
            &broken,
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = err_of(server_config(&broken, &c.server_key, None));
        assert!(e.contains("broken.pem: bad PEM"), "{e}");
        // Key that does not belong to the certificate.
        let e = err_of(server_config(&c.server_cert, &c.client_key, None));
        assert!(e.contains("server.crt") && e.contains("client.key"), "{e}");
        let e = err_of(server_config(&c.server_cert, &c.server_key, Some(&garbage)));
        assert!(
            e.starts_with("tls_ca_cert_file ") && e.contains("no certificate"),
            "{e}"
        );

        let e = err_of(client_config(None, None, None, false));
        assert!(e.contains("tls_ca_cert_file"), "{e}");
        let e = err_of(client_config(Some(&missing), None, None, false));
        assert!(e.contains("nope.pem"), "{e}");
        let e = err_of(client_config(
            Some(&c.ca_cert),
            Some(&c.client_cert),
            None,
            false,
        ));
        assert!(e.contains("without tls_key_file"), "{e}");
        let e = err_of(client_config(
            Some(&c.ca_cert),
            Some(&c.client_cert),
            Some(&c.server_key),
            false,
        ));
        assert!(e.contains("client.crt"), "{e}");
    }

    #[test]
    fn bad_server_name_is_an_error() {
        let c = generate_certs();
        let cfg = client_config(Some(&c.ca_cert), None, None, false).expect("client config");
        let l = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let sock = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let e = TlsStream::client(sock, cfg, "not a host name!").expect_err("bad name");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// One end of the loopback test: what it still has to send, what it got, how it reads.
    struct End {
        s: TlsStream,
        out: Vec<u8>,
        sent: usize,
        got: Vec<u8>,
        eof: bool,
        /// Stop reading at a short read (like the proxy's backend loop) instead of WouldBlock.
        short_read_stops: bool,
        write_blocks: usize,
        partial_writes: usize,
    }

    impl End {
        /// Everything an event-loop owner does on any event: flush, read, write.
        fn service(&mut self) -> io::Result<()> {
            self.s.flush_tls()?;
            let mut buf = vec![0u8; 8 * 1024 + 7];
            while !self.eof {
                match self.s.read(&mut buf) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.got.extend_from_slice(&buf[..n]);
                        if self.short_read_stops && n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
            while self.sent < self.out.len() {
                let chunk = &self.out[self.sent..(self.sent + 100_000).min(self.out.len())];
                match self.s.write(chunk) {
                    Ok(n) => {
                        assert!(n > 0 && n <= MAX_WRITE);
                        if n < chunk.len() {
                            self.partial_writes += 1;
                        }
                        self.sent += n;
                    }
                    Err(e) if would_block(&e) => {
                        self.write_blocks += 1;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
            .collect()
    }

    /// Poll until `done` holds, servicing only the ends that got an event (edge-triggered
    /// honesty: a missed wake-up shows as a stall and fails the test).
    fn pump(poll: &mut Poll, ends: &mut [&mut End], done: impl Fn(&[&mut End]) -> bool) {
        let start = Instant::now();
        let mut events = Events::with_capacity(16);
        while !done(ends) {
            assert!(start.elapsed() < DEADLINE, "stalled");
            poll.poll(&mut events, Some(Duration::from_secs(2)))
                .expect("poll");
            assert!(!events.is_empty(), "no event for 2 s: a wake-up was lost");
            for ev in events.iter() {
                let end = &mut ends[ev.token().0];
                end.service().expect("service");
            }
        }
    }

    #[test]
    fn loopback_round_trip_1mib_each_way() {
        let c = generate_certs();
        let scfg = server_config(&c.server_cert, &c.server_key, Some(&c.ca_cert)).expect("s");
        let ccfg = client_config(
            Some(&c.ca_cert),
            Some(&c.client_cert),
            Some(&c.client_key),
            false,
        )
        .expect("c");
        let mut poll = Poll::new().expect("poll");
        let listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let csock = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let start = Instant::now();
        let ssock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if would_block(&e) => {
                    assert!(start.elapsed() < DEADLINE, "accept stalled");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        const SIZE: usize = 1 << 20;
        let mut server = End {
            s: TlsStream::server(ssock, scfg).expect("server"),
            out: pattern(SIZE, 1),
            sent: 0,
            got: Vec::new(),
            eof: false,
            short_read_stops: true,
            write_blocks: 0,
            partial_writes: 0,
        };
        let mut client = End {
            s: TlsStream::client(csock, ccfg, "127.0.0.1").expect("client"),
            out: pattern(SIZE, 2),
            sent: 0,
            got: Vec::new(),
            eof: false,
            short_read_stops: false,
            write_blocks: 0,
            partial_writes: 0,
        };
        assert!(client.s.is_handshaking() && server.s.is_handshaking());
        assert!(client.s.wants_write(), "ClientHello queued at construction");
        let rw = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut server.s, Token(0), rw)
            .expect("register");
        poll.registry()
            .register(&mut client.s, Token(1), rw)
            .expect("register");
        pump(&mut poll, &mut [&mut server, &mut client], |e| {
            e.iter().all(|e| e.got.len() >= SIZE && e.sent == SIZE)
        });
        assert!(!client.s.is_handshaking() && !server.s.is_handshaking());
        assert!(server.got == pattern(SIZE, 2), "server got wrong bytes");
        assert!(client.got == pattern(SIZE, 1), "client got wrong bytes");
        assert!(client.partial_writes > 0 && server.partial_writes > 0);
        assert!(
            client.write_blocks + server.write_blocks > 0,
            "1 MiB each way with neither side blocked: test did not exercise backpressure"
        );

        // Clean close: close_notify from the client reads as EOF on the server...
        client.s.send_close_notify();
        pump(&mut poll, &mut [&mut server, &mut client], |e| e[0].eof);
        // ...and a plain TCP close from the server reads as EOF on the client.
        poll.registry()
            .deregister(&mut server.s)
            .expect("deregister");
        drop(server);
        let start = Instant::now();
        let mut events = Events::with_capacity(16);
        let before = client.got.len();
        while !client.eof {
            assert!(start.elapsed() < DEADLINE, "EOF not seen");
            poll.poll(&mut events, Some(Duration::from_secs(2)))
                .expect("poll");
            assert!(!events.is_empty(), "no event for the peer's close");
            client.service().expect("service");
        }
        assert_eq!(client.got.len(), before);
    }

    /// Drive one client connection: send `req`, collect until `until(reply)` or EOF.
    fn exchange(
        s: &mut TlsStream,
        req: &[u8],
        until: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Vec<u8>> {
        let mut poll = Poll::new()?;
        poll.registry()
            .register(s, Token(0), Interest::READABLE | Interest::WRITABLE)?;
        let r = exchange_on(&mut poll, s, req, until);
        poll.registry().deregister(s)?;
        r
    }

    fn exchange_on(
        poll: &mut Poll,
        s: &mut TlsStream,
        req: &[u8],
        until: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Vec<u8>> {
        let mut events = Events::with_capacity(4);
        let start = Instant::now();
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = [0u8; 4096];
        loop {
            if start.elapsed() > DEADLINE {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "exchange stalled"));
            }
            poll.poll(&mut events, Some(Duration::from_millis(200)))?;
            s.flush_tls()?;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return Ok(got),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
            if until(&got) {
                return Ok(got);
            }
            while sent < req.len() {
                match s.write(&req[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    fn connect_redis(r: &TlsRedis) -> TcpStream {
        TcpStream::connect(format!("127.0.0.1:{}", r.tls_port).parse().expect("addr"))
            .expect("connect")
    }

    fn pong(b: &[u8]) -> bool {
        b.ends_with(b"+PONG\r\n")
    }

    #[test]
    fn redis_server_interop() {
        let c: TestCerts = generate_certs();
        let r = TlsRedis::start(&c, "no");
        let cfg = client_config(Some(&c.ca_cert), None, None, false).expect("client config");
        for name in ["localhost", "127.0.0.1"] {
            let mut s = TlsStream::client(connect_redis(&r), Arc::clone(&cfg), name).expect("c");
            let got = exchange(&mut s, b"PING\r\n", pong).expect("exchange");
            assert_eq!(got, b"+PONG\r\n");
            // Pipelined, larger than one TLS record both ways.
            let val = "v".repeat(40_000);
            let req = format!(
                "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{val}\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
                val.len()
            );
            let want = format!("+OK\r\n${}\r\n{val}\r\n", val.len());
            let got =
                exchange(&mut s, req.as_bytes(), |b| b.len() >= want.len()).expect("exchange");
            assert!(got == want.as_bytes(), "SET/GET over TLS");
        }
        // Wrong name: verification fails with a clear InvalidData error.
        let mut s =
            TlsStream::client(connect_redis(&r), Arc::clone(&cfg), "example.com").expect("c");
        let e = exchange(&mut s, b"PING\r\n", pong).expect_err("name mismatch");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("certificate"), "{e}");
        // Insecure mode accepts it.
        let ins = client_config(None, None, None, true).expect("insecure");
        let mut s = TlsStream::client(connect_redis(&r), ins, "example.com").expect("c");
        assert!(pong(
            &exchange(&mut s, b"PING\r\n", pong).expect("insecure ping")
        ));
        // A CA that did not sign the server: rejected.
        let other = generate_certs();
        let wrong = client_config(Some(&other.ca_cert), None, None, false).expect("cfg");
        let mut s = TlsStream::client(connect_redis(&r), wrong, "localhost").expect("c");
        let e = exchange(&mut s, b"PING\r\n", pong).expect_err("unknown CA");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn redis_server_mutual_tls() {
        let c = generate_certs();
        let r = TlsRedis::start(&c, "yes");
        let cfg = client_config(
            Some(&c.ca_cert),
            Some(&c.client_cert),
            Some(&c.client_key),
            false,
        )
        .expect("mtls config");
        let mut s = TlsStream::client(connect_redis(&r), cfg, "localhost").expect("c");
        assert_eq!(
            exchange(&mut s, b"PING\r\n", pong).expect("mtls ping"),
            b"+PONG\r\n"
        );
        // Without a client certificate the server refuses: an error or EOF, never PONG.
        let cfg = client_config(Some(&c.ca_cert), None, None, false).expect("config");
        let mut s = TlsStream::client(connect_redis(&r), cfg, "localhost").expect("c");
        if let Ok(got) = exchange(&mut s, b"PING\r\n", pong) {
            assert!(!pong(&got), "PONG without a client certificate");
        }
    }

    #[test]
    fn redis_cli_against_tls_server() {
        let c = generate_certs();
        let scfg = server_config(&c.server_cert, &c.server_key, None).expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut child = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&c.ca_cert)
            .args(["-h", "localhost", "-p", &port.to_string(), "PING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli");
        let start = Instant::now();
        let sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if would_block(&e) && start.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("accept: {e}");
                }
            }
        };
        let mut s = TlsStream::server(sock, scfg).expect("server");
        let want = b"*1\r\n$4\r\nPING\r\n";
        let served = exchange(&mut s, b"", |b| b.len() >= want.len());
        let replied = served.as_ref().map(|got| got == want).unwrap_or(false)
            && exchange(&mut s, b"+PONG\r\n", |_| false).is_ok();
        drop(s);
        // redis-cli exits once it printed the reply and saw the socket close.
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("redis-cli output");
        assert!(replied, "served: {served:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.trim() == "PONG",
            "redis-cli said {text:?} / {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
