// Types of @bookwatch/client (src/index.js), the browser client of `bookwatch serve`.

/** A JSON value as parseJson returns it: numbers a double cannot hold exactly are kept as their
 * literal text (a string), or as whatever `parseNumber` returns (N). */
export type JsonValue<N = string> =
  | null | boolean | number | string | N | JsonValue<N>[] | {[key: string]: JsonValue<N>};

export type Action = "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" | "GAP";

/** One change, wire format v1 (SPEC "Event wire format"). Unknown keys may appear. */
export interface ChangeEvent<N = string> {
  v: 1;
  /** Change-log sequence number (commit order); null in notify mode. */
  seq: number | null;
  table: string;
  schema: string;
  action: Action;
  /** The primary key when it is one column, else null. */
  id: JsonValue<N>;
  pk: {[column: string]: JsonValue<N>} | null;
  /** The primary key before an UPDATE that changed it. */
  old_pk?: {[column: string]: JsonValue<N>};
  actor: string;
  /** For UPDATE, the columns whose value changed; null for INSERT/DELETE. */
  changed: string[] | null;
  /** For UPDATE, [old, new] per changed column; null when not UPDATE or dropped for size. */
  diff: {[column: string]: [JsonValue<N>, JsonValue<N>]} | null;
  truncated: boolean;
  txid: number | string | null;
  timestamp: string;
  /** The row's tenant, for tables installed with --tenant-column. */
  tenant?: JsonValue<N>;
  /** GAP events only. */
  reason?: string;
  lost_from?: string | null;
  lost_to?: string | null;
  [key: string]: unknown;
}

export interface PresenceEvent {
  /** "TABLE:ID", e.g. "bookings:123". */
  entity: string;
  /** Everyone viewing it, each person once. */
  viewers: string[];
}

export interface ResetEvent {
  /** Why the server could not send every change; e.g. "token-expired" (handled by connect()
   * itself when a getToken is given). */
  reason?: string;
  [key: string]: unknown;
}

export type Status = "connecting" | "open" | "reconnecting" | "closed";

export interface NumberOptions<N = string> {
  /** Keep every number literal with a fraction or an exponent as its text ("399.90"), and
   * integers beyond 2^53. Default false: only literals a double cannot hold exactly. */
  exactNumbers?: boolean;
  /** Turns a kept literal into your value (e.g. a Decimal) instead of a string. */
  parseNumber?: (literal: string) => N;
}

export type FilterValue = string | number | ReadonlyArray<string | number>;

export interface ConnectOptions<N = string> extends NumberOptions<N> {
  /** The server; default: the page's origin. */
  url?: string | URL;
  /** A fixed token (sent as an Authorization header). */
  token?: string;
  /** Returns a token: called at start when no token is given, before a JWT's `exp`, and after
   * a 401/403 or a "token-expired" reset. Share one function between connect() calls so they
   * share one stream. */
  getToken?: () => string | Promise<string>;
  table?: FilterValue;
  action?: Action | Lowercase<Action> | ReadonlyArray<Action | Lowercase<Action>>;
  id?: FilterValue;
  /** Presence: who you are, and the row you view ("TABLE:ID"); both or neither. */
  viewer?: string;
  viewing?: string;
  /** Start after this seq (e.g. the X-Bookwatch-Seq of the list you fetched). */
  lastEventId?: string | number | null;
  /** Closes the subscription when aborted. */
  signal?: AbortSignal;
  /** Reconnect when the server was silent this long (default HEARTBEAT_TIMEOUT_MS, 35 s: the
   * server's heartbeat comes every 15 s). */
  heartbeatTimeoutMs?: number;
  /** A fetch to use instead of the global one. */
  fetch?: typeof globalThis.fetch;
}

export interface EventMap<N = string> {
  change: ChangeEvent<N>;
  presence: PresenceEvent;
  reset: ResetEvent;
  status: Status;
}

export interface Live<N = string> {
  /** Adds a handler; returns a function that removes it. */
  on<K extends keyof EventMap<N>>(kind: K, handler: (value: EventMap<N>[K]) => void): () => boolean;
  close(): void;
  readonly status: Status | null;
  /** The seq of the last change this subscription saw (resume point), or null. */
  readonly lastEventId: string | null;
}

export const HEARTBEAT_TIMEOUT_MS: number;

/** Open a live stream of changes; every connect() to the same server with the same credentials
 * on a page shares one HTTP connection. */
export function connect<N = string>(options?: ConnectOptions<N>): Live<N>;

/** JSON.parse that keeps every digit (see NumberOptions). */
export function parseJson<N = string>(text: string, options?: NumberOptions<N>): JsonValue<N>;

/** The URL of GET /events for these options. */
export function eventsUrl(options?: ConnectOptions<unknown>, lastEventId?: string | number | null): string;

/** When a JWT expires (ms since the epoch), or null. */
export function tokenExpiry(token: string | null | undefined): number | null;

export interface SseMessage {
  event: string;
  data: string;
  id: string | null;
}

/** An incremental text/event-stream parser. */
export function sseParser(onEvent: (message: SseMessage) => void): {
  push(chunk: string): void;
  readonly retry: number | null;
};

/** Form-style equality: empty values are equal, a number equals a string spelling it. */
export function same(a: unknown, b: unknown): boolean;

export type Row = {[column: string]: unknown};

export interface Conflict {
  mine: unknown;
  theirs: unknown;
  base: unknown;
}

export interface Rebased<R extends Row = Row> {
  values: R;
  base: R;
  pending: Partial<R>;
  conflicts: {[column: string]: Conflict};
  refetch: boolean;
}

/** Something rebase() takes: a change event or difference(before, after). */
export interface RowChange {
  action: string;
  changed?: string[] | null;
  diff?: {[column: string]: [unknown, unknown]} | null;
  truncated?: boolean;
}

/** Rebase a person's pending edits on an incoming change. */
export function rebase<R extends Row = Row>(pending: Row, base: Row,
                                            event: RowChange | null | undefined): Rebased<R>;

/** The change from one version of a row to another, as an event rebase() takes. */
export function difference(before: Row, after: Row): RowChange & {
  action: "UPDATE"; changed: string[]; diff: {[column: string]: [unknown, unknown]};
  truncated: false;
};
