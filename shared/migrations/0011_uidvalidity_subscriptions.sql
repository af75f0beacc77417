-- RFC 3501 §2.3.1.1: a mailbox deleted and created again must get a UIDVALIDITY greater than the
-- old one, even within the same second. Each user keeps the last one handed out; a new mailbox
-- gets greatest(last + 1, now) (MailStore::next_uidvalidity).
ALTER TABLE users ADD COLUMN last_uidvalidity BIGINT NOT NULL DEFAULT 0;
UPDATE users u SET last_uidvalidity = COALESCE((SELECT max(m.uidvalidity) FROM mailboxes m WHERE m.user_id = u.id), 0);

-- RFC 3501 §6.3.6, §6.3.7 (RFC 9051 §6.3.7): subscriptions are names, not mailboxes: CREATE does
-- not subscribe, DELETE does not unsubscribe, UNSUBSCRIBE works on a name with no mailbox.
CREATE TABLE subscriptions (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
-- Every mailbox so far was subscribed when created: keep what clients see today.
INSERT INTO subscriptions (user_id, name) SELECT user_id, name FROM mailboxes WHERE subscribed;
-- The old column is no longer read or written.
ALTER TABLE mailboxes ALTER COLUMN subscribed SET DEFAULT FALSE;
