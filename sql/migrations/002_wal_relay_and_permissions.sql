-- Migration 2: log identity, retention, the WAL relay's state, and a log only its owner writes.
-- Events and seqs of an earlier install are kept as they are.

-- A new identity for every log created; listeners treat a different log_id as a reset.
INSERT INTO bookwatch.meta (key, value) VALUES ('log_id', gen_random_uuid()::text)
    ON CONFLICT (key) DO NOTHING;
INSERT INTO bookwatch.meta (key, value) VALUES ('retention', '7 days')
    ON CONFLICT (key) DO NOTHING;

-- Proves to the relay that a WAL message came from the capture trigger: anyone may call
-- pg_logical_emit_message(), but only the owner (and its SECURITY DEFINER functions) reads this.
CREATE TABLE bookwatch.wal_secret (secret text NOT NULL);
CREATE UNIQUE INDEX wal_secret_one_row ON bookwatch.wal_secret ((true));
-- gen_random_uuid() draws from the server's strong random source: 244 bits.
INSERT INTO bookwatch.wal_secret (secret)
    VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

-- The relay stores the commit LSN it appended last, in the same transaction as the rows.
CREATE TABLE bookwatch.relay_progress (
    slot_name  text PRIMARY KEY,
    commit_lsn pg_lsn NOT NULL,
    relayed_at timestamptz NOT NULL DEFAULT now()
);

-- Nobody but the owner writes bookwatch's tables. A v1 README told users to GRANT INSERT on
-- the log to their writers: take every such grant back.
DO $revoke$
DECLARE
    grantee_name text;
BEGIN
    FOR grantee_name IN
        SELECT DISTINCT CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
          FROM pg_class c
          CROSS JOIN LATERAL aclexplode(c.relacl) AS acl
          LEFT JOIN pg_roles r ON r.oid = acl.grantee
         WHERE c.relnamespace = 'bookwatch'::regnamespace AND acl.grantee <> c.relowner
    LOOP
        EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA bookwatch FROM ' || grantee_name;
        EXECUTE 'REVOKE ALL ON ALL SEQUENCES IN SCHEMA bookwatch FROM ' || grantee_name;
    END LOOP;
END
$revoke$;
REVOKE ALL ON SCHEMA bookwatch FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA bookwatch FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA bookwatch FROM PUBLIC;
