//! `tinydc doctor` on a healthy install and on broken ones. DNS questions go to a fake server on
//! 127.0.0.1 (or to a silent one), the smarthost is a listener on 127.0.0.1: nothing leaves
//! loopback.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::dns::{FakeDns, silent_resolver};
use common::{Suite, daemons_built, data_dir, ok, tinydc};

/// Replace the first `key = ...` line of the config.
fn set_config(data: &Path, key: &str, value: &str) {
    let path = data.join("tinydc.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("{key} = ");
    let at = text
        .lines()
        .position(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} in the config"));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[at] = format!("{key} = {value}");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// An installation for example.test with a user, a DKIM key, a public address and a smarthost
/// on `relay` (127.0.0.1).
fn install(data: &Path, relay: u16) {
    ok(
        data,
        &["init", "--domain", "example.test", "--hostname", "mail.example.test"],
        None,
    );
    set_config(data, "public_ipv4", "\"203.0.113.7\"");
    let text = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    let text = text.replace(
        "[smtp.routes]",
        &format!("[smtp.smarthost]\nhost = \"127.0.0.1\"\nport = {relay}\nsecurity = \"none\"\n\n[smtp.routes]"),
    );
    std::fs::write(data.join("tinydc.toml"), text).unwrap();
    ok(
        data,
        &["user", "add", "ann@example.test", "--password-stdin"],
        Some("a good long password\n"),
    );
    ok(data, &["quota", "set", "ann@example.test", "1G"], None);
    ok(data, &["dkim", "generate", "example.test"], None);
}

/// What `tinydc dns` says to publish, plus the reverse DNS of the public address.
fn published_zone(data: &Path) -> String {
    let mut zone = ok(data, &["dns", "example.test"], None);
    zone.push_str("7.113.0.203.in-addr.arpa. IN PTR mail.example.test.\n");
    zone
}

/// `tinydc doctor` with DNS questions sent to `resolver`; (exit code, stdout), and it must
/// finish in bounded time.
fn doctor(data: &Path, resolver: std::net::SocketAddr) -> (Option<i32>, String) {
    let started = Instant::now();
    let out: Output = tinydc(data, &["doctor", "--resolver", &resolver.to_string()], None);
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(elapsed < Duration::from_secs(60), "doctor took {elapsed:?}:\n{stdout}");
    eprintln!("--- doctor ({elapsed:?}, {:?}):\n{stdout}{stderr}", out.status.code());
    (out.status.code(), stdout)
}

fn has_line(report: &str, start: &str) -> bool {
    report.lines().any(|l| l.starts_with(start))
}

#[test]
fn doctor_on_a_healthy_install_then_with_the_daemons_stopped() {
    if !daemons_built() {
        return;
    }
    let (_dir, data) = data_dir();
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    install(&data, relay.local_addr().unwrap().port());
    let suite = Suite::start(&data);
    let dns = FakeDns::start(&published_zone(&data));

    // `up` names the WebDAV URL a client can reach: the bound address, not the host name.
    let webdav = format!("https://127.0.0.1:{}/", suite.ports.https);
    assert!(
        suite
            .banner
            .iter()
            .any(|l| l.starts_with("webdav") && l.ends_with(&webdav)),
        "{webdav} not in {:?}",
        suite.banner
    );
    let (code, report) = doctor(&data, dns.addr);
    assert_eq!(code, Some(0), "{report}");
    assert!(!has_line(&report, "fail"), "{report}");
    // The implicit-TLS ports get a whole handshake, see the certificate of tls.cert_file, and
    // leave no failed handshake in the daemons' logs.
    for port in [suite.ports.submissions, suite.ports.imaps, suite.ports.https] {
        assert!(
            report.lines().any(|l| l.starts_with("ok    listener ")
                && l.contains(&format!(
                    ":{port}: accepts connections (TLS, with the certificate in tls.cert_file)"
                ))),
            "{port}: {report}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    // Nor the suite's own connect-and-close checks of each port before (tests/common): a
    // client that closes without trying TLS has not failed a handshake.
    let log = suite.log.lock().unwrap().clone();
    assert!(!log.contains("TLS handshake failed"), "{log}");
    for port in suite.ports.all() {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok    listener ") && l.contains(&format!(":{port}: accepts connections"))),
            "{port}: {report}"
        );
    }
    for line in [
        "ok    certificate expiry: valid until",
        "ok    certificate names: covers mail.example.test, autoconfig.example.test",
        "warn  certificate issuer: self-signed",
        "ok    database: PostgreSQL",
        "ok    queue: empty",
        "ok    quotas: every user is under 80% of their limit",
        "ok    dns mail.example.test. A: published as expected",
        "ok    dns example.test. MX: published as expected",
        "ok    dns example.test. TXT: published as expected",
        "ok    dns _dmarc.example.test. TXT: published as expected",
        "ok    dns autoconfig.example.test. CNAME: published as expected",
        "ok    dns _imaps._tcp.example.test. SRV: published as expected",
        "ok    dns _submission._tcp.example.test. SRV: published as expected",
        "ok    reverse dns 203.0.113.7: names mail.example.test.",
        "ok    smarthost 127.0.0.1:",
    ] {
        assert!(has_line(&report, line), "{line:?} missing:\n{report}");
    }
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("ok    dns tinydc")
                && l.contains("._domainkey.example.test. TXT: published as expected")),
        "{report}"
    );

    // A DNS server that never answers: one warning, no hang, and nothing else is looked up.
    let silent = silent_resolver();
    let started = Instant::now();
    let (code, report) = doctor(&data, silent.local_addr().unwrap());
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(code, Some(0), "{report}");
    assert!(has_line(&report, "warn  dns: DNS server 127.0.0.1:"), "{report}");
    assert!(report.contains("did not answer"), "{report}");
    assert!(!report.contains("dns example.test. MX"), "{report}");

    // The daemons stopped: every listener fails, and so does doctor.
    suite.stop();
    let (code, report) = doctor(&data, dns.addr);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("fail  listener ")).count(),
        6,
        "{report}"
    );
    assert!(report.contains("fix: start tinydc"), "{report}");
}

