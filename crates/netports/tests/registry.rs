//! Reading the administered reservations' registry values (issue 19, item 11): the
//! enumeration ends at `ERROR_NO_MORE_ITEMS` and stops at the first real error instead of
//! skipping it (which, for an error that repeats, never ended).

use netports::PortBlock;
use netports::excluded::{ValueName, administered_from};

const NO_MORE_ITEMS: u32 = 259;

#[test]
fn the_values_are_read_until_no_more_items() {
    let names = ["C3503C00", "not-a-range", "1F900A00"];
    let got = administered_from(|i| {
        names
            .get(i as usize)
            .map_or(ValueName::Error(NO_MORE_ITEMS), |n| ValueName::Name((*n).into()))
    });
    assert_eq!(
        got,
        Ok(vec![PortBlock::new(8080, 10).unwrap(), PortBlock::new(50_000, 60).unwrap()]),
        "sorted, the value that is not a range skipped"
    );
}

#[test]
fn a_real_error_stops_the_enumeration() {
    let mut calls = 0;
    let got = administered_from(|i| {
        calls += 1;
        match i {
            0 => ValueName::Name("C3503C00".into()),
            _ => ValueName::Error(5), // ERROR_ACCESS_DENIED, every time
        }
    });
    assert_eq!(got, Err(5));
    assert_eq!(calls, 2, "stopped at the first error");
}

#[test]
fn a_name_too_long_for_a_range_is_skipped_not_an_error() {
    let got = administered_from(|i| match i {
        0 => ValueName::TooLong,
        1 => ValueName::Name("C3503C00".into()),
        _ => ValueName::Error(NO_MORE_ITEMS),
    });
    assert_eq!(got, Ok(vec![PortBlock::new(50_000, 60).unwrap()]));
}
