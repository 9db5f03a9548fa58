// @bookwatch/client: the browser client of `bookwatch serve`. One ES module with no imports and
// no build step: `serve` hands out this very file as /bookwatch.js, and the npm package ships it.
//
//   import {connect, rebase} from "@bookwatch/client";   // or from "/bookwatch.js"
//   const live = connect({table: "bookings", id: 123, viewer: "Ben", viewing: "bookings:123"});
//   live.on("change", (event) => ...);   // one wire-format v1 event (docs/reference.md)
//   live.on("presence", ({entity, viewers}) => ...);
//   live.on("reset", () => ...);          // events were missed: refetch what you show
//   live.on("status", (state) => ...);    // connecting | open | reconnecting | closed
//   live.close();
//
// Every connect() on a page that names the same server and credentials shares ONE HTTP stream
// (a browser gives a page six HTTP/1.1 connections per origin): the stream asks the server for
// the union of what its subscriptions want and each subscription filters its own share.

const KINDS = ["change", "presence", "reset", "status"];
// After a failed attempt (network down, an HTTP error, a 503 from --max-clients) we wait from
// 1 s, doubling to 30 s, with jitter so a crowd does not come back in one instant.
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
// The server sends a heartbeat every 15 s: two missed ones (plus slack for a busy tab) mean the
// connection is dead even though no error said so (a sleeping laptop, a proxy that drops idle
// streams silently). We then reconnect, resuming after the last event seen.
export const HEARTBEAT_TIMEOUT_MS = 35000;
// A token that expires is replaced this long before its `exp` (see refreshDelay).
const TOKEN_REFRESH_EARLY_MS = 30000;
const TOKEN_REFRESH_MIN_MS = 1000;

// -- exact numbers ------------------------------------------------------------------------------

/**
 * JSON.parse that never loses a digit. A number literal a double cannot hold exactly (a
 * `numeric` of 22 digits, a `bigint` beyond 2^53) is kept as its literal text, or handed to
 * `parseNumber(text)` (e.g. `(text) => new Decimal(text)`). With `exactNumbers: true`, every
 * literal with a fraction or an exponent is kept too, so `399.90` stays "399.90" for display.
 */
export function parseJson(text, options = {}) {
  const exactNumbers = Boolean(options.exactNumbers);
  const source = String(text);
  // Most events hold no number that needs keeping: JSON.parse is then exact and much faster.
  if (!needsKeeping(source, exactNumbers)) return JSON.parse(source);
  return parseKeeping(source, exactNumbers, options.parseNumber);
}

// Every string and number literal of a JSON text, in order (strings matched so that digits
// inside them are not taken for numbers).
const LITERALS = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

function needsKeeping(source, exactNumbers) {
  LITERALS.lastIndex = 0;
  let match;
  while ((match = LITERALS.exec(source)) !== null) {
    const literal = match[0];
    if (literal.charCodeAt(0) === 34) continue;  // a string
    if (!numberIsExact(literal, exactNumbers)) return true;
  }
  return false;
}

function numberIsExact(literal, exactNumbers) {
  // Up to 15 significant digits and no exponent: a double always holds it.
  if (!exactNumbers && literal.length <= 15 && !/[eE]/.test(literal)) return true;
  const value = Number(literal);
  return exactNumbers
    ? /^-?\d+$/.test(literal) && Number.isSafeInteger(value)
    : Number.isFinite(value) && sameDecimal(literal, String(value));
}

