// The seed's frontend, played by a plain page: a booking list, an editor with optimistic
// locking, live toasts when someone else changes the open booking, and presence badges.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const user = (params.get("user") || sessionStorage.getItem("bookwatch-user") ||
              prompt("Your name (shown to others editing the same booking):") || "Guest").trim();
sessionStorage.setItem("bookwatch-user", user);

const EDITABLE = ["anreise", "abreise", "anzahl_gaeste", "gesamtpreis", "status", "bemerkungen"];
const LABELS = {
  anreise: "Arrival", abreise: "Departure", anzahl_gaeste: "Guests", gesamtpreis: "Total price",
  status: "Status", bemerkungen: "Notes", guest_id: "Guest", room_id: "Room",
  version: "Version", updated_at: "Last change",
};

const $ = (id) => document.getElementById(id);
const bookings = new Map();   // id -> booking as the API returns it
let current = null;           // the booking open in the editor, as last loaded or saved
let saving = false;
let lastEventId = null;       // resume point when the stream is reopened for another booking
let events = null;            // the EventSource
let toast = null;             // {actor, timestamp, diff} of changes not yet reloaded
let listRefresh = null;

// -- talking to the server ----------------------------------------------------------------

async function api(path, options = {}) {
  const headers = {"X-Bookwatch-User": user, ...(options.headers || {})};
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, {...options, headers});
  const body = await response.json().catch(() => ({}));
  return {status: response.status, ok: response.ok, body, headers: response.headers};
}

function streamUrl() {
  const query = new URLSearchParams();
  if (current) {
    query.set("viewer", user);
    query.set("viewing", "bookings:" + current.id);
  }
  if (lastEventId) query.set("last_event_id", lastEventId);
  if (token) query.set("token", token);
  return "/events?" + query;
}

function connect() {
  if (events) events.close();
  events = new EventSource(streamUrl());
  events.onopen = () => setConnection(true);
  events.onerror = () => setConnection(false);
  events.addEventListener("change", (message) => {
    lastEventId = message.lastEventId || lastEventId;
    onChange(JSON.parse(message.data));
  });
  events.addEventListener("presence", (message) => onPresence(JSON.parse(message.data)));
  events.addEventListener("reset", (message) => {
    // The server could not give us every change since lastEventId: refetch what we show.
    lastEventId = message.lastEventId || null;
    loadList();
    if (current && !isDirty()) openBooking(current.id, {reconnect: false});
  });
}

function setConnection(live) {
  const badge = $("connection");
  badge.textContent = live ? "live" : "reconnecting…";
  badge.className = "connection " + (live ? "live" : "offline");
}

// -- the list -------------------------------------------------------------------------------

async function loadList() {
  const {ok, body, headers} = await api("/api/bookings");
  if (!ok) return;
  // The newest change the list already shows: the stream resumes right after it, no gap.
  if (!lastEventId) lastEventId = headers.get("X-Bookwatch-Seq");
  bookings.clear();
  for (const booking of body) bookings.set(booking.id, booking);
  renderList();
}

function renderList(flashId) {
  const rows = [...bookings.values()].sort((a, b) => a.id - b.id).map((booking) => {
    const row = document.createElement("tr");
    row.dataset.id = booking.id;
    if (current && current.id === booking.id) row.classList.add("selected");
    if (booking.id === flashId) row.classList.add("flash");
    const cells = [booking.id, booking.reservierungsnummer, booking.gast, booking.zimmer,
                   booking.anreise, booking.abreise, money(booking.gesamtpreis), booking.status];
    cells.forEach((value, index) => {
      const cell = document.createElement("td");
      cell.textContent = value ?? "";
      if (index === 6) cell.className = "num";
      row.appendChild(cell);
    });
    row.addEventListener("click", () => openBooking(booking.id));
    return row;
  });
  $("bookings").tBodies[0].replaceChildren(...rows);
}

async function refreshRow(id) {
  const {ok, body} = await api("/api/bookings/" + id);
  if (ok) bookings.set(id, body);
  else bookings.delete(id);
  renderList(id);
}

// -- the editor -----------------------------------------------------------------------------

async function openBooking(id, {reconnect = true} = {}) {
  const {ok, body} = await api("/api/bookings/" + id);
  if (!ok) return;
  const switched = !current || current.id !== id;
  fill(body);
  hideToast();
  $("error").hidden = true;
  $("editor").hidden = false;
  renderList();
  if (switched) {
    $("presence").hidden = true;
    history.replaceState(null, "", "?" + withParam("booking", id));
    if (reconnect) connect();  // presence follows the open booking
  }
}

