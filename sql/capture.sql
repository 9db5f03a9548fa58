-- bookwatch capture functions and permissions, for schema version 3.
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
-- It is a row lock on the log's identity row: locking a row needs UPDATE on bookwatch.meta,
-- which only the owner (and its SECURITY DEFINER append) has. An advisory key would be public:
-- any role with LOGIN could take it and stall every writer's commit.
CREATE OR REPLACE FUNCTION bookwatch.commit_order_lock() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM bookwatch.meta WHERE key = 'log_id' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'bookwatch: the change log has no identity row (bookwatch.meta log_id)'
            USING HINT = 'Run bookwatch install-triggers again.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION bookwatch.commit_order_lock() FROM PUBLIC;

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

-- wal mode (v3): the rows come from the WAL (pgoutput, REPLICA IDENTITY FULL); the writer only
-- says who it is. This statement-level trigger emits the actor as a transactional logical
-- message before the statement's rows, once per transaction and again only when it changes
-- (the transaction-local setting remembers what was sent; a rolled-back subtransaction takes
-- both its message and the setting with it). The relay attaches it to the rows that follow in
-- the same transaction. Anyone may emit such a message, but only into their own transaction,
-- whose actor they choose anyway.
CREATE OR REPLACE FUNCTION bookwatch.emit_actor() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    actor text := coalesce(nullif(current_setting('bookwatch.actor', true), ''),
                           nullif(current_setting('application_name', true), ''),
                           current_user::text);
BEGIN
    IF current_setting('bookwatch.actor_emitted', true) IS DISTINCT FROM actor THEN
        PERFORM pg_catalog.pg_logical_emit_message(true, 'bookwatch.actor', actor);
        PERFORM pg_catalog.set_config('bookwatch.actor_emitted', actor, true);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION bookwatch.emit_actor() FROM PUBLIC;

-- wal mode: a partition created or attached after install-triggers has the default REPLICA
-- IDENTITY, so its UPDATEs would reach the WAL without the old row. When the installer is a
-- superuser (event triggers need one), this sets FULL on it (stored, as install-triggers does,
-- for remove-triggers) and gives it the actor trigger. Runs after every CREATE/ALTER TABLE of
-- anyone, so it looks only at the tables the command touched.
CREATE OR REPLACE FUNCTION bookwatch.capture_new_partitions() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part   oid;
    root   oid;
    member oid;
BEGIN
    IF to_regclass('bookwatch.captured_table') IS NULL THEN
        RETURN;  -- being (re)installed or upgraded
    END IF;
    FOR part IN
        SELECT DISTINCT c.objid FROM pg_event_trigger_ddl_commands() AS c
         WHERE c.classid = 'pg_class'::regclass AND c.object_type IN ('table', 'table column')
    LOOP
        FOR root IN
            SELECT t.relid FROM bookwatch.captured_table t
             WHERE t.relid::oid IN (SELECT a.relid FROM pg_partition_ancestors(part) AS a)
               AND t.relid::oid <> part
        LOOP
            FOR member IN
                SELECT p.relid FROM pg_partition_tree(part) AS p
                  JOIN pg_class k ON k.oid = p.relid
                 WHERE k.relreplident <> 'f'
            LOOP
                INSERT INTO bookwatch.replica_identity_before (relid, captured, identity)
                     SELECT member, root, k.relreplident FROM pg_class k WHERE k.oid = member
                ON CONFLICT (relid) DO NOTHING;
                EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', member::regclass);
                IF NOT EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = member
                                  AND g.tgname = 'bookwatch_actor') THEN
                    EXECUTE format('CREATE TRIGGER bookwatch_actor BEFORE INSERT OR UPDATE OR'
                                   ' DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE'
                                   ' FUNCTION bookwatch.emit_actor()', member::regclass);
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
EXCEPTION
    WHEN OTHERS THEN
        -- Never fail the user's DDL because of bookwatch: say what is left to do.
        RAISE WARNING 'bookwatch: could not prepare a new partition for wal capture: %', SQLERRM
            USING HINT = 'Run bookwatch install-triggers again for the partitioned table.';
