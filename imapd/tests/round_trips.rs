//! What each command of a mail client's everyday cycle (the `tinydc bench --compare` mixed
//! load: LOGIN, SELECT, APPEND, FETCH headers, STORE, EXPUNGE, LOGOUT) asks of PostgreSQL,
//! counted from sqlx's own statement log on the real server over a real database. A command
//! whose count grows (a second sync, a re-read the session could have kept) fails here.
//! The statement log is process-wide: keep this the only test of this file, so no other test's
//! statements are counted.

mod common;

use std::sync::Mutex;

use common::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The statements sqlx ran (its `sqlx::query` events), oldest first.
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Statements;

struct Summary(String);

impl Visit for Summary {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            self.0 = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for Statements
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        // The blob settler's rounds and the batched usage folds run on their own tasks after
        // the answers (shared::blobs `settle_later`, shared::quota `FoldQueue`), in whichever
        // command they happen to overlap: not a command's cost.
        let settler = ctx
            .event_scope(event)
            .is_some_and(|mut scope| scope.any(|span| matches!(span.name(), "settle_bodies" | "fold_usage")));
        if event.metadata().target() == "sqlx::query" && !settler {
            let mut summary = Summary(String::new());
            event.record(&mut summary);
            STATEMENTS.lock().unwrap().push(summary.0);
        }
    }
}

fn taken() -> Vec<String> {
    std::mem::take(&mut *STATEMENTS.lock().unwrap())
}

#[tokio::test]
async fn the_mixed_cycle_asks_postgres_little() {
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("sqlx::query", tracing::Level::DEBUG)
        .with_target("shared::blobs", tracing::Level::DEBUG);
    let subscriber = tracing_subscriber::registry().with(Statements.with_filter(filter));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");

    let server = Server::start().await;
    server.deliver(&message("first", "body")).await;
    let body = message("cycle", "hello");
    let mut report = Vec::new();
    for round in 0..3 {
        taken();
        let mut c = server.connect().await;
        let step = |name: &str, report: &mut Vec<(String, Vec<String>)>| {
            let statements = taken();
            if round == 2 {
                report.push((name.to_string(), statements));
            }
        };
        taken();
        c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
        step("LOGIN", &mut report);
        c.ok("SELECT INBOX").await;
        step("SELECT", &mut report);
        let r = c.append("INBOX", "()", &body).await;
        assert!(r.tagged.contains(" OK"), "APPEND: {r:#?}");
        step("APPEND", &mut report);
        c.ok("FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])")
            .await;
        step("FETCH", &mut report);
        c.ok("STORE * +FLAGS (\\Deleted)").await;
        step("STORE", &mut report);
        c.ok("EXPUNGE").await;
        step("EXPUNGE", &mut report);
        c.ok("LOGOUT").await;
        step("LOGOUT", &mut report);
    }
    for (name, statements) in &report {
        println!("{name}: {} statements", statements.len());
        for s in statements {
            println!("    {s}");
        }
    }
    let of = |name: &str| &report.iter().find(|(n, _)| n == name).expect("measured").1;
    // SELECT reads the mailbox, its messages and claims \Recent; the view it built is not
    // read again by a sync at its end.
    assert!(of("SELECT").len() <= 3, "SELECT: {:#?}", of("SELECT"));
    // FETCH syncs the view first (fresh flags) and reads the rows in the same statement
    // (`MailStore::changes_and_light`): no second sync at its end.
    assert!(of("FETCH").len() <= 1, "FETCH: {:#?}", of("FETCH"));
    // APPEND: no quota read at the literal for a user this process saw without a limit
    // (`quota::reserve_known`; the first round read it), then ONE statement committed on its
    // own (no BEGIN, no COMMIT: shared::mailstore `insert_unlimited`): the quota delta, the
    // mailbox found by name with its UID, MODSEQ and the \Recent claim, the rows, the event.
    // No mailbox lookup before it, no sync read or claim after it (the view advances from the
    // store's answer, `SelectedView`); no usage fold or warning read for a user without a
    // limit (folded later, shared::quota::FoldQueue), no count of the mailbox.
    assert!(of("APPEND").len() <= 1, "APPEND: {:#?}", of("APPEND"));
    // EXPUNGE: one statement (the locks, the removal, the refund, the blob references, the
    // removal record and its event, committed on its own), and no sync read after it: the
    // removal's MODSEQ follows the view's. The warning check only for a user who was warned.
    assert!(of("EXPUNGE").len() <= 1, "EXPUNGE: {:#?}", of("EXPUNGE"));
    // STORE: one statement (read, new flags and MODSEQ, update, event); its own change follows
    // the MODSEQ the view knew, so nothing is read after it.
    assert!(of("STORE").len() <= 1, "STORE: {:#?}", of("STORE"));
    assert!(of("LOGOUT").is_empty(), "LOGOUT: {:#?}", of("LOGOUT"));
}
