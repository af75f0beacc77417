-- What `tinydc import` has stored, one row per source message: written in the same transaction
-- as the message rows (shared/src/mailstore/import.rs), so an import interrupted at any moment
-- (even SIGKILL) and run again skips exactly what was committed, with no duplicate and no loss.
-- source names the origin ("mbox:<file name>", "maildir", "imap:<host>/<user>" ...), key the
-- message within it (a content hash, a Maildir unique name, UIDVALIDITY/UID ...).
CREATE TABLE import_log (
    user_id  BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source   TEXT NOT NULL,
    key      TEXT NOT NULL,
    created  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, source, key)
);