END
$$;
REVOKE ALL ON FUNCTION bookwatch.capture_new_partitions() FROM PUBLIC;
DO $partitions$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger
                        WHERE evtname = 'bookwatch_new_partitions') THEN
        CREATE EVENT TRIGGER bookwatch_new_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
            EXECUTE FUNCTION bookwatch.capture_new_partitions();
    END IF;
END
$partitions$;

-- wal mode, in the relay's session: the event members that depend on the row, from the old and
-- new rows as to_jsonb gives them (the relay casts the decoded text to the column types), the
-- same way bookwatch.capture() builds them in log mode. NULL for an UPDATE that changed
-- nothing. ``hidden`` are excluded columns (the relay sent placeholders for them: they are
-- named in "changed" when they changed, never valued).
CREATE OR REPLACE FUNCTION bookwatch.wal_event(
    action text, row_new jsonb, row_old jsonb, keys text[], hidden text[], tenant text
) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    subject jsonb := CASE WHEN action = 'DELETE' THEN row_old ELSE row_new END;
    changed jsonb;
    diff    jsonb;
    pk      jsonb;
    head    text;
    old_pk  text := '';
BEGIN
    IF action = 'UPDATE' THEN
        SELECT jsonb_agg(n.key), jsonb_object_agg(n.key, jsonb_build_array(row_old -> n.key, n.value))
          INTO changed, diff
          FROM jsonb_each(row_new) AS n
         WHERE n.value IS DISTINCT FROM row_old -> n.key;
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
        diff := diff - hidden;
    END IF;
    IF array_length(keys, 1) = 1 THEN
        head := (subject -> keys[1])::text;
        head := head || ',"pk":{' || to_json(keys[1])::text || ':' || head || '}';
        IF action = 'UPDATE' AND row_old -> keys[1] IS DISTINCT FROM row_new -> keys[1] THEN
            old_pk := ',"old_pk":' || jsonb_build_object(keys[1], row_old -> keys[1])::text;
        END IF;
    ELSE
        SELECT jsonb_object_agg(k, subject -> k) INTO pk FROM unnest(keys) AS k;
        head := 'null,"pk":' || pk::text;
        IF action = 'UPDATE' AND changed ?| keys THEN
            SELECT ',"old_pk":' || jsonb_object_agg(k, row_old -> k)::text
              INTO old_pk
              FROM unnest(keys) AS k;
        END IF;
    END IF;
    RETURN ',"action":"' || action || '","id":' || head || old_pk
        || CASE WHEN tenant IS NULL THEN ''
                ELSE ',"tenant":' || coalesce((subject -> tenant)::text, 'null') END
        || ',"changed":' || coalesce(changed::text, 'null')
        || ',"diff":' || coalesce(diff::text, 'null');
END
$$;
REVOKE ALL ON FUNCTION bookwatch.wal_event(text, jsonb, jsonb, text[], text[], text) FROM PUBLIC;

