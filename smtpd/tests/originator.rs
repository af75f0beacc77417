//! Submission's originator check (RFC 5322 §3.6, issue #8 item 7) through the real submission
//! listener: python3's smtplib sends each message after AUTH; only messages whose one From (and
//! at most one Sender) names nothing but the user's own addresses are delivered.

mod common;

use common::{Client, have, start};
use tokio::process::Command;

/// Sends each raw message (a JSON list on stdin) in its own authenticated session and prints
/// one line per message: the reply code and text after DATA.
const SMTPLIB: &str = r#"
import json, smtplib, sys
host, port, user, password, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
for raw in json.load(sys.stdin):
    s = smtplib.SMTP(host, port, timeout=20)
    s.ehlo('laptop.test')
    s.login(user, password)
    try:
        s.sendmail(user, [rcpt], raw.encode('utf-8'))
        print('250 ok')
    except smtplib.SMTPDataError as e:
        print(e.smtp_code, e.smtp_error.decode())
    s.quit()
"#;

async fn smtplib(addr: std::net::SocketAddr, messages: &[String]) -> Vec<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("python3")
        .args(["-c", SMTPLIB, &addr.ip().to_string(), &addr.port().to_string()])
        .args(["alice@example.test", "secret-a", "bob@example.test"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = serde_json::to_vec(messages).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("smtplib finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

fn message(header: &str, subject: &str) -> String {
    format!(
        "{header}\r\nTo: <bob@example.test>\r\nSubject: {subject}\r\nDate: Tue, 24 Nov 2026 02:00:00 +0000\r\n\r\nHello.\r\n"
    )
}

#[tokio::test]
async fn from_and_sender_must_be_the_users_own() {
    if !have("python3") {
        return;
    }
    let h = start().await;
    h.add_user("alice@example.test", "secret-a", None).await;
    let bob = h.add_user("bob@example.test", "secret-b", None).await;
    shared::accounts::add_alias(&h.ctx.db, "ally@example.test", &["alice@example.test".into()])
        .await
        .unwrap();
    // (header fields, expected reply code and enhanced status)
    let cases: &[(&str, &str)] = &[
        // The attack of the issue: another user's From first, the user's own last.
        ("From: <bob@example.test>\r\nFrom: <alice@example.test>", "554 5.6.0"),
        ("From: <alice@example.test>\r\nfrom : <bob@example.test>", "554 5.6.0"),
        ("Subject: no from at all", "554 5.6.0"),
        (
            "From: <alice@example.test>\r\nSender: <alice@example.test>\r\nSender: <ally@example.test>",
            "554 5.6.0",
        ),
        (
            "From: <alice@example.test>\r\nSender: Bob <bob@example.test>",
            "553 5.7.1",
        ),
        ("From: <alice@example.test>, <bob@example.test>", "553 5.7.1"),
        (
            "From: Alice <alice@example.test>,\r\n\tBob <bob@example.test>",
            "553 5.7.1",
        ),
        ("From: team: alice@example.test, bob@example.test;", "553 5.7.1"),
        (
            "From: =?utf-8?q?alice=40example=2Etest?= <bob@example.test>",
            "553 5.7.1",
        ),
        ("From: (alice@example.test) <bob@example.test>", "553 5.7.1"),
        ("From: \"alice@example.test\" <bob@example.test>", "553 5.7.1"),
        // The user's own address and alias, folded, with a comment and an encoded word.
        (
            "FROM: =?utf-8?q?Alice_=C3=A9?= (work)\r\n <Alice@Example.test>,\r\n ally@example.test\r\nSender: alice@example.test",
            "250",
        ),
    ];
    let messages: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(n, (header, _))| message(header, &format!("case {n}")))
        .collect();
    let replies = smtplib(h.submission(), &messages).await;
    assert_eq!(replies.len(), cases.len(), "{replies:?}");
    for ((header, want), got) in cases.iter().zip(&replies) {
        assert!(got.starts_with(want), "{header:?}: got {got:?}, want {want}");
    }
    // Only the last one reached bob.
    let inbox = h.inbox(bob).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(inbox[0].contains(&format!("Subject: case {}", cases.len() - 1)));
}

#[tokio::test]
async fn bdat_header_with_a_bare_line_feed_is_refused() {
    let h = start().await;
    h.add_user("alice@example.test", "secret-a", None).await;
    let bob = h.add_user("bob@example.test", "secret-b", None).await;
    let mut c = Client::connect(h.submission()).await;
    c.expect("EHLO laptop", 250).await;
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 235);
    c.expect("MAIL FROM:<alice@example.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    // A reader that ends lines at LF sees a second From here.
    let body = "From: <alice@example.test>\nFrom: <bob@example.test>\r\nSubject: lf\r\n\r\nx\r\n";
    c.send(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes()).await;
    let a = c.read().await;
    assert_eq!(a.code, 554, "{a:?}");
    assert!(a.text().starts_with("5.6.0"), "{a:?}");
    assert!(h.inbox(bob).await.is_empty());
}
