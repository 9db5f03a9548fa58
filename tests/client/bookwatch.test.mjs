// Unit tests of bookwatch.js in Node's built-in runner (tests/test_client.py runs them):
// rebase(), exact numbers, the SSE parser and the shared stream, with a fake fetch.
import {test} from "node:test";
import assert from "node:assert/strict";

import {connect, difference, eventsUrl, parseJson, rebase, same, sseParser, tokenExpiry} from "../../clients/js/src/index.js";

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

// -- exact numbers ------------------------------------------------------------------------------

test("parseJson keeps every digit a double cannot hold, as text or through parseNumber", () => {
  const text = '{"diff": {"total": [357.00, 12345678901234567890.12]}, "id": 9007199254740993,' +
               ' "small": 399.90, "big": 1e400, "plain": 42, "s": "a\\"b\\u00e9"}';
  const plain = parseJson(text);
  assert.deepEqual(plain.diff.total, [357, "12345678901234567890.12"]);
  assert.equal(plain.id, "9007199254740993");
  assert.equal(plain.small, 399.9);  // the same number: a double holds it
  assert.equal(plain.big, "1e400");
  assert.equal(plain.plain, 42);
  assert.equal(plain.s, 'a"bé');
  const exact = parseJson(text, {exactNumbers: true});
  assert.deepEqual(exact.diff.total, ["357.00", "12345678901234567890.12"]);
  assert.equal(exact.small, "399.90");
  assert.equal(exact.plain, 42);
  const wrapped = parseJson(text, {parseNumber: (literal) => ({decimal: literal})});
  assert.deepEqual(wrapped.id, {decimal: "9007199254740993"});
  assert.equal(wrapped.plain, 42);
});

test("parseJson is JSON: it refuses what JSON.parse refuses and never sets a prototype", () => {
  for (const bad of ["[1,]", "{\"a\":1", "01", "1.", "-", "tru", "[1] x", "\"\\x\"", "{a:1}", ""]) {
    assert.throws(() => parseJson(bad), SyntaxError, bad);
  }
  const parsed = parseJson('{"__proto__": {"polluted": true}}');
  assert.equal(Object.getPrototypeOf(parsed), Object.prototype);
  assert.equal(({}).polluted, undefined);
  assert.deepEqual(parsed.__proto__, {polluted: true});
  assert.deepEqual(parseJson(' [ {"a": [true, false, null]} , -0.5e-3 ] '),
                   [{a: [true, false, null]}, -0.0005]);
});

test("sseParser reads events, ids, retry, comments and line ends split across chunks", () => {
  const seen = [];
  const parser = sseParser((message) => seen.push(message));
  parser.push(": heartbeat\n\nretry: 2500\n\nid: 7\nevent: change\ndata: {\"a\":");
  parser.push("1}\r");
  parser.push("\n\r\ndata: two\ndata: lines\n\n");
  assert.deepEqual(seen, [{event: "change", data: "{\"a\":1}", id: "7"},
                          {event: "message", data: "two\nlines", id: null}]);
  assert.equal(parser.retry, 2500);
});

test("tokenExpiry reads a JWT's exp, and nothing else", () => {
  const payload = Buffer.from(JSON.stringify({sub: "Anna", exp: 2000000000})).toString("base64url");
  assert.equal(tokenExpiry(`h.${payload}.s`), 2000000000 * 1000);
  assert.equal(tokenExpiry("s3cret"), null);
  assert.equal(tokenExpiry("a.b.c"), null);
});

// -- the shared stream, against a fake fetch ------------------------------------------------------

function fakeServer({status = () => 200} = {}) {
  const requests = [];
  const encoder = new TextEncoder();
  async function fetch(url, init) {
    let controller;
    const body = new ReadableStream({start(c) { controller = c; }});
    const request = {
      url: new URL(url), headers: init.headers, signal: init.signal, closed: false,
      send(text) { controller.enqueue(encoder.encode(text)); },
      end() { request.closed = true; controller.close(); },
    };
    init.signal.addEventListener("abort", () => {
      request.closed = true;
      try { controller.error(new DOMException("aborted", "AbortError")); } catch { /* done */ }
    });
    requests.push(request);
    const code = status(requests.length);
    return new Response(code === 200 ? body : "{}", {status: code});
  }
  return {fetch, requests};
}

