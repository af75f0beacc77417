//! Hostile and unlucky input over real sockets (issue #8): deep nesting in commands and in
//! stored messages, mailbox limits, concurrent writers on one account, the literal memory
//! budget.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A message whose body is `depth` multiparts, each inside the previous one, with a text part
/// at the bottom.
fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut m =
        String::from("From: a@example.test\r\nSubject: deep\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 0..depth {
        m.push_str(&format!(
            "--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
            i + 1
        ));
    }
    m.push_str(&format!(
        "--b{depth}\r\nContent-Type: text/plain\r\n\r\nneedle at the bottom\r\n--b{depth}--\r\n"
    ));
    for i in (0..depth).rev() {
        m.push_str(&format!("--b{i}--\r\n"));
    }
    m.into_bytes()
}

/// A message holding `depth` message/rfc822 parts, each inside the previous one.
fn nested_messages(depth: usize) -> Vec<u8> {
    let mut m = String::new();
    for _ in 0..depth {
        m.push_str("From: a@example.test\r\nContent-Type: message/rfc822\r\n\r\n");
    }
    m.push_str("From: a@example.test\r\nSubject: bottom\r\n\r\nneedle at the bottom\r\n");
    m.into_bytes()
}

#[tokio::test]
async fn search_nested_ten_thousand_deep_is_bad_and_the_session_goes_on() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let deep = format!("SEARCH {}ALL{}", "(".repeat(10_000), ")".repeat(10_000));
    let r = c.bad(&deep).await;
    assert!(r.tagged.contains("too deep"), "{r:#?}");
    let deep_not = format!("SEARCH {}ALL", "NOT ".repeat(10_000));
    c.bad(&deep_not).await;
    let deep_or = format!("SEARCH {}ALL", "OR ALL ".repeat(5_000));
    c.bad(&deep_or).await;
    c.ok("NOOP").await;
    // Within the limit still works.
    c.ok(&format!("SEARCH {}ALL{}", "(".repeat(10), ")".repeat(10))).await;
}

#[tokio::test]
async fn deeply_nested_mime_can_be_fetched_and_searched() {
    let server = Server::start().await;
    let mut c = server.login().await;
    for (i, message) in [nested_multipart(10_000), nested_messages(10_000)].iter().enumerate() {
        let r = c.append("INBOX", "()", message).await;
        assert!(r.tagged.contains(" OK"), "message {i}: {r:#?}");
    }
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1:2 (BODYSTRUCTURE ENVELOPE)").await;
    assert_eq!(r.lines.len(), 2, "{r:#?}");
    let path = vec!["1"; 60].join(".");
    c.ok(&format!("FETCH 1:2 (BODY.PEEK[{path}] BODY.PEEK[{path}.MIME])"))
        .await;
    // Deeper than the parser allows: BAD, not a crash.
    let path = vec!["1"; 5_000].join(".");
    c.bad(&format!("FETCH 1 BODY.PEEK[{path}]")).await;
    c.ok("SEARCH BODY needle").await;
    c.ok("SEARCH TEXT bottom").await;
    c.ok("NOOP").await;
}

/// A NUL byte in header fields the envelope and body structure quote (not valid mail, but it
/// arrives): the message is stored and shown, the NUL as U+FFFD, instead of an APPEND that
/// fails with SERVERBUG because PostgreSQL's jsonb refuses `\u0000`.
#[tokio::test]
async fn a_nul_in_quoted_header_fields_is_stored_not_refused() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let message = b"From: Bob\0Smith <bob@example.test>\r\nSubject: half\0way\r\n\
Content-Type: text/plain; name=\"a\0b.txt\"\r\n\r\nbody\r\n";
    let r = c.append("INBOX", "()", message).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1 (ENVELOPE BODYSTRUCTURE)").await;
    assert_eq!(r.lines.len(), 1, "{r:#?}");
    // "half\u{FFFD}way", encoded for a client that has not enabled UTF8=ACCEPT.
    assert!(r.all().contains("\"=?utf-8?b?aGFsZu+/vXdheQ==?=\""), "{r:#?}");
    assert_eq!(c.ok("SEARCH SUBJECT half").await.find("* SEARCH"), "* SEARCH 1");
}

/// A NUL in the login name: invalid credentials like any unknown name, not UNAVAILABLE.
#[tokio::test]
async fn a_nul_in_the_login_name_is_invalid_credentials() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    let r = c.no("LOGIN {5+}\r\nb\0b@x \"pw\"").await;
    assert!(r.tagged.contains("[AUTHENTICATIONFAILED]"), "{r:#?}");
}

