//! IMAP conformance details written from the RFC text (issue #13, "Fix" items 2, 3, 4, 5, 7, 8),
//! each over a real socket against the real imapd code.

mod common;

use common::*;

/// RFC 3501 §6.3.2: EXAMINE answers like SELECT (including `* n RECENT`), but read-only: it
/// claims no message as \Recent, so a SELECT right after still gets them.
#[tokio::test]
async fn examine_reports_recent_without_claiming() {
    let server = Server::start().await;
    server.deliver(&message("one", "1")).await;
    server.deliver(&message("two", "2")).await;
    let mut c = server.login().await;
    let r = c.ok("EXAMINE INBOX").await;
    assert!(r.has("* 2 EXISTS") && r.has("* 2 RECENT"), "{r:#?}");
    assert!(r.tagged.contains("[READ-ONLY]"), "{r:#?}");
    let r = c.ok("SELECT INBOX").await;
    assert!(r.has("* 2 RECENT"), "{r:#?}");
    // Now claimed by that SELECT: an EXAMINE elsewhere counts none.
    let mut other = server.login().await;
    let r = other.ok("EXAMINE INBOX").await;
    assert!(r.has("* 2 EXISTS") && r.has("* 0 RECENT"), "{r:#?}");
}

/// An invalid mailbox name is refused with NO, as Dovecot answers (RFC 3501 §6.3.3 "NO - create
/// failure: can't create mailbox with that name"), not BAD (which is for command syntax); a LIST
/// pattern no name can match answers OK with nothing listed (RFC 3501 §6.3.8).
#[tokio::test]
async fn invalid_mailbox_name_is_no_and_list_is_empty() {
    let server = Server::start().await;
    let mut c = server.login().await;
    // "&" must start a modified UTF-7 run ending in "-" (RFC 3501 §5.1.3).
    for cmd in [
        "CREATE bad&name",
        "CREATE \"a&Jjo\"",
        "SELECT bad&name",
        "EXAMINE bad&name",
        "STATUS bad&name (MESSAGES)",
        "DELETE bad&name",
        "RENAME INBOX bad&name",
        "SUBSCRIBE bad&name",
        "CREATE a//b",
    ] {
        let r = c.cmd(cmd).await;
        assert!(r.tagged.contains(" NO "), "{cmd} -> {r:#?}");
    }
    for cmd in ["LIST \"\" bad&name*", "LIST bad& *", "LSUB \"\" bad&*"] {
        let r = c.ok(cmd).await;
        assert!(r.lines.is_empty(), "{cmd} -> {r:#?}");
    }
    // The session goes on normally.
    c.ok("CREATE good").await;
}

/// RFC 3501 §5.1.3: without UTF8=ACCEPT mailbox names are 7-bit (international characters in
/// modified UTF-7); RFC 6855 §3 allows raw UTF-8 only once the client enabled UTF8=ACCEPT. A raw
/// 8-bit name (as mbsync 1.4 sends) is refused with NO and a text saying why, and nothing is
/// created; after ENABLE UTF8=ACCEPT the same name is accepted and listed back as sent.
#[tokio::test]
async fn raw_8bit_name_needs_utf8_accept() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.no("CREATE \"Entwürfe\"").await;
    assert!(r.tagged.contains("UTF-7") && r.tagged.contains("UTF8=ACCEPT"), "{r:#?}");
    let r = c.no("SELECT \"Entwürfe\"").await;
    assert!(r.tagged.contains("8-bit"), "{r:#?}");
    let r = c.ok("LIST \"\" *").await;
    assert!(!r.has("Entw"), "{r:#?}");
    let r = c.ok("LIST \"\" \"Entwü*\"").await;
    assert!(r.lines.is_empty(), "{r:#?}");
    // Also through a literal.
    let name = "Ordner-ä";
    let r = c.cmd(&format!("CREATE {{{}+}}\r\n{name}", name.len())).await;
    assert!(r.tagged.contains(" NO "), "{r:#?}");
    // Modified UTF-7 works, and so does UTF-8 after ENABLE.
    c.ok("CREATE Entw&APw-rfe").await;
    c.ok("ENABLE UTF8=ACCEPT").await;
    c.ok("CREATE \"Ordner-ä\"").await;
    let r = c.ok("LIST \"\" *").await;
    assert!(r.has("\"Entwürfe\"") && r.has("\"Ordner-ä\""), "{r:#?}");
}