const tick = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(check, what, ms = 3000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}
const change = (seq, extra = {}) => `id: ${seq}\nevent: change\ndata: ${JSON.stringify(
  {v: 1, seq, table: "bookings", action: "UPDATE", id: 1, ...extra})}\n\n`;

test("status goes connecting → open → closed; the token travels as a header", async () => {
  const server = fakeServer();
  const live = connect({url: "http://s1", token: "t0k", fetch: server.fetch});
  const states = [];
  live.on("status", (state) => states.push(state));
  assert.equal(live.status, "connecting");
  await until(() => live.status === "open", "open");
  const [request] = server.requests;
  assert.equal(request.headers.Authorization, "Bearer t0k");
  assert.equal(request.url.searchParams.get("token"), null);
  live.close();
  assert.deepEqual(states, ["open", "closed"]);
  await until(() => request.closed, "the request to end");
});

test("ten subscriptions share one request; each gets only its own events", async () => {
  const server = fakeServer();
  const seen = Array.from({length: 10}, () => []);
  const lives = seen.map((list, index) => {
    const live = connect({url: "http://s2", fetch: server.fetch, table: "bookings", id: index});
    live.on("change", (event) => list.push(event.seq));
    return live;
  });
  await until(() => lives.every((live) => live.status === "open"), "open");
  assert.equal(server.requests.length, 1);
  const url = server.requests[0].url;
  assert.deepEqual(url.searchParams.getAll("table"), ["bookings"]);
  assert.equal(url.searchParams.getAll("id").length, 10);
  for (let index = 0; index < 10; index++) server.requests[0].send(change(index + 1, {id: index}));
  await until(() => seen.every((list) => list.length === 1), "events");
  assert.deepEqual(seen, Array.from({length: 10}, (_, index) => [index + 1]));
  // One more subscription for another table widens the request (resuming after seq 10).
  const other = connect({url: "http://s2", fetch: server.fetch, table: "guests"});
  await until(() => server.requests.length === 2, "a wider request");
  assert.deepEqual(server.requests[1].url.searchParams.getAll("table"), ["bookings", "guests"]);
  assert.deepEqual(server.requests[1].url.searchParams.getAll("id"), []);
  assert.equal(server.requests[1].headers["Last-Event-ID"], "10");
  for (const live of [...lives, other]) live.close();
  await until(() => server.requests[1].closed, "the request to end");
});

test("changes, presence and reset reach their handlers; numbers keep every digit", async () => {
  const server = fakeServer();
  const live = connect({url: "http://s3", fetch: server.fetch, viewer: "Ben",
                        viewing: "bookings:1", lastEventId: 5});
  const seen = [];
  live.on("change", (event) => seen.push(["change", event.seq, event.diff?.price?.[1]]));
  const unsubscribe = live.on("presence", (body) => seen.push(["presence", body.viewers]));
  live.on("reset", (body) => seen.push(["reset", body.reason]));
  live.on("change", () => { throw new Error("a broken handler"); });
  const reported = [];
  globalThis.reportError = (error) => reported.push(error.message);
  await until(() => live.status === "open", "open");
  const [request] = server.requests;
  assert.equal(request.headers["Last-Event-ID"], "5");
  assert.equal(request.url.searchParams.get("viewing"), "bookings:1");
  request.send(change(5));  // already had it: not delivered again
  request.send('id: 6\nevent: change\ndata: {"seq": 6, "action": "UPDATE", "table": "bookings", ' +
               '"diff": {"price": [1, 12345678901234567890.12]}}\n\n');
  request.send("id: 7\nevent: change\ndata: not json\n\n");  // skipped, but its id counts
  request.send('event: presence\ndata: {"entity": "bookings:1", "viewers": ["Anna"]}\n\n');
  request.send('event: presence\ndata: {"entity": "bookings:2", "viewers": ["Eve"]}\n\n');
  await until(() => seen.length === 2, "change and presence");
  unsubscribe();
  request.send('event: presence\ndata: {"entity": "bookings:1", "viewers": []}\n\n');
  request.send('id: 90\nevent: reset\ndata: {"reason": "gap"}\n\n');
  await until(() => seen.length === 3, "reset");
  assert.equal(live.lastEventId, "90");
  assert.deepEqual(seen, [["change", 6, "12345678901234567890.12"], ["presence", ["Anna"]],
                          ["reset", "gap"]]);
  assert.deepEqual(reported, ["a broken handler"]);
  delete globalThis.reportError;
  live.close();
});

