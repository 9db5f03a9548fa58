-- bookwatch capture objects, schema version 1.
--
-- Everything lives in schema "bookwatch". Running this file again is harmless: it creates what
-- is missing and replaces the capture function, which is how a later release upgrades in place.
-- The installer (triggers.py) runs it inside the same transaction as the trigger DDL.

CREATE SCHEMA IF NOT EXISTS bookwatch;

CREATE TABLE IF NOT EXISTS bookwatch.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- seq is drawn at commit time, under the commit lock taken in bookwatch.capture(), so it
-- increases in commit order (see the function's comments).
CREATE SEQUENCE IF NOT EXISTS bookwatch.change_seq AS bigint;

CREATE TABLE IF NOT EXISTS bookwatch.change_log (
    seq       bigint PRIMARY KEY,
    channel   text NOT NULL,
    payload   text NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE bookwatch.change_log IS
    'bookwatch: every captured change as its wire-format v1 payload, in commit order of seq';

-- Trigger arguments, set by the installer:
--   TG_ARGV[0]          NOTIFY channel
--   TG_ARGV[1]          'durable' (append to change_log, numbered at commit) or 'volatile'
--   TG_ARGV[2]          n, the number of primary key columns
--   TG_ARGV[3..3+n-1]   primary key column names, in key order
--   TG_ARGV[3+n..]      excluded columns: named in "changed", their values never sent
-- Keeping this in the trigger definition spares a catalog lookup on every row.
CREATE OR REPLACE FUNCTION bookwatch.capture() RETURNS trigger
LANGUAGE plpgsql AS $capture$
DECLARE
    row_new  jsonb;
    row_old  jsonb;
    pk       jsonb;
    changed  jsonb;
    diff     jsonb;
    head     text;
    tail     text;
    payload  text;
    seq      bigint;
BEGIN
    -- Every statement here runs on every written row, so the body stays lean: plain
    -- expressions where possible (PL/pgSQL evaluates those without the executor), one query
    -- for an UPDATE's diff, none otherwise.
    IF TG_OP = 'UPDATE' THEN
        row_new := to_jsonb(NEW);
        row_old := to_jsonb(OLD);
        SELECT jsonb_agg(n.key), jsonb_object_agg(n.key, jsonb_build_array(row_old -> n.key, n.value))
          INTO changed, diff
          FROM jsonb_each(row_new) AS n
         WHERE n.value IS DISTINCT FROM row_old -> n.key;
        IF changed IS NULL THEN
            RETURN NULL;  -- an UPDATE that changes nothing is not an event
        END IF;
        IF TG_NARGS > 3 + TG_ARGV[2]::int THEN
            diff := diff - TG_ARGV[3 + TG_ARGV[2]::int :];
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        row_new := to_jsonb(OLD);
    ELSE
        row_new := to_jsonb(NEW);
    END IF;

    IF TG_ARGV[2] = '1' THEN
        pk := jsonb_build_object(TG_ARGV[3], row_new -> TG_ARGV[3]);
        head := (row_new -> TG_ARGV[3])::text;
    ELSE
        SELECT jsonb_object_agg(k, row_new -> k)
          INTO pk
          FROM unnest(TG_ARGV[3 : 2 + TG_ARGV[2]::int]) AS k;
        head := 'null';
    END IF;

    head := ',"table":' || to_json(TG_TABLE_NAME::text)
         || ',"schema":' || to_json(TG_TABLE_SCHEMA::text)
         || ',"action":"' || TG_OP
         || '","id":' || head
         || ',"pk":' || pk::text
         || ',"actor":' || to_json(coalesce(nullif(current_setting('bookwatch.actor', true), ''),
                                            nullif(current_setting('application_name', true), ''),
                                            current_user::text));
    tail := ',"txid":' || pg_current_xact_id()::text
         || ',"timestamp":"'
         || to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
         || '"}';

    -- NOTIFY refuses payloads of 8000 bytes or more, which would fail the writer's
    -- transaction. 7950 leaves room for the seq digits and the fixed prefix.
    payload := head || ',"changed":' || coalesce(changed::text, 'null')
                    || ',"diff":' || coalesce(diff::text, 'null')
                    || ',"truncated":false' || tail;
    IF octet_length(payload) > 7950 THEN
        payload := head || ',"changed":' || coalesce(changed::text, 'null')
                        || ',"diff":null,"truncated":true' || tail;
    END IF;
    IF octet_length(payload) > 7950 THEN
        -- Even the key or the list of changed columns is too big: keep only what names the
        -- table and the transaction, so consumers still learn that something changed.
        payload := ',"table":' || to_json(TG_TABLE_NAME::text)
                || ',"schema":' || to_json(TG_TABLE_SCHEMA::text)
                || ',"action":"' || TG_OP
                || '","id":null,"pk":null,"actor":null'
                || ',"changed":null,"diff":null,"truncated":true' || tail;
    END IF;

    IF TG_ARGV[1] = 'durable' THEN
        -- Numbering at commit: this runs as a deferred constraint trigger, and the
        -- transaction-scoped lock is held until the commit is visible, so a transaction that
        -- commits later always draws a larger seq and "everything after the last seq I saw" is
        -- a complete resume point. Only these statements run under the lock.
        PERFORM pg_advisory_xact_lock(7236284523806213748);
        seq := nextval('bookwatch.change_seq');
        payload := '{"v":1,"seq":' || seq || payload;
        INSERT INTO bookwatch.change_log (seq, channel, payload)
             VALUES (seq, TG_ARGV[0], payload);
    ELSE
        payload := '{"v":1,"seq":null' || payload;
    END IF;
    PERFORM pg_notify(TG_ARGV[0], payload);
    RETURN NULL;
END
$capture$;

INSERT INTO bookwatch.meta (key, value) VALUES ('schema_version', '1')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