/// Subscriptions are names (RFC 3501 §6.3.6, §6.3.7, §6.3.9): CREATE does not subscribe; LSUB
/// with `%` shows a subscribed child's unsubscribed parent with `\Noselect`; UNSUBSCRIBE takes
/// effect, also for a name whose mailbox was deleted (RFC 9051 §6.3.7: the server must not
/// remove it from the list by itself).
#[tokio::test]
async fn subscriptions_are_names() {
    let server = Server::start().await;
    let mut c = server.login().await;
    // A new account's default mailboxes start subscribed.
    let r = c.ok("LSUB \"\" *").await;
    assert!(r.has("* LSUB () \"/\" \"INBOX\"") && r.has("\"Sent\""), "{r:#?}");
    c.ok("CREATE foo/bar").await;
    let r = c.ok("LSUB \"\" *").await;
    assert!(!r.has("foo"), "CREATE must not subscribe: {r:#?}");
    c.ok("SUBSCRIBE foo/bar").await;
    let r = c.ok("LSUB \"\" %").await;
    assert!(r.has("* LSUB (\\Noselect) \"/\" \"foo\""), "{r:#?}");
    assert!(!r.has("foo/bar"), "{r:#?}");
    let r = c.ok("LSUB \"\" *").await;
    assert!(r.has("* LSUB () \"/\" \"foo/bar\""), "{r:#?}");
    assert!(!r.has("\"foo\""), "{r:#?}");
    let r = c.ok("LSUB foo/ %").await;
    assert_eq!(r.lines, vec!["* LSUB () \"/\" \"foo/bar\""], "{r:#?}");
    // Subscribing the parent too: listed as itself, without \Noselect.
    c.ok("SUBSCRIBE foo").await;
    let r = c.ok("LSUB \"\" %").await;
    assert!(r.has("* LSUB () \"/\" \"foo\""), "{r:#?}");
    // UNSUBSCRIBE takes effect.
    c.ok("UNSUBSCRIBE foo").await;
    c.ok("UNSUBSCRIBE INBOX").await;
    let r = c.ok("LSUB \"\" %").await;
    assert!(r.has("(\\Noselect) \"/\" \"foo\"") && !r.has("INBOX"), "{r:#?}");
    // Deleting the mailbox leaves the subscription; UNSUBSCRIBE of the bare name removes it.
    c.ok("DELETE foo/bar").await;
    let r = c.ok("LSUB \"\" *").await;
    assert!(r.has("\"foo/bar\""), "{r:#?}");
    c.ok("UNSUBSCRIBE foo/bar").await;
    let r = c.ok("LSUB \"\" *").await;
    assert!(!r.has("foo"), "{r:#?}");
    // SUBSCRIBE still checks that the mailbox exists.
    let r = c.no("SUBSCRIBE foo/bar").await;
    assert!(r.tagged.contains("[NONEXISTENT]"), "{r:#?}");
    // RENAME takes the subscriptions of the mailbox and its inferiors along, and only those.
    c.ok("CREATE old/kid").await;
    c.ok("CREATE older").await;
    c.ok("SUBSCRIBE old").await;
    c.ok("SUBSCRIBE old/kid").await;
    c.ok("SUBSCRIBE older").await;
    c.ok("RENAME old new").await;
    let r = c.ok("LSUB \"\" *").await;
    assert!(r.has("\"new\"") && r.has("\"new/kid\"") && r.has("\"older\""), "{r:#?}");
    assert!(!r.has("\"old\"") && !r.has("\"old/kid\""), "{r:#?}");
    // Another user's subscriptions are not seen.
    server.env.add_user("mallory@example.test", "mallory pw", None).await;
    let mut m = server.connect().await;
    m.ok("LOGIN mallory@example.test \"mallory pw\"").await;
    let r = m.ok("LSUB \"\" *").await;
    assert!(!r.has("foo"), "{r:#?}");
}

