//! litmus (the WebDAV conformance suite) against davd over real HTTPS and its real backend:
//! basic, copymove, props, locks, http must all pass. Its output is printed.

mod common;

use common::*;

async fn run_litmus(dav: &Dav, url: &str) {
    // litmus writes debug.log and child.log into its working directory.
    let cwd = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("litmus")
        .current_dir(cwd.path())
        .env("TESTS", "basic copymove props locks http")
        .arg("-k")
        .arg(url)
        .arg(ALICE)
        .arg(PW)
        .output()
        .await
        .expect("run litmus");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Written to the real stderr (not the captured print macros), so every test run shows it.
    {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "litmus against {url}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(out.status.success(), "litmus failed against {url}:\n{stdout}");
    let summaries: Vec<&str> = stdout.lines().filter(|l| l.contains("<- summary for")).collect();
    assert_eq!(summaries.len(), 5, "five suites ran: {summaries:?}");
    for line in summaries {
        assert!(
            line.contains(" 0 failed"),
            "litmus reported failures against {url}: {line}"
        );
    }
    for suite in ["basic", "copymove", "props", "locks", "http"] {
        assert!(
            stdout.contains(&format!("-> running `{suite}'")),
            "suite {suite} did not run"
        );
    }
    let _ = dav;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litmus_passes_at_the_root_and_at_dav_address() {
    shared::testing::require_tool("litmus");
    let dav = Dav::start(None).await;
    run_litmus(&dav, &dav.url("/")).await;
    // dav-server writes hrefs percent-encoded ('@' as %40); litmus compares hrefs byte for byte.
    run_litmus(&dav, &dav.url("/dav/alice%40example.test/")).await;
    // Nothing of litmus' uploads is left half-done.
    assert!(
        !names_in(&dav.files_dir(ALICE))
            .iter()
            .any(|n| n.starts_with(".tinydc-upload-"))
    );
}

/// Over the loopback plain-HTTP listener too, where litmus also runs its Expect: 100-continue test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litmus_passes_over_loopback_http() {
    shared::testing::require_tool("litmus");
    let env = shared::testing::TestEnv::new().await;
    env.add_user(ALICE, PW, None).await;
    let path = env.dir.path().join(shared::config::CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[dav]\n", "[dav]\nhttp_listen = \"127.0.0.1:0\"\n");
    std::fs::write(&path, text).unwrap();
    let config = shared::Config::load(env.dir.path()).unwrap();
    let context = shared::Context::new(config, env.context.db.clone()).await.unwrap();
    let server = davd::Server::bind(context).await.unwrap();
    let addr = server.http_addr().unwrap();
    let shutdown = shared::net::Shutdown::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    let dav = Dav::serve(env).await;
    run_litmus(&dav, &format!("http://127.0.0.1:{}/", addr.port())).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