test("after the server ends the stream, it resumes with Last-Event-ID after its retry hint",
     async () => {
  const server = fakeServer();
  const live = connect({url: "http://s4", fetch: server.fetch});
  await until(() => live.status === "open", "open");
  server.requests[0].send("retry: 50\n\n" + change(12));
  server.requests[0].end();
  await until(() => server.requests.length === 2, "a second request");
  assert.equal(server.requests[1].headers["Last-Event-ID"], "12");
  await until(() => live.status === "open", "open again");
  live.close();
});

test("a 401 asks getToken for a new token; an error backs off; close stops retrying",
     async () => {
  const server = fakeServer({status: (n) => (n === 1 ? 401 : n === 2 ? 503 : 200)});
  let calls = 0;
  const getToken = async () => `token-${++calls}`;
  const live = connect({url: "http://s5", fetch: server.fetch, getToken});
  const states = [];
  live.on("status", (state) => states.push(state));
  await until(() => live.status === "open", "open", 8000);
  assert.deepEqual(server.requests.map((request) => request.headers.Authorization),
                   ["Bearer token-1", "Bearer token-2", "Bearer token-2"]);
  assert.deepEqual(states, ["reconnecting", "open"]);
  live.close();
});

test("a token-expired reset is no loss: a new token, resuming after the last event", async () => {
  const server = fakeServer();
  let calls = 0;
  const getToken = () => `jwt-${++calls}`;
  const live = connect({url: "http://s6", fetch: server.fetch, getToken});
  const resets = [];
  live.on("reset", (body) => resets.push(body));
  await until(() => live.status === "open", "open");
  server.requests[0].send(change(33));
  server.requests[0].send('event: reset\ndata: {"reason": "token-expired"}\n\n');
  await until(() => server.requests.length === 2, "a second request");
  assert.equal(server.requests[1].headers.Authorization, "Bearer jwt-2");
  assert.equal(server.requests[1].headers["Last-Event-ID"], "33");
  assert.deepEqual(resets, []);
  live.close();
});

