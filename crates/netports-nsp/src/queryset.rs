//! Writes an [`Answer`] as a self-contained `WSAQUERYSET2W` into the caller's buffer.
//!
//! `NSPv2LookupServiceNextEx` hands the provider one buffer; everything the query set points
//! to (provider id, addresses, strings, blob) must be inside it, and every pointer must point
//! into it. The layout is fixed here with the x64 offsets, each checked at compile time
//! against windows-sys's definition of the structure. Bytes are written one field at a time
//! (`to_le_bytes`), so the buffer needs no particular alignment from Rust's point of view;
//! Winsock's buffers are 8-aligned, and every item is placed at an 8-aligned offset.
//!
//! In the buffer, in order: the query set (112 bytes); the provider GUID; with
//! `LUP_RETURN_ADDR` two `CSADDR_INFO` (IPv4 then IPv6) and their four socket addresses
//! (local = wildcard, for `bind`; remote = loopback, for `connect` from this host; both with
//! the block's first port); with `LUP_RETURN_NAME` the name; with `LUP_RETURN_COMMENT` the
//! comment (UTF-16, NUL-terminated); with `LUP_RETURN_BLOB` a `BLOB` and its 8 bytes (see
//! [`crate::reservation`]).

use core::mem::{offset_of, size_of};

use windows_sys::Win32::Networking::WinSock::{
    CSADDR_INFO, LUP_RETURN_ADDR, LUP_RETURN_BLOB, LUP_RETURN_COMMENT, LUP_RETURN_NAME,
    SOCKADDR_IN, SOCKADDR_IN6, SOCKET_ADDRESS, WSAQUERYSET2W,
};
use windows_sys::Win32::System::Com::BLOB;
use windows_sys::core::GUID;

use crate::answer::Answer;
use crate::reservation::BLOB_LEN;

/// x64 offsets and sizes, checked against windows-sys below.
pub mod layout {
    /// `sizeof(WSAQUERYSET2W)`.
    pub const QS_SIZE: usize = 112;
    /// `dwSize`.
    pub const QS_SIZE_FIELD: usize = 0;
    /// `lpszServiceInstanceName`.
    pub const QS_NAME: usize = 8;
    /// `lpVersion`.
    pub const QS_VERSION: usize = 16;
    /// `lpszComment`.
    pub const QS_COMMENT: usize = 24;
    /// `dwNameSpace`.
    pub const QS_NAMESPACE: usize = 32;
    /// `lpNSProviderId`.
    pub const QS_PROVIDER: usize = 40;
    /// `lpszContext`.
    pub const QS_CONTEXT: usize = 48;
    /// `dwNumberOfProtocols`.
    pub const QS_NUM_PROTOCOLS: usize = 56;
    /// `lpafpProtocols`.
    pub const QS_PROTOCOLS: usize = 64;
    /// `lpszQueryString`.
    pub const QS_QUERY_STRING: usize = 72;
    /// `dwNumberOfCsAddrs`.
    pub const QS_NUM_CSADDRS: usize = 80;
    /// `lpcsaBuffer`.
    pub const QS_CSADDRS: usize = 88;
    /// `dwOutputFlags`.
    pub const QS_OUTPUT_FLAGS: usize = 96;
    /// `lpBlob`.
    pub const QS_BLOB: usize = 104;
    /// `sizeof(CSADDR_INFO)`.
    pub const CSADDR_SIZE: usize = 40;
    /// `CSADDR_INFO::LocalAddr` (a `SOCKET_ADDRESS`: pointer, then length at +8).
    pub const CS_LOCAL: usize = 0;
    /// `CSADDR_INFO::RemoteAddr`.
    pub const CS_REMOTE: usize = 16;
    /// `SOCKET_ADDRESS::iSockaddrLength`.
    pub const SA_LEN: usize = 8;
    /// `CSADDR_INFO::iSocketType`.
    pub const CS_SOCKET_TYPE: usize = 32;
    /// `CSADDR_INFO::iProtocol`.
    pub const CS_PROTOCOL: usize = 36;
    /// `sizeof(SOCKADDR_IN)`.
    pub const SOCKADDR_IN_SIZE: usize = 16;
    /// `sizeof(SOCKADDR_IN6)`.
    pub const SOCKADDR_IN6_SIZE: usize = 28;
    /// `sizeof(BLOB)`.
    pub const BLOB_SIZE: usize = 16;
    /// `BLOB::pBlobData`.
    pub const BLOB_DATA: usize = 8;
    /// `sizeof(GUID)`.
    pub const GUID_SIZE: usize = 16;
}

use layout::{
    BLOB_DATA, BLOB_SIZE, CS_LOCAL, CS_PROTOCOL, CS_REMOTE, CS_SOCKET_TYPE, CSADDR_SIZE, GUID_SIZE,
    QS_BLOB, QS_COMMENT, QS_CONTEXT, QS_CSADDRS, QS_NAME, QS_NAMESPACE, QS_NUM_CSADDRS,
    QS_NUM_PROTOCOLS, QS_OUTPUT_FLAGS, QS_PROTOCOLS, QS_PROVIDER, QS_QUERY_STRING, QS_SIZE,
    QS_SIZE_FIELD, QS_VERSION, SA_LEN, SOCKADDR_IN_SIZE, SOCKADDR_IN6_SIZE,
};

