//! `audit_events`: the append-only, hash-chained audit log.
//!
//! Each event stores the hash of its predecessor and its own hash over its content, so editing,
//! reordering or deleting a row breaks the chain at that row. Appends are serialised by the
//! database: a transaction-scoped advisory lock on PostgreSQL (several servers), the single
//! writer on SQLite (`BEGIN IMMEDIATE`). Within a process they are group-committed
//! ([`GroupCommit`]): concurrent appends share one transaction, and an append may carry the
//! writes it records (a new certificate and its order), which then commit with it or not at all.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::certificates::{Creation, write_creation};
use super::{Db, Pool, Result, on_pool};
use crate::model::{AuditEvent, NewAuditEvent};

const AUDIT_LOCK_KEY: i64 = 0x6365_7274_6b65_6570; // "certkeep"

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    id: Uuid,
    at: OffsetDateTime,
    actor: String,
    action: String,
    subject: String,
    source: Option<String>,
    outcome: String,
    detail: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> Self {
        AuditEvent {
            seq: r.seq,
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            subject: r.subject,
            source: r.source,
            outcome: r.outcome,
            detail: r.detail,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// Filters for listing audit events.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// Sequence number at which the break was found.
    pub seq: i64,
    pub reason: String,
}

/// Hash of one event: SHA-256 over the predecessor's hash and a length-prefixed encoding of
/// every field, so no two different events share an encoding.
fn event_hash(prev: &[u8], seq: i64, id: Uuid, at: OffsetDateTime, e: &NewAuditEvent) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"certkeep-audit/v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(id.as_bytes());
    h.update((at.unix_timestamp_nanos() / 1000).to_be_bytes());
    for field in [
        e.actor.as_str(),
        e.action.as_str(),
        e.subject.as_str(),
        e.source.as_deref().unwrap_or("\u{0}none"),
        e.outcome.as_str(),
        e.detail.as_str(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_vec()
}

/// Truncates to microseconds, the precision both backends store.
pub(super) fn micros(at: OffsetDateTime) -> OffsetDateTime {
    let nanos = at.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(nanos - nanos.rem_euclid(1000)).unwrap_or(at)
}

/// Most appends one transaction carries; more wait for the next.
const MAX_GROUP: usize = 256;

/// Group commit of the chain: appends (each with the writes that go with it) queue here, and one
/// writer at a time takes every queued append into one transaction, one commit (one fsync) for
/// all of them. Each append runs in a savepoint of its own, so one failing (a taken name) fails
/// alone and leaves no trace.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    queue: std::sync::Mutex<Queue>,
}

/// The queued appends and whether a writer task is running. Both live under one lock, so an
/// append either finds the writer running (it will take the append) or starts one: never a
/// task per append (those would pile up behind the writer, one per append, while it writes).
#[derive(Debug, Default)]
struct Queue {
    pending: Vec<Pending>,
    writing: bool,
}

/// Marks the writer stopped should its task panic, so the next append starts another (a writer
/// that ends normally was marked stopped by [`GroupCommit::next_group`]).
struct WriterRunning<'a>(&'a GroupCommit);

impl Drop for WriterRunning<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.queue().writing = false;
        }
    }
}

/// One queued append and where its result goes.
#[derive(Debug)]
struct Pending {
    id: Uuid,
    at: OffsetDateTime,
    event: NewAuditEvent,
    with: Option<Creation>,
    reply: tokio::sync::oneshot::Sender<Result<AuditEvent>>,
}

impl GroupCommit {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `append`; true when no writer is running and the caller must start one.
    fn push(&self, append: Pending) -> bool {
        let mut queue = self.queue();
        queue.pending.push(append);
        !std::mem::replace(&mut queue.writing, true)
    }

    /// The next group to write: up to [`MAX_GROUP`] queued appends, oldest first; `None`, with
    /// the writer marked stopped, when the queue is empty.
    fn next_group(&self) -> Option<Vec<Pending>> {
        let mut queue = self.queue();
        if queue.pending.is_empty() {
            queue.writing = false;
            return None;
        }
        let n = queue.pending.len().min(MAX_GROUP);
        Some(queue.pending.drain(..n).collect())
    }
}

impl Db {
    /// Appends an event to the chain and returns it (group-committed with concurrent appends).
    pub async fn append_audit(
        &self,
        event: &NewAuditEvent,
        now: OffsetDateTime,
    ) -> Result<AuditEvent> {
        self.commit_audited(event.clone(), None, now).await
    }

