//! Compile-only: every system function netports resolves at run time, coerced from
//! windows-sys 0.61's declaration to the pointer type netports declares for it (the
//! `system_fn!` accessors' `Fn`). A function item coerces to a function pointer only when the
//! signatures are identical, so a declaration that drifts from the SDK's (a parameter's type,
//! the return type, the calling convention) fails the build.
//!
//! Built only under clippy (`cfg(clippy)`: `cargo xtask ci` runs clippy for
//! `x86_64-pc-windows-gnu`), never in a binary: referring to the functions here would import
//! them statically, and netports must load on systems that lack some (Wine, trimmed editions).

#![allow(dead_code, reason = "checks only: nothing here is called")]

use windows_sys::Win32::NetworkManagement::IpHelper as ip;
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform as wfp;
use windows_sys::Win32::Networking::WinSock as ws;

use super::{host_filter as hf, nsp, persistent as pr, runtime as rt, tables as tb, teredo as te};

/// Each line: netports' pointer type = windows-sys's function.
const CHECKS: () = {
    let _: te::get_teredo_port::Fn = ip::GetTeredoPort;
    let _: te::notify_teredo_port_change::Fn = ip::NotifyTeredoPortChange;
    let _: te::cancel_mib_change_notify2::Fn = ip::CancelMibChangeNotify2;
    let _: te::fwpm_system_ports_get0::Fn = wfp::FwpmSystemPortsGet0;
    let _: te::fwpm_system_ports_subscribe0::Fn = wfp::FwpmSystemPortsSubscribe0;
    let _: te::fwpm_system_ports_unsubscribe0::Fn = wfp::FwpmSystemPortsUnsubscribe0;
    let _: te::fwpm_free_memory0::Fn = wfp::FwpmFreeMemory0;
    let _: tb::get_extended_tcp_table::Fn = ip::GetExtendedTcpTable;
    let _: tb::get_extended_udp_table::Fn = ip::GetExtendedUdpTable;
    let _: pr::create_tcp::Fn = ip::CreatePersistentTcpPortReservation;
    let _: pr::create_udp::Fn = ip::CreatePersistentUdpPortReservation;
    let _: pr::delete_tcp::Fn = ip::DeletePersistentTcpPortReservation;
    let _: pr::delete_udp::Fn = ip::DeletePersistentUdpPortReservation;
    let _: pr::lookup_tcp::Fn = ip::LookupPersistentTcpPortReservation;
    let _: pr::lookup_udp::Fn = ip::LookupPersistentUdpPortReservation;
    let _: rt::wsa_ioctl::Fn = ws::WSAIoctl;
    let _: rt::wsa_get_last_error::Fn = ws::WSAGetLastError;
    let _: hf::fwpm_engine_open0::Fn = wfp::FwpmEngineOpen0;
    let _: hf::fwpm_engine_close0::Fn = wfp::FwpmEngineClose0;
    let _: hf::fwpm_transaction_begin0::Fn = wfp::FwpmTransactionBegin0;
    let _: hf::fwpm_transaction_commit0::Fn = wfp::FwpmTransactionCommit0;
    let _: hf::fwpm_transaction_abort0::Fn = wfp::FwpmTransactionAbort0;
    let _: hf::fwpm_provider_add0::Fn = wfp::FwpmProviderAdd0;
    let _: hf::fwpm_sublayer_add0::Fn = wfp::FwpmSubLayerAdd0;
    let _: hf::fwpm_filter_add0::Fn = wfp::FwpmFilterAdd0;
    let _: hf::fwpm_filter_delete_by_id0::Fn = wfp::FwpmFilterDeleteById0;
    let _: hf::fwpm_get_app_id_from_file_name0::Fn = wfp::FwpmGetAppIdFromFileName0;
    let _: hf::fwpm_free_memory0::Fn = wfp::FwpmFreeMemory0;
    let _: nsp::wsa_startup::Fn = ws::WSAStartup;
    let _: nsp::wsa_get_last_error::Fn = ws::WSAGetLastError;
    let _: nsp::wsa_set_last_error::Fn = ws::WSASetLastError;
    let _: nsp::wsa_advertise_provider::Fn = ws::WSAAdvertiseProvider;
    let _: nsp::wsa_unadvertise_provider::Fn = ws::WSAUnadvertiseProvider;
    let _: nsp::wsa_provider_complete_async_call::Fn = ws::WSAProviderCompleteAsyncCall;
    let _: nsp::wsc_install_name_space_ex::Fn = ws::WSCInstallNameSpaceEx;
    let _: nsp::wsc_install_name_space_ex32::Fn = ws::WSCInstallNameSpaceEx32;
    let _: nsp::wsc_uninstall_name_space::Fn = ws::WSCUnInstallNameSpace;
    let _: nsp::wsc_uninstall_name_space32::Fn = ws::WSCUnInstallNameSpace32;
    let _: nsp::wsa_enum_name_space_providers_w::Fn = ws::WSAEnumNameSpaceProvidersW;
    let _: nsp::wsc_enum_name_space_providers32::Fn = ws::WSCEnumNameSpaceProviders32;
    let _: nsp::wsa_lookup_service_begin_w::Fn = ws::WSALookupServiceBeginW;
    let _: nsp::wsa_lookup_service_next_w::Fn = ws::WSALookupServiceNextW;
    let _: nsp::wsa_lookup_service_end::Fn = ws::WSALookupServiceEnd;
};
