//! Fuzzes the control device: arbitrary IOCTL codes, input buffers and output sizes, decoded by
//! `vsflow_proto::Request::decode` and handled by a running driver on the simulator (a switch,
//! two VM ports with flows). Properties: nothing panics; a request that decodes re-encodes to
//! the same bytes; a success never claims more output than the buffer holds; a
//! `STATUS_BUFFER_TOO_SMALL` always names a size larger than the buffer given; the driver never
//! breaks a WFP contract.
//!
//! Input layout: byte 0 picks the code (0-7: vsflow's IOCTLs, else the next 4 bytes are the
//! code), bytes 1-2 the output size, the rest is the input buffer. A first byte of 0x80-0x87
//! prefixes a valid header, to reach past it.

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use vsflow_proto::{Ioctl, Request};
use vsflow_sim::Host;
use vsflow_sim::host::EXTERNAL_PORT;

fn host() -> &'static Mutex<(Host, usize)> {
    static HOST: OnceLock<Mutex<(Host, usize)>> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut h = Host::new(7);
        h.load_driver(vsflow_callout::DriverConfig::default()).expect("driver loads");
        let sw = h.create_switch("FUZZ", &[]);
        for id in [5u32, 6] {
            h.create_port(sw, id, &format!("port-{id}"), false);
            for k in 0..40u16 {
                let p = vsflow_sim::SimPacket::new(
                    vsflow_core::IpFamily::V4,
                    vsflow_core::protocol::TCP,
                    vsflow_core::packet::v4([10, 0, 0, u8::try_from(id).unwrap_or(0)]),
                    1000 + k,
                    vsflow_core::packet::v4([198, 51, 100, 1]),
                    443,
                    0x02,
                    0,
                );
                h.transmit(sw, id, EXTERNAL_PORT, &p);
            }
        }
        Mutex::new((h, sw))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let (code, rest) = match sel & 0x7f {
        s @ 0..=7 => (Ioctl::ALL[usize::from(s)].code(), rest),
        _ => match rest.split_first_chunk::<4>() {
            Some((c, r)) => (u32::from_le_bytes(*c), r),
            None => return,
        },
    };
    let Some((size, payload)) = rest.split_first_chunk::<2>() else { return };
    let out_len = usize::from(u16::from_le_bytes(*size)) % 70_000;
    let mut input = Vec::new();
    if sel & 0x80 != 0 {
        input.extend_from_slice(b"VSFP\x01\x00\x00\x00");
    }
    input.extend_from_slice(payload);

    if let Ok(req) = Request::decode(code, &input) {
        let mut again = vec![0u8; req.encoded_len()];
        let n = req.encode(&mut again).expect("re-encodes");
        assert_eq!(&again[..n], &input[..], "decode/encode is not the identity");
    }

    let guard = host().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (o, bytes) = guard.0.ioctl(code, &input, out_len);
    if fwps_sys::nt_success(o.status) {
        assert!(o.information <= out_len, "claims {} bytes of a {out_len}-byte buffer", o.information);
        assert_eq!(bytes.len(), o.information);
    }
    if o.status == fwps_sys::STATUS_BUFFER_TOO_SMALL {
        assert!(o.information > out_len, "needs {} but had {out_len}", o.information);
    }
    assert!(guard.0.violations().is_empty(), "{:?}", guard.0.violations());
});
