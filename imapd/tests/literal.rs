//! Literal limits (RFC 7888): non-synchronizing literals of up to 4096 octets are taken in every
//! state (§5 LITERAL-, RFC 9051 §4.3), a non-synchronizing literal over the server's limit gets a
//! tagged `BAD [TOOBIG]` (§5) and is read and dropped when small or ends the connection when
//! large (§4), a synchronizing one over the limit is refused before it is sent (RFC 7889 §4),
//! and only LITERAL+ is advertised, never with LITERAL- (§5: not both).

mod common;

use common::*;

/// Small limits: 1024-octet lines (so before login literals are bounded by the 4096 floor) and
/// 10,000-octet literals after.
async fn small_limits() -> Server {
    Server::start_with(
        |config| {
            config.imap.max_line_length = 1024;
            config.imap.max_literal_size = 10_000;
        },
        None,
    )
    .await
}

fn capabilities(r: &Response) -> Vec<String> {
    r.find("* CAPABILITY").split(' ').map(str::to_string).collect()
}

#[tokio::test]
async fn literal_plus_is_advertised_alone() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    for login in [true, false] {
        let caps = capabilities(&c.ok("CAPABILITY").await);
        assert!(caps.iter().any(|w| w == "LITERAL+"), "{caps:?}");
        assert!(!caps.iter().any(|w| w == "LITERAL-"), "{caps:?}");
        if login {
            c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
        }
    }
}

/// RFC 7888 §5: a 4096-octet non-synchronizing literal is taken before login even when lines
/// are limited to 1024 octets; the command runs (here: a wrong password, NO).
#[tokio::test]
async fn four_kib_non_synchronizing_literal_before_login() {
    let server = small_limits().await;
    let mut c = server.connect().await;
    let tag = c.next_tag();
    let mut cmd = format!("{tag} LOGIN {USER} {{4096+}}\r\n").into_bytes();
    cmd.extend_from_slice(&[b'x'; 4096]);
    cmd.extend_from_slice(b"\r\n");
    c.write(&cmd).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.starts_with(&format!("{tag} NO")), "{r:#?}");
    // The connection goes on.
    c.ok(&format!("LOGIN {USER} {{{}+}}\r\n{PASS}", PASS.len())).await;
}

/// RFC 7888 §5 and §4: over the limit, a small non-synchronizing literal is answered
/// `BAD [TOOBIG]`, its bytes (and the rest of its command) are read and dropped, and the
/// connection goes on; nothing was stored.
#[tokio::test]
async fn too_big_non_synchronizing_literal_is_dropped() {
    let server = small_limits().await;
    let mut c = server.connect().await;
    let tag = c.next_tag();
    let mut cmd = format!("{tag} LOGIN {USER} {{5000+}}\r\n").into_bytes();
    cmd.extend_from_slice(&[b'x'; 5000]);
    cmd.extend_from_slice(b"\r\n");
    c.write(&cmd).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.starts_with(&format!("{tag} BAD [TOOBIG]")), "{r:#?}");
    c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;

    let body = message("big", &"y".repeat(20_000));
    let tag = c.next_tag();
    let mut cmd = format!("{tag} APPEND INBOX {{{}+}}\r\n", body.len()).into_bytes();
    cmd.extend_from_slice(&body);
    // A second message of the same MULTIAPPEND goes with it.
    cmd.extend_from_slice(b" {3+}\r\nabc\r\n");
    c.write(&cmd).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.starts_with(&format!("{tag} BAD [TOOBIG]")), "{r:#?}");
    let r = c.ok("STATUS INBOX (MESSAGES)").await;
    assert!(r.has("MESSAGES 0"), "{r:#?}");
    // Up to the limit is fine.
    let r = c.append("INBOX", "()", &message("fits", &"z".repeat(9_000))).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
}

/// RFC 7888 §4: a large non-synchronizing literal over the limit is not read: `BAD [TOOBIG]`,
/// BYE, and the connection closes.
#[tokio::test]
async fn huge_non_synchronizing_literal_closes() {
    let server = small_limits().await;
    let mut c = server.login().await;
    let tag = c.next_tag();
    c.write(format!("{tag} APPEND INBOX {{50000000+}}\r\n").as_bytes())
        .await;
    c.write(&[b'x'; 8192]).await;
    let tagged = c.line().await;
    assert!(tagged.starts_with(&format!("{tag} BAD [TOOBIG]")), "{tagged}");
    let bye = c.line().await;
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert!(c.closed().await);
}

/// RFC 7889 §4: a synchronizing literal over the limit is refused before it is sent, and the
/// client may go on.
#[tokio::test]
async fn too_big_synchronizing_literal_is_refused_first() {
    let server = small_limits().await;
    let mut c = server.login().await;
    let tag = c.next_tag();
    c.write(format!("{tag} APPEND INBOX {{20000}}\r\n").as_bytes()).await;
    let r = c.line().await;
    assert!(r.starts_with(&format!("{tag} NO [TOOBIG]")), "{r}");
    c.ok("NOOP").await;
}
