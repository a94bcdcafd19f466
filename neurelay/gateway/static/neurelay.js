/**
 * neurelay.js: the browser (and Node) client of the Neurelay gateway, protocol v1.
 *
 * One dependency-free ES module. A `Client` holds one WebSocket
 * (subprotocol `neurelay.v1.json`) and keeps it alive like the Python client
 * (`neurelay/client/connection.py`): after a disconnect it reconnects with
 * exponential back-off and jitter, authenticates again, re-subscribes every
 * channel with `since` set to the last `seq` it delivered (or to the `seq` of
 * `subscribed` when nothing was delivered yet), drops any message whose `seq`
 * it already delivered, and re-sends unacknowledged publishes with the same
 * `id`, which the gateway stores once. So a caller sees every message once,
 * in order, and every `publish` that resolved was stored exactly once. With
 * `batch: true` it offers `neurelay.v1.json+batch` first, in which one frame
 * from the gateway may carry several, newline-separated.
 *
 *     import { connect } from "/client/neurelay.js";
 *     const client = await connect("ws://127.0.0.1:8080/ws", { token });
 *     const sub = await client.subscribe("agent:42", { last: 10 });
 *     await client.publish("agent:42", { status: "busy" });
 *     for await (const m of sub) console.log(m.seq, m.payload);
 *
 * Errors are `NeurelayError`s whose `code` is a protocol error code
 * (docs/protocol.md) or one of the client's own: `connection_lost`,
 * `closed`, `timeout`. Types: neurelay.d.ts beside this file.
 */

export const SUBPROTOCOL = "neurelay.v1.json";
/** The batched variant: a frame from the gateway may hold several frames, one per line. */
export const BATCH_SUBPROTOCOL = "neurelay.v1.json+batch";

/** Error codes of the protocol (docs/protocol.md, "Error codes"). */
export const ERROR_CODES = Object.freeze([
  "bad_request",
  "unknown_type",
  "unauthenticated",
  "auth_failed",
  "token_expired",
  "forbidden",
  "invalid_channel",
  "not_subscribed",
  "too_many_subscriptions",
  "message_too_large",
  "rate_limited",
  "too_many_connections",
  "presence_disabled",
  "unavailable",
  "internal",
]);

/** Codes the client itself uses: the connection dropped, the client was closed, no reply in time. */
export const CLIENT_ERROR_CODES = Object.freeze(["connection_lost", "closed", "timeout"]);

/** Close codes the gateway ends a connection with (docs/protocol.md, "Close codes"). */
export const CLOSE_CODES = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  AUTH_TIMEOUT: 4001,
  TOO_MANY_CONNECTIONS: 4003,
  SLOW_CONSUMER: 4005,
  DISCONNECTED: 4008,
  TOKEN_REVOKED: 4009,
});

// Errors after which reconnecting cannot help without the caller doing something.
const FINAL_ERRORS = new Set(["auth_failed"]);
// Errors that end one subscription when re-subscribing after a reconnect (others retry later).
const SUBSCRIPTION_ERRORS = new Set([
  "forbidden",
  "invalid_channel",
  "too_many_subscriptions",
  "bad_request",
]);
const OPEN = 1;

export class NeurelayError extends Error {
  /**
   * @param {string} code a protocol error code or a client code
   * @param {string} message
   * @param {{channel?: string|null, id?: string|number|null, closeCode?: number|null}} [details]
   */
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = "NeurelayError";
    this.code = code;
    this.detail = message;
    this.channel = details.channel ?? null;
    this.id = details.id ?? null;
    this.closeCode = details.closeCode ?? null;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0-based), in ms:
 * min(max, initial * 2^attempt) scaled by a random factor in [0.5, 1).
 */
export function backoffDelay(attempt, initial, max, random = Math.random) {
  return Math.min(max, initial * 2 ** attempt) * (0.5 + 0.5 * random());
}

