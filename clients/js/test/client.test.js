/**
 * neurelay.js against a real gateway (`neurelay dev`, embedded NATS): requests and replies,
 * error codes, and reconnect-and-resume through a TCP proxy that cuts connections.
 */

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { BATCH_SUBPROTOCOL, Client, NeurelayError, connect } from "../neurelay.js";
import {
  WebSocket,
  closeAll,
  nextEvent,
  open,
  startGateway,
  startProxy,
  uniqueChannel,
  within,
} from "./support.js";

const WAIT = 20_000;
let gateway;
let proxy;

before(async () => {
  gateway = await startGateway();
});

after(async () => {
  await closeAll();
  await proxy?.stop();
  await gateway?.stop();
});

afterEach(async () => {
  await closeAll();
  await proxy?.stop();
  proxy = undefined;
});

async function viaProxy() {
  proxy = await startProxy(gateway.port);
  return proxy;
}

/** Messages of `subscription` until one whose payload equals `last` (bounded). */
async function collectUntil(subscription, last) {
  const seen = [];
  for (;;) {
    const message = await subscription.get(WAIT);
    seen.push(message);
    if (JSON.stringify(message.payload) === JSON.stringify(last)) return seen;
  }
}

describe("requests", () => {
  test("connect authenticates and reports the token's user", async () => {
    const client = await open(gateway.url, gateway.token);
    assert.equal(client.user, "dev");
    assert.equal(client.state, "connected");
  });

  test("publish resolves with the stored seq and the subscriber receives it once", async () => {
    const channel = uniqueChannel();
    const subscriber = await open(gateway.url, gateway.token);
    const subscription = await subscriber.subscribe(channel);
    const publisher = await open(gateway.url, gateway.mint("alice"));
    const published = await publisher.publish(channel, { status: "busy" });
    assert.ok(published.seq > 0);
    assert.equal(published.duplicate, false);
    const message = await subscription.get(WAIT);
    assert.deepEqual(
      [message.channel, message.seq, message.id, message.payload],
      [channel, published.seq, published.id, { status: "busy" }],
    );
    assert.ok(message.timestamp > 0);
  });

  test("async iteration yields messages in seq order and leaving the loop unsubscribes", async () => {
    const channel = uniqueChannel();
    const client = await open(gateway.url, gateway.token);
    const subscription = await client.subscribe(channel);
    for (const n of [1, 2, 3]) await client.publish(channel, n);
    const payloads = [];
    for await (const message of subscription) {
      payloads.push(message.payload);
      if (payloads.length === 3) break;
    }
    assert.deepEqual(payloads, [1, 2, 3]);
    assert.equal(subscription.ended, true);
  });

  test("a callback subscription receives each message", async () => {
    const channel = uniqueChannel();
    const client = await open(gateway.url, gateway.token);
    const received = [];
    let done;
    const both = new Promise((resolve) => {
      done = resolve;
    });
    await client.subscribe(channel, {
      onMessage: (message) => {
        received.push(message.payload);
        if (received.length === 2) done();
      },
    });
    await client.publish(channel, "a");
    await client.publish(channel, "b");
    await within(WAIT, both, "two messages");
    assert.deepEqual(received, ["a", "b"]);
  });

  test("subscribe with last replays the channel's latest messages first", async () => {
    const channel = uniqueChannel();
    const client = await open(gateway.url, gateway.token);
    for (const n of [1, 2, 3, 4]) await client.publish(channel, n);
    const subscription = await client.subscribe(channel, { last: 2 });
    assert.equal((await subscription.get(WAIT)).payload, 3);
    assert.equal((await subscription.get(WAIT)).payload, 4);
  });

  test("a batching client receives history and live messages once, in order", async () => {
    const channel = uniqueChannel();
    const publisher = await open(gateway.url, gateway.token);
    const sent = [];
    for (let n = 0; n < 30; n++) sent.push((await publisher.publish(channel, n)).seq);
    const client = await open(gateway.url, gateway.token, { batch: true });
    assert.equal(client._ws.protocol, BATCH_SUBPROTOCOL);
    const subscription = await client.subscribe(channel, { last: 30 });
    const live = await Promise.all([30, 31, 32].map((n) => publisher.publish(channel, n)));
    sent.push(...live.map((p) => p.seq).sort((a, b) => a - b));
    const seqs = [];
    for (let i = 0; i < 33; i++) seqs.push((await subscription.get(WAIT)).seq);
    assert.deepEqual(seqs, sent);
  });

  test("subscribe with since replays everything after that seq", async () => {
    const channel = uniqueChannel();
    const client = await open(gateway.url, gateway.token);
    const first = await client.publish(channel, "first");
    await client.publish(channel, "second");
    const subscription = await client.subscribe(channel, { since: first.seq });
    assert.equal((await subscription.get(WAIT)).payload, "second");
  });

  test("publishing the same id twice stores it once and reports the duplicate", async () => {
    const channel = uniqueChannel();
    const client = await open(gateway.url, gateway.token);
    const first = await client.publish(channel, "x", { id: "same-id" });
    const again = await client.publish(channel, "x", { id: "same-id" });
    assert.deepEqual([again.seq, again.duplicate], [first.seq, true]);
  });
});

