//! The mail store against real PostgreSQL: delivery, UIDs under concurrency, flags, copy, move,
//! expunge, quota charging and events.

use std::collections::HashSet;

use chrono::Utc;
use shared::blobs::BlobStore;
use shared::events::Event;
use shared::mailstore::{DeliveryTarget, FlagOp, MailStore, MessageState, SpecialUse, StoreError};
use shared::quota;
use shared::testing::TestEnv;

fn message(n: usize) -> Vec<u8> {
    format!("From: a@example.test\r\nTo: alice@example.test\r\nSubject: message {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

#[tokio::test]
async fn new_users_get_the_default_mailboxes() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let boxes = env.context.mail.list_mailboxes(user.id).await.unwrap();
    let names: Vec<&str> = boxes.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]);
    let trash = env
        .context
        .mail
        .mailbox_with_use(user.id, SpecialUse::Trash)
        .await
        .unwrap();
    assert_eq!(trash.name, "Trash");
    assert_eq!(env.context.mail.mailbox(user.id, "inbox").await.unwrap().name, "INBOX");
}

#[tokio::test]
async fn concurrent_deliveries_get_unique_increasing_uids() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = env.context.mail.mailbox(user.id, "INBOX").await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..48 {
        let mail = env.context.mail.clone();
        tasks.push(tokio::spawn(async move {
            mail.append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
                .await
                .unwrap()
                .uid
        }));
    }
    let mut uids = Vec::new();
    for t in tasks {
        uids.push(t.await.unwrap());
    }
    let unique: HashSet<u32> = uids.iter().copied().collect();
    assert_eq!(unique.len(), 48, "duplicate UIDs: {uids:?}");
    let stored: Vec<u32> = env
        .context
        .mail
        .message_states(user.id, inbox.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(stored, (1..=48).collect::<Vec<u32>>());
    let after = env.context.mail.mailbox(user.id, "INBOX").await.unwrap();
    assert_eq!(after.uidnext, 49);
    // Group commit (issue #12): deliveries that queued behind a committing one shared its
    // successor's transaction, so fewer transactions wrote the 48 rows (rows written by one
    // transaction have the same xmin).
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM messages WHERE mailbox_id = $1")
        .bind(inbox.id)
        .fetch_one(&env.context.db)
        .await
        .unwrap();
    assert!(
        transactions < 48,
        "48 concurrent deliveries took {transactions} transactions"
    );
    // Every message was charged, and all 48 bodies are distinct blobs.
    let info = quota::info(&env.context.db, user.id).await.unwrap();
    let total: u64 = (0..48).map(|n| message(n).len() as u64).sum();
    assert_eq!(info.mail_bytes, total);
}

/// Deliveries of a user without a limit (reserved as such, `quota::Reservation::UNLIMITED`)
/// with small bodies take one statement each, alone or in a group commit (issue #12): they
/// still get unique increasing UIDs and MODSEQs, share transactions when concurrent, charge
/// every byte, count a body delivered several times once per copy, and wake listeners with
/// the event of their mailbox (its payload built by the statement itself).
#[tokio::test]
async fn unlimited_deliveries_in_one_statement_keep_uids_usage_and_events_right() {
    let env = TestEnv::new().await;
    let mut events = env.context.events.subscribe();
    let user = env.add_user("alice@example.test", "pw", None).await;
    let db = &env.context.db;
    let inbox = env.context.mail.mailbox(user.id, "INBOX").await.unwrap();
    // Every fourth message has the same body: one blob, referenced once per copy.
    let body = |n: usize| if n.is_multiple_of(4) { message(1000) } else { message(n) };
    let mut tasks = Vec::new();
    for n in 0..48 {
        let mail = env.context.mail.clone();
        let db = db.clone();
        let blobs = env.context.blobs.clone();
        tasks.push(tokio::spawn(async move {
            let raw = body(n);
            let reservation = quota::reserve(&db, user.id, raw.len() as u64).await.unwrap();
            assert_eq!(reservation.id, quota::Reservation::UNLIMITED);
            let target = DeliveryTarget {
                user_id: user.id,
                // By name (INBOX) and by id, as SMTP and APPEND name it.
                mailbox_id: n.is_multiple_of(2).then_some(inbox.id),
                reservation: Some(reservation),
            };
            // Flags of each message (APPEND's), carried per message through a group.
            let flags: Vec<String> = match n % 3 {
                0 => vec![],
                1 => vec!["\\Seen".into()],
                _ => vec!["\\Flagged".into(), format!("$label{n}")],
            };
            let done = mail.deliver(vec![target], &raw, &flags, Utc::now()).await.unwrap();
            // Answered only once the body's file (written while the statement ran) is whole.
            let path = blobs.path(&shared::blobs::BlobId::of(&raw));
            assert_eq!(
                std::fs::read(&path).unwrap(),
                raw,
                "{} after the delivery's answer",
                path.display()
            );
            (done, flags)
        }));
    }
    let mut appended = Vec::new();
    let mut flags_of = std::collections::HashMap::new();
    for t in tasks {
        let (done, flags) = t.await.unwrap();
        flags_of.insert(done[0].uid, flags);
        appended.extend(done);
    }
    let mut uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
    uids.sort_unstable();
    assert_eq!(uids, (1..=48).collect::<Vec<u32>>());
    let mut modseqs: Vec<u64> = appended.iter().map(|a| a.modseq).collect();
    modseqs.sort_unstable();
    modseqs.dedup();
    assert_eq!(modseqs.len(), 48, "MODSEQs shared: {modseqs:?}");
    assert!(
        appended
            .iter()
            .all(|a| a.mailbox_id == inbox.id && a.uidvalidity == inbox.uidvalidity)
    );
    let stored = env.context.mail.message_states(user.id, inbox.id).await.unwrap();
    assert_eq!(stored.len(), 48);
    for state in &stored {
        let done = appended.iter().find(|a| a.uid == state.uid).expect("answered");
        assert_eq!(state.modseq, done.modseq);
        assert_eq!(state.flags, flags_of[&state.uid], "flags of UID {}", state.uid);
    }
    let after = env.context.mail.mailbox(user.id, "INBOX").await.unwrap();
    assert_eq!(after.uidnext, 49);
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM messages WHERE mailbox_id = $1")
        .bind(inbox.id)
        .fetch_one(db)
        .await
        .unwrap();
    assert!(
        transactions < 48,
        "48 concurrent deliveries took {transactions} transactions"
    );
    let total: u64 = (0..48).map(|n| body(n).len() as u64).sum();
    assert_eq!(quota::info(db, user.id).await.unwrap().mail_bytes, total);
    let shared_refs: i64 = sqlx::query_scalar("SELECT refcount FROM blobs WHERE id = $1")
        .bind(shared::blobs::BlobId::of(&message(1000)).0)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(shared_refs, 12);
    let mut woken = 0;
    while woken == 0 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        if event
            == (Event::Mailbox {
                user_id: user.id,
                mailbox_id: inbox.id,
            })
        {
            woken += 1;
        }
    }
    // Every body is readable from its file.
    for m in env.context.mail.fetch(user.id, inbox.id, &uids).await.unwrap() {
        let raw = env.context.blobs.read(&m.blob).await.unwrap();
        assert_eq!(raw.len() as u64, m.size);
    }
    // What `tinydc check` looks at: the mailbox counters and the recorded usage agree with
    // the rows (a recount corrects nothing).
    let mut conn = db.acquire().await.unwrap();
    let problems = shared::mailstore::counter_problems(&mut conn).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    drop(conn);
    let files = tempfile::tempdir().unwrap();
    let recount = quota::recalc(db, user.id, files.path()).await.unwrap();
    assert!(!recount.corrected(), "{recount:?}");
}