-- wal mode: the relay appends decoded events here, in commit order. Each event carries the
-- commit LSN of its transaction and its position in it; the progress row says how far the log
-- already goes. Its row lock (FOR UPDATE needs UPDATE on bookwatch.relay_progress: only the
-- owner has it) is taken first and the progress read under it, so a relay that took over the
-- slot while an earlier relay's append was waiting appends only what that append did not.
CREATE OR REPLACE FUNCTION bookwatch.relay_append(
    slot text, lsns pg_lsn[], positions bigint[], channels text[], tails text[],
    reached_lsn pg_lsn, reached_position bigint
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done_lsn      pg_lsn;
    done_position bigint;
    newest        bigint;
    complete      CONSTANT bigint := 9223372036854775807;
BEGIN
    INSERT INTO bookwatch.relay_progress (slot_name, commit_lsn, position)
         VALUES (slot, '0/0', NULL) ON CONFLICT (slot_name) DO NOTHING;
    SELECT p.commit_lsn, p.position INTO done_lsn, done_position
      FROM bookwatch.relay_progress p WHERE p.slot_name = slot FOR UPDATE;
    IF (reached_lsn, coalesce(reached_position, complete))
       <= (done_lsn, coalesce(done_position, complete)) THEN
        RETURN NULL;  -- another relay appended all of it meanwhile
    END IF;
    PERFORM bookwatch.commit_order_lock();
    WITH fresh AS (
        SELECT e.channel, e.tail, row_number() OVER (ORDER BY e.o) AS r
          FROM unnest(lsns, positions, channels, tails) WITH ORDINALITY AS e(l, p, channel, tail, o)
         WHERE (e.l, e.p) >= (done_lsn, coalesce(done_position, complete))
           AND NOT (e.l = done_lsn AND done_position IS NULL)
    ), drawn AS (
        SELECT d.seq, row_number() OVER (ORDER BY d.seq) AS r
          FROM (SELECT nextval('bookwatch.change_seq') AS seq
                  FROM generate_series(1, (SELECT count(*) FROM fresh))) AS d
    ), appended AS (
        INSERT INTO bookwatch.change_log (seq, channel, payload)
        SELECT drawn.seq, fresh.channel, '{"v":1,"seq":' || drawn.seq || fresh.tail
          FROM fresh JOIN drawn USING (r)
        RETURNING seq, channel
    )
    SELECT max(w.seq) INTO newest
      FROM (SELECT max(a.seq) AS seq, pg_catalog.pg_notify(a.channel, max(a.seq)::text)
              FROM appended a GROUP BY a.channel) AS w;
    UPDATE bookwatch.relay_progress
       SET commit_lsn = reached_lsn, position = reached_position, relayed_at = now()
     WHERE slot_name = slot;
    RETURN newest;
END
$$;
REVOKE ALL ON FUNCTION bookwatch.relay_append(text, pg_lsn[], bigint[], text[], text[], pg_lsn, bigint)
    FROM PUBLIC;

-- log mode: the deferred capture trigger calls this at commit. It refuses direct calls and
-- temporary tables; a role that may create a trigger on a regular table can still reach it
-- (see the README, "Permissions").
CREATE OR REPLACE FUNCTION bookwatch.append_log(relid oid, channel text, body text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head text := bookwatch.event_table(relid);
    seq bigint;
    payload text;
BEGIN
    IF pg_trigger_depth() = 0 OR head IS NULL THEN
        RAISE EXCEPTION 'bookwatch.append_log only runs in bookwatch''s capture trigger'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Numbering at commit (this runs from a deferred constraint trigger) under a lock held
    -- until the commit is visible: a transaction that commits later draws a larger seq.
    PERFORM bookwatch.commit_order_lock();
    seq := nextval('bookwatch.change_seq');
    payload := '{"v":1,"seq":' || seq || head || body;
    -- The body comes from whoever fires the trigger: it must be one JSON object with ours, and
    -- must not override the members this function sets (JSON readers keep the last duplicate,
    -- so a body ending in ,"seq":9000000000000000} would move every reader's cursor).
    IF NOT payload::jsonb @> ('{"v":1,"seq":' || seq || head || '}')::jsonb THEN
        RAISE EXCEPTION 'bookwatch.append_log: the event may not set v, seq, table or schema'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO bookwatch.change_log (seq, channel, payload) VALUES (seq, channel, payload);
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
-- It runs as the writer, so its search_path is pinned: with the writer's, a function or operator
-- planted in a schema the writer can reach (public on PostgreSQL <= 14) that matches a call
-- better than the built-in (to_json(text) beats to_json(anyelement)) would run instead.
CREATE OR REPLACE FUNCTION bookwatch.capture() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $capture$
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
