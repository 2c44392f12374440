// server.mjs - starts real `imgsearch serve` processes for the client tests
// (IMGSEARCH_BIN, model from IMGSEARCH_FIXTURES/tiny-clip, a temporary store).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BIN = process.env.IMGSEARCH_BIN;
export const FIXTURES = process.env.IMGSEARCH_FIXTURES ?? new URL('../../../tests/fixtures', import.meta.url).pathname;
export const MODEL = join(FIXTURES, 'tiny-clip');
export const IMAGES = join(MODEL, 'images');
if (!BIN) throw new Error('IMGSEARCH_BIN must point at the imgsearch binary');

const running = new Set();
process.on('exit', () => { for (const p of running) try { p.kill('SIGKILL'); } catch { /* gone */ } });

export function tempDir() {
  const d = mkdtempSync(join(tmpdir(), 'imgsearch-node-'));
  return { path: d, remove: () => rmSync(d, { recursive: true, force: true }) };
}

/**
 * Starts `imgsearch serve` on 127.0.0.1:PORT (0: any free port) and resolves
 * when it prints its address: { url, port, proc, log(), kill(sig), exited }.
 */
export function startServer({ store, port = 0, args = [] }) {
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--store', store,
    '--model', MODEL, '--rate-limit', '0', '--threads', '2', ...args],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(proc);
  let log = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => { running.delete(proc); resolve({ code, sig }); }));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`no address within 10 s: ${log}`)); }, 10000);
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/[0-9.]+:(\d+))/.exec(log);
      if (m && t) {
        clearTimeout(t);
        resolve({
          url: m[1], port: Number(m[2]), proc, exited, log: () => log,
          kill: (sig = 'SIGTERM') => proc.kill(sig),
        });
      }
    });
    exited.then(({ code, sig }) => reject(new Error(`the server exited (${code ?? sig}): ${log}`)));
  });
}

/** Waits until /health says "ok" (the model is loaded). */
export async function waitReady(url, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      const j = await r.json();
      if (j.status === 'ok') return j;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} not ready within ${timeoutMs} ms`);
}

/** A counter of GET /metrics: imgsearch_http_requests_total for a route and status (0 when absent). */
export async function requestCount(url, route, status) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const want = `imgsearch_http_requests_total{route="${route}",status="${status}"} `;
  const line = text.split('\n').find((l) => l.startsWith(want));
  return line ? Number(line.slice(want.length)) : 0;
}

/**
 * requestCount once it reaches `atLeast` (the server counts a request after
 * its reply is sent, so the client can see the reply first); 5 s at most.
 */
export async function requestCountAtLeast(url, route, status, atLeast) {
  const end = Date.now() + 5000;
  let n = await requestCount(url, route, status);
  while (n < atLeast && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    n = await requestCount(url, route, status);
  }
  return n;
}

/** A metric without labels from GET /metrics (null when absent). */
export async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : null;
}

/** Kills a server and waits for its exit. */
export async function stop(srv, sig = 'SIGTERM') {
  if (srv.proc.exitCode !== null || srv.proc.signalCode !== null) return;
  srv.kill(sig);
  await srv.exited;
}
