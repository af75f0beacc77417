//! Group commit (issue #12): one-recipient deliveries and APPENDs into the same mailbox that
//! arrive while an earlier one is committing share the next transaction, so one commit (one
//! WAL flush) acknowledges them all. Deliveries into one mailbox serialize on its row anyway
//! (UIDs, RFC 3501 §2.3.1.1), each holding it through its commit's flush; grouped, the flush
//! is paid once per group instead of once per message.
//!
//! Nothing waits to form a group: the first delivery into an idle mailbox starts at once, alone;
//! those that arrive meanwhile queue and go together next. Durability is unchanged: nobody is
//! answered before the transaction holding their message has committed (synchronously), and
//! no transaction commits before each body it references is durable: fsynced with its folder,
//! or (a small body) inserted into `blob_pending` by that same transaction.
//!
//! A small body (`blobs::PENDING_MAX`) needs no fsync before the commit: it goes into
//! `blob_pending` in the same transaction, so the commit's WAL flush is the only one a delivery
//! waits for (`blobs.rs` module docs). Its file is written (unsynced) while the statements run
//! and waited for after the commit, before the answer; it is fsynced later, in batches.
//!
//! A delivery of a larger body that finds its mailbox idle does not wait for its body first: its
//! transaction's statements (quota, UID, rows) run while the body is written and fsynced
//! (`MailStore::prepare_overlapped`), and the commit waits for the body (issue #12: one APPEND
//! or one SMTP message then costs the longer of the two, not their sum). A delivery that finds
//! the mailbox busy waits for its own body before it queues, so a group never waits on a
//! body's fsync while the mailbox row is locked.
//!
//! The queue is per (user, mailbox) and per process. A group runs in a task of its own, so a
//! caller that goes away (a dropped connection) never leaves others waiting. When a group's
//! transaction fails before its commit (one message over quota, a mailbox deleted meanwhile, a
//! deadlock), it is rolled back and each of its deliveries is run again alone, so one bad
//! delivery fails only itself.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{
    Appended, DeliveryTarget, Destination, MailStore, Row, SelectedView, StoreError, charge_delivery,
    fits_one_statement, insert_message, insert_unlimited,
};
use crate::blobs::PendingPut;
use crate::quota::Reservation;

/// At most this many deliveries share one transaction (bounds its locks' duration).
const MAX_GROUP: usize = 32;

/// (user, mailbox by id or by name): the same mailbox named both ways queues twice, which only
/// costs it the sharing (its row lock orders the two).
type Key = (i64, Destination);

struct Job {
    target: DeliveryTarget,
    destination: Destination,
    /// The appending session's view of the mailbox (`SelectedView`).
    view: Option<SelectedView>,
    row: Row,
    /// The body's write, when it may still be in progress (only a mailbox's first job).
    body: Option<PendingPut>,
    answer: oneshot::Sender<Result<Appended, StoreError>>,
}

/// The deliveries waiting per mailbox. A key is present while a task runs its groups.
#[derive(Default)]
pub(super) struct Groups {
    waiting: Mutex<HashMap<Key, Vec<Job>>>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Job>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes its key if the task running a mailbox's groups panics, so later deliveries start a
/// new one (the jobs still queued are dropped: their callers get an error, not a hang).
struct RunnerGuard {
    groups: Arc<Groups>,
    key: Key,
}

impl Drop for RunnerGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.groups.lock().remove(&self.key);
        }
    }
}

impl MailStore {
    /// Deliver one message into one mailbox in the next group commit of that mailbox. `body`:
    /// the body's write when it may still be in progress (`None`: durable already).
    pub(super) async fn deliver_grouped(
        &self,
        target: DeliveryTarget,
        destination: Destination,
        view: Option<SelectedView>,
        row: Row,
        body: Option<PendingPut>,
    ) -> Result<Appended, StoreError> {
        let key = (target.user_id, destination.clone());
        let (answer, answered) = oneshot::channel();
        let mut job = Job {
            target,
            destination,
            view,
            row,
            body,
            answer,
        };
        loop {
            let busy_with_pending_body = {
                let mut waiting = self.groups.lock();
                match waiting.entry(key.clone()) {
                    Entry::Occupied(_) if job.body.is_some() => true,
                    Entry::Occupied(mut queued) => {
                        queued.get_mut().push(job);
                        break;
                    }
                    Entry::Vacant(idle) => {
                        idle.insert(vec![job]);
                        let store = self.clone();
                        let key = key.clone();
                        tokio::spawn(async move { store.run_groups(key).await });
                        break;
                    }
                }
            };
            if busy_with_pending_body {
                // Others are committing: queue only once this body is durable (module docs).
                // The mailbox may be idle again by then, so the entry is looked at anew.
                if let Some(body) = job.body.take() {
                    body.wait().await?;
                }
            }
        }
        answered.await.map_err(|_| {
            StoreError::Io(std::io::Error::other(
                "the delivery's group commit ended without an answer",
            ))
        })?
    }

