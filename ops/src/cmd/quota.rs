//! `tinydc quota set|show|report|recalc`

use std::path::Path;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use shared::accounts;
use shared::blobs::BlobStore;
use shared::mailstore::MailStore;
use shared::quota::warn::{self, Outcome};
use shared::quota::{self, QuotaInfo};
use shared::size::{format_size, parse_size};

use crate::admin::with_admin;

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Set a user's limit for mail and files together: a size (500M, 1.5GiB, 2G, bytes) or `unlimited`.
    Set {
        /// The user's address.
        address: String,
        /// The limit, or `unlimited`.
        size: String,
    },
    /// Show a user's usage: mail, files, total, limit and percent.
    Show {
        /// The user's address.
        address: String,
    },
    /// Every user, fullest first, with a bar; users at or over 80% and 95% are marked.
    Report,
    /// Recount usage from what is stored (messages and files) and correct any difference.
    Recalc {
        /// Only this user (default: everyone).
        address: Option<String>,
    },
}

fn parse_limit(text: &str) -> anyhow::Result<Option<u64>> {
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    Ok(Some(parse_size(text)?))
}

fn limit_text(info: &QuotaInfo) -> String {
    info.limit.map(format_size).unwrap_or_else(|| "unlimited".into())
}

/// The mail store of the data directory, where quota warnings go.
fn mail_store(admin: &crate::admin::Admin) -> MailStore {
    let blobs = BlobStore::new(admin.config.blobs_dir()).with_min_free(admin.config.server.min_free_space);
    MailStore::new(admin.db.clone(), blobs)
}

/// Send (or re-arm) the quota warnings of `user_ids` after their limit or usage changed, and
/// say what was done.
async fn warn_after_change(admin: &crate::admin::Admin, user_ids: &[i64], address_of: impl Fn(i64) -> String) {
    match warn::check(&mail_store(admin), user_ids).await {
        Ok(done) => {
            for (id, outcome) in done {
                match outcome {
                    Outcome::Warned(level) => println!(
                        "{}: sent a warning to their INBOX (storage {}% full)",
                        address_of(id),
                        level.percent()
                    ),
                    Outcome::Rearmed => {}
                }
            }
        }
        Err(e) => eprintln!("warning: quota warnings not checked: {e}"),
    }
}

/// A 20-character bar: `[#####---------------]`.
fn bar(percent: Option<f64>) -> String {
    let filled = percent.map(|p| ((p / 5.0).round() as usize).min(20)).unwrap_or(0);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(20 - filled))
}

pub async fn run(data: &Path, command: QuotaCommand) -> anyhow::Result<()> {
    match &command {
        QuotaCommand::Set { address, size } => {
            accounts::normalize_address(address)?;
            parse_limit(size)?;
        }
        QuotaCommand::Show { address } | QuotaCommand::Recalc { address: Some(address) } => {
            accounts::normalize_address(address)?;
        }
        _ => {}
    }
    with_admin(data, async |admin| {
        let db = &admin.db;
        match command {
            QuotaCommand::Set { address, size } => {
                let limit = parse_limit(&size)?;
                let user = accounts::get_user(db, &address).await?;
                quota::set_limit(db, user.id, limit).await?;
                let info = quota::info(db, user.id).await?;
                println!(
                    "{}: limit {} ({} used)",
                    user.address,
                    limit_text(&info),
                    format_size(info.used())
                );
                if info.limit.is_some_and(|l| info.used() > l) {
                    println!("note: already over the new limit; new mail and uploads will be refused");
                }
                // A lower limit can cross a warning threshold, a higher one re-arms it.
                warn_after_change(admin, &[user.id], |_| user.address.clone()).await;
            }
            QuotaCommand::Show { address } => {
                let user = accounts::get_user(db, &address).await?;
                let info = quota::info(db, user.id).await?;
                println!("user:    {}", user.address);
                println!("mail:    {}", format_size(info.mail_bytes));
                println!("files:   {}", format_size(info.file_bytes));
                println!("total:   {}", format_size(info.used()));
                println!("limit:   {}", limit_text(&info));
                // Space promised to writes in progress (a dead writer's is released by recalc).
                println!("reserved: {}", format_size(info.reserved_bytes));
                match info.percent() {
                    Some(p) => println!("used:    {p:.1}% {}", bar(Some(p))),
                    None => println!("used:    - (no limit)"),
                }
            }
            QuotaCommand::Report => {
                let mut rows = Vec::new();
                for user in accounts::list_users(db).await? {
                    rows.push((user.address.clone(), quota::info(db, user.id).await?));
                }
                rows.sort_by(|a, b| {
                    let key = |i: &QuotaInfo| i.percent().unwrap_or(-1.0);
                    key(&b.1).total_cmp(&key(&a.1)).then_with(|| a.0.cmp(&b.0))
                });
                if rows.is_empty() {
                    println!("no users");
                }
                for (address, info) in rows {
                    let percent = info
                        .percent()
                        .map(|p| format!("{p:5.1}%"))
                        .unwrap_or_else(|| "    -".into());
                    // The same level the warnings and `tinydc doctor` use.
                    let mark = warn::level(&info).mark();
                    let line = format!(
                        "{address:<32} {} {percent} {:>10} of {:<10} {mark}",
                        bar(info.percent()),
                        format_size(info.used()),
                        limit_text(&info)
                    );
                    println!("{}", line.trim_end());
                }
            }
            QuotaCommand::Recalc { address } => {
                // Space still promised to writers whose process died (their owner lock is gone);
                // a running daemon's writes in progress keep theirs.
                let released = quota::release_stale(db).await?;
                println!("released {released} reservation(s) of writers no longer running");
                let users = match address {
                    Some(a) => vec![accounts::get_user(db, &a).await?],
                    None => accounts::list_users(db).await?,
                };
                let progress = ProgressBar::new(users.len() as u64);
                progress.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("valid progress template"),
                );
                let mut corrected = 0;
                for user in &users {
                    progress.set_message(user.address.clone());
                    let files = admin.config.files_dir().join(&user.address);
                    let recount = quota::recalc(db, user.id, &files).await?;
                    if recount.corrected() {
                        corrected += 1;
                        progress.println(format!(
                            "{}: mail {} -> {}, files {} -> {}",
                            user.address,
                            format_size(recount.mail_before),
                            format_size(recount.mail_after),
                            format_size(recount.files_before),
                            format_size(recount.files_after)
                        ));
                    }
                    progress.inc(1);
                }
                progress.finish_and_clear();
                println!("recounted {} user(s), corrected {corrected}", users.len());
                // A corrected usage may cross a warning threshold or fall below one.
                let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
                for chunk in ids.chunks(500) {
                    warn_after_change(admin, chunk, |id| {
                        users
                            .iter()
                            .find(|u| u.id == id)
                            .map(|u| u.address.clone())
                            .unwrap_or_default()
                    })
                    .await;
                }
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_bars() {
        assert_eq!(parse_limit("unlimited").unwrap(), None);
        assert_eq!(parse_limit("10MiB").unwrap(), Some(10 << 20));
        assert!(parse_limit("lots").is_err());
        assert_eq!(bar(Some(50.0)), format!("[{}{}]", "#".repeat(10), "-".repeat(10)));
        assert_eq!(bar(Some(250.0)), format!("[{}]", "#".repeat(20)));
        assert_eq!(bar(None), format!("[{}]", "-".repeat(20)));
    }
}
