-- Small message bodies made durable by the commit that references them (issue #12).
--
-- A body of up to blobs::PENDING_MAX bytes is written to its blob file without an fsync and
-- also inserted here, in the transaction that adds its message rows: that commit's one WAL
-- flush makes the body and the rows durable together, where the file's fsync, its folder's
-- fsync and the WAL flush came one after another before. Afterwards the blob file is fsynced
-- (in batches, off the delivery's path) and the row deleted; after a crash every daemon, and
-- the ops commands that read blobs, first write each body still listed here back to its file
-- and fsync it (shared/src/blobs.rs, `settle_all`). A row is deleted only in the version that
-- was read before its file's fsync (xmin): a writer that stored the same body again meanwhile
-- keeps it listed.
CREATE TABLE blob_pending (
    id   TEXT PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    body BYTEA NOT NULL
);
-- Kept in the row (compressed when it helps) rather than in the TOAST table: one heap insert.
ALTER TABLE blob_pending ALTER COLUMN body SET STORAGE MAIN;
