-- A quota reservation names its owner: the process (instance) that made it. Each instance holds
-- a session-level advisory lock (pg_advisory_lock(1903521652, owner)) on one dedicated connection
-- for its life; when the process dies, PostgreSQL drops the lock, and a reservation whose owner's
-- lock is gone from pg_locks is stale and is released (shared/src/quota.rs, release_stale).
CREATE SEQUENCE quota_owner_seq AS integer MINVALUE 1 MAXVALUE 2147483647 CYCLE;
ALTER TABLE quota_reservations ADD COLUMN owner INTEGER;
CREATE INDEX quota_reservations_owner ON quota_reservations(owner);
-- Reservations made before owners existed have no owner to check: shorten their expiry so a
-- crashed writer's rows stop counting soon, while a write still running over the upgrade keeps
-- its reservation long enough to finish (its commit charges the bytes in any case).
UPDATE quota_reservations SET expires_at = least(expires_at, now() + interval '15 minutes')
WHERE owner IS NULL;
