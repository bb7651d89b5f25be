//! Which broker messages may be acknowledged, under deliver before writing
//! (docs/delivery.md).
//!
//! A message is acknowledged once the store answers for each of its
//! event's deliveries: at once for those written at acceptance, and for
//! those sent unwritten when their attempt is recorded (or the claim handed
//! back). Messages finish out of order — a slow endpoint's attempt takes up
//! to its deadline — so acks go out as one `multiple` ack for everything
//! below the oldest message still waiting and, once that one has waited
//! [`SINGLE_ACKS_AFTER`], single acks above it: a waiting message holds
//! neither the others' acks nor the prefetch window for longer.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How long the oldest waiting message may hold back the acks of those
/// after it: past this they are acknowledged one by one, so the prefetch
/// window never fills with messages that are done.
pub(crate) const SINGLE_ACKS_AFTER: Duration = Duration::from_millis(50);

/// The messages of one channel that are not acknowledged yet.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// By delivery tag: messages that wait for deliveries, or (parked) for
    /// another consumer's hold on their event to end.
    waiting: BTreeMap<u64, Waiting>,
    /// Unwritten delivery id → the tag of its message.
    messages: HashMap<String, u64>,
    /// Tags that may be acknowledged, not yet sent.
    done: Vec<u64>,
}

#[derive(Debug)]
struct Waiting {
    /// Since when.
    since: Instant,
    /// Deliveries not yet answered for.
    deliveries: usize,
    /// When to give up on them (their lease is over: the message goes back
    /// to the queue, and its redelivery takes the event over); `None` for a
    /// parked message, which its consumer offers again.
    give_up_at: Option<Instant>,
}

/// The acks to send now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AckPlan {
    /// One ack, `multiple`, of every message up to and including this tag.
    pub up_to: Option<u64>,
    /// Single acks, above the oldest message still waiting.
    pub single: Vec<u64>,
}

impl Acks {
    /// The message may be acknowledged.
    pub fn done(&mut self, tag: u64) {
        self.done.push(tag);
    }

    /// The message waits for these unwritten deliveries, until `give_up_at`.
    pub fn wait(&mut self, tag: u64, deliveries: Vec<String>, give_up_at: Instant) {
        if deliveries.is_empty() {
            self.done(tag);
            return;
        }
        let waiting = Waiting {
            since: Instant::now(),
            deliveries: deliveries.len(),
            give_up_at: Some(give_up_at),
        };
        for delivery_id in deliveries {
            self.messages.insert(delivery_id, tag);
        }
        self.waiting.insert(tag, waiting);
    }

    /// The message waits to be offered again: neither acknowledged nor
    /// given up until [`Acks::unpark`].
    pub fn park(&mut self, tag: u64) {
        self.waiting.insert(
            tag,
            Waiting {
                since: Instant::now(),
                deliveries: 0,
                give_up_at: None,
            },
        );
    }

    /// The parked message is being offered again.
    pub fn unpark(&mut self, tag: u64) {
        self.waiting.remove(&tag);
    }

    /// The store answered for this unwritten delivery. Unknown ids (of a
    /// message given up, or of an earlier channel) are ignored.
    pub fn settled(&mut self, delivery_id: &str) {
        let Some(tag) = self.messages.remove(delivery_id) else {
            return;
        };
        let Some(waiting) = self.waiting.get_mut(&tag) else {
            return;
        };
        waiting.deliveries = waiting.deliveries.saturating_sub(1);
        if waiting.deliveries == 0 {
            self.waiting.remove(&tag);
            self.done.push(tag);
        }
    }

