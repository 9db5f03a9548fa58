-- Migration 3: wal capture v3. The relay decodes rows from pgoutput: the per-row capture
-- messages, their secret and the per-table compiled functions go. Events are kept.
-- install-triggers rewrites the triggers of every wal-mode table in the same transaction
-- (pgwatch_cli/capture/triggers.py); v2 messages still waiting in the slot are not relayed
-- (run the relay until `status` shows nothing waiting before upgrading). Safe to run again
-- by itself: every statement leaves what an earlier run made as it is.

-- What the relay needs to know of each table captured in wal mode: there is no row trigger
-- carrying arguments any more. Readable and writable by the owner only.
CREATE TABLE IF NOT EXISTS bookwatch.captured_table (
    relid            regclass PRIMARY KEY,
    channel          text NOT NULL,
    key_columns      text[] NOT NULL,
    excluded_attnums int2[] NOT NULL DEFAULT '{}',
    tenant_column    text
);

-- The REPLICA IDENTITY each relation had before install-triggers set it to FULL, so
-- remove-triggers can put it back (partitions of a captured table included).
CREATE TABLE IF NOT EXISTS bookwatch.replica_identity_before (
    relid      regclass PRIMARY KEY,
    captured   regclass NOT NULL,
    identity   "char" NOT NULL,
    index_name text
);

-- How far into the transaction at commit_lsn the relay has appended: the number of its changes
-- already in the log, or NULL when all of it is (a transaction appended in chunks).
ALTER TABLE bookwatch.relay_progress ADD COLUMN IF NOT EXISTS position bigint;

DROP FUNCTION IF EXISTS bookwatch.send_wal() CASCADE;
DO $compiled$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT p.proname FROM pg_catalog.pg_proc p
                 WHERE p.pronamespace = 'bookwatch'::regnamespace
                   AND p.proname LIKE 'capture\_wal\_%'
    LOOP
        EXECUTE format('DROP FUNCTION bookwatch.%I() CASCADE', name);
    END LOOP;
END
$compiled$;
DROP TABLE IF EXISTS bookwatch.wal_secret;

-- Partitions' rows are published as their root's, the table the user captured.
DO $publication$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'bookwatch_messages') THEN
        ALTER PUBLICATION bookwatch_messages SET (publish_via_partition_root = true);
    END IF;
END
$publication$;
