//! NOTIFY with METADATA (RFC 5465 §5.6 MailboxMetadataChange, §5.7 ServerMetadataChange) over
//! real sockets: two sessions of one user, SETMETADATA in one; the other, watching, is told
//! `* METADATA mailbox entry...` (RFC 5464 §4.4.2: the changed entries' names, no values)
//! without sending a command, between commands and in IDLE; the session that made the change
//! is not told (§5), nor is another user.

mod common;

use common::*;

#[tokio::test]
async fn setmetadata_in_one_session_is_told_to_the_other_between_commands_and_in_idle() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    b.ok("CREATE misc").await;
    a.ok("NOTIFY SET (personal (MailboxMetadataChange ServerMetadataChange))")
        .await;
    // §5.6: a mailbox entry set in another session, told with no command of A's.
    b.ok("SETMETADATA INBOX (/private/comment \"hello\")").await;
    let (line, before) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"INBOX\" /private/comment");
    assert!(before.is_empty(), "{before:#?}");
    // §5.7: the server's entries, mailbox "", every changed name on one line.
    b.ok("SETMETADATA \"\" (/private/vendor/x \"1\" /private/vendor/y \"2\")")
        .await;
    let (line, _) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"\" /private/vendor/x /private/vendor/y");
    // Only what changed: the same value again and the removal of an entry that is not there
    // change nothing; of a command changing one of two entries, that one is named.
    b.ok("SETMETADATA \"\" (/private/vendor/x \"1\" /private/vendor/none NIL)")
        .await;
    b.ok("SETMETADATA misc (/private/a \"1\" /private/b \"2\")").await;
    let (line, before) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"misc\" /private/a /private/b");
    assert!(before.is_empty(), "{before:#?}");
    b.ok("SETMETADATA misc (/private/a \"1\" /private/b \"3\")").await;
    let (line, _) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"misc\" /private/b");
    // §5.6: a removed entry (set to NIL) is always named.
    a.write(b"i1 IDLE\r\n").await;
    a.wait_for("+ ").await;
    b.ok("SETMETADATA INBOX (/private/comment NIL)").await;
    let (line, _) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"INBOX\" /private/comment");
    // In IDLE a server entry too (RFC 5465 §4: IDLE sends what NOTIFY asked for).
    b.ok("SETMETADATA \"\" (/private/vendor/x NIL)").await;
    let (line, _) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"\" /private/vendor/x");
    a.write(b"DONE\r\n").await;
    a.until("i1").await;
    // A name that is not an atom is a quoted string (RFC 5464 §5 `entry` is an astring).
    b.ok("SETMETADATA misc (\"/private/two words\" \"x\")").await;
    let (line, _) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"misc\" \"/private/two words\"");
}

#[tokio::test]
async fn the_session_that_changed_an_entry_is_not_told() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    a.ok("NOTIFY SET (personal (MailboxMetadataChange ServerMetadataChange))")
        .await;
    // RFC 5465 §5: "SHOULD omit notifying the client if the event is caused by this client".
    let r = a.ok("SETMETADATA INBOX (/private/comment \"mine\")").await;
    assert!(!r.has("* METADATA"), "{r:#?}");
    let r = a.ok("SETMETADATA \"\" (/private/comment \"mine\")").await;
    assert!(!r.has("* METADATA"), "{r:#?}");
    assert!(a.unasked(700).await.is_empty());
    let r = a.ok("NOOP").await;
    assert!(!r.has("* METADATA"), "{r:#?}");
    // The same change by another session afterwards is told.
    b.ok("SETMETADATA INBOX (/private/comment \"theirs\")").await;
    let (line, before) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"INBOX\" /private/comment");
    assert!(before.is_empty(), "{before:#?}");
}

#[tokio::test]
async fn only_the_asked_events_and_mailboxes_are_told() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    b.ok("CREATE misc").await;
    b.ok("CREATE other").await;
    // MailboxMetadataChange for misc only, no ServerMetadataChange.
    a.ok("NOTIFY SET (mailboxes misc (MailboxMetadataChange))").await;
    b.ok("SETMETADATA other (/private/comment \"x\")").await;
    b.ok("SETMETADATA \"\" (/private/comment \"x\")").await;
    b.ok("SETMETADATA misc (/private/comment \"x\")").await;
    let (line, before) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"misc\" /private/comment");
    assert!(before.is_empty(), "{before:#?}");
    // ServerMetadataChange only: mailbox entries are not told.
    a.ok("NOTIFY SET (personal (ServerMetadataChange))").await;
    b.ok("SETMETADATA misc (/private/comment \"y\")").await;
    b.ok("SETMETADATA \"\" (/private/comment \"y\")").await;
    let (line, before) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"\" /private/comment");
    assert!(before.is_empty(), "{before:#?}");
    // §6.1: not message events, so BAD with SELECTED.
    a.bad("NOTIFY SET (selected (MailboxMetadataChange))").await;
    // Without NOTIFY nothing unasked (RFC 5464 §4.4.2 responses come only from NOTIFY here).
    a.ok("NOTIFY NONE").await;
    b.ok("SETMETADATA \"\" (/private/comment \"z\")").await;
    b.ok("SETMETADATA misc (/private/comment \"z\")").await;
    assert!(a.unasked(700).await.is_empty());
    let r = a.ok("NOOP").await;
    assert!(!r.has("* METADATA"), "{r:#?}");
}

#[tokio::test]
async fn another_users_entries_are_never_told() {
    let server = Server::start().await;
    server.env.add_user("bob@example.test", "bob password", None).await;
    let mut a = server.login().await;
    let mut alice2 = server.login().await;
    let mut bob = server.connect().await;
    bob.ok("LOGIN bob@example.test \"bob password\"").await;
    a.ok("NOTIFY SET (personal (MailboxMetadataChange ServerMetadataChange))")
        .await;
    // Bob's INBOX has the same name as Alice's: only the user tells them apart.
    bob.ok("SETMETADATA INBOX (/private/comment \"bob's\")").await;
    bob.ok("SETMETADATA \"\" (/private/comment \"bob's\")").await;
    assert!(a.unasked(1000).await.is_empty());
    // Alice's own change right after is the first thing A hears.
    alice2.ok("SETMETADATA INBOX (/private/marker \"1\")").await;
    let (line, before) = a.wait_for("* METADATA").await;
    assert_eq!(line, "* METADATA \"INBOX\" /private/marker");
    assert!(before.is_empty(), "{before:#?}");
}
