//! The originator check of submission (RFC 5322 §3.6.2, RFC 6409 §8.1): a message has exactly one
//! `From` field and at most one `Sender` field (RFC 5322 §3.6 table), and every mailbox they
//! name must be one of the authenticated user's addresses.
//!
//! The header section is read twice, by the shared field iterator (`shared::header`) and by mail-parser
//! (which the mail store and IMAP's ENVELOPE use), and the stricter view wins: the field counts
//! are the larger of the two and every mailbox either finds must be the user's. A parser
//! differential (a field one reader sees and the other does not) can then only cause a refusal,
//! never a forged author that a mail client shows.

use mail_parser::{HeaderName, MessageParser};

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The originator fields are missing, repeated or unreadable (554 5.6.0).
    Malformed(String),
    /// A From or Sender mailbox is not one of the user's addresses (553 5.7.1).
    NotOwned(String),
}

/// One header field: its name (lower case, whitespace removed) and unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    value: String,
}

/// The header fields of `message`, up to the first empty line, as the shared field iterator
/// splits them (RFC 5322 §2.2, §2.2.3).
///
/// Lenient on purpose where readers differ, so that this scanner sees at least every field any
/// of them sees: whitespace inside a name is dropped (mail-parser reads `Fr om:` as `From`), a
/// line of only blanks does not end the section, a first line starting with a blank is a field,
/// and a line without a colon is skipped rather than ending the section. A CR or LF that is not
/// part of a CRLF pair makes lines ambiguous and is refused (RFC 5322 §2.2; DATA already refuses
/// them, BDAT does not).
fn fields(message: &[u8]) -> Result<Vec<Field>, Refusal> {
    let mut iter = shared::header::fields(message);
    let mut fields: Vec<Field> = Vec::new();
    for field in iter.by_ref() {
        let (Some(name), Some(value)) = (field.name(), field.unfolded()) else {
            continue;
        };
        let name: String = String::from_utf8_lossy(name)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        fields.push(Field { name, value });
    }
    if has_bare_cr_or_lf(&message[..iter.consumed()]) {
        return Err(Refusal::Malformed("bare CR or LF in the header section".into()));
    }
    Ok(fields)
}

/// Whether `bytes` hold a CR not followed by LF or an LF not preceded by CR.
fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

/// The addr-specs of a mailbox-list, address-list or group (RFC 5322 §3.4), as written (a
/// quoted local part keeps its quotes). Display names, comments and group names are skipped:
/// only what is inside `<>` (or a bare addr-spec) is an address. Encoded words (RFC 2047) may
/// only appear in display names and comments (RFC 2047 §5), so they never form an address here.
pub fn mailboxes(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    // The text outside angle brackets of the current mailbox, without blanks and comments.
    let mut bare = String::new();
    // The text inside angle brackets, once seen.
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut in_group = false;
    let mut chars = value.chars();

    fn finish(out: &mut Vec<String>, bare: &mut String, angle: &mut Option<String>) {
        let address = match angle.take() {
            // RFC 5322 §4.4 obs-route: `<@relay1,@relay2:user@host>`.
            Some(inside) => inside.rsplit_once(':').map_or(inside.clone(), |(_, a)| a.to_string()),
            None => std::mem::take(bare),
        };
        bare.clear();
        // RFC 5322 §4.4 obs-mbox-list: empty elements between commas are allowed.
        if !address.is_empty() {
            out.push(address);
        }
    }

    // Where the next address character goes.
    fn buffer<'a>(in_angle: bool, angle: &'a mut Option<String>, bare: &'a mut String) -> &'a mut String {
        if in_angle {
            angle.get_or_insert_with(String::new)
        } else {
            bare
        }
    }

    while let Some(c) = chars.next() {
        // Text after a complete angle address (other than blanks and comments) would be read
        // differently by different clients.
        if !in_angle && angle.is_some() && !matches!(c, '(' | ',' | ';') && !c.is_whitespace() {
            return Err("text after an angle address".into());
        }
        match c {
            // A comment (§3.2.2), possibly nested, with quoted-pairs.
            '(' => {
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        Some(_) => {}
                        None => return Err("unterminated comment".into()),
                    }
                }
            }
            // A quoted string (§3.2.4), kept with its quotes.
            '"' => {
                let buffer = buffer(in_angle, &mut angle, &mut bare);
                buffer.push('"');
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(escaped) => {
                                buffer.push('\\');
                                buffer.push(escaped);
                            }
                            None => return Err("unterminated quoted string".into()),
                        },
                        Some('"') => break,
                        Some(other) => buffer.push(other),
                        None => return Err("unterminated quoted string".into()),
                    }
                }
                buffer.push('"');
            }
            '<' if in_angle => return Err("nested '<'".into()),
            '<' => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            '>' => return Err("'>' without '<'".into()),
            ',' if !in_angle => finish(&mut out, &mut bare, &mut angle),
            // A group (§3.4): the display name before ':' is not an address.
            ':' if !in_angle => {
                if in_group {
                    return Err("nested group".into());
                }
                in_group = true;
                bare.clear();
            }
            ';' if !in_angle => {
                if !in_group {
                    return Err("';' outside a group".into());
                }
                finish(&mut out, &mut bare, &mut angle);
                in_group = false;
            }
            c if c.is_whitespace() => {}
            c => buffer(in_angle, &mut angle, &mut bare).push(c),
        }
    }
    if in_angle {
        return Err("unterminated '<'".into());
    }
    if in_group {
        return Err("unterminated group".into());
    }
    finish(&mut out, &mut bare, &mut angle);
    Ok(out)
}

