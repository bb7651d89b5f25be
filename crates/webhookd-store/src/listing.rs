//! Delivery listings (SPEC §13): pages, order, filters, and the id range
//! a Redis listing walks. Delivery ids are
//! `dlv_` + a UUIDv7 in hex, whose first 12 digits are the creation time
//! in unix milliseconds: the index ordered by id is ordered by creation,
//! and a time window narrows to an id range. The id's time is the local
//! clock's and `created_at` the store's, so the range is widened by
//! [`CLOCK_MARGIN_MS`] and `created_at` decides ([`DeliveryQuery::keeps`]).

use webhookd_core::EventType;
use webhookd_core::ids::DELIVERY_ID_PREFIX;

use crate::Delivery;

/// A page of a listing: up to `limit` items after the cursor `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    /// The last id of the previous page; `None` for the first page.
    pub after: Option<String>,
}

/// Which way a listing runs: by delivery id, which orders by creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (the default, as the JoggAI-era listing had it).
    #[default]
    Ascending,
    /// Newest first.
    Descending,
}

/// A delivery listing with its filters (SPEC §13); every filter optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub page: Page,
    pub order: Order,
    pub event: Option<EventType>,
    pub event_id: Option<String>,
    /// Created at or after this unix millisecond.
    pub since_ms: Option<i64>,
    /// Created at or before this unix millisecond.
    pub until_ms: Option<i64>,
}

impl DeliveryQuery {
    /// Whether some deliveries may not pass: then a listing looks at no
    /// more than [`MAX_SCANNED`] entries per call (otherwise it stops at
    /// its limit anyway).
    pub fn filters(&self) -> bool {
        self.event.is_some()
            || self.event_id.is_some()
            || self.since_ms.is_some()
            || self.until_ms.is_some()
    }

    /// Whether `delivery` passes every filter.
    pub fn keeps(&self, delivery: &Delivery) -> bool {
        self.event
            .as_ref()
            .is_none_or(|event| *event == delivery.event_type)
            && self
                .event_id
                .as_ref()
                .is_none_or(|id| *id == delivery.event_id)
            && self
                .since_ms
                .is_none_or(|since| delivery.created_at >= since)
            && self
                .until_ms
                .is_none_or(|until| delivery.created_at <= until)
    }
}

/// One page of a [`DeliveryQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub deliveries: Vec<Delivery>,
    /// Where the next page starts (its `after`); `None` at the end. A
    /// filtered page may hold fewer than its limit and still go on: a
    /// listing looks at no more than [`MAX_SCANNED`] entries per call.
    pub next_after: Option<String>,
}

/// The most index entries one filtered listing call looks at, so that no
/// request costs the store more than this however its filters match.
pub const MAX_SCANNED: usize = 5_000;

/// The ids a listing still has to look at, as Redis `ZRANGEBYLEX` bounds.
#[derive(Debug, Clone)]
pub(crate) struct IdRange {
    low: Option<String>,
    high: Option<String>,
    /// The last id looked at: where the next page starts.
    last: Option<String>,
}

/// How far the clock an id was made with may be from the store's.
const CLOCK_MARGIN_MS: i64 = 24 * 3600 * 1000;

/// The smallest id created at `ms` or later.
pub(crate) fn first_id_at(ms: i64) -> String {
    format!("{DELIVERY_ID_PREFIX}{:012x}", ms.max(0))
}

impl IdRange {
    pub(crate) fn of(query: &DeliveryQuery) -> IdRange {
        let since = query
            .since_ms
            .map(|ms| format!("[{}", first_id_at(ms.saturating_sub(CLOCK_MARGIN_MS))));
        let until = query.until_ms.map(|ms| {
            format!(
                "({}",
                first_id_at(ms.saturating_add(CLOCK_MARGIN_MS).saturating_add(1))
            )
        });
        let after = query.page.after.as_ref().map(|id| format!("({id}"));
        // `after` continues a listing: it is past `since` (ascending) or
        // before `until` (descending) unless the caller mixed cursors.
        let (low, high) = match query.order {
            Order::Ascending => (later(since, after), until),
            Order::Descending => (since, earlier(until, after)),
        };
        IdRange {
            low,
            high,
            last: None,
        }
    }

    pub(crate) fn low(&self) -> String {
        self.low.clone().unwrap_or_else(|| "-".to_owned())
    }

    pub(crate) fn high(&self) -> String {
        self.high.clone().unwrap_or_else(|| "+".to_owned())
    }

    /// `id` was looked at: the range goes on past it.
    pub(crate) fn passed(&mut self, order: Order, id: &str) {
        let bound = Some(format!("({id}"));
        match order {
            Order::Ascending => self.low = bound,
            Order::Descending => self.high = bound,
        }
        self.last = Some(id.to_owned());
    }

    /// The `after` of the next page.
    pub(crate) fn cursor(&self) -> Option<String> {
        self.last.clone()
    }
}

/// Of two lower bounds, the one that lets fewer ids through.
fn later(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a[1..] >= b[1..] { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Of two upper bounds, the one that lets fewer ids through.
fn earlier(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a[1..] <= b[1..] { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_id_sorts_by_its_creation_time() {
        let before = webhookd_core::time::unix_millis();
        let id = webhookd_core::ids::new_delivery_id();
        let after = webhookd_core::time::unix_millis();
        assert!(first_id_at(before) <= id, "{id}");
        assert!(id < first_id_at(after + 1), "{id}");
    }

    #[test]
    fn bounds_combine_the_time_window_and_the_cursor() {
        let query = DeliveryQuery {
            since_ms: Some(CLOCK_MARGIN_MS + 0x10),
            until_ms: Some(0x20 - CLOCK_MARGIN_MS),
            ..DeliveryQuery::default()
        };
        let range = IdRange::of(&query);
        assert_eq!(range.low(), "[dlv_000000000010");
        assert_eq!(range.high(), "(dlv_000000000021");

        let descending = DeliveryQuery {
            order: Order::Descending,
            page: Page {
                limit: 10,
                after: Some("dlv_00000000001a77".into()),
            },
            ..query
        };
        let mut range = IdRange::of(&descending);
        assert_eq!(range.low(), "[dlv_000000000010");
        assert_eq!(range.high(), "(dlv_00000000001a77");
        range.passed(Order::Descending, "dlv_000000000015aa");
        assert_eq!(range.high(), "(dlv_000000000015aa");
        assert_eq!(range.cursor().as_deref(), Some("dlv_000000000015aa"));
        assert_eq!(IdRange::of(&DeliveryQuery::default()).low(), "-");
    }
}
