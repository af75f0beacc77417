//! The real binary, as `tinydc up` starts it: `tinydc-davd --data DIR` logs one line per
//! listener, serves, and exits 0 after SIGTERM.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_stops_on_sigterm() {
    let env = binary_env("").await;
    let (mut child, port) = spawn_davd(&env).await;

    let url = format!("https://localhost:{port}/hello.txt");
    let auth = format!("{ALICE}:{PW}");
    let r = curl(&[
        "-u".into(),
        auth.clone(),
        "-X".into(),
        "PUT".into(),
        "--data-binary".into(),
        "hi".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(r.status, 201);
    let r = curl(&["-u".into(), auth, url]).await;
    assert_eq!(r.text(), "hi");

    shared::process::send_signal(child.id().unwrap(), shared::process::Signal::Term).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_loopback_for_a_reverse_proxy() {
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
    let addr = server.http_addr().expect("plain listener");
    assert!(addr.ip().is_loopback());
    let shutdown = shared::net::Shutdown::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    let url = format!("http://127.0.0.1:{}/p.txt", addr.port());
    let auth = format!("{ALICE}:{PW}");
    assert_eq!(curl(std::slice::from_ref(&url)).await.status, 401);
    let put = [
        "-u".into(),
        auth.clone(),
        "-X".into(),
        "PUT".into(),
        "--data-binary".into(),
        "plain".into(),
        url.clone(),
    ];
    assert_eq!(curl(&put).await.status, 201);
    assert_eq!(curl(&["-u".into(), auth, url]).await.text(), "plain");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
