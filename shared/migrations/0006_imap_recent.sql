-- RFC 3501 §2.3.2 \Recent across processes: the highest UID some IMAP session (SELECT, not
-- EXAMINE) has already claimed as its \Recent. Messages above it are recent for the next session
-- that selects the mailbox or, while selected, learns of them; STATUS (RECENT) counts them.
ALTER TABLE mailboxes ADD COLUMN recent_claimed_uid BIGINT NOT NULL DEFAULT 0;
