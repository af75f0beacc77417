//! What each command of a mail client's everyday cycle (the `tinydc bench --compare` mixed
//! load: LOGIN, SELECT, APPEND, FETCH headers, STORE, EXPUNGE, LOGOUT) asks of PostgreSQL,
//! counted from sqlx's own statement log on the real server over a real database. A command
//! whose count grows (a second sync, a re-read the session could have kept) fails here.

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

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
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
    let filter = tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::DEBUG);
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
    // FETCH syncs the view first (fresh flags) and reads the rows: no second sync at its end.
    assert!(of("FETCH").len() <= 2, "FETCH: {:#?}", of("FETCH"));
    // STORE's own change follows the MODSEQ the view knew: nothing is read after its commit.
    let store = of("STORE");
    let after_commit = store.iter().rev().take_while(|s| !s.starts_with("COMMIT")).count();
    assert_eq!(after_commit, 0, "STORE: {store:#?}");
    assert!(of("LOGOUT").is_empty(), "LOGOUT: {:#?}", of("LOGOUT"));
}

/// Skipping the sync at the end of SELECT, FETCH and STORE loses nothing another session did
/// before the command: FETCH reports it (its sync comes first), STORE reads it back because
/// its own MODSEQ does not follow the view's, and a change made just after either is reported
/// by the next command.
#[tokio::test]
async fn others_changes_still_arrive_around_skipped_syncs() {
    let server = Server::start().await;
    server.deliver(&message("one", "body")).await;
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;

    // Before FETCH: a new message and a flag change.
    b.append("INBOX", "()", &message("two", "body")).await;
    b.ok("STORE 1 +FLAGS (\\Flagged)").await;
    let r = a.ok("FETCH 1:* (UID FLAGS)").await;
    assert!(r.has("* 2 EXISTS"), "{r:#?}");
    assert!(r.find("* 1 FETCH").contains("\\Flagged"), "{r:#?}");

    // Before STORE: another session's change is read back and reported.
    b.ok("STORE 2 +FLAGS (\\Answered)").await;
    let r = a.ok("STORE 1 +FLAGS (\\Seen)").await;
    assert!(
        r.lines
            .iter()
            .any(|l| l.starts_with("* 2 FETCH") && l.contains("\\Answered")),
        "{r:#?}"
    );

    // After STORE (own MODSEQ followed on, sync skipped): the next command reports it.
    let r = a.ok("STORE 1 -FLAGS (\\Seen)").await;
    assert!(!r.has("* 2 FETCH"), "{r:#?}");
    b.ok("STORE 2 +FLAGS (\\Draft)").await;
    b.append("INBOX", "()", &message("three", "body")).await;
    let r = a.ok("NOOP").await;
    assert!(r.has("* 3 EXISTS"), "{r:#?}");
    assert!(
        r.lines
            .iter()
            .any(|l| l.starts_with("* 2 FETCH") && l.contains("\\Draft")),
        "{r:#?}"
    );

    // After SELECT: a message expunged elsewhere right after is announced by the next command.
    a.ok("SELECT INBOX").await;
    b.ok("STORE 3 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let r = a.ok("NOOP").await;
    assert!(r.has("* 3 EXPUNGE"), "{r:#?}");
}
