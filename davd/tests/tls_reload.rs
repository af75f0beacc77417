//! Certificates picked up without a restart (issue #10 item 1): imapd, smtpd and davd run
//! in-process on one data directory; the certificate and key files are replaced as certbot or an
//! ACME client would (written beside, renamed into place), and a new TLS connection to each
//! daemon gets the new certificate while a connection opened before the swap keeps working.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Dav;
use shared::Context;
use shared::net::Shutdown;
use shared::testing::certs;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

/// One line, within a few seconds.
async fn line<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> String {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("a line in time")
        .expect("read a line");
    line
}

/// An SMTP reply's last line (`NNN text`).
async fn smtp_reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> String {
    loop {
        let l = line(r).await;
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return l;
        }
    }
}

/// The status line of one HTTP/1.1 request on `r` (the server closes after it).
async fn http_status<S: AsyncRead + tokio::io::AsyncWrite + Unpin>(r: &mut BufReader<S>) -> String {
    r.get_mut()
        .write_all(b"OPTIONS / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let status = line(r).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut rest))
        .await
        .expect("the response in time")
        .expect("read the response");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_reaches_new_connections_of_every_daemon_and_old_ones_keep_working() {
    let dav = Dav::start(None).await;
    let env = &dav.env;
    let config = env.context.config.clone();
    let shutdown = Shutdown::new();
    let imap_ctx = Context::new((*config).clone(), env.context.db.clone()).await.unwrap();
    let listeners = tinydc_imapd::bind(&imap_ctx).await.unwrap();
    let imaps = listeners.tls_addr().unwrap();
    tokio::spawn(tinydc_imapd::serve(imap_ctx.clone(), listeners, shutdown.clone()));
    let smtp_ctx = Context::new((*config).clone(), env.context.db.clone()).await.unwrap();
    let dns = Arc::new(tinydc_smtpd::dns::Dns::fixed());
    let (bound, _smtp_task) = tinydc_smtpd::start(smtp_ctx, dns, shutdown.clone()).await.unwrap();
    let submissions = bound.submissions.unwrap();
    let https = dav.addr;

    let old = certs::current(&config);
    let trust_old = certs::client(std::slice::from_ref(&old));
    let (imap_old, seen) = certs::connect(imaps, &trust_old).await;
    assert_eq!(seen, old);
    let mut imap_old = BufReader::new(imap_old);
    assert!(line(&mut imap_old).await.starts_with("* OK"));
    let (smtp_old, seen) = certs::connect(submissions, &trust_old).await;
    assert_eq!(seen, old);
    let mut smtp_old = BufReader::new(smtp_old);
    assert!(smtp_reply(&mut smtp_old).await.starts_with("220 "));
    let (dav_old, seen) = certs::connect(https, &trust_old).await;
    assert_eq!(seen, old);
    let mut dav_old = BufReader::new(dav_old);

    let new = certs::replace_pair(&config, &["localhost", "renewed.example.test"]);
    assert_ne!(new, old);
    tokio::time::sleep(certs::RELOAD_WAIT).await;

    // New connections: the new certificate, from every daemon.
    let trust_both = certs::client(&[old.clone(), new.clone()]);
    for (daemon, addr) in [("imapd", imaps), ("smtpd", submissions), ("davd", https)] {
        let (mut conn, seen) = certs::connect(addr, &trust_both).await;
        assert!(
            seen == new,
            "{daemon} still presents the old certificate to a new connection"
        );
        let _ = conn.shutdown().await;
    }
    // A client trusting only the new certificate gets through too, and speaks to the server.
    let (dav_new, _) = certs::connect(https, &certs::client(std::slice::from_ref(&new))).await;
    let status = http_status(&mut BufReader::new(dav_new)).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");

    // The connections opened before the swap still work.
    imap_old.get_mut().write_all(b"a1 NOOP\r\n").await.unwrap();
    let answer = line(&mut imap_old).await;
    assert!(answer.starts_with("a1 OK"), "{answer}");
    smtp_old.get_mut().write_all(b"NOOP\r\n").await.unwrap();
    let answer = smtp_reply(&mut smtp_old).await;
    assert!(answer.starts_with("250"), "{answer}");
    let status = http_status(&mut dav_old).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    assert_eq!(
        dav_old.get_ref().get_ref().1.peer_certificates().unwrap()[0],
        old,
        "an open connection keeps its certificate"
    );

    // A broken replacement is refused and the working certificate kept.
    std::fs::write(config.tls.cert_file.with_extension("swap"), b"not a certificate").unwrap();
    std::fs::rename(config.tls.cert_file.with_extension("swap"), &config.tls.cert_file).unwrap();
    tokio::time::sleep(certs::RELOAD_WAIT).await;
    for (daemon, addr) in [("imapd", imaps), ("smtpd", submissions), ("davd", https)] {
        let (_conn, seen) = certs::connect(addr, &trust_both).await;
        assert!(seen == new, "{daemon} dropped its certificate for a broken file");
    }
    shutdown.cancel();
    dav.stop().await;
}
