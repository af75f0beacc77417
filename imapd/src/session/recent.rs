//! \Recent across sessions and processes (RFC 3501 §2.3.2): a message is \Recent in exactly
//! one session, the first one that has the mailbox selected (SELECT, not EXAMINE) when it
//! learns of the message, and stays so there until that session deselects or ends.
//!
//! The mail store hands out the UIDs ([`MailStore::claim_recent`]: one statement under the
//! mailbox row's lock, so no UID is claimed twice); this module keeps the session's side, the
//! \Recent set of the selected view.

use shared::mailstore::{MailStore, StoreError};

use super::Selected;

/// Claim the messages up to the view's highest UID for `selected`'s session and add the ones it
/// won to its \Recent set; returns how many were added. A read-only view (EXAMINE) claims
/// nothing, and neither does a mailbox gone meanwhile.
pub async fn claim(mail: &MailStore, user_id: i64, selected: &mut Selected) -> Result<usize, StoreError> {
    let max_uid = selected.max_uid();
    if selected.read_only || max_uid == 0 {
        return Ok(0);
    }
    let Some(won) = mail.claim_recent(user_id, selected.mailbox.id, max_uid).await? else {
        return Ok(0);
    };
    Ok(take_won(selected, *won.start()))
}

/// The session won the claim of the UIDs from `from` up to the view's last UID (`claim`, or the
/// APPEND that claimed in its own transaction, `shared::mailstore::SelectedView`): add those of
/// its view to its \Recent set; returns how many were added.
pub fn take_won(selected: &mut Selected, from: u32) -> usize {
    // The view is in UID order; the claimed range ends at its last UID.
    let start = selected.uids.partition_point(|&u| u < from);
    let won: Vec<u32> = selected.uids[start..]
        .iter()
        .copied()
        .filter(|&u| !selected.is_recent(u))
        .collect();
    let added = won.len();
    selected.recent.extend(won);
    selected.recent.sort_unstable();
    added
}