/// RFC 3501 §2.3.1.1: a mailbox deleted and created again under the same name must get a new,
/// greater UIDVALIDITY, even when both happen within the same second.
#[tokio::test]
async fn uidvalidity_of_a_recreated_mailbox_grows() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let uidvalidity = |r: &Response| -> u64 {
        let line = r.find("UIDVALIDITY");
        let at = line.find("UIDVALIDITY ").expect("UIDVALIDITY") + "UIDVALIDITY ".len();
        line[at..]
            .split(|ch: char| !ch.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut last = 0;
    for _ in 0..5 {
        c.ok("CREATE again").await;
        let r = c.ok("STATUS again (UIDVALIDITY)").await;
        let v = uidvalidity(&r);
        assert!(v > last, "UIDVALIDITY {v} after {last}: {r:#?}");
        last = v;
        c.ok("DELETE again").await;
    }
    // Also for superiors created on the way, and through RENAME of INBOX.
    c.ok("CREATE again/child").await;
    let r = c.ok("STATUS again (UIDVALIDITY)").await;
    assert!(uidvalidity(&r) > last, "{r:#?}");
}

/// The index of the first line of `r` starting with `prefix`.
fn pos(r: &Response, prefix: &str) -> Option<usize> {
    r.lines.iter().position(|l| l.starts_with(prefix))
}

/// RFC 3501 §7.2.6: the `* FLAGS` list names the flags in use in the mailbox; a keyword that
/// first appears while the mailbox is selected (this session's STORE or APPEND, or another
/// session) is announced with `* FLAGS` and `* OK [PERMANENTFLAGS …]` before a FETCH shows it,
/// and only once.
#[tokio::test]
async fn new_keywords_are_announced_before_fetch() {
    let server = Server::start().await;
    server.deliver(&message("one", "1")).await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    a.ok("SELECT INBOX").await;
    b.ok("SELECT INBOX").await;

    let r = a.ok("STORE 1 +FLAGS ($Hot)").await;
    let flags = pos(&r, "* FLAGS").expect("* FLAGS announced");
    assert!(r.lines[flags].contains("$Hot"), "{r:#?}");
    let permanent = pos(&r, "* OK [PERMANENTFLAGS").expect("PERMANENTFLAGS announced");
    assert!(
        r.lines[permanent].contains("$Hot") && r.lines[permanent].contains("\\*"),
        "{r:#?}"
    );
    let fetch = pos(&r, "* 1 FETCH").expect("FETCH");
    assert!(flags < fetch && permanent < fetch, "{r:#?}");
    // Known now: not announced again.
    let r = a.ok("STORE 1 -FLAGS ($Hot)").await;
    assert!(pos(&r, "* FLAGS").is_none(), "{r:#?}");
    a.ok("STORE 1 +FLAGS ($Hot)").await;

    // The other session learns of it on its next command, before the FETCH.
    let r = b.ok("NOOP").await;
    let flags = pos(&r, "* FLAGS").expect("* FLAGS announced to the other session");
    assert!(r.lines[flags].contains("$Hot"), "{r:#?}");
    let fetch = pos(&r, "* 1 FETCH").expect("FETCH");
    assert!(flags < fetch, "{r:#?}");

    // APPEND into the selected mailbox with a new keyword.
    let r = a.append("INBOX", "($Fresh)", &message("two", "2")).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    let flags = pos(&r, "* FLAGS").expect("* FLAGS announced after APPEND");
    assert!(r.lines[flags].contains("$Fresh"), "{r:#?}");
    let r = a.ok("FETCH 2 FLAGS").await;
    assert!(r.has("$Fresh") && pos(&r, "* FLAGS").is_none(), "{r:#?}");

    // A read-only view gets PERMANENTFLAGS () with the new list.
    let mut e = server.login().await;
    e.ok("EXAMINE INBOX").await;
    b.ok("STORE 1 +FLAGS ($Later)").await;
    let r = e.ok("NOOP").await;
    assert!(
        pos(&r, "* FLAGS").is_some_and(|i| r.lines[i].contains("$Later")),
        "{r:#?}"
    );
    assert!(r.has("* OK [PERMANENTFLAGS ()]"), "{r:#?}");
}

/// Subscriptions outlive their mailboxes, so the list is bounded: SUBSCRIBE / DELETE / CREATE
/// cycles end in NO [LIMIT] (RFC 5530) at the mailbox limit instead of growing without end.
#[tokio::test]
async fn subscriptions_are_bounded() {
    let server = Server::start_with(|config| config.imap.max_mailboxes = 10, None).await;
    let mut c = server.login().await;
    // The six default mailboxes are subscribed already.
    for i in 0..4 {
        c.ok(&format!("CREATE cycle{i}")).await;
        c.ok(&format!("SUBSCRIBE cycle{i}")).await;
        c.ok(&format!("DELETE cycle{i}")).await;
    }
    c.ok("CREATE cycle9").await;
    let r = c.no("SUBSCRIBE cycle9").await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    // Removing a name makes room again.
    c.ok("UNSUBSCRIBE cycle0").await;
    c.ok("SUBSCRIBE cycle9").await;
}

/// RFC 3501 §7.4.2: an address structure is (name adl mailbox host), adl being the source route
/// (RFC 5322 §4.4 obs-route). `<@route:user@domain>` is `(NIL "@route" "user" "domain")`, not
/// `(NIL NIL "@route:user" "domain")`.
#[tokio::test]
async fn envelope_puts_a_source_route_in_the_adl_field() {
    let server = Server::start().await;
    server
        .deliver(
            b"From: <@route:user@domain>\r\nTo: Bob <@a.test,@b.test:bob@c.test>\r\nCc: carol@d.test\r\n\
Subject: route\r\n\r\nbody\r\n",
        )
        .await;
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1 ENVELOPE").await;
    let line = r.find("ENVELOPE");
    // From, Sender and Reply-To (the latter two default to From).
    assert_eq!(
        line.matches("((NIL \"@route\" \"user\" \"domain\"))").count(),
        3,
        "{line}"
    );
    assert!(
        line.contains("((\"Bob\" \"@a.test,@b.test\" \"bob\" \"c.test\"))"),
        "{line}"
    );
    assert!(line.contains("((NIL NIL \"carol\" \"d.test\"))"), "{line}");
}

/// RFC 3501 §6.4.4: FROM/TO/CC/BCC match a substring of "the envelope structure's" field. As
/// Dovecot does, the addresses are matched as read (comments left out), so `<user-from (comment)@
/// (comment) domain.org>` is found by `user-from@domain.org` (the imaptest search-addresses case),
/// and a source route, a display name and an RFC 2047 encoded name are found too.
#[tokio::test]
async fn search_address_matches_with_comments_removed() {
    let server = Server::start().await;
    server
        .deliver(
            b"From: <user-from (comment)@ (comment) domain.org>\r\n\
To: \"Real To\" <user-to@domain.org> (a comment)\r\n\
Cc: user-cc (c) @ (d) domain.org, other@x.test\r\n\
Bcc: user-bcc@domain.org\r\nSubject: one\r\n\r\nbody\r\n",
        )
        .await;
    server.deliver(&message("two", "2")).await;
    server
        .deliver(b"From: <@route:user@domain>\r\nTo: Bob <bob@x.test>\r\nSubject: three\r\n\r\nb\r\n")
        .await;
    server
        .deliver(
            b"From: =?utf-8?q?caf=C3=A9?= <cafe@x.test>\r\nTo: John Q. Public <jqp@x.test>, undisclosed-recipients\r\n\
Subject: four\r\n\r\nb\r\n",
        )
        .await;
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    for (cmd, want) in [
        ("SEARCH FROM user-from@domain.org", "* SEARCH 1"),
        // Not in the envelope, and Dovecot does not find it either.
        ("SEARCH FROM \"(comment)\"", "* SEARCH"),
        ("SEARCH FROM comment", "* SEARCH"),
        ("SEARCH TO user-to@domain.org", "* SEARCH 1"),
        ("SEARCH TO \"real to\"", "* SEARCH 1"),
        ("SEARCH CC user-cc@domain.org", "* SEARCH 1"),
        ("SEARCH CC other@x.test", "* SEARCH 1"),
        ("SEARCH BCC user-bcc@domain.org", "* SEARCH 1"),
        ("SEARCH FROM bob@example.test", "* SEARCH 2"),
        ("SEARCH FROM bob", "* SEARCH 2"),
        ("SEARCH TO bob", "* SEARCH 3"),
        ("SEARCH FROM \"@route\"", "* SEARCH 3"),
        ("SEARCH FROM user@domain", "* SEARCH 3"),
        ("SEARCH CHARSET UTF-8 FROM caf\u{e9}", "* SEARCH 4"),
        ("SEARCH TO \"John Q. Public\"", "* SEARCH 4"),
        ("SEARCH TO undisclosed", "* SEARCH 4"),
        ("SEARCH TO user-from@domain.org", "* SEARCH"),
    ] {
        let r = c.ok(cmd).await;
        let got = r.find("* SEARCH");
        assert_eq!(got.trim_end(), want, "{cmd} -> {r:#?}");
    }
}

/// RFC 3501 §7.4.2 with RFC 5322 §3.2.2: comments inside an address are not its display name
/// nor part of its local part or domain; Dovecot answers `(NIL NIL "user-from" "domain.org")`
/// for `<user-from (comment)@ (comment) domain.org>`. A comment after a bare address stays the
/// display name, as mail readers show it.
#[tokio::test]
async fn envelope_leaves_out_comments_inside_an_address() {
    let server = Server::start().await;
    server
        .deliver(
            b"From: <user-from (comment)@ (comment) domain.org>\r\n\
To: \"Real To\" <user-to@domain.org> (a comment)\r\n\
Cc: user-cc (c) @ (d) domain.org, jdoe@x.test (John Doe)\r\nSubject: c\r\n\r\nbody\r\n",
        )
        .await;
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1 ENVELOPE").await;
    let line = r.find("ENVELOPE");
    assert_eq!(
        line.matches("((NIL NIL \"user-from\" \"domain.org\"))").count(),
        3,
        "{line}"
    );
    assert!(
        line.contains("((\"Real To\" NIL \"user-to\" \"domain.org\"))"),
        "{line}"
    );
    assert!(
        line.contains("((NIL NIL \"user-cc\" \"domain.org\")(\"John Doe\" NIL \"jdoe\" \"x.test\"))"),
        "{line}"
    );
}
