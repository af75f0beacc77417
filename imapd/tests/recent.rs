//! \Recent (RFC 3501 §2.3.2) across sessions: a new message is \Recent in exactly one session,
//! the first that has the mailbox selected (not examined) when it learns of it, and only there,
//! until that session deselects. SELECT/EXAMINE and STATUS counts, `* n RECENT`, FETCH FLAGS,
//! SEARCH RECENT / NEW / OLD, and STORE that cannot set or clear it.

mod common;

use common::*;

fn search(r: &Response) -> String {
    r.find("* SEARCH").to_string()
}

/// The UIDs `c` sees as \Recent (by FETCH FLAGS), checked against SEARCH RECENT.
async fn recent_uids(c: &mut Client) -> Vec<u32> {
    let r = c.ok("UID FETCH 1:* (FLAGS)").await;
    let mut uids = Vec::new();
    for line in &r.lines {
        if line.contains("\\Recent") {
            let uid = line.split("UID ").nth(1).unwrap().split([' ', ')']).next().unwrap();
            uids.push(uid.parse().unwrap());
        }
    }
    let mut expect = String::from("* SEARCH");
    for u in &uids {
        expect.push_str(&format!(" {u}"));
    }
    assert_eq!(search(&c.ok("UID SEARCH RECENT").await), expect);
    uids
}

#[tokio::test]
async fn a_delivery_is_recent_in_exactly_one_session() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    assert!(a.ok("SELECT INBOX").await.has("* 0 RECENT"));
    assert!(b.ok("SELECT INBOX").await.has("* 0 RECENT"));
    server.deliver(&message("one", "1")).await;
    // A asks first: the message is A's.
    let r = a.ok("NOOP").await;
    assert!(r.has("* 1 EXISTS") && r.has("* 1 RECENT"), "{r:#?}");
    let r = b.ok("NOOP").await;
    assert!(r.has("* 1 EXISTS") && r.has("* 0 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut a).await, vec![1]);
    assert_eq!(recent_uids(&mut b).await, Vec::<u32>::new());
    let r = a.ok("FETCH 1 (FLAGS)").await;
    assert!(r.has("* 1 FETCH (FLAGS (\\Recent))"), "{r:#?}");

    // Both sessions ask at the same moment, several times: each message still goes to one.
    for round in 0..5 {
        for i in 0..3 {
            server.deliver(&message(&format!("r{round}m{i}"), "x")).await;
        }
        let (ra, rb) = tokio::join!(a.ok("NOOP"), b.ok("NOOP"));
        assert!(ra.has("RECENT") && rb.has("RECENT"), "{ra:#?} {rb:#?}");
    }
    let (mut ua, mut ub) = (recent_uids(&mut a).await, recent_uids(&mut b).await);
    let mut all: Vec<u32> = ua.drain(..).chain(ub.drain(..)).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=16).collect::<Vec<u32>>(),
        "every message \\Recent exactly once"
    );
    // Nothing is left for anyone else.
    let mut c = server.login().await;
    let r = c.ok("STATUS INBOX (MESSAGES RECENT)").await;
    assert!(r.has("(MESSAGES 16 RECENT 0)"), "{r:#?}");
    let r = c.ok("SELECT INBOX").await;
    assert!(r.has("* 16 EXISTS") && r.has("* 0 RECENT"), "{r:#?}");
}