function parseKeeping(source, exactNumbers, parseNumber) {
  let at = 0;

  const fail = () => {
    throw new SyntaxError(`invalid JSON at position ${at}`);
  };
  const space = () => {
    for (;;) {
      const code = source.charCodeAt(at);
      if (code === 32 || code === 9 || code === 10 || code === 13) at++;
      else return;
    }
  };
  const string = () => {
    const start = at++;
    for (;;) {
      const char = source[at];
      if (char === undefined) fail();
      if (char === "\\") at += 2;
      else if (char === '"') break;
      else at++;
    }
    at++;
    // The slice is one JSON string: JSON.parse checks its escapes and control characters.
    return JSON.parse(source.slice(start, at));
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const number = () => {
    NUMBER.lastIndex = at;
    const match = NUMBER.exec(source);
    if (match === null) fail();
    at = NUMBER.lastIndex;
    const literal = match[0];
    if (numberIsExact(literal, exactNumbers)) return Number(literal);
    return parseNumber ? parseNumber(literal) : literal;
  };
  const word = (spelling, value) => {
    if (source.startsWith(spelling, at)) {
      at += spelling.length;
      return value;
    }
    return fail();
  };
  const value = () => {
    space();
    const char = source[at];
    if (char === "{") {
      at++;
      const object = {};
      space();
      if (source[at] === "}") {
        at++;
        return object;
      }
      for (;;) {
        space();
        if (source[at] !== '"') fail();
        const key = string();
        space();
        if (source[at++] !== ":") fail();
        // defineProperty: a "__proto__" key is data, never the object's prototype.
        Object.defineProperty(object, key, {value: value(), enumerable: true, writable: true,
                                            configurable: true});
        space();
        const next = source[at++];
        if (next === "}") return object;
        if (next !== ",") fail();
      }
    }
    if (char === "[") {
      at++;
      const array = [];
      space();
      if (source[at] === "]") {
        at++;
        return array;
      }
      for (;;) {
        array.push(value());
        space();
        const next = source[at++];
        if (next === "]") return array;
        if (next !== ",") fail();
      }
    }
    if (char === '"') return string();
    if (char === "t") return word("true", true);
    if (char === "f") return word("false", false);
    if (char === "n") return word("null", null);
    return number();
  };

  const result = value();
  space();
  if (at !== source.length) fail();
  return result;
}

// Do two decimal literals ("399.90", "3.999e+2") name the same number?
function sameDecimal(a, b) {
  return canonicalDecimal(a) === canonicalDecimal(b);
}

function canonicalDecimal(literal) {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (match === null) return literal;
  const [, sign, whole, fraction = "", exponent = "0"] = match;
  let digits = (whole + fraction).replace(/^0+/, "");
  if (digits === "") return "0";
  let power = Number(exponent) - fraction.length;
  const trimmed = digits.replace(/0+$/, "");
  power += digits.length - trimmed.length;
  digits = trimmed;
  return `${sign}${digits}e${power}`;
}

// -- Server-Sent Events over fetch ---------------------------------------------------------------
// fetch rather than EventSource: it sends the token as a header (not in the URL), tells a 401
// from a dropped network, lets us see the server's heartbeats (SSE comments, which
// EventSource swallows) and hands us each event's raw text for exact numbers.

/** Parses a text/event-stream incrementally; calls onEvent({event, data, id}) per event. */
export function sseParser(onEvent) {
  let buffer = "";
  let data = [];
  let type = "";
  let id = null;
  let retry = null;
  const line = (text) => {
    if (text === "") {
      if (data.length > 0) onEvent({event: type || "message", data: data.join("\n"), id});
      data = [];
      type = "";
      id = null;
      return;
    }
    if (text[0] === ":") return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let content = colon < 0 ? "" : text.slice(colon + 1);
    if (content[0] === " ") content = content.slice(1);
    if (field === "data") data.push(content);
    else if (field === "event") type = content;
    else if (field === "id" && !content.includes("\0")) id = content;
    else if (field === "retry" && /^\d+$/.test(content)) retry = Number(content);
  };
  return {
    push(chunk) {
      buffer += chunk;
      const breaks = /\r\n|\r|\n/g;
      let start = 0;
      let match;
      while ((match = breaks.exec(buffer)) !== null) {
        // A lone CR at the end of what we have may be the first half of a CRLF.
        if (match[0] === "\r" && match.index === buffer.length - 1) break;
        line(buffer.slice(start, match.index));
        start = breaks.lastIndex;
      }
      buffer = buffer.slice(start);
    },
    get retry() {
      return retry;
    },
  };
}

// -- the shared stream ---------------------------------------------------------------------------

function asList(value) {
  if (value === undefined || value === null) return [];
  return (Array.isArray(value) ? value : [value]).map(String);
}

function serverBase(url) {
  // Default: the page's own origin (docs/reference.md). Not the module's own URL: once bundled, that names the
  // bundle, not the server.
  const page = globalThis.location ? globalThis.location.href : undefined;
  const base = new URL(url || "/", page);
  return base.href.replace(/\/?([?#].*)?$/, "/");
}

/**
 * The URL of `GET /events` for these options (exported for tests and custom transports).
 * The token goes in the URL only when given here: connect() sends it as a header instead.
 */
export function eventsUrl(options = {}, lastEventId = null) {
  const {url, token, table, action, id, viewer, viewing} = options;
  const target = new URL("events", serverBase(url));
  for (const [name, values] of [["table", table], ["action", action], ["id", id]]) {
    for (const value of asList(values)) target.searchParams.append(name, value);
  }
  if (viewer != null || viewing != null) {
    target.searchParams.set("viewer", String(viewer ?? ""));
    target.searchParams.set("viewing", String(viewing ?? ""));
  }
  if (lastEventId != null && lastEventId !== "") {
    target.searchParams.set("last_event_id", String(lastEventId));
  }
  if (token) target.searchParams.set("token", token);
  return target.href;
}

/** When a JWT expires (ms since the epoch), or null for a token that is not one. */
export function tokenExpiry(token) {
  const claims = tokenClaims(token);
  return typeof claims?.exp === "number" ? claims.exp * 1000 : null;
}

function tokenClaims(token) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
    return claims !== null && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

// How long to keep a token just received before asking getToken() for the next one (null:
// not a JWT with an expiry; the server's 401 or reset "token-expired" will say when). 30 s
// before it expires, or halfway through its life for a token issued (iat) for less than a
// minute. Never sooner than 1 s: a page clock ahead of the server's, or a backend that hands
// out the same token again, must not turn into one getToken() call after another.
function refreshDelay(token, now) {
  const claims = tokenClaims(token);
  if (typeof claims?.exp !== "number") return null;
  const expiry = claims.exp * 1000;
  const early = typeof claims.iat === "number"
    ? Math.min(TOKEN_REFRESH_EARLY_MS, Math.max(0, expiry - claims.iat * 1000) / 2)
    : TOKEN_REFRESH_EARLY_MS;
  return Math.min(Math.max(expiry - now - early, TOKEN_REFRESH_MIN_MS), 2 ** 31 - 1);
}

// Subscriptions share a stream only when they name the same getToken (and fetch) functions.
const functionIds = new WeakMap();
let nextFunctionId = 1;
function identity(fn) {
  if (typeof fn !== "function") return "";
  if (!functionIds.has(fn)) functionIds.set(fn, `f${nextFunctionId++}`);
  return functionIds.get(fn);
}

const streams = new Map();  // server + credentials -> [SharedStream]

// An event id is LOG:SEQ (a bare SEQ when the log has no identity): events are ordered by SEQ.
function seqOf(id) {
  if (id === null || id === undefined || id === "") return null;
  const text = String(id);
  const seq = Number(text.slice(text.lastIndexOf(":") + 1));
  return Number.isSafeInteger(seq) && seq >= 0 ? seq : null;
}

function reportHandlerError(error) {
  // One broken handler must not starve the others, nor kill the stream: report it the way an
  // uncaught error in an event listener is reported.
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}

class SharedStream {
  constructor(key, base, options) {
    this.key = key;
    this.base = base;
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.fetch = options.fetch || null;
    this.subscriptions = new Set();
    this.status = null;
    this.position = null;     // the seq of the Last-Event-ID the next attempt sends
    this.positionId = null;   // that id itself (LOG:SEQ: the server checks the log)
    this.asked = null;        // the query the open attempt asked for
    this.controller = null;   // aborts the open attempt
    this.wakeUp = null;       // cuts a retry wait short
    this.running = false;
    this.restartSoon = false;
    this.retryMs = RETRY_FIRST_MS;
    this.serverRetryMs = null;
    this.watchdog = null;
    this.refreshTimer = null;
    this.needToken = !this.token && Boolean(this.getToken);
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_MS;
    this.onOnline = () => this.wake();
    this.onVisible = () => {
      if (globalThis.document && globalThis.document.visibilityState === "visible") this.wake();
    };
  }

  // The presence pair this stream carries (the server takes one per stream).
  presence() {
    for (const subscription of this.subscriptions) {
      if (subscription.viewing != null) return subscription;
    }
    return null;
  }

  accepts(subscription) {
    const carried = this.presence();
    return subscription.viewing == null || carried === null ||
      (carried.viewer === subscription.viewer && carried.viewing === subscription.viewing);
  }

  // The union of the subscriptions' filters: a filter the server applies only when every
  // subscription has one; each subscription still filters exactly on its side.
  query() {
    const query = {};
    for (const name of ["table", "action", "id"]) {
      const values = new Set();
      let everyone = true;
      for (const subscription of this.subscriptions) {
        if (subscription.filters[name].length === 0) everyone = false;
        for (const value of subscription.filters[name]) values.add(value);
      }
      query[name] = everyone ? [...values].sort() : [];
    }
    const carried = this.presence();
    if (carried !== null) {
      query.viewer = carried.viewer;
      query.viewing = carried.viewing;
    }
    return query;
  }

  covers(asked, query) {
    if (asked === null) return false;
    if ((asked.viewing ?? null) !== (query.viewing ?? null) ||
        (asked.viewer ?? null) !== (query.viewer ?? null)) return false;
    return ["table", "action", "id"].every((name) =>
      asked[name].length === 0 || (query[name].length > 0 &&
                                   query[name].every((value) => asked[name].includes(value))));
  }

  add(subscription) {
    this.subscriptions.add(subscription);
    const from = subscription.after;
    if (from !== null && (this.position === null || from < this.position)) {
      // It must see events the stream has passed: start again from its point; the others
      // skip what they already had.
      this.position = from;
      this.positionId = subscription.lastEventId;
      this.restart();
    } else if (!this.covers(this.asked, this.query())) {
      this.restart();
    }
    if (!this.running) this.start();
  }

  remove(subscription) {
    if (!this.subscriptions.delete(subscription)) return;
    if (this.subscriptions.size === 0) {
      this.stop();
      return;
    }
    // Leaving a row's presence needs a stream without it; a narrower filter needs nothing.
    if (this.asked && subscription.viewing != null && (this.asked.viewing ?? null) !==
        (this.query().viewing ?? null)) this.restart();
  }

  setStatus(next) {
    if (next === this.status) return;
    this.status = next;
    for (const subscription of [...this.subscriptions]) subscription.emit("status", next);
  }

  start() {
    this.running = true;
    this.setStatus("connecting");
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.document?.addEventListener?.("visibilitychange", this.onVisible);
    // Subscriptions made in the same task share the first request.
    Promise.resolve().then(() => this.loop());
  }

  stop() {
    this.running = false;
    const list = streams.get(this.key) || [];
    const index = list.indexOf(this);
    if (index >= 0) list.splice(index, 1);
    if (list.length === 0) streams.delete(this.key);
    clearTimeout(this.watchdog);
    clearTimeout(this.refreshTimer);
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.document?.removeEventListener?.("visibilitychange", this.onVisible);
    this.controller?.abort();
    this.wakeUp?.();
    this.status = "closed";
  }

  restart() {
    this.restartSoon = true;
    this.controller?.abort();
    this.wakeUp?.();
  }

  wake() {
    // Back online, or the tab is visible again: a stream that failed tries now, not after
    // its back-off; one that looks open but has been silent too long is replaced.
    if (this.status !== "open" || this.silentTooLong()) {
      this.retryMs = RETRY_FIRST_MS;
      this.restart();
    }
  }

  silentTooLong() {
    return this.lastHeard !== undefined && Date.now() - this.lastHeard > this.heartbeatTimeoutMs;
  }

  heard() {
    this.lastHeard = Date.now();
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      this.setStatus("reconnecting");
      this.restart();
    }, this.heartbeatTimeoutMs);
  }

  async freshToken() {
    if (this.getToken && (this.needToken || this.token === null)) {
      this.token = (await this.getToken()) || null;
      this.needToken = false;
      this.scheduleRefresh();
    }
    return this.token;
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const wait = refreshDelay(this.token, Date.now());
    if (wait === null || !this.getToken) return;
    this.refreshTimer = setTimeout(async () => {
      try {
        const previous = this.token;
        this.token = (await this.getToken()) || null;
        this.scheduleRefresh();
        // The new stream resumes after the last event: nothing is lost.
        if (this.token !== previous) this.restart();
      } catch (error) {
        reportHandlerError(error);
      }
    }, wait);
  }

  async loop() {
    if (this.token) this.scheduleRefresh();
    while (this.running) {
      this.restartSoon = false;
      let outcome;
      try {
        outcome = await this.attempt();
      } catch (error) {
        outcome = this.restartSoon || !this.running ? "restart" : "failed";
        if (outcome === "failed" && error && error.name !== "AbortError" &&
            !(error instanceof TypeError)) reportHandlerError(error);
      }
      clearTimeout(this.watchdog);
      if (!this.running) break;
      if (this.restartSoon || outcome === "restart") continue;
      this.setStatus("reconnecting");
      let delay;
      if (outcome === "ended") {
        delay = this.serverRetryMs ?? RETRY_FIRST_MS;
      } else {
        delay = this.retryMs / 2 + Math.random() * this.retryMs / 2;
        this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = null;
    }
  }

  // One request: resolves "ended" when the server ended the stream, "failed" on an HTTP
  // error, "restart" when we aborted it on purpose; throws on a network error.
  async attempt() {
    const controller = new AbortController();
    this.controller = controller;
    const token = await this.freshToken();
    if (controller.signal.aborted || !this.running) return "restart";
    const query = this.query();
    const headers = {Accept: "text/event-stream"};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (this.positionId !== null) headers["Last-Event-ID"] = String(this.positionId);
    const fetchImpl = this.fetch || globalThis.fetch.bind(globalThis);
    this.asked = query;
    const response = await fetchImpl(eventsUrl({url: this.base, ...query}), {
      headers, signal: controller.signal, cache: "no-store",
    });
    if (response.status === 401 || response.status === 403) {
      response.body?.cancel?.().catch(() => {});
      if (this.getToken) this.needToken = true;
      return "failed";
    }
    if (!response.ok || !response.body) {
      response.body?.cancel?.().catch(() => {});
      return "failed";
    }
    this.retryMs = RETRY_FIRST_MS;
    this.setStatus("open");
    this.heard();
    const parser = sseParser((message) => this.dispatch(message));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      this.heard();
      parser.push(value);
      if (parser.retry !== null) this.serverRetryMs = parser.retry;
    }
    return controller.signal.aborted ? "restart" : "ended";
  }

  dispatch(message) {
    const seq = seqOf(message.id);
    if (message.event === "change") {
      if (seq !== null) {
        this.position = seq;
        this.positionId = message.id;
      }
      for (const subscription of [...this.subscriptions]) subscription.deliver(message, seq);
    } else if (message.event === "presence") {
      for (const subscription of [...this.subscriptions]) subscription.deliverPresence(message);
    } else if (message.event === "reset") {
      let body;
      try {
        body = JSON.parse(message.data);
      } catch {
        body = {};
      }
      if (body && body.reason === "token-expired" && this.getToken) {
        // Not a loss: fetch a new token and resume after the last event we had.
        this.needToken = true;
        this.restart();
        return;
      }
      this.position = seq;
      this.positionId = seq === null ? null : message.id;
      for (const subscription of [...this.subscriptions]) subscription.deliverReset(body, seq, this.positionId);
    }
  }
}

class Subscription {
  constructor(options) {
    this.options = options;
    this.filters = {table: asList(options.table), action: asList(options.action).map(
      (action) => action.toUpperCase()), id: asList(options.id)};
    this.viewer = options.viewer ?? null;
    this.viewing = options.viewing ?? null;
    if ((this.viewer === null) !== (this.viewing === null)) {
      throw new TypeError("presence needs both viewer and viewing (TABLE:ID)");
    }
    this.after = seqOf(options.lastEventId);
    this.lastEventId = options.lastEventId ?? null;
    this.handlers = new Map(KINDS.map((kind) => [kind, new Set()]));
    this.closed = false;
    this.stream = null;
  }

  emit(kind, value) {
    for (const handler of [...this.handlers.get(kind)]) {
      try {
        handler(value);
      } catch (error) {
        reportHandlerError(error);
      }
    }
  }

  wants(event) {
    const {table, action, id} = this.filters;
    if (table.length && !table.includes(String(event.table))) return false;
    if (action.length && !action.includes(String(event.action))) return false;
    if (id.length && !id.includes(String(event.id))) return false;
    return true;
  }

  deliver(message, seq) {
    if (seq !== null) {
      if (this.after !== null && seq <= this.after) return;  // had it already
      this.after = seq;
      this.lastEventId = message.id;
    }
    let event;
    try {
      event = parseJson(message.data, this.options);
    } catch {
      return;  // not valid v1: skipped, as the wire format says consumers must
    }
    if (event !== null && typeof event === "object" && this.wants(event)) this.emit("change", event);
  }

  deliverPresence(message) {
    let body;
    try {
      body = JSON.parse(message.data);
    } catch {
      return;
    }
    if (this.viewing !== null && body && body.entity === this.viewing) this.emit("presence", body);
  }

  deliverReset(body, seq, id) {
    this.after = seq;
    this.lastEventId = id;
    this.emit("reset", body || {});
  }
}

/**
 * Open a live stream of change events (see the types for every option).
 * Returns {on(kind, fn) -> unsubscribe, close(), status, lastEventId}.
 */
export function connect(options = {}) {
  const subscription = new Subscription(options);
  const base = serverBase(options.url);
  const key = [base, options.token || "", identity(options.getToken), identity(options.fetch)]
    .join("\0");
  const list = streams.get(key) || [];
  streams.set(key, list);
  let stream = list.find((candidate) => candidate.accepts(subscription));
  if (!stream) {
    stream = new SharedStream(key, base, options);
    list.push(stream);
  }
  subscription.stream = stream;

  const close = () => {
    if (subscription.closed) return;
    subscription.closed = true;
    stream.remove(subscription);
    subscription.emit("status", "closed");
    for (const handlers of subscription.handlers.values()) handlers.clear();
    options.signal?.removeEventListener?.("abort", close);
  };

  const live = {
    on(kind, handler) {
      if (!subscription.handlers.has(kind)) {
        throw new TypeError(`unknown event kind ${kind}; use one of ${KINDS.join(", ")}`);
      }
      if (subscription.closed) return () => false;
      subscription.handlers.get(kind).add(handler);
      return () => subscription.handlers.get(kind).delete(handler);
    },
    close,
    get status() {
      return subscription.closed ? "closed" : stream.status;
    },
    get lastEventId() {
      return subscription.lastEventId === null ? null : String(subscription.lastEventId);
    },
  };

  if (options.signal?.aborted) {
    subscription.closed = true;
    return live;
  }
  options.signal?.addEventListener?.("abort", close, {once: true});
  stream.add(subscription);
  return live;
}

// -- the form helper ------------------------------------------------------------------------------

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
