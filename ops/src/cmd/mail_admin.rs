//! Command-line shapes of `tinydc dkim`, `tinydc queue` and `tinydc dns`; the work is in
//! [`super::dkim`] and [`super::queue`].

use std::path::Path;

use clap::Subcommand;

use super::{dkim, queue};
use crate::admin::with_admin;

#[derive(Subcommand)]
pub enum DkimCommand {
    /// Make (or replace) the signing key of DOMAIN and print the DNS TXT record to publish.
    Generate {
        /// A mail domain served here.
        domain: String,
    },
    /// Print the TXT record of DOMAIN's current key.
    Show {
        /// A mail domain served here.
        domain: String,
    },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Outgoing messages waiting for delivery, oldest first.
    List,
    /// Try again now: one queued delivery by ID, or all with --all.
    Retry {
        /// The queue ID (from `tinydc queue list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every queued delivery.
        #[arg(long)]
        all: bool,
    },
    /// Drop a queued delivery without bouncing it.
    Delete {
        /// The queue ID (from `tinydc queue list`).
        id: i64,
    },
}

pub async fn dkim(data: &Path, command: DkimCommand) -> anyhow::Result<()> {
    with_admin(data, async |admin| match command {
        DkimCommand::Generate { domain } => dkim::generate(&admin.db, &domain).await,
        DkimCommand::Show { domain } => dkim::show(&admin.db, &domain).await,
    })
    .await
}

pub async fn queue(data: &Path, command: QueueCommand) -> anyhow::Result<()> {
    with_admin(data, async |admin| match command {
        QueueCommand::List => queue::list(&admin.db).await,
        QueueCommand::Retry { id, all } => {
            let which = match (id, all) {
                (Some(id), false) => queue::Which::One(id),
                _ => queue::Which::All,
            };
            let n = queue::retry(&admin.db, which).await?;
            println!("{n} delivery(ies) will be retried now");
            Ok(())
        }
        QueueCommand::Delete { id } => {
            queue::delete(&admin.db, id).await?;
            println!("deleted {id}");
            Ok(())
        }
    })
    .await
}

/// `tinydc dns DOMAIN`: every record to publish so that mail for DOMAIN reaches this server,
/// its outgoing mail passes SPF, DKIM and DMARC, and mail clients find their settings (the
/// records themselves are made by [`super::dns::records`]).
pub async fn dns(data: &Path, domain: &str) -> anyhow::Result<()> {
    let domain = shared::accounts::normalize_domain(domain)?;
    with_admin(data, async |admin| {
        if !shared::accounts::is_local_domain(&admin.db, &domain).await? {
            anyhow::bail!("domain {domain} is not served here (add it with `tinydc domain add {domain}`)");
        }
        let addresses = super::dns::Addresses::find(&admin.config);
        let dkim = super::dns::dkim_record(&admin.db, &domain).await?;
        for line in super::dns::records(&admin.config, &domain, &addresses, dkim) {
            println!("{line}");
        }
        Ok(())
    })
    .await
}
