//! A header download asked again (Thunderbird's other connections, a phone's next sync) is
//! answered from imapd's header-row cache (`shared/src/mailstore/light_cache.rs`), every batch
//! of it, without a statement; and it answers the same bytes.
//! The statement log is process-wide: keep this the only test of this file.

mod common;

use common::*;
use shared::testing::statements::{self, taken};

/// The first batch, then more than the two full batches `cmd/fetch.rs` reads ahead of it.
const MESSAGES: usize = 700;

#[tokio::test]
async fn a_header_download_asked_again_reads_no_message_row() {
    statements::capture();
    let server = Server::start().await;
    for n in 0..MESSAGES {
        server.deliver(&message(&format!("message {n}"), "body")).await;
    }
    // Without FLAGS: the first session claims \Recent, which the others then do not see.
    let download = "UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject Date)])";

    let mut first = server.login().await;
    first.ok("SELECT INBOX").await;
    taken();
    let read = first.ok(download).await;
    assert!(
        !taken().is_empty(),
        "smtpd-style deliveries are not kept: the first download reads the rows"
    );

    // Another connection (Thunderbird keeps several): once its view is synced (NOOP), the
    // download asks nothing.
    let mut second = server.login().await;
    second.ok("SELECT INBOX").await;
    second.ok("NOOP").await;
    taken();
    let again = second.ok(download).await;
    assert_eq!(taken(), Vec::<String>::new(), "the second download asked PostgreSQL");
    let fetches = |r: &Response| r.lines.iter().filter(|l| l.contains(" FETCH (")).count();
    assert_eq!(fetches(&again), MESSAGES);
    assert!(
        read.lines == again.lines,
        "the kept rows answer other than the database did"
    );
    assert!(again.find("message 699").contains("Subject: message 699"));

    // Right after SELECT the view has no sync yet: the download's one statement is that sync.
    let mut third = server.login().await;
    third.ok("SELECT INBOX").await;
    taken();
    let after_select = third.ok(download).await;
    let asked = taken();
    assert!(asked.len() <= 1, "only the sync: {asked:#?}");
    assert!(read.lines == after_select.lines, "after SELECT the answer differs");
}