    /// Commit the mailbox's waiting deliveries, group after group, until none is left.
    async fn run_groups(&self, key: Key) {
        let _guard = RunnerGuard {
            groups: self.groups.clone(),
            key: key.clone(),
        };
        loop {
            let jobs: Vec<Job> = {
                let mut waiting = self.groups.lock();
                let Some(queue) = waiting.get_mut(&key) else { return };
                if queue.is_empty() {
                    // Under the lock: the next delivery finds no key and starts a new task.
                    waiting.remove(&key);
                    return;
                }
                let n = queue.len().min(MAX_GROUP);
                queue.drain(..n).collect()
            };
            self.commit_group(jobs).await;
        }
    }

    async fn commit_group(&self, mut jobs: Vec<Job>) {
        if jobs.len() == 1 {
            let mut job = jobs.pop().expect("one job");
            let body = job.body.take();
            let result = self
                .deliver_alone(job.target, &job.destination, job.view, &job.row, body)
                .await;
            let _ = job.answer.send(result);
            return;
        }
        // Only a mailbox's first job can carry a body still being written, and it goes alone;
        // should one be here all the same, its body is waited for before anything is locked.
        let mut ready = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            match job.body.take() {
                Some(body) => match body.wait().await {
                    Ok(()) => ready.push(job),
                    Err(e) => {
                        let _ = job.answer.send(Err(e.into()));
                    }
                },
                None => ready.push(job),
            }
        }
        let mut jobs = ready;
        if jobs.is_empty() {
            return;
        }
        // Writes without a reservation lock the user's row: before any reservation row.
        jobs.sort_by_key(|j| j.target.reservation.is_some());
        // What a retry needs: a rolled-back transaction leaves the reservation rows in place.
        let held: Vec<Option<(i64, i64, u64)>> = jobs
            .iter()
            .map(|j| j.target.reservation.as_ref().map(|r| (r.id, r.user_id, r.bytes)))
            .collect();
        match self.try_group(&mut jobs).await {
            Ok(appended) => {
                for (job, appended) in jobs.into_iter().zip(appended) {
                    let _ = job.answer.send(Ok(appended));
                }
            }
            Err(GroupFailed::BeforeCommit(e)) => {
                tracing::info!(
                    deliveries = jobs.len(),
                    "a group commit failed before committing ({e}); each delivery is retried alone"
                );
                for (mut job, held) in jobs.into_iter().zip(held) {
                    job.target.reservation = held.map(|(id, user_id, bytes)| Reservation { id, user_id, bytes });
                    let result = self
                        .deliver_alone(job.target, &job.destination, job.view, &job.row, None)
                        .await;
                    let _ = job.answer.send(result);
                }
            }
            Err(GroupFailed::AtCommit(e)) => {
                // The commit's outcome is unknown (the connection broke): retrying could store
                // every message twice, so each delivery fails as a single one would.
                tracing::warn!(deliveries = jobs.len(), "a group commit failed: {e}");
                let reason = e.to_string();
                for job in jobs {
                    let _ = job
                        .answer
                        .send(Err(StoreError::Io(std::io::Error::other(reason.clone()))));
                }
            }
        }
    }

    /// Every delivery of the group in one transaction, in the order of `jobs`: the quota steps
    /// first (lock order, module docs: users and reservations before mailboxes), then the
    /// messages.
    async fn try_group(&self, jobs: &mut [Job]) -> Result<Vec<Appended>, GroupFailed> {
        let before = GroupFailed::BeforeCommit;
        if jobs
            .iter()
            .all(|j| fits_one_statement(j.target.reservation.as_ref(), &j.row))
        {
            // The whole group in one statement committed on its own: one round trip
            // (`insert_unlimited`). Only the first job's view can claim \Recent (its docs).
            let (user_id, destination) = (jobs[0].target.user_id, jobs[0].destination.clone());
            let rows: Vec<&Row> = jobs.iter().map(|j| &j.row).collect();
            let appended = match insert_unlimited(self.db(), user_id, &destination, jobs[0].view, &rows).await {
                Ok(Some(appended)) => appended,
                Ok(None) => return Err(before(limit_set())),
                // A statement PostgreSQL refused was rolled back: nothing was committed.
                Err(e) if outcome_known(&e) => return Err(before(e)),
                // The connection failed while the statement ran: its commit's outcome is unknown.
                Err(e) => return Err(GroupFailed::AtCommit(e)),
            };
            for job in jobs.iter() {
                self.restore_if_swept(&job.row).await;
                self.settle_later(&job.row).await;
            }
            return Ok(appended);
        }
        let mut tx = self.db.begin().await.map_err(|e| before(e.into()))?;
        for job in jobs.iter_mut() {
            charge_delivery(&mut tx, job.target.user_id, job.target.reservation.take(), job.row.size)
                .await
                .map_err(before)?;
        }
        let mut appended = Vec::with_capacity(jobs.len());
        for job in jobs.iter() {
            appended.push(
                insert_message(&mut tx, job.target.user_id, &job.destination, job.view, &job.row)
                    .await
                    .map_err(before)?,
            );
            // The blob row is locked by the statement that added the reference.
            job.row.wait_written().await.map_err(|e| before(e.into()))?;
            self.blobs.ensure_present(&job.row.blob).map_err(|e| before(e.into()))?;
        }
        tx.commit().await.map_err(|e| GroupFailed::AtCommit(e.into()))?;
        for job in jobs.iter() {
            self.settle_later(&job.row).await;
        }
        Ok(appended)
    }

    /// One delivery in its own transaction. With `body` still being written, the statements
    /// run meanwhile and the commit waits for it (module docs).
    async fn deliver_alone(
        &self,
        target: DeliveryTarget,
        destination: &Destination,
        view: Option<SelectedView>,
        row: &Row,
        body: Option<PendingPut>,
    ) -> Result<Appended, StoreError> {
        if body.is_none() && fits_one_statement(target.reservation.as_ref(), row) {
            // One statement, committed on its own: one round trip (`insert_unlimited`).
            let mut conn = self.kept.take().await?;
            let inserted = insert_unlimited(&mut *conn, target.user_id, destination, view, &[row]).await?;
            conn.done();
            if let Some(mut appended) = inserted {
                self.restore_if_swept(row).await;
                self.settle_later(row).await;
                return Ok(appended.remove(0));
            }
            // The user has a limit now: the two-step path checks the write against it.
        }
        let mut tx = self.db.begin().await?;
        charge_delivery(&mut tx, target.user_id, target.reservation, row.size).await?;
        let appended = insert_message(&mut tx, target.user_id, destination, view, row).await?;
        if let Some(body) = body {
            // Durable (fsynced, renamed, folder fsynced) before the commit can reference it.
            body.wait().await?;
        }
        // The blob row is locked by the statement that added the reference.
        row.wait_written().await?;
        self.blobs.ensure_present(&row.blob)?;
        tx.commit().await?;
        self.settle_later(row).await;
        Ok(appended)
    }

    /// After a one-statement commit of `row` ([`insert_unlimited`]): its body's file, written
    /// while the statement ran (`BodyWrite::AfterCommit`), is waited for, and one that is not
    /// there (its write failed, or a sweep removed a file the statement could not check,
    /// `BlobStore::ensure_present`) is written again from the body, which the commit holds in
    /// `blob_pending`, before the delivery is acknowledged. Should that fail, the delivery stays
    /// committed and durable (its body in `blob_pending`, written back by `blobs::settle_all`
    /// at the next start): it is logged, not failed, since a failure would make the client
    /// store it twice.
    async fn restore_if_swept(&self, row: &Row) {
        let written = row.wait_written().await;
        if written.is_ok() && self.blobs.ensure_present(&row.blob).is_ok() {
            return;
        }
        let Some(body) = row.pending.clone() else { return };
        match written {
            Err(e) => {
                tracing::warn!(blob = %row.blob.0, "writing a message body's file failed ({e}): writing it again")
            }
            Ok(()) => {
                tracing::warn!(blob = %row.blob.0, "a sweep removed a message body's file while it was stored: writing it again")
            }
        }
        let blobs = self.blobs.clone();
        let id = row.blob.clone();
        match tokio::task::spawn_blocking(move || blobs.write_unsynced_blocking(&id, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(blob = %row.blob.0, "writing a message body's file again (left for the next start): {e}")
            }
            Err(e) => {
                tracing::error!(blob = %row.blob.0, "writing a message body's file again (left for the next start): {e}")
            }
        }
    }

    /// After the commit of `row`: a body the commit made durable through `blob_pending` has its
    /// file fsynced later (`BlobStore::settle_later`).
    async fn settle_later(&self, row: &Row) {
        if row.pending.is_some() {
            self.blobs.settle_later(&self.db, row.blob.clone()).await;
        }
    }
}

/// Why a group of deliveries reserved without a limit is retried one by one: the user has one
/// now (each retry checks its write against it).
fn limit_set() -> StoreError {
    StoreError::Invalid("a quota limit was set during the delivery".into())
}

/// Whether a failed statement committed nothing for sure: PostgreSQL refused it (its implicit
/// transaction rolled back), or it never reached the server. A broken connection leaves the
/// outcome unknown.
fn outcome_known(e: &StoreError) -> bool {
    match e {
        StoreError::Db(e) => matches!(
            e,
            sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        ),
        _ => true,
    }
}

enum GroupFailed {
    /// Nothing was committed: each delivery may be tried again.
    BeforeCommit(StoreError),
    /// The commit itself failed: its outcome is unknown.
    AtCommit(StoreError),
}
