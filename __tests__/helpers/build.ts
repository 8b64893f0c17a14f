/** Build dist/ if it is missing or older than src/ (tests that spawn dist/ scripts, e.g. the reaper). */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');

export function ensureBuilt(): void {
  const src = path.join(ROOT, 'src');
  const newest = Math.max(...readdirSync(src).filter((f) => f.endsWith('.ts')).map((f) => statSync(path.join(src, f)).mtimeMs));
  if (!existsSync(path.join(ROOT, 'dist', 'reaper-main.js')) || statSync(path.join(ROOT, 'dist', 'run.js')).mtimeMs < newest) {
    try {
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'pipe' });
    } catch {
      // type errors elsewhere still emit; the reaper only needs our files
    }
  }
}
