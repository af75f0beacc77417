//! Quota warnings (shared::quota::warn) against real PostgreSQL, through the mail store's own
//! write paths: one message per crossing of 80% and 95%, again after falling below, none
//! without a limit, never refused by the quota, never twice for one crossing.

use chrono::Utc;
use shared::mailstore::{DeliveryTarget, FlagOp, MailStore};
use shared::quota::warn::{self, Level, Outcome};
use shared::quota::{self, Usage};
use shared::testing::TestEnv;

/// A message of exactly `size` bytes.
fn message(size: usize) -> Vec<u8> {
    let head = b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: filler\r\n\r\n".to_vec();
    assert!(size > head.len());
    let mut raw = head;
    raw.resize(size, b'x');
    raw
}

async fn deliver(mail: &MailStore, user_id: i64, size: usize) -> u32 {
    let target = DeliveryTarget {
        user_id,
        mailbox_id: None,
        reservation: None,
    };
    mail.deliver(vec![target], &message(size), &[], Utc::now())
        .await
        .unwrap()[0]
        .uid
}

/// The quota warnings in the user's INBOX, as (uid, raw message), in order.
async fn warnings(mail: &MailStore, user_id: i64) -> Vec<(u32, String)> {
    let inbox = mail.mailbox(user_id, "INBOX").await.unwrap();
    let uids: Vec<u32> = mail
        .message_states(user_id, inbox.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect();
    let mut found = Vec::new();
    for m in mail.fetch(user_id, inbox.id, &uids).await.unwrap() {
        if m.envelope
            .subject
            .as_deref()
            .is_some_and(|s| s.starts_with("Your storage is"))
        {
            let raw = mail.blobs().read(&m.blob).await.unwrap();
            found.push((m.uid, String::from_utf8(raw).unwrap()));
        }
    }
    found
}

fn subjects(found: &[(u32, String)]) -> Vec<String> {
    found
        .iter()
        .map(|(_, raw)| {
            raw.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .collect()
}

async fn expunge(mail: &MailStore, user_id: i64, uid: u32) {
    let inbox = mail.mailbox(user_id, "INBOX").await.unwrap();
    mail.store_flags(user_id, inbox.id, &[uid], FlagOp::Add, &["\\Deleted".to_string()], None)
        .await
        .unwrap();
    assert_eq!(mail.expunge(user_id, inbox.id, Some(&[uid])).await.unwrap(), vec![uid]);
}

#[tokio::test]
async fn each_crossing_warns_once_and_again_after_falling_below() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let alice = env.add_user("alice@example.test", "pw", Some(100_000)).await;

    let first = deliver(mail, alice.id, 50_000).await;
    assert!(warnings(mail, alice.id).await.is_empty(), "50% warns nobody");

    // 50% -> 81%: the 80% warning, addressed and worded as promised.
    deliver(mail, alice.id, 31_000).await;
    let found = warnings(mail, alice.id).await;
    assert_eq!(subjects(&found), ["Your storage is 80% full"]);
    let text = &found[0].1;
    for part in [
        "From: Postmaster <postmaster@example.test>\r\n",
        "\r\nTo: <alice@example.test>\r\n",
        "\r\nAuto-Submitted: auto-generated\r\n",
        "\r\nMessage-ID: <quota-",
        "\r\nDate: ",
        "you use 79.1 KiB of your 97.7 KiB",
        "your mail (every folder, Sent and Trash included) and your files",
        "delete mail you no longer need",
    ] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }

    // Another write above 80% (and below 95%): nothing new.
    deliver(mail, alice.id, 1_000).await;
    assert_eq!(warnings(mail, alice.id).await.len(), 1);

    // Over 95%: the second warning, once.
    deliver(mail, alice.id, 13_000).await;
    assert_eq!(
        subjects(&warnings(mail, alice.id).await),
        ["Your storage is 80% full", "Your storage is 95% full"]
    );
    deliver(mail, alice.id, 500).await;
    assert_eq!(warnings(mail, alice.id).await.len(), 2);

    // Back below 80% (EXPUNGE), then over it again: a new 80% warning.
    expunge(mail, alice.id, first).await;
    deliver(mail, alice.id, 1_000).await;
    assert_eq!(warnings(mail, alice.id).await.len(), 2, "still below 80%");
    deliver(mail, alice.id, 40_000).await;
    assert_eq!(
        subjects(&warnings(mail, alice.id).await),
        [
            "Your storage is 80% full",
            "Your storage is 95% full",
            "Your storage is 80% full"
        ]
    );
    // The warnings are counted as mail like any message.
    let info = quota::info(&env.context.db, alice.id).await.unwrap();
    assert_eq!(
        info.mail_bytes,
        mail.fetch(
            alice.id,
            mail.mailbox(alice.id, "INBOX").await.unwrap().id,
            &(1..=20).collect::<Vec<_>>()
        )
        .await
        .unwrap()
        .iter()
        .map(|m| m.size)
        .sum::<u64>()
    );
}

#[tokio::test]
async fn a_copy_crosses_too_and_a_move_does_not() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let alice = env.add_user("alice@example.test", "pw", Some(100_000)).await;
    let uid = deliver(mail, alice.id, 45_000).await;
    let inbox = mail.mailbox(alice.id, "INBOX").await.unwrap();
    let archive = mail.mailbox(alice.id, "Archive").await.unwrap();
    // MOVE changes no usage: 45%, nothing.
    let moved = mail
        .move_messages(alice.id, inbox.id, &[uid], archive.id)
        .await
        .unwrap();
    assert!(warnings(mail, alice.id).await.is_empty());
    // COPY charges the copy: 90%.
    mail.copy(alice.id, archive.id, &[moved[0].1], inbox.id).await.unwrap();
    assert_eq!(subjects(&warnings(mail, alice.id).await), ["Your storage is 80% full"]);
}