/// APPENDs of sessions that have the mailbox selected and claim \Recent for their view
/// (`SelectedView`) share group commits as one statement per message in one transaction: each
/// gets its own UID and MODSEQ, and the \Recent mark never goes backwards.
#[tokio::test]
async fn concurrent_appends_claiming_recent_keep_uids_right() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let db = &env.context.db;
    let inbox = env.context.mail.mailbox(user.id, "INBOX").await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..24 {
        let mail = env.context.mail.clone();
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let raw = message(n);
            let reservation = quota::reserve(&db, user.id, raw.len() as u64).await.unwrap();
            let view = shared::mailstore::SelectedView {
                mailbox_id: inbox.id,
                known_modseq: 0,
                claim_recent: true,
            };
            mail.append_named(user.id, "INBOX", Some(view), raw, &[], Utc::now(), Some(reservation))
                .await
                .unwrap()
        }));
    }
    let mut uids = Vec::new();
    for t in tasks {
        let done = t.await.unwrap();
        assert!(done.recent_from.is_none_or(|from| from <= done.uid), "{done:?}");
        uids.push(done.uid);
    }
    uids.sort_unstable();
    assert_eq!(uids, (1..=24).collect::<Vec<u32>>());
    let states = env.context.mail.message_states(user.id, inbox.id).await.unwrap();
    let mut modseqs: Vec<u64> = states.iter().map(|m| m.modseq).collect();
    modseqs.dedup();
    assert_eq!(modseqs.len(), 24);
    assert_eq!(
        quota::info(db, user.id).await.unwrap().mail_bytes,
        (0..24).map(|n| message(n).len() as u64).sum::<u64>()
    );
}

/// A limit set after a write was reserved without one still binds that write: the
/// one-statement delivery finds it and writes nothing, and the two-step path refuses the
/// message over the new limit (nothing stored, no UID used) or charges it when it fits.
#[tokio::test]
async fn a_limit_set_after_an_unlimited_reservation_still_binds_the_delivery() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let db = &env.context.db;
    let mail = &env.context.mail;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let raw = message_of_size(1, 1000);
    let reservation = quota::reserve(db, user.id, 1000).await.unwrap();
    assert_eq!(reservation.id, quota::Reservation::UNLIMITED);
    quota::set_limit(db, user.id, Some(500)).await.unwrap();
    let err = mail
        .append(user.id, inbox.id, &raw, &[], Utc::now(), Some(reservation))
        .await
        .unwrap_err();
    assert!(err.is_over_quota(), "{err}");
    assert!(mail.message_states(user.id, inbox.id).await.unwrap().is_empty());
    assert_eq!(mail.mailbox(user.id, "INBOX").await.unwrap().uidnext, 1);
    assert_eq!(quota::info(db, user.id).await.unwrap().mail_bytes, 0);
    let reservation = quota::reserve_read(db, user.id, None, 1000).await.unwrap();
    quota::set_limit(db, user.id, Some(5000)).await.unwrap();
    let done = mail
        .append(user.id, inbox.id, &raw, &[], Utc::now(), Some(reservation))
        .await
        .unwrap();
    assert_eq!(done.uid, 1);
    assert_eq!(quota::info(db, user.id).await.unwrap().mail_bytes, 1000);
    // Without a limit again, the one-statement path: NoSuchMailbox for a mailbox not the user's.
    quota::set_limit(db, user.id, None).await.unwrap();
    let reservation = quota::reserve(db, user.id, 1000).await.unwrap();
    let target = DeliveryTarget {
        user_id: user.id,
        mailbox_id: Some(inbox.id + 1_000_000),
        reservation: Some(reservation),
    };
    assert!(matches!(
        mail.deliver(vec![target], &raw, &[], Utc::now()).await,
        Err(StoreError::NoSuchMailbox)
    ));
    assert_eq!(quota::info(db, user.id).await.unwrap().mail_bytes, 1000);
}

#[tokio::test]
async fn flags_copy_move_expunge_keep_quota_and_modseq_right() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let trash = mail.mailbox(user.id, "Trash").await.unwrap();
    for n in 0..3 {
        mail.append(user.id, inbox.id, &message(n), &["\\seen".into()], Utc::now(), None)
            .await
            .unwrap();
    }
    let size: u64 = (0..3).map(|n| message(n).len() as u64).sum();

    let change = mail
        .store_flags(user.id, inbox.id, &[1, 2], FlagOp::Add, &["\\Deleted".into()], None)
        .await
        .unwrap();
    assert_eq!(change.changed.len(), 2);
    assert_eq!(change.changed[0].flags, vec!["\\Seen", "\\Deleted"]);
    let modseq = change.changed[0].modseq;
    // UNCHANGEDSINCE below the current MODSEQ refuses the change (RFC 7162 §3.2).
    let refused = mail
        .store_flags(
            user.id,
            inbox.id,
            &[1],
            FlagOp::Remove,
            &["\\Seen".into()],
            Some(modseq - 1),
        )
        .await
        .unwrap();
    assert_eq!(refused.modified, vec![1]);
    // Setting a flag that is already there changes nothing.
    let same = mail
        .store_flags(user.id, inbox.id, &[1], FlagOp::Add, &["\\Seen".into()], None)
        .await
        .unwrap();
    assert!(same.changed.is_empty());

    let copied = mail.copy(user.id, inbox.id, &[3], trash.id).await.unwrap();
    assert_eq!(copied, vec![(3, 1)]);
    assert_eq!(
        quota::info(&env.context.db, user.id).await.unwrap().mail_bytes,
        size + message(2).len() as u64
    );

    let refs: i64 = sqlx::query_scalar("SELECT refcount FROM blobs WHERE id = $1")
        .bind(shared::blobs::BlobId::of(&message(2)).0)
        .fetch_one(&env.context.db)
        .await
        .unwrap();
    assert_eq!(refs, 2, "the copy holds its own reference to the body");

    let moved = mail.move_messages(user.id, inbox.id, &[3], trash.id).await.unwrap();
    assert_eq!(moved, vec![(3, 2)]);
    assert_eq!(
        quota::info(&env.context.db, user.id).await.unwrap().mail_bytes,
        size + message(2).len() as u64
    );

    let expunged = mail.expunge(user.id, inbox.id, None).await.unwrap();
    assert_eq!(expunged, vec![1, 2]);
    assert!(mail.message_states(user.id, inbox.id).await.unwrap().is_empty());
    assert_eq!(
        quota::info(&env.context.db, user.id).await.unwrap().mail_bytes,
        2 * message(2).len() as u64
    );

    let fetched = mail.fetch(user.id, trash.id, &[1, 2]).await.unwrap();
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].envelope.subject.as_deref(), Some("message 2"));
    assert_eq!(mail.blobs().read(&fetched[0].blob).await.unwrap(), message(2));
}

