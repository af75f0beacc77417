//! Mailbox commands: LIST (special use, children, wildcards, delimiter), LSUB, CREATE (USE),
//! DELETE, RENAME (INBOX too), SUBSCRIBE/UNSUBSCRIBE, STATUS, SELECT/EXAMINE, modified UTF-7
//! names, isolation between users.

mod common;

use common::*;

#[tokio::test]
async fn list_with_special_use_and_children() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.ok("LIST \"\" \"\"").await;
    assert_eq!(r.lines, vec!["* LIST (\\Noselect) \"/\" \"\""]);
    let r = c.ok("LIST \"\" *").await;
    assert!(r.has("* LIST (\\HasNoChildren) \"/\" \"INBOX\""), "{r:#?}");
    assert!(r.has("(\\HasNoChildren \\Sent) \"/\" \"Sent\""), "{r:#?}");
    assert!(r.has("\\Trash) \"/\" \"Trash\""));
    assert!(r.has("\\Drafts"));
    assert!(r.has("\\Junk"));
    assert!(r.has("\\Archive"));
    c.ok("CREATE Projects/2026/Q1").await;
    let r = c.ok("LIST \"\" %").await;
    assert!(r.has("(\\HasChildren) \"/\" \"Projects\""), "{r:#?}");
    assert!(!r.has("Projects/2026"));
    let r = c.ok("LIST Projects/ %").await;
    assert!(r.has("(\\HasChildren) \"/\" \"Projects/2026\""), "{r:#?}");
    let r = c.ok("LIST \"\" Projects/*").await;
    assert_eq!(r.lines.len(), 2, "{r:#?}");
    let r = c.ok("LIST (SPECIAL-USE) \"\" *").await;
    assert_eq!(r.lines.len(), 5, "{r:#?}");
    let r = c.ok("LIST \"\" * RETURN (SPECIAL-USE)").await;
    assert!(r.has("\\Sent"));
    let r = c.ok("LIST \"\" inbox").await;
    assert_eq!(r.lines.len(), 1);
}

#[tokio::test]
async fn create_delete_rename_subscribe() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("CREATE Sent2 (USE (\\Sent))").await;
    let r = c.ok("LIST \"\" Sent2").await;
    assert!(r.has("\\Sent"), "{r:#?}");
    let r = c.no("CREATE Bad (USE (\\Nonsense))").await;
    assert!(r.tagged.contains("[USEATTR]"));
    let r = c.no("CREATE Sent2").await;
    assert!(r.tagged.contains("[ALREADYEXISTS]"));
    c.no("CREATE INBOX").await;
    // RENAME with inferiors.
    c.ok("CREATE a/b").await;
    c.ok("RENAME a z").await;
    let r = c.ok("LIST \"\" *").await;
    assert!(r.has("\"z/b\"") && !r.has("\"a/b\""), "{r:#?}");
    // DELETE refuses a mailbox with inferiors, then works bottom-up.
    c.no("DELETE z").await;
    c.ok("DELETE z/b").await;
    c.ok("DELETE z").await;
    let r = c.no("DELETE z").await;
    assert!(r.tagged.contains("NONEXISTENT"));
    c.no("DELETE INBOX").await;
    // RENAME INBOX moves its messages and leaves it empty.
    c.append("INBOX", "()", &message("m1", "hello")).await;
    c.ok("RENAME INBOX Old").await;
    let r = c.ok("STATUS INBOX (MESSAGES)").await;
    assert!(r.has("(MESSAGES 0)"));
    let r = c.ok("STATUS Old (MESSAGES)").await;
    assert!(r.has("(MESSAGES 1)"));
    // SUBSCRIBE / LSUB.
    c.ok("SUBSCRIBE Old").await;
    let r = c.ok("LSUB \"\" *").await;
    assert!(r.has("\"Old\""), "{r:#?}");
    c.ok("UNSUBSCRIBE Old").await;
    let r = c.ok("LSUB \"\" *").await;
    assert!(!r.has("\"Old\""));
    c.no("SUBSCRIBE Nope").await;
}

