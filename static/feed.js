/**
 * The pg-feed page: connects to the Socket.IO namespace /events, keeps the list
 * of rows in step with the table (history, live "events", catch-up via "sync"),
 * sends what the user writes as "event", and shows the connection and feed status.
 * Row text is only ever set with textContent. Exposes window.pgFeed = { socket }.
 */
(function () {
  "use strict";

  // The tab holds at most MAX_ROWS rows, the highest ids, so a tab left open costs
  // bounded memory. Rows the user asks for with "Load older" are kept: each load
  // raises the cap to the rows then held, and only live rows (or a catch-up) beyond
  // that cap push the oldest out. A TRUNCATE or a reload returns the cap to MAX_ROWS.
  const MAX_ROWS = 500;
  const ACK_TIMEOUT_MS = 10000;
  const SYNC_RETRY_MS = 3000;
  // Serial ids follow INSERT order, not COMMIT order, so catch-up re-reads this many
  // ids below the highest one held to find rows that committed late: the client
  // protocol in README.md, "Catching up".
  const LOOKBACK_IDS = 1000;

  const feed = document.getElementById("feed");
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

  const historyLimit = readPositiveInt(feed.dataset.historyLimit, 100);
  const syncPageLimit = Math.min(LOOKBACK_IDS, readPositiveInt(feed.dataset.syncMaxLimit, LOOKBACK_IDS));
  const rowElements = new Map();
  // more: rows older than the lowest one held exist (the server said so, or the cap
  // dropped some); cap: the rows this tab holds at most (see MAX_ROWS);
  // pending: the "Load older" request in flight, if any.
  const older = { more: false, cap: MAX_ROWS, pending: null };

  const sync = {
    hasSynced: false,
    highestId: null,
    running: false,
    again: false,
    // Lowest "highest id held" noted at a reconnect or resync not yet caught up:
    // rows that arrive live after a resync are past the gap and must not move it.
    from: null,
    current: null,
    retryTimer: null,
  };
  // feed: what the server says of its feed: "live", "offline" (its LISTEN connection
  // to PostgreSQL is down) or "stalled" (LISTEN is in place but its own probes do
  // not come back, so rows do not arrive); feedReason: its sentence why, if any.
  // statusSeen: a "status" message arrived on this connection (newer than sync answers).
  const FEED_STATES = ["live", "offline", "stalled"];
  const connection = { everConnected: false, gaveUp: false, feed: "live", feedReason: "", statusSeen: false };

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

  function upsertRow(row, flash) {
    let item = rowElements.get(row.id);
    if (!item) {
      item = createRowElement(row.id);
      rowElements.set(row.id, item);
      insertInOrder(item, row.id);
    }
    fillRowElement(item, row);
    if (flash) flashRow(item);
    noteHighestId(row.id);
  }

  function removeRow(id) {
    const item = rowElements.get(id);
    if (!item) return;
    item.remove();
    rowElements.delete(id);
  }

  function clearRows() {
    list.replaceChildren();
    rowElements.clear();
    sync.highestId = null;
    older.more = false;
    older.cap = MAX_ROWS;
    if (older.pending) older.pending.truncated = true;
  }

  function dropOldestBeyondCap() {
    while (rowElements.size > older.cap) {
      removeRow(Number(list.lastElementChild.dataset.id));
      older.more = true;
    }
  }

  function noteHighestId(id) {
    if (sync.highestId === null || id > sync.highestId) sync.highestId = id;
  }

  function renderListState() {
    const count = rowElements.size;
    emptyMessage.hidden = count > 0;
    if (sync.hasSynced) emptyMessage.textContent = "No events yet. Send one, or INSERT into the events table.";
    summaryEl.textContent = summarize(count);
    renderLoadOlder();
  }

  /** The heading: how many rows are shown and whether older ones exist (the page knows no total). */
  function summarize(count) {
    const events = count === 1 ? "event" : "events";
    if (!sync.hasSynced) return "Events";
    if (older.more) return `Latest ${count} ${events}, older ones not loaded`;
    return count > 0 ? `All ${count} ${events}` : "Events";
  }

  function renderLoadOlder() {
    loadOlderButton.hidden = !(sync.hasSynced && older.more);
    loadOlderButton.disabled = older.pending !== null || !socket.connected;
  }

  function hasId(row) {
    return row && Number.isInteger(row.id);
  }

  /** Applies one live change; tells any catch-up in flight what it must not undo. */
  function applyChange(row) {
    if (!row || typeof row !== "object") return;
    const run = sync.current;
    if (row.op === "TRUNCATE") {
      clearRows();
      if (run) run.truncated = true;
    } else if (row.op === "DELETE" && hasId(row)) {
      removeRow(row.id);
      if (older.pending) older.pending.deletedIds.add(row.id);
      if (run) {
        run.deletedIds.add(row.id);
        run.liveRows.delete(row.id);
      }
    } else if ((row.op === "INSERT" || row.op === "UPDATE") && hasId(row)) {
      upsertRow(row, true);
      if (run) run.liveRows.set(row.id, row);
    }
  }

  function handleLiveEvents(payload) {
    const rows = Array.isArray(payload) ? payload : [payload];
    rows.forEach(applyChange);
    dropOldestBeyondCap();
    renderListState();
  }

  async function requestSync(request) {
    const answer = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("sync", request);
    noteFeedFromSync(answer);
    if (!answer || answer.ok !== true || !Array.isArray(answer.events)) {
      throw new Error((answer && answer.error) || "unexpected sync answer");
    }
    return answer;
  }

  /** Sync answers say whether the feed is live; a "status" message, being newer, wins. */
  function noteFeedFromSync(answer) {
    if (connection.statusSeen || !answer) return;
    const databaseDown = answer.ok === false && /database is unavailable/.test(answer.error || "");
    if (databaseDown) {
      noteFeed("offline", answer.error);
    } else if (FEED_STATES.includes(answer.feed)) {
      noteFeed(answer.feed, answer.reason);
    }
  }

  function noteFeed(feedState, reason) {
    connection.feed = feedState;
    connection.feedReason = feedState !== "live" && typeof reason === "string" ? reason : "";
    renderStatus();
  }

  function highestIdIn(rows, fallback) {
    return rows.reduce((highest, row) => (hasId(row) && row.id > highest ? row.id : highest), fallback);
  }

  /** The latest page for a fresh page; live rows that came first are newer, so they stay. */
  async function syncLatestPage(run) {
    const answer = await requestSync({ after: null, limit: Math.min(historyLimit, syncPageLimit) });
    if (run.truncated) return false;
    sync.hasSynced = true;
    older.more = answer.more === true;
    for (const row of answer.events) {
      if (hasId(row) && !run.deletedIds.has(row.id) && !run.liveRows.has(row.id)) upsertRow(row, false);
    }
    return true;
  }

  /** The highest id on the page, else the highest seen since the last TRUNCATE, else 0. */
  function highestIdHeld() {
    const first = list.firstElementChild;
    return first ? Number(first.dataset.id) : sync.highestId ?? 0;
  }

  /**
   * Keeps the older.cap highest ids (the map is in ascending order): the page shows
   * no more than that, so a long absence costs bounded memory. Dropping any means
   * older rows exist.
   */
  function keepHighest(tableRows) {
    for (const id of tableRows.keys()) {
      if (tableRows.size <= older.cap) return;
      tableRows.delete(id);
      older.more = true;
    }
  }

  /** The table's rows with id > base, page after page; null when a TRUNCATE cut in. */
  async function readTableAbove(run, base) {
    const tableRows = new Map();
    let after = base;
    for (;;) {
      const answer = await requestSync({ after, limit: syncPageLimit });
      if (run.truncated) return null;
      for (const row of answer.events) if (hasId(row)) tableRows.set(row.id, row);
      keepHighest(tableRows);
      const next = highestIdIn(answer.events, after);
      if (!answer.more || next <= after) return tableRows;
      after = next;
    }
  }

  function differsFromShown(item, row) {
    const shownText = item.querySelector(".event-text").textContent;
    const shownTime = item.querySelector("time").dateTime;
    return shownText !== (row.event == null ? "" : String(row.event)) || shownTime !== (row.created_at || "");
  }

  /**
   * Makes the rows above base match the table: drops the missing, refreshes the
   * changed, adds the new. What arrived live during the read is newer than the
   * answers, so live rows win and live deletes stay deleted.
   */
  function reconcileAbove(base, tableRows, run) {
    for (const [id, row] of run.liveRows) if (id > base) tableRows.set(id, row);
    for (const id of run.deletedIds) tableRows.delete(id);
    for (const id of [...rowElements.keys()]) {
      if (id > base && !tableRows.has(id)) removeRow(id);
    }
    for (const row of tableRows.values()) {
      const item = rowElements.get(row.id);
      if (!item || differsFromShown(item, row)) upsertRow(row, true);
    }
  }

  /** Catch-up after a reconnect or a resync: re-reads LOOKBACK_IDS below the highest id held. */
  async function syncLookback(run) {
    const from = sync.from ?? highestIdHeld();
    sync.from = null;
    const base = Math.max(0, from - LOOKBACK_IDS);
    const tableRows = await readTableAbove(run, base);
    if (tableRows === null) return false;
    reconcileAbove(base, tableRows, run);
    return true;
  }

  /** One catch-up pass: history for a fresh page, else the lookback window. */
  async function syncOnce() {
    const run = { truncated: false, deletedIds: new Set(), liveRows: new Map() };
    sync.current = run;
    const from = sync.from;
    let complete = false;
    try {
      complete = sync.hasSynced ? await syncLookback(run) : await syncLatestPage(run);
      if (!complete) sync.again = true;
    } finally {
      if (!complete) notePosition(from); // a failed pass keeps where the gap starts
      sync.current = null;
      dropOldestBeyondCap();
      renderListState();
    }
  }

  /** "Load older": where the page's rows end, the next page of history below it. */
  async function loadOlder() {
    if (older.pending || !socket.connected) return;
    const first = list.lastElementChild;
    const before = first ? Number(first.dataset.id) : (sync.highestId ?? 0) + 1;
    const pending = { truncated: false, deletedIds: new Set() };
    older.pending = pending;
    renderLoadOlder();
    try {
      const answer = await requestSync({ before, limit: Math.min(historyLimit, syncPageLimit) });
      if (!pending.truncated) addOlderRows(answer, pending);
    } catch (error) {
      console.warn("pg-feed: loading older events failed:", error.message);
    } finally {
      older.pending = null;
      renderListState();
    }
  }

  /** Adds the rows the user asked for and raises the cap so that it keeps them. */
  function addOlderRows(answer, pending) {
    for (const row of answer.events) {
      if (hasId(row) && !pending.deletedIds.has(row.id) && !rowElements.has(row.id)) upsertRow(row, false);
    }
    older.more = answer.more === true;
    older.cap = Math.max(older.cap, rowElements.size);
  }

  function scheduleSyncRetry() {
    clearTimeout(sync.retryTimer);
    sync.retryTimer = setTimeout(() => {
      if (socket.connected) catchUp();
    }, SYNC_RETRY_MS);
  }

  /** Remembers where a gap starts: the lowest position asked for wins. */
  function notePosition(position) {
    if (position === null || position === undefined) return;
    sync.from = sync.from === null ? position : Math.min(sync.from, position);
  }

  /** A reconnect or resync: catch up from the highest id held right now. */
  function requestCatchUp() {
    if (sync.hasSynced) notePosition(highestIdHeld());
    catchUp();
  }

  /** Runs catch-up, coalescing requests that arrive while one is running. */
  async function catchUp() {
    if (sync.running) {
      sync.again = true;
      return;
    }
    sync.running = true;
    clearTimeout(sync.retryTimer);
    try {
      do {
        sync.again = false;
        try {
          await syncOnce();
        } catch (error) {
          console.warn("pg-feed: sync failed:", error.message);
          if (socket.connected) scheduleSyncRetry();
          return;
        }
      } while (sync.again && socket.connected);
    } finally {
      sync.running = false;
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
      answer = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("event", text);
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
    if (socket.connected) return connection.feed === "live" ? "connected" : "feed-" + connection.feed;
    return connection.gaveUp ? "offline" : "reconnecting";
  }

  function statusLabel(state) {
    if (state === "reconnecting") return connection.everConnected ? "reconnecting…" : "connecting…";
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
    const reason = state in STATUS_TITLES ? connection.feedReason : "";
    feedReasonEl.textContent = reason ? statusLabel(state) + ": " + reason : "";
    feedReasonEl.hidden = !reason;
    reconnectButton.hidden = !(state === "offline" && connection.gaveUp && navigator.onLine);
    sendButton.disabled = !canSend();
    generateButton.disabled = !canSend();
    renderLoadOlder();
  }

  function handleConnect() {
    connection.everConnected = true;
    connection.gaveUp = false;
    renderStatus();
    requestCatchUp();
  }

  /** A refusal from the server (a token, a connection cap) says why: show it. */
  function handleConnectError(error) {
    if (!socket.active && error && error.message) showSendError("Not connected: " + error.message);
    handleDisconnectOrError();
  }

  /** socket.active is false when the server refused or closed us: no automatic retry. */
  function handleDisconnectOrError() {
    connection.gaveUp = !socket.active;
    connection.feed = "live";
    connection.feedReason = "";
    connection.statusSeen = false;
    renderStatus();
  }

  /** "status" {feed: "live" | "offline" | "stalled", reason}: the server's feed changed. */
  function handleFeedStatus(data) {
    if (!data || !FEED_STATES.includes(data.feed)) return;
    connection.statusSeen = true;
    noteFeed(data.feed, data.reason);
  }

  function reconnectNow() {
    connection.gaveUp = false;
    socket.connect();
    renderStatus();
  }

  function handleBrowserOnline() {
    if (!socket.connected && !socket.active) reconnectNow();
    renderStatus();
  }

  if (typeof window.io !== "function") {
    statusEl.dataset.state = "offline";
    statusEl.textContent = "offline";
    emptyMessage.textContent = "The Socket.IO client failed to load.";
    return;
  }

  // A token (FEED_READ_TOKEN / FEED_WRITE_TOKEN) comes in the URL's fragment,
  // #token=..., which is never sent to the server in requests or referrers.
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  const socket = window.io("/events", token ? { auth: { token } } : {});
  window.pgFeed = Object.freeze({ socket });

  socket.on("connect", handleConnect);
  socket.on("disconnect", handleDisconnectOrError);
  socket.on("connect_error", handleConnectError);
  socket.on("events", handleLiveEvents);
  socket.on("resync", requestCatchUp);
  socket.on("status", handleFeedStatus);
  socket.io.on("reconnect_attempt", renderStatus);
  socket.io.on("reconnect_failed", () => {
    connection.gaveUp = true;
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
