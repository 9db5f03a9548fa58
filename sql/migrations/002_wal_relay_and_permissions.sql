-- Migration 2: log identity, retention, the WAL relay's state, and a log only its owner writes.
-- Events and seqs of an earlier install are kept as they are. Safe to run again by itself: every
-- statement leaves what an earlier run made as it is.

-- A new identity for every log created; listeners treat a different log_id as a reset.
INSERT INTO bookwatch.meta (key, value) VALUES ('log_id', pg_catalog.gen_random_uuid()::text)
    ON CONFLICT (key) DO NOTHING;
INSERT INTO bookwatch.meta (key, value) VALUES ('retention', '7 days')
    ON CONFLICT (key) DO NOTHING;

-- Proves to the relay that a WAL message came from the capture trigger: anyone may call
-- pg_logical_emit_message(), but only the owner (and its SECURITY DEFINER functions) reads this.
-- Migration 3 (rows decoded from the WAL) drops it again: run again on a version-3 install,
-- this leaves it dropped.
DO $secret$
BEGIN
    IF EXISTS (SELECT FROM bookwatch.meta
                WHERE key = 'schema_version' AND value ~ '^[0-9]+$' AND value::int >= 3) THEN
        RETURN;
    END IF;
    CREATE TABLE IF NOT EXISTS bookwatch.wal_secret (secret text NOT NULL);
    CREATE UNIQUE INDEX IF NOT EXISTS wal_secret_one_row ON bookwatch.wal_secret ((true));
    -- gen_random_uuid() draws from the server's strong random source: 244 bits.
    INSERT INTO bookwatch.wal_secret (secret)
        VALUES (pg_catalog.replace(pg_catalog.gen_random_uuid()::text
                                   || pg_catalog.gen_random_uuid()::text, '-', ''))
        ON CONFLICT DO NOTHING;
END
$secret$;

-- The relay stores the commit LSN it appended last, in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS bookwatch.relay_progress (
    slot_name  text PRIMARY KEY,
    commit_lsn pg_lsn NOT NULL,
    relayed_at timestamptz NOT NULL DEFAULT now()
);

-- Nobody but the owner writes bookwatch's tables. A v1 README told users to GRANT INSERT on
-- the log to their writers: take every such grant back.
-- Only on the way up from version 1: run again on a version-2 install, it would take back the
-- grants install-triggers gives (the readers' SELECT, the writers' USAGE on the schema).
DO $revoke$
DECLARE
    grantee_name text;
BEGIN
    IF EXISTS (SELECT FROM bookwatch.meta
                WHERE key = 'schema_version' AND value ~ '^[0-9]+$' AND value::int >= 2) THEN
        RETURN;
    END IF;
    FOR grantee_name IN
        SELECT DISTINCT CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                             ELSE pg_catalog.quote_ident(r.rolname) END
          FROM pg_catalog.pg_class c
          CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS acl
          LEFT JOIN pg_catalog.pg_roles r ON r.oid = acl.grantee
         WHERE c.relnamespace = 'bookwatch'::regnamespace AND acl.grantee <> c.relowner
    LOOP
        EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA bookwatch FROM ' || grantee_name;
        EXECUTE 'REVOKE ALL ON ALL SEQUENCES IN SCHEMA bookwatch FROM ' || grantee_name;
    END LOOP;
    REVOKE ALL ON SCHEMA bookwatch FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA bookwatch FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA bookwatch FROM PUBLIC;
END
$revoke$;
