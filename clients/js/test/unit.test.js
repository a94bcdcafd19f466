/**
 * neurelay.js against a scripted in-memory WebSocket: the exact frames of a resume, the
 * de-duplication of a redelivered seq, the heartbeat, the back-off, and argument errors,
 * which a real gateway does not produce on demand.
 */

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { BATCH_SUBPROTOCOL, Client, NeurelayError, backoffDelay, gatewayUrl } from "../neurelay.js";
import { nextEvent, within } from "./support.js";

const WAIT = 5_000;

/** A WebSocket whose gateway side is a function of the frames the client sends. */
class ScriptedSocket {
  static sockets = [];
  static answer = defaultAnswer;

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.protocol = protocols[0]; // the gateway takes the client's first choice
    this.readyState = 0;
    this.sent = [];
    this.onopen = this.onclose = this.onerror = this.onmessage = null;
    ScriptedSocket.sockets.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data) {
    const frame = JSON.parse(data);
    this.sent.push(frame);
    for (const reply of ScriptedSocket.answer(frame, this)) this.deliver(reply);
  }

  deliver(frame) {
    setTimeout(() => this.onmessage?.({ data: JSON.stringify(frame) }), 0);
  }

  /** Several frames in one WebSocket frame, as the batched subprotocol carries them. */
  deliverBatch(frames) {
    setTimeout(() => this.onmessage?.({ data: frames.map((f) => JSON.stringify(f)).join("\n") }), 0);
  }

  /** The gateway closes the connection. */
  drop(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason: "" }), 0);
  }

  close(code = 1000) {
    this.drop(code);
  }
}

let seq = 100;
function defaultAnswer(frame) {
  switch (frame.type) {
    case "authenticate":
      return [{ type: "authenticated", id: frame.id, user: "u", expires_at: 0 }];
    case "subscribe":
      return [{ type: "subscribed", id: frame.id, channel: frame.channel, seq, recovered: true }];
    case "publish":
      return [{ type: "published", id: frame.id, channel: frame.channel, seq: ++seq }];
    case "ping":
      return [{ type: "pong", id: frame.id }];
    default:
      return [{ type: "error", id: frame.id, code: "unknown_type", message: "?" }];
  }
}

const clients = [];
function scriptedClient(options = {}) {
  const client = new Client("ws://gateway.test/ws", {
    token: "t",
    WebSocket: ScriptedSocket,
    backoffInitial: 1,
    backoffMax: 5,
    heartbeatInterval: 0,
    ...options,
  });
  clients.push(client);
  return client;
}

function message(channel, n) {
  return { type: "message", channel, seq: n, payload: n, timestamp: 1 };
}

afterEach(async () => {
  for (const client of clients.splice(0)) await client.close();
  ScriptedSocket.sockets = [];
  ScriptedSocket.answer = defaultAnswer;
});

test("the client asks for the neurelay.v1.json subprotocol", async () => {
  await scriptedClient().connect();
  assert.deepEqual(ScriptedSocket.sockets[0].protocols, ["neurelay.v1.json"]);
});

test("with batch the client offers the batched subprotocol first and the plain one after it", async () => {
  await scriptedClient({ batch: true }).connect();
  assert.deepEqual(ScriptedSocket.sockets[0].protocols, [BATCH_SUBPROTOCOL, "neurelay.v1.json"]);
});

test("a batched frame's frames are handled in order, a reply's awaiting code before the rest", async () => {
  ScriptedSocket.answer = (frame, socket) => {
    if (frame.type !== "subscribe") return defaultAnswer(frame);
    const subscribed = { type: "subscribed", id: frame.id, channel: frame.channel, seq: 3, recovered: true };
    socket.deliverBatch([subscribed, message(frame.channel, 2), message(frame.channel, 3)]);
    return [];
  };
  const client = await scriptedClient({ batch: true }).connect();
  const seen = [];
  const subscribing = client.subscribe("agent:1", { last: 2, onMessage: (m) => seen.push(m.seq) });
  await subscribing.then(() => seen.push("subscribed"));
  const settled = async () => {
    while (seen.length < 3) await new Promise((resolve) => setTimeout(resolve, 5));
  };
  await within(WAIT, settled(), "the history");
  assert.deepEqual(seen, ["subscribed", 2, 3]);
});

test("a message whose seq was already delivered is dropped", async () => {
  const client = await scriptedClient().connect();
  const subscription = await client.subscribe("agent:1");
  const socket = ScriptedSocket.sockets[0];
  for (const n of [101, 102, 102, 101, 103]) socket.deliver(message("agent:1", n));
  const seqs = [];
  for (let i = 0; i < 3; i++) seqs.push((await subscription.get(WAIT)).seq);
  assert.deepEqual(seqs, [101, 102, 103]);
  await assert.rejects(subscription.get(50), { code: "timeout" });
});

test("a resume asks for the messages after the last delivered seq", async () => {
  const client = await scriptedClient().connect();
  const subscription = await client.subscribe("agent:1");
  ScriptedSocket.sockets[0].deliver(message("agent:1", 150));
  await subscription.get(WAIT);
  ScriptedSocket.sockets[0].drop();
  await within(WAIT, nextEvent(client, "connected"), "the reconnect");
  const resubscribe = ScriptedSocket.sockets[1].sent.find((f) => f.type === "subscribe");
  assert.deepEqual(
    [resubscribe.channel, resubscribe.since, resubscribe.last],
    ["agent:1", 150, undefined],
  );
});

