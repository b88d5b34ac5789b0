/**
 * pg-feed.js: a browser client for a pg-feed server. It keeps the rows of the
 * events table in step over Socket.IO (namespace /events) and resumes exactly,
 * by cursor, after every reconnect and every resync. Plain script, no build
 * step; load the Socket.IO client first (/static/vendor/socket.io/socket.io.min.js).
 *
 *   const feed = PgFeed.connect({
 *     url: "https://feed.example",  // the pg-feed server; "" (default): this page's
 *     token: "...",                 // FEED_READ_TOKEN or FEED_WRITE_TOKEN, if set
 *     window: 100,                  // rows read when starting over: the newest;
 *                                   //   0: the whole table, page by page
 *     maxRows: 500,                 // rows held at most, the highest ids (window
 *                                   //   0: Infinity); loadOlder() raises it
 *     pageLimit: 1000,              // rows per sync page (default: the server's)
 *     ackTimeout: 10000,            // ms to wait for an answer
 *   });
 *   feed.on("change", (applied, source) => ...)  rows changed: applied is the list
 *       of rows applied (op INSERT, UPDATE, DELETE or TRUNCATE); source "live",
 *       "resume" (catching up by cursor), "start" (starting over) or "older"
 *   feed.on("synced", () => ...)     caught up after a connect or a resync
 *   feed.on("status", ({connected, feed, reason}) => ...)  feed is the server's
 *       "live", "offline" or "stalled"; reason a sentence when not live
 *   feed.on("error", (error) => ...) error.message; error.source "connect", "sync"
 *       or "older"; error.retrying false when it will not try again by itself
 *       (the server refused the token, or this page's origin)
 *   feed.on("reset", (message) => ...)  the server could not use the cursor: the
 *       feed starts over
 *   feed.rows()       the rows held, ascending by id: {id, op, event, created_at, version}
 *   feed.more         older rows exist than those held (load them with loadOlder)
 *   feed.send(text)   Promise of the ack, {ok: true, id} or {ok: false, error}
 *   feed.loadOlder()  Promise of feed.more, once the next older page is held
 *   feed.cursor, feed.synced, feed.status, feed.socket (the Socket.IO socket)
 *   feed.close()
 *
 * Rows follow the wire contract's versions: per id the highest version wins, a
 * TRUNCATE removes every row with a lower version, and deletions leave a
 * tombstone so that an older copy of a row cannot come back. Rows below the
 * lowest id held are not taken from live changes or a catch-up while older rows
 * exist that are not held, so what is held is always every row from there up.
 */
