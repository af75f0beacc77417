//! \Recent across sessions and processes (RFC 3501 §2.3.2): a message is \Recent in exactly
//! one session, the first one that has the mailbox selected (SELECT, not EXAMINE) when it
//! learns of the message, and stays so there until that session deselects or ends.
//!
//! The mailbox row keeps the highest UID already claimed (`recent_claimed_uid`). A session
//! that learns of messages up to UID `max` moves the mark up to `max` and gets the old mark
//! back in the same statement; the UIDs in (old, max] are its own. The row lock makes two
//! sessions' claims one after the other, so no UID is claimed twice.

use super::Selected;

/// Claim the messages up to `max_uid` for `selected`'s session and add the ones it won to its
/// \Recent set; returns how many were added. A mailbox gone meanwhile claims nothing.
pub async fn claim(db: &sqlx::PgPool, user_id: i64, selected: &mut Selected) -> Result<usize, sqlx::Error> {
    let max_uid = selected.max_uid();
    if selected.read_only || max_uid == 0 {
        return Ok(0);
    }
    // FOR UPDATE in the subquery: it waits for a concurrent claim and re-reads the value that
    // claim left, and the UPDATE then works on that locked row (the old value comes back).
    // Nothing new to claim: no row matches, nothing is locked or written.
    let old: Option<i64> = sqlx::query_scalar(
        "UPDATE mailboxes b SET recent_claimed_uid = greatest(old.recent_claimed_uid, $3)
         FROM (SELECT id, recent_claimed_uid FROM mailboxes WHERE id = $1 AND user_id = $2 AND recent_claimed_uid < $3 FOR UPDATE) old
         WHERE b.id = old.id
         RETURNING old.recent_claimed_uid",
    )
    .bind(selected.mailbox.id)
    .bind(user_id)
    .bind(i64::from(max_uid))
    .fetch_optional(db)
    .await?;
    let Some(old) = old else {
        return Ok(0);
    };
    let start = selected.uids.partition_point(|&u| i64::from(u) <= old);
    let won: Vec<u32> = selected.uids[start..]
        .iter()
        .copied()
        .filter(|&u| !selected.is_recent(u))
        .collect();
    let added = won.len();
    selected.recent.extend(won);
    selected.recent.sort_unstable();
    Ok(added)
}
