/** Worker databases on the owner's side, through the PostgreSQL driver (see worker-clone.ts). */
import { dropDatabase, textQuery, withClient, withDatabase } from '../util/admin';
import { cloneSpec, createClone, ensureCloned } from './worker-clone';
import type { RunManifest } from './manifest';

export async function ensureWorkerDatabase(m: RunManifest, workerId: string): Promise<{ name: string; url: string; created: boolean }> {
  const spec = cloneSpec(m, workerId);
  const created = await withClient(m.adminUrl, (c) => ensureCloned(textQuery(c), spec), { applicationName: 'jest-environment-pg clone' });
  return { name: spec.name, url: withDatabase(m.adminUrl, spec.name), created };
}

/** Terminate everything on a worker database, drop it and clone it again (a backend around the sandbox touched it). */
export async function rebuildWorkerDatabase(m: RunManifest, name: string): Promise<void> {
  if (!name.startsWith(`${m.prefix}_${m.runId}_`)) throw new Error(`refusing to rebuild ${name}: not a database of run ${m.runId}`);
  await withClient(
    m.adminUrl,
    async (c) => {
      await dropDatabase(c, name, m.versionNum);
      await createClone(textQuery(c), { name, template: m.templateDb, runId: m.runId, versionNum: m.versionNum });
    },
    { applicationName: 'jest-environment-pg clone' },
  );
}