#[tokio::test]
async fn modified_utf7_and_utf8_accept() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("CREATE Entw&APw-rfe").await;
    let r = c.ok("LIST \"\" Entw*").await;
    assert!(r.has("\"Entw&APw-rfe\""), "{r:#?}");
    c.no("CREATE bad&name").await;
    let r = c.ok("ENABLE UTF8=ACCEPT").await;
    assert!(r.has("* ENABLED UTF8=ACCEPT"));
    let r = c.ok("LIST \"\" Entw*").await;
    assert!(r.has("\"Entwürfe\""), "{r:#?}");
    c.ok("SELECT \"Entwürfe\"").await;
    // RFC 6855 §4: APPEND with the UTF8 data item.
    let msg = "Subject: Grüße\r\n\r\nhallo\r\n";
    let r = c
        .ok(&format!("APPEND \"Entwürfe\" UTF8 (~{{{}+}}\r\n{msg})", msg.len()))
        .await;
    assert!(r.tagged.contains("[APPENDUID"), "{r:?}");
    let r = c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])").await;
    assert!(r.find("Subject").contains("Grüße"), "{r:#?}");
}

#[tokio::test]
async fn select_examine_status() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.append("INBOX", "(\\Seen)", &message("one", "1")).await;
    c.append("INBOX", "($Label1)", &message("two", "2")).await;
    let r = c.ok("SELECT INBOX").await;
    assert!(r.has("* 2 EXISTS"));
    // RFC 3501 §2.3.2: the first SELECT claims both as \Recent.
    assert!(r.has("* 2 RECENT"), "{r:#?}");
    assert!(r.has("* OK [UNSEEN 2]"));
    assert!(r.has("[UIDVALIDITY "));
    assert!(r.has("* OK [UIDNEXT 3]"));
    assert!(r.find("* FLAGS").contains("$Label1"));
    assert!(r.find("PERMANENTFLAGS").contains("\\*"));
    assert!(r.tagged.contains("[READ-WRITE]"));
    let r = c.ok("EXAMINE INBOX").await;
    assert!(r.tagged.contains("[READ-ONLY]"));
    assert!(r.has("* 0 RECENT"), "{r:#?}");
    c.no("STORE 1 +FLAGS (\\Deleted)").await;
    c.no("EXPUNGE").await;
    let r = c.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)").await;
    let line = r.find("* STATUS");
    assert!(
        line.contains("MESSAGES 2")
            && line.contains("RECENT 0")
            && line.contains("UNSEEN 1")
            && line.contains("UIDNEXT 3"),
        "{line}"
    );
    let r = c.no("SELECT Nope").await;
    assert!(r.tagged.contains("[NONEXISTENT]"));
    // A failed SELECT leaves the selected state.
    c.bad("FETCH 1 FLAGS").await;
    c.ok("SELECT INBOX").await;
    c.ok("UNSELECT").await;
    c.bad("FETCH 1 FLAGS").await;
}

#[tokio::test]
async fn users_are_isolated() {
    let server = Server::start().await;
    server.env.add_user("mallory@example.test", "mallory pw", None).await;
    let mut alice = server.login().await;
    alice.ok("CREATE Secret").await;
    alice.append("Secret", "()", &message("private", "x")).await;
    let mut m = server.connect().await;
    m.ok("LOGIN mallory@example.test \"mallory pw\"").await;
    let r = m.ok("LIST \"\" *").await;
    assert!(!r.has("Secret"));
    m.no("SELECT Secret").await;
    m.no("STATUS Secret (MESSAGES)").await;
    m.no("DELETE Secret").await;
    m.no("RENAME Secret Mine").await;
    m.append("INBOX", "()", &message("m", "x")).await;
    m.ok("SELECT INBOX").await;
    let r = m.no("COPY 1 Secret").await;
    assert!(r.tagged.contains("[TRYCREATE]"));
    let r = alice.ok("STATUS Secret (MESSAGES)").await;
    assert!(r.has("MESSAGES 1"));
}