const _: () = {
    assert!(size_of::<WSAQUERYSET2W>() == QS_SIZE);
    assert!(offset_of!(WSAQUERYSET2W, dwSize) == QS_SIZE_FIELD);
    assert!(offset_of!(WSAQUERYSET2W, lpszServiceInstanceName) == QS_NAME);
    assert!(offset_of!(WSAQUERYSET2W, lpVersion) == QS_VERSION);
    assert!(offset_of!(WSAQUERYSET2W, lpszComment) == QS_COMMENT);
    assert!(offset_of!(WSAQUERYSET2W, dwNameSpace) == QS_NAMESPACE);
    assert!(offset_of!(WSAQUERYSET2W, lpNSProviderId) == QS_PROVIDER);
    assert!(offset_of!(WSAQUERYSET2W, lpszContext) == QS_CONTEXT);
    assert!(offset_of!(WSAQUERYSET2W, dwNumberOfProtocols) == QS_NUM_PROTOCOLS);
    assert!(offset_of!(WSAQUERYSET2W, lpafpProtocols) == QS_PROTOCOLS);
    assert!(offset_of!(WSAQUERYSET2W, lpszQueryString) == QS_QUERY_STRING);
    assert!(offset_of!(WSAQUERYSET2W, dwNumberOfCsAddrs) == QS_NUM_CSADDRS);
    assert!(offset_of!(WSAQUERYSET2W, lpcsaBuffer) == QS_CSADDRS);
    assert!(offset_of!(WSAQUERYSET2W, dwOutputFlags) == QS_OUTPUT_FLAGS);
    assert!(offset_of!(WSAQUERYSET2W, lpBlob) == QS_BLOB);
    assert!(size_of::<CSADDR_INFO>() == CSADDR_SIZE);
    assert!(offset_of!(CSADDR_INFO, LocalAddr) == CS_LOCAL);
    assert!(offset_of!(CSADDR_INFO, RemoteAddr) == CS_REMOTE);
    assert!(offset_of!(CSADDR_INFO, iSocketType) == CS_SOCKET_TYPE);
    assert!(offset_of!(CSADDR_INFO, iProtocol) == CS_PROTOCOL);
    assert!(offset_of!(SOCKET_ADDRESS, iSockaddrLength) == SA_LEN);
    assert!(size_of::<SOCKADDR_IN>() == SOCKADDR_IN_SIZE);
    assert!(size_of::<SOCKADDR_IN6>() == SOCKADDR_IN6_SIZE);
    assert!(size_of::<BLOB>() == BLOB_SIZE);
    assert!(offset_of!(BLOB, pBlobData) == BLOB_DATA);
    assert!(size_of::<GUID>() == GUID_SIZE);
};

/// The sizes as the structures' integer fields hold them.
const QS_SIZE_U32: u32 = 112;
const SOCKADDR_IN_LEN: i32 = 16;
const SOCKADDR_IN6_LEN: i32 = 28;
const BLOB_LEN_U32: u32 = 8;
const _: () = {
    assert!(QS_SIZE_U32 as usize == QS_SIZE);
    assert!(SOCKADDR_IN_LEN as usize == SOCKADDR_IN_SIZE);
    assert!(SOCKADDR_IN6_LEN as usize == SOCKADDR_IN6_SIZE);
    assert!(BLOB_LEN_U32 as usize == BLOB_LEN);
};

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6` on Windows.
pub const AF_INET6: u16 = 23;

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(core::iter::once(0)).collect()
}

/// Where each item goes, for an answer and a set of `LUP_RETURN_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    provider: usize,
    addrs: Option<usize>,
    name: Option<usize>,
    comment: Option<usize>,
    blob: Option<usize>,
    total: usize,
}

/// Size of the socket-address area that follows the two `CSADDR_INFO`.
const ADDR_AREA: usize = 2 * CSADDR_SIZE + 2 * SOCKADDR_IN_SIZE + 2 * align8(SOCKADDR_IN6_SIZE);

fn plan(answer: &Answer, flags: u32) -> Plan {
    let mut at = QS_SIZE;
    let provider = at;
    at += GUID_SIZE;
    let mut take = |len: usize, wanted: bool| {
        wanted.then(|| {
            let here = at;
            at = align8(at + len);
            here
        })
    };
    let addrs = take(ADDR_AREA, flags & LUP_RETURN_ADDR != 0);
    let name =
        take(2 * (answer.name.as_str().encode_utf16().count() + 1), flags & LUP_RETURN_NAME != 0);
    let comment =
        take(2 * (answer.comment.encode_utf16().count() + 1), flags & LUP_RETURN_COMMENT != 0);
    let blob = take(BLOB_SIZE + BLOB_LEN, flags & LUP_RETURN_BLOB != 0);
    Plan { provider, addrs, name, comment, blob, total: at }
}