test("a resume before any delivery asks for the messages after the subscribed seq", async () => {
  const client = await scriptedClient().connect();
  await client.subscribe("agent:1");
  ScriptedSocket.sockets[0].drop();
  await within(WAIT, nextEvent(client, "connected"), "the reconnect");
  const resubscribe = ScriptedSocket.sockets[1].sent.find((f) => f.type === "subscribe");
  assert.equal(resubscribe.since, seq);
});

test("a resume during a replay of last N continues after the last delivered seq", async () => {
  const client = await scriptedClient().connect();
  const subscription = await client.subscribe("agent:1", { last: 5 });
  assert.equal(ScriptedSocket.sockets[0].sent.at(-1).last, 5);
  ScriptedSocket.sockets[0].deliver(message("agent:1", 96));
  await subscription.get(WAIT);
  ScriptedSocket.sockets[0].drop();
  await within(WAIT, nextEvent(client, "connected"), "the reconnect");
  const resubscribe = ScriptedSocket.sockets[1].sent.find((f) => f.type === "subscribe");
  assert.deepEqual([resubscribe.since, resubscribe.last], [96, undefined]);
});

test("an unacknowledged publish is re-sent after a reconnect with the same id", async () => {
  ScriptedSocket.answer = (frame, socket) =>
    frame.type === "publish" && ScriptedSocket.sockets.indexOf(socket) === 0
      ? []
      : defaultAnswer(frame);
  const client = await scriptedClient().connect();
  const publishing = client.publish("agent:1", "x");
  await within(WAIT, waitFor(() => ScriptedSocket.sockets[0].sent.some((f) => f.type === "publish")), "the publish");
  ScriptedSocket.sockets[0].drop();
  const published = await within(WAIT, publishing, "the re-sent publish");
  const [first] = ScriptedSocket.sockets[0].sent.filter((f) => f.type === "publish");
  const [again] = ScriptedSocket.sockets[1].sent.filter((f) => f.type === "publish");
  assert.equal(again.id, first.id);
  assert.equal(published.id, first.id);
});

test("a rate_limited error without id rejects the oldest unanswered request", async () => {
  let held = [];
  ScriptedSocket.answer = (frame) => {
    if (frame.type !== "ping") return defaultAnswer(frame);
    held.push(frame);
    return [];
  };
  const client = await scriptedClient().connect();
  const first = client.ping();
  const second = client.ping();
  await within(WAIT, waitFor(() => held.length === 2), "two pings");
  const socket = ScriptedSocket.sockets[0];
  socket.deliver({ type: "error", code: "rate_limited", message: "slow down" });
  socket.deliver({ type: "pong", id: held[1].id });
  await assert.rejects(first, (error) => error instanceof NeurelayError && error.code === "rate_limited");
  await second;
  held = [];
});

test("an unanswered heartbeat ping drops the connection and the client reconnects", async () => {
  ScriptedSocket.answer = (frame, socket) =>
    frame.type === "ping" && ScriptedSocket.sockets.indexOf(socket) === 0 ? [] : defaultAnswer(frame);
  const client = await scriptedClient({ heartbeatInterval: 20 }).connect();
  const disconnected = await within(WAIT, nextEvent(client, "disconnected"), "the heartbeat to fail");
  assert.equal(disconnected.code, 4000);
  await within(WAIT, nextEvent(client, "connected"), "the reconnect");
  assert.equal(client.reconnects, 1);
});

test("a subscription the re-authenticated user may no longer read ends with forbidden", async () => {
  ScriptedSocket.answer = (frame, socket) =>
    frame.type === "subscribe" && ScriptedSocket.sockets.indexOf(socket) > 0
      ? [{ type: "error", id: frame.id, code: "forbidden", message: "no", channel: frame.channel }]
      : defaultAnswer(frame);
  const client = await scriptedClient().connect();
  const kept = await client.subscribe("agent:1");
  ScriptedSocket.sockets[0].drop();
  await within(WAIT, nextEvent(client, "connected"), "the reconnect");
  await assert.rejects(kept.get(WAIT), { code: "forbidden", channel: "agent:1" });
  assert.equal(client.state, "connected");
});

test("the back-off doubles from the initial delay up to the maximum, with jitter", () => {
  const low = (attempt) => backoffDelay(attempt, 100, 1000, () => 0);
  const high = (attempt) => backoffDelay(attempt, 100, 1000, () => 0.999999);
  assert.deepEqual([0, 1, 2, 3, 4, 9].map(low), [50, 100, 200, 400, 500, 500]);
  assert.ok(high(0) < 100 && high(0) > 99);
  assert.ok(high(9) <= 1000);
});

test("gatewayUrl turns the page's address into the gateway's WebSocket address", () => {
  assert.equal(gatewayUrl("http://127.0.0.1:8080/console"), "ws://127.0.0.1:8080/ws");
  assert.equal(gatewayUrl("https://example.com/relay/console?x#y"), "wss://example.com/relay/ws");
});

test("a client without a WebSocket implementation or token is refused with a clear error", () => {
  const saved = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new Client("ws://x/ws", { token: "t" }), /no WebSocket implementation/);
  } finally {
    globalThis.WebSocket = saved;
  }
  assert.throws(() => new Client("ws://x/ws", { WebSocket: ScriptedSocket }), /token is required/);
});

function waitFor(predicate) {
  return new Promise((resolve) => {
    const poll = () => (predicate() ? resolve() : setTimeout(poll, 5));
    poll();
  });
}
