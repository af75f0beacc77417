//! METADATA (RFC 5464) over real sockets against a real PostgreSQL: the RFC's examples
//! (§4.2.1-2, §4.3), entry name syntax (§3.2), the limits and their response codes, the bytes
//! charged to the quota and refunded, two users kept apart, RENAME and DELETE of a mailbox,
//! and python's imaplib sending the commands raw.

mod common;

use std::time::Duration;

use common::{Client, PASS, Server, USER, printed};
use shared::quota;

/// Mail usage as the quota sees it (messages plus metadata entries).
async fn mail_usage(server: &Server) -> u64 {
    quota::info(&server.ctx.db, server.user_id).await.unwrap().mail_bytes
}

/// Send `head`, a synchronizing literal of `value`, then `tail`, and read the tagged answer.
async fn with_literal(c: &mut Client, head: &str, value: &[u8], tail: &str) -> common::Response {
    let tag = c.next_tag();
    c.write(format!("{tag} {head} {{{}}}\r\n", value.len()).as_bytes())
        .await;
    let go = c.line().await;
    assert!(go.starts_with('+'), "continuation expected, got {go}");
    let mut rest = value.to_vec();
    rest.extend_from_slice(tail.as_bytes());
    rest.extend_from_slice(b"\r\n");
    c.write(&rest).await;
    c.until(&tag).await
}

