//! `tinydc-imapd --data DIR`: the IMAP daemon (see the library for the server).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (ctx, shutdown) = shared::daemon::start("tinydc-imapd").await?;
    tinydc_imapd::run(ctx, shutdown).await
}
