/** Build dist/ if it is missing or older than src/ (tests that spawn dist/ scripts, e.g. the reaper). */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');

export function ensureBuilt(): void {
  const src = path.join(ROOT, 'src');
  const files = (readdirSync(src, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts'));
  const newest = Math.max(...files.map((f) => statSync(path.join(src, f)).mtimeMs));
  if (!existsSync(path.join(ROOT, 'dist', 'run', 'reaper-main.js')) || statSync(path.join(ROOT, 'dist', 'run', 'run.js')).mtimeMs < newest) {
    try {
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'pipe' });
    } catch (e) {
      const out = (e as { stdout?: Buffer }).stdout?.toString() ?? '';
      throw new Error(`the build (tsc -p tsconfig.build.json) failed:\n${out || (e as Error).message}`);
    }
  }
}
