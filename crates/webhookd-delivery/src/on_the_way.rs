//! Claims on their way to a lane whose sending slots the claim request
//! counted.
//!
//! A claim request tells the store how many sending slots each lane holds,
//! and the store grants new slots only for what the lane's own do not
//! cover. If the lane's last worker gave its slot up while that request was
//! out, the claims came back to a lane with no slot and had to be handed
//! back one store call each, then claimed again: measured on a 30,000-event
//! drain, 4,000 hand-backs and 1,500 claims, three store calls in four
//! (issue 26). So a worker whose lane ran dry keeps its slot, for a short
//! while at most, until every request that counted it has been answered and
//! its claims are in the lane.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Per endpoint, the claim requests out that counted its lane's slots.
#[derive(Debug, Default)]
pub(crate) struct ClaimsOnTheWay {
    awaited: Mutex<HashMap<String, usize>>,
    answered: Notify,
}

impl ClaimsOnTheWay {
    /// Marks a request out for `endpoints`, until the guard is dropped —
    /// after the request's claims are in their lanes, or it failed.
    pub(crate) fn expect(self: &Arc<Self>, endpoints: Vec<String>) -> Expected {
        if !endpoints.is_empty() {
            let mut awaited = self.lock();
            for endpoint_id in &endpoints {
                *awaited.entry(endpoint_id.clone()).or_default() += 1;
            }
        }
        Expected {
            book: Arc::clone(self),
            endpoints,
        }
    }

    /// Whether a request that counted `endpoint_id`'s slots is still out.
    pub(crate) fn awaited(&self, endpoint_id: &str) -> bool {
        self.lock().contains_key(endpoint_id)
    }

    /// Resolves once some request is answered; enable it before looking at
    /// [`ClaimsOnTheWay::awaited`] so no answer is missed.
    pub(crate) fn answered(&self) -> tokio::sync::futures::Notified<'_> {
        self.answered.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.awaited.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request out, for the endpoints whose slots it counted.
#[derive(Debug)]
pub(crate) struct Expected {
    book: Arc<ClaimsOnTheWay>,
    endpoints: Vec<String>,
}

impl Drop for Expected {
    fn drop(&mut self) {
        if self.endpoints.is_empty() {
            return;
        }
        {
            let mut awaited = self.book.lock();
            for endpoint_id in &self.endpoints {
                if let Some(count) = awaited.get_mut(endpoint_id) {
                    *count -= 1;
                    if *count == 0 {
                        awaited.remove(endpoint_id);
                    }
                }
            }
        }
        self.book.answered.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lane_is_awaited_until_every_request_that_counted_it_is_answered() {
        let book = Arc::new(ClaimsOnTheWay::default());
        let first = book.expect(vec!["a".to_owned(), "b".to_owned()]);
        let second = book.expect(vec!["a".to_owned()]);
        let answered = book.answered();
        tokio::pin!(answered);
        answered.as_mut().enable();
        drop(first);
        answered.await;
        assert!(book.awaited("a"), "the second request still counts a");
        assert!(!book.awaited("b"));
        drop(second);
        assert!(!book.awaited("a"));
    }
}
