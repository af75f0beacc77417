//! Dead properties (RFC 4918 section 4 and 9.2, PROPPATCH) in PostgreSQL, keyed by user and path
//! (see `paths::key`), so they survive restarts and follow their resource through MOVE, COPY and
//! DELETE. Windows stores its Win32 timestamps here after every upload, and davd each file's
//! content hash, in a namespace of its own that clients cannot set or see (checksum.rs).

use dav_server::fs::{DavProp, FsError};
use http::StatusCode;
use sqlx::{PgConnection, PgPool};

/// Most dead properties one resource may carry (bounded storage per resource).
pub const MAX_PROPS_PER_RESOURCE: i64 = 256;

fn db_error(e: sqlx::Error) -> FsError {
    tracing::error!("dead property store: {e}");
    FsError::GeneralFailure
}

/// Apply a PROPPATCH: `(true, prop)` sets, `(false, prop)` removes. All or nothing (RFC 4918
/// section 9.2: the instructions are applied atomically).
pub async fn patch(
    db: &PgPool,
    user_id: i64,
    key: &str,
    patch: Vec<(bool, DavProp)>,
) -> Result<Vec<(StatusCode, DavProp)>, FsError> {
    if patch.iter().any(|(_, p)| crate::checksum::is_reserved(p)) {
        // davd's stored content hash (checksum.rs) is not the client's to set: protected (RFC
        // 4918 section 9.2, 403), and the rest fails with it (424: all or nothing).
        tracing::info!(user_id, key, "PROPPATCH refused: davd's reserved namespace");
        return Ok(patch
            .into_iter()
            .map(|(_, p)| {
                let status = if crate::checksum::is_reserved(&p) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::FAILED_DEPENDENCY
                };
                (status, without_value(&p))
            })
            .collect());
    }
    let mut tx = db.begin().await.map_err(db_error)?;
    let mut out = Vec::with_capacity(patch.len());
    for (set, prop) in patch {
        let namespace = prop.namespace.clone().unwrap_or_default();
        if set {
            let xml = prop.xml.clone().unwrap_or_default();
            sqlx::query!(
                "INSERT INTO dav_props (user_id, path, namespace, name, prefix, xml) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id, path, namespace, name) DO UPDATE SET prefix = EXCLUDED.prefix, xml = EXCLUDED.xml",
                user_id,
                key,
                namespace,
                prop.name,
                prop.prefix,
                xml,
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        } else {
            sqlx::query!(
                "DELETE FROM dav_props WHERE user_id = $1 AND path = $2 AND namespace = $3 AND name = $4",
                user_id,
                key,
                namespace,
                prop.name,
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        out.push((StatusCode::OK, without_value(&prop)));
    }
    // davd's own content hash does not count against the client's properties.
    let count: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM dav_props WHERE user_id = $1 AND path = $2 AND namespace <> $3"#,
        user_id,
        key,
        crate::checksum::NS,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    if count > MAX_PROPS_PER_RESOURCE {
        tracing::warn!(user_id, key, count, "PROPPATCH refused: too many dead properties");
        tx.rollback().await.map_err(db_error)?;
        return Ok(out
            .into_iter()
            .map(|(_, p)| (StatusCode::INSUFFICIENT_STORAGE, p))
            .collect());
    }
    tx.commit().await.map_err(db_error)?;
    Ok(out)
}

fn without_value(p: &DavProp) -> DavProp {
    DavProp {
        name: p.name.clone(),
        prefix: p.prefix.clone(),
        namespace: p.namespace.clone(),
        xml: None,
    }
}

type PropRow = (String, String, Option<String>, Vec<u8>);

fn to_prop((namespace, name, prefix, xml): PropRow, with_value: bool) -> DavProp {
    DavProp {
        name,
        prefix,
        namespace: (!namespace.is_empty()).then_some(namespace),
        xml: with_value.then_some(xml),
    }
}

/// Every dead property of a resource.
pub async fn list(db: &PgPool, user_id: i64, key: &str, with_values: bool) -> Result<Vec<DavProp>, FsError> {
    let rows = sqlx::query!(
        "SELECT namespace, name, prefix, xml FROM dav_props WHERE user_id = $1 AND path = $2 ORDER BY namespace, name",
        user_id,
        key,
    )
    .fetch_all(db)
    .await
    .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|r| to_prop((r.namespace, r.name, r.prefix, r.xml), with_values))
        .collect())
}

