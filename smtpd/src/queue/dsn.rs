//! Delivery status notifications (RFC 3464, in a multipart/report of RFC 6522) sent to the
//! sender when a message cannot be delivered. Bounces have the null sender, so they are never
//! bounced themselves (RFC 5321 §4.5.5).

use shared::Context;
use shared::accounts::{Recipient, resolve_recipient};
use shared::mailstore::DeliveryTarget;

use super::Entry;

/// Why a recipient failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Enhanced status code (RFC 3463), e.g. "5.1.1".
    pub status: String,
    /// What the remote server (or we) said.
    pub diagnostic: String,
}

/// The first enhanced status code (x.y.z with x 4 or 5) in a server's answer.
pub fn status_of(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ':')
        .find_map(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            (parts.len() == 3
                && (parts[0] == "4" || parts[0] == "5")
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())))
            .then(|| format!("5.{}.{}", parts[1], parts[2]))
        })
}

/// Build the DSN for one failed recipient.
pub fn build(hostname: &str, entry: &Entry, failure: &Failure, original: &[u8]) -> Vec<u8> {
    let boundary = format!("tinydc-dsn-{}", crate::deliver::new_id());
    let now = chrono::Utc::now().to_rfc2822();
    let headers_len = shared::mailstore::parsed::header_length(original);
    let original_headers = String::from_utf8_lossy(&original[..headers_len.min(original.len())]);
    let diagnostic: String = failure.diagnostic.chars().filter(|c| !c.is_control()).collect();
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {now}\r\n\
         Message-ID: <{id}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Your message to <{rcpt}> could not be delivered.\r\n\
         \r\n\
         {diagnostic}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         Arrival-Date: {arrival}\r\n\
         \r\n\
         Final-Recipient: rfc822; {rcpt}\r\n\
         Action: failed\r\n\
         Status: {status}\r\n\
         Diagnostic-Code: smtp; {diagnostic}\r\n\
         Last-Attempt-Date: {now}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         {original_headers}\r\n\
         --{boundary}--\r\n",
        sender = crate::deliver::header_safe(&entry.sender),
        id = crate::deliver::new_id(),
        rcpt = crate::deliver::header_safe(&entry.recipient),
        arrival = entry.created_at.to_rfc2822(),
        status = failure.status,
    )
    .into_bytes()
}

/// Send the DSN: straight into the mailbox of a local sender, else through the queue.
pub async fn bounce(ctx: &Context, entry: &Entry, failure: &Failure, original: &[u8]) -> anyhow::Result<()> {
    let hostname = &ctx.config.server.hostname;
    let mut message = b"Return-Path: <>\r\n".to_vec();
    let report = build(hostname, entry, failure, original);
    match resolve_recipient(&ctx.db, &entry.sender).await? {
        Recipient::Local(users) => {
            message.extend_from_slice(&report);
            let targets = users
                .iter()
                .map(|u| DeliveryTarget {
                    user_id: u.id,
                    mailbox_id: None,
                    reservation: None,
                })
                .collect();
            if let Err(e) = ctx.mail.deliver(targets, &message, &[], chrono::Utc::now()).await {
                // A full mailbox cannot take its own bounce; the failure is logged instead.
                tracing::warn!(sender = entry.sender, "bounce not stored: {e}");
            }
        }
        Recipient::Remote => super::enqueue(ctx, "", std::slice::from_ref(&entry.sender), &report, None).await?,
        Recipient::UnknownLocal => tracing::warn!(sender = entry.sender, "bounce to unknown local sender dropped"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn enhanced_status_from_a_reply() {
        assert_eq!(
            status_of("permanent error (550): 5.1.1 no such user").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(status_of("552 5.2.2 Mailbox full").as_deref(), Some("5.2.2"));
        assert_eq!(status_of("550 rejected, version 1.2.3"), None);
        assert_eq!(status_of("no code"), None);
    }
}
