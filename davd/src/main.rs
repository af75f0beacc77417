//! `tinydc-davd --data DIR`: started by `tinydc up`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (context, shutdown) = shared::daemon::start("tinydc-davd").await?;
    davd::run(context, shutdown).await
}
