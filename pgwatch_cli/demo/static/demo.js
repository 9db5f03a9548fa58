// The seed's frontend, played by a plain page on top of /bookwatch.js: a booking list and an
// editor with optimistic locking that never loses what the person typed. Another person's
// change to a field they have not touched is applied at once; a change to a field they are
// editing (or a 409 on save) asks them, at that field: "Keep mine" or "Use theirs".
"use strict";

(async () => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const user = (params.get("user") || sessionStorage.getItem("bookwatch-user") ||
                prompt("Your name (shown to others editing the same booking):") || "Guest").trim();
  sessionStorage.setItem("bookwatch-user", user);

  // The client package (@bookwatch/client) as `serve` hands it out, used through its public
  // API only, as any page would (the token rule applies to the module too).
  const client = await import("/bookwatch.js" + (token ? "?token=" + encodeURIComponent(token) : ""));

  const EDITABLE = ["anreise", "abreise", "anzahl_gaeste", "gesamtpreis", "status", "bemerkungen"];
  const LABELS = {
    anreise: "Arrival", abreise: "Departure", anzahl_gaeste: "Guests", gesamtpreis: "Total price",
    status: "Status", bemerkungen: "Notes", guest_id: "Guest", room_id: "Room",
  };
  // Stored as the schema has them (German), shown in English.
  const STATUS = {angefragt: "Requested", "bestätigt": "Confirmed", eingecheckt: "Checked in",
                  storniert: "Cancelled"};
  const ROOM_TYPES = {Einzelzimmer: "single", Doppelzimmer: "double", Familienzimmer: "family",
                      Suite: "suite"};
  const MONEY = new Intl.NumberFormat("en", {style: "currency", currency: "EUR"});
  // The notice lists at most this many fields, and at most this many values per field
  // (first, …, the newest ones): it stays small however long the other person keeps editing.
  const TOAST_FIELDS = 4;
  const TOAST_VALUES = 4;
  // The browser's own short date format: the one its date inputs show, so the list, the
  // notices and the form all read alike.
  const DATE = new Intl.DateTimeFormat(undefined, {year: "numeric", month: "2-digit",
                                                   day: "2-digit", timeZone: "UTC"});

  const $ = (id) => document.getElementById(id);
  const bookings = new Map();  // id -> booking as the API returns it
  let base = null;             // the open booking as the server has it (last we heard)
  let conflicts = {};          // column -> {mine, theirs, base, actor}
  let saving = false;
  let live = null;             // the bookwatch.js connection
  let resumeAfter = null;      // seq the list shows: the first stream resumes after it
  let toast = null;            // {actor, at, changes: Map column -> [before, ...each after]}
  let listRefresh = null;

  // -- talking to the server --------------------------------------------------------------------

  async function api(path, options = {}) {
    // Header values must be Latin-1: the name goes percent-encoded (UTF-8) so any name works.
    const headers = {"X-Bookwatch-User": encodeURIComponent(user), ...(options.headers || {})};
    if (token) headers.Authorization = "Bearer " + token;
    try {
      const response = await fetch(path, {...options, headers});
      const body = await response.json().catch(() => ({}));
      return {status: response.status, ok: response.ok, body, headers: response.headers};
    } catch (error) {
      return {status: 0, ok: false, body: {error: "The server cannot be reached."},
              headers: new Headers()};
    }
  }

  function openStream() {
    const previous = live;
    const viewing = base ? {viewer: user, viewing: "bookings:" + base.id} : {};
    // The new stream resumes where the old one was, so switching bookings misses nothing.
    // exactNumbers: prices arrive as the database wrote them ("399.90", every digit).
    live = client.connect({
      url: location.origin, token, ...viewing, exactNumbers: true,
      lastEventId: previous ? previous.lastEventId : resumeAfter,
    });
    if (previous) {
      stopShowingStatus();
      previous.close();
    }
    stopShowingStatus = live.on("status", showConnection);
    live.on("change", onChange);
    live.on("presence", onPresence);
    live.on("reset", onReset);
    renderPresence([]);
  }

  let stopShowingStatus = () => {};

  function showConnection(state) {
    const badge = $("connection");
    badge.textContent = {open: "live", connecting: "connecting…", reconnecting: "reconnecting…",
                         closed: "offline"}[state];
    badge.className = "connection " + (state === "open" ? "live" : "offline");
  }

  // -- the list ---------------------------------------------------------------------------------

  async function loadList() {
    const {ok, body, headers} = await api("/api/bookings");
    if (!ok) return;
    // The newest change the list already shows: the stream resumes right after it, no gap.
    if (resumeAfter === null) resumeAfter = headers.get("X-Bookwatch-Seq");
    bookings.clear();
    for (const booking of body) bookings.set(booking.id, booking);
    renderList();
  }

  function renderList(flashId) {
    const rows = [...bookings.values()].sort((a, b) => a.id - b.id).map((booking) => {
      const row = document.createElement("tr");
      row.dataset.id = booking.id;
      if (base && base.id === booking.id) row.classList.add("selected");
      if (booking.id === flashId) row.classList.add("flash");
      const cells = [
        [booking.id, ""], [booking.reservierungsnummer, "c-ref"], [booking.gast, ""],
        [booking.zimmer, "c-room"], [date(booking.anreise), ""],
        [date(booking.abreise), "c-departure"], [money(booking.gesamtpreis), "num"],
        [STATUS[booking.status] || booking.status, "c-status"],
      ];
      for (const [value, cls] of cells) {
        const cell = document.createElement("td");
        cell.textContent = value ?? "";
        cell.title = value ?? "";
        if (cls) cell.className = cls;
        row.appendChild(cell);
      }
      row.addEventListener("click", () => openBooking(booking.id));
      return row;
    });
    $("bookings").tBodies[0].replaceChildren(...rows);
  }

  function scrollListTo(id) {
    // Only the list scrolls: moving the whole page would take the editor away from the person.
    const list = $("list");
    const row = list.querySelector(`tr[data-id="${id}"]`);
    if (!row) return;
    const head = $("bookings").tHead.offsetHeight;
    const top = row.offsetTop - head;
    if (top < list.scrollTop || row.offsetTop + row.offsetHeight > list.scrollTop + list.clientHeight) {
      list.scrollTop = Math.max(0, top - (list.clientHeight - head) / 3);
    }
  }

  async function refreshRow(id) {
    const {ok, status, body} = await api("/api/bookings/" + id);
    if (ok) bookings.set(id, body);
    else if (status === 404) bookings.delete(id);
    renderList(id);
  }

  // -- the editor: base, pending edits, conflicts -----------------------------------------------

  // A value as its input holds it, so the form and the server's values compare as strings.
  function asInput(column, value) {
    if (value === null || value === undefined) return "";
    if (column === "gesamtpreis") return value === "" ? "" : Number(value).toFixed(2);
    return String(value);
  }

  function formValue(column) {
    const input = $(column);
    return column === "gesamtpreis" && input.value !== "" ? Number(input.value).toFixed(2)
                                                          : input.value;
  }

  // The person's edits: every field whose input differs from what the server has.
  function pendingEdits() {
    const pending = {};
    if (!base) return pending;
    for (const column of EDITABLE) {
      const value = formValue(column);
      if (value !== asInput(column, base[column])) pending[column] = value;
    }
    return pending;
  }

  async function openBooking(id) {
    if (base && base.id === id) return;
    if (base && Object.keys(pendingEdits()).length &&
        !confirm("Leave this booking? Your unsaved changes will be lost.")) return;
    const {ok, body} = await api("/api/bookings/" + id);
    if (!ok) return;
    base = body;
    bookings.set(body.id, body);
    conflicts = {};
    for (const column of EDITABLE) $(column).value = asInput(column, body[column]);
    renderFacts();
    renderConflicts();
    hideToast();
    $("error").hidden = true;
    $("editor").hidden = false;
    renderList();
    scrollListTo(id);
    history.replaceState(null, "", "?" + withParam("booking", id));
    openStream();  // presence follows the open booking
  }

  function renderFacts() {
    $("editor-title").textContent = `#${base.id} · ${base.reservierungsnummer}`;
    $("gast").textContent = base.gast;
    $("zimmer").textContent = `${base.zimmer} (${ROOM_TYPES[base.zimmertyp] || base.zimmertyp})`;
    $("version").textContent = base.version;
    updatePendingNote();
  }

  // Apply a rebase() result: untouched fields show the new value (highlighted), the person's
  // edits stay, clashes get a choice at their field.
  function applyRebase(result, actor) {
    const before = base;
    const applied = [];
    for (const column of EDITABLE) {
      if (Object.hasOwn(result.pending, column)) continue;
      const shown = asInput(column, result.base[column]);
      if ($(column).value !== shown) {
        $(column).value = shown;
        applied.push(column);
      }
    }
    base = {...before, ...result.base};
    for (const [column, clash] of Object.entries(result.conflicts)) {
      if (EDITABLE.includes(column)) conflicts[column] = {...clash, actor};
    }
    // A conflict whose field the other person has since set to the person's value is settled.
    for (const column of Object.keys(conflicts)) {
      if (formValue(column) === asInput(column, base[column])) delete conflicts[column];
    }
    for (const column of applied) highlight(column);
    renderFacts();
    renderConflicts();
  }

  function highlight(column) {
    const field = document.querySelector(`.field[data-field="${column}"]`);
    field.classList.remove("updated");
    void field.offsetWidth;  // restart the animation
    field.classList.add("updated");
  }

  function renderConflicts() {
    for (const column of EDITABLE) {
      const field = document.querySelector(`.field[data-field="${column}"]`);
      field.querySelector(".conflict")?.remove();
      field.classList.toggle("clashing", Object.hasOwn(conflicts, column));
      const clash = conflicts[column];
      if (!clash) continue;
      const box = document.createElement("div");
      box.className = "conflict";
      box.dataset.conflict = column;
      box.setAttribute("role", "group");
      box.setAttribute("aria-label", `${LABELS[column]}: choose a value`);
      const text = document.createElement("p");
      text.textContent = `${clash.actor} saved ${shown(column, clash.theirs)}; ` +
        `you have ${shown(column, formValue(column))}.`;
      const keep = document.createElement("button");
      keep.type = "button";
      keep.textContent = "Keep mine";
      keep.addEventListener("click", () => resolve(column, "mine"));
      const take = document.createElement("button");
      take.type = "button";
      take.className = "quiet";
      take.textContent = "Use theirs";
      take.addEventListener("click", () => resolve(column, "theirs"));
      const actions = document.createElement("div");
      actions.className = "conflict-actions";
      actions.append(keep, take);
      box.append(text, actions);
      field.appendChild(box);
    }
    const open = Object.keys(conflicts).length;
    $("save").disabled = open > 0;
    $("save").title = open ? "Choose Keep mine or Use theirs first" : "";
    updatePendingNote();
  }

  function resolve(column, choice) {
    if (choice === "theirs") {
      $(column).value = asInput(column, base[column]);
      highlight(column);
    }
    // "Keep mine": the input already holds it; saving against the new version writes it over
    // theirs, which the person has now seen.
    delete conflicts[column];
    renderConflicts();
    $(column).focus();
  }

  function updatePendingNote() {
    const note = $("pending-note");
    const open = Object.keys(conflicts).length;
    const edits = Object.keys(pendingEdits()).length;
    note.hidden = !open && !edits;
    if (open) hideSaved();  // "Saved." next to "Choose a value first" would contradict it
    note.textContent = open
      ? `Choose a value for ${open === 1 ? "1 field" : open + " fields"} first.`
      : `${edits === 1 ? "1 unsaved change" : edits + " unsaved changes"}.`;
  }

  function requestBody(pending) {
    const body = {};
    for (const [column, value] of Object.entries(pending)) {
      body[column] = column === "anzahl_gaeste" ? Number(value) :
                     column === "bemerkungen" ? (value || null) : value;
    }
    return body;
  }

  async function save(submit, retried = false) {
    submit?.preventDefault();
    if (!base || saving || Object.keys(conflicts).length) return;
    const pending = pendingEdits();
    $("error").hidden = true;
    if (!Object.keys(pending).length) {
      flashSaved("Nothing to save.");
      return;
    }
    saving = true;
    $("save").disabled = true;
    try {
      const {status, body} = await api("/api/bookings/" + base.id, {
        method: "PUT",
        headers: {"Content-Type": "application/json", "If-Match": `"${base.version}"`},
        body: JSON.stringify(requestBody(pending)),
      });
      if (status === 200) {
        saved(body, pending);
      } else if (status === 409 && body.current) {
        // Someone saved after our base (their event has not reached us yet): the same rebase
        // as for a live change, against the row the server sent along. Nothing is reloaded.
        const result = client.rebase(pending, base, client.difference(base, body.current));
        const changes = changedColumns(base, body.current);
        applyRebase(result, "Another user");
        bookings.set(body.current.id, body.current);
        renderList(body.current.id);
        if (changes.length) showToast("Another user", Date.now(), changes);
        if (!Object.keys(conflicts).length && !retried) {
          saving = false;
          await save(null, true);  // no clash: save the person's edits on the new version
          return;
        }
      } else {
        showError(body.error || `Saving failed (HTTP ${status}). Your changes are still here.`);
      }
    } finally {
      saving = false;
      renderConflicts();
    }
  }

  function saved(body, sent) {
    const previous = base;
    base = body;
    bookings.set(body.id, body);
    for (const column of EDITABLE) {
      // A field typed into while the save was on its way keeps what was typed.
      const typedSince = Object.hasOwn(sent, column)
        ? formValue(column) !== sent[column]
        : formValue(column) !== asInput(column, previous[column]);
      if (!typedSince) $(column).value = asInput(column, body[column]);
    }
    renderFacts();
    renderList(body.id);
    renderToast();
    flashSaved("Saved.");
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    hideSaved();
  }

  function hideSaved() {
    clearTimeout(flashSaved.timer);
    $("saved").hidden = true;
  }

  function flashSaved(message) {
    const note = $("saved");
    note.textContent = message;
    note.hidden = false;
    clearTimeout(flashSaved.timer);
    flashSaved.timer = setTimeout(() => { note.hidden = true; }, 2000);
  }

  // -- live changes -----------------------------------------------------------------------------

  function onChange(event) {
    if (event.table !== "bookings") {
      // A guest's or room's name changed: the list shows those, refetch it once things settle.
      clearTimeout(listRefresh);
      listRefresh = setTimeout(loadList, 300);
      return;
    }
    if (event.action === "DELETE") {
      bookings.delete(event.id);
      renderList();
    } else if (event.action === "TRUNCATE") {
      loadList();
    } else {
      refreshRow(event.id);
    }
    if (!base || event.id !== base.id) return;
    if (event.action === "DELETE") {
      showError(`${event.actor || "Someone"} deleted this booking. Your changes cannot be saved.`);
      return;
    }
    const version = event.diff && event.diff.version;
    if (version && Number(version[1]) <= Number(base.version)) return;  // already have it
    const ownSave = saving && event.actor === user;
    const result = client.rebase(pendingEdits(), base, event);
    if (result.refetch) {
      refetchOpen(event.actor || "Someone");
      return;
    }
    const changes = (event.changed || []).filter((column) => column in LABELS)
      .map((column) => [column, event.diff[column][0], event.diff[column][1]]);
    applyRebase(result, event.actor || "Someone");
    if (!ownSave && changes.length) {
      showToast(event.actor || "Someone", Date.parse(event.timestamp) || Date.now(), changes);
    }
  }

  // The event did not carry the values (too large, excluded columns), or events were missed.
  async function refetchOpen(actor) {
    if (!base) return;
    const {ok, body} = await api("/api/bookings/" + base.id);
    if (!ok) return;
    const changes = changedColumns(base, body);
    applyRebase(client.rebase(pendingEdits(), base, client.difference(base, body)), actor);
    base = body;
    renderFacts();
    if (changes.length) showToast(actor, Date.now(), changes);
  }

  function onReset() {
    loadList();
    refetchOpen("Another user");
  }

  function changedColumns(before, after) {
    return Object.keys(LABELS)
      .filter((column) => asInput(column, before[column]) !== asInput(column, after[column]))
      .map((column) => [column, before[column], after[column]]);
  }

  // -- the notice: floats over the page, never moves the form -----------------------------------

  function showToast(actor, at, changes) {
    const merged = toast && toast.actor === actor ? toast.changes : new Map();
    for (const [column, before, after] of changes) {
      const values = merged.get(column);
      // Every value the field went through, in order; a field that changed since (by anyone
      // else) starts again from its value before this change.
      if (values && asInput(column, values[values.length - 1]) === asInput(column, before)) {
        values.push(after);
      } else {
        merged.set(column, [before, after]);
      }
      // The newest change goes to the top of the list.
      const latest = merged.get(column);
      merged.delete(column);
      merged.set(column, latest);
    }
    toast = {actor, at, changes: merged};
    renderToast();
  }

  // The notice only tells what is true now: a field whose value has changed since the other
  // person set it (the person saved their own value, a third person changed it) leaves it.
  function pruneToast() {
    if (!toast || !base) return;
    for (const [column, values] of toast.changes) {
      if (asInput(column, values[values.length - 1]) !== asInput(column, base[column])) {
        toast.changes.delete(column);
      }
    }
  }

  function renderToast() {
    pruneToast();
    if (!toast || toast.changes.size === 0) {
      hideToast();
      return;
    }
    $("toast-text").textContent = `${toast.actor} updated this booking · ${ago(toast.at)}`;
    const newestFirst = [...toast.changes].reverse();
    const items = newestFirst.slice(0, TOAST_FIELDS).map(([column, values]) => {
      const item = document.createElement("li");
      item.dataset.column = column;
      const labels = values.map((value) => shown(column, value));
      const path = labels.length > TOAST_VALUES
        ? [labels[0], "…", ...labels.slice(2 - TOAST_VALUES)] : labels;
      const what = column === "guest_id" || column === "room_id"
        ? `${LABELS[column]} changed`
        : `${LABELS[column]}: ${path.join(" → ")}`;
      const kept = Object.hasOwn(conflicts, column) ? " (you have your own edit here)" : "";
      item.textContent = what + kept;
      return item;
    });
    const more = newestFirst.length - TOAST_FIELDS;
    if (more > 0) {
      const item = document.createElement("li");
      item.className = "more";
      item.textContent = `and ${more} more field${more === 1 ? "" : "s"}`;
      items.push(item);
    }
    $("toast-changes").replaceChildren(...items);
    $("toast").hidden = false;
  }

  function hideToast() {
    toast = null;
    $("toast").hidden = true;
  }

  function viewChanges() {
    if (!toast) return;
    const columns = [...toast.changes.keys()].filter((column) => EDITABLE.includes(column));
    for (const column of columns) highlight(column);
    const first = document.querySelector(`.field[data-field="${columns[0]}"]`);
    first?.scrollIntoView({block: "center", behavior: "smooth"});
  }

  // -- presence: one badge per other person, however many tabs they have open --------------------

  let viewersShown = [];

  function onPresence({entity, viewers}) {
    if (!base || entity !== "bookings:" + base.id) return;
    renderPresence(viewers);
  }

  function renderPresence(viewers) {
    const others = [...new Set(viewers)].filter((name) => name !== user)
      .sort((a, b) => a.localeCompare(b));
    if (others.join("\n") === viewersShown.join("\n")) return;
    viewersShown = others;
    const badges = others.map((name) => {
      const badge = document.createElement("li");
      badge.dataset.viewer = name;
      badge.title = `${name} is viewing this booking`;
      const initial = document.createElement("span");
      initial.className = "avatar";
      initial.textContent = [...name][0] || "?";
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      badge.append(initial, label);
      return badge;
    });
    const list = $("presence");
    list.replaceChildren(...badges);
    list.hidden = badges.length === 0;
    if (badges.length) {
      const note = document.createElement("li");
      note.className = "viewing-note";
      note.textContent = "also viewing";
      list.appendChild(note);
    }
  }

  // -- formatting: English, euros, the browser's date format --------------------------------------

  function money(value) {
    if (value === null || value === undefined || value === "") return "";
    // A decimal string is formatted as written (Intl takes it exactly); a number as a number.
    return MONEY.format(typeof value === "string" && /^-?\d+(\.\d+)?$/.test(value) ? value
                                                                                 : Number(value));
  }

  function date(value) {
    if (!value) return "";
    const parsed = new Date(value + "T00:00:00Z");
    return Number.isNaN(parsed.getTime()) ? String(value) : DATE.format(parsed);
  }

  function shown(column, value) {
    if (value === null || value === undefined || value === "") return "(empty)";
    if (column === "gesamtpreis") return money(value);
    if (column === "anreise" || column === "abreise") return date(value);
    if (column === "status") return STATUS[value] || String(value);
    if (column === "bemerkungen") return `“${String(value)}”`;
    return String(value);
  }

  function ago(timestamp) {
    const seconds = Math.max(0, Math.round((Date.now() - timestamp) / 1000));
    if (seconds < 10) return "just now";
    if (seconds < 60) return `${seconds} seconds ago`;
    const minutes = Math.round(seconds / 60);
    return `${minutes} minute${minutes === 1 ? "" : "s"} ago`;
  }

  function withParam(name, value) {
    const query = new URLSearchParams(location.search);
    query.set(name, value);
    if (!query.get("user")) query.set("user", user);
    return query.toString();
  }

  // -- start ------------------------------------------------------------------------------------

  $("user-name").textContent = user;
  $("booking-form").addEventListener("submit", (submit) => save(submit));
  $("booking-form").addEventListener("input", (input) => {
    const column = input.target.name;
    if (Object.hasOwn(conflicts, column)) renderConflicts();  // "you have …" follows the typing
    else updatePendingNote();
  });
  $("toast-view").addEventListener("click", viewChanges);
  $("toast-dismiss").addEventListener("click", hideToast);
  setInterval(renderToast, 5000);

  await loadList();
  const wanted = Number(params.get("booking"));
  if (wanted && bookings.has(wanted)) await openBooking(wanted);
  else openStream();
})();
