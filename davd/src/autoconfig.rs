//! Thunderbird autoconfig (the "clientConfig" v1.1 format): served without authentication at
//! `/.well-known/autoconfig/mail/config-v1.1.xml` and, for the `autoconfig.<domain>` host,
//! `/mail/config-v1.1.xml`, so a person sets up mail with only an address and a password.
//! It describes the configured IMAP (implicit TLS, then STARTTLS) and SMTP submission
//! (implicit TLS, then STARTTLS) listeners under `server.hostname`.

use shared::Config;

use crate::xmldoc::escape;

pub const WELL_KNOWN_PATH: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";
pub const HOST_PATH: &str = "/mail/config-v1.1.xml";

/// Whether a request path asks for the autoconfig document.
pub fn is_autoconfig_path(path: &str) -> bool {
    path == WELL_KNOWN_PATH || path == HOST_PATH
}

fn server(kind: &str, element: &str, host: &str, port: u16, socket: &str) -> String {
    format!(
        "    <{element} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      <port>{port}</port>\n      \
         <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      \
         <username>%EMAILADDRESS%</username>\n    </{element}>\n"
    )
}

/// The document for the mail domains `domains` (the first one names the provider).
pub fn document(config: &Config, domains: &[String]) -> String {
    let host = escape(&config.server.hostname);
    let first = domains.first().cloned().unwrap_or_else(|| config.server.domain.clone());
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n");
    xml.push_str(&format!("  <emailProvider id=\"{}\">\n", escape(&first)));
    for domain in domains {
        xml.push_str(&format!("    <domain>{}</domain>\n", escape(domain)));
    }
    xml.push_str(&format!(
        "    <displayName>{0}</displayName>\n    <displayShortName>{0}</displayShortName>\n",
        escape(&first)
    ));
    if let Some(addr) = config.imap.tls_listen {
        xml.push_str(&server("imap", "incomingServer", &host, addr.port(), "SSL"));
    }
    if let Some(addr) = config.imap.listen {
        xml.push_str(&server("imap", "incomingServer", &host, addr.port(), "STARTTLS"));
    }
    if let Some(addr) = config.smtp.submissions_listen {
        xml.push_str(&server("smtp", "outgoingServer", &host, addr.port(), "SSL"));
    }
    if let Some(addr) = config.smtp.submission_listen {
        xml.push_str(&server("smtp", "outgoingServer", &host, addr.port(), "STARTTLS"));
    }
    xml.push_str("  </emailProvider>\n</clientConfig>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_configured_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[server]\nhostname = \"mail.example.test\"\ndomain = \"example.test\"\n\
             [imap]\nlisten = \"0.0.0.0:143\"\ntls_listen = \"0.0.0.0:993\"\n\
             [smtp]\nsubmission_listen = \"0.0.0.0:587\"\nsubmissions_listen = \"0.0.0.0:465\"\n",
            dir.path(),
        )
        .unwrap();
        let xml = document(&config, &["example.test".into(), "b&b.test".into()]);
        assert!(xml.contains("<domain>b&amp;b.test</domain>"));
        let quoted = document(&config, &["a\"b.test".into()]);
        assert!(quoted.contains("<emailProvider id=\"a&quot;b.test\">"));
        assert!(xml.contains("<hostname>mail.example.test</hostname>"));
        let imaps = xml.find("<port>993</port>").unwrap();
        let imap = xml.find("<port>143</port>").unwrap();
        assert!(imaps < imap, "implicit TLS is offered first");
        assert!(xml.contains("<port>465</port>\n      <socketType>SSL</socketType>"));
        assert!(xml.contains("<port>587</port>\n      <socketType>STARTTLS</socketType>"));
        assert!(xml.contains("<username>%EMAILADDRESS%</username>"));
    }
}
