//! Going live: `tinydc init --production`, `tinydc dns`, the certificate `init` makes, the
//! systemd unit and log output without colour codes.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TINYDC, data_dir, ok};

/// Replace the `key = ...` line of the config (the first one).
fn set_config(data: &Path, key: &str, value: &str) {
    let path = data.join("tinydc.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("{key} = ");
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if !done && line.starts_with(&prefix) {
                done = true;
                format!("{key} = {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(done, "no {key} in the config");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn init_production_uses_standard_ports_and_dns_prints_every_record() {
    let (_dir, data) = data_dir();
    ok(
        &data,
        &[
            "init",
            "--production",
            "--domain",
            "example.test",
            "--hostname",
            "mail.example.test",
        ],
        None,
    );
    let config = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    for line in [
        "mx_listen = \"0.0.0.0:25\"",
        "submission_listen = \"0.0.0.0:587\"",
        "submissions_listen = \"0.0.0.0:465\"",
        "listen = \"0.0.0.0:143\"",
        "tls_listen = \"0.0.0.0:993\"",
        "https_listen = \"0.0.0.0:443\"",
        "http_listen = \"\"",
        "acme_http_listen = \"0.0.0.0:80\"",
    ] {
        assert!(config.lines().any(|l| l == line), "{line} missing from:\n{config}");
    }
    set_config(&data, "public_ipv4", "\"203.0.113.7\"");
    set_config(&data, "public_ipv6", "\"2001:db8::7\"");

    let expected = |dkim: &str| {
        format!(
            "; records for example.test (mail host mail.example.test)\n\
             ; IPv4 address from the config (server.public_ipv4)\n\
             mail.example.test. IN A 203.0.113.7\n\
             ; IPv6 address from the config (server.public_ipv6)\n\
             mail.example.test. IN AAAA 2001:db8::7\n\
             example.test. IN MX 10 mail.example.test.\n\
             example.test. IN TXT \"v=spf1 mx -all\"\n\
             {dkim}\n\
             _dmarc.example.test. IN TXT \"v=DMARC1; p=quarantine; adkim=s; aspf=s\"\n\
             autoconfig.example.test. IN CNAME mail.example.test.\n\
             ; mail client service records (RFC 6186), implicit TLS preferred (RFC 8314)\n\
             _imaps._tcp.example.test. IN SRV 0 1 993 mail.example.test.\n\
             _submissions._tcp.example.test. IN SRV 0 1 465 mail.example.test.\n\
             _imap._tcp.example.test. IN SRV 10 1 143 mail.example.test.\n\
             _submission._tcp.example.test. IN SRV 10 1 587 mail.example.test.\n"
        )
    };
    let no_key = "; no DKIM key yet: run `tinydc dkim generate example.test` and publish its record";
    assert_eq!(ok(&data, &["dns", "example.test"], None), expected(no_key));

    ok(&data, &["dkim", "generate", "example.test"], None);
    let key = ok(&data, &["dkim", "show", "example.test"], None);
    let key = key.trim();
    assert!(
        key.starts_with("tinydc") && key.contains("._domainkey.example.test. IN TXT \"v=DKIM1; k=rsa; p="),
        "{key}"
    );
    assert_eq!(ok(&data, &["dns", "EXAMPLE.test"], None), expected(key));

    // A listener turned off is published as "not offered" (RFC 6186 section 4).
    set_config(&data, "listen", "\"\"");
    let out = ok(&data, &["dns", "example.test"], None);
    assert!(out.contains("\n_imap._tcp.example.test. IN SRV 0 0 0 .\n"), "{out}");
    assert!(
        out.contains("\n_imaps._tcp.example.test. IN SRV 0 1 993 mail.example.test.\n"),
        "{out}"
    );
}

#[test]
fn plain_init_keeps_the_development_ports() {
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    let config = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    for line in [
        "mx_listen = \"0.0.0.0:10025\"",
        "tls_listen = \"0.0.0.0:10993\"",
        "https_listen = \"0.0.0.0:10443\"",
    ] {
        assert!(config.lines().any(|l| l == line), "{line} missing from:\n{config}");
    }
    // The SRV records follow the configured ports.
    let out = ok(&data, &["dns", "example.test"], None);
    assert!(
        out.contains("\n_imaps._tcp.example.test. IN SRV 0 1 10993 example.test.\n"),
        "{out}"
    );
}

#[test]
fn init_certificate_names_autoconfig_and_the_loopback_addresses() {
    use rustls::client::danger::ServerCertVerifier as _;
    use x509_parser::prelude::*;
    let (_dir, data) = data_dir();
    ok(
        &data,
        &["init", "--domain", "example.test", "--hostname", "mail.example.test"],
        None,
    );
    let pem = std::fs::read(data.join("tls/cert.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    for name in &cert.subject_alternative_name().unwrap().unwrap().value.general_names {
        match name {
            GeneralName::DNSName(n) => dns_names.push(n.to_string()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                n => panic!("an IP SAN of {n} bytes"),
            }),
            other => panic!("unexpected name {other:?}"),
        }
    }
    assert_eq!(
        dns_names,
        [
            "mail.example.test",
            "example.test",
            "autoconfig.example.test",
            "localhost"
        ]
    );
    assert_eq!(
        ips,
        ["127.0.0.1".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]
    );

    // And a TLS client that trusts the certificate accepts it for each of those names.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem.contents.clone().into()).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
        .build()
        .unwrap();
    let end_entity = rustls_pki_types::CertificateDer::from(pem.contents.clone());
    for name in ["127.0.0.1", "::1", "autoconfig.example.test", "mail.example.test"] {
        let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&end_entity, &[], &server_name, &[], rustls_pki_types::UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = rustls_pki_types::ServerName::try_from("10.0.0.1").unwrap();
    assert!(
        verifier
            .verify_server_cert(&end_entity, &[], &other, &[], rustls_pki_types::UnixTime::now())
            .is_err()
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit_file = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/tinydc.service");
    let unit = std::fs::read_to_string(unit_file).unwrap();
    for directive in [
        "User=tinydc",
        "ExecStart=/usr/bin/tinydc up",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/tinydc",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "Restart=on-failure",
        "StandardError=journal",
        "ConditionPathExists=/var/lib/tinydc/tinydc.toml",
        "RequiresMountsFor=/var/lib/tinydc",
    ] {
        assert!(
            unit.lines().any(|l| l == directive),
            "{directive} missing from {unit_file}"
        );
    }
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze is not installed: install the Debian package `systemd` to run this test");

    // verify checks that ExecStart exists: point it at the tinydc just built.
    let dir = tempfile::tempdir().unwrap();
    let verify = |text: &str| {
        let path = dir.path().join("tinydc.service");
        std::fs::write(
            &path,
            text.replace("ExecStart=/usr/bin/tinydc up", &format!("ExecStart={TINYDC} up")),
        )
        .unwrap();
        let out = Command::new(analyze).arg("verify").arg(&path).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let (success, said) = verify(&unit);
    assert!(
        success && said.trim().is_empty(),
        "systemd-analyze verify {unit_file}:\n{said}"
    );
    // The check can fail: a misspelt directive is reported (verify exits 0 on it, hence the
    // empty-output check above).
    let (_, said) = verify(&unit.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"));
    assert!(said.contains("NoNewPrivilege"), "{said}");
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    let out = Command::new(TINYDC)
        .arg("--data")
        .arg(&data)
        .arg("status")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() > 2, "expected debug log lines: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log written to a pipe: {stderr}"
    );
}

#[test]
fn the_package_maintainer_scripts_are_valid_shell() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/debian");
    for script in ["postinst", "prerm", "postrm"] {
        let path = Path::new(dir).join(script);
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n") && text.contains("set -e"), "{script}");
        // Nothing is started at install: the service needs `tinydc init` first.
        assert!(
            !text.contains("systemctl start") && !text.contains("systemctl enable"),
            "{script}"
        );
    }
}

/// postinst run for real with every command it may call replaced by a logging stand-in on
/// PATH: on `configure` it creates the `tinydc` system user (when getent does not know it) and
/// the data directory, and it starts, enables or restarts nothing (issue #10: nothing runs
/// before `tinydc init`). Nothing on this machine is changed.
#[test]
fn the_postinst_creates_the_system_user_and_starts_nothing() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/debian/postinst");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = dir.path().join("calls");
    for tool in [
        "adduser",
        "getent",
        "install",
        "systemctl",
        "deb-systemd-invoke",
        "invoke-rc.d",
        "useradd",
    ] {
        // getent knows no one: the user is missing, so postinst must make it.
        let status = if tool == "getent" { 2 } else { 0 };
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit {status}\n",
                calls.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for action in ["configure", "abort-upgrade"] {
        let _ = std::fs::remove_file(&calls);
        let out = Command::new("sh")
            .arg(script)
            .arg(action)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(&calls).unwrap_or_default();
        for line in log.lines() {
            let starts = line.starts_with("deb-systemd-invoke")
                || line.starts_with("invoke-rc.d")
                || (line.starts_with("systemctl") && line != "systemctl daemon-reload");
            assert!(!starts, "{action}: postinst starts or enables something: {line}\n{log}");
        }
        if action == "configure" {
            let adduser = log
                .lines()
                .find(|l| l.starts_with("adduser "))
                .unwrap_or_else(|| panic!("postinst configure made no user:\n{log}"));
            for arg in [
                "--system",
                "--group",
                "--home /var/lib/tinydc",
                "--shell /usr/sbin/nologin",
                "tinydc",
            ] {
                assert!(adduser.contains(arg), "{arg} missing: {adduser}");
            }
        } else {
            assert!(!log.contains("adduser"), "{action}: {log}");
        }
    }
}