#[tokio::test]
async fn one_user_cannot_touch_anothers_mailboxes() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let alice = env.add_user("alice@example.test", "pw", None).await;
    let bob = env.add_user("bob@example.test", "pw", None).await;
    let alice_inbox = mail.mailbox(alice.id, "INBOX").await.unwrap();
    mail.append(alice.id, alice_inbox.id, &message(1), &[], Utc::now(), None)
        .await
        .unwrap();
    let bob_inbox = mail.mailbox(bob.id, "INBOX").await.unwrap();
    assert!(mail.fetch(bob.id, alice_inbox.id, &[1]).await.unwrap().is_empty());
    assert!(mail.message_states(bob.id, alice_inbox.id).await.unwrap().is_empty());
    assert!(
        mail.append(bob.id, alice_inbox.id, &message(2), &[], Utc::now(), None)
            .await
            .is_err()
    );
    assert!(mail.copy(bob.id, alice_inbox.id, &[1], bob_inbox.id).await.is_err());
    assert!(
        mail.store_flags(bob.id, alice_inbox.id, &[1], FlagOp::Add, &["\\Deleted".into()], None)
            .await
            .is_err()
    );
    assert!(mail.expunge(bob.id, alice_inbox.id, None).await.is_err());
    assert!(mail.mailbox_by_id(bob.id, alice_inbox.id).await.is_err());
    // The reads and the \Recent claim that imapd's FETCH, SEARCH, sync and SELECT use.
    assert!(mail.fetch_light(bob.id, alice_inbox.id, &[1]).await.unwrap().is_empty());
    assert!(matches!(
        mail.changes_since(bob.id, alice_inbox.id, 0, 0).await,
        Err(StoreError::NoSuchMailbox)
    ));
    assert_eq!(mail.claim_recent(bob.id, alice_inbox.id, 1).await.unwrap(), None);
    // Bob's attempt moved nothing: Alice's message is still there for her to claim.
    assert_eq!(
        mail.claim_recent(alice.id, alice_inbox.id, 1).await.unwrap(),
        Some(1..=1)
    );
    // STATUS by name finds only the user's own mailbox of that name.
    let bob_status = mail.mailbox_status(bob.id, "INBOX").await.unwrap();
    assert_eq!(bob_status.mailbox.id, bob_inbox.id);
    assert_eq!(bob_status.messages, 0);
}

#[tokio::test]
async fn delivery_over_quota_is_refused_and_stores_nothing() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", Some(100)).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let big = vec![b'x'; 200];
    let err = mail
        .append(user.id, inbox.id, &big, &[], Utc::now(), None)
        .await
        .unwrap_err();
    assert!(err.is_over_quota(), "{err}");
    assert!(mail.message_states(user.id, inbox.id).await.unwrap().is_empty());
    assert_eq!(quota::info(&env.context.db, user.id).await.unwrap().mail_bytes, 0);
}

#[tokio::test]
async fn a_failed_delivery_gives_its_reservation_back() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", Some(1000)).await;
    let reservation = quota::reserve(&env.context.db, user.id, 500).await.unwrap();
    // 1200 bytes against a 500-byte reservation under a 1000-byte limit: the delivery is refused.
    let target = DeliveryTarget {
        user_id: user.id,
        mailbox_id: None,
        reservation: Some(reservation),
    };
    let big = vec![b'x'; 1200];
    assert!(
        env.context
            .mail
            .deliver(vec![target], &big, &[], Utc::now())
            .await
            .unwrap_err()
            .is_over_quota()
    );
    let info = quota::info(&env.context.db, user.id).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (0, 0));
}

/// A one-recipient delivery runs its statements while its body is being written (group.rs);
/// when the body cannot be stored (here: the disk's free-space reserve), the delivery fails as
/// disk full and its transaction commits nothing: no row, no UID used up, no usage, and its
/// reservation is given back.
#[tokio::test]
async fn a_body_that_cannot_be_stored_commits_nothing() {
    let env = TestEnv::new().await;
    let db = &env.context.db;
    let user = env.add_user("alice@example.test", "pw", Some(100_000)).await;
    let full_disk = MailStore::new(
        db.clone(),
        BlobStore::new(env.dir.path().join("full-blobs")).with_min_free(u64::MAX),
    );
    for (n, reserved) in [(1, true), (2, false)] {
        let reservation = if reserved {
            Some(quota::reserve(db, user.id, 500).await.unwrap())
        } else {
            None
        };
        let target = DeliveryTarget {
            user_id: user.id,
            mailbox_id: None,
            reservation,
        };
        let refused = full_disk
            .deliver(vec![target], &message(n), &[], Utc::now())
            .await
            .unwrap_err();
        assert!(refused.is_disk_full(), "{refused}");
    }
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (0, 0));
    let inbox = env.context.mail.mailbox(user.id, "INBOX").await.unwrap();
    assert!(
        env.context
            .mail
            .message_states(user.id, inbox.id)
            .await
            .unwrap()
            .is_empty()
    );
    let target = DeliveryTarget {
        user_id: user.id,
        mailbox_id: None,
        reservation: None,
    };
    let stored = env
        .context
        .mail
        .deliver(vec![target], &message(3), &[], Utc::now())
        .await
        .unwrap();
    assert_eq!(stored[0].uid, 1, "the refused deliveries used no UID");
    let stored = env.context.mail.fetch(user.id, inbox.id, &[1]).await.unwrap();
    let raw = env.context.mail.blobs().read(&stored[0].blob).await.unwrap();
    assert_eq!(raw, message(3));
}

#[tokio::test]
async fn multi_recipient_delivery_is_one_blob_and_wakes_listeners() {
    let env = TestEnv::new().await;
    let mut events = env.context.events.subscribe();
    let alice = env.add_user("alice@example.test", "pw", None).await;
    let bob = env.add_user("bob@example.test", "pw", None).await;
    let targets = vec![
        DeliveryTarget {
            user_id: alice.id,
            mailbox_id: None,
            reservation: None,
        },
        DeliveryTarget {
            user_id: bob.id,
            mailbox_id: None,
            reservation: None,
        },
    ];
    let done = env
        .context
        .mail
        .deliver(targets, &message(7), &[], Utc::now())
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    let refs: i64 = sqlx::query_scalar("SELECT refcount FROM blobs")
        .fetch_one(&env.context.db)
        .await
        .unwrap();
    assert_eq!(refs, 2);
    let mut woken = HashSet::new();
    while woken.len() < 2 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let Event::Mailbox { user_id, .. } = event {
            woken.insert(user_id);
        }
    }
    assert_eq!(woken, HashSet::from([alice.id, bob.id]));
}

#[tokio::test]
async fn mailboxes_create_rename_delete() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    mail.create_mailbox(user.id, "Projects", None).await.unwrap();
    mail.create_mailbox(user.id, "Projects/2026", None).await.unwrap();
    assert!(mail.create_mailbox(user.id, "Projects", None).await.is_err());
    mail.rename_mailbox(user.id, "Projects", "Work").await.unwrap();
    assert!(mail.mailbox(user.id, "Work/2026").await.is_ok());
    assert!(mail.mailbox(user.id, "Projects").await.is_err());
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    mail.append(user.id, inbox.id, &message(1), &[], Utc::now(), None)
        .await
        .unwrap();
    mail.rename_mailbox(user.id, "INBOX", "Old").await.unwrap();
    let old = mail.mailbox(user.id, "Old").await.unwrap();
    assert_eq!(mail.message_states(user.id, old.id).await.unwrap().len(), 1);
    assert!(mail.message_states(user.id, inbox.id).await.unwrap().is_empty());
    mail.delete_mailbox(user.id, "Old").await.unwrap();
    assert!(mail.delete_mailbox(user.id, "INBOX").await.is_err());
    assert_eq!(quota::info(&env.context.db, user.id).await.unwrap().mail_bytes, 0);
}

