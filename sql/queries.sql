-- Named queries used by bookwatch. Each block starts with "-- name: <query_name>".

-- name: find_table
-- The table named exactly (no case folding, no search_path), if it is a table.
SELECT c.oid::bigint, c.relkind::text
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(table)s;

-- name: primary_key_columns
SELECT a.attname::text
  FROM pg_catalog.pg_index i
  JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = %(oid)s AND i.indisprimary
 ORDER BY k.position;

-- name: table_columns
SELECT a.attname::text
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;

-- name: installed_triggers
-- Every bookwatch capture trigger in the database, with its arguments and state.
SELECT n.nspname::text AS schema,
       c.relname::text AS table,
       t.tgenabled <> 'D' AS enabled,
       t.tgconstraint <> 0 AS deferred,
       t.tgnargs,
       t.tgargs
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 WHERE t.tgname = 'bookwatch_capture' AND pn.nspname = 'bookwatch' AND p.proname = 'capture'
   AND NOT t.tgisinternal
 ORDER BY 1, 2;

-- name: schema_exists
SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'bookwatch');

-- name: schema_version
SELECT value FROM bookwatch.meta WHERE key = 'schema_version';

-- name: log_summary
SELECT count(*), min(seq), max(seq) FROM bookwatch.change_log;

-- name: notification_queue_usage
SELECT pg_catalog.pg_notification_queue_usage();

-- name: log_after
-- Catch-up: the logged events of a channel after a seq, oldest first, one page at a time.
SELECT seq, payload
  FROM bookwatch.change_log
 WHERE channel = %(channel)s AND seq > %(after)s
 ORDER BY seq
 LIMIT %(page)s;

-- name: log_oldest_seq
SELECT min(seq) FROM bookwatch.change_log WHERE channel = %(channel)s;

-- name: log_newest_seq
SELECT coalesce(max(seq), 0) FROM bookwatch.change_log WHERE channel = %(channel)s;
