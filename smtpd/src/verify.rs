//! Inbound authentication on the MX: SPF (RFC 7208) for the MAIL FROM (or HELO) domain, DKIM
//! (RFC 6376) signatures, DMARC (RFC 7489) alignment and policy, recorded in an
//! Authentication-Results header (RFC 8601).

use std::net::IpAddr;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DmarcResult, SpfResult};

use crate::dns::Dns;

/// What the checks concluded.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `Authentication-Results: ...` with its CRLF.
    pub header: String,
    /// DMARC failed and the domain's policy is reject.
    pub dmarc_reject: bool,
    /// DMARC failed with policy quarantine, or SPF failed.
    pub suspicious: bool,
}

impl Verdict {
    /// Results when the checks could not finish (RFC 8601 §2.7: temperror).
    pub fn temperror(hostname: &str) -> Verdict {
        Verdict {
            header: format!(
                "Authentication-Results: {hostname};\r\n\tdkim=temperror;\r\n\tspf=temperror;\r\n\tdmarc=temperror\r\n"
            ),
            dmarc_reject: false,
            suspicious: false,
        }
    }
}

/// Check one message received from `ip` that said `helo` and `MAIL FROM:<mail_from>`. The
/// message is parsed by the caller ([`AuthenticatedMessage::parse`] reads the whole message and
/// hashes its body, which belongs on the blocking pool, see `deliver.rs`); `None` when it could
/// not be parsed.
pub async fn verify(
    dns: &Dns,
    hostname: &str,
    ip: IpAddr,
    helo: &str,
    mail_from: &str,
    message: Option<&AuthenticatedMessage<'_>>,
) -> Verdict {
    let Some(msg) = message else {
        return Verdict {
            header: format!("Authentication-Results: {hostname}; none\r\n"),
            dmarc_reject: false,
            suspicious: false,
        };
    };
    let authenticator = match dns.authenticator() {
        Ok(authenticator) => authenticator,
        Err(why) => {
            dns.trouble("checking DKIM, SPF and DMARC", &why);
            return Verdict::temperror(hostname);
        }
    };
    let dkim = authenticator.verify_dkim(dns.params(msg)).await;
    let spf_params = if mail_from.is_empty() {
        SpfParameters::verify_ehlo(ip, helo, hostname)
    } else {
        SpfParameters::verify_mail_from(ip, helo, hostname, mail_from)
    };
    let spf = authenticator.verify_spf(dns.params(spf_params)).await;
    if spf.result() == SpfResult::TempError {
        // RFC 7208 §2.6.6: temperror is a DNS failure; said once a minute at most (Dns::trouble).
        dns.trouble(&format!("SPF check of {ip} for {mail_from:?}"), &"temporary DNS error");
    }
    let mail_from_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d).to_lowercase();
    let dmarc = authenticator
        .verify_dmarc(dns.params(DmarcParameters::new(msg, &dkim, &mail_from_domain, &spf)))
        .await;
    let header_from = msg.from.first().cloned().unwrap_or_default();
    let results = AuthenticationResults::new(hostname)
        .with_dkim_results(&dkim, &header_from)
        .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
        .with_dmarc_result(&dmarc);
    // RFC 7489 §6.6.2: pass when an aligned SPF or DKIM passes; a record without one fails.
    let failed = matches!(dmarc.result(), DmarcResult::Fail(_));
    let policy = dmarc.policy();
    Verdict {
        header: results.to_header(),
        dmarc_reject: failed && policy == Policy::Reject,
        suspicious: (failed && policy == Policy::Quarantine) || spf.result() == SpfResult::Fail,
    }
}

/// RFC 8601 §5: remove `Authentication-Results` fields that claim our authserv-id, so a sender
/// cannot forge results that look like ours. Only the header section is looked at.
pub fn strip_own_results(message: &[u8], authserv_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    // The fields are contiguous from the start: after the last one come the empty line and the
    // body, copied as they are.
    let mut end = 0;
    for field in shared::header::fields(message) {
        end += field.raw().len();
        if is_own_result(&field, authserv_id) {
            tracing::info!("removed a forged Authentication-Results field");
        } else {
            out.extend_from_slice(field.raw());
        }
    }
    out.extend_from_slice(&message[end..]);
    out
}

/// An Authentication-Results field whose authserv-id (RFC 8601 §2.2, the first word of the
/// unfolded value) is ours.
fn is_own_result(field: &shared::header::Field<'_>, authserv_id: &str) -> bool {
    if !field.is("authentication-results") {
        return false;
    }
    let value = field.unfolded().unwrap_or_default();
    let id = value.trim_start().split([';', ' ', '\t']).next().unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
}

#[cfg(test)]
mod tests {
    use super::strip_own_results;

    #[test]
    fn forged_results_are_removed() {
        let m = b"Authentication-Results: mx.example; dkim=pass\r\n\theader.d=bank.example\r\n\
                  Authentication-Results: other.example; spf=fail\r\n\
                  Subject: x\r\n\r\nAuthentication-Results: mx.example; in the body\r\n";
        let out = strip_own_results(m, "MX.example");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Authentication-Results: other.example; spf=fail\r\nSubject: x\r\n\r\n\
             Authentication-Results: mx.example; in the body\r\n"
        );
        assert_eq!(strip_own_results(b"Subject: y\r\n\r\nz", "a"), b"Subject: y\r\n\r\nz");
        // The authserv-id on a continuation line (folded right after the colon) is still ours.
        let folded = b"Authentication-Results:\r\n mx.example; dkim=pass\r\nSubject: x\r\n\r\nz";
        assert_eq!(strip_own_results(folded, "mx.example"), b"Subject: x\r\n\r\nz");
    }
}
