/**
 * Types of neurelay.js, the browser (and Node) client of the Neurelay gateway, protocol v1.
 * The wire contract: docs/protocol.md.
 */

/** The WebSocket subprotocol the client speaks. */
export declare const SUBPROTOCOL: "neurelay.v1.json";
/** The batched variant (`batch: true`): a frame from the gateway may hold several frames, one per line. */
export declare const BATCH_SUBPROTOCOL: "neurelay.v1.json+batch";

/** Error codes of the protocol (docs/protocol.md, "Error codes"). */
export type ErrorCode =
  | "bad_request"
  | "unknown_type"
  | "unauthenticated"
  | "auth_failed"
  | "token_expired"
  | "forbidden"
  | "invalid_channel"
  | "not_subscribed"
  | "too_many_subscriptions"
  | "message_too_large"
  | "rate_limited"
  | "too_many_connections"
  | "presence_disabled"
  | "unavailable"
  | "internal";

/**
 * The client's own codes: `connection_lost` (the connection dropped before a reply that
 * cannot be repeated, or could not be opened), `closed` (the client or subscription was
 * closed), `timeout` (no reply within `requestTimeout`).
 */
export type ClientErrorCode = "connection_lost" | "closed" | "timeout";

export declare const ERROR_CODES: readonly ErrorCode[];
export declare const CLIENT_ERROR_CODES: readonly ClientErrorCode[];

/** Close codes the gateway ends a connection with (docs/protocol.md, "Close codes"). */
export declare const CLOSE_CODES: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  PROTOCOL_ERROR: 1002;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  SERVICE_RESTART: 1012;
  AUTH_TIMEOUT: 4001;
  TOO_MANY_CONNECTIONS: 4003;
  SLOW_CONSUMER: 4005;
  DISCONNECTED: 4008;
  TOKEN_REVOKED: 4009;
}>;
export type CloseCode = (typeof CLOSE_CODES)[keyof typeof CLOSE_CODES];

/** Every error the client rejects with or reports. */
export declare class NeurelayError extends Error {
  constructor(
    code: ErrorCode | ClientErrorCode,
    message: string,
    details?: { channel?: string | null; id?: FrameId | null; closeCode?: number | null },
  );
  readonly name: "NeurelayError";
  readonly code: ErrorCode | ClientErrorCode;
  /** The gateway's (or the client's) explanation, without the code. */
  readonly detail: string;
  /** The channel the error concerns, when it concerns one. */
  readonly channel: string | null;
  /** The id of the request it answers, when it answers one. */
  readonly id: FrameId | null;
  /** The WebSocket close code, when a connection could not be opened. */
  readonly closeCode: number | null;
}

export type FrameId = string | number;

/** Any JSON value (a message payload). */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export interface Message<P = JsonValue> {
  channel: string;
  payload: P;
  /** JetStream sequence; grows along a channel, 0 in namespaces without history. */
  seq: number;
  /** The publisher's id, if it gave one. */
  id: FrameId | null;
  /** Milliseconds since the epoch, when the gateway accepted the publish. */
  timestamp: number;
}

export interface Published {
  channel: string;
  /** 0 in namespaces without history. */
  seq: number;
  /** True when this id had been stored before (a retry): `seq` is the first message's. */
  duplicate: boolean;
  /** The message id used (given or generated). */
  id: string;
}

/** One connection in a channel's presence; `info` is its token's `info` claim. */
export interface PresenceMember {
  user: string;
  /** Opaque, unique across the gateway's replicas. */
  connection: string;
  info: { [key: string]: JsonValue } | null;
}

export interface Presence {
  channel: string;
  clients: PresenceMember[];
  /** True when the gateway cut the list at its limit (`presence.max_clients`). */
  truncated: boolean;
}

export interface PresenceStats {
  channel: string;
  /** Distinct users. */
  users: number;
  connections: number;
}

export interface SubscriptionEvents {
  /** Another connection subscribed (namespaces with join/leave on). */
  join: PresenceMember;
  /** A connection unsubscribed, disconnected, or its gateway replica died. */
  leave: PresenceMember;
}

/** Something that returns a token, e.g. by asking your backend; asked again on expiry. */
export type TokenSource = string | (() => string | Promise<string>);

