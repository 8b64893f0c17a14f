/**
 * A run: one Jest invocation's server, template, worker databases, lease and reaper.
 * startRun (start.ts: globalSetup, or the first worker in environment-only mode) → attachRun
 * (attach.ts: each worker) → ensureWorkerDatabase (worker-db.ts: per worker, lazily) →
 * teardownRun (teardown.ts: globalTeardown, an interrupt, or the reaper). This module is the
 * run layer's entry: the other layers import from here.
 */
export { MANIFEST_ENV, readManifest, type RunCacheInfo, type RunContext, type RunManifest, type TeardownSummary } from './manifest';
export { startRun } from './start';
export { attachRun, jestMainPid } from './attach';
export { ensureWorkerDatabase, rebuildWorkerDatabase } from './worker-db';
export { idleLog, noteIdleClosed, teardownRun } from './teardown';
export { formatReport, printTeardown } from './report';
export { takeReaperLogs } from './reaper';
