-- Named queries used by bookwatch. Each block starts with "-- name: <query_name>".

-- name: find_table
-- The table named exactly (no case folding, no search_path), if it is a table; for a partition,
-- the partitioned table at its root.
SELECT c.oid::bigint, c.relkind::text,
       CASE WHEN c.relispartition THEN pg_catalog.pg_partition_root(c.oid)::regclass::text END
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
SELECT a.attname::text, a.attnum::int
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;

-- name: installed_triggers
-- Every bookwatch capture trigger in the database, with its arguments and state. Partitions'
-- clones of a trigger installed on their parent are left out: removing the parent's removes them.
SELECT n.nspname::text AS schema,
       c.relname::text AS table,
       t.tgenabled <> 'D' AS enabled,
       t.tgconstraint <> 0 AS deferred,
       t.tgnargs,
       t.tgargs,
       ARRAY(SELECT tt.tgname::text FROM pg_catalog.pg_trigger tt
              WHERE tt.tgrelid = t.tgrelid AND tt.tgname IN
                    ('bookwatch_truncate', 'bookwatch_capture_send', 'bookwatch_truncate_send'))
           AS others,
       c.relkind = 'p' AS partitioned,
       p.proname::text AS function,
       pg_catalog.obj_description(p.oid, 'pg_proc') AS function_comment
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 WHERE t.tgname = 'bookwatch_capture' AND pn.nspname = 'bookwatch'
   AND (p.proname IN ('capture', 'emit_actor') OR p.proname LIKE 'capture\_wal\_%')
   AND NOT t.tgisinternal AND t.tgparentid = 0
 ORDER BY 1, 2;

-- name: schema_exists
SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'bookwatch');

-- name: schema_version
-- 0 when schema bookwatch exists without a version (never written by a release).
SELECT coalesce((SELECT value::int FROM bookwatch.meta WHERE key = 'schema_version'), 0);

-- name: meta_value
SELECT value FROM bookwatch.meta WHERE key = %(key)s;

-- name: set_meta_value
INSERT INTO bookwatch.meta (key, value) VALUES (%(key)s, %(value)s)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: wal_capability
-- Can this server and role capture in wal mode? (logical decoding, slots, replication right)
SELECT current_setting('wal_level'),
       current_setting('max_replication_slots')::int,
       r.rolsuper OR r.rolreplication,
       r.rolsuper
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user;

-- name: relay_slot_name
-- The logical replication slot of the wal relay: one per database.
SELECT 'bookwatch_' || oid::text FROM pg_catalog.pg_database WHERE datname = current_database();

-- name: relay_publication_name
SELECT 'bookwatch_messages';

-- name: commit_order_lock
-- Taken by log-mode writers (inside bookwatch.append_log) and by the relay while appending, so
-- seq follows commit order across both; held until the transaction ends.
SELECT bookwatch.commit_order_lock();

-- name: slot_state
SELECT active, active_pid,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::bigint,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
       wal_status
  FROM pg_catalog.pg_replication_slots
 WHERE slot_name = %(slot)s;

-- name: last_relayed
-- Seconds since a relay of the slot last recorded progress (appended); no row: never.
SELECT extract(epoch FROM pg_catalog.now() - relayed_at)::float8
  FROM bookwatch.relay_progress
 WHERE slot_name = %(slot)s;

-- name: slot_wal_keep_size
-- The cap on WAL a slot may hold, in bytes; -1: unlimited (the default).
SELECT CASE WHEN setting = '-1' THEN -1
            ELSE setting::bigint * 1024 * 1024 END
  FROM pg_catalog.pg_settings
 WHERE name = 'max_slot_wal_keep_size';

-- name: last_gap
-- The newest GAP marker among the newest rows of the log (the primary key bounds the scan).
SELECT seq, payload, logged_at::text
  FROM bookwatch.change_log
 WHERE seq > (SELECT coalesce(pg_catalog.max(seq), 0) - 100000 FROM bookwatch.change_log)
   AND payload LIKE '%%"action":"GAP"%%'
 ORDER BY seq DESC
 LIMIT 1;

