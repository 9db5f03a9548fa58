-- bookwatch capture functions and permissions, for schema version 2.
--
-- install-triggers runs this after the migrations (sql/migrations/), in the same transaction,
-- every time: functions are replaced, grants and the reader role converge. Tables and data
-- belong to the migrations, never to this file.

-- Listeners read the log through this role: GRANT bookwatch_reader TO some_app;
DO $role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bookwatch_reader') THEN
        BEGIN
            CREATE ROLE bookwatch_reader NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- roles are cluster-wide: an install in another database made it meanwhile
            WHEN insufficient_privilege THEN
                RAISE WARNING 'bookwatch: could not create role bookwatch_reader (needs CREATEROLE)'
                    USING HINT = 'A superuser can run: CREATE ROLE bookwatch_reader NOLOGIN; '
                                 'then install-triggers again.';
        END;
    END IF;
    -- Writers reach the SECURITY DEFINER functions below through the schema, nothing else.
    GRANT USAGE ON SCHEMA bookwatch TO PUBLIC;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bookwatch_reader') THEN
        GRANT USAGE ON SCHEMA bookwatch TO bookwatch_reader;
        GRANT SELECT ON bookwatch.change_log, bookwatch.meta, bookwatch.relay_progress
            TO bookwatch_reader;
    END IF;
END
$role$;

-- The lock that orders log appends by commit: log-mode writers and the WAL relay both take it
-- until their commit, so seq follows commit order even with both modes in one database.
CREATE OR REPLACE FUNCTION bookwatch.commit_order_lock() RETURNS void
LANGUAGE sql AS $$ SELECT pg_catalog.pg_advisory_xact_lock(7236284523806213748) $$;

-- The event's "table" and "schema" members for the relation a trigger fired on: a partition
-- is named by its root, the table the triggers were installed on. NULL for a temporary table
-- (never a capture target), so callers cannot name a table that is not the relation.
CREATE OR REPLACE FUNCTION bookwatch.event_table(relid oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- With only pg_catalog and pg_temp on the path, regclass output is always schema-qualified
    -- except for temporary tables; parse_ident undoes the quoting.
    names text[] := parse_ident(COALESCE(pg_partition_root(relid), relid)::regclass::text);
BEGIN
    IF array_length(names, 1) <> 2 THEN
        RETURN NULL;
    END IF;
    RETURN ',"table":' || to_json(names[2]) || ',"schema":' || to_json(names[1]);
END
$$;

-- wal mode: the invoker's trigger (bookwatch.capture, firing first: triggers of a row fire in
-- name order) leaves the event in a transaction-local setting; this SECURITY DEFINER trigger,
-- attached right after it, adds the names of its own relation and the secret and emits. Being
-- a trigger, it cannot be called directly; EXECUTE is revoked, so only the installer attaches
-- it. The capture trigger always writes the setting, so a value forged beforehand is
-- overwritten. The setting is named by the trigger depth: a user trigger that sorts between
-- the two (bookwatch_capture_<below "send">) and writes another watched table fires that
-- table's pair one level deeper, with a setting of its own, instead of taking this row's.
CREATE OR REPLACE FUNCTION bookwatch.send_wal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    handover text := 'bookwatch.wal_event' || pg_trigger_depth();
    body text := current_setting(handover, true);
    names text[];
BEGIN
    IF body IS NULL OR body = '' THEN
        RETURN NULL;  -- an UPDATE that changed nothing
    END IF;
    PERFORM set_config(handover, '', true);
    -- With only pg_catalog and pg_temp on the path, regclass output is schema-qualified;
    -- parse_ident undoes the quoting. A partition is named by its root.
    names := parse_ident(COALESCE(pg_partition_root(TG_RELID), TG_RELID)::regclass::text);
    -- The relay drops messages without the secret: pg_logical_emit_message is PUBLIC.
    PERFORM pg_logical_emit_message(
        true, 'bookwatch',
        (SELECT s.secret FROM bookwatch.wal_secret s) || E'\n' || TG_ARGV[0] || E'\n'
        || ',"table":' || to_json(names[2]) || ',"schema":' || to_json(names[1]) || body);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION bookwatch.send_wal() FROM PUBLIC;

