//! Content hashes of files (ownCloud's checksums, as rclone's `owncloud` and `nextcloud`
//! vendors read them): SHA-1 and MD5 of every file davd writes, computed while the bytes are
//! written (no second read of the file): beside the writer, each on its own thread, for an
//! upload ([`StreamHash`]); by the writer itself for a COPY ([`HashingWriter`]).
//!
//! Where they live: a dead property of the file in davd's reserved namespace [`NS`]
//! (props.rs), so it follows the file through MOVE, COPY, DELETE, the journal and
//! backup/restore exactly like the other properties. Clients can neither see nor set it
//! (props.rs refuses PROPPATCH in that namespace; allprop leaves it out). It is written in the
//! transaction that places the file (fs/commit.rs), so a PUT that overwrites replaces it.
//!
//! Never a wrong hash: the stored value carries the size and modification time of the file it
//! was computed for ([`Stamp`]), and is offered only while the file still has both. A file
//! changed behind davd's back, a restore of a file newer than its dump, or a file written
//! before hashes existed is simply offered without one. davd's own changes of a file's time
//! (Windows' Win32 times, PROPPATCH of getlastmodified) move the stamp along (fs/properties.rs).
//!
//! Offered as ownCloud does: `OC-Checksum: SHA1:<hex>` on the PUT answer and on GET/HEAD, and
//! `oc:checksums` (`SHA1:<hex> MD5:<hex>`) in PROPFIND when asked for by name. A PUT carrying
//! `OC-Checksum` is checked against the body it brought and refused with 400 if it differs.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use bytes::Bytes;
use dav_server::fs::DavProp;
use md5::{Digest, Md5};
use sha1::Sha1;

use crate::stage::Stage;

/// davd's reserved namespace for the stored hash (a dead property clients never see or set).
pub const NS: &str = "urn:x-tinydc:content-hash";
/// The stored hash's property name in [`NS`].
pub const NAME: &str = "sha1-md5";
/// ownCloud's namespace, of `oc:checksums`.
pub const OC_NS: &str = "http://owncloud.org/ns";

/// SHA-1 and MD5 of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentHash {
    pub sha1: [u8; 20],
    pub md5: [u8; 16],
}

impl ContentHash {
    /// The value of an `OC-Checksum` header: one checksum, as ownCloud sends it (clients
    /// read the header as one `TYPE:value`).
    pub fn header_value(&self) -> String {
        format!("SHA1:{}", hex::encode(self.sha1))
    }

    /// The text of `oc:checksum`: every algorithm, space separated (ownCloud's form).
    pub fn checksums_text(&self) -> String {
        format!("SHA1:{} MD5:{}", hex::encode(self.sha1), hex::encode(self.md5))
    }

    /// The live property `oc:checksums`, as PROPFIND shows it.
    pub fn oc_checksums_xml(&self) -> Vec<u8> {
        format!(
            "<oc:checksums xmlns:oc=\"{OC_NS}\"><oc:checksum>{}</oc:checksum></oc:checksums>",
            self.checksums_text()
        )
        .into_bytes()
    }
}

