//! `tinydc bench store`: deliveries straight through the shared mail store (no daemon, no
//! socket), from several writers at once, as smtpd and imapd do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::Config;
use shared::mailstore::DeliveryTarget;
use shared::pg::{Durability, PrivateCluster};

fn message(n: usize, size: usize) -> Vec<u8> {
    let mut raw = format!(
        "From: bench@example.test\r\nTo: alice@example.test\r\nSubject: bench {n}\r\nMessage-ID: <{n}@bench>\r\n\r\n"
    )
    .into_bytes();
    while raw.len() < size {
        raw.extend_from_slice(format!("line {n} of a benchmark message body\r\n").as_bytes());
    }
    raw
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

pub(super) async fn store(messages: usize, writers: usize, size: usize) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("tinydc-bench-").tempdir_in("/tmp")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(dir.path().join(shared::config::CONFIG_FILE), "")?;
    let config = Config::load(dir.path())?;
    let cluster = PrivateCluster::new(&config.pg_dir())?;
    cluster.init(Durability::Full)?;
    let result = async {
        let context = shared::Context::open(config, Duration::from_secs(15)).await?;
        shared::accounts::add_domain(&context.db, "example.test").await?;
        let user = shared::accounts::add_user(&context.db, "alice@example.test", "bench", None).await?;
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..messages).map(|n| message(n, size)).collect());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let context = context.clone();
            let bodies = bodies.clone();
            tasks.push(tokio::spawn(async move {
                for n in (w..bodies.len()).step_by(writers) {
                    let target = DeliveryTarget { user_id: user.id, mailbox_id: None, reservation: None };
                    context.mail.deliver(vec![target], &bodies[n], &[], chrono::Utc::now()).await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed();
        println!(
            "store: delivered {messages} messages of {size} B with {writers} writers in {:.2} s: {:.0} messages/s, {:.1} MB/s, RSS {} MiB",
            elapsed.as_secs_f64(),
            messages as f64 / elapsed.as_secs_f64(),
            (messages * size) as f64 / elapsed.as_secs_f64() / 1e6,
            rss_kib() / 1024
        );
        anyhow::Ok(())
    }
    .await;
    cluster.stop()?;
    result
}
