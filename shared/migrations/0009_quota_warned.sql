-- Quota warnings (shared/src/quota/warn.rs): the highest warning level, in percent of the limit
-- (0, 80 or 95), a user has been sent a message for since their usage was last below it. Set in
-- the same transaction that stores the warning in their INBOX (so a crash sends it once or
-- not yet, never twice), and lowered again whenever usage falls or the limit rises below/above
-- it, which re-arms the warning for the next crossing.
ALTER TABLE users ADD COLUMN quota_warned SMALLINT NOT NULL DEFAULT 0
    CHECK (quota_warned IN (0, 80, 95));
