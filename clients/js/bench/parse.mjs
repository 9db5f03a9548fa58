// parseJson against JSON.parse on one typical event, side by side: node clients/js/bench/parse.mjs
import {parseJson} from "../src/index.js";
const text = JSON.stringify({v: 1, seq: 1042, table: "bookings", schema: "public", action: "UPDATE", id: 123, pk: {id: 123}, actor: "Anna", changed: ["gesamtpreis", "version"], diff: {gesamtpreis: [1352, 1400.5], version: [1, 2]}, truncated: false, txid: 90211, timestamp: "2026-11-28T06:41:00.123456+00:00"});
const N = 100000;
for (const [name, fn] of [["JSON.parse", () => JSON.parse(text)], ["parseJson", () => parseJson(text)], ["parseJson exact", () => parseJson(text, {exactNumbers: true})], ["JSON.parse", () => JSON.parse(text)], ["parseJson", () => parseJson(text)]]) {
  const t = performance.now(); for (let i = 0; i < N; i++) fn(); const ms = performance.now() - t;
  console.log(name, (ms * 1000 / N).toFixed(2), "µs/event");
}
