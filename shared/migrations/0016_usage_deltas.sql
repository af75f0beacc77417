-- Usage counters that do not serialize every write of one account (issue #12).
--
-- A reservation row (charged IS NULL) promises space to a write in progress. When that write
-- commits, its own transaction turns the row into a charged delta in place (charged = 'mail' or
-- 'files', bytes = what was written, no owner, no expiry) instead of adding the bytes to the
-- user's row: the writer never waits for the `users` row, which every reservation locks briefly.
-- A user's usage is users.mail_bytes / file_bytes plus their charged rows; deltas are folded
-- into the `users` row under its lock shortly after (shared/src/quota.rs, `fold`).
ALTER TABLE quota_reservations
    ADD COLUMN charged TEXT CHECK (charged IN ('mail', 'files'));
CREATE INDEX quota_reservations_charged ON quota_reservations(user_id) WHERE charged IS NOT NULL;
