-- tinydc-smtpd: the outbound queue and DKIM signing keys.

-- One row per (message, remote recipient). The message body is a blob; each row holds one
-- reference to it (shared::blobs::add_ref) so the sweep keeps it until the row goes.
CREATE TABLE smtp_queue (
    id            BIGSERIAL PRIMARY KEY,
    blob_id       TEXT NOT NULL REFERENCES blobs(id),
    size          BIGINT NOT NULL,
    -- The reverse-path; '' for the null sender (bounces are never bounced).
    sender        TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    -- The submitting user, if any (for `tinydc queue list`).
    user_id       BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_attempt  TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    -- A worker is delivering this row until then (a crashed worker's claim runs out).
    locked_until  TIMESTAMPTZ
);
CREATE INDEX smtp_queue_next ON smtp_queue(next_attempt);

-- One signing key per mail domain (`tinydc dkim generate DOMAIN`).
CREATE TABLE dkim_keys (
    domain       TEXT PRIMARY KEY CHECK (domain = lower(domain)),
    selector     TEXT NOT NULL,
    -- 'rsa-sha256'
    algorithm    TEXT NOT NULL,
    -- base64 of the PKCS#8 DER private key.
    private_key  TEXT NOT NULL,
    -- base64 of the DER SubjectPublicKeyInfo, the p= of the DNS record.
    public_key   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
