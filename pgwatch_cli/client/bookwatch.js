// bookwatch.js: the browser client of `bookwatch serve`, an ES module with no build step.
//
//   import {connect, rebase} from "http://127.0.0.1:8765/bookwatch.js";
//   const live = connect({table: "bookings", id: 123, viewer: "Ben", viewing: "bookings:123"});
//   live.on("change", (event) => ...);   // one wire-format v1 event (docs/reference.md)
//   live.on("presence", ({entity, viewers}) => ...);
//   live.on("reset", () => ...);          // events were missed: refetch what you show
//   live.on("status", (state) => ...);    // connecting | open | reconnecting | closed
//   live.close();

const KINDS = ["change", "presence", "reset", "status"];
// After the browser gave up on a stream (an HTTP error, or a 503 from --max-clients), we open
// a new one ourselves: from 1 s, doubling to 30 s, with jitter so a crowd does not come back
// in one instant. Ordinary drops are retried by EventSource itself (the server's `retry:`).
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;

function serverBase(url) {
  // Default: the server this module was loaded from, so a page on another origin needs only
  // the import line.
  return new URL(url || ".", import.meta.url);
}

function asList(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

/** The URL of `GET /events` for these options (exported for tests and custom transports). */
export function eventsUrl(options = {}, lastEventId = null) {
  const {url, token, table, action, id, viewer, viewing} = options;
  const target = new URL("events", serverBase(url).href.replace(/\/?$/, "/"));
  for (const [name, values] of [["table", table], ["action", action], ["id", id]]) {
    for (const value of asList(values)) target.searchParams.append(name, String(value));
  }
  if (viewer != null || viewing != null) {
    target.searchParams.set("viewer", String(viewer ?? ""));
    target.searchParams.set("viewing", String(viewing ?? ""));
  }
  if (lastEventId != null && lastEventId !== "") {
    target.searchParams.set("last_event_id", String(lastEventId));
  }
  // EventSource cannot send an Authorization header: the server accepts ?token= instead.
  if (token) target.searchParams.set("token", token);
  return target.href;
}

/**
 * Open a live stream of change events.
 *
 * options: {url, token, table, action, id, viewer, viewing, lastEventId}; table/action/id may
 * be one value or a list. lastEventId: start after this seq (e.g. the X-Bookwatch-Seq of the
 * list you fetched), so nothing between your fetch and the stream is missed.
 * Returns {on(kind, fn) -> unsubscribe, close(), status, lastEventId}.
 */
export function connect(options = {}) {
  const Source = options.EventSource || globalThis.EventSource;
  const handlers = new Map(KINDS.map((kind) => [kind, new Set()]));
  let source = null;
  let status = null;
  let lastEventId = options.lastEventId ?? null;
  let retryMs = RETRY_FIRST_MS;
  let retryTimer = null;
  let closed = false;

  function emit(kind, value) {
    for (const handler of [...handlers.get(kind)]) {
      try {
        handler(value);
      } catch (error) {
        // One broken handler must not starve the others, nor kill the stream: report it the
        // way an uncaught error in an event listener is reported.
        if (typeof globalThis.reportError === "function") globalThis.reportError(error);
        else setTimeout(() => { throw error; });
      }
    }
  }

  function setStatus(next) {
    if (next === status) return;
    status = next;
    emit("status", next);
  }

  function remember(message) {
    if (message.lastEventId) lastEventId = message.lastEventId;
  }

  function parse(message) {
    try {
      return JSON.parse(message.data);
    } catch {
      return null;  // not valid v1: skipped, as the wire format says consumers must
    }
  }

  function open() {
    // On a reconnect of our own the resume point goes in the URL; EventSource's own reconnects
    // send it as the Last-Event-ID header (which the server prefers).
    source = new Source(eventsUrl(options, lastEventId));
    source.onopen = () => {
      retryMs = RETRY_FIRST_MS;
      setStatus("open");
    };
    source.onerror = () => {
      if (closed) return;
      if (source.readyState === 2) {  // CLOSED: the browser will not retry; we do
        source.close();
        setStatus("reconnecting");
        const delay = retryMs / 2 + Math.random() * retryMs / 2;
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
        retryTimer = setTimeout(() => { retryTimer = null; if (!closed) open(); }, delay);
      } else {
        setStatus("reconnecting");
      }
    };
    source.addEventListener("change", (message) => {
      remember(message);
      const event = parse(message);
      if (event !== null) emit("change", event);
    });
    source.addEventListener("presence", (message) => {
      const body = parse(message);
      if (body !== null) emit("presence", body);
    });
    source.addEventListener("reset", (message) => {
      // The server could not send every change since our resume point: whatever the page
      // shows must be refetched. The stream goes on after the reset's id.
      remember(message);
      emit("reset", parse(message) || {});
    });
  }

  setStatus("connecting");
  open();

  return {
    on(kind, handler) {
      if (!handlers.has(kind)) {
        throw new TypeError(`unknown event kind ${kind}; use one of ${KINDS.join(", ")}`);
      }
      handlers.get(kind).add(handler);
      return () => handlers.get(kind).delete(handler);
    },
    close() {
      if (closed) return;
      closed = true;
      if (retryTimer !== null) clearTimeout(retryTimer);
      if (source !== null) source.close();
      setStatus("closed");
    },
    get status() { return status; },
    get lastEventId() { return lastEventId; },
  };
}

/**
 * Are two field values the same? null, undefined and "" are all "empty"; a number equals a
 * string that spells it (events carry JSON numbers, forms hold strings).
 */
export function same(a, b) {
  const emptyA = a === null || a === undefined || a === "";
  const emptyB = b === null || b === undefined || b === "";
  if (emptyA || emptyB) return emptyA && emptyB;
  if (typeof a === "number" || typeof b === "number") {
    const x = Number(a);
    const y = Number(b);
    if (!Number.isNaN(x) && !Number.isNaN(y)) return x === y;
  }
  if (typeof a === "object" || typeof b === "object") {
    return JSON.stringify(a) === JSON.stringify(b);
  }
  return String(a) === String(b);
}

/**
 * Rebase a person's pending edits on an incoming change.
 *
 * pending: {column: value} the person changed and has not saved; base: the row as their form
 * was loaded ({column: value}); event: a wire-format change event (or `difference(...)`).
 * Returns {values, base, pending, conflicts, refetch}:
 *   values    what the form should show: the new row with the person's edits on top;
 *   base      the row as it is now (the event applied): save against its version;
 *   pending   the edits still to save (an edit the other person made too is no longer one);
 *   conflicts {column: {mine, theirs, base}} where both changed the same field differently;
 *             `values` keeps `mine` there until the person chooses;
 *   refetch   true when the event does not carry every changed value (truncated, excluded
 *             columns, not an UPDATE): nothing was applied, fetch the row and rebase on
 *             `difference(base, fetched)`.
 */
export function rebase(pending, base, event) {
  const unchanged = {
    values: {...base, ...pending}, base: {...base}, pending: {...pending}, conflicts: {},
    refetch: true,
  };
  if (!event || event.action !== "UPDATE" || event.truncated || !event.diff) return unchanged;
  const changed = event.changed || Object.keys(event.diff);
  if (!changed.every((column) => Object.hasOwn(event.diff, column))) return unchanged;

  const nextBase = {...base};
  const nextPending = {...pending};
  const conflicts = {};
  for (const column of changed) {
    const theirs = event.diff[column][1];
    nextBase[column] = theirs;
    if (!Object.hasOwn(pending, column)) continue;
    const mine = pending[column];
    if (same(mine, theirs)) {
      delete nextPending[column];  // they made the very same edit: nothing left to save
    } else if (!same(base[column], theirs)) {
      conflicts[column] = {mine, theirs, base: base[column]};
    }
  }
  return {values: {...nextBase, ...nextPending}, base: nextBase, pending: nextPending, conflicts,
          refetch: false};
}

/**
 * The change from `before` to `after` (two versions of one row) as an event `rebase` takes:
 * for a refetched row, or the `current` row a 409 answer carries.
 */
export function difference(before, after) {
  const diff = {};
  for (const column of Object.keys(after)) {
    if (!same(before[column], after[column])) diff[column] = [before[column], after[column]];
  }
  return {action: "UPDATE", changed: Object.keys(diff), diff, truncated: false};
}