/// What mail-parser (the mail store's and IMAP ENVELOPE's reader) sees: the number of From and
/// Sender fields and their mailboxes' addresses.
fn parser_view(message: &[u8]) -> (usize, usize, Vec<String>) {
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
        return (0, 0, Vec::new());
    };
    let (mut from, mut sender, mut addresses) = (0, 0, Vec::new());
    for header in parsed.headers() {
        match header.name {
            HeaderName::From => from += 1,
            HeaderName::Sender => sender += 1,
            _ => continue,
        }
        if let Some(list) = header.value.as_address() {
            addresses.extend(list.iter().filter_map(|a| a.address()).map(|a| a.trim().to_lowercase()));
        }
    }
    (from, sender, addresses)
}

/// Check the originator fields of a submitted message against the addresses the user may send
/// as. Returns the From mailboxes (lower case; the first one's domain picks the DKIM key).
pub fn check(message: &[u8], senders: &[String]) -> Result<Vec<String>, Refusal> {
    let fields = fields(message)?;
    let (parser_from, parser_sender, parser_addresses) = parser_view(message);
    let from_fields: Vec<&Field> = fields.iter().filter(|f| f.name == "from").collect();
    let sender_fields: Vec<&Field> = fields.iter().filter(|f| f.name == "sender").collect();
    // RFC 5322 §3.6: From exactly once, Sender at most once.
    let from_count = from_fields.len().max(parser_from);
    if from_count != 1 {
        return Err(Refusal::Malformed(format!(
            "the message has {from_count} From header fields, RFC 5322 3.6 requires exactly one"
        )));
    }
    let sender_count = sender_fields.len().max(parser_sender);
    if sender_count > 1 {
        return Err(Refusal::Malformed(format!(
            "the message has {sender_count} Sender header fields, RFC 5322 3.6 allows at most one"
        )));
    }
    let from = mailboxes(&from_fields[0].value)
        .map_err(|e| Refusal::Malformed(format!("unreadable From header field: {e}")))?;
    if from.is_empty() {
        return Err(Refusal::Malformed("the From header field names no mailbox".into()));
    }
    let mut all: Vec<String> = from.iter().map(|a| a.to_lowercase()).collect();
    if let Some(field) = sender_fields.first() {
        let sender =
            mailboxes(&field.value).map_err(|e| Refusal::Malformed(format!("unreadable Sender header field: {e}")))?;
        // RFC 5322 §3.6.2: Sender is a single mailbox.
        if sender.len() != 1 {
            return Err(Refusal::Malformed(
                "the Sender header field must name exactly one mailbox".into(),
            ));
        }
        all.extend(sender.iter().map(|a| a.to_lowercase()));
    }
    all.extend(parser_addresses);
    for address in &all {
        if !senders.iter().any(|s| s.eq_ignore_ascii_case(address)) {
            return Err(Refusal::NotOwned(address.clone()));
        }
    }
    Ok(from.iter().map(|a| a.to_lowercase()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine() -> Vec<String> {
        vec!["alice@example.test".into(), "ally@example.test".into()]
    }

    fn run(header: &str) -> Result<Vec<String>, Refusal> {
        check(
            format!("{header}\r\nSubject: s\r\n\r\nbody\r\nFrom: x@y\r\n").as_bytes(),
            &mine(),
        )
    }

    #[test]
    fn address_lists() {
        let ok = |v: &str, want: &[&str]| assert_eq!(mailboxes(v).unwrap(), want, "{v}");
        ok(" alice@example.test", &["alice@example.test"]);
        ok(" \"Alice, A.\" <alice@example.test>", &["alice@example.test"]);
        ok(" Alice (the <bob@example.test> one) <alice@x>", &["alice@x"]);
        ok(" alice@x (Alice), ,Bob <bob@y>", &["alice@x", "bob@y"]);
        ok(" friends: a@x, B <b@y>;, c@z", &["a@x", "b@y", "c@z"]);
        ok(" undisclosed-recipients:;", &[]);
        ok(" <@relay.example:alice@x>", &["alice@x"]);
        ok(" =?utf-8?q?Bob=40y?= <alice@x>", &["alice@x"]);
        ok(" \"a b\"@x", &["\"a b\"@x"]);
        for bad in [
            " <a@x",
            " a@x>",
            " \"a@x",
            " (a@x",
            " <a@x> b@y",
            " <a@x> <b@y>",
            " g: a@x",
            " a@x;",
        ] {
            assert!(mailboxes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn one_from_of_the_users_own() {
        assert_eq!(run("From: Alice <Alice@Example.test>").unwrap(), ["alice@example.test"]);
        assert_eq!(
            run("From: alice@example.test,\r\n ally@example.test\r\nSender: <alice@example.test>").unwrap(),
            ["alice@example.test", "ally@example.test"]
        );
    }

    #[test]
    fn several_or_no_from_fields() {
        assert!(matches!(run("To: a@b"), Err(Refusal::Malformed(_))));
        assert!(matches!(
            run("From: bob@example.test\r\nfrom: alice@example.test"),
            Err(Refusal::Malformed(_))
        ));
        // Whitespace before the colon (RFC 5322 §4.5.1 obs) and inside the name (mail-parser).
        assert!(matches!(
            run("FROM : bob@example.test\r\nFrom: alice@example.test"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            run("Fr om: bob@example.test\r\nFrom: alice@example.test"),
            Err(Refusal::Malformed(_))
        ));
        // After a line of blanks and after a line without a colon.
        assert!(matches!(
            run("From: alice@example.test\r\n \r\nFrom: bob@example.test"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            run("From: alice@example.test\r\nnot a field\r\nFrom: bob@example.test"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            run("From: alice@example.test\r\nSender: alice@example.test\r\nSender: alice@example.test"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(run("From: undisclosed:;"), Err(Refusal::Malformed(_))));
        assert!(matches!(
            run("From: alice@example.test\r\nSender: alice@example.test, ally@example.test"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            check(b"From: alice@example.test\nFrom: bob@example.test\r\n\r\n", &mine()),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn every_mailbox_must_be_the_users() {
        let not = |h: &str| matches!(run(h), Err(Refusal::NotOwned(_)));
        assert!(not("From: alice@example.test, bob@example.test"));
        assert!(not("From: friends: alice@example.test, bob@example.test;"));
        assert!(not("From: alice@example.test\r\nSender: Bob <bob@example.test>"));
        assert!(not("From: =?utf-8?b?YWxpY2U=?= <bob@example.test>"));
        assert!(not("From: (alice@example.test) bob@example.test"));
        assert!(not("From:\r\n\tbob@example.test"));
        assert!(not("From: alice"));
    }
}
