//! The MX listener: local delivery, aliases, catch-all, relay refusal, quota, SIZE, BDAT,
//! pipelining, bare LF, abuse.

mod common;

use common::{Client, message, start};

#[tokio::test]
async fn local_delivery_with_trace_headers() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw-alice", None).await;
    let mut c = Client::connect(h.mx()).await;
    let ehlo = c.expect("EHLO client.example.org", 250).await;
    let text = ehlo.text();
    for keyword in [
        "PIPELINING",
        "SIZE ",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(text.contains(keyword), "EHLO lacks {keyword}: {text}");
    }
    assert!(!text.contains("AUTH"), "no AUTH on MX: {text}");
    c.expect("MAIL FROM:<bob@example.org>", 250).await;
    c.expect("RCPT TO:<Alice@Example.TEST>", 250).await;
    let done = c.data(&message("bob@example.org", "alice@example.test", "hello")).await;
    assert_eq!(done.code, 250, "{done:?}");
    c.expect("QUIT", 221).await;
    let inbox = h.inbox(alice).await;
    assert_eq!(inbox.len(), 1);
    let m = &inbox[0];
    assert!(m.starts_with("Return-Path: <bob@example.org>\r\n"), "{m}");
    assert!(m.contains("Authentication-Results: localhost;"), "{m}");
    assert!(m.contains("Received: from client.example.org (127.0.0.1)"), "{m}");
    assert!(
        m.contains("Subject: hello\r\n") && m.ends_with("Hello alice@example.test.\r\n"),
        "{m}"
    );
}

#[tokio::test]
async fn alias_and_catch_all() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let bob = h.add_user("bob@example.test", "pw", None).await;
    let db = &h.ctx.db;
    shared::accounts::add_alias(
        db,
        "family@example.test",
        &["alice@example.test".into(), "bob@example.test".into()],
    )
    .await
    .unwrap();
    shared::accounts::add_alias(db, "@example.test", &["bob@example.test".into()])
        .await
        .unwrap();
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<z@x.org>", 250).await;
    c.expect("RCPT TO:<family@example.test>", 250).await;
    // bob gets one copy though both the alias and his own address name him.
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    assert_eq!(
        c.data(&message("z@x.org", "family@example.test", "fam")).await.code,
        250
    );
    c.expect("MAIL FROM:<z@x.org>", 250).await;
    c.expect("RCPT TO:<nobody-here@example.test>", 250).await;
    assert_eq!(
        c.data(&message("z@x.org", "nobody-here@example.test", "catch"))
            .await
            .code,
        250
    );
    assert_eq!(h.inbox(alice).await.len(), 1);
    let bobs = h.inbox(bob).await;
    assert_eq!(bobs.len(), 2, "one family copy, one catch-all copy");
    assert!(bobs[1].contains("Subject: catch"));
}

#[tokio::test]
async fn relay_refused_and_unknown_user() {
    let h = start().await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    let a = c.expect("RCPT TO:<someone@elsewhere.org>", 554).await;
    assert!(a.text().starts_with("5.7.1"), "{a:?}");
    c.expect("RCPT TO:<ghost@example.test>", 550).await;
    c.expect("DATA", 554).await;
    c.expect("VRFY alice", 252).await;
    c.expect("AUTH PLAIN AGFAYg==", 502).await;
    c.expect("RSET", 250).await;
    c.expect("NOOP", 250).await;
}

