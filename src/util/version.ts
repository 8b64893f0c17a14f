/** This package's version (read once from its package.json: two levels up from dist/util or src/util). */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

export function packageVersion(): string {
  for (const p of [path.join(__dirname, '..', '..', 'package.json'), path.join(__dirname, '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(readFileSync(p, 'utf8'));
      if (pkg.name === 'jest-environment-pg') return String(pkg.version);
    } catch {
      // try the next
    }
  }
  return '0.0.0';
}
