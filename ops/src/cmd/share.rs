//! `tinydc share ADDRESS PATH [--expires D]`, `tinydc share list [ADDRESS]`,
//! `tinydc share revoke ID`: read-only links to a person's file or folder (shared::shares).

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use shared::shares::{self, DEFAULT_EXPIRY};

use crate::admin::with_admin;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ShareArgs {
    #[command(subcommand)]
    command: Option<ShareCommand>,
    /// The user whose file or folder is shared.
    #[arg(required = true)]
    address: Option<String>,
    /// The file or folder inside their files (as seen over WebDAV), e.g. Photos/2024.
    #[arg(required = true)]
    path: Option<String>,
    /// How long the link works: 30m, 12h, 7d, 2w, or `never` (default: 7d).
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
}

#[derive(Subcommand)]
enum ShareCommand {
    /// List share links (of one user, when given) with their use.
    List {
        /// Only this user's links.
        address: Option<String>,
    },
    /// Remove a link: it stops working at once.
    Revoke {
        /// The link's ID, as `share list` shows it.
        id: i64,
    },
}

fn when(t: Option<DateTime<Utc>>, none: &str) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| none.to_string())
}

pub async fn run(data: &Path, args: ShareArgs) -> anyhow::Result<()> {
    with_admin(data, async |admin| {
        match args.command {
            Some(ShareCommand::List { address }) => {
                let links = shares::list(&admin.db, address.as_deref()).await?;
                if links.is_empty() {
                    println!("no share links");
                }
                let now = Utc::now();
                for l in links {
                    let expires = match l.expires_at {
                        Some(t) if t <= now => format!("expired {}", when(Some(t), "")),
                        t => format!("expires {}", when(t, "never")),
                    };
                    println!(
                        "{}  {}  {}{}  created {}  {}  accesses {}  last {}",
                        l.id,
                        l.address,
                        l.path,
                        if l.is_folder && l.path != "/" { "/" } else { "" },
                        when(Some(l.created_at), ""),
                        expires,
                        l.access_count,
                        when(l.last_access, "never"),
                    );
                }
            }
            Some(ShareCommand::Revoke { id }) => {
                let l = shares::revoke(&admin.db, id).await?;
                println!("revoked {} ({} {})", l.id, l.address, l.path);
            }
            None => {
                // Both are required by clap when no subcommand is given.
                let (Some(address), Some(path)) = (args.address, args.path) else {
                    anyhow::bail!("usage: tinydc share ADDRESS PATH [--expires DURATION]");
                };
                let expires = match args.expires.as_deref() {
                    Some(text) => shares::parse_expiry(text)?,
                    None => Some(DEFAULT_EXPIRY),
                };
                let link = shares::create(&admin.db, &admin.config.files_dir(), &address, &path, expires).await?;
                println!("{}", shares::url(&admin.config, &link));
                let what = if link.is_folder { "folder" } else { "file" };
                match link.expires_at {
                    Some(t) => eprintln!(
                        "share {}: read-only link to the {what} {}, until {} (revoke: tinydc share revoke {})",
                        link.id,
                        link.path,
                        when(Some(t), ""),
                        link.id
                    ),
                    None => eprintln!(
                        "share {}: read-only link to the {what} {}, with no expiry (revoke: tinydc share revoke {})",
                        link.id, link.path, link.id
                    ),
                }
            }
        }
        Ok(())
    })
    .await
}
