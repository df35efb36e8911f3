// Types for the socktopus package: the same API in browsers and Node, plus
// the synchronous createTokenSync, authHeadersSync and verifyWebhookSync in
// Node only.

/** A moment: a Date, or Unix time in milliseconds (as Date.now() gives). */
export type Moment = Date | number;

/**
 * A relay token for `connectionId` (1 to 256 bytes of UTF-8), stamped `now`
 * (default: the current time). Web Crypto, so it is async everywhere.
 * Rejects with a TypeError or RangeError for inputs the daemon would refuse.
 */
export function createToken(
  app: string,
  secret: string,
  connectionId: string,
  now?: Moment,
): Promise<string>;

/** Node only: as createToken, computed with node:crypto and returned at once. */
export function createTokenSync(
  app: string,
  secret: string,
  connectionId: string,
  now?: Moment,
): string;

/** The Auth Headers of one request; pass them to fetch as they are. */
export interface AuthHeaders {
  UserID: string;
  /** The path requested, query string included. */
  Path: string;
  /** Unix time in seconds. */
  "Time-Sent": string;
  HMAC: string;
  Encoding: "hex" | "base64";
  [header: string]: string;
}

/**
 * Sign a request to `path` with a session secret (as /login returned it).
 * `now` is a Date or milliseconds; Time-Sent is written in seconds.
 */
export function authHeaders(
  userId: number | string,
  secret: string,
  path: string,
  now?: Moment,
  encoding?: "hex" | "base64",
): Promise<AuthHeaders>;

/** Node only: as authHeaders, computed with node:crypto and returned at once. */
export function authHeadersSync(
  userId: number | string,
  secret: string,
  path: string,
  now?: Moment,
  encoding?: "hex" | "base64",
): AuthHeaders;

/** A request body as it arrived, unparsed: what the daemon signed. */
export type RawBody = string | Uint8Array | ArrayBuffer | ArrayBufferView;

/**
 * Whether a webhook request is the daemon's (SPEC §7.2): `header`, its
 * Socktopus-Signature (`t=<ms>,v1=<hex>`), signs the raw `body` with the
 * app's `secret`, at a time within 5 minutes of `now` (default: the current
 * time). Resolves to false for a missing or malformed header, a wrong
 * signature, or a time too old (a replay) or too far ahead. Web Crypto, so
 * it is async everywhere; rejects with a TypeError for a body that is not
 * raw (a parsed object) or an empty secret.
 */
export function verifyWebhook(
  body: RawBody,
  header: string | string[] | null | undefined,
  secret: string,
  now?: Moment,
): Promise<boolean>;

/** Node only: as verifyWebhook, computed with node:crypto and returned at once. */
export function verifyWebhookSync(
  body: RawBody,
  header: string | string[] | null | undefined,
  secret: string,
  now?: Moment,
): boolean;

/** A request the daemon refused or failed. */
export class SocktopusError extends Error {
  readonly name: "SocktopusError";
  /** The HTTP status: 400, 401, 404, 413, 429, 503... */
  readonly status: number;
  /** The daemon's answer: parsed JSON, or the raw text when it was not JSON. */
  readonly body: unknown;
  /**
   * Seconds to wait before trying again, from the answer's Retry-After
   * header: a 429 of login throttling has it (1 s after 5 wrong passwords,
   * doubling, at most 900). Undefined when the answer had none.
   */
  readonly retryAfter: number | undefined;
  constructor(status: number, message: string, body?: unknown, retryAfter?: number);
}

export interface Message {
  recipient: string;
  content: string;
}

export interface SendResult {
  /** Delivered to a live connection, in the order given. */
  succeeded: Message[];
  /** Not connected, over the size cap, or its client cut off. */
  failed: Message[];
}

export interface KickResult {
  kicked: string[];
  notConnected: string[];
}

/** The answer to presence(ids): each id in the order asked, duplicates as given. */
export interface PresenceResult {
  connected: string[];
  notConnected: string[];
}

