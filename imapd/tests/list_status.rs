//! LIST-STATUS (RFC 5819) and the STATUS items SIZE (RFC 8438) and DELETED (RFC 9051
//! §6.3.11), from outside: each STATUS right after its LIST line, none for names that cannot
//! be selected, and python imaplib driving it.

mod common;

use common::*;

/// The value of `item` in a `* STATUS name (...)` line.
fn item(line: &str, item: &str) -> u64 {
    let inner = line
        .rsplit_once('(')
        .expect("a STATUS item list")
        .1
        .trim_end_matches(')');
    let words: Vec<&str> = inner.split(' ').collect();
    let at = words
        .iter()
        .position(|w| *w == item)
        .unwrap_or_else(|| panic!("{item} in {line}"));
    words[at + 1].parse().expect("a number")
}

#[tokio::test]
async fn advertised() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let caps = c.ok("CAPABILITY").await;
    let caps = caps.find("* CAPABILITY");
    for word in ["LIST-STATUS", "STATUS=SIZE"] {
        assert!(caps.split(' ').any(|w| w == word), "{word}: {caps}");
    }
}

/// RFC 5819 §5's example adapted: `LIST "" % RETURN (STATUS (MESSAGES UNSEEN))` gives each
/// mailbox's STATUS right after its LIST response, and none for a name that cannot be
/// selected (§2: `\NoSelect` or `\NonExistent`).
#[tokio::test]
async fn status_after_each_list_line() {
    let server = Server::start().await;
    let mut c = server.login().await;
    server.deliver(&message("one", "body")).await;
    server.deliver(&message("two", "body")).await;
    c.ok("SELECT INBOX").await;
    c.ok("STORE 1 +FLAGS (\\Seen)").await;
    c.ok("CLOSE").await;
    c.ok("CREATE Fruit/Apple").await;
    c.ok("CREATE Fruit/Peach").await;
    c.ok("SUBSCRIBE Fruit/Peach").await;
    c.ok("DELETE Fruit/Peach").await;

    let r = c.ok("LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))").await;
    let lines = &r.lines;
    let inbox = lines
        .iter()
        .position(|l| l == "* LIST (\\HasNoChildren) \"/\" \"INBOX\"")
        .expect("INBOX listed");
    assert_eq!(lines[inbox + 1], "* STATUS \"INBOX\" (MESSAGES 2 UNSEEN 1)", "{r:#?}");
    let fruit = lines
        .iter()
        .position(|l| l == "* LIST (\\HasChildren) \"/\" \"Fruit\"")
        .expect("Fruit listed");
    assert_eq!(lines[fruit + 1], "* STATUS \"Fruit\" (MESSAGES 0 UNSEEN 0)", "{r:#?}");
    // Every LIST line (all are selectable mailboxes here) is followed by its STATUS.
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("* LIST") {
            let name = l.rsplit_once(' ').unwrap().1;
            assert!(
                lines[i + 1].starts_with(&format!("* STATUS {name} (MESSAGES ")),
                "{r:#?}"
            );
        }
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("* LIST")).count(),
        lines.iter().filter(|l| l.starts_with("* STATUS")).count()
    );

    // A subscribed name whose mailbox does not exist: listed \NonExistent, no STATUS.
    let r = c
        .ok("LIST (SUBSCRIBED) \"\" \"Fruit/*\" RETURN (STATUS (MESSAGES))")
        .await;
    assert_eq!(
        r.lines,
        ["* LIST (\\Noselect \\NonExistent \\Subscribed \\HasNoChildren) \"/\" \"Fruit/Peach\""]
    );
    // A parent listed only for CHILDINFO, not subscribed: no STATUS either (RFC 5819 §2
    // gives it to the mailboxes the selection picks; Fruit is not one).
    let r = c
        .ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"Fruit\" RETURN (STATUS (MESSAGES))")
        .await;
    assert_eq!(
        r.lines,
        ["* LIST (\\HasChildren) \"/\" \"Fruit\" (\"CHILDINFO\" (\"SUBSCRIBED\"))"]
    );
}

/// STATUS SIZE (RFC 8438) is the sum of the messages' RFC822.SIZE; DELETED (RFC 9051 §6.3.11)
/// counts `\Deleted`; HIGHESTMODSEQ (RFC 7162 §3.1.9) in LIST-STATUS too; all agree between
/// STATUS and LIST-STATUS.
#[tokio::test]
async fn size_deleted_and_highestmodseq() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.ok("STATUS INBOX (SIZE DELETED MESSAGES)").await;
    assert_eq!(r.find("* STATUS"), "* STATUS \"INBOX\" (SIZE 0 DELETED 0 MESSAGES 0)");
    for (subject, body) in [("a", "short"), ("b", &"long ".repeat(500)), ("c", "x")] {
        server.deliver(&message(subject, body)).await;
    }
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1:* RFC822.SIZE").await;
    let total: u64 = r
        .lines
        .iter()
        .filter(|l| l.contains("FETCH"))
        .map(|l| item(l, "RFC822.SIZE"))
        .sum();
    assert!(total > 2500, "{r:#?}");
    c.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)").await;
    let r = c.ok("STATUS INBOX (SIZE DELETED)").await;
    assert_eq!(
        r.find("* STATUS"),
        format!("* STATUS \"INBOX\" (SIZE {total} DELETED 2)")
    );
    let r = c
        .ok("LIST \"\" INBOX RETURN (STATUS (SIZE DELETED HIGHESTMODSEQ))")
        .await;
    let status = r.find("* STATUS");
    assert_eq!(item(status, "SIZE"), total);
    assert_eq!(item(status, "DELETED"), 2);
    let highest = item(status, "HIGHESTMODSEQ");
    let r = c.ok("STATUS INBOX (HIGHESTMODSEQ)").await;
    assert_eq!(item(r.find("* STATUS"), "HIGHESTMODSEQ"), highest);
    // EXPUNGE: the size and the count go down together.
    c.ok("EXPUNGE").await;
    let r = c.ok("STATUS INBOX (SIZE DELETED MESSAGES)").await;
    let status = r.find("* STATUS");
    assert_eq!(item(status, "MESSAGES"), 1);
    assert_eq!(item(status, "DELETED"), 0);
    assert!(item(status, "SIZE") < 300, "{status}");
    c.bad("STATUS INBOX (SIZE BOGUS)").await;
}

/// python imaplib (a real client; it passes raw commands through `_simple_command`) sends
/// LIST ... RETURN (STATUS (MESSAGES UNSEEN SIZE)) and reads back the LIST and STATUS answers.
#[tokio::test]
async fn imaplib_drives_list_status() {
    let server = Server::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/list_status.py");
    let out = server.imaplib(&[script], &[], std::time::Duration::from_secs(60)).await;
    let text = printed(&out);
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
}

/// Without CONDSTORE offered, LIST-STATUS asking HIGHESTMODSEQ is refused alone, before any
/// LIST line (RFC 7162 §3.1 names STATUS HIGHESTMODSEQ a CONDSTORE enabling command).
#[tokio::test]
async fn highestmodseq_without_condstore_is_refused_whole() {
    let server = Server::start_with(|c| c.imap.condstore = false, None).await;
    let mut c = server.login().await;
    let r = c.bad("LIST \"\" * RETURN (STATUS (MESSAGES HIGHESTMODSEQ))").await;
    assert!(r.lines.is_empty(), "{r:#?}");
    let r = c.ok("LIST \"\" INBOX RETURN (STATUS (MESSAGES))").await;
    assert_eq!(r.lines.len(), 2, "{r:#?}");
}
