//! The database work of one PROPFIND (issue #12): one query for the dead properties of a
//! folder and all its entries, whatever their number, and the locks once. A test binary of its
//! own: it counts the statements logged by the whole process.

mod common;

use common::*;

/// Statements on `table` logged since `from` (sqlx logs each one at DEBUG, its text with it).
fn statements_on(from: usize, table: &str) -> usize {
    let logs = logs().lock().unwrap();
    let text = String::from_utf8_lossy(&logs[from..]);
    text.lines()
        .filter(|l| l.contains("sqlx::query") && l.contains(&format!("FROM {table}")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_reads_its_dead_properties_and_locks_once() {
    let _ = logs();
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/many/")]).await.status, 201);
    let dir = dav.files_dir(ALICE).join("many");
    for i in 0..200 {
        std::fs::write(dir.join(format!("f{i:03}.txt")), b"x").unwrap();
    }
    let patch = r#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>seven</D:displayname></D:prop></D:set></D:propertyupdate>"#;
    let r = dav
        .curl(
            ALICE,
            &["-X", "PROPPATCH", "--data-binary", patch, &dav.url("/many/f007.txt")],
        )
        .await;
    assert_eq!(r.status, 207);
    // What rclone asks for, then allprop (which shows lockdiscovery).
    let rclone = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:displayname/><d:getlastmodified/><d:getcontentlength/><d:resourcetype/><d:getcontenttype/><d:getetag/></d:prop></d:propfind>"#;
    for (body, locks) in [(rclone, 0), ("", 1)] {
        let from = logs().lock().unwrap().len();
        let r = propfind(&dav, "/many/", "1", body).await;
        assert_eq!(r.status, 207);
        let t = r.text();
        assert_eq!(t.matches("<D:response>").count(), 201);
        assert_eq!(t.matches(">seven</D:displayname>").count(), 1, "{t}");
        assert_eq!(statements_on(from, "dav_props"), 1, "{body}");
        assert_eq!(statements_on(from, "dav_locks"), locks, "{body}");
    }
    dav.stop().await;
}
