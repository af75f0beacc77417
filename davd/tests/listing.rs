//! Large folders: a PROPFIND of many entries answers every one of them (davd's own answer,
//! propfind.rs, streamed from a streamed directory read).

mod common;

use common::*;

const PROPS: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:quota-available-bytes/></D:prop></D:propfind>"#;
const ALLPROP: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_two_thousand_files() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/many/")]).await.status, 201);
    // Files placed directly (as a restore would); their usage does not matter here.
    let dir = dav.files_dir(ALICE).join("many");
    for i in 0..2000 {
        std::fs::write(dir.join(format!("file-{i:04}.txt")), format!("{i}")).unwrap();
    }
    // Dead properties of entries appear in the listing.
    let patch = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:tinydc:test"><D:set><D:prop><T:color>blue-7</T:color></D:prop></D:set></D:propertyupdate>"#;
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PROPPATCH",
                "--data-binary",
                patch,
                &dav.url("/many/file-0007.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 207);
    let named = r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:T="urn:tinydc:test"><D:prop><T:color/></D:prop></D:propfind>"#;
    for body in [ALLPROP, named] {
        let r = dav
            .curl(
                ALICE,
                &[
                    "-X",
                    "PROPFIND",
                    "-H",
                    "Depth: 1",
                    "--data-binary",
                    body,
                    &dav.url("/many/"),
                ],
            )
            .await;
        // Exactly the one entry carries it.
        let t = r.text();
        let carriers: Vec<&str> = t.split("<D:response>").filter(|r| r.contains("blue-7")).collect();
        assert_eq!(carriers.len(), 1);
        assert!(carriers[0].contains("file-0007.txt"));
    }

    for body in [PROPS, ALLPROP] {
        let started = std::time::Instant::now();
        let r = dav
            .curl(
                ALICE,
                &[
                    "-X",
                    "PROPFIND",
                    "-H",
                    "Depth: 1",
                    "--data-binary",
                    body,
                    &dav.url("/many/"),
                ],
            )
            .await;
        println!(
            "PROPFIND depth 1 of 2000 files: {:?}, {} bytes",
            started.elapsed(),
            r.body.len()
        );
        assert_eq!(r.status, 207);
        let text = r.text();
        assert_eq!(text.matches("<D:response>").count(), 2001);
        assert!(text.contains("file-1999.txt"));
    }
}