    /// Takes out the messages whose deliveries were not all answered for by
    /// `now`: to be handed back to the queue.
    pub fn overdue(&mut self, now: Instant) -> Vec<u64> {
        let overdue: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, waiting)| waiting.give_up_at.is_some_and(|at| at <= now))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in &overdue {
            self.waiting.remove(tag);
        }
        if !overdue.is_empty() {
            self.messages.retain(|_, tag| !overdue.contains(tag));
        }
        overdue
    }

    /// How many messages wait, parked or not.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// How many messages wait for their deliveries (not parked).
    pub fn held(&self) -> usize {
        self.waiting
            .values()
            .filter(|waiting| waiting.give_up_at.is_some())
            .count()
    }

    /// The acks for the messages done: one `multiple` ack below the oldest
    /// message still waiting, and — once that one has waited
    /// [`SINGLE_ACKS_AFTER`] at `now` — single acks above it (until then
    /// they are kept: it most likely finishes first, and one ack covers
    /// them all).
    pub fn plan(&mut self, now: Instant) -> AckPlan {
        if self.done.is_empty() {
            return AckPlan::default();
        }
        self.done.sort_unstable();
        let oldest_waiting = self.waiting.iter().next();
        let below = match oldest_waiting {
            Some((&tag, _)) => self.done.partition_point(|&done| done < tag),
            None => self.done.len(),
        };
        let above = self.done.split_off(below);
        let up_to = self.done.last().copied();
        self.done.clear();
        let stuck =
            oldest_waiting.is_some_and(|(_, waiting)| now >= waiting.since + SINGLE_ACKS_AFTER);
        let single = if stuck {
            above
        } else {
            self.done = above;
            Vec::new()
        };
        AckPlan { up_to, single }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A moment at which every waiting message is stuck.
    fn later_now() -> Instant {
        Instant::now() + SINGLE_ACKS_AFTER
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn messages_done_in_order_are_acknowledged_with_one_multiple_ack() {
        let mut acks = Acks::default();
        let later = Instant::now() + Duration::from_secs(60);
        acks.done(1);
        acks.wait(2, ids(&["a"]), later);
        acks.wait(3, Vec::new(), later);
        assert_eq!(
            acks.plan(later_now()),
            AckPlan {
                up_to: Some(1),
                single: vec![3]
            }
        );
        acks.settled("a");
        assert_eq!(
            acks.plan(later_now()),
            AckPlan {
                up_to: Some(2),
                single: vec![]
            }
        );
        assert_eq!(acks.plan(later_now()), AckPlan::default());
    }

    #[test]
    fn acks_after_a_waiting_message_wait_a_moment_for_it() {
        let mut acks = Acks::default();
        let later = Instant::now() + Duration::from_secs(60);
        acks.wait(1, ids(&["a"]), later);
        acks.done(2);
        assert_eq!(acks.plan(Instant::now()), AckPlan::default());
        acks.settled("a");
        assert_eq!(
            acks.plan(Instant::now()),
            AckPlan {
                up_to: Some(2),
                single: vec![]
            }
        );
    }

    #[test]
    fn a_message_waits_for_every_delivery_of_its_event() {
        let mut acks = Acks::default();
        let later = Instant::now() + Duration::from_secs(60);
        acks.wait(7, ids(&["a", "b"]), later);
        acks.settled("a");
        acks.settled("a");
        assert_eq!(acks.plan(later_now()), AckPlan::default());
        assert_eq!(acks.waiting(), 1);
        acks.settled("b");
        assert_eq!(acks.plan(later_now()).up_to, Some(7));
        assert_eq!(acks.waiting(), 0);
    }

    #[test]
    fn a_slow_message_holds_neither_the_others_nor_its_own_past_its_lease() {
        let mut acks = Acks::default();
        let now = Instant::now();
        acks.wait(1, ids(&["slow"]), now + Duration::from_secs(5));
        for tag in 2..=4 {
            acks.wait(
                tag,
                ids(&[&format!("fast{tag}")]),
                now + Duration::from_secs(60),
            );
            acks.settled(&format!("fast{tag}"));
        }
        assert_eq!(
            acks.plan(later_now()),
            AckPlan {
                up_to: None,
                single: vec![2, 3, 4]
            }
        );
        assert!(acks.overdue(now).is_empty());
        assert_eq!(acks.overdue(now + Duration::from_secs(5)), vec![1]);
        // Its delivery answered for after all: the message is gone already.
        acks.settled("slow");
        assert_eq!(acks.plan(later_now()), AckPlan::default());
    }

    #[test]
    fn a_parked_message_is_never_given_up_and_blocks_the_multiple_ack() {
        let mut acks = Acks::default();
        let now = Instant::now();
        acks.park(1);
        acks.done(2);
        assert!(acks.overdue(now + Duration::from_secs(3600)).is_empty());
        assert_eq!(
            acks.plan(later_now()),
            AckPlan {
                up_to: None,
                single: vec![2]
            }
        );
        acks.unpark(1);
        acks.done(1);
        assert_eq!(acks.plan(later_now()).up_to, Some(1));
    }
}