/** The answer to presence() without ids: every connected id of the app. */
export interface AllPresenceResult {
  count: number;
  connected: string[];
}

export interface RelayClientOptions {
  /** The daemon's base URL, e.g. "https://relay.example.com". */
  baseUrl: string;
  /** The app's name, as in <APP>_SOCKTOPUS_SECRET. */
  app: string;
  secret: string;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

/** Sends to, kicks and asks about the connections of one app (POST /send, /kick, /presence). */
export class RelayClient {
  constructor(options: RelayClientOptions);
  readonly baseUrl: string;
  readonly app: string;
  /** A token for one of this app's connections (see createToken). */
  token(connectionId: string, now?: Moment): Promise<string>;
  /**
   * Deliver messages in order: an array of {recipient, content}, a
   * {recipient: content} object or a Map. Rejects with SocktopusError.
   */
  send(messages: Message[] | Record<string, string> | Map<string, string>): Promise<SendResult>;
  /** Close connections for good (they receive CLOSE). Rejects with SocktopusError. */
  kick(connectionIds: string | Iterable<string>): Promise<KickResult>;
  /** Every connected id of the app, and how many. Rejects with SocktopusError. */
  presence(connectionIds?: null): Promise<AllPresenceResult>;
  /** Which of these ids are connected, in the order asked. Rejects with SocktopusError. */
  presence(connectionIds: string | Iterable<string>): Promise<PresenceResult>;
}

export interface CloseEvent {
  /**
   * "kicked": the daemon said CLOSE (a kick, a newer connection with the same
   * id, or the daemon shutting down); "closed": close() was called;
   * "failed": maxAttempts connections in a row failed.
   */
  reason: "kicked" | "closed" | "failed";
  /** The WebSocket close code, when there was a socket. */
  code?: number;
}

export interface ConnectHandlers {
  /** The connection is up (again, after a reconnection). */
  onOpen?(): void;
  /** The content of each DATA: frame, in the order /send accepted it. */
  onMessage?(content: string): void;
  /** Final: nothing follows, no reconnection. */
  onClose?(event: CloseEvent): void;
  /**
   * The connection dropped or did not open (`code`), or getToken() failed
   * (`error`); the next try starts in `delay` ms.
   */
  onReconnecting?(event: { attempt: number; delay: number; code?: number; error?: unknown }): void;
  /**
   * getToken() failed, or a handler threw. Without this handler a handler's
   * error is thrown uncaught; getToken() failures are retried all the same.
   */
  onError?(error: unknown): void;
  /** The daemon answered a PING. */
  onPong?(): void;
}

/** Anything built like the standard WebSocket (the `ws` package fits). */
export interface WebSocketConstructor {
  new (url: string): {
    readonly readyState: number;
    onopen: ((event: any) => void) | null;
    onmessage: ((event: { data: unknown }) => void) | null;
    onclose: ((event: { code: number }) => void) | null;
    onerror: ((event: any) => void) | null;
    send(data: string): void;
    close(code?: number): void;
  };
}

export interface ConnectOptions {
  /**
   * Default: the global WebSocket (browsers; Node 22+, or 20 with
   * --experimental-websocket); in Node without one, the `ws` package when it
   * is installed. With none of them, connect() throws a TypeError.
   */
  WebSocket?: WebSocketConstructor;
  /** Milliseconds between PINGs. Default 10000; the daemon closes after 20 s of silence. */
  pingInterval?: number;
  /** First reconnection delay in ms (before jitter). Default 500. */
  minDelay?: number;
  /** Longest reconnection delay in ms. Default 30000. */
  maxDelay?: number;
  /** Give up after this many failed connections in a row. Default: never. */
  maxAttempts?: number;
  /** Default "/recieve", the original's spelling; "/receive" works too. */
  path?: string;
}

export interface Connection {
  /** Whether the socket is open now. */
  readonly connected: boolean;
  /** Resolves with what onClose receives, once the connection is over for good. */
  readonly closed: Promise<CloseEvent>;
  /**
   * Send `DATA:<content>` to the app's backend, which gets it as a `message`
   * event on its webhook. True if it was handed to the open socket; false,
   * with nothing sent or queued, while not connected. The daemon closes a
   * connection that sends this when the app has no webhook, a content over
   * its --max-message-size, or more than --client-message-rate messages a
   * second (default 20, bursts of 40). Throws a TypeError for a non-string.
   */
  send(content: string): boolean;
  /** Close for good; resolves once closed. */
  close(): Promise<CloseEvent>;
}

/**
 * Connect to the relay at `url` (the daemon's base URL: ws(s):// or
 * http(s)://), with a token from `getToken()` for every (re)connection.
 */
export function connect(
  url: string,
  getToken: () => string | Promise<string>,
  handlers?: ConnectHandlers,
  options?: ConnectOptions,
): Connection;

/** A signed-in user: what AccountsClient.login resolves to. */
export interface Session {
  userId: number;
  /** The session secret that signs requests (Auth Headers); keep it as a password. */
  secret: string;
  /** When the secret expires unless used (each use extends it). */
  expiration: Date;
}

/** What signed requests need of a session: a login()'s, or one kept elsewhere. */
export type SignedIn = Pick<Session, "userId" | "secret">;

/** What the audit log records (SPEC §8.3); other names may come with newer daemons. */
export type AccountEventType =
  | "register"
  | "registered"
  | "login"
  | "loginFailed"
  | "throttled"
  | "logout"
  | "passwordChanged"
  | "resetRequested"
  | "passwordReset";

/** One entry of a user's audit log. */
export interface AccountEvent {
  type: AccountEventType | (string & {});
  time: Date;
  /** The client IP (the peer's, or X-Real-IP from a local proxy); "" when unknown. */
  ip: string;
}

/** A relay token for a signed-in user, and the connection id it connects as. */
export interface RelayToken {
  /** Good for the daemon's token lifespan (5 s by default): ask for one per connection. */
  token: string;
  /** "user:<userId>": where the app's backend sends to reach this user. */
  connectionId: string;
}

/** Who to mail a reset link to: a user name, or every user of an e-mail address. */
export type ResetRequest = { user: string; email?: undefined } | { email: string; user?: undefined };

export interface AccountsClientOptions {
  /** The daemon's base URL, or the prefix a proxy serves the accounts API under. */
  baseUrl: string;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

/**
 * The accounts API (SPEC §4, §8). In a browser, only from a page of the
 * daemon's own origin: the daemon sends no CORS headers.
 */
export class AccountsClient {
  constructor(options: AccountsClientOptions);
  readonly baseUrl: string;
  /**
   * Log in. Rejects with SocktopusError: 401 for a wrong user or password,
   * 429 with `retryAfter` after too many from this IP (even for the right one).
   */
  login(user: string, password: string, options?: { stayLoggedIn?: boolean }): Promise<Session>;
  /**
   * Mail a reset link to a user (by name) or to every user of an address.
   * Resolves the same whether or not there is such a user; 503 without mail.
   * Rejects with a TypeError for neither or both.
   */
  resetPassword(request: ResetRequest): Promise<void>;
  /**
   * Set a new password with a mailed link's code (once, within the hour);
   * every session of the user ends. 400 for a wrong, used or expired code.
   */
  confirmReset(userId: number | string, code: string, newPassword: string): Promise<void>;
  /** The user's own audit log, newest first: 50 unless `limit` (1 to 500) says. */
  events(session: SignedIn, options?: { limit?: number }): Promise<AccountEvent[]>;
  /**
   * A relay token of `app` for the user, who connects as "user:<userId>";
   * 404 for an app that does not set <APP>_SOCKTOPUS_USER_TOKENS=1.
   */
  relayToken(session: SignedIn, app: string): Promise<RelayToken>;
}
