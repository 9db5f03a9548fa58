#!/usr/bin/env bash
# Write throughput of single-row UPDATEs (pgbench) with no trigger, the seed's plain pg_notify
# trigger, bookwatch's log mode and bookwatch's wal mode, in interleaved rounds of one run, with
# 1 and 8 writers. Needs a server with wal_level = logical (libpq env selects it) and a role
# that may replicate.
#
# Usage: benchmarks/write_overhead.sh [seconds-per-run] [rounds]
#   BENCH_DB        scratch database (default bookwatch_bench; dropped and recreated)
#   BOOKWATCH       how to run bookwatch (default: bookwatch)
#   BENCH_CONSUMER  who drains the slot while wal mode runs, on the same machine (its CPU
#                   counts): "relay" (bookwatch relay), "sql" (one psql session decoding with
#                   pg_logical_slot_get_binary_changes and appending to the change log, as the
#                   relay does), or "none". Default: relay when bookwatch has it, else sql.
set -euo pipefail
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
secs=${1:-10}
rounds=${2:-3}
db=${BENCH_DB:-bookwatch_bench}
bookwatch=${BOOKWATCH:-bookwatch}
if [ -z "${BENCH_CONSUMER:-}" ]; then
    if $bookwatch relay --help >/dev/null 2>&1; then BENCH_CONSUMER=relay; else BENCH_CONSUMER=sql; fi
fi
[ "$(psql -qXAt -d postgres -c 'SHOW wal_level')" = logical ] || {
    echo "write_overhead.sh needs wal_level = logical (ALTER SYSTEM SET wal_level = logical; restart)" >&2
    exit 1
}
dsn="dbname=$db"
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
pgbench -q -i -s 10 "$db" >/dev/null 2>&1
$bookwatch install-triggers --dsn "$dsn" -t pgbench_accounts --mode wal >/dev/null 2>&1
psql -qX -d "$db" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE FUNCTION seed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('booking_changes', json_build_object(
        'table', TG_TABLE_NAME, 'action', TG_OP,
        'id', CASE WHEN TG_OP = 'DELETE' THEN OLD.aid ELSE NEW.aid END,
        'timestamp', CURRENT_TIMESTAMP)::text);
    RETURN NEW;
END $$;
SQL
slot=$(psql -qXAt -d "$db" -c "SELECT 'bookwatch_' || oid FROM pg_database WHERE datname = current_database()")
script=$(mktemp)
echo '\set aid random(1, 1000000)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;' >"$script"

consumer_pid=
start_consumer() {
    case $BENCH_CONSUMER in
    relay) $bookwatch relay --dsn "$dsn" >/dev/null 2>&1 & consumer_pid=$! ;;
    sql)
        # Decode what is there, append it numbered to the change log, sleep 50 ms, repeat.
        # Message frame: 'M', flags, LSN (8), prefix "bookwatch\0", length (4), content.
        (while true; do
            echo "BEGIN; SELECT bookwatch.commit_order_lock();
INSERT INTO bookwatch.change_log (seq, channel, payload)
SELECT nextval('bookwatch.change_seq'), split_part(c, E'\n', 2), c FROM (
  SELECT convert_from(substr(data, 25), 'UTF8') AS c FROM pg_logical_slot_get_binary_changes(
    '$slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'bookwatch_messages',
    'messages', 'true') WHERE substr(data, 1, 1) = 'M'::bytea) AS m;
COMMIT; SELECT pg_sleep(0.05);"
        done) | psql -qX -d "$db" >/dev/null 2>&1 & consumer_pid=$! ;;
    none) consumer_pid= ;;
    esac
}
stop_consumer() {
    if [ -n "$consumer_pid" ]; then
        kill "$consumer_pid" 2>/dev/null || true
        wait "$consumer_pid" 2>/dev/null || true
        consumer_pid=
    fi
}
trap 'stop_consumer; rm -f "$script"' EXIT

set_mode() {
    psql -qX -d "$db" -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP TRIGGER IF EXISTS bench_trigger ON pgbench_accounts;
$(case $1 in
  seed) echo "CREATE TRIGGER bench_trigger AFTER INSERT OR UPDATE OR DELETE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION seed_notify();";;
  none) ;;
esac)
TRUNCATE bookwatch.change_log;
SQL
    case $1 in
    log|wal) $bookwatch install-triggers --dsn "$dsn" -t pgbench_accounts --mode "$1" >/dev/null 2>&1 ;;
    *) $bookwatch remove-triggers --dsn "$dsn" -t pgbench_accounts >/dev/null 2>&1 ;;
    esac
}

declare -A total
modes="none seed log wal"
echo "consumer of the slot in wal mode: $BENCH_CONSUMER; $rounds rounds x ${secs}s per mode"
for clients in 1 8; do
    for round in $(seq "$rounds"); do
        for mode in $modes; do
            set_mode "$mode"
            [ "$mode" = wal ] && start_consumer
            tps=$(pgbench -n -c "$clients" -j "$clients" -T "$secs" -f "$script" "$db" 2>/dev/null \
                  | awk '/^tps/ {print $3; exit}')
            [ "$mode" = wal ] && stop_consumer
            echo "clients=$clients round=$round mode=$mode tps=$tps"
            total[$clients.$mode]=$(echo "${total[$clients.$mode]:-0} + $tps" | bc)
        done
    done
    n=${total[$clients.none]}
    printf 'clients=%s  seed/none=%.2f  log/none=%.2f  wal/none=%.2f\n' "$clients" \
        "$(echo "${total[$clients.seed]}/$n" | bc -l)" "$(echo "${total[$clients.log]}/$n" | bc -l)" \
        "$(echo "${total[$clients.wal]}/$n" | bc -l)"
done
$bookwatch remove-triggers --dsn "$dsn" --drop-log >/dev/null 2>&1 || true
psql -qX -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
