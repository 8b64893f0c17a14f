/** Every JEST_PG_* variable the source reads is a row of the README's table of environment variables. */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');

test('every environment switch in src/ is documented in the README', () => {
  const src = path.join(ROOT, 'src');
  const used = new Set<string>();
  for (const f of readdirSync(src, { recursive: true }) as string[]) {
    if (!f.endsWith('.ts')) continue;
    for (const m of readFileSync(path.join(src, f), 'utf8').matchAll(/\bJEST_PG_[A-Z_]+\b/g)) used.add(m[0]);
  }
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const table = readme.split(/^### Environment variables$/m)[1].split(/^#/m)[0];
  const rows = new Set([...table.matchAll(/^\| `(JEST_PG_[A-Z_]+)` \|/gm)].map((m) => m[1]));
  expect(used.size).toBeGreaterThan(0);
  expect([...used].filter((v) => !rows.has(v)).sort()).toEqual([]);
});