#[tokio::test]
async fn sequence_and_syntax_errors() {
    let h = start().await;
    h.add_user("alice@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("MAIL FROM:<a@x.org>", 503).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 503).await;
    c.expect("MAIL FROM:a@x.org", 501).await;
    c.expect("FROB", 500).await;
    c.expect("EXPN staff", 502).await;
    let long = format!("NOOP {}", "x".repeat(5000));
    c.expect(&long, 500).await;
    c.expect("MAIL FROM:<a@x.org> RET=FULL", 555).await;
    // Enough abuse and the server hangs up.
    let mut last = 0;
    for _ in 0..10 {
        let a = c.cmd("FROB").await;
        last = a.code;
        if a.code == 421 || a.code == 0 {
            break;
        }
    }
    assert!(last == 421 || last == 0, "not disconnected: {last}");
}

#[tokio::test]
async fn quota_full_at_rcpt_and_at_end_of_data() {
    let h = start().await;
    let small = h.add_user("small@example.test", "pw", Some(6000)).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    // Announced size larger than the space left: 452 at RCPT.
    c.expect("MAIL FROM:<a@x.org> SIZE=7000", 250).await;
    let a = c.expect("RCPT TO:<small@example.test>", 452).await;
    assert!(a.text().starts_with("4.2.2"), "{a:?}");
    c.expect("RSET", 250).await;
    // No SIZE: accepted at RCPT with a small estimate, refused when the data is too big.
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<small@example.test>", 250).await;
    let big = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(8000));
    let a = c.data(&big).await;
    assert_eq!(a.code, 552, "{a:?}");
    assert!(a.text().starts_with("5.2.2"), "{a:?}");
    assert!(h.inbox(small).await.is_empty());
    // The reservations were given back: a small message still fits.
    c.expect("MAIL FROM:<a@x.org> SIZE=500", 250).await;
    c.expect("RCPT TO:<small@example.test>", 250).await;
    assert_eq!(c.data("Subject: small\r\n\r\nhi\r\n").await.code, 250);
    assert_eq!(h.inbox(small).await.len(), 1);
    let info = shared::quota::info(&h.ctx.db, small).await.unwrap();
    assert_eq!(info.reserved_bytes, 0, "{info:?}");
}

#[tokio::test]
async fn size_refused_at_mail_and_at_data() {
    let h = start_small().await;
    h.add_user("alice@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    let ehlo = c.expect("EHLO x.org", 250).await;
    assert!(ehlo.text().contains("SIZE 2048"), "{ehlo:?}");
    let a = c.expect("MAIL FROM:<a@x.org> SIZE=4096", 552).await;
    assert!(a.text().starts_with("5.3.4"));
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    let a = c.data(&format!("Subject: x\r\n\r\n{}\r\n", "z".repeat(3000))).await;
    assert_eq!(a.code, 552, "{a:?}");
    // The session is still in step.
    c.expect("NOOP", 250).await;
}

async fn start_small() -> common::Harness {
    common::start_with(|c| c.smtp.max_message_size = 2048, tinydc_smtpd::dns::Dns::fixed()).await
}

#[tokio::test]
async fn bdat_chunks() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    let part1 = "Subject: chunked\r\n\r\n.first line starts with a dot\r\n";
    let part2 = "second\r\n";
    c.send(format!("BDAT {}\r\n{part1}", part1.len()).as_bytes()).await;
    assert_eq!(c.read().await.code, 250);
    c.send(format!("BDAT {} LAST\r\n{part2}", part2.len()).as_bytes()).await;
    assert_eq!(c.read().await.code, 250);
    // DATA after BDAT in the same transaction is refused; BDAT without MAIL is read and refused.
    c.send(b"BDAT 3 LAST\r\nabc").await;
    assert_eq!(c.read().await.code, 503);
    c.expect("NOOP", 250).await;
    let inbox = h.inbox(alice).await;
    assert_eq!(inbox.len(), 1);
    assert!(
        inbox[0].ends_with("\r\n\r\n.first line starts with a dot\r\nsecond\r\n"),
        "{}",
        inbox[0]
    );
}