#[tokio::test]
async fn rfc_5464_examples() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let caps = c.ok("CAPABILITY").await;
    assert!(
        caps.find("* CAPABILITY").split(' ').any(|w| w == "METADATA"),
        "{caps:?}"
    );

    // §4.2: server entries. /shared/admin names the postmaster; /shared/comment is unset.
    let r = c.ok("GETMETADATA \"\" (/shared/comment /shared/admin)").await;
    assert_eq!(
        r.find("* METADATA"),
        "* METADATA \"\" (/shared/comment NIL /shared/admin \"mailto:postmaster@example.test\")"
    );

    // §4.3: a value sent as a synchronizing literal, with a line break inside.
    let r = with_literal(
        &mut c,
        "SETMETADATA INBOX (/private/comment",
        b"My new comment across\r\ntwo lines.",
        ")",
    )
    .await;
    assert!(r.tagged.contains("OK"), "{r:?}");
    c.ok("SETMETADATA INBOX (/shared/comment \"Shared comment\")").await;
    let r = c.ok("GETMETADATA INBOX (/shared/comment /private/comment)").await;
    assert_eq!(
        r.all(),
        "* METADATA \"INBOX\" (/shared/comment \"Shared comment\" /private/comment {33}\r\nMy new comment across\r\ntwo lines.)"
    );

    // §4.2.1 MAXSIZE: a 2199-byte value is left out and reported with LONGENTRIES.
    let long = "x".repeat(2199);
    c.ok(&format!("SETMETADATA INBOX (/private/comment \"{long}\")")).await;
    let r = c
        .ok("GETMETADATA INBOX (MAXSIZE 1024) (/shared/comment /private/comment)")
        .await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/shared/comment \"Shared comment\")");
    assert!(r.tagged.contains("OK [METADATA LONGENTRIES 2199]"), "{}", r.tagged);
    // The grammar's place for the options (§5) works the same.
    let r = c
        .ok("GETMETADATA (MAXSIZE 1024) INBOX (/shared/comment /private/comment)")
        .await;
    assert!(r.tagged.contains("[METADATA LONGENTRIES 2199]"), "{}", r.tagged);
    let r = c.ok("GETMETADATA (MAXSIZE 5000) INBOX /private/comment").await;
    assert!(!r.tagged.contains("LONGENTRIES") && r.has(&long), "{r:?}");

    // §4.2.2 DEPTH.
    c.ok("SETMETADATA INBOX (/private/filters/values/small \"SMALLER than 10K\" /private/filters/values/boring \"IMAP\" /private/filters/values/boring/deep \"3\")")
        .await;
    let r = c.ok("GETMETADATA INBOX (DEPTH 1) (/private/filters/values)").await;
    assert_eq!(
        r.all(),
        "* METADATA \"INBOX\" (/private/filters/values NIL /private/filters/values/boring \"IMAP\" /private/filters/values/small \"SMALLER than 10K\")"
    );
    let r = c.ok("GETMETADATA INBOX (DEPTH infinity) /private/filters").await;
    for entry in ["/private/filters/values/small", "/private/filters/values/boring/deep"] {
        assert!(r.all().contains(entry), "{entry}: {r:?}");
    }
    let r = c.ok("GETMETADATA INBOX (DEPTH 0) /private/filters/values").await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/private/filters/values NIL)");
    // A root holds no value: with no depth, nothing at all is answered.
    let r = c.ok("GETMETADATA INBOX /private").await;
    assert!(r.lines.is_empty(), "{r:?}");

    // §3.2: names are case-insensitive (kept lower-case); NIL removes an entry.
    c.ok("SETMETADATA INBOX (/Private/Vendor/Tinydc/Color \"red\")").await;
    let r = c.ok("GETMETADATA INBOX /PRIVATE/vendor/tinydc/COLOR").await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/private/vendor/tinydc/color \"red\")");
    c.ok("SETMETADATA INBOX (/private/vendor/tinydc/color NIL)").await;
    let r = c.ok("GETMETADATA INBOX /private/vendor/tinydc/color").await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/private/vendor/tinydc/color NIL)");

    // §5: a value with a NUL comes in and goes out as a literal8.
    let tag = c.next_tag();
    c.write(format!("{tag} SETMETADATA INBOX (/private/bin ~{{3+}}\r\na\0b)\r\n").as_bytes())
        .await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains("OK"), "{r:?}");
    let r = c.ok("GETMETADATA INBOX /private/bin").await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/private/bin ~{3}\r\na\0b)");

    // Bad entry names are BAD (§3.2), on both commands.
    for bad in [
        "GETMETADATA INBOX /private//x",
        "GETMETADATA INBOX /private/x*",
        "GETMETADATA INBOX /private/x%",
        "GETMETADATA INBOX /private/x/",
        "GETMETADATA INBOX comment",
        "GETMETADATA INBOX /public/comment",
        "GETMETADATA (DEPTH 2) INBOX /private/x",
        "SETMETADATA INBOX (/private \"x\")",
        "SETMETADATA INBOX (/private//x \"x\")",
        "SETMETADATA INBOX (/private/x)",
    ] {
        c.bad(bad).await;
        // Ten malformed commands in a row would end the connection.
        c.ok("NOOP").await;
    }
    // An unknown mailbox is NO [NONEXISTENT].
    let r = c.no("GETMETADATA Nowhere /private/comment").await;
    assert!(r.tagged.contains("[NONEXISTENT]"), "{}", r.tagged);
    let r = c.no("SETMETADATA Nowhere (/private/comment \"x\")").await;
    assert!(r.tagged.contains("[NONEXISTENT]"), "{}", r.tagged);
    // Not before login.
    let mut anonymous = server.connect().await;
    anonymous.bad("GETMETADATA \"\" /shared/admin").await;

    // Server entries: private ones are the user's; the server's /shared ones are read-only.
    c.ok("SETMETADATA \"\" (/private/vendor/tinydc/theme \"dark\")").await;
    let r = c.ok("GETMETADATA \"\" (DEPTH infinity) /private").await;
    assert_eq!(r.all(), "* METADATA \"\" (/private/vendor/tinydc/theme \"dark\")");
    let r = c.no("SETMETADATA \"\" (/shared/comment \"mine\")").await;
    assert!(r.tagged.contains("[NOPERM]"), "{}", r.tagged);
    let r = c
        .no("SETMETADATA \"\" (/shared/admin \"mailto:me@example.test\")")
        .await;
    assert!(r.tagged.contains("[NOPERM]"), "{}", r.tagged);
}

#[tokio::test]
async fn limits_answer_maxsize_and_toomany() {
    let server = Server::start_with(
        |config| {
            config.imap.metadata_max_value = 100;
            config.imap.metadata_max_entries = 3;
        },
        None,
    )
    .await;
    let mut c = server.login().await;
    let r = c
        .no(&format!("SETMETADATA INBOX (/private/a \"{}\")", "v".repeat(101)))
        .await;
    assert!(r.tagged.contains("[METADATA MAXSIZE 100]"), "{}", r.tagged);
    c.ok(&format!("SETMETADATA INBOX (/private/a \"{}\")", "v".repeat(100)))
        .await;
    c.ok("SETMETADATA INBOX (/private/b \"b\" /shared/c \"c\")").await;
    // The count is per user, over the server and every mailbox.
    let r = c.no("SETMETADATA \"\" (/private/d \"d\")").await;
    assert!(r.tagged.contains("[METADATA TOOMANY]"), "{}", r.tagged);
    // Replacing and removing are always possible; a removal makes room in the same command.
    c.ok("SETMETADATA INBOX (/private/b \"bb\")").await;
    c.ok("SETMETADATA INBOX (/private/b NIL /private/d \"d\")").await;
    // All or nothing (§4.3): the too-large second value keeps the first from being set.
    let r = c
        .no(&format!(
            "SETMETADATA INBOX (/private/a \"new\" /private/e \"{}\")",
            "v".repeat(200)
        ))
        .await;
    assert!(r.tagged.contains("[METADATA MAXSIZE 100]"), "{}", r.tagged);
    let r = c.ok("GETMETADATA INBOX (/private/a /private/e)").await;
    assert!(
        r.all().contains(&"v".repeat(100)) && r.all().contains("/private/e NIL"),
        "{r:?}"
    );

    // A value literal far over the limit is refused before the client sends it (RFC 7889 §4).
    let tag = c.next_tag();
    c.write(format!("{tag} SETMETADATA INBOX (/private/big {{10000000}}\r\n").as_bytes())
        .await;
    let answer = c.line().await;
    assert!(
        answer.starts_with(&format!("{tag} NO [METADATA MAXSIZE 100]")),
        "{answer}"
    );
    // ... and the connection goes on.
    c.ok("NOOP").await;
}

