// imgsearch-client - a client for the imgsearch HTTP service (Node >= 20,
// standard library only).
//
// 1. One method per route; each call runs through call(): a whole-call
//    deadline (timeoutMs) and the caller's AbortSignal bound every attempt
//    and every wait between attempts, so no call outlives its timeout.
// 2. Retries: only on 503, on 429 (waiting at least its Retry-After), and
//    on connection errors. A refused connection (the request never left)
//    and a 503/429 (the server refused before doing anything) are retried
//    for every call; a connection lost mid-request or an attempt that timed
//    out is retried only for idempotent calls (every route of imgsearch is
//    idempotent; a call can say `idempotent: false`). Other 4xx and 5xx are
//    never retried. Waits grow exponentially with full jitter, capped.
// 3. Failover: the servers are tried in the order given. A server that
//    fails (connection error, timeout, 503) is marked down and skipped; it
//    is probed in the background through the readiness route (GET /ready,
//    or /health's status where /ready is 404) and comes back when ready.
//    When every server is down the call still tries the one whose last
//    failure is the oldest, so a restart is found even without probes.
// 4. Every input is bounded: images (maxImageBytes, streams read up to the
//    limit) and response bodies (maxResponseBytes).
import { openAsBlob } from 'node:fs';
import { stat } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';

const MiB = 1024 * 1024;
const DEFAULTS = Object.freeze({
  timeoutMs: 30000,
  attemptTimeoutMs: 10000,
  retries: 3,
  backoffMs: 100,
  maxBackoffMs: 5000,
  cooldownMs: 1000,
  probeIntervalMs: 1000,
  probeTimeoutMs: 2000,
  backgroundProbe: true,
  maxImageBytes: 20 * MiB,
  maxResponseBytes: 64 * MiB,
});

// error codes of connections that never carried the request
const NOT_STARTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH',
  'EADDRNOTAVAIL', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);

export class ImgsearchError extends Error {
  constructor(message, o = {}) {
    super(message, o.cause !== undefined ? { cause: o.cause } : undefined);
    this.name = 'ImgsearchError';
    this.status = o.status ?? 0;           // HTTP status, 0 when there was no answer
    this.code = o.code ?? 'error';         // the server's code, or the client's
    this.requestId = o.requestId ?? null;  // X-Request-ID of the failed attempt
    this.detail = o.detail ?? message;
    this.url = o.url ?? null;              // the server that answered or failed
    this.retryAfterMs = o.retryAfterMs ?? null;
    this.attempts = o.attempts ?? 1;
  }
}

// ---- inputs ------------------------------------------------------------------

function tooLarge(what, max) {
  return new ImgsearchError(`${what} is over ${max} bytes (maxImageBytes)`, { code: 'too_large' });
}

async function readStream(stream, max) {
  const chunks = [];
  let n = 0;
  const it = typeof stream.getReader === 'function' && !stream[Symbol.asyncIterator]
    ? (async function* () {
      const r = stream.getReader();
      try { for (;;) { const { done, value } = await r.read(); if (done) return; yield value; } }
      finally { r.releaseLock(); }
    })()
    : stream;
  for await (const c of it) {
    const u8 = typeof c === 'string' ? Buffer.from(c) : c instanceof Uint8Array ? c : Buffer.from(c);
    n += u8.byteLength;
    if (n > max) {
      if (typeof stream.destroy === 'function') stream.destroy();
      throw tooLarge('the image stream', max);
    }
    chunks.push(u8);
  }
  return new Blob(chunks);
}

