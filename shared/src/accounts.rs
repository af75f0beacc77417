//! Domains, users and aliases: the directory every daemon and `tinydc` consult.

use sqlx::PgPool;
use thiserror::Error;

use crate::auth::hash_password;
use crate::mailstore;

/// Why a directory change was refused; each message is one clear line for the admin.
#[derive(Debug, Error)]
pub enum AccountError {
    #[error("{0:?} is not a valid mail address (expected name@domain)")]
    BadAddress(String),
    #[error("{0:?} is not a valid domain name")]
    BadDomain(String),
    #[error("domain {0} is not served here (add it with `tinydc domain add {0}`)")]
    UnknownDomain(String),
    #[error("domain {0} already exists")]
    DuplicateDomain(String),
    #[error("user {0} already exists")]
    DuplicateUser(String),
    #[error("no such user: {0}")]
    UnknownUser(String),
    #[error("{0} is a user's address; an alias cannot have the same address")]
    AliasIsUser(String),
    #[error("no such alias: {0}")]
    UnknownAlias(String),
    #[error(
        "user {address} still has {mail_bytes} bytes of mail and {file_bytes} bytes of files (use --purge to delete them too)"
    )]
    HasData {
        address: String,
        mail_bytes: i64,
        file_bytes: i64,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub address: String,
    /// `None`: unlimited.
    pub quota_limit: Option<i64>,
    pub mail_bytes: i64,
    pub file_bytes: i64,
}

/// Lower-case and check a mail address (`local@domain`). Quoted local parts and IP literals are
/// not accepted for accounts.
pub fn normalize_address(text: &str) -> Result<String, AccountError> {
    let address = text.trim().to_lowercase();
    let bad = || AccountError::BadAddress(text.to_string());
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !local_ok || normalize_domain(domain).is_err() {
        return Err(bad());
    }
    Ok(address)
}

/// Lower-case and check a domain name.
pub fn normalize_domain(text: &str) -> Result<String, AccountError> {
    let domain = text.trim().trim_end_matches('.').to_lowercase();
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if ok {
        Ok(domain)
    } else {
        Err(AccountError::BadDomain(text.to_string()))
    }
}

/// The domain part of a normalized address.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// Add a mail domain.
pub async fn add_domain(db: &PgPool, name: &str) -> Result<String, AccountError> {
    let name = normalize_domain(name)?;
    let inserted = sqlx::query!("INSERT INTO domains (name) VALUES ($1) ON CONFLICT DO NOTHING", name)
        .execute(db)
        .await?;
    if inserted.rows_affected() == 0 {
        return Err(AccountError::DuplicateDomain(name));
    }
    Ok(name)
}

/// Every domain, sorted.
pub async fn list_domains(db: &PgPool) -> Result<Vec<String>, AccountError> {
    Ok(sqlx::query_scalar!("SELECT name FROM domains ORDER BY name")
        .fetch_all(db)
        .await?)
}

/// Whether mail for `domain` is ours.
pub async fn is_local_domain(db: &PgPool, domain: &str) -> Result<bool, AccountError> {
    let domain = domain.trim_end_matches('.').to_lowercase();
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1) AS "exists!""#,
        domain
    )
    .fetch_one(db)
    .await?)
}

/// Create a user with a password, an optional quota limit and the default mailboxes.
pub async fn add_user(
    db: &PgPool,
    address: &str,
    password: &str,
    quota_limit: Option<u64>,
) -> Result<User, AccountError> {
    let address = normalize_address(address)?;
    let domain = domain_of(&address).to_string();
    let hash = hash_password(password).await;
    let mut tx = db.begin().await?;
    let domain_id = sqlx::query_scalar!("SELECT id FROM domains WHERE name = $1", domain)
        .fetch_optional(&mut *tx)
        .await?;
    let domain_id = domain_id.ok_or(AccountError::UnknownDomain(domain))?;
    let is_alias = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM aliases WHERE source = $1) AS "exists!""#,
        address
    )
    .fetch_one(&mut *tx)
    .await?;
    if is_alias {
        return Err(AccountError::DuplicateUser(format!(
            "{address} (an alias has that address)"
        )));
    }
    let user = sqlx::query_as!(
        User,
        "INSERT INTO users (address, domain_id, password_hash, quota_limit) VALUES ($1, $2, $3, $4)
         ON CONFLICT (address) DO NOTHING
         RETURNING id, address, quota_limit, mail_bytes, file_bytes",
        address,
        domain_id,
        hash,
        quota_limit.map(|q| q as i64),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let user = user.ok_or_else(|| AccountError::DuplicateUser(address.clone()))?;
    mailstore::create_default_mailboxes(&mut tx, user.id).await?;
    tx.commit().await?;
    Ok(user)
}