    /// Appends `event` to the chain in one transaction with `with`'s writes, if any; returns the
    /// event once committed. The append is queued and written by a task of its own, so a caller
    /// that stops waiting (a dropped request) neither loses nor delays the others' appends.
    pub(super) async fn commit_audited(
        &self,
        event: NewAuditEvent,
        with: Option<Creation>,
        now: OffsetDateTime,
    ) -> Result<AuditEvent> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start_writer = self.audit.push(Pending {
            id: Uuid::now_v7(),
            at: micros(now),
            event,
            with,
            reply,
        });
        if start_writer {
            // The writer writes group after group until the queue is empty; an append queued
            // meanwhile is taken by it (`writing` is cleared only under the queue's lock, after
            // the queue was seen empty).
            let db = self.clone();
            tokio::spawn(async move {
                let _running = WriterRunning(&db.audit);
                while let Some(group) = db.audit.next_group() {
                    db.write_group(group).await;
                }
            });
        }
        answer
            .await
            .map_err(|_| super::Error::Sqlx(sqlx::Error::WorkerCrashed))?
    }

    /// Writes `group` in one transaction and answers each append. When the transaction itself
    /// fails (not one append in it), each append is retried alone, so each gets its own answer.
    async fn write_group(&self, group: Vec<Pending>) {
        let results = match self.write_appends(&group).await {
            Ok(results) => results,
            Err(e) if group.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, appends = group.len(), "audit group commit failed; writing its appends one by one");
                let mut results = Vec::with_capacity(group.len());
                for p in &group {
                    results.push(match self.write_appends(std::slice::from_ref(p)).await {
                        Ok(mut one) => one.pop().unwrap_or(Err(super::Error::NotFound)),
                        Err(e) => Err(e),
                    });
                }
                results
            }
        };
        for (p, result) in group.into_iter().zip(results) {
            // The caller may have stopped waiting; the append stands either way.
            let _ = p.reply.send(result);
        }
    }

    /// One transaction over `group`: the chain head is read once under the chain's lock (the
    /// PostgreSQL advisory lock; SQLite's single writer, taken at `BEGIN IMMEDIATE`), then each
    /// append (its companion writes, then its event) runs in a savepoint. An append that fails
    /// is rolled back alone and does not advance the chain.
    async fn write_appends(&self, group: &[Pending]) -> Result<Vec<Result<AuditEvent>>> {
        const LAST: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
        const INSERT: &str = "INSERT INTO audit_events (seq, id, at, actor, action, subject, source, outcome, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        Ok(on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if let Pool::Pg(_) = &self.pool {
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_LOCK_KEY).execute(&mut *tx).await?;
            }
            let last: Option<(i64, Vec<u8>)> = sqlx::query_as(LAST).fetch_optional(&mut *tx).await?;
            let (mut seq, mut prev) = last.unwrap_or((0, vec![0u8; 32]));
            let mut results = Vec::with_capacity(group.len());
            for a in group {
                let hash = event_hash(&prev, seq + 1, a.id, a.at, &a.event);
                let written = async {
                    let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                    if let Some(c) = &a.with {
                        write_creation!(sp, c);
                    }
                    sqlx::query(INSERT)
                        .bind(seq + 1)
                        .bind(a.id)
                        .bind(a.at)
                        .bind(&a.event.actor)
                        .bind(&a.event.action)
                        .bind(&a.event.subject)
                        .bind(&a.event.source)
                        .bind(&a.event.outcome)
                        .bind(&a.event.detail)
                        .bind(&prev)
                        .bind(&hash)
                        .execute(&mut *sp)
                        .await?;
                    sp.commit().await
                }
                .await;
                results.push(match written {
                    Ok(()) => {
                        seq += 1;
                        let prev_hash = std::mem::replace(&mut prev, hash.clone());
                        Ok(AuditEvent {
                            seq,
                            id: a.id,
                            at: a.at,
                            actor: a.event.actor.clone(),
                            action: a.event.action.clone(),
                            subject: a.event.subject.clone(),
                            source: a.event.source.clone(),
                            outcome: a.event.outcome.clone(),
                            detail: a.event.detail.clone(),
                            prev_hash,
                            hash,
                        })
                    }
                    Err(e) => Err(super::Error::from(e)),
                });
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(results)
        })?)
    }

    /// Lists events, oldest first, after `after_seq`, filtered.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        const Q: &str = "SELECT seq, id, at, actor, action, subject, source, outcome, detail, prev_hash, hash FROM audit_events WHERE seq > $1 AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR subject = $4) ORDER BY seq LIMIT $5";
        let rows: Vec<AuditRow> = on_pool!(self, p => sqlx::query_as(Q)
            .bind(f.after_seq.unwrap_or(0))
            .bind(&f.actor)
            .bind(&f.action)
            .bind(&f.subject)
            .bind(f.limit)
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Walks the whole chain; returns the number of events, or the first break.
    pub async fn verify_audit_chain(&self) -> Result<Result<u64, ChainBreak>> {
        const PAGE: i64 = 1000;
        let mut prev = vec![0u8; 32];
        let mut expected_seq = 1i64;
        loop {
            let page = self
                .list_audit(&AuditFilter {
                    after_seq: Some(expected_seq - 1),
                    limit: PAGE,
                    ..AuditFilter::default()
                })
                .await?;
            let n = page.len();
            for e in page {
                let broken = |reason: &str| ChainBreak {
                    seq: expected_seq,
                    reason: reason.to_owned(),
                };
                if e.seq != expected_seq {
                    return Ok(Err(broken(&format!(
                        "event {expected_seq} is missing (next present is {})",
                        e.seq
                    ))));
                }
                if e.prev_hash != prev {
                    return Ok(Err(broken(
                        "previous-hash link does not match the preceding event",
                    )));
                }
                let content = NewAuditEvent {
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    subject: e.subject.clone(),
                    source: e.source.clone(),
                    outcome: e.outcome.clone(),
                    detail: e.detail.clone(),
                };
                if event_hash(&prev, e.seq, e.id, e.at, &content) != e.hash {
                    return Ok(Err(broken("content does not match its hash (edited)")));
                }
                prev = e.hash;
                expected_seq += 1;
            }
            if n < PAGE as usize {
                return Ok(Ok((expected_seq - 1) as u64));
            }
        }
    }
}