#[tokio::test]
async fn pipelined_session() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let bob = h.add_user("bob@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    // RFC 2920: the whole transaction in one write, replies in order.
    let body = "Subject: piped\r\n\r\nbody\r\n.\r\n";
    c.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<ghost@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        .await;
    let codes = [250, 250, 550, 250, 354];
    for code in codes {
        assert_eq!(c.read().await.code, code);
    }
    c.send(format!("{body}MAIL FROM:<a@x.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n").as_bytes())
        .await;
    for code in [250, 250, 250, 354] {
        assert_eq!(c.read().await.code, code);
    }
    c.send(b"Subject: second\r\n\r\nx\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.read().await.code, 250);
    assert_eq!(c.read().await.code, 221);
    assert_eq!(h.inbox(alice).await.len(), 1);
    assert_eq!(h.inbox(bob).await.len(), 2);
}

#[tokio::test]
async fn bare_lf_is_refused_and_does_not_end_data() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    c.expect("DATA", 354).await;
    // "\n.\n" would end the data for a lax server and smuggle the second MAIL in.
    c.send(b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<evil@x.org>\r\n.\r\n").await;
    let a = c.read().await;
    assert_eq!(a.code, 554, "{a:?}");
    c.expect("NOOP", 250).await;
    assert!(h.inbox(alice).await.is_empty());
}

#[tokio::test]
async fn starttls_on_mx_resets_the_session() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let tls = h.tls_client();
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.starttls(&tls).await;
    c.expect("MAIL FROM:<a@x.org>", 503).await;
    let ehlo = c.expect("EHLO x.org", 250).await;
    assert!(!ehlo.text().contains("STARTTLS"));
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    assert_eq!(c.data(&message("a@x.org", "alice@example.test", "tls")).await.code, 250);
    let inbox = h.inbox(alice).await;
    assert!(inbox[0].contains("with ESMTPS id"), "{}", inbox[0]);
}

#[tokio::test]
async fn forged_authentication_results_are_removed() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    let forged = "Authentication-Results: localhost; dkim=pass header.d=bank.test\r\nSubject: trust me\r\n\r\nx\r\n";
    assert_eq!(c.data(forged).await.code, 250);
    let m = &h.inbox(alice).await[0];
    assert!(!m.contains("bank.test"), "{m}");
    assert_eq!(m.matches("Authentication-Results:").count(), 1, "{m}");
    // The authserv-id folded onto the next line (RFC 5322 §2.2.3) is still ours.
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    let folded =
        "Authentication-Results:\r\n localhost; dkim=pass header.d=shop.test\r\nSubject: trust me too\r\n\r\nx\r\n";
    assert_eq!(c.data(folded).await.code, 250);
    let inbox = h.inbox(alice).await;
    assert_eq!(inbox.len(), 2);
    for m in &inbox {
        assert!(!m.contains("shop.test"), "{m}");
        assert_eq!(m.matches("Authentication-Results:").count(), 1, "{m}");
    }
}

#[tokio::test]
async fn recipient_limit_and_command_timeout() {
    let h = common::start_with(
        |c| {
            c.smtp.max_recipients = 2;
            c.smtp.command_timeout_secs = 1;
        },
        tinydc_smtpd::dns::Dns::fixed(),
    )
    .await;
    h.add_user("alice@example.test", "pw", None).await;
    h.add_user("bob@example.test", "pw", None).await;
    h.add_user("carol@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    let a = c.expect("RCPT TO:<carol@example.test>", 452).await;
    assert!(a.text().starts_with("4.5.3"), "{a:?}");
    // Silence: the server gives up with 421 and closes.
    let a = c.read().await;
    assert_eq!(a.code, 421, "{a:?}");
    assert!(a.text().starts_with("4.4.2"), "{a:?}");
    assert_eq!(c.read().await.code, 0);
}

#[tokio::test]
async fn one_full_mailbox_does_not_block_the_others() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", Some(6000)).await;
    let bob = h.add_user("bob@example.test", "pw", None).await;
    let carol = h.add_user("carol@example.test", "pw", None).await;
    shared::accounts::add_alias(
        &h.ctx.db,
        "family@example.test",
        &["alice@example.test".into(), "bob@example.test".into()],
    )
    .await
    .unwrap();
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<carol@example.test>", 250).await;
    c.expect("RCPT TO:<family@example.test>", 250).await;
    let big = format!("Subject: photos\r\n\r\n{}\r\n", "p".repeat(8000));
    assert_eq!(c.data(&big).await.code, 250);
    assert!(h.inbox(alice).await.is_empty());
    assert_eq!(h.inbox(bob).await.len(), 1);
    let dsn = &h.inbox(carol).await[0];
    assert!(
        dsn.contains("Final-Recipient: rfc822; family@example.test") && dsn.contains("Status: 5.2.2"),
        "{dsn}"
    );
    let info = shared::quota::info(&h.ctx.db, alice).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (0, 0));
}

