-- Presence shared by every `bookwatch serve` on this database (workers and replicas).
-- Each block starts with "-- name: <query_name>". serve creates the tables on demand.
-- Built-ins are qualified with pg_catalog: a function planted in a schema on the server's
-- search_path that matches a call better than the built-in would otherwise run instead.
-- (unnest(a, b) is spelled ROWS FROM (unnest(a), unnest(b)), which it means: only the
-- unqualified form expands.)
--
-- UNLOGGED: presence is ephemeral (who has a row open right now), so it skips the WAL; after
-- a crash of PostgreSQL the tables come back empty and every server uploads its viewers again.
-- A server is alive while its row in presence_server has not expired; it renews it with
-- every sync (at least every few seconds). Any live server deletes the rows of expired ones.

-- name: create_tables
-- Workers starting together would race on IF NOT EXISTS: one creates, the others wait here.
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('bookwatch presence tables'));
CREATE UNLOGGED TABLE IF NOT EXISTS bookwatch.presence_server (
    server_id  text PRIMARY KEY,
    label      text NOT NULL,              -- host and pid, for whoever looks at this table
    started_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    expires_at timestamptz NOT NULL
);
CREATE UNLOGGED TABLE IF NOT EXISTS bookwatch.presence (
    server_id text NOT NULL,
    entity    text NOT NULL,
    viewer    text NOT NULL,
    PRIMARY KEY (server_id, entity, viewer)
);
COMMENT ON TABLE bookwatch.presence IS
    'bookwatch serve: who views which row (one row per server, row and person; tabs are counted by the server)';

-- name: tables_exist
SELECT pg_catalog.to_regnamespace('bookwatch') IS NOT NULL AS schema_exists,
       pg_catalog.to_regclass('bookwatch.presence') IS NOT NULL
         AND pg_catalog.to_regclass('bookwatch.presence_server') IS NOT NULL AS tables_exist;

-- name: sync
-- One round trip per batch: renew this server, apply its joins and leaves, optionally delete
-- the rows of expired servers, and wake the other servers when anything changed.
-- All parts see the same snapshot, so the sweep never touches this batch's own rows.
WITH me AS (
    INSERT INTO bookwatch.presence_server AS s (server_id, label, expires_at)
    VALUES (%(server)s, %(label)s, pg_catalog.now() + pg_catalog.make_interval(secs => %(ttl_s)s))
    ON CONFLICT (server_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING s.started_at
), left_rows AS (
    DELETE FROM bookwatch.presence p
     USING ROWS FROM (pg_catalog.unnest(%(leave_entities)s::text[]), pg_catalog.unnest(%(leave_viewers)s::text[])) AS l(entity, viewer)
     WHERE p.server_id = %(server)s AND p.entity = l.entity AND p.viewer = l.viewer
    RETURNING 1
), joined AS (
    INSERT INTO bookwatch.presence (server_id, entity, viewer)
    SELECT %(server)s, j.entity, j.viewer
      FROM ROWS FROM (pg_catalog.unnest(%(join_entities)s::text[]), pg_catalog.unnest(%(join_viewers)s::text[])) AS j(entity, viewer)
    ON CONFLICT DO NOTHING
    RETURNING 1
), expired AS (
    DELETE FROM bookwatch.presence_server
     WHERE %(sweep)s AND expires_at < pg_catalog.now() AND server_id <> %(server)s
    RETURNING 1
), swept AS (
    -- Also rows whose server row is gone altogether (deleted while they were being written).
    DELETE FROM bookwatch.presence p
     WHERE %(sweep)s AND p.server_id <> %(server)s
       AND NOT EXISTS (SELECT 1 FROM bookwatch.presence_server s
                        WHERE s.server_id = p.server_id AND s.expires_at >= pg_catalog.now())
    RETURNING 1
), woke AS (
    SELECT pg_catalog.pg_notify(%(channel)s, %(server)s)
     WHERE %(wake)s OR (SELECT pg_catalog.count(*) FROM left_rows) + (SELECT pg_catalog.count(*) FROM joined)
                        + (SELECT pg_catalog.count(*) FROM swept) > 0
)
SELECT (SELECT started_at FROM me) AS started_at,
       -- With the sweep, how many rows this server will have after this statement: the
       -- server compares it with its own count and uploads everything again if they differ.
       CASE WHEN %(sweep)s THEN
           (SELECT pg_catalog.count(*) FROM bookwatch.presence WHERE server_id = %(server)s)
           + (SELECT pg_catalog.count(*) FROM joined) - (SELECT pg_catalog.count(*) FROM left_rows)
       END AS mine,
       (SELECT pg_catalog.count(*) FROM swept) AS swept,
       (SELECT pg_catalog.count(*) FROM woke) AS woke;

-- name: forget_server
-- This server's rows, before it uploads all its viewers again (or when it stops).
DELETE FROM bookwatch.presence WHERE server_id = %(server)s;

-- name: withdraw
-- A server stopping cleanly: its viewers leave at once instead of when its row expires.
WITH viewers AS (
    DELETE FROM bookwatch.presence WHERE server_id = %(server)s
), server AS (
    DELETE FROM bookwatch.presence_server WHERE server_id = %(server)s
)
SELECT pg_catalog.pg_notify(%(channel)s, %(server)s);

-- name: read_others
-- The viewers of every row, as the other live servers report them (each name once).
SELECT p.entity, pg_catalog.array_agg(DISTINCT p.viewer) AS viewers
  FROM bookwatch.presence p
  JOIN bookwatch.presence_server s ON s.server_id = p.server_id
 WHERE s.expires_at >= pg_catalog.now() AND p.server_id <> %(server)s
 GROUP BY p.entity;
