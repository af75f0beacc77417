//! Real clients from outside the project: swaks (plain MX, STARTTLS + AUTH on submission,
//! implicit TLS on submissions) and python3's smtplib. In CI (CI=true) a missing tool fails.

mod common;

use common::start;
use tokio::process::Command;

async fn run(cmd: &mut Command) -> String {
    let out = cmd.output().await.expect("run client");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "client failed: {text}");
    text
}

#[tokio::test]
async fn swaks_mx_submission_and_submissions() {
    shared::testing::require_tool("swaks");
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw-alice", None).await;
    let bob = h.add_user("bob@example.test", "pw-bob", None).await;
    // Plain MX delivery, pipelined.
    run(Command::new("swaks")
        .args(["--server", &h.mx().to_string(), "--helo", "client.test", "--pipeline"])
        .args(["--from", "someone@example.org", "--to", "alice@example.test"])
        .args(["--header", "Subject: swaks mx"]))
    .await;
    // Submission: STARTTLS then AUTH PLAIN.
    let out = run(Command::new("swaks")
        .args([
            "--server",
            &h.submission().to_string(),
            "--helo",
            "laptop.test",
            "--tls",
        ])
        .args([
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "pw-alice",
        ])
        .args(["--from", "alice@example.test", "--to", "bob@example.test"])
        .args(["--header", "Subject: swaks starttls"]))
    .await;
    assert!(out.contains("235 2.7.0"), "{out}");
    // Submissions: implicit TLS, AUTH LOGIN.
    run(Command::new("swaks")
        .args([
            "--server",
            &h.submissions().to_string(),
            "--helo",
            "laptop.test",
            "--tlsc",
        ])
        .args([
            "--auth",
            "LOGIN",
            "--auth-user",
            "bob@example.test",
            "--auth-password",
            "pw-bob",
        ])
        .args(["--from", "bob@example.test", "--to", "alice@example.test"])
        .args(["--header", "Subject: swaks implicit"]))
    .await;
    // A wrong password is refused.
    let out = Command::new("swaks")
        .args(["--server", &h.submission().to_string(), "--tls"])
        .args([
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "nope",
        ])
        .args(["--from", "alice@example.test", "--to", "bob@example.test"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("535 5.7.8"));

    let alices = h.inbox(alice).await;
    assert_eq!(alices.len(), 2);
    assert!(alices[0].contains("Subject: swaks mx"));
    assert!(alices[1].contains("Subject: swaks implicit") && alices[1].contains("ESMTPSA"));
    let bobs = h.inbox(bob).await;
    assert_eq!(bobs.len(), 1);
    assert!(bobs[0].contains("Subject: swaks starttls") && bobs[0].contains("ESMTPSA"));
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
from email.message import EmailMessage
mx, sub, subs, cafile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)

m = EmailMessage()
m["From"] = "x@example.org"; m["To"] = "alice@example.test"; m["Subject"] = "smtplib mx"
m.set_content("caf\u00e9 \u2603\n.leading dot\n")
with smtplib.SMTP("127.0.0.1", mx) as s:
    s.ehlo("py.test")
    assert s.has_extn("pipelining") and s.has_extn("smtputf8") and s.has_extn("size")
    s.send_message(m)

with smtplib.SMTP("127.0.0.1", sub) as s:
    s.ehlo("py.test")
    s.starttls(context=ctx)
    s.ehlo("py.test")
    s.login("alice@example.test", "pw-alice")
    m = EmailMessage()
    m["From"] = "alice@example.test"; m["To"] = "bob@example.test"; m["Subject"] = "smtplib starttls"
    m.set_content("hi bob\n")
    s.send_message(m)
    try:
        s.sendmail("bob@example.test", ["bob@example.test"], "From: bob@example.test\r\n\r\nx\r\n")
        sys.exit("forged sender accepted")
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 553, e

with smtplib.SMTP_SSL("127.0.0.1", subs, context=ctx) as s:
    s.login("bob@example.test", "pw-bob")
    m = EmailMessage()
    m["From"] = "bob@example.test"; m["To"] = "alice@example.test"; m["Subject"] = "smtplib ssl"
    m.set_content("hi alice\n")
    s.send_message(m)

with smtplib.SMTP("127.0.0.1", mx) as s:
    s.ehlo("py.test")
    try:
        s.sendmail("x@example.org", ["someone@elsewhere.org"], "Subject: relay\r\n\r\nx\r\n")
        sys.exit("relay accepted")
    except smtplib.SMTPRecipientsRefused as e:
        assert list(e.recipients.values())[0][0] == 554, e
print("ok")
"#;

#[tokio::test]
async fn python_smtplib() {
    shared::testing::require_tool("python3");
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw-alice", None).await;
    let bob = h.add_user("bob@example.test", "pw-bob", None).await;
    let cert = h.ctx.config.tls.cert_file.display().to_string();
    let out = run(Command::new("python3").args([
        "-c",
        SMTPLIB,
        &h.mx().port().to_string(),
        &h.submission().port().to_string(),
        &h.submissions().port().to_string(),
        &cert,
    ]))
    .await;
    assert!(out.contains("ok"), "{out}");
    let alices = h.inbox(alice).await;
    assert_eq!(alices.len(), 2);
    assert!(alices[0].contains("Subject: smtplib mx"), "{}", alices[0]);
    assert!(alices[1].contains("Subject: smtplib ssl"));
    assert!(h.inbox(bob).await[0].contains("Subject: smtplib starttls"));
}
