//! What the campaign did to the endpoints, and when: the half of the
//! history the receivers do not see. Shared by the operator (which writes
//! it), the receivers (which read tempers and secrets) and the checker.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::receivers::Temper;

/// One secret of an endpoint and when it may sign.
#[derive(Debug, Clone)]
pub struct Secret {
    pub value: String,
    /// When the call that made it was sent (it may sign from then on).
    pub from: Instant,
    /// When it stopped signing: the answer to the rotation after it plus
    /// that rotation's grace, or the answer to the second rotation after
    /// it (a rotation during a grace drops the older secret). `None`: it
    /// may still sign.
    pub until: Option<Instant>,
}

/// A window of time: `until` is `None` while it lasts.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub from: Instant,
    pub until: Option<Instant>,
}

impl Span {
    pub fn overlaps(&self, from: Instant, until: Instant) -> bool {
        self.from <= until && self.until.is_none_or(|end| end >= from)
    }
}

/// One endpoint's slot: its receiver path, owner, temper, and what the
/// campaign did to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub owner: usize,
    pub temper: Temper,
    /// Its `endpoint_id`, once created.
    pub id: Option<String>,
    /// When its creation was answered.
    pub created: Option<Instant>,
    /// When its DELETE was sent.
    pub deleted: Option<Instant>,
    /// From a disabling PUT being sent to the enabling PUT being answered.
    pub disabled: Vec<Span>,
    /// When each PUT moving it to the next URL version was answered
    /// (`moves[i]` moved it from version `i` to `i + 1`).
    pub moves: Vec<Instant>,
    pub secrets: Vec<Secret>,
    /// While an unanswered call may have changed its secret to one the
    /// campaign never learned: signatures are not checked then.
    pub secret_unknown: Vec<Span>,
    /// The event ids of its test sends, and when each was answered.
    pub tests: Vec<(String, Instant)>,
}

impl Endpoint {
    pub fn new(owner: usize, temper: Temper) -> Endpoint {
        Endpoint {
            owner,
            temper,
            id: None,
            created: None,
            deleted: None,
            disabled: Vec::new(),
            moves: Vec::new(),
            secrets: Vec::new(),
            secret_unknown: Vec::new(),
            tests: Vec::new(),
        }
    }

    /// Created and not deleted.
    pub fn is_live(&self) -> bool {
        self.created.is_some() && self.deleted.is_none()
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
            .last()
            .is_some_and(|span| span.until.is_none())
    }

    /// The URL version it has now.
    pub fn version(&self) -> usize {
        self.moves.len()
    }

    /// A new secret, made by a call sent at `sent` and answered at
    /// `answered` with `grace` for the previous one.
    pub fn rotated(
        &mut self,
        secret: String,
        sent: Instant,
        answered: Instant,
        grace: std::time::Duration,
    ) {
        let count = self.secrets.len();
        if count >= 2 {
            let older = &mut self.secrets[count - 2];
            older.until = Some(older.until.map_or(answered, |until| until.min(answered)));
        }
        if let Some(previous) = self.secrets.last_mut() {
            previous.until = Some(answered + grace);
        }
        self.secrets.push(Secret {
            value: secret,
            from: sent,
            until: None,
        });
    }
}

/// Every endpoint slot of a run; slot `n` is receiver path `/e/n/…`.
#[derive(Debug, Clone)]
pub struct World(Arc<Mutex<Vec<Endpoint>>>);

impl World {
    pub fn new(endpoints: Vec<Endpoint>) -> World {
        World(Arc::new(Mutex::new(endpoints)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Vec<Endpoint>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> Vec<Endpoint> {
        self.lock().clone()
    }
}