#[tokio::test]
async fn quota_charged_and_released() {
    let server = Server::start_with(|_| {}, Some(4000)).await;
    let mut c = server.login().await;
    assert_eq!(mail_usage(&server).await, 0);
    let name = "/private/comment";
    c.ok("SETMETADATA INBOX (/private/comment \"hello\")").await;
    assert_eq!(mail_usage(&server).await, (name.len() + 5) as u64);
    c.ok("SETMETADATA INBOX (/private/comment \"hello, world\")").await;
    assert_eq!(mail_usage(&server).await, (name.len() + 12) as u64);
    c.ok("SETMETADATA INBOX (/private/comment NIL)").await;
    assert_eq!(mail_usage(&server).await, 0);

    // Over the quota: NO [OVERQUOTA], nothing stored.
    c.ok(&format!("SETMETADATA INBOX (/private/a \"{}\")", "a".repeat(3000)))
        .await;
    let r = c
        .no(&format!("SETMETADATA INBOX (/private/b \"{}\")", "b".repeat(1500)))
        .await;
    assert!(r.tagged.contains("[OVERQUOTA]"), "{}", r.tagged);
    assert_eq!(mail_usage(&server).await, ("/private/a".len() + 3000) as u64);
    // ... and a message that no longer fits because of the entries is refused too.
    let r = c.append("INBOX", "()", &vec![b'x'; 1200]).await;
    assert!(r.tagged.contains("NO [OVERQUOTA]"), "{r:?}");

    // DELETE of a mailbox refunds its entries' bytes.
    c.ok("SETMETADATA INBOX (/private/a NIL)").await;
    c.ok("CREATE Projects").await;
    c.ok("SETMETADATA Projects (/private/comment \"work\" /shared/comment \"shared\")")
        .await;
    let charged = (name.len() + 4 + "/shared/comment".len() + 6) as u64;
    assert_eq!(mail_usage(&server).await, charged);
    c.ok("DELETE Projects").await;
    assert_eq!(mail_usage(&server).await, 0);
    // A mailbox of the same name made again starts without entries.
    c.ok("CREATE Projects").await;
    let r = c.ok("GETMETADATA Projects /private/comment").await;
    assert_eq!(r.all(), "* METADATA \"Projects\" (/private/comment NIL)");

    // A recount agrees with what was charged.
    c.ok("SETMETADATA \"\" (/private/x \"12345\")").await;
    c.ok("SETMETADATA Projects (/private/y \"123\")").await;
    let root = server.env.dir.path().join("no-files");
    let recount = quota::recalc(&server.ctx.db, server.user_id, &root).await.unwrap();
    assert!(!recount.corrected(), "{recount:?}");
    assert_eq!(
        recount.mail_after,
        ("/private/x".len() + 5 + "/private/y".len() + 3) as u64
    );
}

