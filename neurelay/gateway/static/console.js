/**
 * The Neurelay console page: connect with a token, subscribe, publish, and watch messages,
 * their seq, who is in each subscribed channel (live, where the namespace has presence and
 * join/leave on), reconnects and the gateway's counters. It uses the same client module the
 * gateway serves to everyone (/client/neurelay.js). The token stays in this page's memory.
 */

import { Client, gatewayUrl } from "../client/neurelay.js";

const MAX_ROWS = 500;
const STATS_INTERVAL = 1000;
const $ = (id) => document.getElementById(id);

let client = null;
const subscriptions = new Map(); // channel -> <li>

// -- events and state --------------------------------------------------------------------------

function logEvent(kind, text) {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("events").prepend(item);
  while ($("events").children.length > MAX_ROWS) $("events").lastChild.remove();
}

function showState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  document.body.dataset.state = state;
  const live = client !== null && state !== "closed" && state !== "idle";
  $("connect").disabled = live;
  $("disconnect").disabled = !live;
  $("subscribe").disabled = !live;
  $("publish").disabled = !live;
}

function note(id, text, isError = false) {
  $(id).textContent = text;
  $(id).classList.toggle("error", isError);
}

function describe(error) {
  return error?.code ? `${error.code}: ${error.detail ?? error.message}` : String(error);
}

// -- connecting --------------------------------------------------------------------------------

async function connect(token) {
  if (client) await client.close();
  const url = gatewayUrl(location.href);
  const current = new Client(url, { token, backoffInitial: 200, backoffMax: 3000 });
  client = current;
  subscriptions.clear();
  $("subscriptions").replaceChildren();
  current.on("state", (state) => client === current && showState(state));
  current.on("connected", ({ user, reconnects }) => {
    if (client !== current) return;
    $("user").textContent = user ?? "–";
    $("reconnects").textContent = String(reconnects);
    logEvent(reconnects ? "reconnect" : "connect", reconnects ? `reconnected (#${reconnects}), subscriptions resumed` : `connected as ${user}`);
  });
  current.on("disconnected", ({ code, reason }) => {
    if (client === current) logEvent("disconnect", `disconnected (close code ${code}${reason ? `, ${reason}` : ""})`);
  });
  current.on("reconnecting", ({ attempt, delay }) => {
    if (client === current) logEvent("info", `reconnect attempt ${attempt} in ${Math.round(delay)} ms`);
  });
  current.on("error", (error) => client === current && logEvent("error", describe(error)));
  current.on("closed", ({ error }) => {
    if (client !== current) return;
    logEvent(error ? "error" : "info", error ? `stopped: ${describe(error)}` : "disconnected");
    for (const item of subscriptions.values()) item.dataset.ended = "true";
  });
  showState("connecting");
  try {
    await current.connect();
    note("auth-note", `connected to ${url}`);
  } catch (error) {
    if (client === current) {
      client = null;
      showState("idle");
    }
    note("auth-note", describe(error), true);
    logEvent("error", `connect failed: ${describe(error)}`);
  }
}

