-- One login gate for the three daemons (shared/src/auth/gate.rs), replacing each process's own
-- in-memory limiter: an address gets one budget of password checks whichever daemon it tries.
--
-- Each row is a GCRA bucket (generic cell rate algorithm): `tat` is the "theoretical arrival
-- time" up to which the key's budget is spent; an attempt is allowed while tat stays within one
-- minute of now, and each allowed attempt moves it on by (1 minute / limit). An attempt is
-- charged BEFORE its password is checked, in one statement, and refunded if it succeeds.
CREATE TABLE login_gate (
    -- 'ip' (a client address, IPv6 by /64) or 'account' (a lower-cased login name).
    scope TEXT NOT NULL CHECK (scope IN ('ip', 'account')),
    -- Names longer than any address (RFC 5321 §4.5.3.1) are refused before they get here.
    key TEXT NOT NULL CHECK (octet_length(key) <= 320),
    tat TIMESTAMPTZ NOT NULL,
    -- The answer to the last attempt: whether it was charged (allowed) or refused.
    allowed BOOLEAN NOT NULL,
    -- Addresses: the last failed password check. Such an address is "suspect" for a while, and
    -- only suspect addresses are refused for an account that is over its budget.
    failed_at TIMESTAMPTZ,
    -- When the row stops mattering (tat passed, no longer suspect); pruned after that.
    expires TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_gate_expires ON login_gate (expires);
