//! The delivery engine: take due deliveries from the store, POST them as
//! SPEC §3 says, and record each attempt and its consequence (SPEC §4).
//!
//! Layout: [`client`] (HTTP, signing), `routes` (connectors: SSRF guard,
//! egress proxy and bind, per-endpoint TLS), [`classify`] (outcome →
//! verdict, exhaustive), `reuse` (telling a reused connection's silent
//! close from a failed attempt), [`engine`] (claiming with leases, concurrency caps,
//! fairness, retries as data, draining on shutdown), `health` (each
//! endpoint's circuit breaker), `slot_lapse` (when a
//! sending slot a worker passes on may have lapsed in the store),
//! `on_the_way` (claims a lane's slots are kept for), `recorder` (attempts
//! written back in batches), `options` (each endpoint's delivery options,
//! SPEC §14, prepared once per change), `oauth2` (receivers' bearer tokens).

pub mod classify;
pub mod client;
pub mod engine;
mod health;
mod oauth2;
mod on_the_way;
mod options;
mod recorder;
mod reuse;
mod routes;
mod slot_lapse;
pub mod trace;

pub use classify::{Reason, Verdict};
pub use client::DeliveryClient;
pub use engine::{Dispatcher, DispatcherSettings};
pub use routes::{Egress, EgressError};
pub use trace::configure_sampling;
