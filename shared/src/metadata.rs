//! IMAP METADATA entries (RFC 5464): the one owner of the `metadata_entries` table (migration
//! 0014). imapd's GETMETADATA and SETMETADATA call [`get`] and [`set`]; the mail store calls
//! [`drop_mailbox`] inside DELETE's transaction; quota recounts and `tinydc check` read
//! [`user_bytes`] and [`bytes_by_user`].
//!
//! Changes: [`set`] publishes an [`Event::Metadata`] naming the entries it changed (through
//! `shared::events`, in its transaction), which imapd's NOTIFY turns into unsolicited METADATA
//! responses (RFC 5465 §5.6, §5.7).
//!
//! Entries belong to one user, on the server (`""`, [`Scope::Server`]) or on one of the user's
//! mailboxes. Private (`/private/...`) entries are the user's own. Mailboxes here are never
//! shared, so a mailbox's `/shared/...` entries are seen by its one owner too; the server's
//! `/shared/...` entries are the same for everyone and read-only (`/shared/admin`, computed by
//! the caller, RFC 5464 §3.2.1.1). No user ever reads another user's rows: every statement
//! names the user.
//!
//! Size: each entry costs `octet_length(name) + octet_length(value)` bytes of the user's quota,
//! charged as mail usage (`quota::Usage::Mail`) in the writing transaction under the user's row
//! lock (`quota::charge`, like a COPY), refunded when the entry shrinks or goes (SETMETADATA
//! NIL, DELETE of its mailbox). [`user_bytes`] is what `quota::recalc` adds to the messages.

use sqlx::{PgConnection, PgPool};
use thiserror::Error;

use crate::events::{self, Event};
use crate::quota::{self, QuotaError, Usage};

/// Longest entry name accepted, in bytes (names are ASCII).
pub const MAX_NAME_LENGTH: usize = 512;

/// Entries one GETMETADATA or SETMETADATA may name.
pub const MAX_ENTRIES_PER_COMMAND: usize = 100;

/// What entries are attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The server (mailbox name `""`, RFC 5464 §3.2.1).
    Server,
    /// One of the user's mailboxes, by id.
    Mailbox(i64),
}

impl Scope {
    /// The mailbox id as stored, 0 for the server (the unique index's `coalesce`).
    fn key(self) -> i64 {
        match self {
            Scope::Server => 0,
            Scope::Mailbox(id) => id,
        }
    }

    fn mailbox_id(self) -> Option<i64> {
        match self {
            Scope::Server => None,
            Scope::Mailbox(id) => Some(id),
        }
    }
}

/// GETMETADATA's DEPTH option (RFC 5464 §4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Depth {
    /// The entry itself only.
    #[default]
    Zero,
    /// The entry and the entries immediately below it.
    One,
    /// The entry and every entry below it.
    Infinity,
}

impl Depth {
    /// Whether stored entry `name` is returned for requested entry `requested`.
    pub fn matches(self, requested: &str, name: &str) -> bool {
        if name == requested {
            return true;
        }
        let Some(below) = name.strip_prefix(requested).and_then(|r| r.strip_prefix('/')) else {
            return false;
        };
        match self {
            Depth::Zero => false,
            Depth::One => !below.contains('/'),
            Depth::Infinity => true,
        }
    }
}

/// Read an entry name as RFC 5464 §3.2 allows it, lower-cased (names are case-insensitive):
/// `/private` or `/shared` followed by components; only printable ASCII, no `*` or `%`, no two
/// consecutive slashes and no trailing slash. The two roots alone are names too (GETMETADATA
/// with DEPTH reads below them) but hold no value ([`is_root`]). The error is the text of the
/// BAD answer.
pub fn entry_name(raw: &[u8]) -> Result<String, &'static str> {
    if raw.len() > MAX_NAME_LENGTH {
        return Err("entry name too long");
    }
    if raw.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Err("entry names are printable ASCII (RFC 5464 3.2)");
    }
    if raw.iter().any(|&b| b == b'*' || b == b'%') {
        return Err("entry names may not contain * or % (RFC 5464 3.2)");
    }
    if !raw.starts_with(b"/") || raw.ends_with(b"/") || raw.windows(2).any(|w| w == b"//") {
        return Err("entry names start with /, have no empty component and no trailing / (RFC 5464 3.2)");
    }
    let name = String::from_utf8_lossy(raw).to_ascii_lowercase();
    let root = name.split('/').nth(1).unwrap_or("");
    if root != "private" && root != "shared" {
        return Err("entry names start with /private or /shared (RFC 5464 3.2)");
    }
    Ok(name)
}

