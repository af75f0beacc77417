//! Quota warnings: a short message in a person's INBOX when their usage (mail + files) crosses
//! 80% and again 95% of their limit, once per crossing, and again after it fell back below the
//! threshold and crosses it anew. `tinydc quota report` and `tinydc doctor` mark users with the
//! same [`level`].
//!
//! State: `users.quota_warned` (migration 0009), the highest level warned about since usage was
//! last below it.
//!
//! When: every writer calls [`after_write`] after its transaction committed, with the users
//! whose usage changed (mail store: delivery, APPEND, COPY, EXPUNGE, DELETE; davd: PUT, COPY,
//! DELETE, MOVE over a file; `tinydc quota set` and `recalc`). It reads the committed usage of
//! those users in one query and compares its level with `quota_warned`:
//! - higher: the warning is built and stored through the mail store's normal delivery
//!   ([`MailStore::deliver_quota_warning`]), whose transaction also raises `quota_warned`
//!   under the user's row lock ([`claim`]), only if no one did meanwhile. The warning and the
//!   record of the crossing commit together: a crash leaves both or neither, and two
//!   processes seeing the same crossing store one message.
//! - lower: `quota_warned` is lowered ([`rearm`]), so the next crossing warns again.
//!
//! After commit rather than inside the writer's transaction: a transaction may dip below a
//! threshold and come back (an overwrite refunds the old file before charging the new one),
//! which is no crossing; only committed usage is compared. After each write rather than by a
//! periodic sweep: idle daemons stay asleep, and the warning arrives with the write that
//! caused it. The check is one indexed read per write, in the same round trip as the fold of
//! the write's usage delta (`quota::fold_and_read`). A crash between a writer's commit and
//! its check loses nothing: the check is idempotent, the next write of that user repeats it,
//! and every daemon runs [`sweep`] at start (davd once more after its journal's recovery,
//! which may recount usage).
//!
//! The warning itself is charged without the quota check (it must arrive when the user is at
//! 95% or beyond) and triggers no check of its own, so it never causes another warning. That
//! can pass the limit by at most one warning: the next one needs usage to fall below the
//! threshold first.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{QuotaError, QuotaInfo, Usage, add_usage};
use crate::mailstore::{MailStore, StoreError};
use crate::size::format_size;

/// How full an account is, as warnings and reports tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Under 80% of the limit, or no limit.
    Below,
    /// At or over 80%.
    Near,
    /// At or over 95%.
    Critical,
}

impl Level {
    /// The threshold in percent (0 for `Below`): what `users.quota_warned` stores.
    pub fn percent(self) -> u8 {
        match self {
            Level::Below => 0,
            Level::Near => 80,
            Level::Critical => 95,
        }
    }

    fn from_percent(p: i16) -> Level {
        match p {
            p if p >= 95 => Level::Critical,
            p if p >= 80 => Level::Near,
            _ => Level::Below,
        }
    }

    /// A short mark for listings: `>=80%`, `>=95%`, or empty.
    pub fn mark(self) -> &'static str {
        match self {
            Level::Below => "",
            Level::Near => ">=80%",
            Level::Critical => ">=95%",
        }
    }
}

/// The level of `used` bytes against `limit` (`None`: unlimited, never warned). A limit of 0
/// is full, as [`QuotaInfo::percent`] says (100%).
pub fn level_of(used: u64, limit: Option<u64>) -> Level {
    let Some(limit) = limit else { return Level::Below };
    // Exact integer comparison (used/limit >= p/100), no overflow in u128.
    let at = |p: u128| used as u128 * 100 >= limit as u128 * p;
    if at(95) {
        Level::Critical
    } else if at(80) {
        Level::Near
    } else {
        Level::Below
    }
}

/// The level of committed usage (reservations of writes in progress do not count).
pub fn level(info: &QuotaInfo) -> Level {
    level_of(info.used(), info.limit)
}