#[tokio::test]
async fn the_warning_is_not_refused_by_a_full_quota_and_starts_no_loop() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let alice = env.add_user("alice@example.test", "pw", Some(10_000)).await;
    // 99.5% used: the warning (about 1 KiB) does not fit, and is delivered anyway.
    deliver(mail, alice.id, 9_950).await;
    assert_eq!(subjects(&warnings(mail, alice.id).await), ["Your storage is 95% full"]);
    let info = quota::info(&env.context.db, alice.id).await.unwrap();
    assert!(info.used() > 10_000, "{info:?}");
    // The next write is refused as before, and brings no second warning.
    let target = DeliveryTarget {
        user_id: alice.id,
        mailbox_id: None,
        reservation: None,
    };
    let refused = mail
        .deliver(vec![target], &message(100), &[], Utc::now())
        .await
        .unwrap_err();
    assert!(refused.is_over_quota(), "{refused}");
    assert_eq!(warn::check(mail, &[alice.id]).await.unwrap(), []);
    assert_eq!(warnings(mail, alice.id).await.len(), 1);
}

#[tokio::test]
async fn a_user_without_a_limit_gets_none() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let bob = env.add_user("bob@example.test", "pw", None).await;
    deliver(mail, bob.id, 200_000).await;
    assert_eq!(warn::check(mail, &[bob.id]).await.unwrap(), []);
    assert!(warnings(mail, bob.id).await.is_empty());
    assert_eq!(
        warn::level(&quota::info(&env.context.db, bob.id).await.unwrap()),
        Level::Below
    );
}

#[tokio::test]
async fn a_new_limit_warns_or_rearms() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let db = &env.context.db;
    let alice = env.add_user("alice@example.test", "pw", Some(100_000)).await;
    deliver(mail, alice.id, 50_000).await;
    // `tinydc quota set` does this: set the limit, then check.
    quota::set_limit(db, alice.id, Some(60_000)).await.unwrap();
    assert_eq!(
        warn::check(mail, &[alice.id]).await.unwrap(),
        [(alice.id, Outcome::Warned(Level::Near))]
    );
    // Unlimited: the warning is armed again; lowering once more warns again.
    quota::set_limit(db, alice.id, None).await.unwrap();
    assert_eq!(
        warn::check(mail, &[alice.id]).await.unwrap(),
        [(alice.id, Outcome::Rearmed)]
    );
    quota::set_limit(db, alice.id, Some(52_000)).await.unwrap();
    assert_eq!(
        warn::check(mail, &[alice.id]).await.unwrap(),
        [(alice.id, Outcome::Warned(Level::Critical))]
    );
    assert_eq!(
        subjects(&warnings(mail, alice.id).await),
        ["Your storage is 80% full", "Your storage is 95% full"]
    );
}

/// A writer that committed its usage and died before its check (here: usage charged through
/// the quota functions alone): the sweep every daemon runs at start sends the warning, once.
#[tokio::test]
async fn a_crossing_whose_check_was_lost_is_warned_at_start_once() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let db = &env.context.db;
    let alice = env.add_user("alice@example.test", "pw", Some(100_000)).await;
    let bob = env.add_user("bob@example.test", "pw", Some(100_000)).await;
    let mut tx = db.begin().await.unwrap();
    quota::charge(&mut tx, alice.id, Usage::Files, 85_000).await.unwrap();
    quota::charge(&mut tx, bob.id, Usage::Files, 10_000).await.unwrap();
    tx.commit().await.unwrap();
    assert!(warnings(mail, alice.id).await.is_empty());

    assert_eq!(
        warn::sweep(mail).await.unwrap(),
        [(alice.id, Outcome::Warned(Level::Near))]
    );
    assert_eq!(warn::sweep(mail).await.unwrap(), []);
    assert_eq!(warnings(mail, alice.id).await.len(), 1);
    assert!(warnings(mail, bob.id).await.is_empty());
}

/// Every daemon (and every write) may check the same crossing at once: one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_crossing_store_one_warning() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let db = &env.context.db;
    let alice = env.add_user("alice@example.test", "pw", Some(100_000)).await;
    let mut tx = db.begin().await.unwrap();
    quota::charge(&mut tx, alice.id, Usage::Files, 96_000).await.unwrap();
    tx.commit().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let mail = mail.clone();
        tasks.push(tokio::spawn(
            async move { warn::check(&mail, &[alice.id]).await.unwrap() },
        ));
    }
    let mut warned = 0;
    for t in tasks {
        warned += t.await.unwrap().len();
    }
    assert_eq!(warned, 1);
    assert_eq!(subjects(&warnings(mail, alice.id).await), ["Your storage is 95% full"]);
}