/// Look a user up by address (case-insensitive).
pub async fn find_user(db: &PgPool, address: &str) -> Result<Option<User>, AccountError> {
    Ok(sqlx::query_as!(
        User,
        "SELECT id, address, quota_limit, mail_bytes, file_bytes FROM users WHERE address = $1",
        address.trim().to_lowercase(),
    )
    .fetch_optional(db)
    .await?)
}

/// Look a user up by address, failing with `UnknownUser`.
pub async fn get_user(db: &PgPool, address: &str) -> Result<User, AccountError> {
    let address = normalize_address(address)?;
    find_user(db, &address).await?.ok_or(AccountError::UnknownUser(address))
}

/// Look a user up by id.
pub async fn user_by_id(db: &PgPool, id: i64) -> Result<Option<User>, AccountError> {
    Ok(sqlx::query_as!(
        User,
        "SELECT id, address, quota_limit, mail_bytes, file_bytes FROM users WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await?)
}

/// Every user, sorted by address.
pub async fn list_users(db: &PgPool) -> Result<Vec<User>, AccountError> {
    Ok(sqlx::query_as!(
        User,
        "SELECT id, address, quota_limit, mail_bytes, file_bytes FROM users ORDER BY address"
    )
    .fetch_all(db)
    .await?)
}

/// Change a user's password.
pub async fn set_password(db: &PgPool, address: &str, password: &str) -> Result<(), AccountError> {
    let user = get_user(db, address).await?;
    let hash = hash_password(password).await;
    sqlx::query!("UPDATE users SET password_hash = $2 WHERE id = $1", user.id, hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Delete a user. Refused while they have mail or files unless `purge`; with `purge` their
/// mailboxes, messages and aliases go, and the blobs they alone referenced become sweepable.
/// The caller removes their file tree (DATA/files/<address>) after this returns.
pub async fn delete_user(db: &PgPool, address: &str, purge: bool) -> Result<User, AccountError> {
    let user = get_user(db, address).await?;
    let mut tx = db.begin().await?;
    let held = sqlx::query!(
        "SELECT mail_bytes, file_bytes FROM users WHERE id = $1 FOR UPDATE",
        user.id
    )
    .fetch_one(&mut *tx)
    .await?;
    let (mail_bytes, file_bytes) = (held.mail_bytes, held.file_bytes);
    let messages = mailstore::count_user_messages(&mut tx, user.id).await?;
    if !purge && (mail_bytes > 0 || file_bytes > 0 || messages > 0) {
        return Err(AccountError::HasData {
            address: user.address,
            mail_bytes,
            file_bytes,
        });
    }
    mailstore::purge_user_mail(&mut tx, user.id).await?;
    sqlx::query!("DELETE FROM users WHERE id = $1", user.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(user)
}

/// Point an alias (or a catch-all `@domain`) at one or more users. Adds to existing targets.
pub async fn add_alias(db: &PgPool, source: &str, targets: &[String]) -> Result<String, AccountError> {
    let source = normalize_alias_source(source)?;
    let domain = source.rsplit_once('@').map(|(_, d)| d).unwrap_or_default().to_string();
    if !is_local_domain(db, &domain).await? {
        return Err(AccountError::UnknownDomain(domain));
    }
    if find_user(db, &source).await?.is_some() {
        return Err(AccountError::AliasIsUser(source));
    }
    let mut tx = db.begin().await?;
    for target in targets {
        let target = normalize_address(target)?;
        let user_id = sqlx::query_scalar!("SELECT id FROM users WHERE address = $1", target)
            .fetch_optional(&mut *tx)
            .await?;
        let user_id = user_id.ok_or(AccountError::UnknownUser(target))?;
        sqlx::query!(
            "INSERT INTO aliases (source, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            source,
            user_id
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(source)
}

/// Remove an alias entirely, or only some of its targets.
pub async fn delete_alias(db: &PgPool, source: &str, targets: &[String]) -> Result<(), AccountError> {
    let source = normalize_alias_source(source)?;
    let removed = if targets.is_empty() {
        sqlx::query!("DELETE FROM aliases WHERE source = $1", source)
            .execute(db)
            .await?
    } else {
        let targets: Vec<String> = targets.iter().map(|t| t.trim().to_lowercase()).collect();
        sqlx::query!(
            "DELETE FROM aliases a USING users u WHERE a.user_id = u.id AND a.source = $1 AND u.address = ANY($2)",
            source,
            &targets,
        )
        .execute(db)
        .await?
    };
    if removed.rows_affected() == 0 {
        return Err(AccountError::UnknownAlias(source));
    }
    Ok(())
}

/// Every alias with its targets, sorted.
pub async fn list_aliases(db: &PgPool) -> Result<Vec<(String, Vec<String>)>, AccountError> {
    // array_agg over a group is never NULL (a group has at least one row).
    let rows = sqlx::query!(
        r#"SELECT a.source, array_agg(u.address ORDER BY u.address) AS "targets!"
         FROM aliases a JOIN users u ON u.id = a.user_id GROUP BY a.source ORDER BY a.source"#,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.source, r.targets)).collect())
}

fn normalize_alias_source(source: &str) -> Result<String, AccountError> {
    let trimmed = source.trim();
    if let Some(domain) = trimmed.strip_prefix('@') {
        Ok(format!("@{}", normalize_domain(domain)?))
    } else {
        normalize_address(trimmed)
    }
}

/// Who receives mail sent to `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// Local users (a user, an alias's targets, or a catch-all's targets), deduplicated.
    Local(Vec<User>),
    /// A local domain, but nobody by that name.
    UnknownLocal,
    /// Not one of our domains.
    Remote,
}

/// Resolve a recipient: a user, else an alias, else the domain's catch-all, else for
/// `postmaster` the domain's first account. The one rule for local delivery (RCPT) and for
/// bounces (DSNs to a local sender), so the two cannot disagree.
pub async fn resolve_recipient(db: &PgPool, address: &str) -> Result<Recipient, AccountError> {
    let Ok(address) = normalize_address(address) else {
        return Ok(Recipient::UnknownLocal);
    };
    if let Some(user) = find_user(db, &address).await? {
        return Ok(Recipient::Local(vec![user]));
    }
    let domain = domain_of(&address).to_string();
    if !is_local_domain(db, &domain).await? {
        return Ok(Recipient::Remote);
    }
    for source in [address.clone(), format!("@{domain}")] {
        let users = sqlx::query_as!(
            User,
            "SELECT u.id, u.address, u.quota_limit, u.mail_bytes, u.file_bytes
             FROM aliases a JOIN users u ON u.id = a.user_id WHERE a.source = $1 ORDER BY u.address",
            source,
        )
        .fetch_all(db)
        .await?;
        if !users.is_empty() {
            return Ok(Recipient::Local(users));
        }
    }
    let local = address.rsplit_once('@').map_or("", |(local, _)| local);
    if local == "postmaster" {
        return postmaster(db, &domain).await;
    }
    Ok(Recipient::UnknownLocal)
}

/// RFC 5321 §4.5.1: every domain MUST accept mail for postmaster. When no user or alias has
/// that name, it goes to the domain's first account (the one `tinydc init` or the admin made
/// first); a user or an alias `postmaster@domain` overrides this.
async fn postmaster(db: &PgPool, domain: &str) -> Result<Recipient, AccountError> {
    let first = sqlx::query_as!(
        User,
        "SELECT u.id, u.address, u.quota_limit, u.mail_bytes, u.file_bytes
         FROM users u JOIN domains d ON d.id = u.domain_id WHERE d.name = $1 ORDER BY u.id LIMIT 1",
        domain,
    )
    .fetch_optional(db)
    .await?;
    Ok(match first {
        Some(user) => Recipient::Local(vec![user]),
        None => Recipient::UnknownLocal,
    })
}

/// The addresses a user may send as: their own and every alias pointing at them (not
/// catch-alls, which would let them claim any address of the domain).
pub async fn sender_addresses(db: &PgPool, user_id: i64) -> Result<Vec<String>, AccountError> {
    // Both halves of the UNION select NOT NULL columns; sqlx cannot see through a UNION.
    Ok(sqlx::query_scalar!(
        r#"SELECT address AS "address!" FROM users WHERE id = $1
         UNION SELECT source FROM aliases WHERE user_id = $1 AND source NOT LIKE '@%'"#,
        user_id,
    )
    .fetch_all(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_lowercased() {
        assert_eq!(normalize_address(" Alice@Example.TEST ").unwrap(), "alice@example.test");
        assert_eq!(normalize_address("a.b+c@x.y").unwrap(), "a.b+c@x.y");
        for bad in [
            "alice", "@x.y", "a@", "a@@x", "a b@x.y", "a@x..y", ".a@x.y", "a@-x.y", "a@x_y.z",
        ] {
            assert!(normalize_address(bad).is_err(), "{bad} accepted");
        }
    }
}
