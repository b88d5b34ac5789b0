/**
 * The pg-feed page: shows the rows pg-feed.js keeps in step with the table, sends
 * what the user writes as "event", and shows the connection and feed status.
 * Row text is only ever set with textContent. Exposes window.pgFeed = { feed, socket }.
 */
(function () {
  "use strict";

  // The tab holds at most MAX_ROWS rows, the highest ids, so a tab left open costs
  // bounded memory. Rows the user asks for with "Load older" are kept: each load
  // raises the cap to the rows then held (pg-feed.js, maxRows), until a TRUNCATE
  // or a reload.
  const MAX_ROWS = 500;

  const feedSection = document.getElementById("feed");
  const statusEl = document.getElementById("status");
  const feedReasonEl = document.getElementById("feed-reason");
  const reconnectButton = document.getElementById("reconnect");
  const form = document.getElementById("send-form");
  const input = document.getElementById("event-input");
  const sendButton = document.getElementById("send");
  const generateButton = document.getElementById("generate");
  const sendError = document.getElementById("send-error");
  const list = document.getElementById("events");
  const emptyMessage = document.getElementById("events-empty");
  const summaryEl = document.getElementById("events-summary");
  const loadOlderButton = document.getElementById("load-older");

  const historyLimit = readPositiveInt(feedSection.dataset.historyLimit, 100);
  const syncMaxLimit = readPositiveInt(feedSection.dataset.syncMaxLimit, 1000);
  // id -> {item, row}: the list element of each row shown, and the row it shows.
  const shown = new Map();
  // everSynced: the first rows have arrived; gaveUp: no automatic reconnect left;
  // loadingOlder: a "Load older" in flight.
  const view = { everConnected: false, everSynced: false, gaveUp: false, loadingOlder: false };

  function readPositiveInt(value, fallback) {
    const number = Number.parseInt(value, 10);
    return Number.isInteger(number) && number > 0 ? number : fallback;
  }

  const timeFormats = {
    sameDay: new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit", second: "2-digit" }),
    sameYear: new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" }),
    other: new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", hour: "numeric", minute: "2-digit" }),
  };

  /** Parses an ISO timestamp, trimming microseconds to the milliseconds Date accepts. */
  function parseTimestamp(iso) {
    if (typeof iso !== "string") return null;
    const date = new Date(iso.replace(/(\.\d{3})\d+/, "$1"));
    return Number.isNaN(date.getTime()) ? null : date;
  }

  /** Short local rendering: time of day for today, else date and minutes. */
  function formatShortTime(date) {
    const now = new Date();
    if (date.toDateString() === now.toDateString()) return timeFormats.sameDay.format(date);
    if (date.getFullYear() === now.getFullYear()) return timeFormats.sameYear.format(date);
    return timeFormats.other.format(date);
  }

  function createRowElement(id) {
    const item = document.createElement("li");
    item.className = "event";
    item.dataset.id = String(id);
    const idEl = document.createElement("span");
    idEl.className = "event-id";
    idEl.textContent = String(id);
    const textEl = document.createElement("span");
    textEl.className = "event-text";
    const timeEl = document.createElement("time");
    timeEl.className = "event-time";
    item.append(idEl, textEl, timeEl);
    return item;
  }

  function fillRowElement(item, row) {
    item.querySelector(".event-text").textContent = row.event == null ? "" : String(row.event);
    const timeEl = item.querySelector("time");
    const date = parseTimestamp(row.created_at);
    if (date) {
      timeEl.dateTime = row.created_at;
      timeEl.title = row.created_at;
      timeEl.textContent = formatShortTime(date);
    }
  }

  /** Restarts the brief highlight on a row (CSS decides whether it animates). */
  function flashRow(item) {
    if (item.classList.contains("event-new")) {
      item.classList.remove("event-new");
      void item.offsetWidth;
    }
    item.classList.add("event-new");
  }

  /** Inserts a row element keeping the list ordered by id, highest first. */
  function insertInOrder(item, id) {
    const first = list.firstElementChild;
    const last = list.lastElementChild;
    if (!first || id > Number(first.dataset.id)) return list.prepend(item);
    if (id < Number(last.dataset.id)) return list.append(item);
    for (const other of list.children) {
      if (Number(other.dataset.id) < id) return list.insertBefore(item, other);
    }
    list.append(item);
  }

  function showRow(row, flash) {
    let entry = shown.get(row.id);
    if (entry && entry.row === row) return;
    if (!entry) {
      entry = { item: createRowElement(row.id) };
      shown.set(row.id, entry);
      insertInOrder(entry.item, row.id);
    }
    entry.row = row;
    fillRowElement(entry.item, row);
    if (flash) flashRow(entry.item);
  }

  /** Makes the list show what the feed holds; changes that arrived live flash. */
  function renderRows(source) {
    const held = feed.rows();
    const heldIds = new Set(held.map((row) => row.id));
    for (const [id, entry] of shown) {
      if (!heldIds.has(id)) {
        entry.item.remove();
        shown.delete(id);
      }
    }
    const flash = source === "live" || source === "resume";
    for (const row of held) showRow(row, flash);
    renderListState();
  }

  function renderListState() {
    const count = shown.size;
    emptyMessage.hidden = count > 0;
    if (view.everSynced) emptyMessage.textContent = "No events yet. Send one, or INSERT into the events table.";
    summaryEl.textContent = summarize(count);
    renderLoadOlder();
  }

  /** The heading: how many rows are shown and whether older ones exist (the page knows no total). */
  function summarize(count) {
    const events = count === 1 ? "event" : "events";
    if (!view.everSynced) return "Events";
    if (feed.more) return `Latest ${count} ${events}, older ones not loaded`;
    return count > 0 ? `All ${count} ${events}` : "Events";
  }

  function renderLoadOlder() {
    loadOlderButton.hidden = !(view.everSynced && feed.more);
    loadOlderButton.disabled = view.loadingOlder || !feed.socket.connected;
  }

  /** "Load older": the next page of history below the rows shown. */
  async function loadOlder() {
    if (view.loadingOlder || !feed.socket.connected) return;
    view.loadingOlder = true;
    renderLoadOlder();
    try {
      await feed.loadOlder();
    } finally {
      view.loadingOlder = false;
      renderListState();
    }
  }

  function showSendError(message) {
    sendError.textContent = message;
  }

  function describeSendFailure(error) {
    if (/timed out/i.test(error.message)) {
      return "No answer from the server in time; the event may or may not have been saved.";
    }
    if (/disconnected/i.test(error.message)) {
      return "Connection lost before the server answered; the event may or may not have been saved.";
    }
    return "Could not send: " + error.message;
  }

  /** Sends one event; resolves true when the server stored it. */
  async function sendEvent(text) {
    let answer;
    try {
      answer = await feed.send(text);
    } catch (error) {
      showSendError(describeSendFailure(error));
      return false;
    }
    if (answer && answer.ok === true) {
      showSendError("");
      return true;
    }
    showSendError((answer && answer.error) || "The server refused the event.");
    return false;
  }

  async function handleSubmit(submitEvent) {
    submitEvent.preventDefault();
    if (!canSend()) return;
    const text = input.value;
    if (await sendEvent(text) && input.value === text) input.value = "";
  }

  function handleGenerate() {
    if (canSend()) sendEvent("user event " + new Date().toLocaleString());
  }

  function currentState() {
    if (!navigator.onLine) return "offline";
    const feedState = feed.status.feed;
    if (feed.socket.connected) return feedState === "live" ? "connected" : "feed-" + feedState;
    return view.gaveUp ? "offline" : "reconnecting";
  }

  function statusLabel(state) {
    if (state === "reconnecting") return view.everConnected ? "reconnecting…" : "connecting…";
    if (state === "feed-offline") return "feed offline";
    if (state === "feed-stalled") return "feed stalled";
    return state;
  }

  const STATUS_TITLES = {
    "feed-offline": "Connected, but the server has lost its database feed: new changes show once it is back.",
    "feed-stalled": "Connected, but changes are not reaching the server's feed: new changes show once it delivers again.",
  };

  /** With the feed offline or stalled the server still answers, so sending stays possible. */
  function canSend() {
    const state = currentState();
    return state === "connected" || state === "feed-offline" || state === "feed-stalled";
  }

  function renderStatus() {
    const state = currentState();
    statusEl.dataset.state = state;
    statusEl.textContent = statusLabel(state);
    statusEl.title = STATUS_TITLES[state] || "";
    const reason = state in STATUS_TITLES ? feed.status.reason : "";
    feedReasonEl.textContent = reason ? statusLabel(state) + ": " + reason : "";
    feedReasonEl.hidden = !reason;
    reconnectButton.hidden = !(state === "offline" && view.gaveUp && navigator.onLine);
    sendButton.disabled = !canSend();
    generateButton.disabled = !canSend();
    renderLoadOlder();
  }

  /** socket.active is false once the server refused or closed us: no automatic retry. */
  function handleStatus() {
    if (feed.socket.connected) view.everConnected = true;
    view.gaveUp = !feed.socket.active;
    renderStatus();
  }

  /** A refusal from the server (a token, a connection cap) says why: show it. */
  function handleError(error) {
    if (error.source !== "connect") return console.warn("pg-feed:", error.message);
    if (!error.retrying) showSendError("Not connected: " + error.message);
    handleStatus();
  }

  function reconnectNow() {
    view.gaveUp = false;
    feed.socket.connect();
    renderStatus();
  }

  function handleBrowserOnline() {
    if (!feed.socket.connected && !feed.socket.active) reconnectNow();
    renderStatus();
  }

  if (typeof window.io !== "function" || typeof window.PgFeed !== "object") {
    statusEl.dataset.state = "offline";
    statusEl.textContent = "offline";
    emptyMessage.textContent = "The Socket.IO client failed to load.";
    return;
  }

  // A token (FEED_READ_TOKEN / FEED_WRITE_TOKEN) comes in the URL's fragment,
  // #token=..., which is never sent to the server in requests or referrers.
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  const feed = window.PgFeed.connect({
    token,
    window: Math.min(historyLimit, syncMaxLimit),
    maxRows: MAX_ROWS,
    pageLimit: syncMaxLimit,
  });
  window.pgFeed = Object.freeze({ feed, socket: feed.socket });

  feed.on("change", (applied, source) => {
    if (source === "start") view.everSynced = true;
    renderRows(source);
  });
  feed.on("synced", renderListState);
  feed.on("status", handleStatus);
  feed.on("error", handleError);
  feed.on("reset", (message) => console.info("pg-feed: starting over:", message));
  feed.socket.io.on("reconnect_attempt", renderStatus);
  feed.socket.io.on("reconnect_failed", () => {
    view.gaveUp = true;
    renderStatus();
  });

  form.addEventListener("submit", handleSubmit);
  generateButton.addEventListener("click", handleGenerate);
  reconnectButton.addEventListener("click", reconnectNow);
  loadOlderButton.addEventListener("click", loadOlder);
  window.addEventListener("online", handleBrowserOnline);
  window.addEventListener("offline", renderStatus);
  list.addEventListener("animationend", (event) => event.target.classList.remove("event-new"));

  renderStatus();
})();
