//! `tinydc status`

use std::path::Path;

use shared::Config;
use shared::pg::PrivateCluster;

use crate::admin::with_admin;

pub async fn run(data: &Path) -> anyhow::Result<()> {
    let config = Config::load(data)?;
    println!("data:      {}", config.data_dir.display());
    println!("domain:    {}", config.server.domain);
    if config.uses_private_cluster() {
        let cluster = PrivateCluster::new(&config.pg_dir())?;
        match cluster.running_pid() {
            Some(pid) => println!("database:  private PostgreSQL, running (pid {pid})"),
            None => println!("database:  private PostgreSQL, stopped"),
        }
    } else {
        println!("database:  external (database.url)");
    }
    let show = |name: &str, addr: Option<std::net::SocketAddr>| match addr {
        Some(a) => println!("{name:<10} {a}"),
        None => println!("{name:<10} off"),
    };
    show("smtp-mx:", config.smtp.mx_listen);
    show("submit:", config.smtp.submission_listen);
    show("submits:", config.smtp.submissions_listen);
    show("imap:", config.imap.listen);
    show("imaps:", config.imap.tls_listen);
    show("https:", config.dav.https_listen);
    with_admin(data, async |admin| {
        let users = shared::accounts::list_users(&admin.db).await?.len();
        let domains = shared::accounts::list_domains(&admin.db).await?;
        println!("users:     {users}");
        println!("domains:   {}", domains.join(", "));
        Ok(())
    })
    .await
}