/// RFC 3501 §2.3.2: each UID is \Recent in one session only. Sessions claiming at once (as two
/// IMAP connections selecting the same mailbox do) get disjoint ranges that together cover
/// every UID once; a later claim gets only what is new.
#[tokio::test]
async fn recent_is_claimed_once_across_sessions() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    for n in 0..20 {
        mail.append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
    }
    // Eight sessions, each having learnt of a different number of messages, claim at once.
    let mut tasks = Vec::new();
    for k in 0..8u32 {
        let mail = mail.clone();
        let up_to = 6 + 2 * k;
        tasks.push(tokio::spawn(async move {
            mail.claim_recent(user.id, inbox.id, up_to).await.unwrap()
        }));
    }
    let mut claimed: Vec<u32> = Vec::new();
    for t in tasks {
        if let Some(range) = t.await.unwrap() {
            assert!(!range.is_empty(), "an empty claim came back: {range:?}");
            claimed.extend(range);
        }
    }
    claimed.sort_unstable();
    // The highest of the claims was 20: every UID 1..=20 went to exactly one session.
    assert_eq!(claimed, (1..=20).collect::<Vec<u32>>());
    // Nothing new: nothing to claim, at or below the mark.
    assert_eq!(mail.claim_recent(user.id, inbox.id, 20).await.unwrap(), None);
    assert_eq!(mail.claim_recent(user.id, inbox.id, 3).await.unwrap(), None);
    // Two new messages go to the first session that learns of them, and only to it.
    for n in 20..22 {
        mail.append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
    }
    assert_eq!(mail.claim_recent(user.id, inbox.id, 22).await.unwrap(), Some(21..=22));
    assert_eq!(mail.claim_recent(user.id, inbox.id, 22).await.unwrap(), None);
    // A mailbox that does not exist claims nothing.
    assert_eq!(mail.claim_recent(user.id, i64::MAX, 5).await.unwrap(), None);
}

/// STATUS counts (RFC 3501 §6.3.10): MESSAGES, UNSEEN and RECENT (messages not yet claimed),
/// DELETED and SIZE, with the mailbox's UIDNEXT and HIGHESTMODSEQ from the same snapshot.
#[tokio::test]
async fn status_counts_messages_unseen_and_recent() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let empty = mail.mailbox_status(user.id, "Trash").await.unwrap();
    assert_eq!((empty.messages, empty.unseen, empty.recent), (0, 0, 0));
    assert_eq!((empty.deleted, empty.size), (0, 0));
    assert_eq!(empty.mailbox.name, "Trash");
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    mail.append(user.id, inbox.id, &message(0), &["\\Seen".into()], Utc::now(), None)
        .await
        .unwrap();
    for n in 1..4 {
        mail.append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
    }
    // Any case of INBOX.
    let status = mail.mailbox_status(user.id, "inbox").await.unwrap();
    assert_eq!((status.messages, status.unseen, status.recent), (4, 3, 4));
    assert_eq!(status.mailbox.id, inbox.id);
    assert_eq!(status.mailbox.uidnext, 5);
    assert_eq!(status, mail.mailbox_status(user.id, "INBOX").await.unwrap());
    // A session claims the first three: one is left for the next.
    mail.claim_recent(user.id, inbox.id, 3).await.unwrap();
    // A keyword alone is not \Seen; \Seen in another case is normalised on the way in.
    mail.store_flags(user.id, inbox.id, &[2], FlagOp::Add, &["$Seen".into()], None)
        .await
        .unwrap();
    mail.store_flags(user.id, inbox.id, &[3], FlagOp::Add, &["\\seen".into()], None)
        .await
        .unwrap();
    let status = mail.mailbox_status(user.id, "INBOX").await.unwrap();
    assert_eq!((status.messages, status.unseen, status.recent), (4, 2, 1));
    // RFC 8438 SIZE: the messages' sizes added up; RFC 9051 DELETED: those with \Deleted.
    let sizes: Vec<u64> = (0..4).map(|n| message(n).len() as u64).collect();
    assert_eq!((status.size, status.deleted), (sizes.iter().sum(), 0));
    mail.store_flags(user.id, inbox.id, &[1, 4], FlagOp::Add, &["\\Deleted".into()], None)
        .await
        .unwrap();
    let status = mail.mailbox_status(user.id, "INBOX").await.unwrap();
    assert_eq!((status.size, status.deleted), (sizes.iter().sum(), 2));
    mail.expunge(user.id, inbox.id, None).await.unwrap();
    let status = mail.mailbox_status(user.id, "INBOX").await.unwrap();
    assert_eq!((status.messages, status.unseen, status.recent), (2, 1, 0));
    assert_eq!((status.size, status.deleted), (sizes[1] + sizes[2], 0));
    // All mailboxes at once (LIST-STATUS) say the same, by name.
    let all = mail.mailbox_statuses(user.id).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].mailbox.name < w[1].mailbox.name));
    assert_eq!(all.iter().find(|s| s.mailbox.name == "INBOX"), Some(&status));
    assert_eq!(all.iter().find(|s| s.mailbox.name == "Trash"), Some(&empty));
    assert_eq!(all.len(), mail.list_mailboxes(user.id).await.unwrap().len());
    assert!(matches!(
        mail.mailbox_status(user.id, "Nowhere").await,
        Err(StoreError::NoSuchMailbox)
    ));
}

