-- tinydc-davd: the intent journal that keeps file usage and the file tree in agreement
-- across a crash (DESIGN.md "Durability"; davd/src/journal.rs).
--
-- A PUT, COPY, DELETE or MOVE inserts its row in the same transaction that charges or refunds
-- the quota, commits, then does its one file system step (rename or unlink) and fsyncs the
-- folder. A row whose step may not have happened is finished at davd's start. Paths are
-- relative to the user's tree DATA/files/<address>/, as raw file name bytes.
CREATE TABLE dav_journal (
    id       BIGSERIAL PRIMARY KEY,
    user_id  BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- 'place': rename the fsynced temp file `source` over `path` (PUT, COPY);
    -- 'delete': unlink `path`; 'move': rename `source` to `path`.
    op       TEXT NOT NULL CHECK (op IN ('place', 'delete', 'move')),
    path     BYTEA NOT NULL,
    source   BYTEA,
    -- Inode of the file the step moves or removes: tells whether the step already happened.
    ino      BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dav_journal_user ON dav_journal(user_id);