function fill(booking) {
  current = booking;
  bookings.set(booking.id, booking);
  $("editor-title").textContent = `#${booking.id} · ${booking.reservierungsnummer}`;
  $("gast").textContent = booking.gast;
  $("zimmer").textContent = `${booking.zimmer} (${booking.zimmertyp})`;
  $("version").textContent = booking.version;
  for (const field of EDITABLE) $(field).value = booking[field] ?? "";
}

function edited() {
  const values = {};
  for (const field of EDITABLE) {
    const value = $(field).value;
    values[field] = field === "anzahl_gaeste" ? Number(value) :
                    field === "bemerkungen" ? (value || null) : value;
  }
  return values;
}

function isDirty() {
  if (!current) return false;
  const values = edited();
  return EDITABLE.some((field) => String(values[field] ?? "") !== String(current[field] ?? ""));
}

async function save(submit) {
  submit.preventDefault();
  if (!current) return;
  $("error").hidden = true;
  saving = true;
  try {
    const {status, body} = await api("/api/bookings/" + current.id, {
      method: "PUT",
      headers: {"Content-Type": "application/json", "If-Match": `"${current.version}"`},
      body: JSON.stringify(edited()),
    });
    if (status === 200) {
      fill(body);
      hideToast();
      renderList(body.id);
      flashSaved();
    } else if (status === 409) {
      // The seed's optimistic-lock error: someone saved this booking after we loaded it.
      showError(body.error || "This booking was modified by another user.");
    } else {
      showError(body.error || `Saving failed (HTTP ${status}).`);
    }
  } finally {
    saving = false;
  }
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function flashSaved() {
  const note = $("saved");
  note.hidden = false;
  setTimeout(() => { note.hidden = true; }, 2000);
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
  } else {
    refreshRow(event.id);
  }
  if (!current || event.id !== current.id) return;
  if (isOwnSave(event)) return;
  if (event.action === "DELETE") {
    showError(`${event.actor} deleted this booking.`);
    return;
  }
  showToast(event);
}

function isOwnSave(event) {
  if (event.actor !== user) return false;
  const version = event.diff && event.diff.version;
  return saving || (version && Number(version[1]) <= Number(current.version));
}

function showToast(event) {
  const diff = {...(toast ? toast.diff : {})};
  for (const [field, [before, after]] of Object.entries(event.diff || {})) {
    diff[field] = [field in diff ? diff[field][0] : before, after];
  }
  toast = {actor: event.actor || "Someone", timestamp: Date.parse(event.timestamp), diff};
  renderToast();
  renderDiff();
  $("toast").hidden = false;
}

function renderToast() {
  if (!toast) return;
  $("toast-text").textContent = `${toast.actor} updated this booking (${ago(toast.timestamp)})`;
}

function renderDiff() {
  const rows = Object.entries(toast ? toast.diff : {})
    .filter(([field]) => field !== "updated_at")
    .map(([field, [before, after]]) => {
      const row = document.createElement("tr");
      for (const [text, cls] of [[LABELS[field] || field, ""], [shown(field, before), "old"],
                                 [shown(field, after), "new"]]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (cls) cell.className = cls;
        row.appendChild(cell);
      }
      return row;
    });
  $("diff").tBodies[0].replaceChildren(...rows);
}

function hideToast() {
  toast = null;
  $("toast").hidden = true;
  $("diff").hidden = true;
}

function onPresence({entity, viewers}) {
  if (!current || entity !== "bookings:" + current.id) return;
  const others = viewers.filter((name) => name !== user);
  const badge = $("presence");
  badge.hidden = others.length === 0;
  badge.textContent = others.length === 1 ? `${others[0]} is also viewing` :
    others.length === 2 ? `${others[0]} and ${others[1]} are also viewing` :
    `${others.slice(0, 2).join(", ")} and ${others.length - 2} others are also viewing`;
}

// -- formatting -------------------------------------------------------------------------------

function money(value) {
  return value == null ? "" : Number(value).toLocaleString("de-DE", {style: "currency",
                                                                     currency: "EUR"});
}

function shown(field, value) {
  if (value == null) return "—";
  return field === "gesamtpreis" ? money(value) : String(value);
}

function ago(timestamp) {
  const seconds = Math.max(0, Math.round((Date.now() - timestamp) / 1000));
  if (seconds < 60) return `${seconds} second${seconds === 1 ? "" : "s"} ago`;
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
$("booking-form").addEventListener("submit", save);
$("toast-view").addEventListener("click", () => { $("diff").hidden = !$("diff").hidden; });
$("toast-reload").addEventListener("click", () => current && openBooking(current.id));
$("toast-dismiss").addEventListener("click", hideToast);
setInterval(renderToast, 1000);

(async () => {
  await loadList();
  const wanted = Number(params.get("booking"));
  if (wanted && bookings.has(wanted)) await openBooking(wanted);
  else connect();
})();
