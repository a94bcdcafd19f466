/**
 * Test support: a real gateway (`neurelay dev` as a child process), tokens, and a TCP proxy
 * that can cut connections, so tests can make the client lose its connection at will.
 *
 * The gateway is started with the Python of NEURELAY_PYTHON, else the repository's
 * .venv/bin/python, else python3. Node 20 has no global WebSocket: tests pass the `ws`
 * package (a devDependency) as `options.WebSocket`.
 */

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

import { Client } from "../neurelay.js";

export { WebSocket };

const here = path.dirname(fileURLToPath(import.meta.url));
const repository = path.resolve(here, "..", "..", "..");

function python() {
  if (process.env.NEURELAY_PYTHON) return process.env.NEURELAY_PYTHON;
  const venv = path.join(repository, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolve with `promise`, or reject after `ms` naming `what` (every wait in the tests is bounded). */
export function within(ms, promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/** The first event `event` of `client` that satisfies `predicate`. */
export function nextEvent(client, event, predicate = () => true) {
  return new Promise((resolve) => {
    const off = client.on(event, (detail) => {
      if (predicate(detail)) {
        off();
        resolve(detail);
      }
    });
  });
}

/**
 * `neurelay dev` on a free port: { url, token, secret, mint(), stop() }.
 * The URL and token are read from what it prints.
 */
export async function startGateway() {
  const port = await freePort();
  const secret = `js-test-${randomBytes(16).toString("hex")}`;
  const child = spawn(
    python(),
    ["-m", "neurelay.cli", "dev", "--port", String(port), "--jwt-secret", secret],
    { cwd: repository, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stderr.on("data", (chunk) => {
    output += chunk;
  });
  const ready = new Promise((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const url = output.match(/gateway ready at (ws:\/\/\S+)/)?.[1];
      const token = output.match(/token \(user[^\n]*\n\s*(\S+)/)?.[1];
      if (url && token) resolve({ url, token });
    });
    child.once("exit", (code) => reject(new Error(`neurelay dev exited (${code}):\n${output}`)));
    child.once("error", reject);
  });
  const { url, token } = await within(60_000, ready, `neurelay dev to start:\n${output}`);
  return {
    url,
    token,
    secret,
    port,
    mint: (user, claims) => mintToken(secret, user, claims),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGINT");
      try {
        await within(20_000, exited, "neurelay dev to stop");
      } catch {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

function base64url(data) {
  return Buffer.from(data).toString("base64url");
}

/** An HS256 token like `neurelay token` mints. */
export function mintToken(secret, user, { channels = ["*"], publish = ["*"], ttl = 3600, info } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = base64url(JSON.stringify({ sub: user, iat: now, exp: now + ttl, channels, publish, info }));
  const signature = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

/**
 * A TCP proxy to 127.0.0.1:`targetPort`. `cut()` drops every connection through it;
 * `refuse(true)` makes new connections fail; `muteReplies(true)` swallows gateway-to-client
 * bytes (so a request reaches the gateway but its reply never arrives).
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  let refusing = false;
  let muted = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    client.on("data", (data) => upstream.write(data));
    upstream.on("data", (data) => {
      if (!muted) client.write(data);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    cut() {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
    refuse(value) {
      refusing = value;
    },
    muteReplies(value) {
      muted = value;
    },
    async stop() {
      this.cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A connected client with test-friendly back-off; closed by `closeAll`. */
export async function open(url, token, options = {}) {
  const client = new Client(url, {
    token,
    WebSocket,
    backoffInitial: 20,
    backoffMax: 200,
    requestTimeout: 15_000,
    ...options,
  });
  opened.push(client);
  await client.connect();
  return client;
}

const opened = [];

export async function closeAll() {
  for (const client of opened.splice(0)) await client.close();
}

let channels = 0;
/** A channel name no other test uses. */
export function uniqueChannel(namespace = "conversation") {
  channels += 1;
  return `${namespace}:js-${process.pid}-${Date.now().toString(36)}-${channels}`;
}
