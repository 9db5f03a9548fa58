// Unit tests of bookwatch.js in Node's built-in runner (tests/test_client.py runs them):
// rebase() and the connection state machine, with a fake EventSource.
import {test} from "node:test";
import assert from "node:assert/strict";

import {connect, difference, eventsUrl, rebase, same} from "../../pgwatch_cli/client/bookwatch.js";

const base = {id: 123, version: 1, gesamtpreis: "1352.00", anzahl_gaeste: 2, bemerkungen: null,
              status: "bestätigt"};

function update(diff, extra = {}) {
  return {v: 1, seq: 10, table: "bookings", action: "UPDATE", id: 123, actor: "Anna",
          changed: Object.keys(diff), diff, truncated: false, ...extra};
}

test("fields the person did not touch take the new value; their edits stay", () => {
  const pending = {bemerkungen: "Late arrival", anzahl_gaeste: "4"};
  const result = rebase(pending, base, update({gesamtpreis: [1352, 1400.5], version: [1, 2]}));
  assert.equal(result.refetch, false);
  assert.deepEqual(result.conflicts, {});
  assert.equal(result.values.gesamtpreis, 1400.5);
  assert.equal(result.values.version, 2);
  assert.equal(result.values.bemerkungen, "Late arrival");
  assert.equal(result.values.anzahl_gaeste, "4");
  assert.equal(result.base.gesamtpreis, 1400.5);
  assert.equal(result.base.anzahl_gaeste, 2);
  assert.deepEqual(result.pending, pending);
  // The inputs are not modified.
  assert.equal(base.version, 1);
  assert.deepEqual(pending, {bemerkungen: "Late arrival", anzahl_gaeste: "4"});
});

test("a same-field clash is a conflict with mine, theirs and the base", () => {
  const result = rebase({gesamtpreis: "999.00", bemerkungen: "x"}, base,
                        update({gesamtpreis: [1352, 1400], version: [1, 2]}));
  assert.deepEqual(result.conflicts, {gesamtpreis: {mine: "999.00", theirs: 1400,
                                                    base: "1352.00"}});
  assert.equal(result.values.gesamtpreis, "999.00");  // mine stays until the person chooses
  assert.equal(result.base.gesamtpreis, 1400);
  assert.equal(result.base.version, 2);
  assert.deepEqual(result.pending, {gesamtpreis: "999.00", bemerkungen: "x"});
});

test("the same edit on both sides is no clash and no longer pending", () => {
  const result = rebase({gesamtpreis: "1400.00", status: "storniert"}, base,
                        update({gesamtpreis: [1352, 1400], version: [1, 2]}));
  assert.deepEqual(result.conflicts, {});
  assert.deepEqual(result.pending, {status: "storniert"});
  assert.equal(result.values.gesamtpreis, 1400);
});

test("an event that does not carry every changed value means refetch", () => {
  const pending = {bemerkungen: "mine"};
  for (const event of [
    update({gesamtpreis: [1, 2]}, {truncated: true}),
    update({}, {diff: null, changed: ["gesamtpreis"]}),
    update({version: [1, 2]}, {changed: ["version", "gesamtpreis"]}),  // excluded column
    {action: "DELETE", id: 123, changed: null, diff: null},
    {action: "TRUNCATE", id: null, changed: null, diff: null},
  ]) {
    const result = rebase(pending, base, event);
    assert.equal(result.refetch, true, JSON.stringify(event));
    assert.deepEqual(result.base, base);
    assert.deepEqual(result.values, {...base, ...pending});
    assert.deepEqual(result.conflicts, {});
  }
});

test("difference() turns a refetched row (or a 409's current) into an event rebase takes", () => {
  const current = {...base, version: 3, gesamtpreis: "1400.00", bemerkungen: "theirs"};
  const event = difference(base, current);
  assert.deepEqual(event.changed.sort(), ["bemerkungen", "gesamtpreis", "version"]);
  const result = rebase({bemerkungen: "mine", anzahl_gaeste: "4"}, base, event);
  assert.deepEqual(Object.keys(result.conflicts), ["bemerkungen"]);
  assert.equal(result.base.version, 3);
  assert.equal(result.values.gesamtpreis, "1400.00");
  assert.equal(result.values.anzahl_gaeste, "4");
});

test("same() compares as a form does", () => {
  assert.ok(same(null, ""));
  assert.ok(same(undefined, null));
  assert.ok(same(1400, "1400.00"));
  assert.ok(!same("1400", "1400.00"));  // two strings: text columns compare literally
  assert.ok(!same("", 0));
  assert.ok(same({a: 1}, {a: 1}));
  assert.ok(!same("a", "b"));
});

