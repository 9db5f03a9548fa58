// @bookwatch/client/react: `useBookwatch`, the client as a React hook. React is an optional
// peer dependency: only this entry imports it.
import {useEffect, useRef, useState} from "react";

import {connect} from "./index.js";

/**
 * Subscribe a component to live changes while it is mounted.
 *
 * The stream is opened again only when what it asks for changes (url, token, getToken,
 * filters, presence, number handling), never because a handler is a new function on each
 * render: onChange/onPresence/onReset/parseNumber are read from the latest render, so they
 * never see stale props or state. Returns {status, viewers, lastEventId}.
 */
export function useBookwatch(options) {
  const {url, token, getToken, table, action, id, viewer, viewing, exactNumbers, lastEventId,
         fetch, enabled = true} = options;
  const latest = useRef(options);
  useEffect(() => {
    latest.current = options;
  });
  const [state, setState] = useState({status: enabled ? "connecting" : "closed", viewers: [],
                                      lastEventId: lastEventId ?? null});
  const hasParseNumber = typeof options.parseNumber === "function";
  // Lists are compared by content: `table: ["a", "b"]` written inline is a new array per render.
  const filters = JSON.stringify([table ?? null, action ?? null, id ?? null]);

  useEffect(() => {
    if (!enabled) return undefined;
    const [tableNow, actionNow, idNow] = JSON.parse(filters);
    const controller = new AbortController();
    const live = connect({
      url, token, getToken, fetch, viewer, viewing, exactNumbers, lastEventId,
      table: tableNow ?? undefined, action: actionNow ?? undefined, id: idNow ?? undefined,
      parseNumber: hasParseNumber ? (text) => latest.current.parseNumber(text) : undefined,
      signal: controller.signal,
    });
    const update = (change) => setState((previous) => ({...previous, ...change}));
    update({status: live.status});
    live.on("status", (status) => update({status}));
    live.on("change", (event) => {
      update({lastEventId: live.lastEventId});
      latest.current.onChange?.(event);
    });
    live.on("presence", (body) => {
      update({viewers: body.viewers});
      latest.current.onPresence?.(body);
    });
    live.on("reset", (body) => latest.current.onReset?.(body));
    return () => controller.abort();
    // lastEventId is where the first stream starts; a later value must not reopen it.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [enabled, url, token, getToken, fetch, viewer, viewing, exactNumbers, hasParseNumber,
      filters]);

  return state;
}