async function probeDevToken() {
  let response;
  try {
    response = await fetch(new URL("dev-token", import.meta.url), {
      method: "POST",
      headers: { "X-Neurelay-Console": "1" },
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    return;
  }
  if (response.status === 404) return;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    note("auth-note", `dev token not given: ${body.message ?? response.status}`);
    return;
  }
  $("dev-token").hidden = false;
  $("dev-token").onclick = () => {
    $("token").value = body.token;
    connect(body.token);
  };
  if (!$("token").value.trim() && !client) {
    $("token").value = body.token;
    note("auth-note", "using the development token of neurelay dev");
    connect(body.token);
  }
}

// -- subscriptions and messages ----------------------------------------------------------------

function addMessage(message) {
  const row = document.createElement("tr");
  row.className = "fresh";
  row.dataset.channel = message.channel;
  row.dataset.seq = String(message.seq);
  const payload = JSON.stringify(message.payload);
  row.dataset.payload = payload;
  for (const text of [
    new Date(message.timestamp || Date.now()).toLocaleTimeString(),
    message.channel,
    String(message.seq),
    payload,
  ]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  const body = $("messages").tBodies[0];
  body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.lastChild.remove();
  const item = subscriptions.get(message.channel);
  if (item) item.querySelector(".last-seq").textContent = String(message.seq);
}

function subscriptionItem(channel) {
  const item = document.createElement("li");
  item.dataset.channel = channel;
  const label = document.createElement("span");
  const name = document.createElement("code");
  name.textContent = channel;
  const seq = document.createElement("span");
  seq.className = "last-seq";
  seq.textContent = "–";
  const recovered = document.createElement("span");
  recovered.className = "muted recovered";
  const here = document.createElement("span");
  here.className = "muted presence";
  label.append(name, " last seq ", seq, " ", recovered, " ", here);
  const drop = document.createElement("button");
  drop.type = "button";
  drop.className = "small";
  drop.textContent = "unsubscribe";
  drop.onclick = async () => {
    item.remove();
    subscriptions.delete(channel);
    try {
      await client?.unsubscribe(channel);
      logEvent("info", `unsubscribed from ${channel}`);
    } catch (error) {
      logEvent("error", `unsubscribe ${channel}: ${describe(error)}`);
    }
  };
  item.append(label, drop);
  return item;
}

async function subscribe(event) {
  event.preventDefault();
  if (!client) return;
  const channel = $("subscribe-channel").value.trim();
  const mode = $("subscribe-mode").value;
  const number = $("subscribe-number").value;
  const options = { onMessage: addMessage };
  if (mode && number !== "") options[mode] = Number(number);
  subscriptions.get(channel)?.remove();
  const item = subscriptionItem(channel);
  subscriptions.set(channel, item);
  $("subscriptions").append(item);
  try {
    const subscription = await client.subscribe(channel, options);
    item.dataset.subscribed = "true";
    item.querySelector(".recovered").textContent = subscription.recovered ? "" : "(history incomplete)";
    logEvent("info", `subscribed to ${channel}`);
    await showPresence(subscription, item);
  } catch (error) {
    item.remove();
    if (subscriptions.get(channel) === item) subscriptions.delete(channel);
    logEvent("error", `subscribe ${channel}: ${describe(error)}`);
  }
}

/** Who is in the channel: asked once, then kept current from join and leave. */
async function showPresence(subscription, item) {
  const people = new Map(); // connection -> display name
  const name = (member) => (typeof member.info?.name === "string" ? member.info.name : member.user);
  const render = () => {
    const names = [...new Set(people.values())].sort();
    item.querySelector(".presence").textContent = names.length ? `here: ${names.join(", ")}` : "";
  };
  subscription.on("join", (member) => {
    people.set(member.connection, name(member));
    logEvent("info", `${name(member)} joined ${subscription.channel}`);
    render();
  });
  subscription.on("leave", (member) => {
    people.delete(member.connection);
    logEvent("info", `${name(member)} left ${subscription.channel}`);
    render();
  });
  try {
    const presence = await subscription.presence();
    for (const member of presence.clients) people.set(member.connection, name(member));
    render();
  } catch (error) {
    if (error.code !== "presence_disabled") {
      logEvent("error", `presence ${subscription.channel}: ${describe(error)}`);
    }
  }
}

async function publish(event) {
  event.preventDefault();
  if (!client) return;
  const channel = $("publish-channel").value.trim();
  const text = $("publish-payload").value;
  let payload;
  try {
    payload = JSON.parse(text);
  } catch {
    payload = text; // not JSON: sent as a string, like `neurelay pub`
  }
  note("publish-result", "publishing …");
  try {
    const published = await client.publish(channel, payload);
    note(
      "publish-result",
      `stored in ${published.channel} as seq ${published.seq}${published.duplicate ? " (duplicate)" : ""}`,
    );
  } catch (error) {
    note("publish-result", describe(error), true);
  }
}

// -- the gateway's counters --------------------------------------------------------------------

let previous = null;

function rate(now, before, key, namespace) {
  if (!before) return 0;
  const seconds = (now.time - before.time) / 1000;
  const delta = (now[key][namespace] ?? 0) - (before[key][namespace] ?? 0);
  return seconds > 0 ? Math.max(0, delta / seconds) : 0;
}

function total(snapshot, key) {
  return Object.values(snapshot[key]).reduce((a, b) => a + b, 0);
}

async function pollStats() {
  let now;
  try {
    const response = await fetch(new URL("stats", import.meta.url), { cache: "no-store" });
    if (!response.ok) throw new Error(String(response.status));
    now = await response.json();
  } catch {
    $("stats-state").textContent = "(unreachable)";
    previous = null;
    return;
  }
  $("stats-state").textContent = now.draining ? "(draining)" : now.ready ? "" : "(not ready)";
  $("stat-connections").textContent = String(now.connections);
  $("stat-channels").textContent = String(now.channels);
  const namespaces = [...new Set([...Object.keys(now.messages_in), ...Object.keys(now.messages_out)])].sort();
  let inRate = 0;
  let outRate = 0;
  const rows = namespaces.map((namespace) => {
    const rin = rate(now, previous, "messages_in", namespace);
    const rout = rate(now, previous, "messages_out", namespace);
    inRate += rin;
    outRate += rout;
    const row = document.createElement("tr");
    row.dataset.namespace = namespace;
    for (const text of [namespace, rin.toFixed(1), rout.toFixed(1), String(now.messages_in[namespace] ?? 0)]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  $("namespace-rates").tBodies[0].replaceChildren(...rows);
  $("stat-in-rate").textContent = previous ? inRate.toFixed(1) : "–";
  $("stat-out-rate").textContent = previous ? outRate.toFixed(1) : "–";
  $("stats-panel").dataset.messagesIn = String(total(now, "messages_in"));
  previous = now;
}

async function pollForever() {
  for (;;) {
    await pollStats();
    await new Promise((resolve) => setTimeout(resolve, STATS_INTERVAL));
  }
}

// -- wiring ------------------------------------------------------------------------------------

$("endpoint").textContent = gatewayUrl(location.href);
$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) {
    note("auth-note", "paste a token first", true);
    return;
  }
  connect(token);
});
$("disconnect").addEventListener("click", async () => {
  const current = client;
  client = null;
  await current?.close();
  showState("idle");
  subscriptions.clear();
  $("subscriptions").replaceChildren();
  logEvent("info", "disconnected by you");
});
$("subscribe-form").addEventListener("submit", subscribe);
$("publish-form").addEventListener("submit", publish);
$("subscribe-channel").addEventListener("change", () => {
  if (!$("publish-channel").value) $("publish-channel").value = $("subscribe-channel").value;
});
$("clear-messages").addEventListener("click", () => $("messages").tBodies[0].replaceChildren());
showState("idle");
probeDevToken();
pollForever();
document.body.dataset.ready = "true";