/// Lock the user's row (FOR UPDATE, as every change of `quota_warned` does) and read the level
/// of their committed usage, unfolded deltas included, and the level last warned about; `None`:
/// no such user.
async fn locked_levels(conn: &mut PgConnection, user_id: i64) -> Result<Option<(Level, Level)>, QuotaError> {
    let row = sqlx::query!(
        r#"SELECT quota_limit, quota_warned,
                mail_bytes + (SELECT coalesce(sum(bytes), 0) FROM quota_reservations
                              WHERE user_id = users.id AND charged = 'mail')::bigint AS "mail_bytes!",
                file_bytes + (SELECT coalesce(sum(bytes), 0) FROM quota_reservations
                              WHERE user_id = users.id AND charged = 'files')::bigint AS "file_bytes!"
         FROM users WHERE id = $1 FOR UPDATE"#,
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|row| {
        let used = (row.mail_bytes.max(0) as u64).saturating_add(row.file_bytes.max(0) as u64);
        (
            level_of(used, row.quota_limit.map(|l| l.max(0) as u64)),
            Level::from_percent(row.quota_warned),
        )
    }))
}

/// Inside the transaction storing a warning of `level` for `user_id`: lock the user's row and
/// record the crossing, if it still stands (usage at `level` or above) and was not warned
/// about yet (another process may have stored the same warning meanwhile). `false`: store
/// nothing.
pub(crate) async fn claim(conn: &mut PgConnection, user_id: i64, level: Level) -> Result<bool, QuotaError> {
    let (now, warned) = locked_levels(conn, user_id).await?.ok_or(QuotaError::UnknownUser)?;
    if now < level || warned >= level {
        return Ok(false);
    }
    sqlx::query!(
        "UPDATE users SET quota_warned = $2 WHERE id = $1",
        user_id,
        level.percent() as i16
    )
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Inside the warning's transaction: charge its bytes as mail without the limit check (see the
/// module docs: a warning is never refused by the quota it warns about).
pub(crate) async fn charge_warning(conn: &mut PgConnection, user_id: i64, bytes: u64) -> Result<(), QuotaError> {
    add_usage(conn, user_id, Usage::Mail, bytes).await
}

/// Lower `quota_warned` to the level of the user's committed usage, if it is below (re-arm).
/// Under the row lock, so it never undoes a warning stored meanwhile.
async fn rearm(mail: &MailStore, user_id: i64) -> Result<(), QuotaError> {
    let mut tx = mail.db().begin().await?;
    let Some((now, warned)) = locked_levels(&mut tx, user_id).await? else {
        return Ok(());
    };
    if now < warned {
        sqlx::query!(
            "UPDATE users SET quota_warned = $2 WHERE id = $1",
            user_id,
            now.percent() as i16
        )
        .execute(&mut *tx)
        .await?;
        tracing::info!(
            user_id,
            level = now.percent(),
            "quota warning re-armed: usage fell below"
        );
    }
    tx.commit().await?;
    Ok(())
}

/// What [`check`] did for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A warning of this level was stored in the INBOX.
    Warned(Level),
    /// Usage fell below the level warned about: the warning is armed again.
    Rearmed,
}

/// One user's committed usage as [`check`] compares it: the `users` row with every charged
/// delta counted.
pub(crate) struct Committed {
    pub(crate) id: i64,
    pub(crate) address: String,
    pub(crate) domain: String,
    pub(crate) quota_limit: Option<i64>,
    pub(crate) quota_warned: i16,
    pub(crate) mail_bytes: i64,
    pub(crate) file_bytes: i64,
}