/** An image input (bytes, Blob, stream, file path or file: URL) as a Blob. */
export async function toBlob(image, max = DEFAULTS.maxImageBytes) {
  if (image instanceof Blob) {
    if (image.size > max) throw tooLarge('the image', max);
    return image;
  }
  if (image instanceof ArrayBuffer) image = new Uint8Array(image);
  if (ArrayBuffer.isView(image)) {
    if (image.byteLength > max) throw tooLarge('the image', max);
    return new Blob([new Uint8Array(image.buffer, image.byteOffset, image.byteLength)]);
  }
  if (typeof image === 'string' || image instanceof URL) {
    let st;
    try {
      st = await stat(image);
    } catch (e) {
      throw new ImgsearchError(`cannot read the image file ${image}: ${e.code ?? e.message}`,
        { code: 'invalid_input', cause: e });
    }
    if (!st.isFile()) throw new ImgsearchError(`${image} is not a file`, { code: 'invalid_input' });
    if (st.size > max) throw tooLarge(`the file ${image}`, max);
    return openAsBlob(image);
  }
  if (image && (typeof image[Symbol.asyncIterator] === 'function' || typeof image.getReader === 'function'))
    return readStream(image, max);
  throw new ImgsearchError('an image is a Buffer/Uint8Array, a Blob, a readable stream or a file path',
    { code: 'invalid_input' });
}

// ---- errors of a failed attempt ------------------------------------------------

function errorCodes(e) {
  const codes = [];
  for (let c = e, depth = 0; c && depth < 8; c = c.cause, depth++) {
    if (c.code) codes.push(c.code);
    if (Array.isArray(c.errors)) for (const x of c.errors) if (x && x.code) codes.push(x.code);
  }
  return codes;
}

function parseRetryAfter(v) {
  if (!v) return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.max(0, t - Date.now());
}

