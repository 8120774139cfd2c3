//! WFP's incoming values as classify reads them (review s7).
//!
//! Classify reads the first eight of a vSwitch transport layer's values by constant index from
//! one array (callout s6, `classify::read_values_into`): WFP's own when the call has them all,
//! as every vsflow layer's does, else a copy padded with `FWP_EMPTY`. So a call with fewer
//! values must read exactly as the same call with the missing ones `FWP_EMPTY`: a value absent
//! is never a value present, and nothing past `valueCount` is read. And whatever the type tags
//! say (a hostile or buggy layer, a new Windows version), no value of another type is trusted:
//! such a packet is bypassed as malformed or judged without ports, never read through the
//! wrong union arm.

use fwps_sys as sys;
use vsflow_callout::classify::{Bypass, Classified, read_values};
use vsflow_core::IpFamily;
use vsflow_sim::SimPacket;
use vsflow_sim::vswitch::packet::ClassifyInput;

/// The values of a VM's inbound TCP packet (egress layer: to VM port 5) or outbound one
/// (ingress layer: from VM port 5), both families.
fn input(family: IpFamily, ingress: bool) -> Box<ClassifyInput> {
    let (a, b) = match family {
        IpFamily::V4 => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[10, 0, 0, 2]);
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&[198, 51, 100, 7]);
            (a, b)
        }
        IpFamily::V6 => {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[15] = 2;
            let mut b = [0u8; 16];
            b[..2].copy_from_slice(&[0x20, 0x01]);
            b[15] = 7;
            (a, b)
        }
    };
    let p = SimPacket::new(family, 6, a, 40_000, b, 443, 0x10, 0);
    let name: Vec<u16> = "SW".encode_utf16().collect();
    let (src, dst) = if ingress { (5, 1) } else { (1, 5) };
    ClassifyInput::new(&p, ingress, src, dst, &name)
}

fn layer(family: IpFamily, ingress: bool) -> u16 {
    match (family, ingress) {
        (IpFamily::V4, true) => sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V4,
        (IpFamily::V6, true) => sys::FWPS_LAYER_INGRESS_VSWITCH_TRANSPORT_V6,
        (IpFamily::V4, false) => sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V4,
        (IpFamily::V6, false) => sys::FWPS_LAYER_EGRESS_VSWITCH_TRANSPORT_V6,
    }
}

/// `read_values` over the first `count` of `values` (`valueCount` = `count`).
fn read(
    values: &mut [sys::FWPS_INCOMING_VALUE0],
    count: usize,
    layer_id: u16,
    meta: &sys::FWPS_INCOMING_METADATA_VALUES0,
) -> Result<Classified, Bypass> {
    let incoming = sys::FWPS_INCOMING_VALUES0 {
        layerId: layer_id,
        valueCount: u32::try_from(count).unwrap(),
        incomingValue: values.as_mut_ptr(),
    };
    // SAFETY: `incomingValue` points to at least `count` values; every pointer a value holds
    // points into `ClassifyInput`, alive for the call.
    unsafe { read_values(&incoming, meta) }
}

const EMPTY: sys::FWPS_INCOMING_VALUE0 = sys::FWPS_INCOMING_VALUE0 {
    value: sys::FWP_VALUE0 {
        r#type: sys::FWP_EMPTY,
        u: sys::FWP_VALUE0_u { uint64: std::ptr::null_mut() },
    },
};

