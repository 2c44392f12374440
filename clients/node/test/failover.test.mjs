// Retries, timeouts and failover against real `imgsearch serve` processes:
// two servers, one killed with SIGKILL mid-run and restarted on its port; a
// server stopped with SIGSTOP (accepts, never answers); real 503s (the model
// still loading: --load-delay-ms) and 429s (--rate-limit).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ImgsearchClient, ImgsearchError } from '../index.js';
import { startServer, waitReady, requestCountAtLeast, metric, stop, tempDir, IMAGES } from '../testlib/server.mjs';

const FISH = join(IMAGES, 'HappyFish.jpg');
const SLACK_MS = 2500; // scheduling on a loaded machine; a hang is far beyond it
const dirs = [];
const servers = [];
after(async () => {
  for (const s of servers) await stop(s, 'SIGKILL');
  for (const d of dirs) d.remove();
});

async function serve(opts) {
  const s = await startServer(opts);
  servers.push(s);
  return s;
}
function store(name) {
  const d = tempDir();
  dirs.push(d);
  return join(d.path, name);
}
// runs fn and checks it settled within ms (+ slack); returns [value, error]
async function timed(ms, fn) {
  const t0 = Date.now();
  let v = null, e = null;
  try { v = await fn(); } catch (x) { e = x; }
  const took = Date.now() - t0;
  assert.ok(took <= ms + SLACK_MS, `the call took ${took} ms, its timeout is ${ms} ms`);
  return [v, e];
}
const waitFor = async (what, pred, ms = 20000) => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('two servers: the first is killed -9 mid-run, calls fail over, and come back when it restarts', async () => {
  const storeA = store('a.db');
  let a = await serve({ store: storeA });
  const b = await serve({ store: store('b.db') });
  await Promise.all([waitReady(a.url), waitReady(b.url)]);
  const events = [];
  const answered = [];
  const client = new ImgsearchClient({
    urls: [a.url, b.url], timeoutMs: 10000, attemptTimeoutMs: 4000, cooldownMs: 100, probeIntervalMs: 100,
    onEvent: (ev) => { events.push(ev); if (ev.type === 'response') answered.push(ev.url); },
  });
  const call = () => timed(10000, () => client.searchByText('a fish', { k: 1 }));

  for (let i = 0; i < 3; i++) assert.equal((await call())[1], null);
  assert.deepEqual(answered, [a.url, a.url, a.url], 'the first server takes the calls while it is up');

  // calls in flight from 4 callers while the first server dies
  answered.length = 0;
  let stopCallers = false;
  const results = [];
  const callers = Array.from({ length: 4 }, async () => {
    while (!stopCallers) results.push(await call());
  });
  await waitFor('calls before the kill', () => results.length >= 8);
  await stop(a, 'SIGKILL');
  const atKill = results.length;
  await waitFor('calls after the kill', () => results.length >= atKill + 12);
  stopCallers = true;
  await Promise.all(callers);
  const failed = results.filter(([, e]) => e);
  assert.deepEqual(failed.map(([, e]) => `${e.code}: ${e.message}`), [], 'a call failed during the failover');
  assert.ok(answered.slice(-8).every((u) => u === b.url), 'calls after the kill went elsewhere than the second server');
  assert.ok(events.some((ev) => ev.type === 'down' && ev.url === a.url), 'the dead server was not marked down');
  assert.deepEqual(client.servers().map((s) => s.up), [false, true]);
  assert.ok(client.servers()[0].lastError);

  // the first server comes back on its port with its store: the background
  // probe finds it ready, and calls go back to it
  a = await serve({ store: storeA, port: a.port });
  await waitFor('the restarted server marked up', () => events.some((ev) => ev.type === 'up' && ev.url === a.url));
  assert.deepEqual(client.servers().map((s) => s.up), [true, true]);
  answered.length = 0;
  for (let i = 0; i < 3; i++) assert.equal((await call())[1], null);
  assert.deepEqual(answered, [a.url, a.url, a.url], 'calls did not come back to the restarted server');
  assert.ok(await requestCountAtLeast(a.url, '/search', 200, 3) >= 3);

  // both down: calls fail with a typed error, within their timeout
  await stop(a, 'SIGKILL');
  await stop(b, 'SIGKILL');
  const [, e] = await call();
  assert.ok(e instanceof ImgsearchError, String(e));
  assert.ok(['connect_failed', 'connection_lost', 'timeout'].includes(e.code), e.code);
  assert.ok(e.attempts >= 2, `${e.attempts} attempts`);
  client.close();
});

test('without background probes a down server is tried again by the first call after cooldownMs', async () => {
  const storeA = store('half-a.db');
  let a = await serve({ store: storeA });
  const b = await serve({ store: store('half-b.db') });
  await Promise.all([waitReady(a.url), waitReady(b.url)]);
  const answered = [];
  const c = new ImgsearchClient({
    urls: [a.url, b.url], backgroundProbe: false, cooldownMs: 300, timeoutMs: 5000, attemptTimeoutMs: 2000,
    onEvent: (ev) => ev.type === 'response' && answered.push(ev.url),
  });
  await c.searchByText('x');
  await stop(a, 'SIGKILL');
  await c.searchByText('x');
  assert.deepEqual(answered, [a.url, b.url]);
  assert.equal(c.servers()[0].up, false);
  a = await serve({ store: storeA, port: a.port });
  await waitReady(a.url);
  await c.searchByText('x'); // within the cooldown of the last failure? then b; after it, a
  await new Promise((r) => setTimeout(r, 350));
  await c.searchByText('x');
  assert.equal(answered.at(-1), a.url, 'the restarted server was not tried again');
  assert.equal(c.servers()[0].up, true);
  c.close();
});

