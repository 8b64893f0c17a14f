/** Entry of the detached reaper process: `node reaper-main.js <manifestPath>`. */

// pg probes for Cloudflare Workers with `new Response(…)` unless `navigator` exists (Node ≥ 21
// has it), which loads Node's whole fetch implementation: ≈ 15–20 ms of the reaper's boot, and
// the reaper taking its lease is on the critical path of a warm start.
if (typeof (globalThis as { navigator?: unknown }).navigator === 'undefined') {
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent: `Node.js/${process.versions.node}` }, configurable: true, writable: true });
}

// Our stdout and stderr are pipes the parent closes once we are ready: a late write must not crash us.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

// Required after the lines above (an import would be hoisted above them).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { reaperMain } = require('./reaper') as typeof import('./reaper');

// The run's teardown (and with it the cache and template code) is loaded only when it is needed.
void reaperMain(process.argv[2], async () => (await import('./teardown')).teardownRun);
