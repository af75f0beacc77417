//! `tinydc-smtpd --data DIR`: see the library for the server.

fn main() -> anyhow::Result<()> {
    shared::daemon::runtime()?.block_on(async {
        let (ctx, shutdown) = shared::daemon::start("tinydc-smtpd", tinydc_smtpd::EVENT_BACKLOG).await?;
        tinydc_smtpd::run(ctx, shutdown).await
    })
}
