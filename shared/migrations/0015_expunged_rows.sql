-- How many rows of `expunged` (migration 0013) each mailbox has, kept by the mail store's
-- record of removals (shared::mailstore, the one writer of both tables) in the statement that
-- adds them, so an EXPUNGE learns whether the record needs pruning without counting or walking
-- its index (issue #12: the walk of up to 20,000 entries on every EXPUNGE). May run ahead of
-- the true count (a UID recorded twice); every pruning sets it to the true count again.
ALTER TABLE mailboxes ADD COLUMN expunged_rows BIGINT NOT NULL DEFAULT 0;
UPDATE mailboxes b SET expunged_rows = (SELECT count(*) FROM expunged e WHERE e.mailbox_id = b.id);
