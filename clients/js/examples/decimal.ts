// Exact numbers as a Decimal type of your choice (here a tiny stand-in for decimal.js).
import {connect, parseJson, rebase, type ChangeEvent} from "@bookwatch/client";

class Decimal {
  constructor(readonly text: string) {}
  toString(): string { return this.text; }
}

const controller = new AbortController();
const live = connect<Decimal>({
  url: "http://127.0.0.1:8765", table: "bookings", exactNumbers: true,
  parseNumber: (text) => new Decimal(text), signal: controller.signal,
});
live.on("change", (event: ChangeEvent<Decimal>) => {
  const after = event.diff?.total_price?.[1];
  if (after instanceof Decimal) console.log("total", after.toString());
  const merged = rebase({notes: "late arrival"}, {id: 1, notes: null}, event);
  if (merged.refetch) console.log("fetch the row again");
});
const row = parseJson('{"total_price": 12345678901234567890.12}');
console.log(row);
setTimeout(() => controller.abort(), 60_000);