-- name: slot_waiting_events
-- Row changes in the slot not yet relayed (each becomes an event, or none for an UPDATE that
-- changed nothing), counted by decoding without consuming (only possible while no relay holds
-- the slot). pgoutput frames: 'I' insert, 'U' update, 'D' delete, 'T' truncate.
SELECT count(*)
  FROM pg_catalog.pg_logical_slot_peek_binary_changes(
           %(slot)s, NULL, %(limit)s,
           'proto_version', '1', 'publication_names', 'bookwatch_messages', 'messages', 'true')
 WHERE substr(data, 1, 1) IN ('I'::bytea, 'U'::bytea, 'D'::bytea, 'T'::bytea);

-- name: log_summary
SELECT count(*), min(seq), max(seq),
       pg_catalog.pg_total_relation_size('bookwatch.change_log'),
       extract(epoch FROM now() - (SELECT logged_at FROM bookwatch.change_log
                                    ORDER BY seq LIMIT 1))::float8
  FROM bookwatch.change_log;

-- name: notification_queue_usage
SELECT pg_catalog.pg_notification_queue_usage();

-- name: log_after
-- Catch-up: the logged events of a channel after a seq, oldest first, one page at a time.
SELECT seq, payload
  FROM bookwatch.change_log
 WHERE channel = %(channel)s AND seq > %(after)s
 ORDER BY seq
 LIMIT %(page)s;

-- name: replay_page
-- serve's replay: the logged events of a channel after a seq, oldest first, at most %(page)s
-- rows and about %(page_bytes)s bytes (always at least one row). An event over
-- %(max_event)s bytes comes without its payload, so it is never read into memory (the client
-- gets a reset for it, as it would live). octet_length reads the stored size, not the value.
SELECT seq, payload, size
  FROM (SELECT seq,
               CASE WHEN octet_length(payload) <= %(max_event)s THEN payload END AS payload,
               octet_length(payload) AS size,
               sum(CASE WHEN octet_length(payload) <= %(max_event)s
                        THEN octet_length(payload) ELSE 0 END)
                   OVER (ORDER BY seq) AS running
          FROM (SELECT seq, payload
                  FROM bookwatch.change_log
                 WHERE channel = %(channel)s AND seq > %(after)s
                 ORDER BY seq
                 LIMIT %(page)s) AS candidates) AS sized
 WHERE running - CASE WHEN payload IS NULL THEN 0 ELSE size END < %(page_bytes)s
 ORDER BY seq;

-- name: log_oldest_seq
SELECT min(seq) FROM bookwatch.change_log WHERE channel = %(channel)s;

-- name: log_newest_seq
SELECT coalesce(max(seq), 0) FROM bookwatch.change_log WHERE channel = %(channel)s;

-- name: reader_role_users
-- Databases where role bookwatch_reader holds grants or owns something, leaving out what
-- --drop-log is about to drop here (schema bookwatch and its objects). Roles are cluster-wide;
-- pg_shdepend is the one catalog that sees every database's dependencies on them.
SELECT d.datname::text
  FROM pg_catalog.pg_shdepend s
  JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid AND r.rolname = 'bookwatch_reader'
  JOIN pg_catalog.pg_database d ON d.oid = s.dbid
 WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
   AND NOT (d.datname = pg_catalog.current_database() AND (
            (s.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
             AND s.objid = 'bookwatch'::pg_catalog.regnamespace)
         OR (s.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
             AND s.objid IN (SELECT c.oid FROM pg_catalog.pg_class c
                              WHERE c.relnamespace = 'bookwatch'::pg_catalog.regnamespace))
         OR (s.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
             AND s.objid IN (SELECT p.oid FROM pg_catalog.pg_proc p
                              WHERE p.pronamespace = 'bookwatch'::pg_catalog.regnamespace))))
 GROUP BY d.datname
 ORDER BY 1;

-- name: may_drop_roles
SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bookwatch_reader'),
       r.rolsuper OR r.rolcreaterole
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user;
