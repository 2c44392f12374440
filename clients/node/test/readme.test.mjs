// The README's Express example parses (node --check; it is never run: it
// needs express and multer), and the README names every public method.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ImgsearchClient } from '../index.js';
import { tempDir } from '../testlib/server.mjs';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

test('the Express example is valid JavaScript', () => {
  const m = /## Express example\n+```js\n([\s\S]*?)\n```/.exec(readme);
  assert.ok(m, 'no Express example in README.md');
  assert.match(m[1], /from 'express'/);
  assert.match(m[1], /new ImgsearchClient\(/);
  const d = tempDir();
  try {
    const f = join(d.path, 'express-example.mjs');
    writeFileSync(f, m[1]);
    execFileSync(process.execPath, ['--check', f], { stdio: 'pipe' });
    // the check can fail: a broken copy is refused
    writeFileSync(f, m[1].replace('app.listen(3000);', 'app.listen(3000;'));
    assert.throws(() => execFileSync(process.execPath, ['--check', f], { stdio: 'pipe' }));
  } finally {
    d.remove();
  }
});

test('the README names every public method', () => {
  const methods = Object.getOwnPropertyNames(ImgsearchClient.prototype).filter((n) => n !== 'constructor');
  assert.ok(methods.length >= 18, methods.join(' '));
  const missing = methods.filter((n) => !readme.includes(`\`${n}(`));
  assert.deepEqual(missing, []);
});
