// Every method of the client once against one real `imgsearch serve`, the
// image input kinds, the error type, and the no-retry rule for 4xx.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ImgsearchClient, ImgsearchError, toBlob } from '../index.js';
import { startServer, waitReady, requestCount, requestCountAtLeast, stop, tempDir, IMAGES } from '../testlib/server.mjs';

const FRUITS = join(IMAGES, 'fruits.jpg');
const FISH = join(IMAGES, 'HappyFish.jpg');
const COFFEE = join(IMAGES, 'coffee.png');
let dir, srv, client, dim;

before(async () => {
  dir = tempDir();
  srv = await startServer({ store: join(dir.path, 'store.db') });
  await waitReady(srv.url);
  client = new ImgsearchClient({ urls: [srv.url], timeoutMs: 20000 });
});

after(async () => {
  client?.close();
  if (srv) await stop(srv);
  dir?.remove();
});

const close = (a, b) => a.length === b.length && a.every((x, i) => Math.abs(x - b[i]) < 1e-5);

test('health, ready and metrics', async () => {
  const h = await client.health();
  assert.equal(h.status, 'ok');
  assert.ok(Number.isInteger(h.dim) && h.dim > 0);
  dim = h.dim;
  const r = await client.ready();
  assert.equal(r.ready, true);
  assert.ok(r.via === '/ready' || r.via === '/health', r.via);
  assert.equal(r.url, srv.url);
  const m = await client.metrics();
  assert.equal(typeof m, 'string');
  assert.match(m, /^imgsearch_http_requests_total\{route="\/health",status="200"\} \d+$/m);
  assert.deepEqual(client.servers().map((s) => s.up), [true]);
});

test('features: a Buffer, a Uint8Array, a Blob, a stream, a web stream, a path and a file: URL give one vector', async () => {
  const bytes = readFileSync(FRUITS);
  const ref = await client.features(FRUITS);
  assert.equal(ref.dimension, ref.features.length);
  assert.equal(ref.dimension, dim);
  assert.match(ref.model, /^tiny-clip@/);
  const norm = Math.hypot(...ref.features);
  assert.ok(Math.abs(norm - 1) < 1e-4, `L2 norm ${norm}`);
  const inputs = {
    buffer: bytes,
    uint8array: new Uint8Array(bytes),
    blob: new Blob([bytes]),
    stream: createReadStream(FRUITS, { highWaterMark: 4096 }),
    webstream: Readable.toWeb(createReadStream(FRUITS)),
    url: pathToFileURL(FRUITS),
  };
  for (const [kind, img] of Object.entries(inputs)) {
    const f = await client.features(img);
    assert.ok(close(f.features, ref.features), `${kind} gives another vector`);
  }
  const other = await client.features(FISH);
  assert.ok(!close(other.features, ref.features), 'two images gave one vector');
});

test('image inputs are bounded and checked before any request', async () => {
  const small = new ImgsearchClient({ urls: [srv.url], maxImageBytes: 1000 });
  const before = await requestCount(srv.url, '/extract-features', 400);
  await assert.rejects(small.features(FRUITS), (e) => e instanceof ImgsearchError && e.code === 'too_large');
  await assert.rejects(small.features(createReadStream(FRUITS)), (e) => e.code === 'too_large');
  await assert.rejects(client.features(join(IMAGES, 'no-such.jpg')), (e) => e.code === 'invalid_input');
  await assert.rejects(client.features(42), (e) => e.code === 'invalid_input');
  assert.equal((await toBlob(readFileSync(FISH))).size, readFileSync(FISH).length);
  assert.equal(await requestCount(srv.url, '/extract-features', 400), before);
});

test('featuresBatch: one slot per image, a bad image gets its error', async () => {
  const b = await client.featuresBatch([FISH, readFileSync(COFFEE), new Blob([Buffer.from('not an image')])]);
  assert.equal(b.count, 3);
  assert.equal(b.features.length, 3);
  assert.equal(b.features[0].length, dim);
  assert.ok(close(b.features[0], (await client.features(FISH)).features));
  assert.equal(b.features[1].length, dim);
  assert.equal(b.features[2].error.code, 'unsupported_format');
});