/// Raw statements for tests that tamper with the database behind the API's back.
#[cfg(test)]
impl Db {
    pub(crate) async fn execute_raw(&self, sql: &'static str) -> Result<u64> {
        Ok(on_pool!(self, p => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDb;

    fn event(i: usize) -> NewAuditEvent {
        NewAuditEvent {
            actor: "token:admin".into(),
            action: "certificate.create".into(),
            subject: format!("certificate:{i}"),
            source: Some("127.0.0.1".into()),
            outcome: "success".into(),
            detail: String::new(),
        }
    }

    /// Audit appends read the chain head before they write; on SQLite, another connection's
    /// commit in between used to fail them with "database is locked" (no busy wait applies to a
    /// read transaction that turns into a write). Every write transaction now starts as one.
    #[tokio::test]
    async fn audit_appends_survive_concurrent_writers() {
        for t in TestDb::all().await {
            let (_, cert) = t.account_and_certificate("busy", "busy.example.com").await;
            let id = cert.id;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..16 {
                let db = t.db.clone();
                tasks.spawn(async move {
                    for j in 0..10 {
                        if i % 2 == 0 {
                            db.append_audit(&event(i * 10 + j), crate::now()).await?;
                        } else {
                            let state = if j % 2 == 0 {
                                crate::model::CertificateState::Issuing
                            } else {
                                crate::model::CertificateState::Pending
                            };
                            db.set_certificate_state(id, state, None, crate::now())
                                .await?;
                        }
                    }
                    Ok::<(), crate::db::Error>(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap()
                    .unwrap_or_else(|e| panic!("{}: a concurrent write failed: {e}", t.backend));
            }
            assert_eq!(
                t.db.verify_audit_chain().await.unwrap(),
                Ok(80),
                "{}",
                t.backend
            );
        }
    }

    #[tokio::test]
    async fn chain_detects_edit_and_delete() {
        for t in TestDb::all().await {
            let now = crate::now();
            for i in 0..5 {
                t.db.append_audit(&event(i), now).await.unwrap();
            }
            assert_eq!(
                t.db.verify_audit_chain().await.unwrap(),
                Ok(5),
                "{}",
                t.backend
            );
            on_pool!(t.db, p => sqlx::query("UPDATE audit_events SET subject = 'certificate:x' WHERE seq = 3").execute(p).await.map(|r| r.rows_affected())).unwrap();
            let err = t.db.verify_audit_chain().await.unwrap().unwrap_err();
            assert_eq!(err.seq, 3, "{}: {err:?}", t.backend);
            on_pool!(t.db, p => sqlx::query("UPDATE audit_events SET subject = 'certificate:2' WHERE seq = 3").execute(p).await.map(|r| r.rows_affected())).unwrap();
            assert_eq!(t.db.verify_audit_chain().await.unwrap(), Ok(5));
            on_pool!(t.db, p => sqlx::query("DELETE FROM audit_events WHERE seq = 2").execute(p).await.map(|r| r.rows_affected())).unwrap();
            let err = t.db.verify_audit_chain().await.unwrap().unwrap_err();
            assert_eq!(err.seq, 2, "{}: {err:?}", t.backend);
        }
    }

    #[tokio::test]
    async fn concurrent_appends_keep_one_chain() {
        for t in TestDb::all().await {
            let now = crate::now();
            let mut tasks = Vec::new();
            for i in 0..20 {
                let db = t.db.clone();
                tasks.push(tokio::spawn(async move {
                    db.append_audit(&event(i), now).await
                }));
            }
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            assert_eq!(
                t.db.verify_audit_chain().await.unwrap(),
                Ok(20),
                "{}",
                t.backend
            );
        }
    }
}