/// A writer that hashes everything it writes on to `inner`: the one way a file's hash is made.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    sha1: Sha1,
    md5: Md5,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            sha1: Sha1::new(),
            md5: Md5::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The writer and the hash of what went through it.
    pub fn finish(self) -> (W, ContentHash) {
        let hash = ContentHash {
            sha1: self.sha1.finalize().into(),
            md5: self.md5.finalize().into(),
        };
        (self.inner, hash)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Only what the inner writer took is hashed.
        let n = self.inner.write(buf)?;
        self.sha1.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-1 and MD5 of a stream (an upload's body), each on its own thread ([`Stage`]) beside
/// the thread writing the file: together on the writer they cost a PUT two thirds of its
/// speed, since MD5 alone runs at about the speed a large PUT arrives over loopback.
#[derive(Debug)]
pub struct StreamHash {
    sha1: Stage<Sha1>,
    md5: Stage<Md5>,
}

impl StreamHash {
    pub fn start() -> StreamHash {
        StreamHash {
            sha1: Stage::spawn(Sha1::new(), |h: &mut Sha1, buf| {
                h.update(buf);
                Ok(())
            }),
            md5: Stage::spawn(Md5::new(), |h: &mut Md5, buf| {
                h.update(buf);
                Ok(())
            }),
        }
    }

    /// Hash `buf` next (shared, not copied). Waits while both threads are [`crate::stage::DEPTH`]
    /// buffers behind.
    pub async fn update(&self, buf: &Bytes) -> std::io::Result<()> {
        if self.sha1.push(buf.clone()).await && self.md5.push(buf.clone()).await {
            Ok(())
        } else {
            Err(std::io::Error::other("a hashing thread stopped"))
        }
    }

    /// The hash of everything given to [`StreamHash::update`].
    pub async fn finish(self) -> std::io::Result<ContentHash> {
        let sha1 = self.sha1.finish().await?;
        let md5 = self.md5.finish().await?;
        Ok(ContentHash {
            sha1: sha1.finalize().into(),
            md5: md5.finalize().into(),
        })
    }
}

/// What identifies the content a hash was computed for: the file's size and modification time
/// (to the nanosecond). A rename keeps both; a restore from backup keeps both (snapshot.rs
/// copies the time); any rewrite of the content changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// A hash as stored: the hash and the stamp of the file it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub hash: ContentHash,
    pub stamp: Stamp,
}

impl Stored {
    /// The dead property that keeps it (namespace [`NS`]).
    pub fn to_prop(&self) -> DavProp {
        let xml = format!(
            "<h:{NAME} xmlns:h=\"{NS}\" size=\"{}\" mtime=\"{}.{:09}\">{}</h:{NAME}>",
            self.stamp.size,
            self.stamp.mtime_sec,
            self.stamp.mtime_nsec,
            self.hash.checksums_text()
        );
        DavProp {
            name: NAME.to_string(),
            prefix: Some("h".to_string()),
            namespace: Some(NS.to_string()),
            xml: Some(xml.into_bytes()),
        }
    }

    /// Read back what [`Stored::to_prop`] wrote; `None` for anything else.
    pub fn from_xml(xml: &[u8]) -> Option<Stored> {
        let text = std::str::from_utf8(xml).ok()?;
        let attr = |name: &str| {
            let start = text.find(&format!(" {name}=\""))? + name.len() + 3;
            let len = text[start..].find('"')?;
            Some(&text[start..start + len])
        };
        let size = attr("size")?.parse().ok()?;
        let (sec, nsec) = attr("mtime")?.split_once('.')?;
        let open_end = text.find('>')? + 1;
        let close = text[open_end..].find('<')? + open_end;
        let mut sha1 = None;
        let mut md5 = None;
        for part in text[open_end..close].split(' ') {
            match parse_claim(part) {
                Some(Claim::Sha1(h)) => sha1 = Some(h),
                Some(Claim::Md5(h)) => md5 = Some(h),
                _ => {}
            }
        }
        Some(Stored {
            hash: ContentHash { sha1: sha1?, md5: md5? },
            stamp: Stamp {
                size,
                mtime_sec: sec.parse().ok()?,
                mtime_nsec: nsec.parse().ok()?,
            },
        })
    }

    /// The hash, if it belongs to the file whose metadata is `meta`.
    pub fn for_file(&self, meta: &std::fs::Metadata) -> Option<ContentHash> {
        (meta.is_file() && Stamp::of(meta) == self.stamp).then_some(self.hash)
    }
}

/// Whether `prop` is in davd's reserved namespace.
pub fn is_reserved(prop: &DavProp) -> bool {
    prop.namespace.as_deref() == Some(NS)
}

/// Whether `prop` is ownCloud's `oc:checksums`.
pub fn is_oc_checksums(prop: &DavProp) -> bool {
    prop.namespace.as_deref() == Some(OC_NS) && prop.name == "checksums"
}

/// The stored-hash property to look up (no value).
pub fn stored_prop_name() -> DavProp {
    DavProp {
        name: NAME.to_string(),
        prefix: None,
        namespace: Some(NS.to_string()),
        xml: None,
    }
}

/// One checksum a client claims for a body (`OC-Checksum: TYPE:hex`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Sha1([u8; 20]),
    Md5([u8; 16]),
    /// A type davd does not compute (ownCloud's ADLER32, ...): not checked.
    Other(String),
}

impl Claim {
    /// Whether `hash` agrees with this claim (an unchecked type always does).
    pub fn matches(&self, hash: &ContentHash) -> bool {
        match self {
            Claim::Sha1(h) => *h == hash.sha1,
            Claim::Md5(h) => *h == hash.md5,
            Claim::Other(_) => true,
        }
    }
}

fn parse_claim(text: &str) -> Option<Claim> {
    let (kind, value) = text.split_once(':')?;
    let kind = kind.trim();
    let value = value.trim();
    let decode = |n: usize| {
        let bytes = hex::decode(value).ok()?;
        (bytes.len() == n).then_some(bytes)
    };
    if kind.eq_ignore_ascii_case("SHA1") {
        decode(20).and_then(|b| b.try_into().ok()).map(Claim::Sha1)
    } else if kind.eq_ignore_ascii_case("MD5") {
        decode(16).and_then(|b| b.try_into().ok()).map(Claim::Md5)
    } else if !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric()) && !value.is_empty() {
        Some(Claim::Other(kind.to_ascii_uppercase()))
    } else {
        None
    }
}

