//! Quota warnings caused over IMAP (shared::quota::warn): COPY and APPEND on the real imapd
//! push the account past 80% and 95%; the warnings arrive in INBOX, seen by a session that
//! has it selected.

mod common;

use common::Server;

fn filler(subject: &str, size: usize) -> Vec<u8> {
    let mut raw = common::message(subject, "");
    raw.resize(size, b'q');
    raw
}

/// The subjects in INBOX, in UID order.
async fn inbox_subjects(c: &mut common::Client) -> String {
    let r = c.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
    r.all()
}

#[tokio::test]
async fn copy_and_append_crossing_80_and_95_percent_warn_in_inbox() {
    let server = Server::start_with(|_| {}, Some(100_000)).await;
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;

    // 45%: nothing.
    c.append("Archive", "()", &filler("photos", 45_000)).await;
    let status = c.ok("STATUS INBOX (MESSAGES)").await;
    assert!(status.has("(MESSAGES 0)"), "{status:?}");

    // COPY to Sent: 90%, the 80% warning arrives in INBOX (EXISTS for the selected session).
    let mut other = server.login().await;
    other.ok("SELECT Archive").await;
    other.ok("COPY 1 Sent").await;
    let noop = c.ok("NOOP").await;
    assert!(noop.has("* 1 EXISTS"), "{noop:?}");
    let subjects = inbox_subjects(&mut c).await;
    assert!(subjects.contains("Subject: Your storage is 80% full"), "{subjects}");

    // APPEND to 96%: the 95% warning, and only it.
    let appended = c.append("Archive", "()", &filler("more", 5_000)).await;
    assert!(appended.tagged.contains("OK"), "{appended:?}");
    let subjects = inbox_subjects(&mut c).await;
    assert_eq!(
        subjects.matches("Subject: Your storage is 80% full").count(),
        1,
        "{subjects}"
    );
    assert_eq!(
        subjects.matches("Subject: Your storage is 95% full").count(),
        1,
        "{subjects}"
    );
    let status = c.ok("STATUS Archive (MESSAGES)").await;
    assert!(status.has("(MESSAGES 2)"), "{status:?}");
}
