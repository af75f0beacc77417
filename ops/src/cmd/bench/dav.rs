//! WebDAV over HTTPS on one keep-alive connection: PUT of one large file streamed from memory
//! (MB/s, counted once davd has answered, i.e. after its fsync), GET of it back, PUT of many
//! small files into a folder, and PROPFIND Depth 1 of that folder (ms, median of several).

use std::time::Instant;

use anyhow::{Context as _, bail};

use super::http::{Body, Https};
use super::suite::{DAV_USER, PASSWORD, Suite};
use super::{SuiteArgs, figure, median_ms};

const LARGE: &str = "/bench-large.bin";
const FOLDER: &str = "/bench-folder/";

pub async fn run(suite: &Suite, args: &SuiteArgs) -> anyhow::Result<()> {
    let mut dav = Https::connect(suite.addr_dav(), &suite.config.tls.cert_file, DAV_USER, PASSWORD).await?;

    // Incompressible bytes, so nothing on the way can make the transfer cheaper than it is.
    let chunk = noise(1 << 20);
    let started = Instant::now();
    let put = dav
        .request(
            "PUT",
            LARGE,
            &[("Content-Type", "application/octet-stream")],
            Body::Repeat {
                chunk: &chunk,
                length: args.put_size,
            },
            true,
        )
        .await
        .context("the large PUT")?;
    let elapsed = started.elapsed();
    expect_status("PUT of the large file", &put, &[201, 204])?;
    let stored = suite.config.files_dir().join(DAV_USER).join(&LARGE[1..]);
    let on_disk = std::fs::metadata(&stored)
        .with_context(|| format!("davd answered {} but {} is not there", put.status, stored.display()))?
        .len();
    if on_disk != args.put_size {
        bail!(
            "davd answered {} to a PUT of {} bytes but stored {on_disk}",
            put.status,
            args.put_size
        );
    }
    figure(
        &format!("dav    PUT of one {} file", shared::size::format_size(args.put_size)),
        format!("{:.0} MB/s", args.put_size as f64 / elapsed.as_secs_f64() / 1e6),
    );

    let started = Instant::now();
    let get = dav
        .request("GET", LARGE, &[], Body::Bytes(&[]), false)
        .await
        .context("the GET")?;
    let elapsed = started.elapsed();
    expect_status("GET of the large file", &get, &[200])?;
    if get.length != args.put_size {
        bail!(
            "davd sent {} bytes for a GET of a {}-byte file",
            get.length,
            args.put_size
        );
    }
    figure(
        "dav    GET of the same file",
        format!("{:.0} MB/s", args.put_size as f64 / elapsed.as_secs_f64() / 1e6),
    );

    let mkcol = dav.request("MKCOL", FOLDER, &[], Body::Bytes(&[]), true).await?;
    expect_status("MKCOL", &mkcol, &[201])?;
    let small = noise(args.small_size);
    let started = Instant::now();
    for n in 0..args.files {
        let path = format!("{FOLDER}file-{n:05}.txt");
        let put = dav
            .request(
                "PUT",
                &path,
                &[("Content-Type", "text/plain")],
                Body::Bytes(&small),
                true,
            )
            .await?;
        expect_status(&format!("PUT {path}"), &put, &[201, 204])?;
    }
    let elapsed = started.elapsed();
    figure(
        &format!(
            "dav    PUT of {} files of {} B, one after another",
            args.files, args.small_size
        ),
        format!("{:.0} files/s", args.files as f64 / elapsed.as_secs_f64()),
    );

    let mut samples = Vec::new();
    let mut size = 0;
    for _ in 0..args.repeat {
        let started = Instant::now();
        // No body: allprop (RFC 4918 section 9.1), every live property of every member.
        let listing = dav
            .request("PROPFIND", FOLDER, &[("Depth", "1")], Body::Bytes(&[]), true)
            .await?;
        samples.push(started.elapsed());
        expect_status("PROPFIND Depth 1", &listing, &[207])?;
        let responses = count_responses(&listing.body);
        if responses != args.files + 1 {
            bail!(
                "davd's PROPFIND Depth 1 of a folder of {} files has {responses} <response> elements (expected {})",
                args.files,
                args.files + 1
            );
        }
        size = listing.body.len();
    }
    figure(
        &format!("dav    PROPFIND Depth 1 (allprop) of {} files", args.files),
        format!("{:.1} ms", median_ms(&mut samples)),
    );
    println!(
        "       (median of {}; fastest {:.1} ms, slowest {:.1} ms; {:.0} KiB of XML)",
        args.repeat,
        samples[0].as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0,
        size as f64 / 1024.0
    );
    Ok(())
}

fn expect_status(what: &str, response: &super::http::Response, allowed: &[u16]) -> anyhow::Result<()> {
    if allowed.contains(&response.status) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&response.body[..response.body.len().min(300)]).to_string();
    bail!("davd answered {what} with {} {}", response.status, text.trim());
}

/// Closing `</response>` tags, whatever the namespace prefix.
pub(super) fn count_responses(xml: &[u8]) -> usize {
    let needle = b"response>";
    let mut count = 0;
    for i in 0..xml.len().saturating_sub(needle.len() - 1) {
        if &xml[i..i + needle.len()] != needle {
            continue;
        }
        let Some(open) = xml[..i].iter().rposition(|&b| b == b'<') else {
            continue;
        };
        let tag = &xml[open + 1..i];
        if tag == b"/" || (tag.starts_with(b"/") && tag.ends_with(b":") && !tag.contains(&b' ')) {
            count += 1;
        }
    }
    count
}

/// Deterministic bytes that do not compress (xorshift64).
pub(super) fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_with_any_prefix() {
        let xml = b"<D:multistatus><D:response><D:href>/a</D:href></D:response>\
                    <response><href>/b</href></response><x:responsedescription/></D:multistatus>";
        assert_eq!(count_responses(xml), 2);
        assert_eq!(noise(10).len(), 10);
    }
}
