-- tinydc foundation schema: domains, users, aliases, quota, blobs, mailboxes, messages.

CREATE TABLE domains (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (name = lower(name)),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    address        TEXT NOT NULL UNIQUE CHECK (address = lower(address)),
    domain_id      BIGINT NOT NULL REFERENCES domains(id),
    password_hash  TEXT NOT NULL,
    -- NULL: unlimited. Bytes over mail and files together.
    quota_limit    BIGINT CHECK (quota_limit IS NULL OR quota_limit >= 0),
    mail_bytes     BIGINT NOT NULL DEFAULT 0,
    file_bytes     BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Space promised to writes in progress (SMTP DATA, IMAP APPEND, WebDAV PUT). Counted against
-- the limit until committed or released; a reservation left by a crashed process expires.
CREATE TABLE quota_reservations (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    bytes       BIGINT NOT NULL CHECK (bytes >= 0),
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX quota_reservations_user ON quota_reservations(user_id);

-- source is a full address (alias) or '@domain' (catch-all for that domain).
CREATE TABLE aliases (
    source      TEXT NOT NULL CHECK (source = lower(source)),
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (source, user_id)
);
CREATE INDEX aliases_user ON aliases(user_id);

-- Content-addressed message bodies in DATA/blobs (sha256, hex).
CREATE TABLE blobs (
    id          TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    refcount    BIGINT NOT NULL DEFAULT 0 CHECK (refcount >= 0),
    -- When refcount last dropped to zero; the sweep waits a grace period after it.
    zero_since  TIMESTAMPTZ
);

CREATE TABLE mailboxes (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- Full name with '/' as the hierarchy delimiter; INBOX is always spelled 'INBOX'.
    name           TEXT NOT NULL,
    uidvalidity    BIGINT NOT NULL,
    uidnext        BIGINT NOT NULL DEFAULT 1,
    highestmodseq  BIGINT NOT NULL DEFAULT 1,
    -- \Sent \Drafts \Trash \Junk \Archive (RFC 6154), or NULL.
    special_use    TEXT,
    subscribed     BOOLEAN NOT NULL DEFAULT TRUE,
    UNIQUE (user_id, name)
);

CREATE TABLE messages (
    mailbox_id     BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid            BIGINT NOT NULL,
    modseq         BIGINT NOT NULL,
    -- System flags (\Seen \Answered \Flagged \Deleted \Draft) and keywords.
    flags          TEXT[] NOT NULL DEFAULT '{}',
    internal_date  TIMESTAMPTZ NOT NULL,
    size           BIGINT NOT NULL,
    blob_id        TEXT NOT NULL REFERENCES blobs(id),
    -- Parsed once at delivery (see shared::mailstore::parsed): envelope, body structure.
    envelope       JSONB NOT NULL,
    body_structure JSONB NOT NULL,
    -- The raw header block, for HEADER.FIELDS fetches without reading the blob.
    header         BYTEA NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
