#!/usr/bin/env bash
# Write throughput of single-row UPDATEs (pgbench) in interleaved rounds of one run, with 1 and
# 8 writers, under each way of capturing them:
#   none       no capture
#   seed       the seed's plain pg_notify row trigger
#   log        bookwatch log mode
#   floor      the physical limit of WAL capture: the table in a publication with REPLICA
#              IDENTITY FULL, rows decoded by pgoutput into a C consumer (pg_recvlogical ->
#              /dev/null)
#   floor_msg  the same plus one transactional logical message per statement (what an actor
#              costs at the least)
#   wal        bookwatch wal mode v3 (publication + FULL + the actor trigger), its rows decoded
#              by `bookwatch relay` into the change log
# Both consumers (pg_recvlogical on its own slot and publication, and bookwatch relay) run on
# the same machine for the whole run, whatever the mode: their CPU counts in every round, and
# the table is in a consumer's publication only during that consumer's rounds.
# Needs a server with wal_level = logical (libpq env selects it) and a role that may replicate.
#
# Usage: benchmarks/write_overhead.sh [seconds-per-run] [rounds]
#   BENCH_DB        scratch database (default bookwatch_bench; dropped and recreated)
#   BOOKWATCH       how to run bookwatch (default: bookwatch)
#   BENCH_MODES     modes to run (default: "none seed log floor floor_msg wal")
set -euo pipefail
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
secs=${1:-10}
rounds=${2:-3}
db=${BENCH_DB:-bookwatch_bench}
bookwatch=${BOOKWATCH:-bookwatch}
modes=${BENCH_MODES:-none seed log floor floor_msg wal}
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
CREATE FUNCTION floor_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'floor.actor', current_user::text);
    RETURN NULL;
END $$;
CREATE PUBLICATION bench_floor;
SELECT pg_create_logical_replication_slot('bench_floor', 'pgoutput');
SQL
script=$(mktemp)
echo '\set aid random(1, 1000000)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;' >"$script"

# Both consumers for the whole run.
$bookwatch relay --dsn "$dsn" >/dev/null 2>&1 &
relay_pid=$!
pg_recvlogical -d "$db" --slot bench_floor --start -f /dev/null -o proto_version=1 \
    -o publication_names=bench_floor -o messages=true >/dev/null 2>&1 &
floor_pid=$!
cleanup() {
    kill "$relay_pid" "$floor_pid" 2>/dev/null || true
    wait "$relay_pid" "$floor_pid" 2>/dev/null || true
    rm -f "$script"
}
trap cleanup EXIT

set_mode() {
    # Leave every capture, then take the round's.
    # --force: events of the last round may still wait in the slot; a benchmark needs none.
    $bookwatch remove-triggers --dsn "$dsn" -t pgbench_accounts --force >/dev/null 2>&1
    psql -qX -d "$db" -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP TRIGGER IF EXISTS bench_trigger ON pgbench_accounts;
DROP TRIGGER IF EXISTS bench_message ON pgbench_accounts;
DO \$\$ BEGIN
    IF EXISTS (SELECT FROM pg_publication_tables WHERE pubname = 'bench_floor') THEN
        ALTER PUBLICATION bench_floor DROP TABLE pgbench_accounts;
    END IF;
END \$\$;
ALTER TABLE pgbench_accounts REPLICA IDENTITY DEFAULT;
$(case $1 in
  seed) echo "CREATE TRIGGER bench_trigger AFTER INSERT OR UPDATE OR DELETE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION seed_notify();";;
  floor|floor_msg) echo "ALTER TABLE pgbench_accounts REPLICA IDENTITY FULL; ALTER PUBLICATION bench_floor ADD TABLE pgbench_accounts;";;
esac)
$([ "$1" = floor_msg ] && echo "CREATE TRIGGER bench_message BEFORE INSERT OR UPDATE OR DELETE ON pgbench_accounts FOR EACH STATEMENT EXECUTE FUNCTION floor_message();")
TRUNCATE bookwatch.change_log;
SQL
    case $1 in
    log|wal) $bookwatch install-triggers --dsn "$dsn" -t pgbench_accounts --mode "$1" >/dev/null 2>&1 ;;
    esac
    sleep 1  # let both consumers drain what the switch wrote
}

declare -A total
echo "consumers for the whole run: bookwatch relay (pid $relay_pid), pg_recvlogical (pid $floor_pid); $rounds rounds x ${secs}s per mode"
for clients in 1 8; do
    for round in $(seq "$rounds"); do
        for mode in $modes; do
            set_mode "$mode"
            tps=$(pgbench -n -c "$clients" -j "$clients" -T "$secs" -f "$script" "$db" 2>/dev/null \
                  | awk '/^tps/ {print $3; exit}')
            echo "clients=$clients round=$round mode=$mode tps=$tps"
            total[$clients.$mode]=$(echo "${total[$clients.$mode]:-0} + $tps" | bc)
        done
    done
    line="clients=$clients"
    for mode in $modes; do
        line+=$(printf '  %s=%.0f' "$mode" "$(echo "${total[$clients.$mode]}/$rounds" | bc -l)")
    done
    echo "$line (tps, mean of rounds)"
    n=${total[$clients.none]:-}
    if [ -n "$n" ]; then
        line="clients=$clients ratios to none:"
        for mode in $modes; do
            line+=$(printf '  %s=%.2f' "$mode" "$(echo "${total[$clients.$mode]}/$n" | bc -l)")
        done
        echo "$line"
    fi
    if [ -n "${total[$clients.floor_msg]:-}" ] && [ -n "${total[$clients.wal]:-}" ]; then
        printf 'clients=%s  wal/floor=%.2f  wal/floor_msg=%.2f\n' "$clients" \
            "$(echo "${total[$clients.wal]}/${total[$clients.floor]}" | bc -l)" \
            "$(echo "${total[$clients.wal]}/${total[$clients.floor_msg]}" | bc -l)"
    fi
done
cleanup
trap - EXIT
$bookwatch remove-triggers --dsn "$dsn" --drop-log >/dev/null 2>&1 || true
psql -qX -d "$db" -c "SELECT pg_drop_replication_slot('bench_floor')" >/dev/null 2>&1 || true
psql -qX -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