#[test]
fn doctor_fails_on_an_expired_certificate_a_full_quota_and_wrong_dns() {
    let (_dir, data) = data_dir();
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    install(&data, relay.local_addr().unwrap().port());
    let zone = published_zone(&data);

    // A certificate that expired, for the right names (made with rcgen).
    let mut params = rcgen::CertificateParams::new(vec![
        "mail.example.test".to_string(),
        "autoconfig.example.test".to_string(),
    ])
    .unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(data.join("tls/cert.pem"), cert.pem()).unwrap();

    // Ann's 3 MiB of files against a 3 MiB limit; Bob at 5 of 6 MiB. (Each is also sent a quota
    // warning of about 1 KiB by `quota set`: counted, it changes no percent shown here.)
    ok(
        &data,
        &["user", "add", "bob@example.test", "--password-stdin"],
        Some("another long password\n"),
    );
    for (user, bytes, limit) in [("ann@example.test", 3 << 20, "3M"), ("bob@example.test", 5 << 20, "6M")] {
        let dir = data.join("files").join(user);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("big.bin"), vec![7u8; bytes]).unwrap();
        ok(&data, &["quota", "recalc", user], None);
        ok(&data, &["quota", "set", user, limit], None);
    }

    // DNS: the MX points elsewhere, and the SPF record is missing.
    let wrong: String = zone
        .lines()
        .filter(|l| !l.contains("v=spf1"))
        .map(|l| l.replace("IN MX 10 mail.example.test.", "IN MX 10 mx.elsewhere.test.") + "\n")
        .collect();
    let dns = FakeDns::start(&wrong);

    let (code, report) = doctor(&data, dns.addr);
    assert_eq!(code, Some(1), "{report}");
    for line in [
        "fail  certificate expiry: expired on 2021-01-01",
        "ok    certificate names: covers mail.example.test, autoconfig.example.test",
        "fail  quota ann@example.test: 100% used",
        "warn  quota bob@example.test: 83% used",
        "fail  dns example.test. MX: published 10 mx.elsewhere.test., expected 10 mail.example.test.",
        "fail  dns example.test. TXT: published nothing, expected \"v=spf1 mx -all\"",
        "ok    dns _imaps._tcp.example.test. SRV: published as expected",
    ] {
        assert!(has_line(&report, line), "{line:?} missing:\n{report}");
    }
    assert!(
        report.contains("fix: raise the limit (`tinydc quota set ann@example.test SIZE`)"),
        "{report}"
    );
    assert!(
        report.contains("fix: publish `example.test. IN MX 10 mail.example.test.`"),
        "{report}"
    );
    assert!(!has_line(&report, "fail  quota bob"), "{report}");

    // Without a smarthost, doctor tries port 25 of a big provider's MX, found through the
    // resolver: here the fake one, which sends it to 127.0.0.1.
    let text = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    let start = text.find("[smtp.smarthost]").unwrap();
    let end = text.find("[smtp.routes]").unwrap();
    std::fs::write(data.join("tinydc.toml"), format!("{}{}", &text[..start], &text[end..])).unwrap();
    let probe =
        format!("{zone}gmail.com. IN MX 5 gmail-smtp-in.l.google.com.\ngmail-smtp-in.l.google.com. IN A 127.0.0.1\n");
    let dns = FakeDns::start(&probe);
    let (_, report) = doctor(&data, dns.addr);
    assert!(
        has_line(&report, "fail  outbound port 25: 127.0.0.1:25 of gmail.com's MX")
            || has_line(
                &report,
                "ok    outbound port 25: reachable (127.0.0.1:25 of gmail.com's MX)"
            ),
        "{report}"
    );
    assert!(!has_line(&report, "ok    smarthost"), "{report}");
}