#[tokio::test]
async fn failed_create_leaves_nothing_behind_and_limits_hold() {
    let server = Server::start_with(
        |config| {
            config.imap.max_mailboxes = 20;
            config.imap.max_mailbox_depth = 8;
            config.imap.max_mailbox_name_length = 200;
        },
        None,
    )
    .await;
    let mut c = server.login().await;
    let before = c.ok("LIST \"\" *").await.lines.len();
    // 2,000 levels: refused whole, no parent left behind.
    let deep = vec!["a"; 2_000].join("/");
    let r = c.no(&format!("CREATE \"{deep}\"")).await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    assert_eq!(c.ok("LIST \"\" *").await.lines.len(), before);
    // Too deep by one.
    let r = c.no("CREATE a/b/c/d/e/f/g/h/i").await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    assert_eq!(c.ok("LIST \"\" *").await.lines.len(), before);
    // Too long.
    let r = c.no(&format!("CREATE x/{}", "n".repeat(300))).await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    assert_eq!(c.ok("LIST \"\" *").await.lines.len(), before);
    // At the depth limit: created with its parents in one go.
    c.ok("CREATE a/b/c/d/e/f/g/h").await;
    assert_eq!(c.ok("LIST \"\" *").await.lines.len(), before + 8);
    // Count: 6 defaults + 8 = 14 of 20; a/b/... with 7 new parents would pass 20: refused whole.
    let r = c.no("CREATE p/q/r/s/t/u/v").await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    assert_eq!(c.ok("LIST \"\" *").await.lines.len(), before + 8);
    for i in 0..6 {
        c.ok(&format!("CREATE m{i}")).await;
    }
    let r = c.no("CREATE one-too-many").await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    // RENAME: the renamed inferiors must stay within depth and length.
    let r = c.no("RENAME a x/y").await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    let r = c.no(&format!("RENAME a {}", "L".repeat(190))).await;
    assert!(r.tagged.contains("[LIMIT]"), "{r:#?}");
    c.ok("RENAME a/b/c/d/e/f/g/h z").await;
    let r = c.ok("LIST \"\" *").await;
    assert!(r.has("\"z\"") && !r.has("a/b/c/d/e/f/g/h"), "{r:#?}");
    c.ok("NOOP").await;
}

/// Item 10: APPEND (same content, so the same blob row) and EXPUNGE, COPY and MOVE from several
/// sessions on one account at once: every command must succeed (a PostgreSQL deadlock surfaced
/// as NO [SERVERBUG]).
#[tokio::test]
async fn concurrent_append_expunge_copy_move_on_one_account() {
    let server = Server::start().await;
    {
        let mut c = server.login().await;
        c.ok("CREATE Other").await;
    }
    let message = message("same", "the same body every time, so the same blob row");
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let mut c = server.login().await;
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut done = 0u32;
            let mailbox = if worker % 2 == 0 { "INBOX" } else { "Other" };
            c.ok(&format!("SELECT {mailbox}")).await;
            while Instant::now() < deadline {
                let mut check = |what: &str, r: Response| {
                    if !r.tagged.contains(" OK") {
                        failures.push(format!("{what}: {}", r.tagged));
                    }
                };
                let r = c.append("INBOX", "()", &message).await;
                check("APPEND", r);
                let r = c.append("Other", "(\\Deleted)", &message).await;
                check("APPEND", r);
                let r = c.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)").await;
                check("STORE", r);
                let r = c.cmd("EXPUNGE").await;
                check("EXPUNGE", r);
                let other = if mailbox == "INBOX" { "Other" } else { "INBOX" };
                let r = c.cmd(&format!("UID COPY 1:* {other}")).await;
                check("COPY", r);
                let r = c.cmd(&format!("UID MOVE 1:* {other}")).await;
                check("MOVE", r);
                done += 1;
            }
            (done, failures)
        }));
    }
    let mut rounds = 0;
    for task in tasks {
        let (done, failures) = task.await.expect("worker");
        assert!(failures.is_empty(), "{failures:#?}");
        rounds += done;
    }
    assert!(rounds >= 6, "too few rounds ran: {rounds}");
}

/// Item 11: literals share one memory budget. While one session holds most of it, another's
/// synchronizing literal is refused before the `+`, and its LITERAL+ literal is read, dropped
/// and refused; both work again once the budget is free.
#[tokio::test]
async fn literals_share_one_memory_budget() {
    let server = Server::start_with(
        |config| {
            config.imap.max_literal_size = 1 << 20;
            config.imap.literal_memory = 1 << 20;
        },
        None,
    )
    .await;
    let size = 900_000;
    let mut a = server.login().await;
    a.write(format!("a1 APPEND INBOX {{{size}}}\r\n").as_bytes()).await;
    let go = a.raw_line().await;
    assert!(go.starts_with('+'), "{go}");
    let mut body = message("big", "");
    body.resize(size, b'x');
    a.write(&body[..1000]).await;

    let mut b = server.login().await;
    b.write(format!("b1 APPEND INBOX {{{size}}}\r\n").as_bytes()).await;
    let refused = b.raw_line().await;
    assert!(refused.starts_with("b1 NO [UNAVAILABLE]"), "{refused}");
    let mut plus = format!("b2 APPEND INBOX {{{size}+}}\r\n").into_bytes();
    plus.extend_from_slice(&body);
    plus.extend_from_slice(b"\r\n");
    b.write(&plus).await;
    let refused = b.raw_line().await;
    assert!(refused.starts_with("b2 NO [UNAVAILABLE]"), "{refused}");
    b.ok("NOOP").await;

    a.write(&body[1000..]).await;
    a.write(b"\r\n").await;
    let r = a.until("a1").await;
    assert!(r.tagged.contains("OK"), "{r:#?}");
    let r = b.append("INBOX", "()", &body).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    let r = b.ok("STATUS INBOX (MESSAGES)").await;
    assert!(r.has("MESSAGES 2"), "{r:#?}");
}