#[tokio::test]
async fn examine_does_not_claim() {
    let server = Server::start().await;
    server.deliver(&message("one", "1")).await;
    server.deliver(&message("two", "2")).await;
    let mut reader = server.login().await;
    let r = reader.ok("EXAMINE INBOX").await;
    // RFC 3501 §6.3.2: EXAMINE reports the RECENT count SELECT would, without claiming any.
    assert!(r.has("* 2 EXISTS") && r.has("* 2 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut reader).await, Vec::<u32>::new());
    assert_eq!(search(&reader.ok("SEARCH OLD").await), "* SEARCH 1 2");

    // Still unclaimed: STATUS counts them, and the next SELECT gets them.
    let mut other = server.login().await;
    let r = other.ok("STATUS INBOX (RECENT)").await;
    assert!(r.has("(RECENT 2)"), "{r:#?}");
    let r = other.ok("SELECT INBOX").await;
    assert!(r.has("* 2 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut other).await, vec![1, 2]);

    // A new message: the examining session hears of it first but does not claim it.
    server.deliver(&message("three", "3")).await;
    let r = reader.ok("NOOP").await;
    assert!(r.has("* 3 EXISTS") && r.has("* 0 RECENT"), "{r:#?}");
    let r = other.ok("NOOP").await;
    assert!(r.has("* 3 EXISTS") && r.has("* 3 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut reader).await, Vec::<u32>::new());
    let r = reader.ok("STATUS INBOX (RECENT)").await;
    assert!(r.has("(RECENT 0)"), "{r:#?}");
}

#[tokio::test]
async fn search_new_old_and_store_cannot_touch_recent() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.append("INBOX", "(\\Seen)", &message("old", "0")).await;
    // Someone else's SELECT takes the first message.
    let mut first = server.login().await;
    assert!(first.ok("SELECT INBOX").await.has("* 1 RECENT"));
    first.ok("LOGOUT").await;
    for i in 1..=3 {
        server.deliver(&message(&format!("m{i}"), "x")).await;
    }
    let r = c.ok("STATUS INBOX (MESSAGES RECENT UNSEEN)").await;
    assert!(r.has("(MESSAGES 4 RECENT 3 UNSEEN 3)"), "{r:#?}");
    let r = c.ok("SELECT INBOX").await;
    assert!(r.has("* 4 EXISTS") && r.has("* 3 RECENT"), "{r:#?}");
    c.ok("STORE 2 +FLAGS.SILENT (\\Seen)").await;
    assert_eq!(search(&c.ok("SEARCH RECENT").await), "* SEARCH 2 3 4");
    assert_eq!(search(&c.ok("SEARCH NEW").await), "* SEARCH 3 4");
    assert_eq!(search(&c.ok("SEARCH OLD").await), "* SEARCH 1");
    assert_eq!(search(&c.ok("SEARCH NOT RECENT").await), "* SEARCH 1");
    assert_eq!(search(&c.ok("SEARCH OR OLD NEW").await), "* SEARCH 1 3 4");
    assert_eq!(search(&c.ok("UID SEARCH RECENT SEEN").await), "* SEARCH 2");
    // \Recent cannot be set or cleared by STORE (RFC 3501 §2.3.2); the answer still shows it.
    let r = c.ok("STORE 1 +FLAGS (\\Recent)").await;
    assert!(r.has("* 1 FETCH (UID 1 FLAGS (\\Seen))"), "{r:#?}");
    let r = c.ok("STORE 3 FLAGS (\\Recent \\Flagged)").await;
    assert!(r.has("* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))"), "{r:#?}");
    let r = c.ok("STORE 4 -FLAGS (\\Recent)").await;
    assert!(r.has("* 4 FETCH (UID 4 FLAGS (\\Recent))"), "{r:#?}");
    assert_eq!(recent_uids(&mut c).await, vec![2, 3, 4]);
    // FLAGS and PERMANENTFLAGS never list \Recent.
    let r = c.ok("SELECT INBOX").await;
    assert!(!r.find("* FLAGS").contains("Recent") && !r.find("PERMANENTFLAGS").contains("Recent"));
}

#[tokio::test]
async fn reselect_after_the_claiming_session_closed() {
    let server = Server::start().await;
    server.deliver(&message("one", "1")).await;
    let mut a = server.login().await;
    assert!(a.ok("SELECT INBOX").await.has("* 1 RECENT"));
    // Still \Recent for A while it stays selected.
    assert_eq!(recent_uids(&mut a).await, vec![1]);
    a.ok("CLOSE").await;
    // Deselecting ends it: a new SELECT, by A or anyone, finds it not recent any more.
    let r = a.ok("SELECT INBOX").await;
    assert!(r.has("* 1 EXISTS") && r.has("* 0 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut a).await, Vec::<u32>::new());
    a.ok("LOGOUT").await;
    let mut b = server.login().await;
    let r = b.ok("SELECT INBOX").await;
    assert!(r.has("* 0 RECENT"), "{r:#?}");
    assert_eq!(search(&b.ok("SEARCH OLD").await), "* SEARCH 1");
    assert_eq!(search(&b.ok("SEARCH NEW").await), "* SEARCH");
}

#[tokio::test]
async fn append_copy_and_move_make_recent_messages() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("CREATE Filed").await;
    assert!(c.ok("SELECT INBOX").await.has("* 0 RECENT"));
    // An APPEND to the selected mailbox is picked up (and claimed) right after it.
    let r = c.append("INBOX", "()", &message("appended", "1")).await;
    assert!(r.has("* 1 EXISTS") && r.has("* 1 RECENT"), "{r:#?}");
    c.append("INBOX", "()", &message("appended2", "2")).await;
    // Copies into another mailbox wait there for the next session that selects it.
    c.ok("COPY 1:2 Filed").await;
    let r = c.ok("STATUS Filed (MESSAGES RECENT)").await;
    assert!(r.has("(MESSAGES 2 RECENT 2)"), "{r:#?}");
    c.ok("MOVE 1 Filed").await;
    let r = c.ok("STATUS Filed (MESSAGES RECENT)").await;
    assert!(r.has("(MESSAGES 3 RECENT 3)"), "{r:#?}");
    let mut other = server.login().await;
    other.ok("SELECT Filed").await;
    assert_eq!(recent_uids(&mut other).await, vec![1, 2, 3]);
    // Moving back into INBOX, selected by C: C learns of it and claims it.
    let r = other.ok("MOVE 3 INBOX").await;
    assert!(r.has("* 3 EXPUNGE"), "{r:#?}");
    let r = c.ok("NOOP").await;
    assert!(r.has("* 2 EXISTS") && r.has("* 2 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut c).await, vec![2, 3]);
}

/// The APPEND into the selected mailbox claims \Recent in its own transaction and tells the
/// client from its own answer (`SelectedView`); when someone else changed the mailbox in between,
/// the sync after the command does it instead. Either way each message is \Recent once.
#[tokio::test]
async fn an_own_append_is_recent_in_the_appending_session_only() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    assert!(a.ok("SELECT INBOX").await.has("* 0 RECENT"));
    assert!(b.ok("SELECT INBOX").await.has("* 0 RECENT"));
    // A new keyword is announced before the EXISTS that brings it (RFC 3501 §7.2.6).
    let r = a.append("INBOX", "($Work)", &message("mine", "1")).await;
    assert!(r.tagged.contains("OK [APPENDUID "), "{r:#?}");
    let flags = r
        .lines
        .iter()
        .position(|l| l.starts_with("* FLAGS") && l.contains("$Work"));
    let exists = r.lines.iter().position(|l| l == "* 1 EXISTS");
    assert!(flags.is_some() && flags < exists, "{r:#?}");
    assert!(r.has("* 1 RECENT"), "{r:#?}");
    let r = a.ok("FETCH 1 (FLAGS)").await;
    assert!(r.has("* 1 FETCH (FLAGS ($Work \\Recent))"), "{r:#?}");
    let r = b.ok("NOOP").await;
    assert!(r.has("* 1 EXISTS") && r.has("* 0 RECENT"), "{r:#?}");

    // A delivery A has not seen yet: A's next APPEND does not follow the MODSEQ A's view knew,
    // so the sync after it brings both in, and A claims both (it learns of both first).
    server.deliver(&message("delivered", "2")).await;
    let r = a.append("INBOX", "()", &message("mine again", "3")).await;
    assert!(r.has("* 3 EXISTS") && r.has("* 3 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut a).await, vec![1, 2, 3]);
    let r = b.ok("NOOP").await;
    assert!(r.has("* 3 EXISTS") && r.has("* 0 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut b).await, Vec::<u32>::new());

    // B's own APPEND while A has the mailbox selected too: B's, not A's.
    let r = b.append("INBOX", "()", &message("b's", "4")).await;
    assert!(r.has("* 4 EXISTS") && r.has("* 1 RECENT"), "{r:#?}");
    let r = a.ok("NOOP").await;
    assert!(r.has("* 4 EXISTS") && r.has("* 3 RECENT"), "{r:#?}");
    assert_eq!(recent_uids(&mut b).await, vec![4]);
}

/// The session's selected mailbox was renamed and another created under its old name: an APPEND
/// to that name goes to the new mailbox (resolved by name in the store's statement) and claims
/// nothing there for the session, whose view is of the other mailbox.
#[tokio::test]
async fn an_append_to_a_name_selected_before_a_rename_claims_nothing() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut admin = server.login().await;
    a.ok("CREATE Work").await;
    a.ok("SELECT Work").await;
    admin.ok("RENAME Work Old").await;
    admin.ok("CREATE Work").await;
    let r = a.append("Work", "()", &message("into the new Work", "1")).await;
    assert!(r.tagged.contains("OK [APPENDUID "), "{r:#?}");
    assert!(!r.has("* 1 EXISTS"), "the selected mailbox got nothing: {r:#?}");
    let r = admin.ok("STATUS Old (MESSAGES)").await;
    assert!(r.has("(MESSAGES 0)"), "{r:#?}");
    let r = admin.ok("SELECT Work").await;
    assert!(r.has("* 1 EXISTS") && r.has("* 1 RECENT"), "{r:#?}");
}
