//! Property checks shared by the fuzz targets (fuzz_targets/) and the regression tests
//! (tests/it/fuzz_regressions.rs, which includes checks.rs by path).
pub mod checks;