test('items: put (path, metadata, async), get, list with paging, image, delete', async () => {
  const p = await client.putItem('shop/fruits 1', FRUITS, { metadata: { color: 'red', n: 3 } });
  assert.equal(p.status, 201);
  assert.equal(p.created, true);
  assert.equal(p.item.id, 'shop/fruits 1');
  assert.deepEqual(p.item.metadata, { color: 'red', n: 3 });
  assert.equal(p.item.has_embedding, true);
  const again = await client.putItem('shop/fruits 1', readFileSync(FRUITS), { metadata: { color: 'red', n: 3 } });
  assert.equal(again.status, 200);
  assert.equal(again.created, false);
  const q = await client.putItem('fish', createReadStream(FISH), { metadata: { color: 'blue' }, async: true });
  assert.ok(q.status === 202 || q.status === 201, String(q.status));
  assert.equal(q.queued, q.status === 202);
  await client.putItem('coffee', COFFEE, { metadata: { color: 'brown' } });

  const g = await client.getItem('shop/fruits 1');
  assert.equal(g.id, 'shop/fruits 1');
  assert.equal(g.embedding, undefined);
  const ge = await client.getItem('shop/fruits 1', { embedding: true });
  assert.ok(close(ge.embedding, (await client.features(FRUITS)).features));

  const page1 = await client.listItems({ limit: 2 });
  assert.equal(page1.total, 3);
  assert.equal(page1.items.length, 2);
  assert.ok(page1.next_cursor);
  const page2 = await client.listItems({ cursor: page1.next_cursor, limit: 2 });
  assert.equal(page2.items.length, 1);
  assert.equal(page2.next_cursor, null);
  const all = [];
  for await (const it of client.items({ limit: 1 })) all.push(it.id);
  assert.deepEqual(all.sort(), ['coffee', 'fish', 'shop/fruits 1']);

  const img = await client.getItemImage('shop/fruits 1');
  assert.equal(img.contentType, 'image/jpeg');
  assert.deepEqual(Buffer.from(img.bytes), readFileSync(FRUITS));
});

test('search by image, text, vector and id with k, offset, min_score and filter', async () => {
  // the queued item is embedded by the background worker
  for (let i = 0; i < 200 && !(await client.getItem('fish')).has_embedding; i++) await new Promise((r) => setTimeout(r, 25));
  const byImage = await client.searchByImage(FRUITS, { k: 3 });
  assert.equal(byImage.results[0].id, 'shop/fruits 1');
  assert.ok(byImage.results[0].score > 0.999);
  assert.equal(byImage.count, 3);
  const filtered = await client.searchByImage(readFileSync(FISH), { k: 3, filter: { color: 'red' } });
  assert.deepEqual(filtered.results.map((r) => r.id), ['shop/fruits 1']);
  const offset = await client.search({ image: FRUITS, k: 2, offset: 1 });
  assert.deepEqual(offset.results.map((r) => r.id), byImage.results.slice(1, 3).map((r) => r.id));

  const vec = (await client.features(FISH)).features;
  const byVector = await client.searchByVector(Float32Array.from(vec), { k: 1 });
  assert.equal(byVector.results[0].id, 'fish');
  const typed = await client.search({ vector: Float32Array.from(vec), k: 1 });
  assert.equal(typed.results[0].id, 'fish');
  const strict = await client.searchByVector(vec, { k: 3, minScore: 0.999 });
  assert.deepEqual(strict.results.map((r) => r.id), ['fish']);

  const byId = await client.searchById('fish', { k: 5 });
  assert.equal(byId.results.length, 2);
  assert.ok(!byId.results.some((r) => r.id === 'fish'), 'more like this returned the item itself');
  const byIdFiltered = await client.searchById('fish', { k: 5, filter: { color: 'brown' } });
  assert.deepEqual(byIdFiltered.results.map((r) => r.id), ['coffee']);

  const byText = await client.searchByText('a photo of a fish', { k: 2 });
  assert.equal(byText.results.length, 2);
  assert.ok(byText.results[0].score >= byText.results[1].score);
  const textFiltered = await client.search({ text: 'anything', k: 5, filter: { color: 'blue' } });
  assert.deepEqual(textFiltered.results.map((r) => r.id), ['fish']);

  await assert.rejects(client.search({ text: 'a', id: 'fish' }), (e) => e.code === 'invalid_input');
});

