//! Configuration values from the environment and a TOML file: durations,
//! retry schedules, CIDRs, keys, frame ancestors — every setting, every
//! input. Loading never panics; an error names its origin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhookd_core::Config;

/// The settings whose parsers are worth a fuzzer's time (the rest are
/// plain strings or numbers).
const VARIABLES: [&str; 10] = [
    "WEBHOOKD_RETRY_SCHEDULE",
    "WEBHOOKD_DELIVERY_TIMEOUT",
    "WEBHOOKD_SHUTDOWN_GRACE",
    "WEBHOOKD_AUTO_DISABLE_AFTER",
    "WEBHOOKD_ALLOWED_NETWORKS",
    "WEBHOOKD_ENCRYPTION_KEY",
    "WEBHOOKD_PORTAL_FRAME_ANCESTORS",
    "WEBHOOKD_STORE",
    "WEBHOOKD_AMQP_URL",
    "WEBHOOKD_LISTEN",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let variable = VARIABLES[usize::from(selector) % VARIABLES.len()];
    if let Err(error) = Config::load(None, [(variable.to_owned(), text.to_owned())]) {
        assert_eq!(error.origin, variable);
    }
    if let Err(error) = Config::load(Some(("fuzz.toml", text)), []) {
        assert!(error.origin.contains("fuzz.toml") || error.origin.starts_with("WEBHOOKD_"));
    }
    let _ = webhookd_core::duration::parse_duration(text);
    let _ = webhookd_core::retry::RetrySchedule::parse(text);
});
