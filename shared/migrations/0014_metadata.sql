-- IMAP METADATA (RFC 5464): entries a user set on the server ("" mailbox: mailbox_id NULL) or
-- on one of their mailboxes. Written only by shared/src/metadata.rs. Names are stored lower-case
-- (RFC 5464 §3.2: entry names are case-insensitive) with their /private or /shared prefix. A
-- mailbox's entries go with it (DELETE: the store refunds their bytes in the same transaction)
-- and follow it on RENAME by keeping its id; a user's go with the user.
-- octet_length(name) + octet_length(value) of every row is charged to the owner's mail usage.
CREATE TABLE metadata_entries (
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    mailbox_id  BIGINT REFERENCES mailboxes(id) ON DELETE CASCADE,
    name        TEXT NOT NULL CHECK (name = lower(name) AND (name LIKE '/private/%' OR name LIKE '/shared/%')),
    value       BYTEA NOT NULL
);

-- One value per entry; the server's entries (mailbox_id NULL) have mailbox id 0 here.
CREATE UNIQUE INDEX metadata_entries_key ON metadata_entries (user_id, (coalesce(mailbox_id, 0)), name);
CREATE INDEX metadata_entries_mailbox ON metadata_entries (mailbox_id) WHERE mailbox_id IS NOT NULL;
