-- tinydc-davd: WebDAV dead properties and locks, both scoped by user.
--
-- Paths are the URL-encoded path inside the user's tree, without a trailing slash
-- ('/' for the root, '/docs/a%20b.txt' for a file), so one resource has exactly one key.

-- Dead properties set by PROPPATCH (RFC 4918 section 9.2), e.g. Windows' Win32 timestamps.
CREATE TABLE dav_props (
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    -- The property's XML namespace ('' when it has none) and local name.
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    prefix     TEXT,
    -- The whole property element as XML.
    xml        BYTEA NOT NULL,
    PRIMARY KEY (user_id, path, namespace, name)
);

-- Write locks (RFC 4918 section 6 and 9.10). A lock with timeout_at in the past is gone.
CREATE TABLE dav_locks (
    token       TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    principal   TEXT,
    -- The DAV:owner element the client sent, as XML.
    owner       TEXT,
    -- NULL: infinite.
    timeout_at  TIMESTAMPTZ,
    timeout_secs BIGINT,
    shared      BOOLEAN NOT NULL,
    deep        BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dav_locks_user_path ON dav_locks(user_id, path);
