-- Read-only share links (`tinydc share`; davd serves them at /s/<token>/ without a login).
-- Written only by shared/src/shares.rs. The token itself is never stored: only its SHA-256,
-- so a database dump or backup gives no working link. A link dies with its account.
CREATE TABLE share_links (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_sha256  BYTEA NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    -- Inside the owner's tree DATA/files/<address>: "/" or "/a/b", no trailing slash.
    path          TEXT NOT NULL CHECK (path LIKE '/%'),
    is_folder     BOOLEAN NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL: never expires.
    expires_at    TIMESTAMPTZ,
    access_count  BIGINT NOT NULL DEFAULT 0,
    last_access   TIMESTAMPTZ
);

CREATE INDEX share_links_user ON share_links (user_id);
