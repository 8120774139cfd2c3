//! Runtime port reservations (`SIO_ACQUIRE/ASSOCIATE/RELEASE_PORT_RESERVATION`): a block that
//! lives as long as the socket that acquired it, as an RAII guard.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::windows::io::{AsRawSocket, FromRawSocket, IntoRawSocket};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use windows_sys::Win32::Networking::WinSock::{
    INET_PORT_RANGE, INET_PORT_RESERVATION_INSTANCE, LPWSAOVERLAPPED_COMPLETION_ROUTINE,
    SIO_ACQUIRE_PORT_RESERVATION, SIO_ASSOCIATE_PORT_RESERVATION, SIO_RELEASE_PORT_RESERVATION,
    SOCKET,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::dynload::{Dll, system_fn};
use crate::error::{Error, win32};
use crate::range::{PortBlock, Protocol};

system_fn!(fn wsa_ioctl = Dll::Ws2_32, c"WSAIoctl": fn(SOCKET, u32, *const core::ffi::c_void, u32, *mut core::ffi::c_void, u32, *mut u32, *mut OVERLAPPED, LPWSAOVERLAPPED_COMPLETION_ROUTINE) -> i32;);
system_fn!(fn wsa_get_last_error = Dll::Ws2_32, c"WSAGetLastError": fn() -> i32;);

/// The `SOCKET` of a socket (a `u64` raw socket is pointer-sized on every Windows target).
fn raw(s: &Socket) -> SOCKET {
    SOCKET::try_from(s.as_raw_socket())
        .unwrap_or(windows_sys::Win32::Networking::WinSock::INVALID_SOCKET)
}

fn socket(proto: Protocol) -> Result<Socket, Error> {
    let (ty, p) = match proto {
        Protocol::Tcp => (Type::STREAM, SockProtocol::TCP),
        Protocol::Udp => (Type::DGRAM, SockProtocol::UDP),
    };
    Socket::new(Domain::IPV4, ty, Some(p)).map_err(|e| Error::Os {
        code: u32::try_from(e.raw_os_error().unwrap_or(0)).unwrap_or(0),
        function: "socket",
    })
}