/// What a session must catch up on since its MODSEQ: appends, flag changes and removals, in one
/// read; removals only while the removal record reaches back that far.
#[tokio::test]
async fn changes_since_follow_appends_flags_and_expunges() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let start = mail
        .changes_since(user.id, inbox.id, inbox.highestmodseq, 0)
        .await
        .unwrap();
    assert_eq!(start.highestmodseq, inbox.highestmodseq);
    assert!(start.changed.is_empty());
    assert_eq!(start.expunged, Some(vec![]));
    let first = mail
        .append(user.id, inbox.id, &message(1), &[], Utc::now(), None)
        .await
        .unwrap();
    let second = mail
        .append(user.id, inbox.id, &message(2), &[], Utc::now(), None)
        .await
        .unwrap();
    let after_append = mail
        .changes_since(user.id, inbox.id, start.highestmodseq, 0)
        .await
        .unwrap();
    assert_eq!(after_append.highestmodseq, second.modseq);
    let uids: Vec<u32> = after_append.changed.iter().map(|s| s.uid).collect();
    assert_eq!(uids, vec![first.uid, second.uid]);
    // Nothing since the newest MODSEQ.
    let none = mail
        .changes_since(user.id, inbox.id, second.modseq, second.uid)
        .await
        .unwrap();
    assert!(none.changed.is_empty() && none.expunged == Some(vec![]));
    mail.store_flags(
        user.id,
        inbox.id,
        &[first.uid],
        FlagOp::Add,
        &["\\Deleted".into()],
        None,
    )
    .await
    .unwrap();
    let after_store = mail
        .changes_since(user.id, inbox.id, second.modseq, second.uid)
        .await
        .unwrap();
    assert!(after_store.highestmodseq > second.modseq);
    assert_eq!(
        after_store.changed,
        vec![MessageState {
            uid: first.uid,
            modseq: after_store.highestmodseq,
            flags: vec!["\\Deleted".to_string()]
        }]
    );
    mail.expunge(user.id, inbox.id, None).await.unwrap();
    let after_expunge = mail
        .changes_since(user.id, inbox.id, after_store.highestmodseq, second.uid)
        .await
        .unwrap();
    assert!(after_expunge.highestmodseq > after_store.highestmodseq);
    assert!(after_expunge.changed.is_empty());
    assert_eq!(after_expunge.expunged, Some(vec![first.uid]));
    // From before the first append: the second message, and the first one's removal.
    let all = mail
        .changes_since(user.id, inbox.id, start.highestmodseq, 0)
        .await
        .unwrap();
    assert_eq!(all.changed.iter().map(|s| s.uid).collect::<Vec<_>>(), vec![second.uid]);
    assert_eq!(all.expunged, Some(vec![first.uid]));
    // A record pruned past the session's MODSEQ cannot say what went: `None`.
    sqlx::query("UPDATE mailboxes SET expunged_floor = $1 WHERE id = $2")
        .bind(after_store.highestmodseq as i64)
        .bind(inbox.id)
        .execute(&env.context.db)
        .await
        .unwrap();
    let pruned = mail
        .changes_since(user.id, inbox.id, start.highestmodseq, 0)
        .await
        .unwrap();
    assert_eq!(pruned.expunged, None);
    assert_eq!(pruned.changed.len(), 1);
    let projects = mail.create_mailbox(user.id, "Projects", None).await.unwrap();
    mail.delete_mailbox(user.id, "Projects").await.unwrap();
    assert!(matches!(
        mail.changes_since(user.id, projects.id, 0, 0).await,
        Err(StoreError::NoSuchMailbox)
    ));
}

/// Flag changes reach the other sessions through the mailbox's record of them (migration 0021):
/// only the messages a STORE changed since the session's MODSEQ are read, and once the record
/// has been emptied past its bound, a session from before compares every message instead.
#[tokio::test]
async fn changes_since_read_flag_changes_from_their_record() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let db = &env.context.db;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let mut uids = Vec::new();
    for n in 0..3 {
        let appended = mail
            .append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
        uids.push(appended.uid);
    }
    let known_uid = uids[2];
    let known = mail.mailbox(user.id, "INBOX").await.unwrap().highestmodseq;
    let store = |uids: Vec<u32>, op: FlagOp, flag: &'static str| async move {
        mail.store_flags(user.id, inbox.id, &uids, op, &[flag.to_string()], None)
            .await
            .unwrap()
    };
    let changed_since = |since: u64| async move {
        let changes = mail.changes_since(user.id, inbox.id, since, known_uid).await.unwrap();
        let states: Vec<(u32, Vec<String>)> = changes.changed.into_iter().map(|s| (s.uid, s.flags)).collect();
        states
    };
    let seen = || vec!["\\Seen".to_string()];

    store(vec![uids[0], uids[2]], FlagOp::Add, "\\Seen").await;
    assert_eq!(changed_since(known).await, vec![(uids[0], seen()), (uids[2], seen())]);
    // A keyword compares case-insensitively: added in one case, the other case changes nothing
    // and removes it.
    store(vec![uids[2]], FlagOp::Add, "$Junk").await;
    assert!(store(vec![uids[2]], FlagOp::Add, "$JUNK").await.changed.is_empty());
    let removed = store(vec![uids[2]], FlagOp::Remove, "$junk").await;
    assert_eq!(removed.changed.len(), 1);
    let after_keyword = removed.changed[0].modseq;
    store(vec![uids[2]], FlagOp::Remove, "\\Seen").await;
    assert_eq!(changed_since(known).await, vec![(uids[0], seen()), (uids[2], vec![])]);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM flag_changes WHERE mailbox_id = $1")
        .bind(inbox.id)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(recorded, 4, "one row per STORE that changed something");

    // The next STORE passes the record's bound: the record is emptied, the floor rises to it.
    sqlx::query("UPDATE mailboxes SET flag_log_uids = $1 WHERE id = $2")
        .bind(shared::mailstore::FLAG_LOG_MAX_UIDS)
        .bind(inbox.id)
        .execute(db)
        .await
        .unwrap();
    let reset = store(vec![uids[1]], FlagOp::Add, "\\Flagged").await;
    let reset_modseq = reset.changed[0].modseq;
    let (recorded, floor): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM flag_changes WHERE mailbox_id = $1), flag_log_floor FROM mailboxes WHERE id = $1",
    )
    .bind(inbox.id)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!((recorded, floor as u64), (0, reset_modseq));
    // Sessions from before the floor compare every message: nothing is missed.
    let flagged = vec!["\\Flagged".to_string()];
    assert_eq!(
        changed_since(known).await,
        vec![(uids[0], seen()), (uids[1], flagged.clone()), (uids[2], vec![])]
    );
    assert_eq!(
        changed_since(after_keyword).await,
        vec![(uids[1], flagged.clone()), (uids[2], vec![])]
    );
    assert!(changed_since(reset_modseq).await.is_empty());
    // And the record starts again after the floor.
    store(vec![uids[0]], FlagOp::Remove, "\\Seen").await;
    assert_eq!(changed_since(reset_modseq).await, vec![(uids[0], vec![])]);
}

/// The light fetch answers the same metadata as the full one, without the parse and the flags,
/// in UID order, skipping UIDs that are not there.
#[tokio::test]
async fn fetch_light_is_fetch_without_the_parse() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    for n in 0..5 {
        mail.append(user.id, inbox.id, &message(n), &["\\Flagged".into()], Utc::now(), None)
            .await
            .unwrap();
    }
    mail.store_flags(user.id, inbox.id, &[2], FlagOp::Add, &["\\Deleted".into()], None)
        .await
        .unwrap();
    mail.expunge(user.id, inbox.id, None).await.unwrap();
    // Out of order, with an expunged UID (2) and one never used (9).
    let asked = [5, 1, 2, 9, 3];
    let light = mail.fetch_light(user.id, inbox.id, &asked).await.unwrap();
    let full = mail.fetch(user.id, inbox.id, &asked).await.unwrap();
    assert_eq!(light.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 3, 5]);
    assert_eq!(light.len(), full.len());
    for (l, f) in light.iter().zip(&full) {
        assert_eq!(
            (l.uid, l.modseq, l.internal_date, l.size, &l.blob, &l.header),
            (f.uid, f.modseq, f.internal_date, f.size, &f.blob, &f.header)
        );
        // The session's view has the flags: not read.
        assert!(l.flags.is_empty() && !f.flags.is_empty());
        assert!(l.header.starts_with(b"From: a@example.test\r\n"));
        assert_eq!(l.envelope, Default::default());
        assert_ne!(f.envelope, Default::default());
    }
    assert!(mail.fetch_light(user.id, inbox.id, &[]).await.unwrap().is_empty());
}

