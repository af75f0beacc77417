//! What each command of a mail client's everyday cycle (the `tinydc bench --compare` mixed
//! load: LOGIN, SELECT, APPEND, FETCH headers, STORE, EXPUNGE, LOGOUT) asks of PostgreSQL,
//! counted from sqlx's own statement log on the real server over a real database. A command
//! whose count grows (a second sync, a re-read the session could have kept) fails here.
//! The statement log is process-wide: keep this the only test of this file, so no other test's
//! statements are counted.

mod common;

use common::*;
use shared::testing::statements::{self, taken};

#[tokio::test]
async fn the_mixed_cycle_asks_postgres_little() {
    statements::capture();

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
    // FETCH right after the session's own APPEND: the change clock vouches for the view (the
    // APPEND's was the only tick since the view was last read) and the header rows are kept
    // (the delivery and the APPENDs of this process stored them), so it asks nothing.
    assert!(of("FETCH").is_empty(), "FETCH: {:#?}", of("FETCH"));
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
