//! `tinydc init`: a new data directory with config, certificate, database and first domain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use shared::config::{self, CONFIG_FILE, Config};
use shared::pg::{Durability, PrivateCluster};

#[derive(Args)]
pub struct InitArgs {
    /// The first mail domain (users are name@DOMAIN).
    #[arg(long)]
    pub domain: String,
    /// Use this PostgreSQL server instead of a private cluster in DATA/pg.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The server's host name (default: the domain).
    #[arg(long)]
    pub hostname: Option<String>,
}

pub async fn run(data: &Path, args: InitArgs) -> anyhow::Result<()> {
    let domain = shared::accounts::normalize_domain(&args.domain)?;
    let hostname = args
        .hostname
        .as_deref()
        .map(shared::accounts::normalize_domain)
        .transpose()?;
    let data = std::path::absolute(data)?;
    if data.join(CONFIG_FILE).exists() {
        bail!(
            "{} is already a tinydc data directory; refusing to overwrite it",
            data.display()
        );
    }
    if data.join("pg").exists() {
        bail!(
            "{} already holds a PostgreSQL cluster (pg/); refusing to overwrite it",
            data.display()
        );
    }
    let created = !data.exists();
    let result = create(&data, &domain, hostname.as_deref(), args.database_url.as_deref()).await;
    if result.is_err() && created {
        // Leave nothing half-made behind, so the same command can simply be run again.
        let _ = std::fs::remove_dir_all(&data);
    }
    result?;
    println!("created {}", data.display());
    println!("  domain:      {domain}");
    println!(
        "  database:    {}",
        if args.database_url.is_some() {
            "external (database.url)"
        } else {
            "private PostgreSQL in pg/"
        }
    );
    println!("  certificate: tls/cert.pem (self-signed; replace with a real one for other machines)");
    println!("next: tinydc --data {} user add you@{domain}", data.display());
    println!("      tinydc --data {} up", data.display());
    Ok(())
}

async fn create(data: &Path, domain: &str, hostname: Option<&str>, url: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    if url.is_none() {
        check_reachable_by_postgres(data)?;
    }
    let mut text = config::template(domain, url);
    if let Some(hostname) = hostname {
        text = text.replacen(
            &format!("hostname = \"{domain}\""),
            &format!("hostname = \"{hostname}\""),
            1,
        );
    }
    std::fs::write(data.join(CONFIG_FILE), text).context("writing the config")?;
    let config = Config::load(data)?;
    for dir in [config.blobs_dir(), config.files_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut names = vec![
        config.server.hostname.clone(),
        domain.to_string(),
        "localhost".to_string(),
    ];
    names.dedup();
    shared::tls::generate_self_signed(&names, &config.tls.cert_file, &config.tls.key_file)?;

    let cluster = match url {
        Some(_) => None,
        None => {
            let cluster = PrivateCluster::new(&config.pg_dir())?;
            cluster.init(Durability::Full)?;
            Some(cluster)
        }
    };
    let schema = async {
        let db = shared::db::connect(&config, Duration::from_secs(15)).await?;
        match shared::accounts::add_domain(&db, domain).await {
            Ok(_) | Err(shared::accounts::AccountError::DuplicateDomain(_)) => {}
            Err(e) => return Err(e.into()),
        }
        db.close().await;
        anyhow::Ok(())
    }
    .await;
    if let Some(cluster) = cluster {
        cluster.stop()?;
    }
    schema
}

/// When root, the private cluster runs as the `postgres` user, which must be able to enter every
/// folder above the data directory. Say so clearly instead of letting initdb fail obscurely.
fn check_reachable_by_postgres(data: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(run_as) = shared::pg::RunAs::for_postgres()? else {
        return Ok(());
    };
    let mut dir: Option<PathBuf> = data.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let meta = std::fs::metadata(&d).with_context(|| format!("reading {}", d.display()))?;
        let mode = meta.mode();
        let reachable = mode & 0o001 != 0
            || (meta.uid() == run_as.uid && mode & 0o100 != 0)
            || (meta.gid() == run_as.gid && mode & 0o010 != 0);
        if !reachable {
            bail!(
                "PostgreSQL runs as the postgres user, which cannot enter {} (mode {:o}); \
                 choose a data directory elsewhere (e.g. /srv/tinydc) or `chmod o+x {}`",
                d.display(),
                mode & 0o7777,
                d.display()
            );
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Ok(())
}