/** The gateway's WebSocket URL for a page it served: ws(s)://<host><base>ws. */
export function gatewayUrl(base = globalThis.location?.href) {
  if (!base) throw new TypeError("gatewayUrl needs a base URL outside a browser");
  const url = new URL("ws", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  url.search = "";
  return url.href;
}

/** A random 128-bit hex id, also in pages that are not secure contexts. */
function randomId() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) {
    globalThis.crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function serverError(frame) {
  return new NeurelayError(frame.code ?? "internal", frame.message ?? "", {
    channel: frame.channel,
    id: frame.id,
  });
}

/** Messages of one channel, in order, each once: `for await`, `get()` or an `onMessage` callback. */
export class Subscription {
  /** @internal */
  constructor(client, channel, since, last, onMessage) {
    this.channel = channel;
    /** The seq of the last message delivered (0 before any). */
    this.lastSeq = since ?? 0;
    /** From the latest `subscribed`: false when some of the requested history may be gone. */
    this.recovered = true;
    this._client = client;
    this._since = since ?? null;
    this._last = last ?? null;
    this._onMessage = onMessage ?? null;
    this._acknowledged = false;
    // The channel's seq when the gateway confirmed the subscription: history, if asked
    // for, ends there, and a plain subscription continues from there.
    this._position = 0;
    this._queue = [];
    this._waiters = [];
    this._ended = false;
    this._error = null;
    this._ready = null; // {resolve, reject, timer} until the first `subscribed`
    this._listeners = new Map();
  }

  /** Who is subscribed to this channel on every replica: `{channel, clients, truncated}`. */
  presence() {
    return this._client.presence(this.channel);
  }

  /** How many users and connections are subscribed to this channel: `{channel, users, connections}`. */
  presenceStats() {
    return this._client.presenceStats(this.channel);
  }

  /** Listen to `join` or `leave` of other connections (namespaces with join/leave on); returns an unsubscribe function. */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this._listeners.get(event)?.delete(listener);
  }

  /** @internal A `join` or `leave` frame of this channel. */
  _notice(frame) {
    if (this._ended) return;
    const member = { user: frame.user, connection: frame.connection, info: frame.info ?? null };
    for (const listener of [...(this._listeners.get(frame.type) ?? [])]) {
      try {
        listener(member);
      } catch (error) {
        this._client._emit("error", error);
      }
    }
  }

  /** @internal The subscribe frame for now: the first one, or a resume after a reconnect. */
  _request() {
    const frame = { type: "subscribe", channel: this.channel };
    const wantsHistory = this._since !== null || this._last !== null;
    if (this._acknowledged && !(wantsHistory && this.lastSeq < this._position)) {
      frame.since = Math.max(this.lastSeq, this._position);
    } else if (this._since !== null) {
      frame.since = Math.max(this._since, this.lastSeq);
    } else if (this._last !== null && this.lastSeq > 0) {
      // Part of the last-N replay was delivered: the rest follows it, with no gap.
      // (The Python client asks for `last` again here, which can skip messages.)
      frame.since = this.lastSeq;
    } else if (this._last !== null) {
      frame.last = this._last;
    }
    return frame;
  }

  /** @internal */
  _acknowledge(reply) {
    this.recovered = reply.recovered ?? true;
    this._position = Math.max(this._position, Number(reply.seq ?? 0));
    this._acknowledged = true;
    const ready = this._ready;
    if (ready) {
      this._ready = null;
      clearTimeout(ready.timer);
      ready.resolve(this);
    }
  }

  /** @internal */
  _offer(frame) {
    if (this._ended) return;
    const message = {
      channel: frame.channel,
      payload: frame.payload,
      seq: frame.seq ?? 0,
      id: frame.id ?? null,
      timestamp: frame.timestamp ?? 0,
    };
    if (message.seq) {
      if (message.seq <= this.lastSeq) return;
      this.lastSeq = message.seq;
    }
    if (this._onMessage) {
      try {
        this._onMessage(message);
      } catch (error) {
        this._client._emit("error", error);
      }
      return;
    }
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve(message);
    else this._queue.push(message);
  }

  /** @internal End the subscription: iterators finish (or throw `error`, when given). */
  _end(error = null) {
    if (this._ended) return;
    this._ended = true;
    this._error = error;
    const ready = this._ready;
    if (ready) {
      this._ready = null;
      clearTimeout(ready.timer);
      ready.reject(error ?? new NeurelayError("closed", "subscription ended"));
    }
    for (const waiter of this._waiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve(null);
    }
  }

  /** True once the subscription ended (unsubscribed, client closed, or refused). */
  get ended() {
    return this._ended;
  }

  /**
   * The next message; rejects with `timeout` after `timeoutMs`, or with the reason the
   * subscription ended (`closed` when it ended normally).
   */
  get(timeoutMs) {
    if (this._queue.length) return Promise.resolve(this._queue.shift());
    if (this._ended) {
      return Promise.reject(this._error ?? new NeurelayError("closed", "subscription ended"));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (message) => {
          clearTimeout(timer);
          if (message === null) reject(new NeurelayError("closed", "subscription ended"));
          else resolve(message);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this._waiters.splice(this._waiters.indexOf(waiter), 1);
              reject(new NeurelayError("timeout", `no message on ${this.channel} in ${timeoutMs} ms`));
            }, timeoutMs);
      this._waiters.push(waiter);
    });
  }

  /** Stop following the channel. */
  unsubscribe() {
    return this._client.unsubscribe(this.channel);
  }

  async next() {
    try {
      return { value: await this.get(), done: false };
    } catch (error) {
      if (error instanceof NeurelayError && error.code === "closed") {
        return { value: undefined, done: true };
      }
      throw error;
    }
  }

  /** Leaving a `for await` loop (break, return, throw) unsubscribes. */
  async return() {
    if (!this._ended) await this.unsubscribe().catch(() => {});
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

/** One connection to a gateway, kept alive across disconnects. */
export class Client {
  /**
   * @param {string} url the gateway's WebSocket URL, e.g. ws://127.0.0.1:8080/ws
   * @param {object} options see ClientOptions in neurelay.d.ts
   */
  constructor(url, options = {}) {
    if (options.token === undefined || options.token === null) {
      throw new TypeError("options.token is required (a string or a function returning one)");
    }
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== "function") {
      throw new TypeError(
        "no WebSocket implementation: pass options.WebSocket (in Node before 22, the 'ws' package)",
      );
    }
    this.url = url;
    this.user = null;
    this.reconnects = 0;
    this._WebSocket = WebSocketImpl;
    this._token = options.token;
    this._reconnect = options.reconnect ?? true;
    this._backoffInitial = options.backoffInitial ?? 100;
    this._backoffMax = options.backoffMax ?? 10_000;
    this._requestTimeout = options.requestTimeout ?? 30_000;
    this._heartbeatInterval = options.heartbeatInterval ?? 30_000;
    this._batch = options.batch ?? false;
    this._state = "idle";
    this._ws = null;
    this._connected = false;
    this._closed = false;
    this._fatal = null;
    this._ids = 0;
    this._subscriptions = new Map();
    this._pending = new Map(); // id -> request, sent and unanswered, oldest first
    this._outbox = []; // requests waiting for the connection
    this._listeners = new Map();
    this._sleep = null;
    this._heartbeat = null;
    this._heartbeatDue = false;
    this._renewal = null; // the re-authentication after token expiry, while it runs
    // Frames of the connection not yet handled (the rest of a batched frame), and whether
    // their handling waits for a reply's awaiting code to run first.
    this._inbox = [];
    this._inboxPaused = false;
  }

  /** idle | connecting | connected | reconnecting | closed */
  get state() {
    return this._state;
  }

  /** Listen to `state`, `connected`, `disconnected`, `reconnecting`, `error`, `closed`, `join`, `leave` or `unsubscribed`; returns an unsubscribe function. */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this._listeners.get(event)?.delete(listener);
  }

  /** @internal */
  _emit(event, detail) {
    for (const listener of [...(this._listeners.get(event) ?? [])]) {
      try {
        listener(detail);
      } catch (error) {
        if (event !== "error") this._emit("error", error);
      }
    }
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._emit("state", state);
  }

  // -- lifecycle ------------------------------------------------------------------------------

  /** Open the first connection; rejects if it cannot be made and authenticated. */
  async connect() {
    if (this._closed) throw new NeurelayError("closed", "client closed");
    this._setState("connecting");
    try {
      await this._open();
    } catch (error) {
      this._setState("idle");
      throw error;
    }
    return this;
  }

  /** Close the connection for good: subscriptions end, unanswered requests reject with `closed`. */
  async close() {
    if (this._closed) return;
    this._shutdown(null);
  }

  async _open() {
    const ws = await this._dial();
    this._ws = ws;
    ws.onmessage = (event) => this._receive(ws, event.data);
    ws.onclose = (event) => this._lost(ws, event.code, event.reason);
    // A close event follows every error; the handler stays so that emitters (the `ws`
    // package) do not treat the error as unhandled.
    ws.onerror = () => {};
    try {
      const token = await this._tokenValue();
      const reply = await this._setup({ type: "authenticate", token });
      this.user = reply.user ?? null;
      for (const subscription of [...this._subscriptions.values()]) {
        if (this._subscriptions.get(subscription.channel) !== subscription) continue;
        try {
          subscription._acknowledge(await this._setup(subscription._request()));
        } catch (error) {
          if (!(error instanceof NeurelayError) || !SUBSCRIPTION_ERRORS.has(error.code)) throw error;
          this._subscriptions.delete(subscription.channel);
          subscription._end(error);
          this._emit("error", error);
        }
      }
    } catch (error) {
      if (this._ws === ws) this._detach(ws);
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
      throw error;
    }
    if (this._closed || this._ws !== ws) {
      throw new NeurelayError("connection_lost", "connection closed during set-up");
    }
    this._connected = true;
    this._setState("connected");
    this._startHeartbeat(ws);
    this._emit("connected", { user: this.user, reconnects: this.reconnects });
    for (const request of this._outbox.splice(0)) this._transmit(request);
  }

  /** A WebSocket that is open, or a rejection saying why it could not be opened. */
  _dial() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        const protocols = this._batch ? [BATCH_SUBPROTOCOL, SUBPROTOCOL] : [SUBPROTOCOL];
        ws = new this._WebSocket(this.url, protocols);
      } catch (error) {
        reject(new NeurelayError("connection_lost", `cannot connect to ${this.url}: ${error.message ?? error}`));
        return;
      }
      let problem = "";
      ws.onerror = (event) => {
        problem = event?.message || event?.error?.message || "";
      };
      ws.onopen = () => {
        ws.onopen = null;
        ws.onclose = null;
        resolve(ws);
      };
      ws.onclose = (event) => {
        ws.onopen = null;
        ws.onclose = null;
        const why = problem || event.reason || "refused, unreachable, or origin not allowed";
        reject(
          new NeurelayError("connection_lost", `cannot connect to ${this.url} (${why})`, {
            closeCode: event.code,
          }),
        );
      };
    });
  }

  async _tokenValue() {
    return typeof this._token === "function" ? await this._token() : this._token;
  }

  /** The connection `ws` is gone: detach it, and reconnect unless set-up is still running. */
  _lost(ws, code, reason) {
    if (this._ws !== ws) return;
    const wasConnected = this._connected;
    this._detach(ws);
    this._emit("disconnected", { code, reason });
    if (wasConnected) this._reconnectLoop();
  }

  _detach(ws) {
    this._ws = null;
    this._inbox = [];
    this._connected = false;
    this._stopHeartbeat();
    ws.onmessage = null;
    ws.onclose = null;
    // Requests that may be repeated go first in the outbox, in their order; the rest fail.
    const retried = [];
    for (const request of this._pending.values()) {
      if (request.retry) retried.push(request);
      else this._settle(request, new NeurelayError("connection_lost", "connection lost before the reply"));
    }
    this._pending.clear();
    this._outbox.unshift(...retried);
    for (const request of retried) this._arm(request);
  }

  async _reconnectLoop() {
    if (this._closed || !this._reconnect) {
      this._shutdown(new NeurelayError("connection_lost", "connection closed"));
      return;
    }
    this._setState("reconnecting");
    let attempt = 0;
    while (!this._closed) {
      const delay = backoffDelay(attempt, this._backoffInitial, this._backoffMax);
      this._emit("reconnecting", { attempt: attempt + 1, delay });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this._sleep = { timer, resolve };
      });
      this._sleep = null;
      if (this._closed) return;
      attempt += 1;
      try {
        this.reconnects += 1;
        await this._open();
        return;
      } catch (error) {
        this.reconnects -= 1;
        if (this._closed) return;
        if (error instanceof NeurelayError && FINAL_ERRORS.has(error.code)) {
          this._fatal = error;
          this._shutdown(error);
          return;
        }
        this._emit("error", error);
      }
    }
  }

  /** Stop for good; `error` null when the caller closed the client. */
  _shutdown(error) {
    this._closed = true;
    if (this._sleep) {
      clearTimeout(this._sleep.timer);
      this._sleep.resolve();
    }
    const ws = this._ws;
    if (ws) {
      this._detach(ws);
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    const reason = error ?? new NeurelayError("closed", "client closed");
    for (const request of this._outbox.splice(0)) this._settle(request, reason);
    for (const request of this._pending.values()) this._settle(request, reason);
    this._pending.clear();
    for (const subscription of this._subscriptions.values()) subscription._end(error);
    this._subscriptions.clear();
    this._setState("closed");
    this._emit("closed", { error });
  }

  // -- heartbeat: an application ping every interval; one still unanswered means a dead link --

  _startHeartbeat(ws) {
    if (!this._heartbeatInterval) return;
    this._heartbeatDue = false;
    this._heartbeat = setInterval(() => {
      if (this._ws !== ws) return;
      if (this._heartbeatDue) {
        this._lost(ws, 4000, "no reply to ping");
        try {
          ws.close(4000, "no reply to ping");
        } catch {
          // already closed
        }
        return;
      }
      this._heartbeatDue = true;
      this._request({ type: "ping" }, { retry: false, timeout: false }).then(
        () => {
          this._heartbeatDue = false;
        },
        () => {
          this._heartbeatDue = false;
        },
      );
    }, this._heartbeatInterval);
  }

  _stopHeartbeat() {
    if (this._heartbeat !== null) clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  // -- frames ---------------------------------------------------------------------------------

  _receive(ws, data) {
    if (this._ws !== ws || typeof data !== "string") return;
    if (ws.protocol === BATCH_SUBPROTOCOL) this._inbox.push(...data.split("\n"));
    else this._inbox.push(data);
    if (!this._inboxPaused) this._handleInbox();
  }

  /**
   * Handle received frames in order. After a reply, the frames behind it (history after
   * `subscribed`, say) wait for a new task, so the code awaiting the reply runs first, as
   * it does when each frame comes in a WebSocket frame of its own. The inbox holds frames
   * of the current connection only (a disconnect empties it).
   */
  _handleInbox() {
    while (this._inbox.length) {
      const text = this._inbox.shift();
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        this._emit("error", new NeurelayError("bad_request", "the gateway sent a frame that is not JSON"));
        continue;
      }
      if (this._dispatch(frame) && this._inbox.length) {
        this._inboxPaused = true;
        setTimeout(() => {
          this._inboxPaused = false;
          this._handleInbox();
        }, 0);
        return;
      }
    }
  }

  /** Handle one frame; true when it answered a request. */
  _dispatch(frame) {
    const kind = frame.type;
    if (kind === "message") {
      this._subscriptions.get(frame.channel)?._offer(frame);
      return false;
    }
    if (kind === "join" || kind === "leave") {
      this._subscriptions.get(frame.channel)?._notice(frame);
      this._emit(kind, { channel: frame.channel, user: frame.user, connection: frame.connection, info: frame.info ?? null });
      return;
    }
    if (kind === "unsubscribed" && frame.id == null && this._subscriptions.has(frame.channel)) {
      // A backend ended the subscription through the server API.
      const subscription = this._subscriptions.get(frame.channel);
      this._subscriptions.delete(frame.channel);
      subscription._end(null);
      this._emit("unsubscribed", { channel: frame.channel });
      return;
    }
    let id = frame.id;
    if (kind === "error" && id == null) {
      if (frame.code === "token_expired") {
        this._reauthenticate();
      } else if (frame.code === "rate_limited") {
        // Dropped unread, so no id: the gateway answers frames in order, so it is ours
        // that has waited longest.
        id = this._pending.keys().next().value;
      } else if (frame.code === "forbidden" && this._subscriptions.has(frame.channel)) {
        // A fresh token no longer allows this channel: the gateway ended the subscription.
        const subscription = this._subscriptions.get(frame.channel);
        this._subscriptions.delete(frame.channel);
        subscription._end(serverError(frame));
      }
    }
    const request = id == null ? undefined : this._pending.get(id);
    if (request && kind === "error" && frame.code === "token_expired" && this._renewal && request.retry) {
      this._pending.delete(id);
      this._outbox.push(request);
      this._arm(request);
      return false;
    }
    if (request) {
      this._pending.delete(id);
      this._settle(request, kind === "error" ? serverError(frame) : null, frame);
      return true;
    }
    if (kind === "error") this._emit("error", serverError(frame));
    return false;
  }

  /**
   * The token expired: authenticate again with a fresh one from the token source. Meanwhile
   * new requests wait, and publishes refused with `token_expired` wait to be sent again.
   */
  async _reauthenticate() {
    if (this._renewal) return;
    this._renewal = (async () => {
      try {
        const token = await this._tokenValue();
        await this._setup({ type: "authenticate", token });
      } catch (error) {
        this._emit("error", error);
      } finally {
        this._renewal = null;
        if (this._connected) for (const request of this._outbox.splice(0)) this._transmit(request);
      }
    })();
  }

  /**
   * Send `frame` and resolve with its reply (reject with a NeurelayError for an `error`).
   * `retry`: after a disconnect, send it again (same id) once reconnected.
   */
  _request(frame, { retry, timeout = true }) {
    if (this._closed) {
      return Promise.reject(this._fatal ?? new NeurelayError("closed", "client closed"));
    }
    return new Promise((resolve, reject) => {
      if (frame.id === undefined) frame.id = `c${++this._ids}`;
      const request = { frame, retry, resolve, reject, timer: null, timeout };
      if (this._connected && !this._renewal) this._transmit(request);
      else {
        this._outbox.push(request);
        this._arm(request);
      }
    });
  }

  /** A request/reply during set-up, before the connection counts as connected. */
  _setup(frame) {
    return new Promise((resolve, reject) => {
      frame.id = `c${++this._ids}`;
      this._transmit({ frame, retry: false, resolve, reject, timer: null, timeout: true });
    });
  }

  _transmit(request) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) {
      if (request.retry) {
        this._outbox.push(request);
        this._arm(request);
      } else {
        this._settle(request, new NeurelayError("connection_lost", "not connected"));
      }
      return;
    }
    this._pending.set(request.frame.id, request);
    this._arm(request);
    try {
      ws.send(JSON.stringify(request.frame));
    } catch (error) {
      this._pending.delete(request.frame.id);
      this._settle(request, new NeurelayError("connection_lost", `send failed: ${error.message ?? error}`));
    }
  }

  /** (Re)start the request's timeout: each wait, for the connection or for the reply, is bounded. */
  _arm(request) {
    clearTimeout(request.timer);
    if (!request.timeout || !this._requestTimeout) return;
    request.timer = setTimeout(() => {
      this._pending.delete(request.frame.id);
      const queued = this._outbox.indexOf(request);
      if (queued >= 0) this._outbox.splice(queued, 1);
      this._settle(
        request,
        new NeurelayError("timeout", `no reply to ${request.frame.type} in ${this._requestTimeout} ms`, {
          id: request.frame.id,
          channel: request.frame.channel,
        }),
      );
    }, this._requestTimeout);
  }

  _settle(request, error, reply) {
    clearTimeout(request.timer);
    if (error) request.reject(error);
    else request.resolve(reply);
  }

  // -- API ------------------------------------------------------------------------------------

  /**
   * Follow `channel`. `since`: replay messages after this seq first; `last`: the last N.
   * With `onMessage` messages go to the callback, else to `for await` / `get()`.
   * Resolves once the gateway confirmed the subscription.
   */
  subscribe(channel, options = {}) {
    if (this._closed) {
      return Promise.reject(this._fatal ?? new NeurelayError("closed", "client closed"));
    }
    const subscription = new Subscription(this, channel, options.since, options.last, options.onMessage);
    this._subscriptions.get(channel)?._end(null);
    this._subscriptions.set(channel, subscription);
    const ready = new Promise((resolve, reject) => {
      subscription._ready = { resolve, reject, timer: null };
      if (this._requestTimeout) {
        subscription._ready.timer = setTimeout(() => {
          if (this._subscriptions.get(channel) === subscription) this._subscriptions.delete(channel);
          subscription._end(new NeurelayError("timeout", `no reply to subscribe ${channel}`, { channel }));
        }, this._requestTimeout);
      }
    });
    // While disconnected, the reconnect's re-subscription confirms it.
    if (this._renewal) this._renewal.then(() => this._subscribeNow(subscription));
    else this._subscribeNow(subscription);
    return ready;
  }

  _subscribeNow(subscription) {
    const channel = subscription.channel;
    const current = () => this._subscriptions.get(channel) === subscription;
    if (!this._connected || !current() || subscription._acknowledged) return;
    this._request(subscription._request(), { retry: false, timeout: false }).then(
      (reply) => {
        if (current()) subscription._acknowledge(reply);
      },
      (error) => {
        if (error.code === "connection_lost" && !this._closed) return; // re-subscribed on reconnect
        if (current()) this._subscriptions.delete(channel);
        subscription._end(error);
      },
    );
  }

  /** Stop following `channel`; its subscription ends. */
  async unsubscribe(channel) {
    const subscription = this._subscriptions.get(channel);
    if (!subscription) return;
    this._subscriptions.delete(channel);
    subscription._end(null);
    // A new connection does not have the subscription, so there is nothing to undo then.
    if (!this._connected) return;
    try {
      await this._request({ type: "unsubscribe", channel }, { retry: false });
    } catch (error) {
      if (!["connection_lost", "not_subscribed", "closed"].includes(error.code)) throw error;
    }
  }

  /**
   * Publish `payload` and resolve once the gateway stored it. Retried across reconnects with
   * one `id` (random unless given), so it is stored once.
   */
  async publish(channel, payload, options = {}) {
    const id = options.id ?? randomId();
    const reply = await this._request({ type: "publish", channel, payload, id }, { retry: true });
    return { channel: reply.channel, seq: reply.seq ?? 0, duplicate: Boolean(reply.duplicate), id };
  }

  /** A round trip to the gateway. */
  async ping() {
    await this._request({ type: "ping" }, { retry: false });
  }

  /** Who is subscribed to `channel` on every replica: `{channel, clients, truncated}`. */
  async presence(channel) {
    const reply = await this._request({ type: "presence", channel }, { retry: true });
    const clients = (reply.clients ?? []).map((c) => ({ user: c.user, connection: c.connection, info: c.info ?? null }));
    return { channel: reply.channel, clients, truncated: Boolean(reply.truncated) };
  }

  /** How many users and connections are subscribed to `channel`: `{channel, users, connections}`. */
  async presenceStats(channel) {
    const reply = await this._request({ type: "presence_stats", channel }, { retry: true });
    return { channel: reply.channel, users: reply.users ?? 0, connections: reply.connections ?? 0 };
  }
}

/** Create a client and open its first connection. */
export async function connect(url, options) {
  return new Client(url, options).connect();
}