describe("errors carry the protocol's codes", () => {
  test("a channel the token does not allow is refused with forbidden", async () => {
    const client = await open(gateway.url, gateway.mint("bob", { channels: ["agent:*"], publish: [] }));
    const channel = uniqueChannel();
    await assert.rejects(client.subscribe(channel), (error) => {
      assert.ok(error instanceof NeurelayError);
      assert.equal(error.code, "forbidden");
      assert.equal(error.channel, channel);
      return true;
    });
    await assert.rejects(client.publish("agent:1", 1), { code: "forbidden" });
    assert.equal(client.state, "connected");
  });

  test("a malformed channel is refused with invalid_channel", async () => {
    const client = await open(gateway.url, gateway.token);
    await assert.rejects(client.subscribe("agent:*"), { code: "invalid_channel" });
    await assert.rejects(client.publish("nope", 1), { code: "invalid_channel" });
  });

  test("a bad token fails connect with auth_failed", async () => {
    const client = new Client(gateway.url, { token: "not-a-jwt", WebSocket });
    await assert.rejects(client.connect(), { name: "NeurelayError", code: "auth_failed" });
    await client.close();
  });

  test("an unreachable gateway fails connect with connection_lost", async () => {
    proxy = await viaProxy();
    proxy.refuse(true);
    await assert.rejects(connect(proxy.url, { token: gateway.token, WebSocket }), {
      code: "connection_lost",
    });
  });

  test("rate_limited answers the oldest unanswered request and every request settles", async () => {
    const client = await open(gateway.url, gateway.token, { heartbeatInterval: 0 });
    const outcomes = await within(
      WAIT,
      Promise.allSettled(Array.from({ length: 250 }, () => client.ping())),
      "250 pings to settle",
    );
    const refused = outcomes.filter((o) => o.status === "rejected");
    assert.ok(refused.length > 0, "the burst was not rate limited");
    for (const outcome of refused) assert.equal(outcome.reason.code, "rate_limited");
    // The pings answered are the first ones: a refusal never took another's reply.
    const firstRefused = outcomes.findIndex((o) => o.status === "rejected");
    assert.ok(outcomes.slice(0, firstRefused).every((o) => o.status === "fulfilled"));
    assert.equal(client.state, "connected");
  });

  test("closing the client ends subscriptions and rejects later requests with closed", async () => {
    const client = await open(gateway.url, gateway.token);
    const subscription = await client.subscribe(uniqueChannel());
    const waiting = subscription.next();
    await client.close();
    assert.deepEqual(await waiting, { value: undefined, done: true });
    await assert.rejects(client.publish(uniqueChannel(), 1), { code: "closed" });
    assert.equal(client.state, "closed");
  });
});