#[tokio::test]
async fn two_users_never_see_each_other() {
    let server = Server::start().await;
    server.env.add_user("bob@example.test", "bob password", None).await;
    let mut alice = server.login().await;
    let mut bob = server.connect().await;
    bob.ok("LOGIN bob@example.test \"bob password\"").await;
    alice.ok("SETMETADATA \"\" (/private/secret \"alice's\")").await;
    alice
        .ok("SETMETADATA INBOX (/private/secret \"alice inbox\" /shared/comment \"alice shared\")")
        .await;
    for mailbox in ["\"\"", "INBOX"] {
        let r = bob
            .ok(&format!("GETMETADATA {mailbox} (DEPTH infinity) (/private /shared)"))
            .await;
        assert!(!r.all().contains("alice"), "{mailbox}: {r:?}");
    }
    bob.ok("SETMETADATA INBOX (/private/secret \"bob inbox\")").await;
    let r = alice.ok("GETMETADATA INBOX /private/secret").await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/private/secret \"alice inbox\")");
    let r = bob.ok("GETMETADATA INBOX /private/secret").await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/private/secret \"bob inbox\")");
    // Each one's /shared/admin names their own domain's postmaster; neither can write it.
    let r = bob.ok("GETMETADATA \"\" /shared/admin").await;
    assert!(r.all().contains("mailto:postmaster@example.test"), "{r:?}");
}

#[tokio::test]
async fn rename_keeps_entries() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("CREATE Work/Old").await;
    c.ok("SETMETADATA Work (/private/comment \"parent\")").await;
    c.ok("SETMETADATA Work/Old (/private/comment \"child\")").await;
    c.ok("RENAME Work Jobs").await;
    let r = c.ok("GETMETADATA Jobs /private/comment").await;
    assert_eq!(r.all(), "* METADATA \"Jobs\" (/private/comment \"parent\")");
    let r = c.ok("GETMETADATA Jobs/Old /private/comment").await;
    assert_eq!(r.all(), "* METADATA \"Jobs/Old\" (/private/comment \"child\")");
    c.no("GETMETADATA Work /private/comment").await;
    // RENAME INBOX moves its messages to a new mailbox; INBOX, and its entries, stay.
    c.ok("SETMETADATA INBOX (/private/comment \"inbox\")").await;
    c.ok("RENAME INBOX Saved").await;
    let r = c.ok("GETMETADATA INBOX /private/comment").await;
    assert_eq!(r.all(), "* METADATA \"INBOX\" (/private/comment \"inbox\")");
    let r = c.ok("GETMETADATA Saved /private/comment").await;
    assert_eq!(r.all(), "* METADATA \"Saved\" (/private/comment NIL)");
}

#[tokio::test]
async fn python_imaplib_raw_commands() {
    let server = Server::start_with(|_| {}, Some(100_000)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/metadata.py");
    let out = server.imaplib(&[script], &[], Duration::from_secs(30)).await;
    assert!(out.status.success(), "{}", printed(&out));
    assert!(printed(&out).contains("metadata ok"), "{}", printed(&out));
    // What the script left: one entry on INBOX, charged.
    assert_eq!(
        mail_usage(&server).await,
        ("/private/comment".len() + "from python".len()) as u64
    );
    let _ = (USER, PASS);
}

#[tokio::test]
async fn large_answers_come_in_several_responses() {
    let server = Server::start().await;
    let mut c = server.login().await;
    for name in ["a", "b", "c"] {
        let value = name.repeat(40_000);
        c.ok(&format!("SETMETADATA INBOX (/private/{name} \"{value}\")")).await;
    }
    let r = c.ok("GETMETADATA INBOX (DEPTH 1) /private").await;
    // 64 KiB of values at most begin a new line: a and b, then c.
    assert_eq!(
        r.lines.len(),
        2,
        "{:?}",
        r.lines.iter().map(|l| &l[..40]).collect::<Vec<_>>()
    );
    assert!(r.lines[0].contains("/private/a {40000}") && r.lines[0].contains("/private/b {40000}"));
    assert!(r.lines[1].starts_with("* METADATA \"INBOX\" (/private/c {40000}"));
    assert!(r.lines.iter().all(|l| l.ends_with(')')));
}

#[tokio::test]
async fn parallel_writers_never_pass_the_entry_limit() {
    let server = Server::start_with(|config| config.imap.metadata_max_entries = 5, None).await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(server.login().await);
    }
    // Twelve sessions each add a new entry at once: the user's row lock lets exactly five in.
    let mut writes = tokio::task::JoinSet::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        writes.spawn(async move {
            c.cmd(&format!("SETMETADATA INBOX (/private/n{i} \"{i}\")"))
                .await
                .tagged
        });
    }
    let answers = writes.join_all().await;
    let ok = answers.iter().filter(|a| a.contains(" OK")).count();
    let too_many = answers.iter().filter(|a| a.contains("[METADATA TOOMANY]")).count();
    assert_eq!((ok, too_many), (5, 7), "{answers:#?}");
    let mut c = server.login().await;
    let r = c.ok("GETMETADATA INBOX (DEPTH 1) /private").await;
    assert_eq!(r.all().matches("/private/n").count(), 5, "{r:?}");
}
