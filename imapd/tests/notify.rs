//! NOTIFY (RFC 5465) over real sockets: two sessions of one user, one watching while the
//! other (or a delivery through the shared store) changes things; notifications must arrive
//! without the watcher sending a command (between commands and in IDLE), carry what §5 says,
//! never tell one user of another's mailboxes, and stop after NOTIFY NONE or an overflow.

mod common;

use std::time::Duration;

use common::*;

async fn login_as(server: &Server, user: &str, pass: &str) -> Client {
    let mut c = server.connect().await;
    c.ok(&format!("LOGIN {user} \"{pass}\"")).await;
    c
}

#[tokio::test]
async fn capability_and_bad_events() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let r = a.ok("CAPABILITY").await;
    assert!(r.find("* CAPABILITY").contains(" NOTIFY"), "{r:#?}");
    // §3.1: an unsupported event is NO [BADEVENT (every supported event)], not BAD.
    for event in ["AnnotationChange MessageNew MessageExpunge", "NoSuchEvent"] {
        let r = a.no(&format!("NOTIFY SET (personal ({event}))")).await;
        // §5.6, §5.7: with METADATA advertised, both metadata events are supported.
        assert!(
            r.tagged.contains(
                "[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange \
                 MailboxMetadataChange ServerMetadataChange)]"
            ),
            "{r:#?}"
        );
    }
    assert!(r.find("* CAPABILITY").contains(" METADATA"), "{r:#?}");
    a.ok("NOTIFY SET (personal (MailboxMetadataChange ServerMetadataChange))")
        .await;
    // §5: MessageNew without MessageExpunge, FlagChange alone, and mailbox events for SELECTED
    // are BAD; fetch-atts only for SELECTED (§8).
    a.bad("NOTIFY SET (selected (MessageNew))").await;
    a.bad("NOTIFY SET (personal (FlagChange))").await;
    a.bad("NOTIFY SET (selected (MailboxName))").await;
    a.bad("NOTIFY SET (personal (MessageNew (UID) MessageExpunge))").await;
    a.bad("NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))")
        .await;
    // Not before login.
    let mut c = server.connect().await;
    c.bad("NOTIFY NONE").await;
    a.ok("NOTIFY NONE").await;
}

#[tokio::test]
async fn new_message_elsewhere_is_a_status_between_commands_and_in_idle() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    a.ok("CREATE Lists").await;
    a.ok("CREATE Lists/Lemonade").await;
    a.ok("CREATE misc").await;
    b.append("Lists/Lemonade", "()", &message("old", "x")).await;
    // §3.1: with STATUS, a STATUS for each watched mailbox before the OK.
    let r = a
        .ok("NOTIFY SET STATUS (selected (MessageNew (UID) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))")
        .await;
    let lemonade = r.find("* STATUS \"Lists/Lemonade\"");
    for item in ["MESSAGES 1", "UIDNEXT 2", "UIDVALIDITY ", "UNSEEN 1"] {
        assert!(lemonade.contains(item), "{r:#?}");
    }
    assert!(r.has("* STATUS \"Lists\" ("), "{r:#?}");
    assert!(!r.has("misc") && !r.has("INBOX"), "{r:#?}");
    // Another session appends: A hears it with no command of its own (§3.1).
    b.append("Lists/Lemonade", "()", &message("new", "x")).await;
    let (line, _) = a.wait_for("* STATUS").await;
    assert_eq!(line, "* STATUS \"Lists/Lemonade\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)");
    // A mailbox outside the watched ones: nothing.
    b.append("misc", "()", &message("elsewhere", "x")).await;
    assert!(a.unasked(700).await.is_empty());
    // In IDLE the same (§4), and an expunge elsewhere is a STATUS too (§5.3).
    a.write(b"i1 IDLE\r\n").await;
    a.wait_for("+ ").await;
    b.ok("SELECT Lists/Lemonade").await;
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let (line, _) = a.wait_for("* STATUS").await;
    assert_eq!(line, "* STATUS \"Lists/Lemonade\" (MESSAGES 1 UIDNEXT 3 UNSEEN 1)");
    a.write(b"DONE\r\n").await;
    a.until("i1").await;
}

