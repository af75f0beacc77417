//! `tinydc-smtpd --data DIR`: see the library for the server.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (ctx, shutdown) = shared::daemon::start("tinydc-smtpd").await?;
    tinydc_smtpd::run(ctx, shutdown).await
}
