//! IMAP URLs (RFC 5092) as CATENATE names them (RFC 4469 §3): the absolute form
//! `imap://user@host/Mailbox;UIDVALIDITY=n/;UID=n/;SECTION=s/;PARTIAL=o.l` and the form relative
//! to the session, `/Mailbox;UIDVALIDITY=n/;UID=n...`. Only message references: a URL for a
//! mailbox list or a search, or one with URLAUTH (RFC 4467), is refused.

use percent_encoding::percent_decode_str;

/// A message, or a part of one, that a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageUrl {
    /// The user of an absolute URL (`enc-user`, percent-decoded); None for a relative URL.
    pub user: Option<String>,
    /// The mailbox name (UTF-8, RFC 5092 §3.2), percent-decoded.
    pub mailbox: String,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    /// The section spec (`1.MIME`, `HEADER`), percent-decoded; None for the whole message.
    pub section: Option<String>,
    /// `;PARTIAL=offset[.length]` (RFC 5092 §3.6).
    pub partial: Option<(u32, Option<u32>)>,
}

/// Parse `url`; Err says why it is not a message reference this server serves.
pub fn parse(url: &str) -> Result<MessageUrl, &'static str> {
    let (user, path) = match strip_prefix_ignore_case(url, "imap://") {
        Some(rest) => {
            let slash = rest.find('/').ok_or("no mailbox in the URL")?;
            let (server, path) = rest.split_at(slash);
            // iserver = [iuserinfo "@"] host [":" port]; iuserinfo = enc-user [";AUTH=" ...].
            let userinfo = server
                .rsplit_once('@')
                .map(|(userinfo, _)| userinfo)
                .ok_or("the URL names no user")?;
            let enc_user = userinfo.split(';').next().unwrap_or_default();
            if enc_user.is_empty() {
                return Err("the URL names no user");
            }
            (Some(decode(enc_user)?), path)
        }
        None => (None, url),
    };
    let path = path.strip_prefix('/').ok_or("a relative URL starts with /")?;
    // enc-mailbox has no raw ';' (RFC 5092 §9 achar): the first one starts the parameters.
    let params_at = path.find(';').ok_or("the URL names no UID")?;
    let (enc_mailbox, params) = path.split_at(params_at);
    let enc_mailbox = enc_mailbox.strip_suffix('/').unwrap_or(enc_mailbox);
    if enc_mailbox.is_empty() {
        return Err("the URL names no mailbox");
    }
    let mut parsed = MessageUrl {
        user,
        mailbox: decode(enc_mailbox)?,
        uidvalidity: None,
        uid: 0,
        section: None,
        partial: None,
    };
    // `;UIDVALIDITY=n`, then `/;UID=n`, `/;SECTION=s`, `/;PARTIAL=r`, each at most once, in
    // this order (RFC 5092 §9 imessagepart).
    let mut last = 0;
    for param in params.split(';').skip(1) {
        let param = param.strip_suffix('/').unwrap_or(param);
        let (key, value) = param.split_once('=').ok_or("a URL parameter without a value")?;
        let order = match key.to_ascii_uppercase().as_str() {
            "UIDVALIDITY" => {
                parsed.uidvalidity = Some(nz_number(value)?);
                1
            }
            "UID" => {
                parsed.uid = nz_number(value)?;
                2
            }
            "SECTION" => {
                parsed.section = Some(decode(value)?);
                3
            }
            "PARTIAL" => {
                parsed.partial = Some(match value.split_once('.') {
                    Some((offset, length)) => (number(offset)?, Some(nz_number(length)?)),
                    None => (number(value)?, None),
                });
                4
            }
            _ => return Err("a URL parameter this server does not serve (URLAUTH, EXPIRE...)"),
        };
        if order <= last {
            return Err("URL parameters out of order or repeated");
        }
        last = order;
    }
    if parsed.uid == 0 {
        return Err("the URL names no UID");
    }
    Ok(parsed)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn decode(s: &str) -> Result<String, &'static str> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "a percent-encoded part of the URL is not UTF-8")
}

fn number(s: &str) -> Result<u32, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a URL number is not a number");
    }
    s.parse().map_err(|_| "a URL number is out of range")
}

fn nz_number(s: &str) -> Result<u32, &'static str> {
    match number(s)? {
        0 => Err("a URL number must not be 0"),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute() {
        // RFC 4469 §5's example.
        let url = parse("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME").unwrap();
        assert_eq!(
            url,
            MessageUrl {
                user: None,
                mailbox: "Drafts".into(),
                uidvalidity: Some(385759045),
                uid: 20,
                section: Some("1.MIME".into()),
                partial: None,
            }
        );
        let url =
            parse("imap://alice%40example.test;AUTH=*@mail.example.test:143/Archive/2024%20Q1/;UID=7/;PARTIAL=10.20")
                .unwrap();
        assert_eq!(url.user.as_deref(), Some("alice@example.test"));
        assert_eq!(url.mailbox, "Archive/2024 Q1");
        assert_eq!((url.uidvalidity, url.uid, url.partial), (None, 7, Some((10, Some(20)))));
        let url = parse("/INBOX/;uid=3/;SECTION=HEADER.FIELDS%20(FROM)").unwrap();
        assert_eq!(url.section.as_deref(), Some("HEADER.FIELDS (FROM)"));
    }

    #[test]
    fn refused() {
        for bad in [
            "INBOX;UID=1",
            "/INBOX",
            "/;UID=1",
            "/INBOX/;UID=0",
            "/INBOX/;UID=1/;UID=2",
            "/INBOX/;UID=1;UIDVALIDITY=3",
            "/INBOX/;UID=1;URLAUTH=anonymous",
            "imap://host/INBOX/;UID=1",
            "imap://alice@host",
            "/INBOX/;UID=99999999999",
            "/%FF/;UID=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
