//! The driver's scenarios run through vsflow.sys's own machine code (see `sys_loader`).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use sys_loader::Loaded;

fn image() -> Vec<u8> {
    let path = sys_loader::image_path();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn fx_driver_entry_binds_the_framework_and_unload_unbinds_it() {
    let bytes = image();
    let driver = Loaded::load(&bytes).expect("loads");
    let h = vsflow_sim::Host::new(1);
    assert_eq!(h.within(|| driver.driver_entry()), 0);
    h.within(|| driver.unload()).expect("unloads");
    assert_eq!(driver.session().violations(), Vec::new());
}

#[test]
fn debug_dump() {
    let bytes = image();
    let driver = Loaded::load(&bytes).expect("loads");
    let h = vsflow_sim::Host::new(1);
    assert_eq!(h.within(|| driver.driver_entry()), 0);
    eprintln!("calls: {:?}", driver.session().calls());
    eprintln!(
        "pool: {} allocations, live {}",
        driver.session().pool_allocations(),
        driver.session().pool_live().len()
    );
    eprintln!("etw: {:?}", driver.session().etw_providers());
    eprintln!("events: {:?}", driver.session().etw_events());
    eprintln!("debug: {:?}", driver.session().debug_output());
    eprintln!("callouts: {:?}", h.callout_flags());
    h.within(|| driver.unload()).expect("unloads");
    eprintln!("after unload calls: {:?}", driver.session().calls());
    eprintln!("violations: {:?} host {:?}", driver.session().violations(), h.violations());
    eprintln!("pool live {}", driver.session().pool_live().len());
}