describe("reconnect and resume", () => {
  test("after a disconnect the subscription resumes from the last delivered seq without gap or duplicate", async () => {
    const channel = uniqueChannel();
    const link = await viaProxy();
    const client = await open(link.url, gateway.token);
    const backend = await open(gateway.url, gateway.mint("backend"));
    const subscription = await client.subscribe(channel);
    await backend.publish(channel, 1);
    assert.equal((await subscription.get(WAIT)).payload, 1);

    link.refuse(true);
    const disconnected = nextEvent(client, "disconnected");
    link.cut();
    await within(WAIT, disconnected, "the disconnect");
    for (const n of [2, 3]) await backend.publish(channel, n);
    const reconnected = nextEvent(client, "connected");
    link.refuse(false);
    await within(WAIT, reconnected, "the reconnect");
    await backend.publish(channel, 4);

    const seen = await collectUntil(subscription, 4);
    assert.deepEqual(
      seen.map((m) => m.payload),
      [2, 3, 4],
    );
    assert.ok(seen.every((m, i) => i === 0 || m.seq > seen[i - 1].seq));
    assert.equal(client.reconnects, 1);
  });

  test("a subscription that delivered nothing yet resumes from the seq of its confirmation", async () => {
    const channel = uniqueChannel();
    const link = await viaProxy();
    const backend = await open(gateway.url, gateway.mint("backend"));
    await backend.publish(channel, "before");
    const client = await open(link.url, gateway.token);
    const subscription = await client.subscribe(channel);

    link.refuse(true);
    const disconnected = nextEvent(client, "disconnected");
    link.cut();
    await within(WAIT, disconnected, "the disconnect");
    await backend.publish(channel, "during");
    const reconnected = nextEvent(client, "connected");
    link.refuse(false);
    await within(WAIT, reconnected, "the reconnect");
    await backend.publish(channel, "after");

    const seen = await collectUntil(subscription, "after");
    assert.deepEqual(
      seen.map((m) => m.payload),
      ["during", "after"],
    );
  });

  test("a publish whose reply was lost is re-sent with the same id and stored once", async () => {
    const channel = uniqueChannel();
    const link = await viaProxy();
    const client = await open(link.url, gateway.token, { heartbeatInterval: 0 });
    const watcher = await open(gateway.url, gateway.mint("watcher"));
    const watched = await watcher.subscribe(channel);
    const subscription = await client.subscribe(channel);

    link.muteReplies(true);
    const publishing = client.publish(channel, "once");
    const stored = await watched.get(WAIT); // the gateway stored it; its reply is swallowed
    link.refuse(true);
    link.cut();
    link.muteReplies(false);
    await within(WAIT, nextEvent(client, "disconnected"), "the disconnect");
    link.refuse(false);

    const published = await within(WAIT, publishing, "the re-sent publish");
    assert.deepEqual([published.seq, published.duplicate], [stored.seq, true]);
    await watcher.publish(channel, "next");
    const seen = await collectUntil(subscription, "next");
    assert.deepEqual(
      seen.map((m) => m.payload),
      ["once", "next"],
    );
  });

  test("requests made while disconnected are sent once reconnected", async () => {
    const channel = uniqueChannel();
    const link = await viaProxy();
    const client = await open(link.url, gateway.token);
    link.refuse(true);
    const disconnected = nextEvent(client, "disconnected");
    link.cut();
    await within(WAIT, disconnected, "the disconnect");
    const subscribing = client.subscribe(channel);
    const publishing = client.publish(channel, "queued");
    link.refuse(false);
    const subscription = await within(WAIT, subscribing, "the queued subscribe");
    const published = await within(WAIT, publishing, "the queued publish");
    const message = await subscription.get(WAIT);
    assert.deepEqual([message.payload, message.seq], ["queued", published.seq]);
  });

  test("auth_failed on a reconnect stops the client and ends its subscriptions with that error", async () => {
    const link = await viaProxy();
    let calls = 0;
    const client = await open(link.url, () => (++calls === 1 ? gateway.token : "revoked"));
    const subscription = await client.subscribe(uniqueChannel());
    const closed = nextEvent(client, "closed");
    link.cut();
    const { error } = await within(WAIT, closed, "the client to stop");
    assert.equal(error.code, "auth_failed");
    await assert.rejects(subscription.next(), { code: "auth_failed" });
    await assert.rejects(client.ping(), { code: "auth_failed" });
  });

  test("without reconnect a disconnect ends the client with connection_lost", async () => {
    const link = await viaProxy();
    const client = await open(link.url, gateway.token, { reconnect: false });
    const subscription = await client.subscribe(uniqueChannel());
    const closed = nextEvent(client, "closed");
    link.cut();
    assert.equal((await within(WAIT, closed, "the client to stop")).error.code, "connection_lost");
    await assert.rejects(subscription.get(), { code: "connection_lost" });
  });

  test("an expired token is renewed from the token function and the connection stays", async () => {
    const channel = uniqueChannel();
    let calls = 0;
    const client = await open(gateway.url, () =>
      gateway.mint("renewing", { ttl: ++calls === 1 ? 1 : 3600 }),
    );
    const subscription = await client.subscribe(channel);
    const expired = nextEvent(client, "error", (e) => e.code === "token_expired");
    await within(WAIT, expired, "the token_expired notice");
    // Frames are refused until the fresh token is accepted; the reply order makes this one wait.
    const published = await client.publish(channel, "renewed");
    assert.equal((await subscription.get(WAIT)).seq, published.seq);
    assert.equal(calls, 2);
    assert.equal(client.reconnects, 0);
  });
});

describe("presence", () => {
  test("presence, presenceStats and join/leave of another connection", async () => {
    const channel = uniqueChannel();
    const watcher = await open(gateway.url, gateway.mint("watcher"));
    const subscription = await watcher.subscribe(channel);
    const joins = [];
    const left = new Promise((resolve) => subscription.on("leave", resolve));
    const joined = new Promise((resolve) => subscription.on("join", (member) => resolve(joins.push(member))));
    const clientJoins = [];
    watcher.on("join", (member) => clientJoins.push(member));

    const other = await open(gateway.url, gateway.mint("bob", { info: { name: "Bob" } }));
    await other.subscribe(channel);
    await within(WAIT, joined, "bob's join");
    const presence = await subscription.presence();
    const stats = await watcher.presenceStats(channel);
    await other.unsubscribe(channel);
    const leave = await within(WAIT, left, "bob's leave");

    assert.deepEqual(joins.map((m) => [m.user, m.info]), [["bob", { name: "Bob" }]]);
    assert.deepEqual(clientJoins.map((m) => [m.channel, m.user]), [[channel, "bob"]]);
    assert.deepEqual(
      presence.clients.map((c) => [c.user, c.info]).sort(),
      [["bob", { name: "Bob" }], ["watcher", null]],
    );
    assert.equal(presence.truncated, false);
    assert.deepEqual([stats.users, stats.connections], [2, 2]);
    assert.equal(leave.connection, joins[0].connection);
  });

  test("a refused presence request rejects with the gateway's code", async () => {
    const client = await open(gateway.url, gateway.token);
    await assert.rejects(client.presence("nowhere:x"), (error) => error.code === "invalid_channel");
  });
});
