-- Migration 1: the change log as the first release (commit 2c02123) created it.
-- An install of that release is at version 1 already; this file only runs on a fresh database.

CREATE SCHEMA IF NOT EXISTS bookwatch;

CREATE TABLE IF NOT EXISTS bookwatch.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE SEQUENCE IF NOT EXISTS bookwatch.change_seq AS bigint;

CREATE TABLE IF NOT EXISTS bookwatch.change_log (
    seq       bigint PRIMARY KEY,
    channel   text NOT NULL,
    payload   text NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE bookwatch.change_log IS
    'bookwatch: every captured change as its wire-format v1 payload, in commit order of seq';
