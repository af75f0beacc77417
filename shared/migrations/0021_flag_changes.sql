-- Flag changes recorded per STORE instead of an index on the messages' MODSEQ (issue #12).
--
-- A STORE writes a new version of each changed message's row. While `modseq` was indexed
-- (messages_modseq) no such update could be HOT: every version took a new entry in both of
-- the table's indexes, and a `STORE 1:*` on 2000 messages spent 28 ms in its UPDATE where the
-- same UPDATE without that index took 16 (HOT where the page has room, fillfactor 70: 0018).
--
-- What the index answered, "which messages changed since MODSEQ n", is answered now by:
--   * new messages: those above the highest UID the asking session knows (UIDs and MODSEQs are
--     both taken in ascending order under the mailbox's row lock, so a message added after n
--     has a UID above every message there was at n);
--   * flag changes: this table, one row per STORE that changed something, with the UIDs it
--     was given at its MODSEQ (as ranges: `STORE 1:*` is one), a superset of those it changed;
--     the messages' own rows say their current flags and MODSEQ;
--   * removals: `expunged` (0013), as before.
-- The record reaches back to the mailbox's `flag_log_floor`: a session whose MODSEQ is older
-- compares every message of the mailbox instead. `flag_log_uids` counts the UIDs recorded;
-- past a bound the record is emptied and the floor raised to the MODSEQ of the STORE that
-- passed it (shared::mailstore, FLAG_LOG_MAX_UIDS).
CREATE TABLE flag_changes (
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    modseq     BIGINT NOT NULL,
    uids       INT8MULTIRANGE NOT NULL,
    PRIMARY KEY (mailbox_id, modseq)
);
ALTER TABLE mailboxes ADD COLUMN flag_log_floor BIGINT NOT NULL DEFAULT 0,
                      ADD COLUMN flag_log_uids BIGINT NOT NULL DEFAULT 0;
-- Nothing was recorded before this migration: the record of existing mailboxes starts now.
UPDATE mailboxes SET flag_log_floor = highestmodseq;
DROP INDEX messages_modseq;