/** The browser WebSocket constructor, or a compatible one (the `ws` package in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  token: TokenSource;
  /** Default: globalThis.WebSocket. Node before 22 needs one, e.g. `(await import("ws")).default`. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect after a disconnect (default true). */
  reconnect?: boolean;
  /** First back-off delay in ms (default 100); doubles per failed attempt, times a jitter in [0.5, 1). */
  backoffInitial?: number;
  /** Largest back-off delay in ms (default 10000). */
  backoffMax?: number;
  /** Each wait for the connection or for a reply is bounded by this, in ms (default 30000; 0 = none). */
  requestTimeout?: number;
  /** Application ping interval in ms; a ping unanswered at the next one drops the connection (default 30000; 0 = off). */
  heartbeatInterval?: number;
  /** Offer `neurelay.v1.json+batch` before `neurelay.v1.json`: fewer, larger frames under load (default false). */
  batch?: boolean;
}

export interface SubscribeOptions<P = JsonValue> {
  /** Deliver retained messages with seq > since first (0 = everything retained). */
  since?: number;
  /** Deliver the last N retained messages first (1-10000). */
  last?: number;
  /** Deliver messages to this callback instead of the iterator. */
  onMessage?: (message: Message<P>) => void;
}

export type ClientState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface ClientEvents {
  state: ClientState;
  /** A connection is up, authenticated, with every subscription restored. */
  connected: { user: string | null; reconnects: number };
  /** A connection dropped (the client reconnects unless closed or told not to). */
  disconnected: { code: number; reason: string };
  /** A reconnect attempt is about to be made after `delay` ms. */
  reconnecting: { attempt: number; delay: number };
  /** A gateway error not tied to a request, a failed reconnect attempt, or a callback that threw. */
  error: unknown;
  /** The client stopped for good; `error` is null when `close()` was called. */
  closed: { error: NeurelayError | null };
  /** Another connection subscribed to a followed channel (namespaces with join/leave on). */
  join: PresenceMember & { channel: string };
  /** A connection left a followed channel. */
  leave: PresenceMember & { channel: string };
  /** A backend ended this client's subscription to `channel` (the server API). */
  unsubscribed: { channel: string };
}

/** Messages of one channel, in order, each once. Leaving a `for await` loop unsubscribes. */
export declare class Subscription<P = JsonValue> implements AsyncIterableIterator<Message<P>> {
  readonly channel: string;
  /** The seq of the last message delivered (0 before any). */
  readonly lastSeq: number;
  /** From the latest `subscribed`: false when some requested history may be gone. */
  readonly recovered: boolean;
  /** True once the subscription ended (unsubscribed, client closed, or refused). */
  readonly ended: boolean;
  /** The next message; rejects with `timeout` after `timeoutMs`, or with why it ended. */
  get(timeoutMs?: number): Promise<Message<P>>;
  unsubscribe(): Promise<void>;
  /** Who is subscribed to this channel on every replica (`presence_disabled` where off). */
  presence(): Promise<Presence>;
  presenceStats(): Promise<PresenceStats>;
  on<E extends keyof SubscriptionEvents>(event: E, listener: (member: SubscriptionEvents[E]) => void): () => void;
  next(): Promise<IteratorResult<Message<P>>>;
  return(): Promise<IteratorResult<Message<P>>>;
  [Symbol.asyncIterator](): AsyncIterableIterator<Message<P>>;
}

export declare class Client {
  constructor(url: string, options: ClientOptions);
  readonly url: string;
  /** The token's `sub`, once authenticated. */
  readonly user: string | null;
  /** Successful reconnects so far. */
  readonly reconnects: number;
  readonly state: ClientState;
  /** Open the first connection; rejects (NeurelayError) if it cannot be made and authenticated. */
  connect(): Promise<this>;
  /** Close for good: subscriptions end, unanswered requests reject with `closed`. */
  close(): Promise<void>;
  on<E extends keyof ClientEvents>(event: E, listener: (detail: ClientEvents[E]) => void): () => void;
  /** Resolves once the gateway confirmed the subscription; history (since/last) follows. */
  subscribe<P = JsonValue>(channel: string, options?: SubscribeOptions<P>): Promise<Subscription<P>>;
  unsubscribe(channel: string): Promise<void>;
  /** Resolves once stored; retried across reconnects with the same id, so stored once. */
  publish(channel: string, payload: JsonValue, options?: { id?: string }): Promise<Published>;
  ping(): Promise<void>;
  /** Who is subscribed to `channel` on every replica (`presence_disabled` where off). */
  presence(channel: string): Promise<Presence>;
  presenceStats(channel: string): Promise<PresenceStats>;
}

/** Create a client and open its first connection. */
export declare function connect(url: string, options: ClientOptions): Promise<Client>;

/** The delay in ms before reconnect attempt `attempt` (0-based). */
export declare function backoffDelay(
  attempt: number,
  initial: number,
  max: number,
  random?: () => number,
): number;

/** ws(s)://<host><path>ws for a page served by the gateway (default: location.href). */
export declare function gatewayUrl(base?: string): string;