test("eventsUrl() carries filters, presence, resume point and token", () => {
  const url = new URL(eventsUrl({url: "http://127.0.0.1:8765", token: "t s", table: "bookings",
                                 action: ["UPDATE", "DELETE"], id: 123, viewer: "李雷",
                                 viewing: "bookings:123"}, "41"));
  assert.equal(url.pathname, "/events");
  assert.deepEqual(url.searchParams.getAll("action"), ["UPDATE", "DELETE"]);
  assert.equal(url.searchParams.get("table"), "bookings");
  assert.equal(url.searchParams.get("id"), "123");
  assert.equal(url.searchParams.get("viewer"), "李雷");
  assert.equal(url.searchParams.get("last_event_id"), "41");
  assert.equal(url.searchParams.get("token"), "t s");
  assert.equal(new URL(eventsUrl({url: "http://h/prefix"})).pathname, "/prefix/events");
});

// -- the connection state machine, with a fake EventSource ------------------------------------

class FakeSource {
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = {};
    this.closed = false;
    FakeSource.made.push(this);
  }
  addEventListener(kind, fn) { (this.listeners[kind] ||= []).push(fn); }
  close() { this.readyState = 2; this.closed = true; }
  opened() { this.readyState = 1; this.onopen?.(); }
  dispatch(kind, data, lastEventId = "") {
    for (const fn of this.listeners[kind] || []) fn({data, lastEventId});
  }
  fail(readyState) { this.readyState = readyState; this.onerror?.(); }
}

test("status goes connecting → open → reconnecting → open → closed", () => {
  FakeSource.made = [];
  const live = connect({url: "http://s", EventSource: FakeSource});
  const states = [];
  live.on("status", (state) => states.push(state));
  assert.equal(live.status, "connecting");
  const source = FakeSource.made[0];
  source.opened();
  source.fail(0);  // CONNECTING: the browser retries itself, with Last-Event-ID
  source.opened();
  live.close();
  assert.deepEqual(states, ["open", "reconnecting", "open", "closed"]);
  assert.ok(source.closed);
  assert.equal(FakeSource.made.length, 1);
});

test("changes, presence and reset reach their handlers; reset moves the resume point", () => {
  FakeSource.made = [];
  const live = connect({url: "http://s", EventSource: FakeSource, lastEventId: 5});
  assert.equal(new URL(FakeSource.made[0].url).searchParams.get("last_event_id"), "5");
  const seen = [];
  live.on("change", (event) => seen.push(["change", event.seq]));
  const unsubscribe = live.on("presence", (body) => seen.push(["presence", body.viewers]));
  live.on("reset", (body) => seen.push(["reset", body.last_seq]));
  live.on("change", () => { throw new Error("a broken handler"); });
  const source = FakeSource.made[0];
  source.opened();
  const reported = [];
  globalThis.reportError = (error) => reported.push(error.message);
  source.dispatch("change", JSON.stringify({seq: 6}), "6");
  source.dispatch("change", "not json", "7");  // skipped, but its id still counts
  source.dispatch("presence", JSON.stringify({entity: "bookings:1", viewers: ["Anna"]}));
  unsubscribe();
  source.dispatch("presence", JSON.stringify({entity: "bookings:1", viewers: []}));
  assert.equal(live.lastEventId, "7");
  source.dispatch("reset", JSON.stringify({reason: "gap", last_seq: 90}), "90");
  assert.equal(live.lastEventId, "90");
  assert.deepEqual(seen, [["change", 6], ["presence", ["Anna"]], ["reset", 90]]);
  // The broken handler's error is reported, and the other handlers ran all the same.
  assert.deepEqual(reported, ["a broken handler"]);
  delete globalThis.reportError;
  live.close();
});

test("when the browser gives up, connect reopens itself with last_event_id", async () => {
  FakeSource.made = [];
  const live = connect({url: "http://s", EventSource: FakeSource});
  const first = FakeSource.made[0];
  first.opened();
  first.dispatch("change", JSON.stringify({seq: 12}), "12");
  first.fail(2);  // CLOSED: e.g. a 503 answer; EventSource will not retry
  assert.equal(live.status, "reconnecting");
  await new Promise((resolve) => setTimeout(resolve, 1200));
  assert.equal(FakeSource.made.length, 2);
  assert.equal(new URL(FakeSource.made[1].url).searchParams.get("last_event_id"), "12");
  FakeSource.made[1].opened();
  assert.equal(live.status, "open");
  live.close();
  assert.equal(live.status, "closed");
});

test("close() during a pending retry opens nothing more", async () => {
  FakeSource.made = [];
  const live = connect({url: "http://s", EventSource: FakeSource});
  FakeSource.made[0].fail(2);
  live.close();
  await new Promise((resolve) => setTimeout(resolve, 1200));
  assert.equal(FakeSource.made.length, 1);
  assert.throws(() => live.on("nonsense", () => {}), TypeError);
});
