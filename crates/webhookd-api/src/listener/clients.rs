//! Who holds the listener (SPEC §7, security round 3): one client address
//! may hold `max_connections_per_ip` connections — or, behind a trusted
//! proxy, that many requests in flight, by `X-Forwarded-For` — and near the
//! global cap the idlest keep-alive connection is closed to make room.
//! Refusals are counted and logged at a bounded rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use webhookd_core::telemetry::{self, ListenerRefusal};

use super::Activity;

/// At most one log line about refusals per this.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Every client of one listener.
#[derive(Debug)]
pub(super) struct Clients {
    per_ip: usize,
    trusted_proxies: Vec<IpNet>,
    held: Mutex<HashMap<IpAddr, usize>>,
    open: Mutex<HashMap<u64, Open>>,
    next_id: AtomicU64,
    log: Mutex<RefusalLog>,
}

#[derive(Debug)]
struct Open {
    activity: Arc<Activity>,
    close: CancellationToken,
}

#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    since_last: u64,
}

impl Clients {
    pub(super) fn new(per_ip: usize, trusted_proxies: Vec<IpNet>) -> Arc<Clients> {
        Arc::new(Clients {
            per_ip: per_ip.max(1),
            trusted_proxies,
            held: Mutex::default(),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            log: Mutex::default(),
        })
    }

    pub(super) fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// One of `client`'s places, until the [`Held`] is dropped; `None` when
    /// it holds all of them.
    pub(super) fn hold(self: &Arc<Self>, client: IpAddr) -> Option<Held> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(client).or_insert(0);
        if *count >= self.per_ip {
            return None;
        }
        *count += 1;
        Some(Held {
            clients: Arc::clone(self),
            client,
        })
    }

    /// The client behind a trusted proxy: the rightmost `X-Forwarded-For`
    /// address that is not itself a trusted proxy (what a proxy appends
    /// cannot be forged by the client; what comes before it can).
    /// Read from the right and stopping there: what the client wrote to
    /// the left of it (garbage included) can neither hide the client nor
    /// pose as another.
    pub(super) fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.to_str().unwrap_or_default())
            .collect();
        for hop in values.iter().rev().flat_map(|value| value.rsplit(',')) {
            let hop: IpAddr = hop.trim().parse().ok()?;
            if !self.is_trusted(hop) {
                return Some(hop.to_canonical());
            }
        }
        None
    }

    /// Registers an open connection, closable through `close` while idle.
    pub(super) fn register(
        self: &Arc<Self>,
        activity: Arc<Activity>,
        close: CancellationToken,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Open { activity, close });
        Registered {
            clients: Arc::clone(self),
            id,
        }
    }

    /// Closes the keep-alive connection idle the longest (no request in
    /// progress, no head started); false when none is idle.
    pub(super) fn evict_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let idlest = open
            .values()
            .filter(|open| !open.close.is_cancelled())
            .filter_map(|open| Some((open.activity.idle_since()?, open)))
            .min_by_key(|(since, _)| *since);
        let Some((_, open)) = idlest else {
            return false;
        };
        open.close.cancel();
        telemetry::listener_refused(ListenerRefusal::IdleEvicted);
        true
    }

    /// Counts a refusal, and logs — at most once per [`LOG_EVERY`] — how
    /// many there were.
    pub(super) fn refused(&self, reason: ListenerRefusal, client: IpAddr) {
        telemetry::listener_refused(reason);
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.since_last += 1;
        if log.last.is_none_or(|last| last.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                reason = reason.as_str(),
                %client,
                refused = log.since_last,
                per_ip = self.per_ip,
                "client connections refused (counted in webhookd_listener_refused_total)"
            );
            log.last = Some(Instant::now());
            log.since_last = 0;
        }
    }
}

/// One of a client's places, given back when dropped.
#[derive(Debug)]
pub(super) struct Held {
    clients: Arc<Clients>,
    client: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .clients
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// An open connection's registration, removed when dropped.
#[derive(Debug)]
pub(super) struct Registered {
    clients: Arc<Clients>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.clients
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The JSON envelope telling `client` it holds its whole share of
/// `what` ("connections", "requests in flight").
pub(super) fn over_share_body(client: IpAddr, per_ip: usize, what: &str) -> String {
    serde_json::json!({
        "code": 50000,
        "msg": format!("too many {what} from {client} (the limit is {per_ip}); try again later")
    })
    .to_string()
}

/// The answer to a connection over its address's share: 503 in the JSON
/// envelope, `Connection: close`.
pub(super) fn too_many_answer(client: IpAddr, per_ip: usize) -> Vec<u8> {
    let body = over_share_body(client, per_ip, "connections");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review: one hop the client wrote that was not an address used to
    /// make the whole header unreadable, and the client unaccounted.
    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_whatever_comes_before_it() {
        let clients = Clients::new(1, vec!["10.0.0.0/8".parse().unwrap()]);
        let client = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("x-forwarded-for", value.parse().unwrap());
            }
            clients.forwarded_client(&headers)
        };
        let expected = Some("203.0.113.7".parse().unwrap());
        assert_eq!(client(&["garbage, 203.0.113.7, 10.0.0.2"]), expected);
        assert_eq!(client(&["198.51.100.1", "203.0.113.7, 10.0.0.2"]), expected);
        assert_eq!(
            client(&["203.0.113.7, garbage"]),
            None,
            "a proxy never writes that"
        );
        assert_eq!(client(&["10.0.0.3"]), None);
    }
}