/// Compare the committed usage of `user_ids` with what they were warned about; store a warning
/// or re-arm as needed (module docs). Returns what was done, per user.
pub async fn check(mail: &MailStore, user_ids: &[i64]) -> Result<Vec<(i64, Outcome)>, StoreError> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_as!(
        Committed,
        r#"SELECT u.id, u.address, d.name AS domain, u.quota_limit, u.quota_warned,
                u.mail_bytes + (SELECT coalesce(sum(bytes), 0) FROM quota_reservations
                                WHERE user_id = u.id AND charged = 'mail')::bigint AS "mail_bytes!",
                u.file_bytes + (SELECT coalesce(sum(bytes), 0) FROM quota_reservations
                                WHERE user_id = u.id AND charged = 'files')::bigint AS "file_bytes!"
         FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = ANY($1)"#,
        user_ids
    )
    .fetch_all(mail.db())
    .await?;
    act_on(mail, rows).await
}

/// What [`check`] does with the usage it read.
async fn act_on(mail: &MailStore, rows: Vec<Committed>) -> Result<Vec<(i64, Outcome)>, StoreError> {
    let mut done = Vec::new();
    for row in rows {
        let used = (row.mail_bytes.max(0) as u64).saturating_add(row.file_bytes.max(0) as u64);
        let limit = row.quota_limit.map(|l| l.max(0) as u64);
        let now = level_of(used, limit);
        let warned = Level::from_percent(row.quota_warned);
        if now < warned {
            rearm(mail, row.id).await?;
            done.push((row.id, Outcome::Rearmed));
        } else if now > warned {
            let Some(limit) = limit else { continue };
            let raw = message(&row.address, &row.domain, now, used, limit, Utc::now());
            if mail.deliver_quota_warning(row.id, now, raw).await? {
                tracing::info!(user = %row.address, level = now.percent(), used, limit, "quota warning delivered");
                done.push((row.id, Outcome::Warned(now)));
            }
        }
    }
    Ok(done)
}

/// [`check`] after a write that committed: a failure is logged, never passed on (the write
/// stands; the next write or the next daemon start checks again).
pub async fn after_write(mail: &MailStore, user_ids: &[i64]) {
    // The write's usage delta goes into the user's row, so every other reader of the row sees
    // it, and the usage is read for the check, in one round trip (super::fold_and_read).
    let rows = match super::fold_and_read(mail.db(), user_ids).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(
                ?user_ids,
                "folding usage deltas and reading usage failed (done again on the next write): {e}"
            );
            return;
        }
    };
    if let Err(e) = act_on(mail, rows).await {
        tracing::warn!(
            ?user_ids,
            "quota warning check failed (checked again on the next write): {e}"
        );
    }
}

/// After a committed write whose every quota step was a reservation made without a limit
/// (`Reservation::UNLIMITED`, turned into a charged delta by `commit`): no warning level can
/// have been crossed, so nothing is read before the answer, and the deltas are folded a moment
/// later in a batch (`FoldQueue`). A limit set between the reservation and the commit is
/// charged under the user's row lock all the same (`commit`); its warning check comes with
/// the user's next write, which reserves against the limit, or at the next daemon start.
pub fn after_unlimited_write(mail: &MailStore, user_ids: &[i64]) {
    mail.usage_folds().fold_later(mail.db(), user_ids);
}

/// At daemon start: check every user who has a limit or was warned (a crossing committed just
/// before a crash whose check never ran). Returns what was done.
pub async fn sweep(mail: &MailStore) -> Result<Vec<(i64, Outcome)>, StoreError> {
    let ids: Vec<i64> =
        sqlx::query_scalar!("SELECT id FROM users WHERE quota_limit IS NOT NULL OR quota_warned > 0 ORDER BY id")
            .fetch_all(mail.db())
            .await?;
    let mut done = Vec::new();
    // In slices, so one query never carries an unbounded id list.
    for chunk in ids.chunks(500) {
        done.extend(check(mail, chunk).await?);
    }
    Ok(done)
}

