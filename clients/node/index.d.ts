// Types of imgsearch-client (index.js). Hand-written; checked by
// `tsc --noEmit` on examples/typed.ts (tests/cli/test_node_client.sh).
import type { Readable } from 'node:stream';

/** An image: its bytes, a Blob, a readable stream (Node or web), or a file path / file: URL. */
export type ImageInput =
  | Uint8Array
  | ArrayBuffer
  | Blob
  | Readable
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>
  | string
  | URL;

/** Metadata values a filter compares (as the store's text). */
export type FilterValue = string | number | boolean | null;
export type Filter = Record<string, FilterValue>;
export type Metadata = Record<string, unknown>;

export type ClientEvent =
  | { type: 'response'; url: string; method: string; path: string; status: number; attempt: number; requestId: string }
  | { type: 'retry'; url: string; attempt: number; delayMs: number; error: ImgsearchError }
  | { type: 'down'; url: string; error: Error }
  | { type: 'up'; url: string }
  | { type: 'probe'; url: string; ready: boolean };

export interface ClientOptions {
  /** One server URL or several, in order of preference. */
  urls?: string | string[];
  url?: string;
  /** Sent as "Authorization: Bearer KEY". */
  apiKey?: string;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /** The whole call, retries and waits included (default 30000). */
  timeoutMs?: number;
  /** One attempt on one server (default 10000). */
  attemptTimeoutMs?: number;
  /** Attempts after the first (default 3). */
  retries?: number;
  /** First backoff cap; doubles each retry, full jitter (default 100). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Wait before the first probe of a server marked down (default 1000). */
  cooldownMs?: number;
  /** Between probes of a server still down (default 1000). */
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** Probe down servers in the background (default true); false: retry one after cooldownMs. */
  backgroundProbe?: boolean;
  /** Largest image accepted (default 20 MiB, the server's default --max-body). */
  maxImageBytes?: number;
  /** Largest answer read (default 64 MiB). */
  maxResponseBytes?: number;
  onEvent?: (event: ClientEvent) => void;
}

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  attemptTimeoutMs?: number;
  retries?: number;
  /** Default true (every imgsearch route is). false: a lost attempt is not sent again. */
  idempotent?: boolean;
  /** Sent as X-Request-ID (default: a random UUID). */
  requestId?: string;
  headers?: Record<string, string>;
}

export interface ErrorBody {
  error: { code: string; message: string };
}

export interface FeaturesResult {
  features: number[];
  dimension: number;
  model: string;
}

export interface FeaturesBatchResult {
  /** One slot per image: its vector, or the error of that image. */
  features: Array<number[] | ErrorBody>;
  dimension: number;
  count: number;
  model: string;
}

export interface SearchParams {
  k?: number;
  offset?: number;
  /** Only hits with a score at least this (cosine, -1..1). */
  minScore?: number;
  /** HNSW search breadth (0: the server's default). */
  ef?: number;
  filter?: Filter;
}

export type SearchQuery = SearchParams &
  (
    | { image: ImageInput; text?: never; vector?: never; id?: never }
    | { text: string; image?: never; vector?: never; id?: never }
    | { vector: ArrayLike<number>; image?: never; text?: never; id?: never }
    | { id: string; image?: never; text?: never; vector?: never }
  );

export interface SearchHit {
  id: string;
  score: number;
  metadata: Metadata | null;
  /** Path of GET /items/{id}/image, null when the item has no image to serve. */
  image_url: string | null;
}

export interface SearchResult {
  results: SearchHit[];
  count: number;
  took_ms: number;
}

export interface Item {
  id: string;
  source: string | null;
  sha256: string | null;
  size: number | null;
  mtime: number | null;
  metadata: Metadata | null;
  has_embedding: boolean;
  model: string | null;
  created_at: number;
  updated_at: number;
  image_url: string | null;
  /** Only with getItem(id, { embedding: true }). */
  embedding?: number[];
}