test("a silent stream is replaced (heartbeat watchdog); online reconnects at once", async () => {
  const target = new EventTarget();
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  try {
    const server = fakeServer({status: (n) => (n === 3 || n === 4 ? 503 : 200)});
    const live = connect({url: "http://s7", fetch: server.fetch, heartbeatTimeoutMs: 150});
    await until(() => live.status === "open", "open");
    server.requests[0].send(": heartbeat\n\n" + change(3));
    await until(() => server.requests.length === 2, "the watchdog's new request");
    assert.ok(server.requests[0].closed);
    assert.equal(server.requests[1].headers["Last-Event-ID"], "3");
    // Two attempts fail (503): the next waits 1 to 2 s for its back-off, unless we come online.
    await until(() => server.requests.length === 4, "a fourth request", 5000);
    await tick(50);
    assert.equal(live.status, "reconnecting");
    const before = Date.now();
    target.dispatchEvent(new Event("online"));
    await until(() => server.requests.length === 5, "the online request");
    assert.ok(Date.now() - before < 900);
    live.close();
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

test("AbortSignal closes a subscription; an aborted one never opens", async () => {
  const server = fakeServer();
  const controller = new AbortController();
  const live = connect({url: "http://s8", fetch: server.fetch, signal: controller.signal});
  await until(() => live.status === "open", "open");
  controller.abort();
  assert.equal(live.status, "closed");
  await until(() => server.requests[0].closed, "the request to end");
  const never = connect({url: "http://s8", fetch: server.fetch, signal: AbortSignal.abort()});
  await tick(50);
  assert.equal(never.status, "closed");
  assert.equal(server.requests.length, 1);
  assert.throws(() => never.on("nonsense", () => {}), TypeError);
});

test("a subscription from an older point replays for it, not again for the others", async () => {
  const server = fakeServer();
  const first = connect({url: "http://s9", fetch: server.fetch});
  const firstSeen = [];
  first.on("change", (event) => firstSeen.push(event.seq));
  await until(() => first.status === "open", "open");
  server.requests[0].send(change(20) + change(21));
  await until(() => firstSeen.length === 2, "events");
  const second = connect({url: "http://s9", fetch: server.fetch, lastEventId: 19});
  const secondSeen = [];
  second.on("change", (event) => secondSeen.push(event.seq));
  await until(() => server.requests.length === 2, "a replaying request");
  assert.equal(server.requests[1].headers["Last-Event-ID"], "19");
  server.requests[1].send(change(20) + change(21) + change(22));
  await until(() => secondSeen.length === 3, "replay");
  assert.deepEqual(firstSeen, [20, 21, 22]);
  assert.deepEqual(secondSeen, [20, 21, 22]);
  first.close();
  second.close();
});

test("getToken is asked again before a JWT expires; the new stream resumes", async () => {
  const server = fakeServer();
  const jwt = (n, exp) => `h.${Buffer.from(JSON.stringify({n, exp})).toString("base64url")}.s`;
  const tokens = [];
  const getToken = () => {
    // The first expires in 30.3 s: it is replaced 30 s early, about 0.3 s from now.
    const token = jwt(tokens.length, Date.now() / 1000 + (tokens.length === 0 ? 30.3 : 3600));
    tokens.push(token);
    return token;
  };
  const live = connect({url: "http://s10", fetch: server.fetch, getToken});
  await until(() => live.status === "open", "open");
  server.requests[0].send(change(41));
  await until(() => server.requests.length === 2, "a request with the new token", 5000);
  assert.equal(server.requests[1].headers.Authorization, `Bearer ${tokens[1]}`);
  assert.equal(server.requests[1].headers["Last-Event-ID"], "41");
  assert.ok(server.requests[0].closed);
  live.close();
});

test("a tab that becomes visible after a failure reconnects at once", async () => {
  const page = new EventTarget();
  page.visibilityState = "hidden";
  globalThis.document = page;
  try {
    const server = fakeServer({status: (n) => (n <= 2 ? 503 : 200)});
    const live = connect({url: "http://s11", fetch: server.fetch});
    await until(() => server.requests.length === 2, "a second failure", 5000);
    await tick(50);
    const before = Date.now();
    page.visibilityState = "visible";
    page.dispatchEvent(new Event("visibilitychange"));
    await until(() => live.status === "open", "open");
    assert.ok(Date.now() - before < 900);  // the back-off would have waited 1 to 2 s
    live.close();
  } finally {
    delete globalThis.document;
  }
});

test("LOG:SEQ event ids: ordered by SEQ, kept whole as the resume point", async () => {
  const server = fakeServer();
  const live = connect({url: "http://s-logseq", fetch: server.fetch, lastEventId: "3f2a9c01b7de:5"});
  const seen = [];
  live.on("change", (event) => seen.push(event.seq));
  await until(() => live.status === "open", "open");
  const [request] = server.requests;
  assert.equal(request.headers["Last-Event-ID"], "3f2a9c01b7de:5");
  request.send('id: 3f2a9c01b7de:5\nevent: change\ndata: {"seq": 5, "action": "INSERT"}\n\n');
  request.send('id: 3f2a9c01b7de:6\nevent: change\ndata: {"seq": 6, "action": "INSERT"}\n\n');
  await until(() => seen.length === 1, "the new change");
  assert.deepEqual(seen, [6]);  // seq 5 was had already: not delivered again
  assert.equal(live.lastEventId, "3f2a9c01b7de:6");
  live.close();
});
