//! `tinydc-davd --data DIR`: started by `tinydc up`.

fn main() -> anyhow::Result<()> {
    shared::daemon::runtime()?.block_on(async {
        let (context, shutdown) = shared::daemon::start("tinydc-davd", davd::EVENT_BACKLOG).await?;
        davd::run(context, shutdown).await
    })
}