/// The bytes `encode` needs for `answer` with `flags`.
#[must_use]
pub fn encoded_len(answer: &Answer, flags: u32) -> usize {
    plan(answer, flags).total
}

/// Writes fields into the buffer; every offset was checked against the planned total.
struct Writer<'a> {
    buf: &'a mut [u8],
    base: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, at: usize, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(at..at + b.len()) {
            dst.copy_from_slice(b);
        }
    }
    fn u16(&mut self, at: usize, v: u16) {
        self.bytes(at, &v.to_le_bytes());
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.bytes(at, &v.to_le_bytes());
    }
    fn i32(&mut self, at: usize, v: i32) {
        self.bytes(at, &v.to_le_bytes());
    }
    /// A pointer to offset `target` of the buffer.
    fn ptr(&mut self, at: usize, target: usize) {
        self.bytes(at, &((self.base + target) as u64).to_le_bytes());
    }
    fn wide(&mut self, at: usize, s: &str) {
        for (i, c) in wide(s).into_iter().enumerate() {
            self.u16(at + 2 * i, c);
        }
    }
    fn guid(&mut self, at: usize, g: &GUID) {
        self.u32(at, g.data1);
        self.u16(at + 4, g.data2);
        self.u16(at + 6, g.data3);
        self.bytes(at + 8, &g.data4);
    }
}

/// Writes `answer` into `buf` as a `WSAQUERYSET2W` with everything it points to.
///
/// Returns the bytes used.
///
/// # Errors
/// `Err(needed)` when `buf` is shorter than `needed` bytes; nothing is written then.
pub fn encode(
    answer: &Answer,
    flags: u32,
    namespace: u32,
    provider: &GUID,
    buf: &mut [u8],
) -> Result<usize, usize> {
    let p = plan(answer, flags);
    let Some(area) = buf.get_mut(..p.total) else { return Err(p.total) };
    area.fill(0);
    let base = area.as_mut_ptr().expose_provenance();
    let mut w = Writer { buf: area, base };
    w.u32(QS_SIZE_FIELD, QS_SIZE_U32);
    w.u32(QS_NAMESPACE, namespace);
    w.guid(p.provider, provider);
    w.ptr(QS_PROVIDER, p.provider);
    let r = answer.reservation;
    if let Some(at) = p.addrs {
        w.u32(QS_NUM_CSADDRS, 2);
        w.ptr(QS_CSADDRS, at);
        let sa = at + 2 * CSADDR_SIZE;
        // IPv4: local 0.0.0.0:port, remote 127.0.0.1:port.
        let (v4_local, v4_remote) = (sa, sa + SOCKADDR_IN_SIZE);
        // IPv6: local [::]:port, remote [::1]:port.
        let v6_local = sa + 2 * SOCKADDR_IN_SIZE;
        let v6_remote = v6_local + align8(SOCKADDR_IN6_SIZE);
        let port = r.start().to_be_bytes();
        for (addr, loopback) in [(v4_local, false), (v4_remote, true)] {
            w.u16(addr, AF_INET);
            w.bytes(addr + 2, &port);
            if loopback {
                w.bytes(addr + 4, &[127, 0, 0, 1]);
            }
        }
        for (addr, loopback) in [(v6_local, false), (v6_remote, true)] {
            w.u16(addr, AF_INET6);
            w.bytes(addr + 2, &port);
            if loopback {
                w.bytes(addr + 8 + 15, &[1]);
            }
        }
        for (i, (local, remote, len)) in
            [(v4_local, v4_remote, SOCKADDR_IN_LEN), (v6_local, v6_remote, SOCKADDR_IN6_LEN)]
                .into_iter()
                .enumerate()
        {
            let cs = at + i * CSADDR_SIZE;
            w.ptr(cs + CS_LOCAL, local);
            w.i32(cs + CS_LOCAL + SA_LEN, len);
            w.ptr(cs + CS_REMOTE, remote);
            w.i32(cs + CS_REMOTE + SA_LEN, len);
            w.i32(cs + CS_SOCKET_TYPE, r.transport().socket_type());
            w.i32(cs + CS_PROTOCOL, r.transport().protocol());
        }
    }
    if let Some(at) = p.name {
        w.wide(at, answer.name.as_str());
        w.ptr(QS_NAME, at);
    }
    if let Some(at) = p.comment {
        w.wide(at, &answer.comment);
        w.ptr(QS_COMMENT, at);
    }
    if let Some(at) = p.blob {
        w.u32(at, BLOB_LEN_U32);
        w.ptr(at + BLOB_DATA, at + BLOB_SIZE);
        w.bytes(at + BLOB_SIZE, &r.to_blob());
        w.ptr(QS_BLOB, at);
    }
    Ok(p.total)
}