#[tokio::test]
async fn postmaster_is_always_accepted() {
    let h = start().await;
    let first = h.add_user("admin@example.test", "pw", None).await;
    h.add_user("other@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<PostMaster@example.test>", 250).await;
    assert_eq!(c.data("Subject: abuse report\r\n\r\nx\r\n").await.code, 250);
    assert_eq!(h.inbox(first).await.len(), 1);
}

/// The postmaster fallback is one rule (shared::accounts::resolve_recipient) for delivery and
/// for bounces: a DSN to postmaster@ of a local domain reaches the account that RCPT would.
#[tokio::test]
async fn bounce_to_postmaster_reaches_the_first_account() {
    let h = start().await;
    let admin = h.add_user("admin@example.test", "pw", None).await;
    let alice = h.add_user("alice@example.test", "pw", Some(6000)).await;
    let bob = h.add_user("bob@example.test", "pw", None).await;
    shared::accounts::add_alias(
        &h.ctx.db,
        "family@example.test",
        &["alice@example.test".into(), "bob@example.test".into()],
    )
    .await
    .unwrap();
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<postmaster@example.test>", 250).await;
    c.expect("RCPT TO:<family@example.test>", 250).await;
    let big = format!("Subject: photos\r\n\r\n{}\r\n", "p".repeat(8000));
    assert_eq!(c.data(&big).await.code, 250);
    assert!(h.inbox(alice).await.is_empty());
    assert_eq!(h.inbox(bob).await.len(), 1);
    let inbox = h.inbox(admin).await;
    assert_eq!(
        inbox.len(),
        1,
        "the DSN for the full mailbox went to postmaster's account"
    );
    assert!(inbox[0].contains("Status: 5.2.2"), "{}", inbox[0]);
}

#[tokio::test]
async fn smtputf8_and_8bitmime() {
    let h = start().await;
    let jose = h.add_user("josé@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    // RFC 6531 §3.4: a UTF-8 address needs the SMTPUTF8 parameter.
    c.expect("MAIL FROM:<ñandú@ejemplo.org>", 553).await;
    c.expect("MAIL FROM:<ñandú@ejemplo.org> SMTPUTF8 BODY=8BITMIME", 250)
        .await;
    c.expect("RCPT TO:<josé@example.test>", 250).await;
    assert_eq!(c.data("Subject: café\r\n\r\nsmörgåsbord ☃\r\n").await.code, 250);
    let m = &h.inbox(jose).await[0];
    assert!(m.starts_with("Return-Path: <ñandú@ejemplo.org>"), "{m}");
    assert!(
        m.contains("with UTF8SMTP id") && m.ends_with("smörgåsbord ☃\r\n"),
        "{m}"
    );
}

#[tokio::test]
async fn helo_and_ehlo_reset() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let mut c = Client::connect(h.mx()).await;
    let helo = c.expect("HELO old.client", 250).await;
    assert_eq!(helo.lines.len(), 1, "HELO lists no extensions");
    c.expect("STARTTLS", 503).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    // §4.1.4: EHLO drops the transaction.
    c.expect("EHLO new.client", 250).await;
    c.expect("DATA", 503).await;
    c.expect("MAIL FROM:<a@x.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    assert_eq!(c.data("Subject: after ehlo\r\n\r\nx\r\n").await.code, 250);
    assert_eq!(h.inbox(alice).await.len(), 1);
    let info = shared::quota::info(&h.ctx.db, alice).await.unwrap();
    assert_eq!(
        info.reserved_bytes, 0,
        "the dropped transaction released its reservation"
    );
}

/// A NUL byte in the Subject (not valid mail, but it arrives): delivered, not answered 451 for
/// ever (PostgreSQL's jsonb refuses `\u0000` in the stored envelope; the mail store writes the
/// NUL as U+FFFD there and keeps the message's bytes as they came).
#[tokio::test]
async fn a_nul_in_the_subject_is_delivered() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw-alice", None).await;
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO client.example.org", 250).await;
    c.expect("MAIL FROM:<bob@example.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    let done = c
        .data(&message("bob@example.org", "alice@example.test", "half\0way"))
        .await;
    assert_eq!(done.code, 250, "{done:?}");
    let inbox = h.inbox(alice).await;
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains("Subject: half\0way\r\n"), "{}", inbox[0]);
}