/// A call with `k` values reads as the same call with all of them, those from `k` on
/// `FWP_EMPTY`: for every `k`, both families, both layers. And the full call is read whole.
#[test]
fn a_call_with_fewer_values_reads_as_the_missing_ones_empty() {
    for family in [IpFamily::V4, IpFamily::V6] {
        for ingress in [true, false] {
            let mut input = input(family, ingress);
            let id = layer(family, ingress);
            let meta = input.meta;
            let n = input.values.len();
            let full = read(&mut input.values, n, id, &meta).expect("a whole call is read");
            assert_eq!(full.port_id, 5);
            assert_eq!((full.meta.src_port, full.meta.dst_port), (40_000, 443));
            for k in 0..=n {
                let mut short: Vec<_> = input.values.clone();
                let a = read(&mut short, k, id, &meta);
                let mut padded: Vec<_> = input.values.clone();
                for v in padded.iter_mut().skip(k) {
                    *v = EMPTY;
                }
                let b = read(&mut padded, n, id, &meta);
                assert_eq!(a, b, "{family:?} ingress {ingress}: {k} of {n} values");
                if k <= sys::FIELD_IP_PROTOCOL {
                    assert_eq!(a, Err(Bypass::Malformed), "no address or protocol: {k} values");
                }
            }
            // No values at all (a null array with a count): nothing is read.
            let incoming = sys::FWPS_INCOMING_VALUES0 {
                layerId: id,
                valueCount: 8,
                incomingValue: std::ptr::null_mut(),
            };
            // SAFETY: a null array is read as none.
            assert_eq!(unsafe { read_values(&incoming, &meta) }, Err(Bypass::Malformed));
        }
    }
}

/// Whatever type each of the first eight values claims (50,000 random tag sets over the types
/// WFP has, null pointers included), the read never goes through another union arm: it is
/// malformed, or judged without ports, or it is exactly the packet's own values where every
/// tag is the documented one.
#[test]
fn a_value_of_another_type_is_never_trusted() {
    let tags = [
        sys::FWP_EMPTY,
        sys::FWP_UINT8,
        sys::FWP_UINT16,
        sys::FWP_UINT32,
        sys::FWP_UINT64,
        sys::FWP_BYTE_ARRAY16_TYPE,
        sys::FWP_BYTE_BLOB_TYPE,
        sys::FWP_BYTE_ARRAY6_TYPE,
        0xffff_ffff,
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for family in [IpFamily::V4, IpFamily::V6] {
        for ingress in [true, false] {
            let mut input = input(family, ingress);
            let id = layer(family, ingress);
            let meta = input.meta;
            let n = input.values.len();
            let right: Vec<u32> = input.values.iter().map(|v| v.value.r#type).collect();
            let whole = read(&mut input.values, n, id, &meta).expect("the packet's own values");
            for _ in 0..12_500 {
                let mut values = input.values.clone();
                let mut same = true;
                for (i, v) in values.iter_mut().enumerate().take(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Half the time as WFP gives it, else any tag, and a quarter of those with
                    // a zero value (a null pointer for the pointer types).
                    if x & 1 == 0 {
                        let t = tags[usize::try_from((x >> 8) % tags.len() as u64).unwrap()];
                        v.value.r#type = t;
                        same &= t == right[i];
                        if x & 6 == 0 {
                            v.value.u.uint64 = std::ptr::null_mut();
                            same = false;
                        }
                    }
                }
                let got = read(&mut values, n, id, &meta);
                let typed = |i: usize| values[i].value.r#type == right[i];
                match got {
                    Ok(c) if same => assert_eq!(c, whole),
                    Ok(c) => {
                        // Read only through the documented arms: addresses and protocol of
                        // their types; ports of theirs, or none (judged without them).
                        assert!(
                            typed(sys::FIELD_IP_SOURCE_ADDRESS)
                                && typed(sys::FIELD_IP_DESTINATION_ADDRESS)
                                && typed(sys::FIELD_IP_PROTOCOL),
                            "a value of another type was read: {c:?}"
                        );
                        assert_eq!(c.port_id, 5);
                        assert_eq!(c.meta.family, family);
                        let ports = typed(sys::FIELD_IP_SOURCE_PORT)
                            && typed(sys::FIELD_IP_DESTINATION_PORT);
                        if !ports {
                            assert_eq!((c.meta.src_port, c.meta.dst_port), (0, 0), "{c:?}");
                            let expect = if matches!(c.meta.protocol, 6 | 17) {
                                vsflow_core::Headers::NoPorts
                            } else {
                                vsflow_core::Headers::Complete
                            };
                            assert_eq!(c.meta.headers, expect, "{c:?}");
                        }
                    }
                    Err(why) => assert_eq!(why, Bypass::Malformed),
                }
            }
        }
    }
}