/// The warning message (RFC 5322): from the postmaster of the user's domain, to the user.
pub fn message(address: &str, domain: &str, level: Level, used: u64, limit: u64, now: DateTime<Utc>) -> Vec<u8> {
    let percent = level.percent();
    let id: u128 = rand::random();
    let (what_now, when_full) = match level {
        Level::Critical => (
            "It is almost full.",
            "Very soon new mail to you will be refused and sent back to its senders, and you will not be able to save more files.",
        ),
        _ => (
            "There is still room, but it is filling up.",
            "When it is full, new mail to you will be refused and sent back to its senders, and you will not be able to save more files.",
        ),
    };
    let body = format!(
        "Hello,\r\n\
         \r\n\
         your storage on {domain} is {percent}% full: you use {used} of your {limit}.\r\n\
         {what_now}\r\n\
         \r\n\
         This counts your mail (every folder, Sent and Trash included) and your files\r\n\
         together.\r\n\
         \r\n\
         {when_full}\r\n\
         \r\n\
         To make room: delete mail you no longer need and empty the Trash folder,\r\n\
         delete files you no longer need, or ask your administrator for more space.\r\n\
         \r\n\
         -- \r\n\
         The postmaster of {domain}\r\n",
        used = format_size(used),
        limit = format_size(limit),
        when_full = wrap(when_full, 76),
    );
    // RFC 5322 §3.6: Date and From are required; Message-ID is a unique id at the domain.
    // RFC 3834 §5: Auto-Submitted marks it as machine-made, so no auto-reply answers it.
    format!(
        "From: Postmaster <postmaster@{domain}>\r\n\
         To: <{address}>\r\n\
         Subject: Your storage is {percent}% full\r\n\
         Date: {date}\r\n\
         Message-ID: <quota-{id:032x}@{domain}>\r\n\
         Auto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         {body}",
        date = now.to_rfc2822(),
    )
    .into_bytes()
}

/// Break `text` into lines of at most `width` characters at spaces (RFC 5322 §2.1.1 asks for
/// lines under 78 characters), joined with CRLF.
fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines.join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_at_the_thresholds() {
        assert_eq!(level_of(0, None), Level::Below);
        assert_eq!(level_of(u64::MAX, None), Level::Below);
        assert_eq!(level_of(799, Some(1000)), Level::Below);
        assert_eq!(level_of(800, Some(1000)), Level::Near);
        assert_eq!(level_of(949, Some(1000)), Level::Near);
        assert_eq!(level_of(950, Some(1000)), Level::Critical);
        assert_eq!(level_of(5000, Some(1000)), Level::Critical);
        assert_eq!(level_of(0, Some(0)), Level::Critical);
        assert_eq!(level_of(u64::MAX, Some(u64::MAX)), Level::Critical);
        assert_eq!(level_of(u64::MAX / 2, Some(u64::MAX)), Level::Below);
        for p in [0i16, 80, 95] {
            let l = Level::from_percent(p);
            assert_eq!(l.percent() as i16, p);
        }
    }

    #[test]
    fn the_message_says_what_and_what_to_do() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let raw = message(
            "alice@example.test",
            "example.test",
            Level::Near,
            850 << 20,
            1 << 30,
            now,
        );
        let text = String::from_utf8(raw).unwrap();
        assert!(
            text.starts_with("From: Postmaster <postmaster@example.test>\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nTo: <alice@example.test>\r\n"));
        assert!(text.contains("\r\nSubject: Your storage is 80% full\r\n"));
        assert!(text.contains("\r\nDate: Sat, 5 Dec 2026 10:00:00 +0000\r\n"));
        assert!(text.contains("\r\nMessage-ID: <quota-"));
        assert!(text.contains("you use 850 MiB of your 1.00 GiB"), "{text}");
        assert!(text.contains("mail (every folder, Sent and Trash included) and your files"));
        assert!(text.contains("ask your administrator for more space"));
        for line in text.split("\r\n") {
            assert!(line.len() <= 78, "line too long: {line:?}");
            assert!(!line.contains('\n') && !line.contains('\r'));
        }
        let crit = message("a@b.test", "b.test", Level::Critical, 1, 1, now);
        assert!(
            String::from_utf8(crit)
                .unwrap()
                .contains("Subject: Your storage is 95% full\r\n")
        );
    }
}
