/**
 * Build dist/ when any file under src/ is newer than its output or has none (tests that spawn
 * dist/ scripts, e.g. the reaper). A failed build throws with tsc's own report.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');

/** The src/ files whose dist/ output is missing or older than they are. */
export function staleOutputs(): string[] {
  const src = path.join(ROOT, 'src');
  const files = (readdirSync(src, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  return files.filter((f) => {
    const out = path.join(ROOT, 'dist', f.replace(/\.ts$/, '.js'));
    return !existsSync(out) || statSync(out).mtimeMs < statSync(path.join(src, f)).mtimeMs;
  });
}

export function ensureBuilt(): void {
  if (staleOutputs().length === 0) return;
  try {
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'pipe' });
  } catch (e) {
    const { stdout, stderr } = e as { stdout?: Buffer; stderr?: Buffer };
    const out = `${stdout?.toString() ?? ''}${stderr?.toString() ?? ''}`.trim();
    throw new Error(`the build (tsc -p tsconfig.build.json) failed:\n${out || (e as Error).message}`);
  }
  const left = staleOutputs();
  if (left.length) throw new Error(`the build (tsc -p tsconfig.build.json) left these files without a fresh output: ${left.join(', ')}`);
}
