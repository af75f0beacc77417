//! Read-only share links end to end: the real `tinydc share` command, davd under `tinydc up`,
//! and curl without credentials (issue #14 item 6).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Suite, data_dir, fails, ok, require_daemons, tinydc};

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

/// One HTTP answer as curl saw it.
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// curl `url` (connecting to 127.0.0.1 whatever host the URL names) with `args`; the path is
/// sent as written (`--path-as-is`: no `..` squashed on this side).
fn curl(port: u16, url: &str, args: &[&str]) -> Reply {
    shared::testing::require_tool("curl");
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sk", "--path-as-is", "--max-time", "20"])
        .arg("--connect-to")
        .arg(format!("::127.0.0.1:{port}"))
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    Reply {
        status,
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// The owner's own WebDAV, with their password.
fn as_owner(port: u16, method: &str, path: &str, data: Option<&Path>) -> u16 {
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut args = vec![
        "-u".to_string(),
        format!("{ALICE}:alice-pw"),
        "-X".into(),
        method.into(),
    ];
    if let Some(file) = data {
        args.push("-T".into());
        args.push(file.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(port, &url, &args).status
}

/// The URL `tinydc share` printed, split into (origin + `/s/<token>/`, token).
fn share(data: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["share"];
    all.extend_from_slice(args);
    let out = ok(data, &all, None);
    let url = out.trim().to_string();
    assert_eq!(out.lines().count(), 1, "only the URL on stdout: {out:?}");
    let (_, after) = url.split_once("/s/").expect("a /s/ URL");
    let token = after.split('/').next().unwrap().to_string();
    assert_eq!(token.len(), 43, "{url}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    (url, token)
}

fn psql(data: &Path, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "tinydc",
            "-d",
            "tinydc",
            "-h",
        ])
        .arg(data.join("pg").join("run"))
        .args(["-c", sql])
        .output()
        .expect("psql (PostgreSQL client) is installed");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn share_links_read_only_without_login() {
    require_daemons();
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(&data, &["user", "add", ALICE, "--password-stdin"], Some("alice-pw\n"));
    ok(&data, &["user", "add", BOB, "--password-stdin"], Some("bob-pw\n"));
    let suite = Suite::start(&data);
    let port = suite.ports.https;

    // Alice's files, uploaded over her own WebDAV; Bob's put in his folder.
    let file = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    assert_eq!(as_owner(port, "MKCOL", "/docs/", None), 201);
    assert_eq!(as_owner(port, "MKCOL", "/docs/sub/", None), 201);
    let a = file("a.txt", "alpha: the shared file\n");
    assert_eq!(as_owner(port, "PUT", "/docs/a.txt", Some(&a)), 201);
    assert_eq!(
        as_owner(port, "PUT", "/docs/sub/b.txt", Some(&file("b.txt", "beta\n"))),
        201
    );
    assert_eq!(
        as_owner(
            port,
            "PUT",
            "/docs/page.html",
            Some(&file("p.html", "<script>x</script>"))
        ),
        201
    );
    assert_eq!(
        as_owner(port, "PUT", "/secret.txt", Some(&file("s.txt", "SECRET-OF-ALICE\n"))),
        201
    );
    let alice_root = data.join("files").join(ALICE);
    let bob_root = data.join("files").join(BOB);
    std::fs::create_dir_all(&bob_root).unwrap();
    std::fs::write(bob_root.join("bob.txt"), "SECRET-OF-BOB\n").unwrap();
    // A symlink inside the shared folder, pointing out of it: never followed.
    std::os::unix::fs::symlink(alice_root.join("secret.txt"), alice_root.join("docs/escape")).unwrap();

    // The command's refusals: one clear line, exit code 1.
    fails(&data, &["share", "nobody@example.test", "docs"], None, "no such user");
    fails(&data, &["share", ALICE, "nothing/here"], None, "does not exist");
    fails(&data, &["share", ALICE, "docs/../secret.txt"], None, "not allowed");
    fails(&data, &["share", ALICE, "docs/escape"], None, "symbolic link");
    fails(
        &data,
        &["share", ALICE, "docs", "--expires", "7y"],
        None,
        "bad duration",
    );
    fails(&data, &["share", "revoke", "999999"], None, "no such share link");

    // A file's link: its URL names the file, on the configured host and HTTPS port.
    let (file_url, file_token) = share(&data, &[ALICE, "docs/a.txt"]);
    assert!(file_url.starts_with("https://"), "{file_url}");
    assert!(
        file_url.ends_with(&format!(":{port}/s/{file_token}/a.txt")),
        "{file_url}"
    );
    let origin = file_url.split("/s/").next().unwrap().to_string();
    let got = curl(port, &file_url, &[]);
    assert_eq!((got.status, got.text().as_str()), (200, "alpha: the shared file\n"));
    assert_eq!(got.header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(got.header("referrer-policy").as_deref(), Some("no-referrer"));
    let etag = got.header("etag").expect("an ETag");
    let head = curl(port, &file_url, &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("23"));
    // (curl -I writes the head where the body would go: no content follows it.)
    assert!(!head.text().contains("alpha"), "{}", head.text());
    let range = curl(port, &file_url, &["-H", "Range: bytes=0-4"]);
    assert_eq!((range.status, range.text().as_str()), (206, "alpha"));
    let cached = curl(port, &file_url, &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!(cached.status, 304);
    // Its folder holds that file alone; nothing beside or above it.
    let root = format!("{origin}/s/{file_token}/");
    let listing = curl(port, &root, &["-X", "PROPFIND", "-H", "Depth: 1"]);
    assert_eq!(listing.status, 207, "{}", listing.text());
    let listed = listing.text();
    let hrefs: Vec<&str> = listed
        .split("<D:href>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap())
        .collect();
    assert_eq!(
        hrefs,
        [format!("/s/{file_token}/"), format!("/s/{file_token}/a.txt")],
        "{listed}"
    );
    for outside in ["sub/b.txt", "page.html", "escape", "secret.txt"] {
        let r = curl(port, &format!("{root}{outside}"), &[]);
        assert_eq!(r.status, 404, "{outside}: {}", r.text());
    }
    let html = curl(port, &root, &[]);
    assert_eq!(html.status, 200);
    assert!(html.text().contains("a.txt"), "{}", html.text());

    // A folder's link.
    let (folder_url, folder_token) = share(&data, &[ALICE, "/docs/", "--expires", "12h"]);
    assert!(folder_url.ends_with(&format!("/s/{folder_token}/")), "{folder_url}");
    let b = curl(port, &format!("{folder_url}sub/b.txt"), &[]);
    assert_eq!((b.status, b.text().as_str()), (200, "beta\n"));
    let depth1 = curl(port, &folder_url, &["-X", "PROPFIND", "-H", "Depth: 1"]);
    assert_eq!(depth1.status, 207);
    let text = depth1.text();
    for want in ["a.txt", "sub/", "page.html"] {
        assert!(
            text.contains(&format!("<D:href>/s/{folder_token}/{want}</D:href>")),
            "{want}: {text}"
        );
    }
    assert!(!text.contains("escape"), "a symlink is not listed: {text}");
    for href in text.split("<D:href>").skip(1) {
        assert!(href.starts_with(&format!("/s/{folder_token}/")), "{href}");
    }
    assert_eq!(
        text.matches("<D:href>").count(),
        4,
        "the folder, a.txt, page.html, sub/: {text}"
    );
    assert!(text.contains("<D:getetag>\""), "quoted ETags, as for the owner: {text}");
    let depth0 = curl(port, &folder_url, &["-X", "PROPFIND", "-H", "Depth: 0"]);
    assert_eq!(depth0.status, 207);
    assert_eq!(depth0.text().matches("<D:response>").count(), 1, "{}", depth0.text());
    let infinite = curl(port, &folder_url, &["-X", "PROPFIND", "-H", "Depth: infinity"]);
    assert_eq!(infinite.status, 403);
    // A page a browser would run is sent as a download.
    let page = curl(port, &format!("{folder_url}page.html"), &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-disposition").as_deref(), Some("attachment"));
    let options = curl(port, &folder_url, &["-X", "OPTIONS"]);
    assert_eq!(options.status, 200);
    assert_eq!(options.header("allow").as_deref(), Some("OPTIONS, GET, HEAD, PROPFIND"));

    // Nothing outside the shared folder is reachable, however the path is written.
    for attack in [
        "../secret.txt",
        "%2e%2e/secret.txt",
        "%2E%2E/%2e%2e/secret.txt",
        "sub/../../secret.txt",
        "sub/%2e%2e/%2e%2e/secret.txt",
        "..%2fsecret.txt",
        "%2e%2e%2fsecret.txt",
        "/..//..//secret.txt",
        "escape",
        "../../bob@example.test/bob.txt",
        "%2e%2e/%2e%2e/bob@example.test/bob.txt",
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let r = curl(port, &format!("{folder_url}{attack}"), &[]);
        assert!(
            [400, 403, 404].contains(&r.status),
            "{attack}: {} {}",
            r.status,
            r.text()
        );
        let body = r.text();
        assert!(!body.contains("SECRET") && !body.contains("root:"), "{attack}: {body}");
    }
    // The owner's tree at / still wants a password.
    assert_eq!(curl(port, &format!("{origin}/secret.txt"), &[]).status, 401);
    assert_eq!(curl(port, &format!("{origin}/s/"), &[]).status, 401);

    // Read-only: every write is 405 with Allow, and nothing changes.
    let before = std::fs::read_to_string(alice_root.join("docs/a.txt")).unwrap();
    let upload = file("new.txt", "overwritten\n");
    let upload = upload.to_string_lossy().into_owned();
    let moved = format!("Destination: {folder_url}moved.txt");
    let proppatch = "<?xml version=\"1.0\"?><D:propertyupdate xmlns:D=\"DAV:\"><D:set><D:prop><D:displayname>x</D:displayname></D:prop></D:set></D:propertyupdate>";
    for (what, args) in [
        ("PUT over", vec!["-T", upload.as_str()]),
        ("DELETE", vec!["-X", "DELETE"]),
        ("MOVE", vec!["-X", "MOVE", "-H", moved.as_str()]),
        ("COPY", vec!["-X", "COPY", "-H", moved.as_str()]),
        ("PROPPATCH", vec!["-X", "PROPPATCH", "--data", proppatch]),
        ("LOCK", vec!["-X", "LOCK"]),
        ("POST", vec!["--data", "x=1"]),
    ] {
        let r = curl(port, &format!("{folder_url}a.txt"), &args);
        assert_eq!(r.status, 405, "{what}: {}", r.text());
        assert_eq!(
            r.header("allow").as_deref(),
            Some("OPTIONS, GET, HEAD, PROPFIND"),
            "{what}"
        );
    }
    let mkcol = curl(port, &format!("{folder_url}newdir/"), &["-X", "MKCOL"]);
    assert_eq!(mkcol.status, 405);
    let put_new = curl(port, &format!("{folder_url}new.txt"), &["-T", &upload]);
    assert_eq!(put_new.status, 405);
    assert_eq!(std::fs::read_to_string(alice_root.join("docs/a.txt")).unwrap(), before);
    for absent in ["docs/newdir", "docs/new.txt", "docs/moved.txt"] {
        assert!(!alice_root.join(absent).exists(), "{absent} was made");
    }

    // Unknown tokens of the right shape: 404, as for a revoked or an expired one.
    let unknown = format!("{origin}/s/{}/", "A".repeat(43));
    assert_eq!(curl(port, &unknown, &[]).status, 404);

    // `share list` shows both links with their use; the token is nowhere in the database.
    let list = ok(&data, &["share", "list"], None);
    let file_line = list
        .lines()
        .find(|l| l.contains("/docs/a.txt"))
        .expect("file link listed");
    assert!(file_line.contains(ALICE), "{file_line}");
    // GET, HEAD, Range, If-None-Match, PROPFIND, four 404s inside the link, the HTML listing.
    assert!(file_line.contains("accesses 10"), "{file_line}");
    assert!(!list.contains(&file_token) && !list.contains(&folder_token), "{list}");
    let folder_line = list
        .lines()
        .find(|l| l.contains("/docs/ "))
        .expect("folder link listed");
    assert!(!folder_line.contains("accesses 0"), "{folder_line}");
    assert!(folder_line.contains("expires 20"), "{folder_line}");
    assert_eq!(ok(&data, &["share", "list", BOB], None).trim(), "no share links");
    let dump = psql(&data, "SELECT s::text FROM share_links s");
    assert_eq!(dump.lines().count(), 2, "{dump}");
    for token in [&file_token, &folder_token] {
        assert!(!dump.contains(token.as_str()), "the token is stored in clear: {dump}");
        let hex = psql(
            &data,
            &format!("SELECT encode(sha256(convert_to('{token}', 'UTF8')), 'hex')"),
        );
        let stored = psql(
            &data,
            &format!(
                "SELECT count(*) FROM share_links WHERE encode(token_sha256, 'hex') = '{}'",
                hex.trim()
            ),
        );
        assert_eq!(stored.trim(), "1", "its SHA-256 is what is stored");
    }

    // Every access is logged with the link's id, never its token.
    let log = suite.log.lock().unwrap().clone();
    assert!(log.contains("share link access"), "{log}");
    assert!(
        !log.contains(&file_token) && !log.contains(&folder_token),
        "a token in the log"
    );

    // Revoked: 404 at once.
    let id = file_line.split_whitespace().next().unwrap();
    let revoked = ok(&data, &["share", "revoke", id], None);
    assert!(revoked.contains("/docs/a.txt"), "{revoked}");
    assert_eq!(curl(port, &file_url, &[]).status, 404);
    fails(&data, &["share", "revoke", id], None, "no such share link");

    // Expired: 404, and listed as expired.
    let (short_url, _) = share(&data, &[ALICE, "docs/sub/b.txt", "--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(curl(port, &short_url, &[]).status, 404);
    let list = ok(&data, &["share", "list", ALICE], None);
    assert!(
        list.lines()
            .any(|l| l.contains("/docs/sub/b.txt") && l.contains("expired")),
        "{list}"
    );

    // A link dies with its account.
    let (bob_url, _) = share(&data, &[BOB, "bob.txt", "--expires", "never"]);
    let bob_file = curl(port, &bob_url, &[]);
    assert_eq!((bob_file.status, bob_file.text().as_str()), (200, "SECRET-OF-BOB\n"));
    assert!(ok(&data, &["share", "list", BOB], None).contains("expires never"));
    let out = tinydc(&data, &["user", "del", BOB, "--purge"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(curl(port, &bob_url, &[]).status, 404);
    assert!(!ok(&data, &["share", "list"], None).contains(BOB));

    suite.stop();
}