export interface PutItemOptions {
  metadata?: Metadata;
  /** Store now, embed in the background (202 when not embedded yet). */
  async?: boolean;
}

export interface PutItemResult {
  status: 200 | 201 | 202;
  created: boolean;
  queued: boolean;
  item: Item;
}

export interface ItemPage {
  items: Item[];
  count: number;
  total: number;
  next_cursor: string | null;
}

export interface ClassifyOptions {
  /** "a photo of {}" by default. */
  template?: string;
  top?: number;
}

export interface ClassifyResult {
  labels: Array<{ label: string; prob: number; logit: number }>;
  template: string;
  model: string;
}

export interface Health {
  status: 'ok' | 'loading' | 'failed' | 'degraded' | string;
  version: string;
  uptime_s: number;
  model?: string;
  dim?: number;
  precision?: string;
  text?: boolean;
  items?: number;
  waiting?: number;
  [key: string]: unknown;
}

export interface Readiness {
  ready: boolean;
  url: string;
  /** The route that answered: "/ready", or "/health" on servers without it. */
  via: '/ready' | '/health';
  status: number;
  body: unknown;
  error?: Error;
}

export interface ServerState {
  url: string;
  up: boolean;
  downSince: number | null;
  lastError: string | null;
}

export class ImgsearchError extends Error {
  constructor(message: string, options?: {
    status?: number; code?: string; requestId?: string | null; detail?: string; url?: string | null;
    retryAfterMs?: number | null; attempts?: number; cause?: unknown;
  });
  name: 'ImgsearchError';
  /** HTTP status; 0 when no answer came (timeout, connection, input). */
  status: number;
  /**
   * The server's code (invalid_argument, not_found, unavailable, too_many_requests, ...)
   * or the client's: timeout, aborted, attempt_timeout, connect_failed, connection_lost,
   * invalid_input, too_large, bad_response, http_NNN.
   */
  code: string;
  message: string;
  detail: string;
  requestId: string | null;
  url: string | null;
  retryAfterMs: number | null;
  attempts: number;
}

export function toBlob(image: ImageInput, maxBytes?: number): Promise<Blob>;

export class ImgsearchClient {
  constructor(options: ClientOptions | string | string[]);
  features(image: ImageInput, opts?: CallOptions): Promise<FeaturesResult>;
  featuresBatch(images: ImageInput[], opts?: CallOptions): Promise<FeaturesBatchResult>;
  search(query: SearchQuery, opts?: CallOptions): Promise<SearchResult>;
  searchByImage(image: ImageInput, params?: SearchParams, opts?: CallOptions): Promise<SearchResult>;
  searchByText(text: string, params?: SearchParams, opts?: CallOptions): Promise<SearchResult>;
  searchByVector(vector: ArrayLike<number>, params?: SearchParams, opts?: CallOptions): Promise<SearchResult>;
  searchById(id: string, params?: SearchParams, opts?: CallOptions): Promise<SearchResult>;
  putItem(id: string, image: ImageInput, options?: PutItemOptions, opts?: CallOptions): Promise<PutItemResult>;
  getItem(id: string, options?: { embedding?: boolean }, opts?: CallOptions): Promise<Item>;
  listItems(page?: { cursor?: string | null; limit?: number }, opts?: CallOptions): Promise<ItemPage>;
  items(page?: { limit?: number }, opts?: CallOptions): AsyncGenerator<Item, void, undefined>;
  deleteItem(id: string, opts?: CallOptions): Promise<{ id: string; deleted: true }>;
  getItemImage(id: string, opts?: CallOptions): Promise<{ bytes: Uint8Array; contentType: string | null }>;
  classify(image: ImageInput, labels: string[], options?: ClassifyOptions, opts?: CallOptions): Promise<ClassifyResult>;
  health(opts?: CallOptions): Promise<Health>;
  ready(opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<Readiness>;
  checkServers(opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<ServerState[]>;
  metrics(opts?: CallOptions): Promise<string>;
  servers(): ServerState[];
  close(): void;
}

export default ImgsearchClient;
