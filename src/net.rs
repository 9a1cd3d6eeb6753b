//! Sockets: the client stream (TCP or Unix), listening sockets, where a connection came from, and
//! the socket options the engine sets. Depends on nothing else in the crate.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

/// `TCP_NOTSENT_LOWAT` on every TCP connection: the kernel takes output while less than this is
/// waiting for the peer's window, and the rest waits in the connection's own buffer (sent as the
/// socket says it is writable). The work of sending each byte is then done by the server as it
/// writes, not later while the peer reads, and the kernel holds little per connection.
pub const NOTSENT_LOWAT: libc::c_int = 32 * 1024;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

/// Sets, on a TCP listener, the options every connection accepted from it inherits: TCP_NODELAY
/// (Waitress's `socket_options`) and [`NOTSENT_LOWAT`]. One call per listener instead of two
/// per connection.
pub fn set_connection_options(fd: RawFd) -> io::Result<()> {
    set_tcp_option(fd, libc::TCP_NODELAY, 1)?;
    set_tcp_option(fd, libc::TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
}

/// `setsockopt(fd, IPPROTO_TCP, opt, value)` for an integer option.
pub fn set_tcp_option(fd: RawFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the kernel checks `fd`; the value is a c_int that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, IPPROTO_TCP, opt)` for an integer option (for tests).
#[cfg(test)]
pub fn tcp_option(fd: RawFd, opt: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value/len point to a c_int and its size; the kernel checks `fd`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
    value
}

/// The client socket, TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }

    /// Reads at most `max` bytes onto the end of `buf`, within its spare capacity (no zeroing
    /// first). Returns how many were read.
    pub fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        let want = max.min(spare.len());
        // SAFETY: the kernel writes at most `want` bytes into the spare capacity, which is
        // allocated and owned by `buf`; exactly the `n` bytes it wrote become part of `buf`.
        let n = unsafe { libc::read(self.raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

/// Where a connection came from, as the environ reports it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `REMOTE_ADDR` / `REMOTE_HOST`: the peer IP, or `localhost` on a Unix socket.
    pub addr: String,
    /// `REMOTE_PORT`: the peer port, or `None` on a Unix socket (as Waitress reports it).
    pub port: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn accepted_connections_inherit_the_listener_options() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_connection_options(listener.as_raw_fd()).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(tcp_option(accepted.as_raw_fd(), libc::TCP_NODELAY), 1);
        assert_eq!(tcp_option(accepted.as_raw_fd(), libc::TCP_NOTSENT_LOWAT), NOTSENT_LOWAT);
    }
}
