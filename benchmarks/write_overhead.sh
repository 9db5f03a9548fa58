#!/usr/bin/env bash
# Write throughput of single-row UPDATEs with no trigger, the seed's plain pg_notify trigger and
# bookwatch's durable trigger, side by side in one run (issue 2's measurement).
# Usage: benchmarks/write_overhead.sh [seconds-per-run] [rounds]   (libpq env selects the server)
set -euo pipefail
secs=${1:-10}
rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
db=${BENCH_DB:-bookwatch_bench}
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
pgbench -q -i -s 10 "$db" >/dev/null 2>&1
psql -qX -d "$db" -v ON_ERROR_STOP=1 -f "$here/sql/schema.sql" >/dev/null
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
script=$(mktemp)
echo '\set aid random(1, 1000000)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;' >"$script"

set_mode() {
    psql -qX -d "$db" -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP TRIGGER IF EXISTS bench_trigger ON pgbench_accounts;
$(case $1 in
  seed) echo "CREATE TRIGGER bench_trigger AFTER INSERT OR UPDATE OR DELETE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION seed_notify();";;
  durable) echo "CREATE CONSTRAINT TRIGGER bench_trigger AFTER INSERT OR UPDATE OR DELETE ON pgbench_accounts DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bookwatch.capture('booking_changes', 'durable', '1', 'aid');";;
  volatile) echo "CREATE TRIGGER bench_trigger AFTER INSERT OR UPDATE OR DELETE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION bookwatch.capture('booking_changes', 'volatile', '1', 'aid');";;
esac)
TRUNCATE bookwatch.change_log;
SQL
}

declare -A total
for clients in 1 8; do
    for round in $(seq "$rounds"); do
        for mode in none seed durable volatile; do
            set_mode "$mode"
            tps=$(pgbench -n -c "$clients" -j "$clients" -T "$secs" -f "$script" "$db" 2>/dev/null \
                  | awk '/^tps/ {print $3; exit}')
            echo "clients=$clients round=$round mode=$mode tps=$tps"
            total[$clients.$mode]=$(echo "${total[$clients.$mode]:-0} + $tps" | bc)
        done
    done
    n=${total[$clients.none]}; s=${total[$clients.seed]}; d=${total[$clients.durable]}; v=${total[$clients.volatile]}
    printf 'clients=%s  durable/none=%.2f  durable/seed=%.2f  seed/none=%.2f  volatile/none=%.2f\n' \
        "$clients" "$(echo "$d/$n" | bc -l)" "$(echo "$d/$s" | bc -l)" "$(echo "$s/$n" | bc -l)" "$(echo "$v/$n" | bc -l)"
done
psql -qX -d postgres -c "DROP DATABASE $db" >/dev/null
