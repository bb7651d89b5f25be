//! A receiver's `Retry-After` header (delay-seconds or an HTTP date,
//! RFC 9110 §10.2.3): parsing never panics, seconds read as themselves and
//! a date never yields a wait longer than the distance to it.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &[u8]| {
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let wait = webhookd_core::retry::parse_retry_after(value, now);
    if let Ok(seconds) = value.trim().parse::<u64>() {
        assert_eq!(wait, Some(Duration::from_secs(seconds)));
    } else if let Some(wait) = wait {
        // An HTTP date is at most 9999-12-31.
        assert!(wait < Duration::from_secs(400_000_000_000));
    }
});