#[tokio::test]
async fn new_message_in_the_selected_mailbox_brings_exists_and_the_fetch_atts() {
    let server = Server::start().await;
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    a.ok("NOTIFY SET (selected (MessageNew (UID BODY[HEADER.FIELDS (SUBJECT)] FLAGS) MessageExpunge))")
        .await;
    server.deliver(&message("good morning", "x")).await;
    let (exists, _) = a.wait_for("EXISTS").await;
    assert_eq!(exists, "* 1 EXISTS");
    let (fetch, _) = a.wait_for("FETCH").await;
    assert!(
        fetch.starts_with("* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {"),
        "{fetch}"
    );
    assert!(fetch.contains("Subject: good morning"), "{fetch}");
    // §5.2: a notification never sets \Seen, even for BODY[...] without PEEK.
    assert!(!fetch.contains("\\Seen"), "{fetch}");
    let r = a.ok("FETCH 1 (FLAGS)").await;
    assert!(!r.has("\\Seen"), "{r:#?}");
    // §5.2: no FETCH for the session's own APPEND; EXISTS still.
    let r = a.append("INBOX", "()", &message("mine", "x")).await;
    assert!(r.tagged.contains("OK"), "{r:#?}");
    assert!(r.has("* 2 EXISTS") && !r.has("FETCH"), "{r:#?}");
    assert!(a.unasked(500).await.is_empty());
    // A delivery while A runs a command (its own APPEND, held at the literal): told at the
    // command's end, with the FETCH for the delivered message only.
    a.write(b"x1 APPEND INBOX {5}\r\n").await;
    a.wait_for("+ ").await;
    server.deliver(&message("during", "x")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.write(b"hello\r\n").await;
    let r = a.until("x1").await;
    let all = r.all();
    assert!(r.tagged.starts_with("x1 OK"), "{r:#?}");
    assert!(all.contains("* 4 EXISTS"), "{r:#?}");
    assert!(all.contains("* 3 FETCH (UID 3 BODY[HEADER.FIELDS (SUBJECT)]"), "{r:#?}");
    assert!(!all.contains("* 4 FETCH"), "{r:#?}");
}

#[tokio::test]
async fn flag_changes_here_and_elsewhere() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    a.ok("CREATE Other").await;
    a.ok("CREATE Quiet").await;
    b.append("INBOX", "()", &message("one", "x")).await;
    b.append("Other", "()", &message("two", "x")).await;
    b.append("Quiet", "()", &message("three", "x")).await;
    a.ok("ENABLE CONDSTORE").await;
    a.ok("SELECT INBOX").await;
    a.ok("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) (mailboxes Other (MessageNew MessageExpunge FlagChange)) (mailboxes Quiet (MessageNew MessageExpunge))")
        .await;
    // In the selected mailbox: an unsolicited FETCH with UID and FLAGS (§5.1).
    b.ok("SELECT INBOX").await;
    b.ok("STORE 1 +FLAGS.SILENT (\\Flagged)").await;
    let (line, _) = a.wait_for("FETCH").await;
    assert!(line.starts_with("* 1 FETCH (UID 1 FLAGS (\\Flagged"), "{line}");
    assert!(line.contains("MODSEQ ("), "{line}");
    // Elsewhere, with CONDSTORE: STATUS with UIDVALIDITY and HIGHESTMODSEQ (and UNSEEN).
    b.ok("SELECT Other").await;
    b.ok("STORE 1 +FLAGS.SILENT (\\Seen)").await;
    let (line, _) = a.wait_for("* STATUS").await;
    assert!(line.starts_with("* STATUS \"Other\" (UIDVALIDITY "), "{line}");
    assert!(line.contains("UNSEEN 0") && line.contains("HIGHESTMODSEQ "), "{line}");
    // Quiet asked for new and expunged messages only: a flag change there is not told.
    b.ok("SELECT Quiet").await;
    b.ok("STORE 1 +FLAGS.SILENT (\\Seen)").await;
    assert!(a.unasked(700).await.is_empty());
}

#[tokio::test]
async fn expunge_in_the_selected_mailbox_at_once_or_delayed() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    for i in 0..3 {
        b.append("INBOX", "()", &message(&format!("m{i}"), "x")).await;
    }
    a.ok("SELECT INBOX").await;
    b.ok("SELECT INBOX").await;
    // SELECTED: the EXPUNGE comes between commands (§5.3).
    a.ok("NOTIFY SET (selected (MessageNew MessageExpunge))").await;
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let (line, before) = a.wait_for("EXPUNGE").await;
    assert_eq!(line, "* 1 EXPUNGE");
    // FlagChange was not asked for: the \Deleted flag was not told.
    assert!(before.is_empty(), "{before:#?}");
    // SELECTED-DELAYED: not until a command that may carry EXPUNGE (§6.1.2).
    a.ok("NOTIFY SET (selected-delayed (MessageNew MessageExpunge))").await;
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    assert!(a.unasked(700).await.is_empty());
    let r = a.ok("FETCH 1:2 (UID)").await;
    assert!(!r.has("EXPUNGE"), "{r:#?}");
    let r = a.ok("NOOP").await;
    assert!(r.has("* 1 EXPUNGE"), "{r:#?}");
}

