// A typed use of every method: checked with `tsc --noEmit -p examples/tsconfig.json`
// (tests/cli/test_node_client.sh), never run.
import { createReadStream, readFileSync } from 'node:fs';
import { ImgsearchClient, ImgsearchError, type SearchHit, type Readiness, type ClientEvent } from 'imgsearch-client';

const client = new ImgsearchClient({
  urls: ['http://10.0.0.1:8001', 'http://10.0.0.2:8001'],
  apiKey: process.env.IMGSEARCH_KEY,
  timeoutMs: 5000,
  onEvent: (ev: ClientEvent) => {
    if (ev.type === 'down') console.warn(`${ev.url} is down: ${ev.error.message}`);
  },
});

export async function demo(signal: AbortSignal): Promise<number> {
  const f = await client.features(readFileSync('a.jpg'), { signal });
  const dim: number = f.dimension;
  const batch = await client.featuresBatch(['a.jpg', createReadStream('b.png'), new Blob([])]);
  for (const slot of batch.features) if (!Array.isArray(slot)) console.log(slot.error.code);
  const hits: SearchHit[] = (await client.searchByText('red shoes', { k: 5, filter: { category: 'shoes' } })).results;
  await client.searchByImage(new URL('file:///tmp/q.jpg'), { k: 3, offset: 3, minScore: 0.2 });
  await client.searchByVector(Float32Array.from(f.features), { k: 1 });
  await client.searchById('shoe-17', { k: 10 });
  await client.search({ text: 'a cat', k: 2 });
  const put = await client.putItem('shoe-17', 'shoe.jpg', { metadata: { category: 'shoes', price: 40 }, async: true });
  if (put.queued) console.log(put.item.has_embedding);
  const item = await client.getItem('shoe-17', { embedding: true });
  const emb: number[] | undefined = item.embedding;
  const page = await client.listItems({ limit: 50 });
  const next: string | null = page.next_cursor;
  for await (const it of client.items({ limit: 100 })) console.log(it.id, it.metadata);
  const img = await client.getItemImage('shoe-17');
  console.log(img.bytes.byteLength, img.contentType, emb?.length, next);
  await client.deleteItem('shoe-17', { retries: 0, idempotent: false });
  const labels = await client.classify('a.jpg', ['a dress', 'a shoe'], { top: 1 });
  console.log(labels.labels[0].prob);
  const r: Readiness = await client.ready();
  const h = await client.health();
  const m: string = await client.metrics();
  console.log(r.ready, h.status, m.length, client.servers().map((s) => s.up));
  try {
    await client.getItem('missing');
  } catch (e) {
    if (e instanceof ImgsearchError && e.status === 404) console.log(e.code, e.requestId, e.attempts);
  }
  client.close();
  return dim + hits.length;
}
