//! Per-tenant quotas (SPEC §11): what one user may hold or do, so one
//! tenant cannot fill the store or the queue for everyone. Each quota has
//! a process-wide default (the configuration) and may be set per user
//! through the admin API (`PUT /internal/users/{username}/quotas`).

use serde::{Deserialize, Serialize};

/// The quotas in force for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quotas {
    /// Endpoints a user may hold (JoggAI's limit: 20).
    pub max_endpoints: u32,
    /// Test sends (`POST /v2/endpoint/{id}/test`) per endpoint per minute.
    pub test_sends_per_minute: u32,
    /// Pending + dead deliveries kept per endpoint before new ones are
    /// refused at acceptance.
    pub max_kept_deliveries_per_endpoint: u64,
    /// Events a user may hand in per day; `None`: no limit.
    pub max_events_per_day: Option<u64>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_endpoints: 20,
            test_sends_per_minute: 10,
            max_kept_deliveries_per_endpoint: 100_000,
            max_events_per_day: None,
        }
    }
}

/// A user's own quotas: each `None` takes the process-wide default. Kept
/// in the store as JSON, shared by every process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_endpoints: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_sends_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kept_deliveries_per_endpoint: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events_per_day: Option<u64>,
}

/// The store setting that holds `username`'s overrides.
pub fn setting_name(username: &str) -> String {
    format!("quotas:{username}")
}

impl Quotas {
    /// These defaults with `overrides` applied.
    #[must_use]
    pub fn with(self, overrides: &QuotaOverrides) -> Quotas {
        Quotas {
            max_endpoints: overrides.max_endpoints.unwrap_or(self.max_endpoints),
            test_sends_per_minute: overrides
                .test_sends_per_minute
                .unwrap_or(self.test_sends_per_minute),
            max_kept_deliveries_per_endpoint: overrides
                .max_kept_deliveries_per_endpoint
                .unwrap_or(self.max_kept_deliveries_per_endpoint),
            max_events_per_day: overrides.max_events_per_day.or(self.max_events_per_day),
        }
    }
}

impl QuotaOverrides {
    /// Applies a `PUT` body: each field present is set (a number) or
    /// cleared back to the default (`null`); absent fields are kept. A
    /// message naming the field when one is not a whole number in range.
    pub fn apply(
        &mut self,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        const KNOWN: [&str; 4] = [
            "max_endpoints",
            "test_sends_per_minute",
            "max_kept_deliveries_per_endpoint",
            "max_events_per_day",
        ];
        if let Some(unknown) = fields.keys().find(|name| !KNOWN.contains(&name.as_str())) {
            return Err(format!(
                "{}: is not a quota (known: {})",
                unknown.chars().take(64).collect::<String>(),
                KNOWN.join(", ")
            ));
        }
        let number = |name: &str, most: u64| -> Result<Option<Option<u64>>, String> {
            match fields.get(name) {
                None => Ok(None),
                Some(serde_json::Value::Null) => Ok(Some(None)),
                Some(value) => match value.as_u64() {
                    Some(n) if (1..=most).contains(&n) => Ok(Some(Some(n))),
                    _ => Err(format!(
                        "{name}: must be a whole number from 1 to {most}, or null"
                    )),
                },
            }
        };
        let small = |n: Option<u64>| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(value) = number(
            "max_endpoints",
            u64::from(crate::endpoint::ENDPOINTS_PER_USER_CEILING),
        )? {
            self.max_endpoints = small(value);
        }
        if let Some(value) = number("test_sends_per_minute", 10_000)? {
            self.test_sends_per_minute = small(value);
        }
        if let Some(value) = number("max_kept_deliveries_per_endpoint", 1_000_000_000)? {
            self.max_kept_deliveries_per_endpoint = value;
        }
        if let Some(value) = number("max_events_per_day", 1_000_000_000_000)? {
            self.max_events_per_day = value;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn overrides_apply_over_the_defaults_and_null_clears_one() {
        let mut overrides = QuotaOverrides::default();
        overrides
            .apply(&fields(
                r#"{"test_sends_per_minute": 3, "max_events_per_day": 1000}"#,
            ))
            .unwrap();
        let quotas = Quotas::default().with(&overrides);
        assert_eq!(quotas.test_sends_per_minute, 3);
        assert_eq!(quotas.max_events_per_day, Some(1000));
        assert_eq!(quotas.max_endpoints, 20, "absent: the default");
        overrides
            .apply(&fields(r#"{"test_sends_per_minute": null}"#))
            .unwrap();
        assert_eq!(Quotas::default().with(&overrides).test_sends_per_minute, 10);
        assert_eq!(
            Quotas::default().with(&overrides).max_events_per_day,
            Some(1000)
        );
    }

    #[test]
    fn bad_quotas_name_their_field() {
        for (body, part) in [
            (
                r#"{"max_endpoints": 0}"#,
                "max_endpoints: must be a whole number",
            ),
            (r#"{"max_endpoints": "5"}"#, "max_endpoints: must be"),
            (
                r#"{"test_sends_per_minute": 1.5}"#,
                "test_sends_per_minute: must be",
            ),
            (r#"{"tests": 5}"#, "tests: is not a quota"),
        ] {
            let error = QuotaOverrides::default().apply(&fields(body)).unwrap_err();
            assert!(error.contains(part), "{body}: {error}");
        }
    }
}