fn ioctl(
    s: SOCKET,
    code: u32,
    input: &[u8],
    output: &mut [u8],
    function: &'static str,
) -> Result<(), Error> {
    let f = wsa_ioctl()?;
    let mut returned = 0u32;
    // SAFETY: the documented signature; buffers valid for their lengths; no overlapped I/O.
    let rc = unsafe {
        f(
            s,
            code,
            input.as_ptr().cast(),
            u32::try_from(input.len()).unwrap_or(0),
            output.as_mut_ptr().cast(),
            u32::try_from(output.len()).unwrap_or(0),
            &raw mut returned,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: no arguments.
    let code = wsa_get_last_error().map_or(0, |g| unsafe { g() });
    Err(ioctl_error(u32::try_from(code).unwrap_or(0), function))
}

/// What a reservation IOCTL's Winsock error means.
///
/// `WSAEADDRINUSE` a conflict, `WSAEACCES`
/// ports excluded or reserved for another use (not elevation), `WSAENOBUFS` resources (not a
/// conflict), the rest as `Error::from_win32` maps them.
#[must_use]
pub fn ioctl_error(code: u32, function: &'static str) -> Error {
    match code {
        win32::WSAEADDRINUSE => Error::Conflict,
        win32::WSAEACCES => Error::Forbidden { function },
        c => Error::from_win32(c, function),
    }
}

/// A runtime reservation, released (and its socket closed) on drop.
#[derive(Debug)]
pub struct RuntimeReservation {
    socket: Socket,
    block: PortBlock,
    token: u64,
}

impl RuntimeReservation {
    /// Acquires `count` ports at `start`, or anywhere with `None`.
    ///
    /// # Errors
    /// Invalid range, conflict, unsupported.
    pub fn acquire(proto: Protocol, start: Option<u16>, count: u16) -> Result<Self, Error> {
        if let Some(s) = start {
            PortBlock::new(s, count)?;
        } else if count == 0 {
            return Err(Error::InvalidRange { why: "the count must not be 0" });
        }
        let socket = socket(proto)?;
        let range = INET_PORT_RANGE { StartPort: start.unwrap_or(0).to_be(), NumberOfPorts: count };
        let mut instance = INET_PORT_RESERVATION_INSTANCE::default();
        // SAFETY: plain-data structs viewed as bytes for the ioctl buffers.
        let input = unsafe {
            std::slice::from_raw_parts(
                (&raw const range).cast::<u8>(),
                size_of::<INET_PORT_RANGE>(),
            )
        };
        // SAFETY: as above; the instance outlives the call.
        let output = unsafe {
            std::slice::from_raw_parts_mut(
                (&raw mut instance).cast::<u8>(),
                size_of::<INET_PORT_RESERVATION_INSTANCE>(),
            )
        };
        ioctl(
            raw(&socket),
            SIO_ACQUIRE_PORT_RESERVATION,
            input,
            output,
            "SIO_ACQUIRE_PORT_RESERVATION",
        )?;
        let block = PortBlock::new(
            u16::from_be(instance.Reservation.StartPort),
            instance.Reservation.NumberOfPorts,
        )?;
        Ok(Self { socket, block, token: instance.Token.Token })
    }

    /// The ports.
    #[must_use]
    pub const fn block(&self) -> PortBlock {
        self.block
    }

    /// The token sockets associate with.
    #[must_use]
    pub const fn token(&self) -> u64 {
        self.token
    }
}

impl Drop for RuntimeReservation {
    fn drop(&mut self) {
        let token = self.token.to_ne_bytes();
        let _ = ioctl(
            raw(&self.socket),
            SIO_RELEASE_PORT_RESERVATION,
            &token,
            &mut [],
            "SIO_RELEASE_PORT_RESERVATION",
        );
    }
}

/// Associates a reservation's token with a socket before `bind`.
///
/// # Errors
/// The ioctl failed.
pub fn associate(socket: &Socket, token: u64) -> Result<(), Error> {
    ioctl(
        raw(socket),
        SIO_ASSOCIATE_PORT_RESERVATION,
        &token.to_ne_bytes(),
        &mut [],
        "SIO_ASSOCIATE_PORT_RESERVATION",
    )
}

/// A bound socket on a port of the reservation `token` (associate, then bind to port 0).
#[derive(Debug)]
pub enum BoundSocket {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A UDP socket.
    Udp(UdpSocket),
}

/// Associates a new socket with `token` and binds it: Windows picks a port of the reservation.
///
/// # Errors
/// Association or bind failure.
pub fn bind_reserved(proto: Protocol, token: u64) -> Result<BoundSocket, Error> {
    let s = socket(proto)?;
    associate(&s, token)?;
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    s.bind(&addr.into()).map_err(|e| Error::Os {
        code: u32::try_from(e.raw_os_error().unwrap_or(0)).unwrap_or(0),
        function: "bind",
    })?;
    if proto == Protocol::Tcp {
        s.listen(128).map_err(|e| Error::Os {
            code: u32::try_from(e.raw_os_error().unwrap_or(0)).unwrap_or(0),
            function: "listen",
        })?;
    }
    let raw = s.into_raw_socket();
    Ok(match proto {
        Protocol::Tcp => {
            // SAFETY: `raw` is a bound TCP socket we own; ownership moves to the listener.
            let l = unsafe { TcpListener::from_raw_socket(raw) };
            BoundSocket::Tcp(l)
        }
        Protocol::Udp => {
            // SAFETY: `raw` is a bound UDP socket we own; ownership moves to the socket.
            let u = unsafe { UdpSocket::from_raw_socket(raw) };
            BoundSocket::Udp(u)
        }
    })
}
