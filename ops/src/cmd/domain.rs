//! `tinydc domain add|list`

use std::path::Path;

use clap::Subcommand;
use shared::accounts;

use crate::admin::with_admin;

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Serve mail for another domain.
    Add {
        /// The domain, e.g. example.org.
        domain: String,
    },
    /// List the domains served here.
    List,
}

pub async fn run(data: &Path, command: DomainCommand) -> anyhow::Result<()> {
    with_admin(data, async |admin| {
        match command {
            DomainCommand::Add { domain } => {
                let name = accounts::add_domain(&admin.db, &domain).await?;
                println!("added domain {name}");
            }
            DomainCommand::List => {
                for name in accounts::list_domains(&admin.db).await? {
                    println!("{name}");
                }
            }
        }
        Ok(())
    })
    .await
}
