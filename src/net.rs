//! Sockets: the `Stream` every connection reads and writes (TCP, unix, TLS), listeners, and
//! the socket options the standard library does not expose (SO_REUSEPORT, listen backlog,
//! TCP keepalive), set through a minimal libc FFI.
//!
//! Invariants: nothing here knows about clients, backends or Redis; every function either
//! succeeds or returns the `io::Error`; `Stream::write_out` is the one write path for clients
//! and backend connections.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener};
use mio::{Interest, Registry, Token};

use crate::config::Listen;

/// A socket: TCP, a unix-domain socket, or TLS over TCP (clients of a TLS pool, and backend
/// connections with `backend_tls`).
pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
    Tls(Box<crate::tls::TlsStream>),
}

impl Stream {
    /// Write what is owed: TLS records rustls still holds, then `buf[*pos..]`, until done or the
    /// socket would block (then `*writable` is cleared; edge-triggered polling announces when it
    /// can take more). Ok(n): bytes of `buf` written by this call. Err: the connection broke.
    #[inline(always)]
    pub fn write_out(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        writable: &mut bool,
    ) -> io::Result<usize> {
        match self.flush_tls() {
            Ok(true) => {}
            Ok(false) => {
                *writable = false;
                return Ok(0);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return Ok(0);
            }
            Err(e) => return Err(e),
        }
        let start = *pos;
        while *pos < buf.len() {
            match self.write(&buf[*pos..]) {
                Ok(0) => break,
                Ok(n) => *pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(*pos - start)
    }

    /// Write TLS records rustls still holds. Ok(true): nothing left (always, for plain sockets).
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        match self {
            Stream::Tls(t) => t.flush_tls(),
            _ => Ok(true),
        }
    }

    /// The TCP socket underneath, if any (connect completion, socket options).
    pub fn tcp(&self) -> Option<&mio::net::TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(t) => Some(&t.sock),
            Stream::Unix(_) => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
            Stream::Tls(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
            Stream::Tls(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
            Stream::Tls(s) => s.deregister(r),
        }
    }
}

pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl mio::event::Source for Listener {
    fn register(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l) => l.deregister(r),
        }
    }
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

pub(crate) fn listen_name(l: &Listen) -> String {
    match l {
        Listen::Tcp(a) => a.to_string(),
        Listen::Unix { path, .. } => path.display().to_string(),
    }
}

pub(crate) fn bind(listen: &Listen, backlog: u32, reuseport: bool) -> io::Result<Listener> {
    match listen {
        Listen::Tcp(addr) => {
            let sock = std::net::TcpListener::from(tcp_socket(*addr, backlog, reuseport)?);
            sock.set_nonblocking(true)?;
            Ok(Listener::Tcp(TcpListener::from_std(sock)))
        }
        Listen::Unix { path, mode } => {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path)?;
            if let Some(m) = mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*m))?;
            }
            Ok(Listener::Unix(l))
        }
    }
}

/// A listening TCP socket with SO_REUSEADDR (and SO_REUSEPORT when asked) and the backlog.
pub(crate) fn tcp_socket(
    addr: SocketAddr,
    backlog: u32,
    reuseport: bool,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // std has no way to set SO_REUSEPORT before bind; use the libc calls mio already links.
    let domain = if addr.is_ipv4() {
        libc_af_inet()
    } else {
        libc_af_inet6()
    };
    unsafe {
        let fd = sys::socket(domain, sys::SOCK_STREAM | sys::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: i32 = 1;
        let p = &one as *const i32 as *const std::ffi::c_void;
        if sys::setsockopt(fd, sys::SOL_SOCKET, sys::SO_REUSEADDR, p, 4) < 0 {
            return Err(io::Error::last_os_error());
        }
        if reuseport && sys::setsockopt(fd, sys::SOL_SOCKET, sys::SO_REUSEPORT, p, 4) < 0 {
            return Err(io::Error::last_os_error());
        }
        let (sa, len) = sys::sockaddr(addr);
        if sys::bind(fd, sa.as_ptr() as *const std::ffi::c_void, len) < 0 {
            return Err(io::Error::last_os_error());
        }
        if sys::listen(fd, backlog.min(i32::MAX as u32) as i32) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }
}

pub(crate) fn libc_af_inet() -> i32 {
    sys::AF_INET
}
pub(crate) fn libc_af_inet6() -> i32 {
    sys::AF_INET6
}

pub(crate) fn set_keepalive(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: i32 = 1;
    unsafe {
        sys::setsockopt(
            s.as_raw_fd(),
            sys::SOL_SOCKET,
            sys::SO_KEEPALIVE,
            &one as *const i32 as *const std::ffi::c_void,
            4,
        );
    }
}

/// The few socket calls std does not expose (Linux values).
mod sys {
    use std::net::SocketAddr;
    pub const AF_INET: i32 = 2;
    pub const AF_INET6: i32 = 10;
    pub const SOCK_STREAM: i32 = 1;
    pub const SOCK_CLOEXEC: i32 = 0o2000000;
    pub const SOL_SOCKET: i32 = 1;
    pub const SO_REUSEADDR: i32 = 2;
    pub const SO_KEEPALIVE: i32 = 9;
    pub const SO_REUSEPORT: i32 = 15;
    extern "C" {
        pub fn socket(domain: i32, ty: i32, proto: i32) -> i32;
        pub fn setsockopt(
            fd: i32,
            level: i32,
            name: i32,
            val: *const std::ffi::c_void,
            len: u32,
        ) -> i32;
        pub fn bind(fd: i32, addr: *const std::ffi::c_void, len: u32) -> i32;
        pub fn listen(fd: i32, backlog: i32) -> i32;
    }
    /// struct sockaddr_in / sockaddr_in6 bytes.
    pub fn sockaddr(addr: SocketAddr) -> (Vec<u8>, u32) {
        match addr {
            SocketAddr::V4(a) => {
                let mut b = vec![0u8; 16];
                b[0..2].copy_from_slice(&(AF_INET as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.ip().octets());
                (b, 16)
            }
            SocketAddr::V6(a) => {
                let mut b = vec![0u8; 28];
                b[0..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
                b[8..24].copy_from_slice(&a.ip().octets());
                b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
                (b, 28)
            }
        }
    }
}
