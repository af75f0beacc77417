//! `tinydc-imapd --data DIR`: the IMAP daemon (see the library for the server).

fn main() -> anyhow::Result<()> {
    shared::daemon::runtime()?.block_on(async {
        let (ctx, shutdown) = shared::daemon::start("tinydc-imapd", tinydc_imapd::EVENT_BACKLOG).await?;
        tinydc_imapd::run(ctx, shutdown).await
    })
}