#[tokio::test]
async fn mailbox_names_and_subscriptions_are_list_responses() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    a.ok("NOTIFY SET (personal (MailboxName SubscriptionChange))").await;
    // §5.4: created (with the superior the store made), renamed with OLDNAME, deleted.
    b.ok("CREATE x/y").await;
    let (line, _) = a.wait_for("\"x/y\"").await;
    assert_eq!(line, "* LIST (\\HasNoChildren) \"/\" \"x/y\"");
    b.ok("RENAME x/y x/z").await;
    let (line, _) = a.wait_for("OLDNAME").await;
    assert_eq!(line, "* LIST (\\HasNoChildren) \"/\" \"x/z\" (\"OLDNAME\" (\"x/y\"))");
    b.ok("DELETE x/z").await;
    let (line, _) = a.wait_for("\"x/z\"").await;
    assert_eq!(line, "* LIST (\\NonExistent \\HasNoChildren) \"/\" \"x/z\"");
    // The parent is affected too (§5.4): it has no children now.
    let (line, _) = a.wait_for("\"x\"").await;
    assert_eq!(line, "* LIST (\\HasNoChildren) \"/\" \"x\"");
    // §5.5: \Subscribed if and only if subscribed after the event.
    b.ok("SUBSCRIBE x").await;
    let (line, _) = a.wait_for("\"x\"").await;
    assert_eq!(line, "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"x\"");
    b.ok("UNSUBSCRIBE x").await;
    let (line, _) = a.wait_for("\"x\"").await;
    assert_eq!(line, "* LIST (\\HasNoChildren) \"/\" \"x\"");
    // §5: the session's own change is not told back to it.
    let r = a.ok("CREATE mine").await;
    assert!(!r.has("LIST"), "{r:#?}");
    a.ok("SUBSCRIBE mine").await;
    assert!(a.unasked(700).await.is_empty());
    // And the next change by another session still is.
    b.ok("CREATE theirs").await;
    let (line, before) = a.wait_for("\"theirs\"").await;
    assert_eq!(line, "* LIST (\\HasNoChildren) \"/\" \"theirs\"");
    assert!(before.is_empty(), "{before:#?}");
}

#[tokio::test]
async fn another_users_changes_are_never_told() {
    let server = Server::start().await;
    server.env.add_user("bob@example.test", "bob password", None).await;
    let mut a = server.login().await;
    let mut alice2 = server.login().await;
    let mut bob = login_as(&server, "bob@example.test", "bob password").await;
    a.ok("NOTIFY SET (personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))")
        .await;
    // Bob's mailboxes have the same names as Alice's: only the user tells them apart.
    bob.ok("CREATE Shared").await;
    bob.ok("SUBSCRIBE Shared").await;
    bob.append("INBOX", "()", &message("bob's", "x")).await;
    bob.ok("RENAME Shared Shared2").await;
    bob.ok("DELETE Shared2").await;
    assert!(a.unasked(1000).await.is_empty());
    // Alice's own change right after is the first thing A hears.
    alice2.ok("CREATE marker").await;
    let (line, before) = a.wait_for("LIST").await;
    assert_eq!(line, "* LIST (\\HasNoChildren) \"/\" \"marker\"");
    assert!(before.is_empty(), "{before:#?}");
}

#[tokio::test]
async fn notify_none_stops_the_events() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    a.ok("NOTIFY SET (personal (MailboxName MessageNew MessageExpunge))")
        .await;
    b.ok("CREATE one").await;
    a.wait_for("\"one\"").await;
    a.ok("NOTIFY NONE").await;
    b.ok("CREATE two").await;
    b.append("one", "()", &message("m", "x")).await;
    assert!(a.unasked(800).await.is_empty());
    let r = a.ok("NOOP").await;
    assert!(r.lines.is_empty(), "{r:#?}");
    // IDLE without NOTIFY: nothing about other mailboxes either.
    a.write(b"i1 IDLE\r\n").await;
    a.wait_for("+ ").await;
    b.append("one", "()", &message("m2", "x")).await;
    assert!(a.unasked(800).await.is_empty());
    a.write(b"DONE\r\n").await;
    let r = a.until("i1").await;
    assert!(r.lines.is_empty(), "{r:#?}");
}

#[tokio::test]
async fn a_session_that_falls_behind_gets_notificationoverflow() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    a.ok("NOTIFY SET (personal (MailboxName MessageNew MessageExpunge))")
        .await;
    // A is busy in a command (waiting for an APPEND literal) while more changes happen than
    // the event queue holds (shared::events: 1024).
    a.write(b"t1 APPEND INBOX {5}\r\n").await;
    a.wait_for("+ ").await;
    let payloads: Vec<String> = (0..1100)
        .map(|i| {
            shared::events::payload(&shared::events::Event::Mailbox {
                user_id: server.user_id,
                mailbox_id: 1_000_000 + i,
            })
        })
        .collect();
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(shared::events::CHANNEL)
        .bind(&payloads)
        .execute(&server.ctx.db)
        .await
        .expect("notify");
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.write(b"hello\r\n").await;
    a.until("t1").await;
    // §5.8: told once, then NOTIFY is off (as after NOTIFY NONE).
    let (line, _) = a.wait_for("NOTIFICATIONOVERFLOW").await;
    assert!(line.starts_with("* OK [NOTIFICATIONOVERFLOW]"), "{line}");
    b.ok("CREATE after").await;
    assert!(a.unasked(800).await.is_empty());
    // NOTIFY SET again resumes.
    a.ok("NOTIFY SET (personal (MailboxName))").await;
    b.ok("CREATE again").await;
    a.wait_for("\"again\"").await;
}

/// python imaplib (a real client) sets NOTIFY, is told of changes by another connection
/// without asking, and parses what it was told.
#[tokio::test]
async fn imaplib_is_told_without_asking() {
    let server = Server::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/notify_watch.py");
    let out = server.imaplib(&[script], &[], Duration::from_secs(60)).await;
    let text = printed(&out);
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
}
