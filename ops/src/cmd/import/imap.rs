//! `tinydc import ADDRESS --imap HOST[:PORT] --user U --password-stdin [--tls|--starttls]`:
//! pull every folder of another IMAP server (Gmail with an app password, a provider, an old
//! Dovecot) into the account.
//!
//! The folders: LIST, the server's hierarchy delimiter shown as '/', \Noselect skipped, Gmail's
//! virtual folders skipped (RFC 6154 \All, \Important, \Flagged, or by name "[Gmail]/All Mail",
//! "Important", "Starred": their mail is also in INBOX, Sent or a label, and a star is the
//! \Flagged flag the other copies carry), \Sent, \Drafts, \Trash, \Junk (or Gmail's names for
//! them) into ours. One exception: on Gmail itself (X-GM-EXT-1), archived mail is in no folder
//! but All Mail, so All Mail is read for the messages whose X-GM-LABELS name no other folder,
//! and those go to Archive (nothing is stored twice, nothing archived is left behind). Each folder is EXAMINEd (read-only: nothing changes on the other server) and
//! its UIDVALIDITY noted; every message is keyed `UIDVALIDITY/UID` under the source
//! `imap:HOST/USER/FOLDER`, so a rerun, or a run resumed after a kill, downloads only what is
//! not stored yet. Messages come in batches of at most [`BATCH_MESSAGES`] or about
//! [`BATCH_BYTES`], one at a time into the importer; one larger than max_message_size is skipped
//! before download (by RFC822.SIZE) or while reading (a literal larger than that is dropped).

mod client;
mod proto;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use shared::size::format_size;

use super::{Importer, Incoming, to_crlf};
use client::{Options, Security, Session, Step};

/// At most this many UIDs in one UID FETCH.
const BATCH_MESSAGES: usize = 100;
/// About this many bytes in one UID FETCH (at least one message).
const BATCH_BYTES: u64 = 8 << 20;
/// The longest wait for the other server on any read or write.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What `--imap` and its companions say.
pub struct ImapSource {
    pub spec: String,
    pub user: String,
    pub password_stdin: bool,
    pub tls: bool,
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
}

/// The password: the first line of stdin with --password-stdin, else asked at a terminal.
fn read_password(from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password on the other server: ")?
    } else {
        bail!("no terminal to ask for the password: use --password-stdin");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

pub async fn import(importer: &mut Importer, source: &ImapSource) -> Result<()> {
    let security = if source.tls {
        Security::Tls
    } else if source.starttls {
        Security::StartTls
    } else {
        Security::Plain
    };
    let (host, port) = client::parse_host_port(&source.spec, security)?;
    if source.user.is_empty() {
        bail!("--imap needs --user (the user name on {host})");
    }
    let password = read_password(source.password_stdin)?;
    let options = Options {
        host: host.clone(),
        port,
        security,
        user: source.user.clone(),
        password,
        ca_file: source.ca_file.clone(),
        max_message_size: importer.max_message_size(),
        timeout: TIMEOUT,
    };
    // The importer's own wording, so the summary counts these under one reason.
    let too_big = format!(
        "larger than max_message_size ({})",
        format_size(options.max_message_size)
    );
    // The resume log's name of the account. Host names and (on the servers people move from)
    // user names ignore case: `IMAP.Gmail.com` and `imap.gmail.com` must not import twice.
    let account = format!("imap:{}/{}", host.to_lowercase(), options.user.to_lowercase());
    let mut session = Session::connect(&options).await?;
    let folders = session.folders().await.context("listing the folders")?;
    tracing::info!(host, folders = folders.len(), "import over IMAP: folders listed");

    // First what is there and what is new, so the quota check and the progress bar know the
    // size of the work; messages imported by an earlier run are not downloaded again.
    let mut plans = Vec::new();
    let mut total_bytes = 0;
    let mut total_messages = 0;
    for folder in &folders {
        let plan = session.plan(folder).await?;
        total_bytes += plan.messages.iter().map(|m| m.1).sum::<u64>();
        total_messages += plan.messages.len() as u64;
        plans.push(plan);
    }
    importer.set_total(Some(total_bytes), Some(total_messages));
    let mut work = Vec::new();
    let mut new_bytes = 0;
    for plan in plans {
        let source_name = format!("{account}/{}", plan.folder.remote);
        let mut todo = Vec::new();
        for &(uid, size) in &plan.messages {
            let key = format!("{}/{uid}", plan.uidvalidity);
            if importer.already_imported(&source_name, &key, size).await? {
                continue;
            }
            if size > options.max_message_size {
                importer.skip(&format!("{source_name} {key}"), &too_big, size);
                continue;
            }
            new_bytes += size;
            todo.push((uid, size));
        }
        work.push((plan, source_name, todo));
    }
    importer.check_quota(&account, new_bytes).await?;

    for (plan, source_name, todo) in work {
        if todo.is_empty() {
            continue;
        }
        // EXAMINE again to fetch; the keys hold only while UIDVALIDITY does (RFC 3501 2.3.1.1).
        let (uidvalidity, _) = session.examine(&plan.folder).await?;
        if uidvalidity != plan.uidvalidity {
            bail!(
                "{}: the server renumbered the folder (UIDVALIDITY changed) during the import; run \
                 the same command again",
                plan.folder.remote
            );
        }
        let sizes: std::collections::HashMap<u32, u64> = todo.iter().copied().collect();
        for batch_uids in batches(&todo) {
            let mut batch = session.fetch_batch(&batch_uids).await?;
            while let Some(step) = session.next(&mut batch).await? {
                match step {
                    Step::Message(m) => {
                        let size = sizes.get(&m.uid).copied().unwrap_or(m.raw.len() as u64);
                        let incoming = Incoming {
                            source: source_name.clone(),
                            key: format!("{}/{}", plan.uidvalidity, m.uid),
                            folders: vec![plan.folder.local.clone()],
                            flags: m.flags,
                            internal_date: m.internal_date,
                            raw: to_crlf(m.raw),
                            stored: None,
                        };
                        importer.add(incoming, size).await?;
                    }
                    Step::TooBig { uid, size } => {
                        importer.skip(&format!("{source_name} {}/{uid}", plan.uidvalidity), &too_big, size)
                    }
                    Step::Missing { uid } => importer.skip(
                        &format!("{source_name} {}/{uid}", plan.uidvalidity),
                        "the server did not return it (deleted meanwhile?)",
                        sizes.get(&uid).copied().unwrap_or(0),
                    ),
                }
                if importer.stopped().is_some() {
                    // Over quota or disk full: the summary says so; the connection just closes.
                    return Ok(());
                }
            }
        }
    }
    session.logout().await;
    Ok(())
}

/// UIDs in fetch batches: at most [`BATCH_MESSAGES`] and about [`BATCH_BYTES`] each.
fn batches(todo: &[(u32, u64)]) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for &(uid, size) in todo {
        if !current.is_empty() && (current.len() >= BATCH_MESSAGES || bytes + size > BATCH_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(uid);
        bytes += size;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded() {
        let todo: Vec<(u32, u64)> = (1..=250).map(|u| (u, 10)).collect();
        let b = batches(&todo);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![100, 100, 50]);
        let big = [(1, 5 << 20), (2, 5 << 20), (3, 20 << 20), (4, 1)];
        assert_eq!(batches(&big), vec![vec![1], vec![2], vec![3], vec![4]]);
        assert!(batches(&[]).is_empty());
    }
}