/// Runs of consecutive UIDs and single ones, asked out of order and repeated, come back once
/// each in UID order; the light read with the changes agrees with `changes_since` and
/// `fetch_light` read apart, and shows nothing of another user's mailbox.
#[tokio::test]
async fn light_reads_by_runs_and_with_the_changes() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let bob = env.add_user("bob@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let start = inbox.highestmodseq;
    for n in 0..12 {
        mail.append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
    }
    mail.store_flags(user.id, inbox.id, &[4, 9], FlagOp::Add, &["\\Deleted".into()], None)
        .await
        .unwrap();
    mail.expunge(user.id, inbox.id, None).await.unwrap();
    // Runs 1-6 (4 gone), 8-10 (9 gone), 12, and 20 never used.
    let asked = [12, 3, 1, 2, 5, 6, 4, 10, 8, 9, 20, 3, 12];
    let light = mail.fetch_light(user.id, inbox.id, &asked).await.unwrap();
    let uids: Vec<u32> = light.iter().map(|m| m.uid).collect();
    assert_eq!(uids, [1, 2, 3, 5, 6, 8, 10, 12]);
    let (changes, with_changes) = mail
        .changes_and_light(user.id, inbox.id, start, 0, &asked)
        .await
        .unwrap();
    assert_eq!(changes, mail.changes_since(user.id, inbox.id, start, 0).await.unwrap());
    assert_eq!(changes.expunged, Some(vec![4, 9]));
    assert_eq!(with_changes.len(), light.len());
    for (w, l) in with_changes.iter().zip(&light) {
        assert_eq!(
            (w.uid, w.modseq, w.internal_date, w.size, &w.blob, &w.header),
            (l.uid, l.modseq, l.internal_date, l.size, &l.blob, &l.header)
        );
        // The session's view has the flags: not read again.
        assert!(w.flags.is_empty());
    }
    // Nothing asked: the changes alone; nothing changed: the rows alone.
    let (alone, none) = mail.changes_and_light(user.id, inbox.id, start, 0, &[]).await.unwrap();
    assert_eq!(alone, changes);
    assert!(none.is_empty());
    let (nothing, rows) = mail
        .changes_and_light(user.id, inbox.id, changes.highestmodseq, 12, &[1, 2])
        .await
        .unwrap();
    assert!(nothing.changed.is_empty() && nothing.expunged == Some(vec![]));
    assert_eq!(rows.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    // Another user's mailbox: nothing, whatever the UIDs.
    assert!(mail.fetch_light(bob.id, inbox.id, &asked).await.unwrap().is_empty());
    assert!(matches!(
        mail.changes_and_light(bob.id, inbox.id, start, 0, &asked).await,
        Err(StoreError::NoSuchMailbox)
    ));
}

/// Deleting a user with --purge removes their mailboxes and messages and drops exactly the
/// blob references their messages held: a body shared with another user stays referenced.
#[tokio::test]
async fn purging_a_user_drops_their_mail_and_blob_references() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let alice = env.add_user("alice@example.test", "pw", None).await;
    let bob = env.add_user("bob@example.test", "pw", None).await;
    let to = |user_id| DeliveryTarget {
        user_id,
        mailbox_id: None,
        reservation: None,
    };
    let shared_body = message(1);
    mail.deliver(vec![to(alice.id), to(bob.id)], &shared_body, &[], Utc::now())
        .await
        .unwrap();
    let own_body = message(2);
    mail.deliver(vec![to(alice.id)], &own_body, &[], Utc::now())
        .await
        .unwrap();
    let trash = mail.mailbox(alice.id, "Trash").await.unwrap();
    mail.copy(
        alice.id,
        mail.mailbox(alice.id, "INBOX").await.unwrap().id,
        &[2],
        trash.id,
    )
    .await
    .unwrap();
    {
        let mut conn = env.context.db.acquire().await.unwrap();
        assert_eq!(
            shared::mailstore::count_user_messages(&mut conn, alice.id)
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            shared::mailstore::user_mail_bytes(&mut conn, alice.id).await.unwrap(),
            shared_body.len() as u64 + 2 * own_body.len() as u64
        );
        assert_eq!(
            shared::mailstore::count_user_messages(&mut conn, bob.id).await.unwrap(),
            1
        );
    }
    let refcounts = || async {
        let rows: Vec<(i64, bool)> =
            sqlx::query_as("SELECT refcount, zero_since IS NOT NULL FROM blobs ORDER BY refcount")
                .fetch_all(&env.context.db)
                .await
                .unwrap();
        rows
    };
    let before = refcounts().await;
    assert_eq!(before, [(2, false), (2, false)]);
    // Without --purge, a user with mail is refused and keeps everything.
    assert!(
        shared::accounts::delete_user(&env.context.db, "alice@example.test", false)
            .await
            .is_err()
    );
    assert_eq!(mail.list_mailboxes(alice.id).await.unwrap().len(), 6);
    shared::accounts::delete_user(&env.context.db, "alice@example.test", true)
        .await
        .unwrap();
    let after = refcounts().await;
    // Bob's copy keeps the shared body; Alice's own body is unreferenced and sweepable.
    assert_eq!(after, [(0, true), (1, false)]);
    assert!(mail.list_mailboxes(alice.id).await.unwrap().is_empty());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&env.context.db)
        .await
        .unwrap();
    assert_eq!(left, 1);
    let bob_inbox = mail.mailbox(bob.id, "INBOX").await.unwrap();
    assert_eq!(mail.fetch_light(bob.id, bob_inbox.id, &[1]).await.unwrap().len(), 1);
}