/// One dead property's XML.
pub async fn get(db: &PgPool, user_id: i64, key: &str, prop: &DavProp) -> Result<Vec<u8>, FsError> {
    let xml: Option<Vec<u8>> = sqlx::query_scalar!(
        "SELECT xml FROM dav_props WHERE user_id = $1 AND path = $2 AND namespace = $3 AND name = $4",
        user_id,
        key,
        prop.namespace.clone().unwrap_or_default(),
        prop.name,
    )
    .fetch_optional(db)
    .await
    .map_err(db_error)?;
    xml.ok_or(FsError::NotFound)
}

/// SQL condition "path is `$2` or below it".
const AT_OR_BELOW: &str = "(path = $2 OR $2 = '/' OR left(path, length($2) + 1) = $2 || '/')";

/// Inside a transaction: forget the properties of `key` and everything below it.
pub async fn delete_tree(conn: &mut PgConnection, user_id: i64, key: &str) -> Result<(), sqlx::Error> {
    // Built at run time (shares AT_OR_BELOW), so not a checked macro.
    sqlx::query(&format!("DELETE FROM dav_props WHERE user_id = $1 AND {AT_OR_BELOW}"))
        .bind(user_id)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inside a transaction: move the properties of `from` (and below) to `to`, replacing what
/// was at `to`.
pub async fn move_tree(conn: &mut PgConnection, user_id: i64, from: &str, to: &str) -> Result<(), sqlx::Error> {
    delete_tree(conn, user_id, to).await?;
    // Built at run time (shares AT_OR_BELOW), so not a checked macro.
    sqlx::query(&format!(
        "UPDATE dav_props SET path = $3 || substr(path, length($2) + 1) WHERE user_id = $1 AND {AT_OR_BELOW}"
    ))
    .bind(user_id)
    .bind(from)
    .bind(to)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inside a transaction: copy the properties of the single resource `from` to `to`.
pub async fn copy_one(conn: &mut PgConnection, user_id: i64, from: &str, to: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM dav_props WHERE user_id = $1 AND path = $2", user_id, to)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "INSERT INTO dav_props (user_id, path, namespace, name, prefix, xml)
         SELECT user_id, $3, namespace, name, prefix, xml FROM dav_props WHERE user_id = $1 AND path = $2",
        user_id,
        from,
        to,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Inside a transaction: store `prop` (a property of davd's own, e.g. the content hash of
/// checksum.rs) on `key`, replacing its earlier value.
pub async fn set_own(conn: &mut PgConnection, user_id: i64, key: &str, prop: &DavProp) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO dav_props (user_id, path, namespace, name, prefix, xml) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id, path, namespace, name) DO UPDATE SET prefix = EXCLUDED.prefix, xml = EXCLUDED.xml",
        user_id,
        key,
        prop.namespace.clone().unwrap_or_default(),
        prop.name,
        prop.prefix,
        prop.xml.clone().unwrap_or_default(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Replace the value of davd's own property `new` on `key` only if it is still `old` (a
/// change meanwhile wins). Whether it was replaced.
pub async fn replace_own(db: &PgPool, user_id: i64, key: &str, old: &[u8], new: &DavProp) -> Result<bool, FsError> {
    let done = sqlx::query!(
        "UPDATE dav_props SET xml = $5 WHERE user_id = $1 AND path = $2 AND namespace = $3 AND name = $4 AND xml = $6",
        user_id,
        key,
        new.namespace.clone().unwrap_or_default(),
        new.name,
        new.xml.clone().unwrap_or_default(),
        old,
    )
    .execute(db)
    .await
    .map_err(db_error)?;
    Ok(done.rows_affected() == 1)
}

/// Windows' stored creation time (see win32.rs) of one resource.
pub async fn win32_created(db: &PgPool, user_id: i64, key: &str) -> Result<Option<std::time::SystemTime>, FsError> {
    let xml: Option<Vec<u8>> = sqlx::query_scalar!(
        "SELECT xml FROM dav_props WHERE user_id = $1 AND path = $2 AND namespace = $3 AND name = $4",
        user_id,
        key,
        crate::win32::NS,
        crate::win32::CREATION_TIME,
    )
    .fetch_optional(db)
    .await
    .map_err(db_error)?;
    Ok(xml.and_then(|x| crate::win32::created_from(&x)))
}

/// Every dead property of `key` itself and, with `children`, of the entries directly inside
/// it, by their key: one query for a whole PROPFIND, Depth 0 or 1 (propfind.rs). davd's own
/// (the content hash of every uploaded file, checksum.rs) only `with_own`, for `oc:checksums`:
/// the caller keeps them from the client.
pub async fn list_folder(
    db: &PgPool,
    user_id: i64,
    key: &str,
    children: bool,
    with_own: bool,
) -> Result<std::collections::HashMap<String, Vec<DavProp>>, FsError> {
    let pattern = if key == "/" { "/".to_string() } else { format!("{key}/") };
    let rows = sqlx::query!(
        "SELECT path, namespace, name, prefix, xml FROM dav_props WHERE user_id = $1
         AND (path = $3 OR ($4 AND left(path, length($2)) = $2 AND path <> $3
              AND strpos(substr(path, length($2) + 1), '/') = 0))
         AND ($5 OR namespace <> $6)
         ORDER BY path, namespace, name",
        user_id,
        pattern,
        key,
        children,
        with_own,
        crate::checksum::NS,
    )
    .fetch_all(db)
    .await
    .map_err(db_error)?;
    let mut out: std::collections::HashMap<String, Vec<DavProp>> = std::collections::HashMap::new();
    for r in rows {
        out.entry(r.path)
            .or_default()
            .push(to_prop((r.namespace, r.name, r.prefix, r.xml), true));
    }
    Ok(out)
}

/// Inside a transaction: after a COPY of a collection, give the copies the properties of the
/// collections copied (files got theirs as they were copied; existing rows are kept). With
/// `deep == false` (Depth: 0) only the collection itself.
pub async fn copy_tree(
    conn: &mut PgConnection,
    user_id: i64,
    from: &str,
    to: &str,
    deep: bool,
) -> Result<(), sqlx::Error> {
    let scope = if deep { AT_OR_BELOW } else { "path = $2" };
    // Built at run time (the scope depends on `deep`), so not a checked macro.
    sqlx::query(&format!(
        "INSERT INTO dav_props (user_id, path, namespace, name, prefix, xml)
         SELECT user_id, CASE WHEN $3 = '/' THEN '' ELSE $3 END || substr(path, length($2) + 1), namespace, name, prefix, xml
         FROM dav_props WHERE user_id = $1 AND {scope}
         ON CONFLICT (user_id, path, namespace, name) DO NOTHING"
    ))
    .bind(user_id)
    .bind(from)
    .bind(to)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every (user id, key) that carries dead properties, for `tinydc check` and `tinydc restore`
/// to compare with the files that exist.
pub async fn all_keys(db: &PgPool) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT DISTINCT user_id, path FROM dav_props ORDER BY user_id, path")
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.path)).collect())
}

/// Every value of davd's own property `namespace`:`name` that contains the bytes `containing`,
/// as (user id, user's address, key, value): checksum.rs finds the content hashes a crash left
/// uncomputed.
pub async fn own_values(
    db: &PgPool,
    namespace: &str,
    name: &str,
    containing: &str,
) -> Result<Vec<(i64, String, String, Vec<u8>)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT p.user_id, u.address, p.path, p.xml FROM dav_props p JOIN users u ON u.id = p.user_id
         WHERE p.namespace = $1 AND p.name = $2 AND position($3::bytea IN p.xml) > 0
         ORDER BY p.user_id, p.path",
        namespace,
        name,
        containing.as_bytes(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.user_id, r.address, r.path, r.xml))
        .collect())
}
