//! SEARCH extensions from outside, over a real socket: WITHIN (RFC 5032).

mod common;

use common::*;

/// A logged-in session with INBOX selected holding: 1 appended with an internal date in 2020,
/// then 2 and 3 delivered now.
async fn mailbox_old_and_new(server: &Server) -> Client {
    let mut c = server.login().await;
    let r = c
        .append("INBOX", "() \"01-Jan-2020 00:00:00 +0000\"", &message("old", "body"))
        .await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    server.deliver(&message("new1", "body")).await;
    server.deliver(&message("new2", "body")).await;
    c.ok("SELECT INBOX").await;
    c
}

#[tokio::test]
async fn within_older_and_younger() {
    let server = Server::start().await;
    let mut c = mailbox_old_and_new(&server).await;
    let caps = c.ok("CAPABILITY").await;
    assert!(caps.find("* CAPABILITY").split(' ').any(|w| w == "WITHIN"), "{caps:#?}");
    // RFC 5032 §3: intervals in seconds against the internal date.
    let r = c.ok("SEARCH OLDER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1");
    let r = c.ok("SEARCH YOUNGER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 2 3");
    let r = c.ok("UID SEARCH NOT YOUNGER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1");
    // OLDER and YOUNGER together: "within the last n but more than m seconds ago".
    let r = c.ok("SEARCH OLDER 60 YOUNGER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH");
    let r = c.ok("SEARCH OR OLDER 86400 SUBJECT new2").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1 3");
    // interval = nz-number: zero, a missing or a non-number interval is a syntax error.
    c.bad("SEARCH OLDER 0").await;
    c.bad("SEARCH YOUNGER").await;
    c.bad("SEARCH YOUNGER -5").await;
    // A huge interval is accepted and simply matches nothing older / everything younger.
    let r = c.ok("SEARCH OLDER 9999999999999999999").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH");
    let r = c.ok("SEARCH YOUNGER 9999999999999999999").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1 2 3");
}
