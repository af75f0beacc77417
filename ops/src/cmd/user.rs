//! `tinydc user add|passwd|del|list`

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use shared::accounts;
use shared::size::{format_size, parse_size};

use crate::admin::with_admin;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user (with the default mailboxes INBOX, Sent, Drafts, Trash, Junk, Archive).
    Add {
        /// The user's mail address, which is also the login.
        address: String,
        /// Storage limit for mail and files together (e.g. 500M, 1.5GiB, 2G; default unlimited).
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password.
    Passwd {
        /// The user's address.
        address: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user. Refused while they have mail or files, unless --purge.
    Del {
        /// The user's address.
        address: String,
        /// Delete their mail and files too.
        #[arg(long)]
        purge: bool,
    },
    /// List users with their usage and limit.
    List,
}

/// A password from stdin (`--password-stdin`) or typed twice at a terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the passwords do not match");
        }
        first
    } else {
        bail!("no terminal to ask for a password: use --password-stdin");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

pub async fn run(data: &Path, command: UserCommand) -> anyhow::Result<()> {
    // Check what can be checked before touching the database or asking for a password.
    match &command {
        UserCommand::Add { address, quota, .. } => {
            accounts::normalize_address(address)?;
            if let Some(q) = quota {
                parse_size(q)?;
            }
        }
        UserCommand::Passwd { address, .. } | UserCommand::Del { address, .. } => {
            accounts::normalize_address(address)?;
        }
        UserCommand::List => {}
    }
    with_admin(data, async |admin| {
        let db = &admin.db;
        match command {
            UserCommand::Add {
                address,
                quota,
                password_stdin,
            } => {
                let limit = quota.as_deref().map(parse_size).transpose()?;
                let address = accounts::normalize_address(&address)?;
                // Fail on a duplicate or unknown domain before asking for a password.
                if accounts::find_user(db, &address).await?.is_some() {
                    return Err(accounts::AccountError::DuplicateUser(address).into());
                }
                let password = read_password(password_stdin)?;
                let user = accounts::add_user(db, &address, &password, limit).await?;
                std::fs::create_dir_all(admin.config.files_dir().join(&user.address))?;
                println!(
                    "added {} (quota {})",
                    user.address,
                    limit.map(format_size).unwrap_or_else(|| "unlimited".into())
                );
            }
            UserCommand::Passwd {
                address,
                password_stdin,
            } => {
                accounts::get_user(db, &address).await?;
                let password = read_password(password_stdin)?;
                accounts::set_password(db, &address, &password).await?;
                println!("password changed");
            }
            UserCommand::Del { address, purge } => {
                let user = accounts::get_user(db, &address).await?;
                let files = admin.config.files_dir().join(&user.address);
                let file_bytes = shared::quota::tree_bytes(&files);
                if !purge && file_bytes > 0 {
                    bail!(
                        "user {} still has {} of files in {} (use --purge to delete them too)",
                        user.address,
                        format_size(file_bytes),
                        files.display()
                    );
                }
                let user = accounts::delete_user(db, &address, purge).await?;
                if files.exists() {
                    std::fs::remove_dir_all(&files)?;
                }
                println!("deleted {}", user.address);
            }
            UserCommand::List => {
                for user in accounts::list_users(db).await? {
                    let used = (user.mail_bytes + user.file_bytes).max(0) as u64;
                    let limit = user
                        .quota_limit
                        .map(|l| format_size(l as u64))
                        .unwrap_or_else(|| "unlimited".into());
                    println!("{:<40} {:>10} of {}", user.address, format_size(used), limit);
                }
            }
        }
        Ok(())
    })
    .await
}