test('a server that accepts and never answers (SIGSTOP): attempts time out, calls fail over, none outlives its timeout', async () => {
  const a = await serve({ store: store('stop-a.db') });
  const b = await serve({ store: store('stop-b.db') });
  await Promise.all([waitReady(a.url), waitReady(b.url)]);
  const answered = [];
  const onEvent = (ev) => { if (ev.type === 'response') answered.push(ev.url); };
  a.kill('SIGSTOP');
  try {
    // two servers: the attempt on the stopped one times out, the second answers
    const two = new ImgsearchClient({ urls: [a.url, b.url], timeoutMs: 8000, attemptTimeoutMs: 800, onEvent });
    const [v, e] = await timed(8000, () => two.features(FISH));
    assert.equal(e, null, `the call failed: ${e?.code}: ${e?.message}`);
    assert.equal(v.features.length, v.dimension);
    assert.deepEqual(answered, [b.url]);
    assert.equal(two.servers()[0].up, false);
    two.close();

    // a call that is not idempotent is not sent again after a lost attempt
    const once = new ImgsearchClient({ urls: [a.url, b.url], timeoutMs: 4000, attemptTimeoutMs: 800 });
    const [, e1] = await timed(4000, () => once.searchByText('x', {}, { idempotent: false }));
    assert.ok(e1 instanceof ImgsearchError);
    assert.equal(e1.code, 'attempt_timeout');
    assert.equal(e1.attempts, 1);
    once.close();

    // one server: the whole call times out at timeoutMs
    const one = new ImgsearchClient({ urls: [a.url], timeoutMs: 1500, attemptTimeoutMs: 600 });
    const [, e2] = await timed(1500, () => one.searchByText('x'));
    assert.ok(e2 instanceof ImgsearchError);
    assert.equal(e2.code, 'timeout');
    // the caller's AbortSignal ends a call that waits on it
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const [, e3] = await timed(200, () => one.searchByText('x', {}, { signal: ac.signal, timeoutMs: 10000 }));
    assert.equal(e3.code, 'aborted');
    one.close();
  } finally {
    a.kill('SIGCONT');
  }
  // once it answers again, a probe brings it back
  const back = new ImgsearchClient({ urls: [a.url, b.url] });
  const st = await back.checkServers({ timeoutMs: 10000 });
  assert.deepEqual(st.map((s) => s.up), [true, true]);
  back.close();
});

test('refused connections are retried even for calls that are not idempotent', async () => {
  const b = await serve({ store: store('refused-b.db') });
  const a = await serve({ store: store('refused-a.db') });
  await Promise.all([waitReady(a.url), waitReady(b.url)]);
  await stop(a, 'SIGKILL'); // its port now refuses
  const answered = [];
  const c = new ImgsearchClient({ urls: [a.url, b.url], onEvent: (ev) => ev.type === 'response' && answered.push(ev.url) });
  const r = await c.searchByText('x', { k: 1 }, { idempotent: false });
  assert.ok(Array.isArray(r.results));
  assert.deepEqual(answered, [b.url]);
  c.close();
});

test('503 while the model loads: retried (Retry-After honoured) until it answers; never with retries 0', async () => {
  const s = await serve({ store: store('loading.db'), args: ['--load-delay-ms', '1500'] });
  const noRetry = new ImgsearchClient({ urls: [s.url], retries: 0 });
  const e = await noRetry.searchByText('a fish').then(() => null, (x) => x);
  assert.ok(e instanceof ImgsearchError);
  assert.equal(e.status, 503);
  assert.equal(e.code, 'unavailable');
  assert.equal(e.retryAfterMs, 1000);
  assert.equal(e.attempts, 1);
  const r0 = await noRetry.ready();
  assert.equal(r0.ready, false); // /ready 503, or /health "loading"
  noRetry.close();

  const events = [];
  const c = new ImgsearchClient({ urls: [s.url], retries: 10, backoffMs: 50, timeoutMs: 15000, onEvent: (ev) => events.push(ev) });
  const [r] = await timed(15000, () => c.searchByText('a fish', { k: 1 }));
  assert.ok(r && Array.isArray(r.results));
  const retries = events.filter((ev) => ev.type === 'retry');
  assert.ok(retries.length >= 1, 'no retry');
  assert.ok(retries.every((ev) => ev.error.status === 503 && ev.delayMs >= 1000), 'a retry came before Retry-After');
  assert.ok(await requestCountAtLeast(s.url, '/search', 503, 2) >= 2);
  assert.equal((await c.ready()).ready, true);
  c.close();
});

test('429 from the rate limit: retried after Retry-After', async () => {
  const s = await serve({ store: store('rate.db'), args: ['--rate-limit', '1/s', '--rate-burst', '1'] });
  await waitReady(s.url);
  const events = [];
  const c = new ImgsearchClient({ urls: [s.url], retries: 3, onEvent: (ev) => events.push(ev) });
  await c.searchByText('one');
  const r = await c.searchByText('two');
  // at once after it, with no retry: the 429 itself
  const e = await c.searchByText('three', {}, { retries: 0 }).then(() => null, (x) => x);
  assert.equal(e?.status, 429);
  assert.ok(Array.isArray(r.results));
  const retry = events.find((ev) => ev.type === 'retry');
  assert.ok(retry, 'the second call was not limited or not retried');
  assert.equal(retry.error.status, 429);
  assert.equal(retry.error.code, 'too_many_requests');
  assert.ok(retry.delayMs >= retry.error.retryAfterMs && retry.error.retryAfterMs >= 1000, `${retry.delayMs} ms after a Retry-After of ${retry.error.retryAfterMs} ms`);
  // (imgsearch_http_requests_total files a 429 under status "400"; this counter is exact)
  assert.equal(await metric(s.url, 'imgsearch_rejected_rate_total'), 2);
  c.close();
});