(function () {
  "use strict";

  const FEED_STATES = ["live", "offline", "stalled"];
  const MAX_TOMBSTONES = 10000;
  const RETRY_MS = 3000;

  function connect(options = {}) {
    const io = options.io || window.io;
    if (typeof io !== "function") throw new Error("PgFeed needs the Socket.IO client: load it first");
    const base = (options.url || "").replace(/\/+$/, "");
    const windowSize = options.window ?? 100;
    const maxRows = options.maxRows ?? (windowSize ? 500 : Infinity);
    const ackTimeout = options.ackTimeout ?? 10000;
    const socket = io(base + "/events", options.token ? { auth: { token: options.token } } : {});

    const listeners = { change: [], synced: [], status: [], error: [], reset: [] };
    const rows = new Map();
    const tombstones = new Map();
    // floor: while older rows exist that are not held, the lowest id of the window
    // (0: every row is held from the bottom up); cap: rows held at most.
    const state = { truncatedAt: 0, cursor: null, synced: false, floor: 0, cap: maxRows };
    const run = { active: false, again: false, retryTimer: null };
    const status = { connected: false, feed: "live", reason: null };
    let statusSeen = false; // a "status" message on this connection: newer than answers
    let everConnected = false;
    let generation = 0; // counts start-overs and TRUNCATEs: a Load older from before is stale
    let olderPending = null;

    function emit(name, ...args) {
      for (const listener of listeners[name]) {
        try {
          listener(...args);
        } catch (error) {
          console.error(`pg-feed: a "${name}" listener failed:`, error);
        }
      }
    }

    function fail(message, source, retrying) {
      const error = new Error(message);
      error.source = source;
      error.retrying = retrying;
      emit("error", error);
    }

    /** Applies one change by the version rules; whether it changed what is held. */
    function apply(row) {
      if (!row || typeof row !== "object") return false;
      const version = row.version;
      if (row.op === "TRUNCATE") return truncate(version);
      if (version < state.truncatedAt || !Number.isInteger(row.id)) return false;
      const held = rows.get(row.id);
      if (tombstones.get(row.id) >= version || (held && held.version >= version)) return false;
      if (row.op === "DELETE") {
        rows.delete(row.id);
        tombstones.set(row.id, version);
        if (tombstones.size > MAX_TOMBSTONES) pruneTombstones();
        return true;
      }
      if (row.op !== "INSERT" && row.op !== "UPDATE") return false;
      if (!held && !inWindow(row.id)) return false;
      rows.set(row.id, row);
      return true;
    }

    function truncate(version) {
      if (version <= state.truncatedAt) return false;
      state.truncatedAt = version;
      for (const [id, row] of rows) if (row.version < version) rows.delete(id);
      for (const [id, deleted] of tombstones) if (deleted < version) tombstones.delete(id);
      state.floor = 0; // every row left is newer than the TRUNCATE and will reach us
      state.cap = maxRows;
      generation += 1;
      return true;
    }

    /** A Load older in flight takes rows below the floor: it sets the floor after. */
    function inWindow(id) {
      return state.floor === 0 || id >= state.floor || olderPending !== null;
    }

    /** Keeps the newest nine tenths, so that a mass DELETE prunes now and then. */
    function pruneTombstones() {
      const versions = [...tombstones.values()].sort((a, b) => a - b);
      const oldestKept = versions[versions.length - Math.floor(MAX_TOMBSTONES * 0.9)];
      for (const [id, version] of tombstones) if (version < oldestKept) tombstones.delete(id);
    }

    function dropBelow(floor) {
      state.floor = floor;
      for (const id of rows.keys()) if (id < floor) rows.delete(id);
    }

    /** Keeps the cap's highest ids; dropping any means older rows exist. */
    function keepCap() {
      if (olderPending !== null || rows.size <= state.cap) return;
      const ids = [...rows.keys()].sort((a, b) => a - b);
      dropBelow(ids[ids.length - state.cap]);
    }

    function applyAll(batch, source) {
      const applied = (Array.isArray(batch) ? batch : []).filter(apply);
      keepCap();
      if (applied.length || source === "start" || source === "older") emit("change", applied, source);
    }

    function noteStatus(changes) {
      const before = JSON.stringify(status);
      Object.assign(status, changes);
      if (JSON.stringify(status) !== before) emit("status", { ...status });
    }

    function noteFeed(feed, reason) {
      noteStatus({ feed, reason: feed !== "live" && typeof reason === "string" ? reason : null });
    }

    /** Answers say whether the feed is live, unless a newer "status" message did. */
    function noteAnswerFeed(answer) {
      if (statusSeen || !answer) return;
      if (answer.ok === false && /database is unavailable/.test(answer.error || "")) {
        noteFeed("offline", answer.error);
      } else if (FEED_STATES.includes(answer.feed)) {
        noteFeed(answer.feed, answer.reason);
      }
    }

    async function request(message, data) {
      if (!socket.connected) throw new Error("not connected");
      return socket.timeout(ackTimeout).emitWithAck(message, data);
    }

    async function sync(data) {
      const answer = await request("sync", data);
      noteAnswerFeed(answer);
      if (!answer || answer.ok !== true) throw new Error((answer && answer.error) || "unexpected sync answer");
      if (!answer.reset && !Array.isArray(answer.events)) throw new Error("unexpected sync answer");
      return answer;
    }

    function clear() {
      rows.clear();
      tombstones.clear();
      Object.assign(state, { truncatedAt: 0, cursor: null, floor: 0, cap: maxRows });
      generation += 1;
    }

    async function startOver() {
      clear();
      if (windowSize) return startWindow();
      let answer = { more: true };
      let after = 0;
      while (answer.more) {
        answer = await sync({ after, limit: options.pageLimit });
        applyAll(answer.events, "start");
        if (!answer.events.length) break;
        after = answer.events[answer.events.length - 1].id;
      }
      state.cursor = answer.cursor; // only now: an interrupted read starts over again
    }

    /** The newest rows; the answer's more says older ones exist. */
    async function startWindow() {
      const answer = await sync({ after: null, limit: windowSize });
      const applied = answer.events.filter(apply);
      if (answer.more && answer.events.length) dropBelow(answer.events[0].id);
      keepCap();
      state.cursor = answer.cursor;
      emit("change", applied, "start");
    }

    async function resume() {
      for (;;) {
        const answer = await sync({ cursor: state.cursor, limit: options.pageLimit });
        if (answer.reset) {
          emit("reset", answer.message);
          return startOver();
        }
        applyAll(answer.events, "resume");
        state.cursor = answer.cursor;
        if (!answer.more) return;
      }
    }

    /** On every connect and resync; one catch-up at a time, again if asked meanwhile. */
    async function catchUp() {
      state.synced = false;
      if (run.active) {
        run.again = true;
        return;
      }
      run.active = true;
      clearTimeout(run.retryTimer);
      try {
        do {
          run.again = false;
          await (state.cursor === null ? startOver() : resume());
        } while (run.again);
        state.synced = true;
        emit("synced");
      } catch (error) {
        const retrying = socket.active; // once connected again, it catches up
        if (socket.connected) run.retryTimer = setTimeout(catchUp, options.retryMs ?? RETRY_MS);
        fail(`sync failed: ${error.message}`, "sync", retrying);
      } finally {
        run.active = false;
      }
    }

    /** The rows just below those held; the answer's cursor is not adopted. */
    function loadOlder() {
      if (olderPending) return olderPending;
      if (!state.floor) return Promise.resolve(false);
      const before = rows.size ? Math.min(...rows.keys()) : state.floor;
      olderPending = readOlder(before).then((applied) => {
        olderPending = null;
        dropBelow(state.floor); // what the read in flight let in below the window
        keepCap();
        emit("change", applied, "older");
        return state.floor > 0;
      });
      return olderPending;
    }

    /** Takes the page below `before` and keeps it (the cap rises to hold it). */
    async function readOlder(before) {
      const started = generation;
      try {
        const answer = await sync({ before, limit: windowSize || options.pageLimit });
        if (started !== generation) return []; // a TRUNCATE or a start-over came first
        const applied = answer.events.filter(apply);
        dropBelow(answer.more && answer.events.length ? answer.events[0].id : 0);
        state.cap = Math.max(state.cap, rows.size);
        return applied;
      } catch (error) {
        fail(`loading older rows failed: ${error.message}`, "older", false);
        return [];
      }
    }

    async function send(text) {
      return request("event", text);
    }

    /** A page whose origin the server refuses sees only "xhr poll error", retried
     * for ever: when the server answers plain requests, say so and stop. */
    async function checkOrigin() {
      const crossOrigin = new URL(base || "/", window.location.href).origin !== window.location.origin;
      if (!crossOrigin || everConnected) return false;
      const up = await fetch(base + "/healthz", { mode: "no-cors" }).then(() => true, () => false);
      if (!up || everConnected || socket.connected) return false;
      socket.disconnect();
      fail("the server refused this page: is its origin in FEED_CORS_ORIGINS?", "connect", false);
      return true;
    }

    socket.on("connect", () => {
      everConnected = true;
      statusSeen = false;
      noteStatus({ connected: true });
      catchUp();
    });
    socket.on("disconnect", () => {
      clearTimeout(run.retryTimer);
      state.synced = false;
      statusSeen = false;
      noteStatus({ connected: false, feed: "live", reason: null });
    });
    socket.on("connect_error", async (error) => {
      noteStatus({ connected: false });
      if (socket.active && (await checkOrigin())) return;
      fail(error.message, "connect", socket.active);
    });
    socket.on("events", (batch, cursor) => {
      applyAll(batch, "live");
      // A live cursor is safe only once this connection has caught up.
      if (state.synced && typeof cursor === "string") state.cursor = cursor;
    });
    socket.on("resync", catchUp);
    socket.on("status", (data) => {
      if (!data || !FEED_STATES.includes(data.feed)) return;
      statusSeen = true;
      noteFeed(data.feed, data.reason);
    });

    const feed = {
      on(name, listener) {
        if (!listeners[name]) throw new Error(`PgFeed has no "${name}" event`);
        listeners[name].push(listener);
        return feed;
      },
      rows: () => [...rows.values()].sort((a, b) => a.id - b.id),
      send,
      loadOlder,
      close() {
        clearTimeout(run.retryTimer);
        socket.disconnect();
      },
      get more() {
        return state.floor > 0;
      },
      get cursor() {
        return state.cursor;
      },
      get synced() {
        return state.synced;
      },
      get status() {
        return { ...status };
      },
      socket,
    };
    return feed;
  }

  window.PgFeed = Object.freeze({ connect });
})();