/// `/private` or `/shared`: a root of the entry tree, which cannot be set.
pub fn is_root(name: &str) -> bool {
    name == "/private" || name == "/shared"
}

/// Whether the entry is a private one (RFC 5464 §3.2: `/private/...`).
pub fn is_private(name: &str) -> bool {
    name == "/private" || name.starts_with("/private/")
}

/// The limits of [`set`] (`[imap] metadata_max_value`, `metadata_max_entries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one value.
    pub max_value: u64,
    /// Entries of one user, over the server and all their mailboxes.
    pub max_entries: u64,
}

/// Why a SETMETADATA was refused; nothing of it was stored.
#[derive(Debug, Error)]
pub enum MetadataError {
    /// RFC 5464 §4.3: `NO [METADATA MAXSIZE max]`.
    #[error("a value is longer than {max} bytes")]
    ValueTooLarge { max: u64 },
    /// RFC 5464 §4.3: `NO [METADATA TOOMANY]`.
    #[error("at most {max} entries per user")]
    TooMany { max: u64 },
    /// The server's `/shared` entries are the same for every user: nobody writes them here.
    #[error("the server's /shared entries are read-only")]
    ReadOnly,
    /// The mailbox went away (a concurrent DELETE).
    #[error("no such mailbox")]
    NoSuchMailbox,
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// One entry of a GETMETADATA answer: its name and value (None: it does not exist).
pub type Answer = (String, Option<Vec<u8>>);

/// What GETMETADATA returns for `requested` names at `depth`, in request order: each requested
/// name (with None when it has no value; the roots only when they have entries below, which
/// they never have themselves), then the entries below it that `depth` reaches, each once.
/// `fixed` are read-only entries computed by the caller (the server's `/shared/admin`), which
/// are found as if stored. The user's entries are bounded by `metadata_max_entries`.
pub async fn get(
    db: &PgPool,
    user_id: i64,
    scope: Scope,
    requested: &[String],
    depth: Depth,
    fixed: &[(String, Vec<u8>)],
) -> Result<Vec<Answer>, sqlx::Error> {
    let mut all: Vec<(String, Vec<u8>)> = fixed.to_vec();
    let stored = sqlx::query!(
        "SELECT name, value FROM metadata_entries
         WHERE user_id = $1 AND coalesce(mailbox_id, 0) = $2 ORDER BY name",
        user_id,
        scope.key()
    )
    .fetch_all(db)
    .await?;
    all.extend(stored.into_iter().map(|r| (r.name, r.value)));
    // Which entry answers each name, in answer order; each value is then moved, never copied
    // (an answer may hold `metadata_max_entries` values of `metadata_max_value` bytes).
    let mut order: Vec<(String, Option<usize>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in requested {
        if !is_root(name) && seen.insert(name.clone()) {
            order.push((name.clone(), all.iter().position(|(n, _)| n == name)));
        }
        for (i, (n, _)) in all.iter().enumerate() {
            if n != name && depth.matches(name, n) && seen.insert(n.clone()) {
                order.push((n.clone(), Some(i)));
            }
        }
    }
    let mut values: Vec<Option<Vec<u8>>> = all.into_iter().map(|(_, v)| Some(v)).collect();
    Ok(order
        .into_iter()
        .map(|(name, i)| (name, i.and_then(|i| values[i].take())))
        .collect())
}

/// Bytes an entry costs in the quota.
fn cost(name: &str, value: &[u8]) -> u64 {
    (name.len() + value.len()) as u64
}

/// SETMETADATA (RFC 5464 §4.3): set each named entry to its value, or remove it (None), all or
/// nothing, in one transaction under the user's row lock (which serialises the entry count and
/// the quota check). Names come from [`entry_name`], never a root. Refused: a value over
/// `limits.max_value` (checked before the database), more than `limits.max_entries` entries
/// for the user, the server's `/shared` entries, and bytes over the quota (`Quota(Exceeded)`).
///
/// Returns the events published with the commit: the entries whose value is now different
/// (set anew, changed, or removed where one existed; RFC 5465 §5.6: a removed entry is always
/// named), none when nothing changed.
pub async fn set(
    db: &PgPool,
    user_id: i64,
    scope: Scope,
    changes: &[(String, Option<Vec<u8>>)],
    limits: Limits,
) -> Result<Vec<Event>, MetadataError> {
    if changes
        .iter()
        .any(|(_, v)| v.as_ref().is_some_and(|v| v.len() as u64 > limits.max_value))
    {
        return Err(MetadataError::ValueTooLarge { max: limits.max_value });
    }
    if scope == Scope::Server && changes.iter().any(|(n, _)| !is_private(n)) {
        return Err(MetadataError::ReadOnly);
    }
    // The last value given for a name wins.
    let mut last: Vec<(&str, Option<&[u8]>)> = Vec::new();
    for (name, value) in changes {
        debug_assert!(!is_root(name));
        last.retain(|(n, _)| *n != name.as_str());
        last.push((name.as_str(), value.as_deref()));
    }
    let names: Vec<String> = last.iter().map(|(n, _)| n.to_string()).collect();

    let mut tx = db.begin().await?;
    // The user's row first (lock order of the mail store: users, then mailboxes): every
    // metadata write of this user waits here, so the count below stays true until commit.
    quota::locked_info(&mut tx, user_id).await?;
    let old: Vec<(String, Vec<u8>)> = sqlx::query!(
        "SELECT name, value FROM metadata_entries
         WHERE user_id = $1 AND coalesce(mailbox_id, 0) = $2 AND name = ANY($3)",
        user_id,
        scope.key(),
        &names
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.name, r.value))
    .collect();
    let count: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM metadata_entries WHERE user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let exists = |name: &str| old.iter().any(|(n, _)| n == name);
    let added = last.iter().filter(|(n, v)| v.is_some() && !exists(n)).count() as i64;
    let removed = last.iter().filter(|(n, v)| v.is_none() && exists(n)).count() as i64;
    if added > 0 && count + added - removed > limits.max_entries as i64 {
        return Err(MetadataError::TooMany {
            max: limits.max_entries,
        });
    }
    let before: u64 = old.iter().map(|(n, v)| cost(n, v)).sum();
    let after: u64 = last.iter().filter_map(|(n, v)| v.map(|v| cost(n, v))).sum();
    if after > before {
        quota::charge(&mut tx, user_id, Usage::Mail, after - before).await?;
    } else if before > after {
        quota::refund(&mut tx, user_id, Usage::Mail, before - after).await?;
    }
    sqlx::query!(
        "DELETE FROM metadata_entries WHERE user_id = $1 AND coalesce(mailbox_id, 0) = $2 AND name = ANY($3)",
        user_id,
        scope.key(),
        &names
    )
    .execute(&mut *tx)
    .await?;
    let (set_names, set_values): (Vec<String>, Vec<Vec<u8>>) = last
        .iter()
        .filter_map(|(n, v)| v.map(|v| (n.to_string(), v.to_vec())))
        .unzip();
    if !set_names.is_empty() {
        let inserted = sqlx::query!(
            "INSERT INTO metadata_entries (user_id, mailbox_id, name, value)
             SELECT $1, $2, n, v FROM unnest($3::text[], $4::bytea[]) AS t(n, v)",
            user_id,
            scope.mailbox_id(),
            &set_names,
            &set_values
        )
        .execute(&mut *tx)
        .await;
        match inserted {
            // The mailbox was deleted since the caller looked it up (foreign key violation).
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23503") => {
                return Err(MetadataError::NoSuchMailbox);
            }
            other => {
                other?;
            }
        }
    }
    let changed: Vec<String> = last
        .iter()
        .filter(|(n, v)| {
            let was = old.iter().find(|(o, _)| o == n).map(|(_, v)| v.as_slice());
            was != *v
        })
        .map(|(n, _)| n.to_string())
        .collect();
    let published = change_events(user_id, scope, changed);
    for event in &published {
        events::notify(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(published)
}

/// Entry-name bytes one [`Event::Metadata`] carries: with JSON escaping (at most twice the
/// bytes of printable ASCII) and the event's other fields, far below `events::MAX_PAYLOAD`.
const EVENT_NAME_BYTES: usize = events::MAX_PAYLOAD / 2 - 512;

/// The events telling that `changed` entries of `scope` changed, as many as the names need.
fn change_events(user_id: i64, scope: Scope, changed: Vec<String>) -> Vec<Event> {
    let mut out = Vec::new();
    let mut chunk: Vec<String> = Vec::new();
    let mut bytes = 0;
    for name in changed {
        // Quotes and a comma besides the name.
        let size = name.len() + 3;
        if !chunk.is_empty() && bytes + size > EVENT_NAME_BYTES {
            out.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(name);
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out.into_iter()
        .map(|entries| Event::Metadata {
            user_id,
            mailbox_id: scope.mailbox_id(),
            entries,
        })
        .collect()
}

/// Inside the mail store's DELETE transaction (which holds the user's row): remove a mailbox's
/// entries and refund their bytes (the foreign key's cascade would drop them unrefunded).
pub async fn drop_mailbox(conn: &mut PgConnection, user_id: i64, mailbox_id: i64) -> Result<(), QuotaError> {
    let freed: i64 = sqlx::query_scalar!(
        r#"WITH gone AS (DELETE FROM metadata_entries WHERE user_id = $1 AND mailbox_id = $2
                         RETURNING octet_length(name) + octet_length(value) AS cost)
           SELECT coalesce(sum(cost), 0)::bigint AS "freed!" FROM gone"#,
        user_id,
        mailbox_id
    )
    .fetch_one(&mut *conn)
    .await?;
    if freed > 0 {
        quota::refund(conn, user_id, Usage::Mail, freed as u64).await?;
    }
    Ok(())
}

/// The bytes a user's entries cost (part of their mail usage; `quota::recalc`).
pub async fn user_bytes(conn: &mut PgConnection, user_id: i64) -> Result<u64, sqlx::Error> {
    let bytes: i64 = sqlx::query_scalar!(
        r#"SELECT coalesce(sum(octet_length(name) + octet_length(value)), 0)::bigint AS "bytes!"
           FROM metadata_entries WHERE user_id = $1"#,
        user_id
    )
    .fetch_one(conn)
    .await?;
    Ok(bytes.max(0) as u64)
}

/// The bytes of every user's entries, by user id (`tinydc check`; users without entries absent).
pub async fn bytes_by_user(conn: &mut PgConnection) -> Result<std::collections::HashMap<i64, u64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT user_id, coalesce(sum(octet_length(name) + octet_length(value)), 0)::bigint AS "bytes!"
           FROM metadata_entries GROUP BY user_id"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.bytes.max(0) as u64)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_of_rfc_5464_3_2() {
        assert_eq!(entry_name(b"/Private/Comment").unwrap(), "/private/comment");
        assert_eq!(
            entry_name(b"/shared/vendor/tinydc/x y").unwrap(),
            "/shared/vendor/tinydc/x y"
        );
        assert_eq!(entry_name(b"/shared").unwrap(), "/shared");
        for bad in [
            &b"private/comment"[..],
            b"/private/",
            b"/private//comment",
            b"/private/*",
            b"/private/a%",
            b"/public/comment",
            b"/privatex/comment",
            b"/private/caf\xc3\xa9",
            b"/private/a\tb",
            b"",
            b"/",
        ] {
            assert!(entry_name(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(entry_name(format!("/private/{}", "a".repeat(MAX_NAME_LENGTH)).as_bytes()).is_err());
    }

    #[test]
    fn change_events_fit_a_notify_payload() {
        assert!(change_events(7, Scope::Server, Vec::new()).is_empty());
        let one = change_events(7, Scope::Mailbox(3), vec!["/private/comment".into()]);
        assert_eq!(
            one,
            vec![Event::Metadata {
                user_id: 7,
                mailbox_id: Some(3),
                entries: vec!["/private/comment".into()]
            }]
        );
        // The most names one SETMETADATA may change, each as long as allowed and as costly to
        // escape as can be: every name is told once, each event fits a NOTIFY payload.
        let names: Vec<String> = (0..MAX_ENTRIES_PER_COMMAND)
            .map(|i| format!("/private/{i:03}{}", "\\\"".repeat((MAX_NAME_LENGTH - 12) / 2)))
            .collect();
        let split = change_events(7, Scope::Server, names.clone());
        assert!(split.len() > 1);
        let mut told = Vec::new();
        for event in &split {
            assert!(
                events::payload(event).len() <= events::MAX_PAYLOAD,
                "{}",
                events::payload(event).len()
            );
            let Event::Metadata { entries, .. } = event else {
                panic!()
            };
            told.extend(entries.iter().cloned());
        }
        assert_eq!(told, names);
    }

    #[test]
    fn depth_of_rfc_5464_4_2_2() {
        let base = "/private/filters/values";
        assert!(Depth::Zero.matches(base, base));
        assert!(!Depth::Zero.matches(base, "/private/filters/values/small"));
        assert!(Depth::One.matches(base, "/private/filters/values/small"));
        assert!(!Depth::One.matches(base, "/private/filters/values/small/x"));
        assert!(Depth::Infinity.matches(base, "/private/filters/values/small/x"));
        assert!(!Depth::Infinity.matches(base, "/private/filters/valuesx"));
    }
}