-- log mode: the deferred capture trigger calls this at commit. It refuses direct calls and
-- temporary tables; a role that may create a trigger on a regular table can still reach it
-- (see the README, "Permissions").
CREATE OR REPLACE FUNCTION bookwatch.append_log(relid oid, channel text, body text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head text := bookwatch.event_table(relid);
    seq bigint;
BEGIN
    IF pg_trigger_depth() = 0 OR head IS NULL THEN
        RAISE EXCEPTION 'bookwatch.append_log only runs in bookwatch''s capture trigger'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Numbering at commit (this runs from a deferred constraint trigger) under a lock held
    -- until the commit is visible: a transaction that commits later draws a larger seq.
    PERFORM bookwatch.commit_order_lock();
    seq := nextval('bookwatch.change_seq');
    INSERT INTO bookwatch.change_log (seq, channel, payload)
         VALUES (seq, channel, '{"v":1,"seq":' || seq || head || body);
    -- A wake-up only: listeners read the event from the log, which needs bookwatch_reader.
    PERFORM pg_notify(channel, seq::text);
END
$$;

REVOKE ALL ON FUNCTION bookwatch.append_log(oid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bookwatch.append_log(oid, text, text) TO PUBLIC;

-- Trigger arguments, set by the installer (pgwatch_cli/capture/config.py):
--   TG_ARGV[0]              channel
--   TG_ARGV[1]              mode: 'wal', 'log' or 'notify'
--   TG_ARGV[2]              'partitioned' when installed on a partitioned table, else ''
--   TG_ARGV[3]              n, the number of primary key columns
--   TG_ARGV[4 .. 3+n]       primary key column names, in key order
--   TG_ARGV[4+n]            m, the number of excluded columns
--   TG_ARGV[5+n .. 4+n+m]   excluded column names at install time
--   TG_ARGV[5+n+m .. 4+n+2m] their attribute numbers, so a renamed column stays excluded
--   TG_ARGV[5+n+2m]         optional: the tenant column, whose value events carry as "tenant"
-- Keeping this in the trigger definition spares a catalog lookup on every row.
CREATE OR REPLACE FUNCTION bookwatch.capture() RETURNS trigger
LANGUAGE plpgsql AS $capture$
DECLARE
    keys     int;
    excluded int;
    row_new  jsonb;
    row_old  jsonb;
    pk       jsonb;
    old_pk   text;
    changed  jsonb;
    diff     jsonb;
    hidden   text[];
    columns  jsonb;
    col      text;
    head     text;
    tail     text;
    tenant   text;
    payload  text;
BEGIN
    -- Runs for every written row, so the body stays lean: plain expressions where possible
    -- (PL/pgSQL evaluates those without the executor, no query at all for a narrow table).
    -- Set here, not in DECLARE: a compiled prelude (fastpath.py) that returns first skips them.
    keys := TG_ARGV[3]::int;
    excluded := TG_ARGV[4 + keys]::int;
    old_pk := '';
    IF TG_OP = 'UPDATE' THEN
        row_new := to_jsonb(NEW);
        row_old := to_jsonb(OLD);
        columns := jsonb_path_query_array(row_new, '$.keyvalue().key');
        IF jsonb_array_length(columns) <= 8 THEN
            -- A loop of plain expressions costs ~1.2 us per column, the query below ~10 us
            -- in all (measured per row, PostgreSQL 15): the loop wins up to about 8 columns.
            changed := '[]';
            diff := '{}';
            FOR i IN 0 .. jsonb_array_length(columns) - 1 LOOP
                col := columns ->> i;
                IF row_new -> col IS DISTINCT FROM row_old -> col THEN
                    changed := changed || to_jsonb(col);
                    diff := diff || jsonb_build_object(col, jsonb_build_array(row_old -> col, row_new -> col));
                END IF;
            END LOOP;
            IF changed = '[]' THEN
                changed := NULL;
            END IF;
        ELSE
            SELECT jsonb_agg(n.key), jsonb_object_agg(n.key, jsonb_build_array(row_old -> n.key, n.value))
              INTO changed, diff
              FROM jsonb_each(row_new) AS n
             WHERE n.value IS DISTINCT FROM row_old -> n.key;
        END IF;
        IF changed IS NULL THEN
            IF TG_ARGV[1] = 'wal' THEN
                -- The hand-over to send_wal(), named by depth (see there): nothing to send.
                PERFORM set_config('bookwatch.wal_event' || pg_trigger_depth(), '', true);
            END IF;
            RETURN NULL;  -- an UPDATE that changes nothing is not an event
        END IF;
        IF excluded > 0 THEN
            -- The names given at install, and today's names of those columns (renames).
            SELECT TG_ARGV[5 + keys : 4 + keys + excluded] || array_agg(a.attname::text)
              INTO hidden
              FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = CASE WHEN TG_ARGV[2] = '' THEN TG_RELID
                                     ELSE pg_catalog.pg_partition_root(TG_RELID) END
               AND a.attnum = ANY (TG_ARGV[5 + keys + excluded : 4 + keys + 2 * excluded]::int2[]);
            diff := diff - hidden;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        row_new := to_jsonb(OLD);
    ELSIF TG_OP = 'INSERT' THEN
        row_new := to_jsonb(NEW);
    END IF;

    IF TG_OP = 'TRUNCATE' THEN
        head := 'null,"pk":null';
    ELSIF keys = 1 THEN
        head := (row_new -> TG_ARGV[4])::text;
        head := head || ',"pk":{' || to_json(TG_ARGV[4])::text || ':' || head || '}';
        IF TG_OP = 'UPDATE' AND row_old -> TG_ARGV[4] IS DISTINCT FROM row_new -> TG_ARGV[4] THEN
            old_pk := ',"old_pk":' || jsonb_build_object(TG_ARGV[4], row_old -> TG_ARGV[4])::text;
        END IF;
    ELSE
        SELECT jsonb_object_agg(k, row_new -> k)
          INTO pk
          FROM unnest(TG_ARGV[4 : 3 + keys]) AS k;
        head := 'null,"pk":' || pk::text;
        IF TG_OP = 'UPDATE' AND changed ?| TG_ARGV[4 : 3 + keys] THEN
            SELECT ',"old_pk":' || jsonb_object_agg(k, row_old -> k)::text
              INTO old_pk
              FROM unnest(TG_ARGV[4 : 3 + keys]) AS k;
        END IF;
    END IF;

    head := ',"action":"' || TG_OP || '","id":' || head || old_pk
         || ',"actor":' || to_json(coalesce(nullif(current_setting('bookwatch.actor', true), ''),
                                            nullif(current_setting('application_name', true), ''),
                                            current_user::text));
    -- The tenant goes in the tail, which every truncated form below keeps: serve's scoped
    -- tokens need it on every event of the table. Absent argument: NULL, no key.
    tenant := TG_ARGV[5 + keys + 2 * excluded];
    IF tenant IS NOT NULL THEN
        tenant := ',"tenant":' || coalesce((row_new -> tenant)::text, 'null');
        IF octet_length(tenant) > 300 THEN
            -- Would crowd the 8000-byte NOTIFY limit; an event without its tenant reaches
            -- no tenant-scoped token, which is the safe side.
            tenant := ',"tenant":null';
        END IF;
    END IF;
    tail := coalesce(tenant, '') || ',"txid":' || pg_current_xact_id()::text
         || ',"timestamp":"'
         || to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
         || '"}';
    payload := head || ',"changed":' || coalesce(changed::text, 'null')
                    || ',"diff":' || coalesce(diff::text, 'null')
                    || ',"truncated":false' || tail;

    IF TG_ARGV[1] = 'wal' THEN
        -- No NOTIFY, so no 8000-byte limit: the event goes whole into the WAL, through the
        -- bookwatch_send trigger that fires next (send_wal()).
        PERFORM set_config('bookwatch.wal_event' || pg_trigger_depth(), payload, true);
        RETURN NULL;
    END IF;

    -- NOTIFY refuses payloads of 8000 bytes or more, which would fail the writer's
    -- transaction. 7500 leaves room for the seq, the table and schema names (up to 63 bytes
    -- each, JSON-escaped) and the fixed prefix.
    IF octet_length(payload) > 7500 THEN
        payload := head || ',"changed":' || coalesce(changed::text, 'null')
                        || ',"diff":null,"truncated":true' || tail;
    END IF;
    IF octet_length(payload) > 7500 THEN
        -- Even the key or the list of changed columns is too big: keep only what names the
        -- table and the transaction, so consumers still learn that something changed.
        payload := ',"action":"' || TG_OP
                || '","id":null,"pk":null,"actor":null'
                || ',"changed":null,"diff":null,"truncated":true' || tail;
    END IF;

    IF TG_ARGV[1] = 'log' THEN
        PERFORM bookwatch.append_log(TG_RELID, TG_ARGV[0], payload);
    ELSE
        -- notify mode: the whole event as the payload, readable by anyone who can LISTEN.
        IF TG_ARGV[2] = '' THEN
            head := ',"table":' || to_json(TG_TABLE_NAME::text)
                 || ',"schema":' || to_json(TG_TABLE_SCHEMA::text);
        ELSE
            SELECT ',"table":' || to_json(c.relname::text) || ',"schema":' || to_json(n.nspname::text)
              INTO head
              FROM pg_catalog.pg_class c
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = pg_catalog.pg_partition_root(TG_RELID);
        END IF;
        PERFORM pg_notify(TG_ARGV[0], '{"v":1,"seq":null' || head || payload);
    END IF;
    RETURN NULL;
END
$capture$;

-- Only the installer attaches the capture function to tables; firing it needs no privilege.
REVOKE ALL ON FUNCTION bookwatch.capture() FROM PUBLIC;
