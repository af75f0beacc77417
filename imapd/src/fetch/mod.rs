//! Answering FETCH items: from what was parsed at delivery where possible (ENVELOPE,
//! BODYSTRUCTURE, header fields), from the body only when a section needs it.

pub mod mime;
pub mod structure;

use shared::mailstore::StoredMessage;
use shared::mailstore::parsed::BodyStructure;

/// uid, modseq, flags, internal date, size, blob id, header.
type LightRow = (
    i64,
    i64,
    Vec<String>,
    chrono::DateTime<chrono::Utc>,
    i64,
    String,
    Vec<u8>,
);

/// Metadata without the stored envelope and structure (left empty), for FETCHes that do not
/// ask for them: one light query per batch.
pub async fn fetch_light(
    db: &sqlx::PgPool,
    user_id: i64,
    mailbox_id: i64,
    uids: &[u32],
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    let rows: Vec<LightRow> = sqlx::query_as(
        "SELECT m.uid, m.modseq, m.flags, m.internal_date, m.size, m.blob_id, m.header
         FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
         WHERE b.user_id = $1 AND m.mailbox_id = $2 AND m.uid BETWEEN $4 AND $5 AND m.uid = ANY($3)
         ORDER BY m.uid",
    )
    .bind(user_id)
    .bind(mailbox_id)
    .bind(&uids)
    .bind(uids.iter().min().copied().unwrap_or(0))
    .bind(uids.iter().max().copied().unwrap_or(0))
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(uid, modseq, flags, internal_date, size, blob, header)| StoredMessage {
                uid: uid as u32,
                modseq: modseq as u64,
                flags,
                internal_date,
                size: size as u64,
                blob: shared::blobs::BlobId(blob),
                envelope: Default::default(),
                body_structure: BodyStructure::Multipart {
                    parts: Vec::new(),
                    media_subtype: String::new(),
                    params: Vec::new(),
                    disposition: None,
                    language: Vec::new(),
                    location: None,
                },
                header,
            },
        )
        .collect())
}
