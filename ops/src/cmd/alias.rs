//! `tinydc alias add|del|list`

use std::path::Path;

use clap::Subcommand;
use shared::accounts;

use crate::admin::with_admin;

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Deliver mail for ALIAS to one or more users. `@domain` makes a catch-all for the domain.
    Add {
        /// The alias address, or @domain for a catch-all.
        alias: String,
        /// The users who receive it.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove an alias, or only some of its targets.
    Del {
        /// The alias address, or @domain.
        alias: String,
        /// Only these targets (default: the whole alias).
        targets: Vec<String>,
    },
    /// List aliases and their targets.
    List,
}

pub async fn run(data: &Path, command: AliasCommand) -> anyhow::Result<()> {
    with_admin(data, async |admin| {
        match command {
            AliasCommand::Add { alias, targets } => {
                let source = accounts::add_alias(&admin.db, &alias, &targets).await?;
                println!("{source} -> {}", targets.join(", "));
            }
            AliasCommand::Del { alias, targets } => {
                accounts::delete_alias(&admin.db, &alias, &targets).await?;
                println!("removed");
            }
            AliasCommand::List => {
                for (source, targets) in accounts::list_aliases(&admin.db).await? {
                    println!("{source} -> {}", targets.join(", "));
                }
            }
        }
        Ok(())
    })
    .await
}
