//! Entry points shared by the fuzz targets (imapd/fuzz) and a quick in-tree smoke run, so
//! the targets always compile against the current parser.

use crate::wire::parse::SectionText;

/// Parse `data` as a command; also its tag and a mailbox name in modified UTF-7.
pub fn command(data: &[u8]) {
    let _ = super::parse::parse_command(data);
    let _ = super::parse::peek_tag(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(decoded) = super::mutf7::decode(text)
    {
        let _ = super::mutf7::encode(&decoded);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = super::imap_url::parse(text);
    }
}

/// Frame `data` line by line.
pub fn framing(data: &[u8]) {
    let mut rest = data;
    while let Some(end) = super::frame::line_end(rest) {
        let _ = super::frame::literal_at_end(&rest[..end]);
        rest = &rest[end..];
    }
    let _ = super::frame::literal_at_end(rest);
}

/// Walk a section of `data` as a message; the first byte chooses the path and kind.
pub fn mime_section(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let part: Vec<u32> = (0..(selector & 3))
        .map(|i| u32::from((selector >> (2 + i)) & 3) + 1)
        .collect();
    let text = match selector >> 6 {
        0 => SectionText::Full,
        1 => SectionText::Header,
        2 => SectionText::Text,
        _ => SectionText::Mime,
    };
    let _ = crate::fetch::mime::section(message, &part, &text);
    let _ = crate::fetch::binary::section(message, &part);
    let header = crate::fetch::mime::split(message).header;
    let _ = crate::fetch::mime::filter_header(header, &["subject".into(), "from".into()], selector & 1 == 0);
}

#[cfg(test)]
mod tests {
    /// A cheap deterministic mutation run over sample commands (the real fuzzing is in
    /// imapd/fuzz): no input may panic or hang.
    #[test]
    fn smoke() {
        let samples: &[&[u8]] = &[
            b"a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To)])\r\n",
            b"a SEARCH CHARSET UTF-8 OR (FROM x SINCE 1-Feb-2020) NOT 1:3 HEADER X-A {3}\r\nabc\r\n",
            b"a APPEND INBOX (\\Seen) \"24-Nov-2026 10:00:00 +0100\" {5+}\r\nhello\r\n",
            b"a STORE 1,2:4 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen)\r\n",
            b"a LIST (SPECIAL-USE) \"\" * RETURN (SPECIAL-USE)\r\n",
            b"a CREATE Entw&APw-rfe (USE (\\Drafts))\r\n",
            b"a FETCH 1 (BINARY.PEEK[1.2]<0.10> BINARY.SIZE[3])\r\n",
            b"a APPEND INBOX CATENATE (URL \"/INBOX;UIDVALIDITY=3/;UID=2/;SECTION=1.MIME\" TEXT {2+}\r\nhi)\r\n",
            b"imap://a%40b@h:143/Box/Sub;UIDVALIDITY=1/;UID=2/;SECTION=HEADER/;PARTIAL=1.5",
            b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC=\r\n--q\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3D=\r\n--q--\r\n",
            b"From: a@b\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\nx\r\n--q--\r\n",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for sample in samples {
            for _ in 0..2000 {
                let mut data = sample.to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let r = next();
                    let pos = (r as usize >> 8) % data.len().max(1);
                    match r % 4 {
                        0 if !data.is_empty() => data[pos] = (r >> 32) as u8,
                        1 if !data.is_empty() => {
                            data.remove(pos);
                        }
                        2 => data.insert(
                            pos.min(data.len()),
                            b"(){}[]<>\"\\*%:,.~+0 \r\n"[(r >> 40) as usize % 20],
                        ),
                        _ => data.truncate(pos),
                    }
                }
                super::command(&data);
                super::framing(&data);
                super::mime_section(&data);
            }
        }
    }
}
