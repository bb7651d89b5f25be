//! webhookd's benchmarks. The criterion micro-benchmarks live in `benches/`;
//! the end-to-end load harness (`webhookd-bench`) joins them with the
//! delivery engine.
