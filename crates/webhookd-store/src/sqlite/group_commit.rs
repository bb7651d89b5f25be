//! Group commit: concurrent writers share one transaction, one fsync.
//!
//! Each HTTP ingest is one small batch and each commit an fsync
//! (`synchronous=FULL`): committed one by one, 32 producers queue behind
//! each other's fsyncs, and the attempt recorder's commits sit between
//! theirs. Instead a writer adds its work to [`Waiting`] and asks the
//! connection's thread to commit; the first such request takes *every*
//! waiting write and commits them together — what arrived during the
//! previous fsync is the next transaction, with no timer. A request whose
//! work someone else took finds nothing to do. 202 still means durable:
//! nobody is answered before the commit that holds its work.
//!
//! Each write runs in its own savepoint, so one that fails (a corrupt row)
//! fails alone and leaves nothing behind; a failed commit fails them all.

use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::schema::sqlite_error;
use crate::StoreError;

/// Writes waiting for the next commit.
#[derive(Default)]
pub(super) struct Waiting(Mutex<Vec<Box<dyn Pending>>>);

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

impl Waiting {
    /// Queues `work` for the next commit; its answer comes once that commit
    /// is done (or failed).
    pub(super) fn add<T, F>(&self, work: F) -> oneshot::Receiver<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(Write { work, answer }));
        answered
    }

    fn take(&self) -> Vec<Box<dyn Pending>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// With the connection held: applies every waiting write in one
    /// transaction and answers each. Nothing to do when an earlier request
    /// already took them.
    pub(super) fn commit(&self, connection: &mut Connection) {
        let writes = self.take();
        if writes.is_empty() {
            return;
        }
        let tx = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => {
                let error = sqlite_error(error);
                for write in writes {
                    write.fail(&error);
                }
                return;
            }
        };
        let applied: Vec<Box<dyn Applied>> =
            writes.into_iter().map(|write| write.apply(&tx)).collect();
        let failed = tx.commit().err().map(sqlite_error);
        for write in applied {
            write.answer(failed.as_ref());
        }
    }
}

/// A write not yet applied.
trait Pending: Send {
    fn apply(self: Box<Self>, tx: &Transaction<'_>) -> Box<dyn Applied>;
    /// The transaction could not even begin.
    fn fail(self: Box<Self>, error: &StoreError);
}

/// A write applied, its answer held until the commit is known.
trait Applied {
    /// `failed`: the commit's error, which undid it.
    fn answer(self: Box<Self>, failed: Option<&StoreError>);
}

struct Write<T, F> {
    work: F,
    answer: oneshot::Sender<Result<T, StoreError>>,
}

struct Done<T> {
    result: Result<T, StoreError>,
    answer: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Pending for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send,
{
    fn apply(self: Box<Self>, tx: &Transaction<'_>) -> Box<dyn Applied> {
        let Write { work, answer } = *self;
        Box::new(Done {
            result: in_savepoint(tx, work),
            answer,
        })
    }

    fn fail(self: Box<Self>, error: &StoreError) {
        let _ = self.answer.send(Err(copy_of(error)));
    }
}

impl<T: Send + 'static> Applied for Done<T> {
    fn answer(self: Box<Self>, failed: Option<&StoreError>) {
        // A caller that gave up waiting has nobody to tell: what it wrote
        // is durable, and its retry is a duplicate.
        let _ = self.answer.send(match failed {
            None => self.result,
            Some(error) => Err(copy_of(error)),
        });
    }
}

/// `work` inside its own savepoint: all of it, or none of it.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Cached: parsing these three statements anew was a tenth of the
    // connection thread's time under load.
    let run = |sql: &str| {
        tx.prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map_err(sqlite_error)
    };
    run("SAVEPOINT write")?;
    match work(tx) {
        Ok(done) => {
            run("RELEASE write")?;
            Ok(done)
        }
        Err(error) => {
            run("ROLLBACK TO write")?;
            run("RELEASE write")?;
            Err(error)
        }
    }
}

/// The same error for each writer of a failed transaction (an error cannot
/// be shared): same kind, same words.
fn copy_of(error: &StoreError) -> StoreError {
    let words = format!("group commit: {error}");
    if error.is_unavailable() {
        StoreError::Unavailable(words.into())
    } else {
        StoreError::Failed(words.into())
    }
}