/// RFC 7162 §3.2.5 (QRESYNC): expunge and move record the UIDs that left a mailbox with the
/// MODSEQ their removal took; `expunged_since` answers exactly those after a MODSEQ, only for
/// the owner, and `None` below the floor (removals not remembered).
#[tokio::test]
async fn expunges_and_moves_are_remembered_for_vanished() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let bob = env.add_user("bob@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let trash = mail.mailbox(user.id, "Trash").await.unwrap();
    for n in 0..6 {
        mail.append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
    }
    let start = mail.mailbox(user.id, "INBOX").await.unwrap().highestmodseq;
    assert_eq!(
        mail.expunged_since(user.id, inbox.id, start).await.unwrap(),
        Some(vec![])
    );
    mail.store_flags(user.id, inbox.id, &[2, 4], FlagOp::Add, &["\\Deleted".into()], None)
        .await
        .unwrap();
    assert_eq!(mail.expunge(user.id, inbox.id, None).await.unwrap(), vec![2, 4]);
    let after_expunge = mail.mailbox(user.id, "INBOX").await.unwrap().highestmodseq;
    mail.move_messages(user.id, inbox.id, &[5], trash.id).await.unwrap();
    assert_eq!(
        mail.expunged_since(user.id, inbox.id, start).await.unwrap(),
        Some(vec![2, 4, 5])
    );
    assert_eq!(
        mail.expunged_since(user.id, inbox.id, after_expunge).await.unwrap(),
        Some(vec![5])
    );
    // The copy in Trash left nothing there.
    assert_eq!(mail.expunged_since(user.id, trash.id, 0).await.unwrap(), Some(vec![]));
    // Another user's mailbox is not there for them.
    assert!(matches!(
        mail.expunged_since(bob.id, inbox.id, 0).await,
        Err(StoreError::NoSuchMailbox)
    ));
    // Below the floor (as migration 0013 leaves a mailbox with older removals): unknown.
    sqlx::query("UPDATE mailboxes SET expunged_floor = $1 WHERE id = $2")
        .bind(after_expunge as i64)
        .bind(inbox.id)
        .execute(&env.context.db)
        .await
        .unwrap();
    assert_eq!(mail.expunged_since(user.id, inbox.id, start).await.unwrap(), None);
    assert_eq!(
        mail.expunged_since(user.id, inbox.id, after_expunge).await.unwrap(),
        Some(vec![5])
    );
    // A deleted mailbox takes its rows along.
    mail.create_mailbox(user.id, "Gone", None).await.unwrap();
    let gone = mail.mailbox(user.id, "Gone").await.unwrap();
    mail.move_messages(user.id, inbox.id, &[1], gone.id).await.unwrap();
    mail.move_messages(user.id, gone.id, &[1], trash.id).await.unwrap();
    mail.delete_mailbox(user.id, "Gone").await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM expunged WHERE mailbox_id = $1")
        .bind(gone.id)
        .fetch_one(&env.context.db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

/// A message of exactly `size` bytes.
fn message_of_size(n: usize, size: usize) -> Vec<u8> {
    let mut raw = message(n);
    assert!(raw.len() <= size);
    raw.truncate(raw.len() - 2);
    raw.resize(size - 2, b'x');
    raw.extend_from_slice(b"\r\n");
    raw
}

/// Issue #12: many deliveries to one account near its limit, in parallel, each as SMTP does it
/// (reserve at RCPT, deliver with the reservation) and some outgrowing their reservation (an
/// estimate too small): the limit is never passed, not by one message, and the recorded
/// usage is exactly the stored messages.
#[tokio::test]
async fn parallel_deliveries_near_the_limit_never_pass_it() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", Some(20_500)).await;
    let mut tasks = Vec::new();
    for n in 0..60 {
        let mail = env.context.mail.clone();
        let db = env.context.db.clone();
        tasks.push(tokio::spawn(async move {
            // Every third writer reserves too little, so its commit checks the excess.
            let reserved = if n % 3 == 0 { 600 } else { 1000 };
            let reservation = match quota::reserve(&db, user.id, reserved).await {
                Ok(r) => r,
                Err(quota::QuotaError::Exceeded { .. }) => return 0,
                Err(e) => panic!("reserve: {e}"),
            };
            let target = DeliveryTarget {
                user_id: user.id,
                mailbox_id: None,
                reservation: Some(reservation),
            };
            match mail
                .deliver(vec![target], &message_of_size(n, 1000), &[], Utc::now())
                .await
            {
                Ok(_) => 1000u64,
                Err(StoreError::Quota(quota::QuotaError::Exceeded { .. })) => 0,
                Err(e) => panic!("deliver: {e}"),
            }
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert!(stored <= 20_500, "{stored} bytes stored over a 20 500 byte limit");
    // Refusals while others' reservations are live are right; but not an account left empty.
    assert!(stored >= 10_000, "only {stored} bytes stored: refused too early");
    // Besides the deliveries, the INBOX holds the quota warnings at 80% and 95% (charged
    // without the check, quota::warn): usage is exactly what is stored.
    let (count, total, warnings): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE size = 1000), sum(size)::bigint, count(*) FILTER (WHERE size <> 1000)
         FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.user_id = $1",
    )
    .bind(user.id)
    .fetch_one(&env.context.db)
    .await
    .unwrap();
    assert_eq!(count as u64 * 1000, stored);
    assert!(warnings <= 2, "{warnings} warnings");
    let info = quota::info(&env.context.db, user.id).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (total as u64, 0));
    // Folded after each write (quota::warn::after_write) unless the row was busy just then;
    // once the writers are done, one fold leaves none. A recount agrees.
    quota::fold(&env.context.db, &[user.id]).await.unwrap();
    let row: (i64, i64) = sqlx::query_as(
        "SELECT mail_bytes, (SELECT count(*) FROM quota_reservations WHERE user_id = users.id)
         FROM users WHERE id = $1",
    )
    .bind(user.id)
    .fetch_one(&env.context.db)
    .await
    .unwrap();
    assert_eq!(row, (total, 0));
    let files = tempfile::tempdir().unwrap();
    let recount = quota::recalc(&env.context.db, user.id, files.path()).await.unwrap();
    assert!(!recount.corrected(), "{recount:?}");
}

/// STORE reads the flags without row locks (issue #12): the mailbox's row lock alone must keep
/// concurrent changes of the same messages from losing each other, with deliveries into the
/// mailbox going on and a keyword spelled with a space or a comma (a flag list that is not an
/// IMAP atom, as an import may carry) kept intact.
#[tokio::test]
async fn concurrent_stores_on_the_same_messages_lose_nothing() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = env.context.mail.mailbox(user.id, "INBOX").await.unwrap();
    for n in 0..50 {
        env.context
            .mail
            .append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
    }
    let uids: Vec<u32> = (1..=50).collect();
    let mut tasks = Vec::new();
    for k in 0..16 {
        let mail = env.context.mail.clone();
        let uids = uids.clone();
        tasks.push(tokio::spawn(async move {
            let keyword = format!("$k{k} x,{{}}");
            mail.store_flags(user.id, inbox.id, &uids, FlagOp::Add, &[keyword], None)
                .await
                .unwrap()
        }));
    }
    for n in 50..58 {
        let mail = env.context.mail.clone();
        tasks.push(tokio::spawn(async move {
            mail.append(user.id, inbox.id, &message(n), &["\\Seen".into()], Utc::now(), None)
                .await
                .unwrap();
            Default::default()
        }));
    }
    let mut modseqs = HashSet::new();
    for t in tasks {
        let change = t.await.unwrap();
        if let Some(first) = change.changed.first() {
            assert_eq!(change.changed.len(), 50);
            assert!(modseqs.insert(first.modseq), "two STOREs took one MODSEQ");
        }
    }
    assert_eq!(modseqs.len(), 16);
    let states = env.context.mail.message_states(user.id, inbox.id).await.unwrap();
    assert_eq!(states.len(), 58);
    for state in states.iter().filter(|s| s.uid <= 50) {
        let mut flags = state.flags.clone();
        flags.sort();
        let mut expected: Vec<String> = (0..16).map(|k| format!("$k{k} x,{{}}")).collect();
        expected.sort();
        assert_eq!(flags, expected, "uid {}", state.uid);
    }
    // An empty flag list is written as one, not as a missing slice.
    let change = env
        .context
        .mail
        .store_flags(user.id, inbox.id, &[1, 2], FlagOp::Replace, &[], None)
        .await
        .unwrap();
    assert_eq!(change.changed.len(), 2);
    let states = env.context.mail.message_states(user.id, inbox.id).await.unwrap();
    assert!(states[0].flags.is_empty() && states[1].flags.is_empty());
    assert_eq!(states[2].flags.len(), 16);
}

/// The flag arithmetic of STORE (RFC 3501 §6.4.6) is done by the store's one statement:
/// `+FLAGS` appends what is missing, `-FLAGS` drops what is named, `FLAGS` replaces, all
/// case-insensitively; a change to the same set is no change (no new MODSEQ, no event).
#[tokio::test]
async fn store_computes_flags_case_insensitively_and_skips_no_ops() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    for n in 0..2 {
        mail.append(
            user.id,
            inbox.id,
            &message(n),
            &["\\Seen".into(), "$Work".into()],
            Utc::now(),
            None,
        )
        .await
        .unwrap();
    }
    let strings = |flags: &[&str]| flags.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let highest = |mail: &MailStore| {
        let mail = mail.clone();
        async move { mail.mailbox_by_id(user.id, inbox.id).await.unwrap().highestmodseq }
    };

    let before = highest(mail).await;
    let added = mail
        .store_flags(
            user.id,
            inbox.id,
            &[1],
            FlagOp::Add,
            &strings(&["\\seen", "$work", "\\flagged", "Urgent"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(added.changed.len(), 1);
    assert_eq!(
        added.changed[0].flags,
        strings(&["\\Seen", "$Work", "\\Flagged", "Urgent"])
    );
    assert_eq!(added.changed[0].modseq, before + 1);

    let removed = mail
        .store_flags(
            user.id,
            inbox.id,
            &[1, 2],
            FlagOp::Remove,
            &strings(&["\\SEEN", "urgent"]),
            None,
        )
        .await
        .unwrap();
    let flags: Vec<(u32, Vec<String>)> = removed.changed.iter().map(|s| (s.uid, s.flags.clone())).collect();
    assert_eq!(
        flags,
        vec![(1, strings(&["$Work", "\\Flagged"])), (2, strings(&["$Work"]))]
    );
    assert!(removed.changed.iter().all(|s| s.modseq == before + 2));

    // The same set in another order and case: nothing changes, the MODSEQs stay.
    let _listening = env.context.events.listening().await;
    let mut events = env.context.events.subscribe();
    // The events of the changes above may still be on their way.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    while events.try_recv().is_ok() {}
    let same = mail
        .store_flags(
            user.id,
            inbox.id,
            &[1],
            FlagOp::Replace,
            &strings(&["\\flagged", "$WORK"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(same, Default::default());
    let none_there = mail
        .store_flags(
            user.id,
            inbox.id,
            &[1, 2],
            FlagOp::Remove,
            &strings(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(none_there, Default::default());
    assert_eq!(highest(mail).await, before + 2);

    let replaced = mail
        .store_flags(
            user.id,
            inbox.id,
            &[2],
            FlagOp::Replace,
            &strings(&["\\Answered"]),
            Some(before + 2),
        )
        .await
        .unwrap();
    assert_eq!(replaced.changed[0].flags, strings(&["\\Answered"]));
    // Events arrive in commit order: the first is this change's, and none came before it.
    tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
        .await
        .expect("the change's event")
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        events.try_recv().is_err(),
        "a STORE that changed nothing told the other sessions"
    );
    // UIDs that are not there are left out; a mailbox of another user is not found.
    let missing = mail
        .store_flags(user.id, inbox.id, &[7, 9], FlagOp::Add, &strings(&["\\Seen"]), None)
        .await
        .unwrap();
    assert_eq!(missing, Default::default());
    let bob = env.add_user("bob@example.test", "pw", None).await;
    assert!(matches!(
        mail.store_flags(bob.id, inbox.id, &[1], FlagOp::Add, &strings(&["\\Seen"]), None)
            .await,
        Err(StoreError::NoSuchMailbox)
    ));
    let states = mail.message_states(user.id, inbox.id).await.unwrap();
    assert_eq!(states[0].flags, strings(&["$Work", "\\Flagged"]));
    assert_eq!(states[1].flags, strings(&["\\Answered"]));
}

/// Sessions storing and expunging in one mailbox at once (each STORE one statement that sets
/// its MODSEQ only if nobody got in between, else again under the mailbox lock): no flag is
/// lost, every change has its own MODSEQ, and the expunges refund and unreference exactly.
#[tokio::test]
async fn concurrent_stores_and_expunges_lose_nothing() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    const MESSAGES: u32 = 40;
    for n in 0..MESSAGES as usize {
        mail.append(user.id, inbox.id, &message(n), &[], Utc::now(), None)
            .await
            .unwrap();
    }
    let all: Vec<u32> = (1..=MESSAGES).collect();
    let mut tasks = Vec::new();
    for k in 0..8 {
        let mail = mail.clone();
        let all = all.clone();
        tasks.push(tokio::spawn(async move {
            let mut modseqs = Vec::new();
            for round in 0..5 {
                let keyword = format!("k{k}r{round}");
                let change = mail
                    .store_flags(user.id, inbox.id, &all, FlagOp::Add, &[keyword], None)
                    .await
                    .unwrap();
                // Less the messages expunged meanwhile.
                assert!(change.changed.len() >= MESSAGES as usize - 10, "{change:?}");
                modseqs.push(change.changed[0].modseq);
            }
            modseqs
        }));
    }
    // Meanwhile two sessions mark and expunge disjoint halves of the first ten messages.
    for half in [[1u32, 3, 5, 7, 9], [2, 4, 6, 8, 10]] {
        let mail = mail.clone();
        tasks.push(tokio::spawn(async move {
            let mut modseqs = Vec::new();
            for uid in half {
                let change = mail
                    .store_flags(user.id, inbox.id, &[uid], FlagOp::Add, &["\\Deleted".into()], None)
                    .await
                    .unwrap();
                modseqs.push(change.changed[0].modseq);
                let gone = mail.expunge_at(user.id, inbox.id, Some(&[uid])).await.unwrap();
                assert_eq!(gone.uids, vec![uid]);
                modseqs.push(gone.modseq.expect("a removal takes a MODSEQ"));
            }
            modseqs
        }));
    }
    let mut modseqs = Vec::new();
    for t in tasks {
        modseqs.extend(t.await.unwrap());
    }
    let unique: HashSet<u64> = modseqs.iter().copied().collect();
    assert_eq!(unique.len(), modseqs.len(), "two changes took one MODSEQ: {modseqs:?}");

    let states = mail.message_states(user.id, inbox.id).await.unwrap();
    assert_eq!(
        states.iter().map(|s| s.uid).collect::<Vec<_>>(),
        (11..=MESSAGES).collect::<Vec<_>>()
    );
    for state in &states {
        assert_eq!(
            state.flags.len(),
            40,
            "UID {} lost a flag: {:?}",
            state.uid,
            state.flags
        );
    }
    let size: u64 = (10..MESSAGES as usize).map(|n| message(n).len() as u64).sum();
    assert_eq!(quota::info(&env.context.db, user.id).await.unwrap().mail_bytes, size);
    let referenced: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs WHERE refcount > 0")
        .fetch_one(&env.context.db)
        .await
        .unwrap();
    assert_eq!(referenced, (MESSAGES - 10) as i64);
    let expunged: Vec<i64> = sqlx::query_scalar("SELECT uid FROM expunged WHERE mailbox_id = $1 ORDER BY uid")
        .bind(inbox.id)
        .fetch_all(&env.context.db)
        .await
        .unwrap();
    assert_eq!(expunged, (1..=10).collect::<Vec<i64>>());
}