async function readBody(res, max, url) {
  const len = Number(res.headers.get('content-length'));
  if (len > max) {
    await res.body?.cancel();
    throw new ImgsearchError(`the answer has ${len} bytes; maxResponseBytes is ${max}`,
      { code: 'too_large', status: res.status, url });
  }
  if (!res.body) return new Uint8Array(0);
  const chunks = [];
  let n = 0;
  for await (const c of res.body) {
    n += c.byteLength;
    if (n > max) {
      throw new ImgsearchError(`the answer is over maxResponseBytes (${max})`,
        { code: 'too_large', status: res.status, url });
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks, n);
}

function httpError(res, bytes, url, sentId) {
  let body = null;
  try { body = JSON.parse(Buffer.from(bytes).toString('utf8')); } catch { /* not JSON */ }
  const e = body && typeof body.error === 'object' && body.error ? body.error : {};
  const message = e.message ?? (typeof body?.detail === 'string' ? body.detail : null) ??
    `HTTP ${res.status} ${res.statusText}`;
  return new ImgsearchError(message, {
    status: res.status,
    code: e.code ?? `http_${res.status}`,
    detail: typeof body?.detail === 'string' ? body.detail : message,
    requestId: body?.request_id ?? e.request_id ?? res.headers.get('x-request-id') ?? sentId,
    retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
    url,
  });
}

// ---- the client -------------------------------------------------------------------

class Server {
  constructor(url) {
    this.url = url;
    this.up = true;
    this.downSince = null;
    this.failedAt = 0;    // the last failure (the cooldown counts from it)
    this.lastError = null;
    this.retryAt = 0;     // 429/503 Retry-After: not before
    this.hasReady = null; // does it serve /ready (null: not known yet)
    this.timer = null;
  }
}

function normalizeUrl(u) {
  const url = new URL(u);
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ImgsearchError(`${u}: only http and https URLs`, { code: 'invalid_input' });
  return url.href.replace(/\/+$/, '');
}

function abortReason(signal) {
  const r = signal.reason;
  return r instanceof Error ? r : new Error(String(r));
}

export class ImgsearchClient {
  #o;
  #servers;
  #closed = false;

  constructor(options = {}) {
    const urls = typeof options === 'string' || Array.isArray(options) ? options : options.urls ?? options.url;
    const list = (Array.isArray(urls) ? urls : [urls]).filter(Boolean);
    if (!list.length) throw new ImgsearchError('no server URL given', { code: 'invalid_input' });
    this.#o = { ...DEFAULTS, ...(typeof options === 'object' && !Array.isArray(options) ? options : {}) };
    this.#servers = list.map((u) => new Server(normalizeUrl(u)));
  }

  // ---- routes ----

  /** POST /extract-features: the embedding of one image. */
  async features(image, opts = {}) {
    const form = new FormData();
    form.append('image', await toBlob(image, this.#o.maxImageBytes), 'image');
    return this.#json('POST', '/extract-features', { body: form }, opts);
  }

  /** POST /extract-features-batch: one slot per image, a bad image gets {error} in its slot. */
  async featuresBatch(images, opts = {}) {
    if (!Array.isArray(images) || !images.length)
      throw new ImgsearchError('featuresBatch needs a non-empty array of images', { code: 'invalid_input' });
    const form = new FormData();
    for (const img of images) form.append('images', await toBlob(img, this.#o.maxImageBytes), 'image');
    return this.#json('POST', '/extract-features-batch', { body: form }, opts);
  }

  /** POST /search with exactly one of image, text, vector or id. */
  async search(query = {}, opts = {}) {
    const modes = ['image', 'text', 'vector', 'id'].filter((m) => query[m] !== undefined && query[m] !== null);
    if (modes.length !== 1)
      throw new ImgsearchError('search needs exactly one of image, text, vector or id', { code: 'invalid_input' });
    const params = {};
    if (query.k !== undefined) params.k = query.k;
    if (query.offset !== undefined) params.offset = query.offset;
    if (query.minScore !== undefined) params.min_score = query.minScore;
    if (query.ef !== undefined) params.ef = query.ef;
    if (modes[0] === 'image') {
      const form = new FormData();
      form.append('image', await toBlob(query.image, this.#o.maxImageBytes), 'image');
      for (const [k, v] of Object.entries(params)) form.append(k, String(v));
      if (query.filter) form.append('filter', JSON.stringify(query.filter));
      return this.#json('POST', '/search', { body: form }, opts);
    }
    const value = modes[0] === 'vector' ? Array.from(query.vector) : query[modes[0]];
    const body = { [modes[0]]: value, ...params };
    if (query.filter) body.filter = query.filter;
    return this.#json('POST', '/search', { json: body }, opts);
  }

  searchByImage(image, params = {}, opts = {}) { return this.search({ ...params, image }, opts); }
  searchByText(text, params = {}, opts = {}) { return this.search({ ...params, text }, opts); }
  searchByVector(vector, params = {}, opts = {}) { return this.search({ ...params, vector }, opts); }
  searchById(id, params = {}, opts = {}) { return this.search({ ...params, id }, opts); }

  /** PUT /items/{id}: stores (or replaces) an item; async: embed it in the background (202). */
  async putItem(id, image, { metadata, async: queue } = {}, opts = {}) {
    const form = new FormData();
    form.append('image', await toBlob(image, this.#o.maxImageBytes), 'image');
    if (metadata !== undefined && metadata !== null) form.append('metadata', JSON.stringify(metadata));
    const query = queue ? { async: '1' } : undefined;
    const { status, body } = await this.#call('PUT', this.#itemPath(id), { body: form, query, as: 'json' }, opts);
    return { status, created: status === 201, queued: status === 202, item: body };
  }

  /** GET /items/{id} (embedding: true adds the vector). */
  getItem(id, { embedding } = {}, opts = {}) {
    return this.#json('GET', this.#itemPath(id), { query: embedding ? { embedding: '1' } : undefined }, opts);
  }

  /** GET /items?cursor=&limit=: one page; next_cursor is null on the last. */
  listItems({ cursor, limit } = {}, opts = {}) {
    const query = {};
    if (cursor) query.cursor = cursor;
    if (limit !== undefined) query.limit = String(limit);
    return this.#json('GET', '/items', { query }, opts);
  }

  /** Every item, page after page. */
  async *items({ limit = 100 } = {}, opts = {}) {
    let cursor;
    do {
      const page = await this.listItems({ cursor, limit }, opts);
      yield* page.items;
      cursor = page.next_cursor;
    } while (cursor);
  }

  /** DELETE /items/{id}. */
  deleteItem(id, opts = {}) { return this.#json('DELETE', this.#itemPath(id), {}, opts); }

  /** GET /items/{id}/image: the stored image's bytes. */
  async getItemImage(id, opts = {}) {
    const { body, headers } = await this.#call('GET', `${this.#itemPath(id)}/image`, { as: 'bytes' }, opts);
    return { bytes: body, contentType: headers.get('content-type') };
  }

  /** POST /classify: zero-shot labels for an image, best first. */
  async classify(image, labels, { template, top } = {}, opts = {}) {
    if (!Array.isArray(labels) || labels.length < 2)
      throw new ImgsearchError('classify needs at least two labels', { code: 'invalid_input' });
    const form = new FormData();
    form.append('image', await toBlob(image, this.#o.maxImageBytes), 'image');
    form.append('labels', JSON.stringify(labels));
    if (template) form.append('template', template);
    if (top !== undefined) form.append('top', String(top));
    return this.#json('POST', '/classify', { body: form }, opts);
  }

  /** GET /health (liveness and details). */
  health(opts = {}) { return this.#json('GET', '/health', {}, opts); }

  /** GET /metrics: the Prometheus text. */
  async metrics(opts = {}) {
    const { body } = await this.#call('GET', '/metrics', { as: 'text' }, opts);
    return body;
  }

  /** Readiness of the server calls would go to now (GET /ready, or /health's status where /ready is 404). */
  async ready(opts = {}) {
    const s = this.#pick();
    const r = await this.#readiness(s, opts.signal ?? null, opts.timeoutMs ?? this.#o.probeTimeoutMs);
    if (r.ready) this.#markUp(s); else this.#markDown(s, r.error ?? new Error(`not ready (${r.status})`), null);
    return r;
  }

  /** Probes every server now; resolves when each has answered or timed out. */
  async checkServers(opts = {}) {
    await Promise.all(this.#servers.map(async (s) => {
      const r = await this.#readiness(s, opts.signal ?? null, opts.timeoutMs ?? this.#o.probeTimeoutMs);
      if (r.ready) this.#markUp(s); else this.#markDown(s, r.error ?? new Error(`not ready (${r.status})`), null);
    }));
    return this.servers();
  }

  /** What the client knows of each server. */
  servers() {
    return this.#servers.map((s) => ({
      url: s.url, up: s.up, downSince: s.downSince, lastError: s.lastError ? s.lastError.message : null,
    }));
  }

  /** Stops the background probes; the client still works, a down server is then retried after cooldownMs. */
  close() {
    this.#closed = true;
    for (const s of this.#servers) { clearTimeout(s.timer); s.timer = null; }
  }

  // ---- internals ----

  #itemPath(id) {
    if (typeof id !== 'string' || !id) throw new ImgsearchError('an item id is a non-empty string', { code: 'invalid_input' });
    return `/items/${encodeURIComponent(id)}`;
  }

  async #json(method, path, req, opts) {
    return (await this.#call(method, path, { ...req, as: 'json' }, opts)).body;
  }

  #emit(ev) {
    if (typeof this.#o.onEvent === 'function') {
      try { this.#o.onEvent(ev); } catch { /* a listener cannot break a call */ }
    }
  }

  #pick() {
    const now = Date.now();
    const probing = this.#o.backgroundProbe && !this.#closed;
    const eligible = (s) => s.up || (!probing && now - s.failedAt >= this.#o.cooldownMs);
    const ready = this.#servers.filter((s) => eligible(s) && s.retryAt <= now);
    if (ready.length) return ready[0];
    const up = this.#servers.filter(eligible);
    if (up.length) return up.reduce((a, b) => (b.retryAt < a.retryAt ? b : a));
    // all down: the one whose last failure is the oldest (so a dead one and
    // one that was only slow take turns)
    return this.#servers.reduce((a, b) => (b.failedAt < a.failedAt ? b : a));
  }

  #markUp(s) {
    const was = s.up;
    s.up = true;
    s.downSince = null;
    s.lastError = null;
    clearTimeout(s.timer);
    s.timer = null;
    if (!was) this.#emit({ type: 'up', url: s.url });
  }

  #markDown(s, error, retryAfterMs) {
    s.lastError = error;
    s.failedAt = Date.now();
    if (retryAfterMs) s.retryAt = Date.now() + retryAfterMs;
    if (s.up) {
      s.up = false;
      s.downSince = Date.now();
      this.#emit({ type: 'down', url: s.url, error });
    }
    if (this.#o.backgroundProbe && !s.timer) this.#scheduleProbe(s, Math.max(this.#o.cooldownMs, retryAfterMs ?? 0));
  }

  #scheduleProbe(s, delay) {
    if (this.#closed) return;
    s.timer = setTimeout(async () => {
      s.timer = null;
      if (s.up) return;
      const r = await this.#readiness(s, null, this.#o.probeTimeoutMs);
      this.#emit({ type: 'probe', url: s.url, ready: r.ready });
      if (r.ready) this.#markUp(s);
      else if (!s.timer && !s.up && !this.#closed) this.#scheduleProbe(s, this.#o.probeIntervalMs);
    }, delay);
    s.timer.unref();
  }

  #headers(extra, requestId) {
    const h = { 'x-request-id': requestId, ...(this.#o.headers ?? {}), ...(extra ?? {}) };
    if (this.#o.apiKey) h.authorization = `Bearer ${this.#o.apiKey}`;
    return h;
  }

  // the readiness of one server; throws only when the caller's signal aborts
  async #readiness(s, signal, timeoutMs) {
    const sig = signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    const headers = this.#headers(null, randomUUID());
    try {
      if (s.hasReady !== false) {
        const res = await fetch(`${s.url}/ready`, { headers, signal: sig });
        const bytes = await readBody(res, 1 * MiB, s.url);
        if (res.status !== 404) {
          s.hasReady = true;
          let body = null;
          try { body = JSON.parse(Buffer.from(bytes).toString('utf8')); } catch { /* not JSON */ }
          return { ready: res.status === 200, url: s.url, via: '/ready', status: res.status, body };
        }
        s.hasReady = false;
      }
      const res = await fetch(`${s.url}/health`, { headers, signal: sig });
      const bytes = await readBody(res, 1 * MiB, s.url);
      let body = null;
      try { body = JSON.parse(Buffer.from(bytes).toString('utf8')); } catch { /* not JSON */ }
      const ok = res.status === 200 && body && (body.status === 'ok' || body.status === 'degraded');
      return { ready: !!ok, url: s.url, via: '/health', status: res.status, body };
    } catch (e) {
      if (signal?.aborted) throw new ImgsearchError('the call was aborted', { code: 'aborted', cause: abortReason(signal), url: s.url });
      return { ready: false, url: s.url, via: s.hasReady === false ? '/health' : '/ready', status: 0, body: null, error: e };
    }
  }

  #url(s, path, query) {
    const u = new URL(s.url + path);
    for (const [k, v] of Object.entries(query ?? {})) u.searchParams.append(k, v);
    return u.href;
  }

  // One attempt on one server: resolves {status, body, headers} for 2xx,
  // else throws an ImgsearchError with .kind 'http' | 'connect' | 'network'.
  async #attempt(s, method, path, req, callSignal, attemptTimeoutMs, requestId) {
    const attemptSignal = AbortSignal.any([callSignal, AbortSignal.timeout(attemptTimeoutMs)]);
    const headers = this.#headers(req.headers, requestId);
    let body;
    if (req.json !== undefined) {
      body = JSON.stringify(req.json);
      headers['content-type'] = 'application/json';
    } else if (req.body !== undefined) {
      body = req.body;
    }
    let res;
    try {
      res = await fetch(this.#url(s, path, req.query), { method, headers, body, signal: attemptSignal });
    } catch (e) {
      throw this.#transportError(e, s, callSignal, attemptSignal, attemptTimeoutMs, requestId, false);
    }
    let bytes;
    try {
      bytes = await readBody(res, this.#o.maxResponseBytes, s.url);
    } catch (e) {
      if (e instanceof ImgsearchError) throw e;
      throw this.#transportError(e, s, callSignal, attemptSignal, attemptTimeoutMs, requestId, true);
    }
    if (res.status < 200 || res.status > 299) {
      const err = httpError(res, bytes, s.url, requestId);
      err.kind = 'http';
      throw err;
    }
    let out = bytes;
    if (req.as === 'json') {
      try {
        out = JSON.parse(Buffer.from(bytes).toString('utf8'));
      } catch (e) {
        throw new ImgsearchError(`${s.url}${path}: the answer is not JSON`, { code: 'bad_response', status: res.status, url: s.url, requestId, cause: e });
      }
    } else if (req.as === 'text') {
      out = Buffer.from(bytes).toString('utf8');
    } else {
      out = new Uint8Array(bytes);
    }
    return { status: res.status, body: out, headers: res.headers };
  }

  #transportError(e, s, callSignal, attemptSignal, attemptTimeoutMs, requestId, started) {
    if (callSignal.aborted) return e; // call() reports it
    let err;
    if (attemptSignal.aborted) {
      err = new ImgsearchError(`${s.url}: no answer within ${attemptTimeoutMs} ms`, { code: 'attempt_timeout', url: s.url, requestId, cause: e });
      err.kind = 'network';
      return err;
    }
    const codes = errorCodes(e);
    const notStarted = !started && codes.some((c) => NOT_STARTED.has(c));
    err = new ImgsearchError(`${s.url}: ${codes[0] ?? e.message}`, { code: notStarted ? 'connect_failed' : 'connection_lost', url: s.url, requestId, cause: e });
    err.kind = notStarted ? 'connect' : 'network';
    return err;
  }

  #backoff(attempt) {
    const cap = Math.min(this.#o.maxBackoffMs, this.#o.backoffMs * 2 ** attempt);
    return Math.random() * cap; // full jitter
  }

  // Runs one request with the retry, failover and deadline rules (top of file).
  async #call(method, path, req, opts = {}) {
    const timeoutMs = opts.timeoutMs ?? this.#o.timeoutMs;
    const attemptTimeoutMs = Math.min(opts.attemptTimeoutMs ?? this.#o.attemptTimeoutMs, timeoutMs);
    const retries = opts.retries ?? this.#o.retries;
    const idempotent = opts.idempotent ?? true;
    const requestId = opts.requestId ?? randomUUID();
    const deadline = Date.now() + timeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const stopped = (cause) => {
      const byCaller = opts.signal?.aborted;
      return new ImgsearchError(byCaller ? `${method} ${path}: aborted by the caller` : `${method} ${path}: no answer within ${timeoutMs} ms`,
        { code: byCaller ? 'aborted' : 'timeout', attempts: attempt + 1, requestId, cause });
    };
    let attempt = 0;
    let last = null;
    for (;;) {
      if (signal.aborted) throw stopped(last);
      const s = this.#pick();
      try {
        const r = await this.#attempt(s, method, path, req, signal, attemptTimeoutMs, requestId);
        this.#markUp(s);
        this.#emit({ type: 'response', url: s.url, method, path, status: r.status, attempt: attempt + 1, requestId });
        return r;
      } catch (e) {
        if (signal.aborted) throw stopped(last ?? e);
        if (!(e instanceof ImgsearchError) || !e.kind) throw e;
        e.attempts = attempt + 1;
        last = e;
        let retryable = false;
        if (e.kind === 'http') {
          if (e.status === 503) { this.#markDown(s, e, e.retryAfterMs); retryable = true; }
          else if (e.status === 429) { s.retryAt = Date.now() + (e.retryAfterMs ?? 0); retryable = true; }
        } else {
          this.#markDown(s, e, null);
          retryable = e.kind === 'connect' || idempotent;
        }
        if (!retryable || attempt >= retries) throw e;
        // another server to fail over to: at once; else back off (at least Retry-After)
        const next = this.#pick();
        let delay = 0;
        if (next === s || !next.up || next.retryAt > Date.now()) {
          delay = Math.max(this.#backoff(attempt), e.retryAfterMs ?? 0, next.retryAt - Date.now());
        }
        if (Date.now() + delay >= deadline) throw e;
        this.#emit({ type: 'retry', url: s.url, attempt: attempt + 1, delayMs: Math.round(delay), error: e });
        attempt++;
        if (delay > 0) {
          try {
            await new Promise((resolve, reject) => {
              const onAbort = () => { clearTimeout(t); reject(signal.reason); };
              const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(); }, delay);
              signal.addEventListener('abort', onAbort, { once: true });
            });
          } catch {
            throw stopped(last);
          }
        }
      }
    }
  }
}

export default ImgsearchClient;
