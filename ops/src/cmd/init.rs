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

/// `tinydc init`'s arguments: [`InitArgs`] (which `tinydc up` also fills in) and the port choice.
#[derive(Args)]
pub struct InitCommand {
    #[command(flatten)]
    pub args: InitArgs,
    /// Listen on the standard ports (25, 587, 465, 143, 993, 443, and 80 for ACME HTTP-01)
    /// instead of the development ports (10025, 10587, ...). Binding them needs CAP_NET_BIND_SERVICE (the systemd unit gives it).
    #[arg(long)]
    pub production: bool,
}

/// The listeners `--production` moves to the standard ports: (key, development port, port).
/// RFC 5321 section 4.5.4.2 (25), RFC 6409 (587), RFC 8314 section 7.3 (465 and 993),
/// RFC 9051 (143), HTTPS (443).
const PRODUCTION_PORTS: [(&str, u16, u16); 6] = [
    ("mx_listen", 10025, 25),
    ("submission_listen", 10587, 587),
    ("submissions_listen", 10465, 465),
    ("listen", 10143, 143),
    ("tls_listen", 10993, 993),
    ("https_listen", 10443, 443),
];

/// The config file `tinydc init` writes.
pub fn config_text(
    domain: &str,
    hostname: Option<&str>,
    url: Option<&str>,
    production: bool,
) -> anyhow::Result<String> {
    let mut text = config::template(domain, url);
    if let Some(hostname) = hostname {
        text = text.replacen(
            &format!("hostname = \"{domain}\""),
            &format!("hostname = \"{hostname}\""),
            1,
        );
    }
    if production {
        for (key, dev, port) in PRODUCTION_PORTS {
            let from = format!("\n{key} = \"0.0.0.0:{dev}\"\n");
            if text.matches(&from).count() != 1 {
                bail!("the config template has no single `{key} = \"0.0.0.0:{dev}\"` line");
            }
            text = text.replacen(&from, &format!("\n{key} = \"0.0.0.0:{port}\"\n"), 1);
        }
        // Port 80 for the ACME CA's HTTP-01 check (RFC 8555 §8.3); opened only once
        // tls.acme_directory is set, so an install with certbot's files is not affected.
        let from = "\nacme_http_listen = \"\"\n";
        if text.matches(from).count() != 1 {
            bail!("the config template has no single `acme_http_listen = \"\"` line");
        }
        text = text.replacen(from, "\nacme_http_listen = \"0.0.0.0:80\"\n", 1);
    }
    Ok(text)
}

/// The names of `init`'s self-signed certificate: the host, the domain, Thunderbird's
/// autoconfig.<domain>, and localhost with the loopback addresses (IP SANs, RFC 5280 section
/// 4.2.1.6) so local clients can check it too.
pub fn certificate_names(hostname: &str, domain: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in [
        hostname.to_string(),
        domain.to_string(),
        format!("autoconfig.{domain}"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ] {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// `tinydc init` with the development ports.
pub async fn run(data: &Path, args: InitArgs) -> anyhow::Result<()> {
    run_command(
        data,
        InitCommand {
            args,
            production: false,
        },
    )
    .await
}

/// `tinydc init [--production]`.
pub async fn run_command(data: &Path, command: InitCommand) -> anyhow::Result<()> {
    let InitCommand { args, production } = command;
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
    let text = config_text(&domain, hostname.as_deref(), args.database_url.as_deref(), production)?;
    let result = create(&data, &domain, &text, args.database_url.as_deref()).await;
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
    if production {
        println!("  ports:       standard (25, 587, 465, 143, 993, 443; 80 for ACME once tls.acme_directory is set)");
    }
    println!("next: tinydc --data {} user add you@{domain}", data.display());
    println!("      tinydc --data {} up", data.display());
    Ok(())
}

async fn create(data: &Path, domain: &str, text: &str, url: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    if url.is_none() {
        check_reachable_by_postgres(data)?;
    }
    std::fs::write(data.join(CONFIG_FILE), text).context("writing the config")?;
    let config = Config::load(data)?;
    for dir in [config.blobs_dir(), config.files_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let names = certificate_names(&config.server.hostname, domain);
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
pub(crate) fn check_reachable_by_postgres(data: &Path) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_moves_every_listener_to_its_standard_port() {
        let dir = Path::new("/srv/tinydc");
        let dev = Config::parse(&config_text("example.org", None, None, false).unwrap(), dir).unwrap();
        assert_eq!(dev.smtp.mx_listen, Some("0.0.0.0:10025".parse().unwrap()));
        let text = config_text("example.org", Some("mail.example.org"), None, true).unwrap();
        let prod = Config::parse(&text, dir).unwrap();
        assert_eq!(prod.server.hostname, "mail.example.org");
        let port = |a: Option<std::net::SocketAddr>| a.map(|a| a.port());
        assert_eq!(port(prod.smtp.mx_listen), Some(25));
        assert_eq!(port(prod.smtp.submission_listen), Some(587));
        assert_eq!(port(prod.smtp.submissions_listen), Some(465));
        assert_eq!(port(prod.imap.listen), Some(143));
        assert_eq!(port(prod.imap.tls_listen), Some(993));
        assert_eq!(port(prod.dav.https_listen), Some(443));
        assert_eq!(prod.dav.http_listen, None);
        assert_eq!(port(prod.tls.acme_http_listen), Some(80));
        assert_eq!(dev.tls.acme_http_listen, None);
    }

    /// The example shipped in the Debian package is exactly what `init --production` writes.
    #[test]
    fn the_packaged_example_is_a_production_config() {
        let text = config_text("example.org", Some("mail.example.org"), None, true).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/tinydc.toml.example");
        if std::env::var_os("TINYDC_WRITE_EXAMPLE").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        assert!(
            std::fs::read_to_string(path).unwrap() == text,
            "{path} differs from the config template; after changing the template, rewrite it with \
             TINYDC_WRITE_EXAMPLE=1 cargo test -p tinydc-ops --bin tinydc the_packaged_example"
        );
    }

    #[test]
    fn certificate_names_without_duplicates() {
        assert_eq!(
            certificate_names("example.org", "example.org"),
            ["example.org", "autoconfig.example.org", "localhost", "127.0.0.1", "::1"]
        );
    }
}