test('classify: labels ranked, top, template', async () => {
  const c = await client.classify(FRUITS, ['a fruit', 'a fish', 'a car']);
  assert.equal(c.labels.length, 3);
  assert.deepEqual(c.labels.map((l) => l.label).sort(), ['a car', 'a fish', 'a fruit']);
  const sum = c.labels.reduce((a, l) => a + l.prob, 0);
  assert.ok(Math.abs(sum - 1) < 1e-4, `probabilities sum to ${sum}`);
  assert.ok(c.labels[0].prob >= c.labels[1].prob);
  const top = await client.classify(readFileSync(FRUITS), ['a fruit', 'a fish', 'a car'], { top: 1, template: 'an image of {}' });
  assert.equal(top.labels.length, 1);
  assert.equal(top.template, 'an image of {}');
  await assert.rejects(client.classify(FRUITS, ['one']), (e) => e.code === 'invalid_input');
});

test('errors: a typed ImgsearchError with status, code, message and request id', async () => {
  const d = await client.deleteItem('coffee');
  assert.deepEqual(d, { id: 'coffee', deleted: true });
  const e = await client.getItem('coffee', {}, { requestId: 'req-node-1' }).then(() => null, (x) => x);
  assert.ok(e instanceof ImgsearchError);
  assert.equal(e.name, 'ImgsearchError');
  assert.equal(e.status, 404);
  assert.equal(e.code, 'not_found');
  assert.match(e.message, /coffee/);
  assert.equal(e.requestId, 'req-node-1');
  assert.equal(e.url, srv.url);
  await assert.rejects(client.deleteItem('coffee'), (x) => x.status === 404);
});

test('a 400 is never retried', async () => {
  const events = [];
  const c = new ImgsearchClient({ urls: [srv.url], retries: 5, onEvent: (ev) => events.push(ev) });
  const before = await requestCount(srv.url, '/search', 400);
  const e = await c.searchByText('x', { k: 0 }).then(() => null, (x) => x);
  assert.ok(e instanceof ImgsearchError);
  assert.equal(e.status, 400);
  assert.equal(e.code, 'invalid_argument');
  assert.equal(e.attempts, 1);
  assert.equal(events.filter((ev) => ev.type === 'retry').length, 0);
  assert.equal(await requestCountAtLeast(srv.url, '/search', 400, before + 1), before + 1);
  await new Promise((r) => setTimeout(r, 300)); // a retry would come at once
  assert.equal(await requestCount(srv.url, '/search', 400), before + 1, 'the server saw the bad request more than once');
  assert.deepEqual(c.servers().map((s) => s.up), [true], 'a 400 marked the server down');
  c.close();
});

test('a caller AbortSignal stops a call', async () => {
  const ac = new AbortController();
  ac.abort(new Error('the user left'));
  await assert.rejects(client.searchByText('x', {}, { signal: ac.signal }), (e) => e instanceof ImgsearchError && e.code === 'aborted');
  assert.deepEqual(client.servers().map((s) => s.up), [true], 'an abort marked the server down');
});

test('the server stops cleanly after all of it (SIGTERM: exit 0, no sanitizer report)', async () => {
  srv.kill('SIGTERM');
  const { code } = await srv.exited;
  assert.equal(code, 0, srv.log());
  assert.doesNotMatch(srv.log(), /ERROR: (Address|Leak)Sanitizer|runtime error:/);
});
