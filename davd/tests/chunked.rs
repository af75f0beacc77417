//! Nextcloud's chunked upload v2 (davd/src/chunked.rs), driven by curl with the requests the
//! protocol documents: MKCOL of an upload folder with a Destination, PUT of numbered chunks,
//! PROPFIND of the folder to resume, MOVE of `.file` with OC-Total-Length, DELETE to abort.
//! A client killed halfway, davd SIGKILLed halfway (the real binary) and restarted, quota
//! reservations while the upload is open, expiry, another user, a wrong total.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 5 * MIB;
/// A limit far above what any test writes: a user without a limit reserves without a row
/// (`quota::Reservation::UNLIMITED`), and these tests watch the chunks' reservations.
const ROOMY: Option<u64> = Some(1 << 40);

fn upload_url(base: &str, id: &str) -> String {
    format!("{base}/remote.php/dav/uploads/{ALICE}/{id}")
}

/// `len` bytes that differ from one offset to the next (a chunk out of order shows).
fn pseudo_random(len: u64) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The file split into 5 MiB chunk files `00001`, `00002`… in `dir`.
fn split(data: &[u8], dir: &Path) -> Vec<PathBuf> {
    data.chunks(CHUNK as usize)
        .enumerate()
        .map(|(i, c)| {
            let p = dir.join(format!("{:05}", i + 1));
            std::fs::write(&p, c).unwrap();
            p
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    shared::testing::require_tool("sha256sum");
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// curl as alice against `base` (an `https://localhost:PORT`).
async fn as_alice(base_args: &[&str]) -> Reply {
    let mut all = vec!["-u".to_string(), format!("{ALICE}:{PW}")];
    all.extend(base_args.iter().map(|s| s.to_string()));
    curl(&all).await
}

async fn mkcol(url: &str, destination: &str) -> u16 {
    as_alice(&["-X", "MKCOL", "-H", &format!("Destination: {destination}"), url])
        .await
        .status
}

async fn put_chunk(url: &str, chunk: &Path, destination: &str) -> u16 {
    let name = chunk.file_name().unwrap().to_str().unwrap();
    as_alice(&[
        "-T",
        chunk.to_str().unwrap(),
        "-H",
        &format!("Destination: {destination}"),
        &format!("{url}/{name}"),
    ])
    .await
    .status
}

/// The chunk names and sizes a PROPFIND Depth 1 of the upload folder lists.
async fn listed_chunks(url: &str) -> Vec<(String, u64)> {
    let r = as_alice(&["-X", "PROPFIND", "-H", "Depth: 1", &format!("{url}/")]).await;
    assert_eq!(r.status, 207, "{}", r.text());
    let text = r.text();
    let mut found = Vec::new();
    for response in text.split("<d:response>").skip(2) {
        let href = response
            .split("<d:href>")
            .nth(1)
            .unwrap()
            .split("</d:href>")
            .next()
            .unwrap();
        let len = response
            .split("<d:getcontentlength>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        found.push((href.rsplit('/').next().unwrap().to_string(), len.parse().unwrap()));
    }
    found
}

async fn assemble(url: &str, destination: &str, total: u64, extra: &[&str]) -> Reply {
    let mut args = vec![
        "-X".to_string(),
        "MOVE".into(),
        "-H".into(),
        format!("Destination: {destination}"),
        "-H".into(),
        format!("OC-Total-Length: {total}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("{url}/.file"));
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    as_alice(&refs).await
}

async fn user_id(db: &sqlx::PgPool, address: &str) -> i64 {
    shared::accounts::get_user(db, address).await.unwrap().id
}

/// Give `address` the [`ROOMY`] limit.
async fn roomy(db: &sqlx::PgPool, address: &str) {
    let id = user_id(db, address).await;
    shared::quota::set_limit(db, id, ROOMY).await.unwrap();
}

async fn reserved(db: &sqlx::PgPool, address: &str) -> u64 {
    let id = user_id(db, address).await;
    shared::quota::info(db, id).await.unwrap().reserved_bytes
}

/// Wait (at most 10 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 10 s: {what}");
}

/// Files anywhere under `dir` (the chunks davd keeps).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(it) = std::fs::read_dir(&d) else { continue };
        for e in it.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                found.push(e.path());
            }
        }
    }
    found.sort();
    found
}

/// Start a curl uploading `chunk` slowly, and kill it after a second (a phone leaving Wi-Fi).
async fn killed_halfway(url: &str, chunk: &Path) {
    let name = chunk.file_name().unwrap().to_str().unwrap();
    let mut child = tokio::process::Command::new("curl")
        .args(["-k", "-s", "-o", "/dev/null", "--limit-rate", "1M", "-u"])
        .arg(format!("{ALICE}:{PW}"))
        .arg("-T")
        .arg(chunk)
        .arg(format!("{url}/{name}"))
        .kill_on_drop(true)
        .spawn()
        .expect("start curl");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(child.try_wait().unwrap().is_none(), "the slow upload ended by itself");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_halfway_resumes_and_the_file_appears_at_move() {
    let dav = Dav::start(ROOMY).await;
    let base = dav.url("");
    let work = tempfile::tempdir().unwrap();
    let data = pseudo_random(21 * MIB + 12345);
    let original = work.path().join("original");
    std::fs::write(&original, &data).unwrap();
    let chunks = split(&data, work.path());
    assert_eq!(chunks.len(), 5);
    let url = upload_url(&base, "web-file-upload-1a2b");
    // A Destination in Nextcloud's URL space (the alias of alice's tree).
    let dest_path = format!("/remote.php/dav/files/{ALICE}/big.bin");
    let destination = format!("{base}{dest_path}");

    assert_eq!(mkcol(&url, &destination).await, 201);
    assert_eq!(mkcol(&url, &destination).await, 405, "MKCOL of an existing upload");
    assert_eq!(put_chunk(&url, &chunks[0], &destination).await, 201);
    assert_eq!(put_chunk(&url, &chunks[1], &destination).await, 201);
    killed_halfway(&url, &chunks[2]).await;

    // Resume: the folder lists what arrived, and only that.
    let uploads = dav.env.context.config.uploads_dir();
    eventually("the killed chunk's part file is removed", || async {
        !files_under(&uploads)
            .iter()
            .any(|p| p.to_string_lossy().contains(".part-"))
    })
    .await;
    assert_eq!(
        listed_chunks(&url).await,
        vec![("00001".to_string(), CHUNK), ("00002".to_string(), CHUNK)]
    );
    // Nothing in the user's tree before the MOVE, and the chunks cannot be read back.
    assert_eq!(dav.curl(ALICE, &[&dav.url("/big.bin")]).await.status, 404);
    assert_eq!(names_in(&dav.files_dir(ALICE)), Vec::<String>::new());
    assert_eq!(dav.curl(ALICE, &[&format!("{url}/00001")]).await.status, 403);
    assert_eq!(
        reserved(&dav.env.context.db, ALICE).await,
        2 * CHUNK,
        "the arrived chunks are reserved"
    );

    for chunk in &chunks[2..] {
        assert_eq!(put_chunk(&url, chunk, &destination).await, 201);
    }
    let r = assemble(&url, &destination, data.len() as u64, &["-H", "X-OC-Mtime: 1600000000"]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("X-OC-MTime").as_deref(), Some("accepted"));
    assert!(r.header("ETag").is_some_and(|e| e.starts_with('"')));

    let fetched = work.path().join("fetched");
    let get = dav.curl(ALICE, &[&dav.url(&dest_path)]).await;
    assert_eq!(get.status, 200);
    std::fs::write(&fetched, &get.body).unwrap();
    assert_eq!(sha256(&fetched), sha256(&original));
    let stored = dav.files_dir(ALICE).join("big.bin");
    let mtime = std::fs::metadata(&stored).unwrap().modified().unwrap();
    assert_eq!(mtime, std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    // The upload is gone, its reservations became the file's usage (counted once).
    let r = as_alice(&["-X", "PROPFIND", "-H", "Depth: 1", &format!("{url}/")]).await;
    assert_eq!(r.status, 404);
    assert!(files_under(&uploads).is_empty(), "{:?}", files_under(&uploads));
    assert_eq!(file_bytes(&dav, ALICE).await, data.len() as u64);
    eventually("no reservation left", || async {
        reserved(&dav.env.context.db, ALICE).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_total_places_nothing_and_the_old_file_stays() {
    let dav = Dav::start(ROOMY).await;
    let base = dav.url("");
    let work = tempfile::tempdir().unwrap();
    let data = pseudo_random(6 * MIB);
    let chunks = split(&data, work.path());
    // The destination in tinydc's own URL space.
    let destination = format!("/dav/{ALICE}/doc.bin");
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "old", &dav.url("/doc.bin")])
            .await
            .status,
        201
    );
    let url = upload_url(&base, "rclone-chunked-upload-42");
    assert_eq!(mkcol(&url, &destination).await, 201);
    for chunk in &chunks {
        assert_eq!(put_chunk(&url, chunk, &destination).await, 201);
    }
    let r = assemble(&url, &destination, data.len() as u64 + 1, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(dav.curl(ALICE, &[&dav.url("/doc.bin")]).await.text(), "old");
    // Another destination than the MKCOL's is refused too.
    let r = assemble(&url, "/elsewhere.bin", data.len() as u64, &[]).await;
    assert_eq!(r.status, 400);
    // Overwrite: F with the file there.
    let r = assemble(&url, &destination, data.len() as u64, &["-H", "Overwrite: F"]).await;
    assert_eq!(r.status, 412);
    assert_eq!(dav.curl(ALICE, &[&dav.url("/doc.bin")]).await.text(), "old");
    // A locked destination needs its lock token (RFC 4918 section 7).
    let lockinfo = "<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope>\
                    <D:locktype><D:write/></D:locktype></D:lockinfo>";
    let lock = dav
        .curl(
            ALICE,
            &[
                "-X",
                "LOCK",
                "-H",
                "Content-Type: application/xml",
                "--data-binary",
                lockinfo,
                &dav.url("/doc.bin"),
            ],
        )
        .await;
    assert_eq!(lock.status, 200, "{}", lock.text());
    let token = lock.header("Lock-Token").unwrap();
    let r = assemble(&url, &destination, data.len() as u64, &[]).await;
    assert_eq!(r.status, 423);
    assert_eq!(dav.curl(ALICE, &[&dav.url("/doc.bin")]).await.text(), "old");
    // The right total, with the lock token, replaces it.
    let with_token = format!("If: ({token})");
    let r = assemble(&url, &destination, data.len() as u64, &["-H", &with_token]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let got = dav.curl(ALICE, &[&dav.url("/doc.bin")]).await;
    assert!(got.body == data, "content differs");
    assert_eq!(file_bytes(&dav, ALICE).await, data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_charged_as_they_arrive_and_released_on_delete() {
    let dav = Dav::start(Some(12 * MIB)).await;
    let db = dav.env.context.db.clone();
    let base = dav.url("");
    let work = tempfile::tempdir().unwrap();
    let chunks = split(&pseudo_random(15 * MIB), work.path());
    let destination = "/quota.bin";
    let url = upload_url(&base, "q1");

    // A total announced at MKCOL that cannot fit is refused at once.
    let r = as_alice(&[
        "-X",
        "MKCOL",
        "-H",
        &format!("Destination: {destination}"),
        "-H",
        "OC-Total-Length: 20971520",
        &upload_url(&base, "too-big"),
    ])
    .await;
    assert_eq!(r.status, 507);

    assert_eq!(mkcol(&url, destination).await, 201);
    assert_eq!(put_chunk(&url, &chunks[0], destination).await, 201);
    assert_eq!(reserved(&db, ALICE).await, CHUNK);
    assert_eq!(put_chunk(&url, &chunks[1], destination).await, 201);
    assert_eq!(
        reserved(&db, ALICE).await,
        2 * CHUNK,
        "visible while the upload is open"
    );
    // The quota shows it to the user too (RFC 4331 through PROPFIND of the root is usage
    // only; the reservation stops other writes): a 3 MiB PUT no longer fits.
    let small = work.path().join("small");
    std::fs::write(&small, pseudo_random(3 * MIB)).unwrap();
    let r = dav
        .curl(ALICE, &["-T", small.to_str().unwrap(), &dav.url("/other.bin")])
        .await;
    assert_eq!(r.status, 507);
    // The third chunk passes the quota: refused, nothing kept.
    assert_eq!(put_chunk(&url, &chunks[2], destination).await, 507);
    assert_eq!(listed_chunks(&url).await.len(), 2);
    assert_eq!(reserved(&db, ALICE).await, 2 * CHUNK);

    let r = as_alice(&["-X", "DELETE", &url]).await;
    assert_eq!(r.status, 204);
    assert_eq!(reserved(&db, ALICE).await, 0, "released on DELETE");
    assert!(files_under(&dav.env.context.config.uploads_dir()).is_empty());
    assert_eq!(as_alice(&["-X", "DELETE", &url]).await.status, 404);
    assert_eq!(file_bytes(&dav, ALICE).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_touch_the_upload() {
    let dav = Dav::start(ROOMY).await;
    let base = dav.url("");
    let work = tempfile::tempdir().unwrap();
    let chunks = split(&pseudo_random(MIB), work.path());
    let url = upload_url(&base, "mine");
    assert_eq!(mkcol(&url, "/mine.bin").await, 201);
    assert_eq!(put_chunk(&url, &chunks[0], "/mine.bin").await, 201);

    let bob = |args: Vec<String>| async move {
        let mut all = vec!["-u".to_string(), format!("{BOB}:{PW}")];
        all.extend(args);
        curl(&all).await.status
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Alice's upload path: 403 whatever the method.
    assert_eq!(bob(s(&["-X", "PROPFIND", "-H", "Depth: 1", &url])).await, 403);
    assert_eq!(bob(s(&["-X", "DELETE", &url])).await, 403);
    assert_eq!(
        bob(s(&["-T", chunks[0].to_str().unwrap(), &format!("{url}/00002")])).await,
        403
    );
    assert_eq!(
        bob(s(&[
            "-X",
            "MOVE",
            "-H",
            "Destination: /stolen.bin",
            &format!("{url}/.file")
        ]))
        .await,
        403
    );
    // Bob's own uploads space does not hold alice's upload.
    let bobs = format!("{base}/remote.php/dav/uploads/{BOB}/mine");
    assert_eq!(bob(s(&["-X", "PROPFIND", "-H", "Depth: 1", &bobs])).await, 404);
    assert_eq!(bob(s(&["-X", "DELETE", &bobs])).await, 404);
    // Nor can alice aim a destination at bob's tree.
    let r = as_alice(&[
        "-X",
        "MKCOL",
        "-H",
        &format!("Destination: /remote.php/dav/files/{BOB}/x.bin"),
        &upload_url(&base, "aimed"),
    ])
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(listed_chunks(&url).await, vec![("00001".to_string(), MIB)]);
    assert_eq!(names_in(&dav.files_dir(BOB)), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_protocols_errors() {
    let dav = Dav::start(ROOMY).await;
    let base = dav.url("");
    let work = tempfile::tempdir().unwrap();
    let chunks = split(&pseudo_random(MIB), work.path());
    // MKCOL without a Destination, with a bad id, with a folder as destination.
    assert_eq!(
        as_alice(&["-X", "MKCOL", &upload_url(&base, "nodest")]).await.status,
        400
    );
    assert_eq!(mkcol(&upload_url(&base, "bad%20id"), "/x").await, 400);
    assert_eq!(mkcol(&upload_url(&base, "dir"), "/").await, 403);
    // A chunk into an upload that was never made.
    assert_eq!(put_chunk(&upload_url(&base, "nothere"), &chunks[0], "/x").await, 409);
    let url = upload_url(&base, "u");
    assert_eq!(mkcol(&url, "/x.bin").await, 201);
    // Chunk names: numbers from 1 to 10000 only.
    for bad in ["0", "10001", "abc", "1.5"] {
        let r = as_alice(&["-T", chunks[0].to_str().unwrap(), &format!("{url}/{bad}")]).await;
        assert_eq!(r.status, 400, "chunk {bad}");
    }
    // A chunk without a length (chunked transfer coding) is refused.
    let r = as_alice(&[
        "-X",
        "PUT",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "abc",
        &format!("{url}/1"),
    ])
    .await;
    assert_eq!(r.status, 411);
    // The same number under two spellings.
    assert_eq!(put_chunk(&url, &chunks[0], "/x.bin").await, 201);
    let r = as_alice(&["-T", chunks[0].to_str().unwrap(), &format!("{url}/1")]).await;
    assert_eq!(r.status, 400);
    // A chunk sent again replaces itself (and its reservation).
    assert_eq!(put_chunk(&url, &chunks[0], "/x.bin").await, 204);
    let db = dav.env.context.db.clone();
    eventually("the replaced chunk's reservation goes", || async {
        reserved(&db, ALICE).await == MIB
    })
    .await;
    // A destination that differs from the MKCOL's on a chunk.
    let r = as_alice(&[
        "-T",
        chunks[0].to_str().unwrap(),
        "-H",
        "Destination: /y.bin",
        &format!("{url}/2"),
    ])
    .await;
    assert_eq!(r.status, 400);
    // An unreadable total.
    let moved = format!("{url}/.file");
    let r = as_alice(&[
        "-X",
        "MOVE",
        "-H",
        "Destination: /x.bin",
        "-H",
        "OC-Total-Length: x",
        &moved,
    ])
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(listed_chunks(&url).await.len(), 1);
    // The MOVE into a folder that is not there: 409 (RFC 4918 section 9.9.4), the upload kept
    // and still reserved, so the client may make the folder and MOVE again.
    let lost = upload_url(&base, "lost");
    assert_eq!(mkcol(&lost, "/nofolder/x.bin").await, 201);
    assert_eq!(put_chunk(&lost, &chunks[0], "/nofolder/x.bin").await, 201);
    let r = assemble(&lost, "/nofolder/x.bin", MIB, &[]).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(listed_chunks(&lost).await.len(), 1);
    assert_eq!(reserved(&db, ALICE).await, 2 * MIB);
    assert_eq!(
        dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/nofolder")]).await.status,
        201
    );
    assert_eq!(assemble(&lost, "/nofolder/x.bin", MIB, &[]).await.status, 201);
    assert_eq!(file_bytes(&dav, ALICE).await, MIB);
    // Too many open uploads.
    for i in 1..shared_max_open() {
        // "u" is open already.
        assert_eq!(mkcol(&upload_url(&base, &format!("many{i}")), "/m.bin").await, 201);
    }
    assert_eq!(mkcol(&upload_url(&base, "one-too-many"), "/m.bin").await, 507);
}

fn shared_max_open() -> usize {
    davd::chunked::MAX_OPEN_UPLOADS
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nextcloud_files_path_is_the_users_tree() {
    let dav = Dav::start(ROOMY).await;
    let nc = dav.url(&format!("/remote.php/dav/files/{ALICE}/note.txt"));
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "hi", &nc]).await.status,
        201
    );
    assert_eq!(dav.curl(ALICE, &[&dav.url("/note.txt")]).await.text(), "hi");
    assert_eq!(dav.curl(ALICE, &[&nc]).await.text(), "hi");
    assert!(dav.files_dir(ALICE).join("note.txt").is_file());
}

/// A data directory whose config has `[dav] upload_expiry = expiry`, served in-process.
async fn start_with_expiry(expiry: &str) -> Dav {
    let env = shared::testing::TestEnv::new().await;
    env.add_user(ALICE, PW, ROOMY).await;
    env.add_user(BOB, PW, None).await;
    let path = env.dir.path().join(shared::config::CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[dav]\n", &format!("[dav]\nupload_expiry = \"{expiry}\"\n"));
    std::fs::write(&path, text).unwrap();
    let config = shared::Config::load(env.dir.path()).unwrap();
    let context = shared::Context::new(config, env.context.db.clone()).await.unwrap();
    Dav::serve(shared::testing::TestEnv { dir: env.dir, context }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_expires_and_its_reservation_goes() {
    let dav = start_with_expiry("2s").await;
    let db = dav.env.context.db.clone();
    let base = dav.url("");
    let work = tempfile::tempdir().unwrap();
    let chunks = split(&pseudo_random(2 * MIB), work.path());
    let url = upload_url(&base, "left");
    assert_eq!(mkcol(&url, "/left.bin").await, 201);
    assert_eq!(put_chunk(&url, &chunks[0], "/left.bin").await, 201);
    assert_eq!(reserved(&db, ALICE).await, 2 * MIB);
    let uploads = dav.env.context.config.uploads_dir();
    assert_eq!(files_under(&uploads).len(), 2, "the chunk and its destination");
    eventually("the upload expires", || async {
        reserved(&db, ALICE).await == 0 && files_under(&uploads).is_empty()
    })
    .await;
    let r = as_alice(&["-X", "PROPFIND", "-H", "Depth: 1", &format!("{url}/")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(put_chunk(&url, &chunks[0], "/left.bin").await, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_expired_while_davd_was_down_is_removed_at_start() {
    let env = binary_env("upload_expiry = \"2s\"\n").await;
    let db = env.context.db.clone();
    roomy(&db, ALICE).await;
    let work = tempfile::tempdir().unwrap();
    let chunks = split(&pseudo_random(MIB), work.path());
    let (mut child, port) = spawn_davd(&env).await;
    let url = upload_url(&format!("https://localhost:{port}"), "stale");
    assert_eq!(mkcol(&url, "/stale.bin").await, 201);
    assert_eq!(put_chunk(&url, &chunks[0], "/stale.bin").await, 201);
    assert_eq!(reserved(&db, ALICE).await, MIB);
    shared::process::send_signal(child.id().unwrap(), shared::process::Signal::Kill).unwrap();
    child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut child, port) = spawn_davd(&env).await;
    let url = upload_url(&format!("https://localhost:{port}"), "stale");
    let r = as_alice(&["-X", "PROPFIND", "-H", "Depth: 1", &format!("{url}/")]).await;
    assert_eq!(r.status, 404);
    assert!(files_under(&env.context.config.uploads_dir()).is_empty());
    assert_eq!(
        reserved(&db, ALICE).await,
        0,
        "the dead davd's reservation released, none made"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn davd_killed_halfway_keeps_the_acknowledged_chunks() {
    let env = binary_env("").await;
    let db = env.context.db.clone();
    roomy(&db, ALICE).await;

    let work = tempfile::tempdir().unwrap();
    let data = pseudo_random(20 * MIB + 7);
    let original = work.path().join("original");
    std::fs::write(&original, &data).unwrap();
    let chunks = split(&data, work.path());
    let destination = "/backup.tar";

    let (mut child, port) = spawn_davd(&env).await;
    let base = format!("https://localhost:{port}");
    let url = upload_url(&base, "phone-upload-7");
    assert_eq!(mkcol(&url, destination).await, 201);
    assert_eq!(put_chunk(&url, &chunks[0], destination).await, 201);
    assert_eq!(put_chunk(&url, &chunks[1], destination).await, 201);
    // davd dies while the third chunk streams in.
    let slow = {
        let url = url.clone();
        let chunk = chunks[2].clone();
        tokio::spawn(async move {
            let name = chunk.file_name().unwrap().to_str().unwrap().to_string();
            as_alice(&[
                "--limit-rate",
                "1M",
                "-T",
                chunk.to_str().unwrap(),
                &format!("{url}/{name}"),
            ])
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shared::process::send_signal(child.id().unwrap(), shared::process::Signal::Kill).unwrap();
    child.wait().await.unwrap();
    let cut = slow.await.unwrap();
    assert_ne!(cut.status, 201, "the chunk cut off was not acknowledged");
    let uploads = env.context.config.uploads_dir();
    assert!(
        files_under(&uploads)
            .iter()
            .any(|p| p.to_string_lossy().contains(".part-")),
        "davd died in the middle of the third chunk: {:?}",
        files_under(&uploads)
    );

    let (mut child, port) = spawn_davd(&env).await;
    let base = format!("https://localhost:{port}");
    let url = upload_url(&base, "phone-upload-7");
    // The acknowledged chunks survived, the cut one left nothing, and they are reserved under
    // the new davd (the dead one's reservations were released at its start).
    assert_eq!(
        listed_chunks(&url).await,
        vec![("00001".to_string(), CHUNK), ("00002".to_string(), CHUNK)]
    );
    assert!(
        !files_under(&uploads)
            .iter()
            .any(|p| p.to_string_lossy().contains(".part-")),
        "{:?}",
        files_under(&uploads)
    );
    assert_eq!(reserved(&db, ALICE).await, 2 * CHUNK);
    for chunk in &chunks[2..] {
        assert_eq!(put_chunk(&url, chunk, destination).await, 201);
    }
    let r = assemble(&url, destination, data.len() as u64, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let fetched = work.path().join("fetched");
    let get = as_alice(&[&format!("{base}{destination}")]).await;
    assert_eq!(get.status, 200);
    std::fs::write(&fetched, &get.body).unwrap();
    assert_eq!(sha256(&fetched), sha256(&original));
    assert!(files_under(&uploads).is_empty());
    eventually("no reservation left", || async { reserved(&db, ALICE).await == 0 }).await;
    let id = user_id(&db, ALICE).await;
    assert_eq!(
        shared::quota::info(&db, id).await.unwrap().file_bytes,
        data.len() as u64
    );
    child.kill().await.unwrap();
}
