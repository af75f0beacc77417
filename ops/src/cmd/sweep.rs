//! `tinydc sweep`: remove message bodies nobody references any more and temp files left by
//! crashes. Safe while the daemons run: anything younger than the grace period is left alone.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use shared::blobs::BlobStore;
use shared::size::format_size;

use crate::admin::with_admin;

#[derive(Args)]
pub struct SweepArgs {
    /// Leave alone what became unreferenced (or was written) less than this many minutes ago.
    #[arg(long, default_value_t = 60)]
    grace_minutes: u64,
}

pub async fn run(data: &Path, args: SweepArgs) -> anyhow::Result<()> {
    with_admin(data, async |admin| {
        let store = BlobStore::new(admin.config.blobs_dir());
        let report = store
            .sweep(&admin.db, Duration::from_secs(args.grace_minutes * 60))
            .await?;
        println!(
            "removed {} unreferenced bodies ({}) and {} temp files",
            report.blobs_removed,
            format_size(report.bytes_freed),
            report.temp_files_removed
        );
        Ok(())
    })
    .await
}
