//! webhookd's core: the domain model, with no I/O.
//!
//! Owns what every other crate agrees on — the event catalog, the event
//! message and the delivered body, body signatures, generated ids and
//! secrets, the retry schedule and the configuration. It does not talk to a
//! network, a store or a clock it was not handed, so all of it is tested
//! directly.
//!
//! Layout:
//! - [`catalog`]: the event types in force: the 22 of SPEC §2 by default,
//!   or the operator's, with JSON Schemas for `data` (SPEC §12).
//! - [`event`]: parsing event messages (SPEC §5), rendering bodies (SPEC §3).
//! - [`endpoint`]: the endpoint model and its validation (SPEC §1).
//! - [`delivery_options`]: an endpoint's custom headers, signature scheme,
//!   retry schedule and egress choice (SPEC §14).
//! - [`filter`]: payload filters on an endpoint (SPEC §15), checked and
//!   matched in linear time.
//! - [`operator`]: operator events (SPEC §15): kinds, records, targets.
//! - [`ordering`]: ordered endpoints (SPEC §15): the setting and a
//!   delivery's line.
//! - [`address`]: which IP addresses may be sent to (SPEC §7).
//! - [`signer`]: `X-Webhook-Signature` (SPEC §3).
//! - [`ids`]: endpoint/event/delivery ids, secrets, API keys and their hashes.
//! - [`retry`]: when to try again (SPEC §4).
//! - [`duration`]: `5s`, `2h`, … as written in configuration.
//! - [`health`]: readiness of long-running components, for `/readyz`.
//! - [`telemetry`]: every exported metric, its labels and recorders.
//! - [`time`]: the wall clock, for the crates at the edges.
//! - [`config`]: every setting, loaded from TOML and `WEBHOOKD_*` (SPEC §6).

pub mod address;
pub mod catalog;
pub mod config;
pub mod delivery_options;
pub mod duration;
pub mod encryption_key;
pub mod endpoint;
pub mod event;
pub mod filter;
pub mod health;
pub mod ids;
pub mod operator;
pub mod ordering;
pub mod quota;
pub mod retry;
pub mod signer;
pub mod telemetry;
pub mod time;
pub mod trace;

pub use catalog::{Catalog, EventType, SharedCatalog};
pub use config::{Config, ConfigError, LogFormat, StoreUrl};
pub use delivery_options::{DeliveryOptions, SignatureScheme};
pub use endpoint::{Endpoint, EndpointSpec, EndpointStatus, FieldError, PreviousSecret};
pub use event::{Event, MissingId, Rejection};
pub use filter::Filter;
pub use retry::{NextAttempt, RetrySchedule};
