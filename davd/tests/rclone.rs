//! rclone, a real WebDAV client: copy a tree up, copy it back, and `check` both ways.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_copies_a_tree_up_and_back() {
    shared::testing::require_tool("rclone");
    let dav = Dav::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("up");
    for (i, dir) in ["", "docs", "docs/deep/er", "photos", "with space", "ünïcödé"]
        .iter()
        .enumerate()
    {
        let d = up.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..3 {
            let len = (i * 7919 + j * 104_729) % 300_000;
            let data: Vec<u8> = (0..len).map(|k| ((k * 31 + i + j) % 251) as u8).collect();
            std::fs::write(d.join(format!("file {j}.bin")), data).unwrap();
        }
    }
    std::fs::write(up.join("empty.txt"), b"").unwrap();

    let remote = rclone_remote(&dav, "other", "tree").await;
    let up_s = up.to_string_lossy().into_owned();
    assert!(
        rclone(&["copy".into(), up_s.clone(), remote.clone()])
            .await
            .status
            .success()
    );
    // --download compares the content, not only sizes (WebDAV offers no hash).
    assert!(
        rclone(&["check".into(), "--download".into(), up_s.clone(), remote.clone()])
            .await
            .status
            .success()
    );

    let back = tmp.path().join("back");
    let back_s = back.to_string_lossy().into_owned();
    assert!(
        rclone(&["copy".into(), remote.clone(), back_s.clone()])
            .await
            .status
            .success()
    );
    assert!(rclone(&["check".into(), up_s.clone(), back_s]).await.status.success());

    // Stored as plain files in alice's tree, counted in her usage.
    let stored = dav.files_dir(ALICE).join("tree");
    assert_eq!(shared::quota::tree_bytes(&stored), shared::quota::tree_bytes(&up));
    assert_eq!(file_bytes(&dav, ALICE).await, shared::quota::tree_bytes(&up));
}
