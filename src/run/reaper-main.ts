/** Entry of the detached reaper process: `node reaper-main.js <manifestPath>`. */

// Our stdout and stderr are pipes the parent closes once we are ready: a late write must not crash us.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

// Required after the lines above (an import would be hoisted above them). The reaper's own
// connection is the proxy's driver-free client (proxy/admin-client.ts): it does not load pg.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { reaperMain } = require('./reaper') as typeof import('./reaper');

// The run's teardown (and with it the cache and template code) is loaded only when it is needed.
void reaperMain(process.argv[2], async () => (await import('./teardown')).teardownRun);
