-- RFC 7162 §3.2.5, §3.2.6 (QRESYNC): the UIDs that left a mailbox and the MODSEQ their removal
-- took, so a client with a cache learns in one `VANISHED (EARLIER)` response what went away
-- since the MODSEQ it knows. Written only by the mail store's expunge and move
-- (shared::mailstore, the owner of the message tables); a UID is never reused in a mailbox.
-- Bounded: each mailbox keeps its newest rows (mailstore::EXPUNGED_KEPT); older ones are
-- dropped and `mailboxes.expunged_floor` raised to their highest MODSEQ. Removals with a MODSEQ
-- at or below the floor are forgotten: a client asking from below it is told every UID it may
-- know that is gone (RFC 7162 §3.2.5.2 allows that superset).
CREATE TABLE expunged (
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid        BIGINT NOT NULL,
    modseq     BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);
ALTER TABLE mailboxes ADD COLUMN expunged_floor BIGINT NOT NULL DEFAULT 0;
-- Removals before this migration were not recorded.
UPDATE mailboxes SET expunged_floor = highestmodseq;