/// Most checksums one `OC-Checksum` header may carry.
const MAX_CLAIMS: usize = 8;

/// The checksums of a PUT's `OC-Checksum` header (`TYPE:hex`, several separated by spaces).
/// `None` when the header is not of that form (the PUT is refused with 400).
pub fn parse_header(value: &[u8]) -> Option<Vec<Claim>> {
    let text = std::str::from_utf8(value).ok()?;
    let claims: Vec<Claim> = text.split_ascii_whitespace().map(parse_claim).collect::<Option<_>>()?;
    (!claims.is_empty() && claims.len() <= MAX_CLAIMS).then_some(claims)
}

/// What happened to content hashes during one request, for server.rs to answer with: set by
/// the file system (fs/), read after dav-server answered.
#[derive(Debug, Default)]
pub struct Note {
    /// The checksums the client sent with its PUT.
    claims: Vec<Claim>,
    outcome: Mutex<Outcome>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No hash to tell (not a file, or none stored for it).
    #[default]
    Unknown,
    /// The hash of the file written (PUT) or read (GET/HEAD).
    Known(ContentHash),
    /// The PUT's body did not match the client's `OC-Checksum`: nothing was stored.
    Mismatch,
}

impl Note {
    pub fn with_claims(claims: Vec<Claim>) -> Note {
        Note {
            claims,
            outcome: Mutex::new(Outcome::Unknown),
        }
    }

    /// Whether `hash` agrees with every checksum the client claimed.
    pub fn claims_match(&self, hash: &ContentHash) -> bool {
        self.claims.iter().all(|c| c.matches(hash))
    }

    pub fn set(&self, outcome: Outcome) {
        *self.outcome.lock().expect("checksum note lock") = outcome;
    }

    pub fn outcome(&self) -> Outcome {
        *self.outcome.lock().expect("checksum note lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(data: &[u8]) -> ContentHash {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(data).unwrap();
        let (out, hash) = w.finish();
        assert_eq!(out, data);
        hash
    }

    #[test]
    fn the_writer_hashes_what_it_writes() {
        let h = hash_of(b"abc");
        assert_eq!(hex::encode(h.sha1), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex::encode(h.md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(h.header_value(), "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[tokio::test]
    async fn the_threaded_hash_equals_the_writer_s() {
        // Pieces of uneven sizes, as a body arrives.
        let data: Vec<u8> = (0..3_000_017u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let stream = StreamHash::start();
        for piece in data.chunks(65_521) {
            stream.update(&Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(stream.finish().await.unwrap(), hash_of(&data));
        assert_eq!(StreamHash::start().finish().await.unwrap(), hash_of(b""));
    }

    #[test]
    fn a_stored_hash_reads_back_and_nothing_else_does() {
        let stored = Stored {
            hash: hash_of(b"hello"),
            stamp: Stamp {
                size: 5,
                mtime_sec: 1_700_000_000,
                mtime_nsec: 42,
            },
        };
        let prop = stored.to_prop();
        assert!(is_reserved(&prop));
        assert_eq!(Stored::from_xml(prop.xml.as_deref().unwrap()), Some(stored));
        assert_eq!(Stored::from_xml(b"<h:sha1-md5 size=\"5\">SHA1:00</h:sha1-md5>"), None);
        assert_eq!(Stored::from_xml(b"\xff"), None);
    }

    #[test]
    fn oc_checksum_headers_are_read_strictly() {
        let sha1 = "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d";
        let h = hash_of(b"abc");
        let claims = parse_header(sha1.as_bytes()).unwrap();
        assert!(claims.iter().all(|c| c.matches(&h)));
        let both = parse_header(b"md5:900150983CD24FB0D6963F7D28E17F72 SHA1:a9993e364706816aba3e25717850c26c9cd0d89d")
            .unwrap();
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|c| c.matches(&h)));
        assert!(!parse_header(b"SHA1:a9993e364706816aba3e25717850c26c9cd0d89e").unwrap()[0].matches(&h));
        assert_eq!(
            parse_header(b"ADLER32:024d0127").unwrap(),
            vec![Claim::Other("ADLER32".into())]
        );
        for bad in [
            "",
            "SHA1",
            "SHA1:zz",
            "SHA1:a999",
            "MD5:",
            ":abc",
            "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d00",
        ] {
            assert_eq!(parse_header(bad.as_bytes()), None, "{bad:?}");
        }
        let many = ["MD5:900150983cd24fb0d6963f7d28e17f72"; MAX_CLAIMS + 1].join(" ");
        assert_eq!(parse_header(many.as_bytes()), None);
    }
}
