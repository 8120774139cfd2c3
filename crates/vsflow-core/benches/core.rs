//! Criterion benchmarks of vsflow-core (filled in below).
fn main() {}
