/**
 * The end-of-file guard in a process of its own (throwing uncaught errors inside Jest's would
 * reach Jest's own handlers): errors of the connections the sandbox closed are dropped, any other
 * reaches the listeners that were there, which stay installed.
 */
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import vm from 'node:vm';
import path from 'node:path';
import { ensureBuilt } from '../helpers/build';
import { closedBySandbox } from '../../src/sandbox/closing-guard';

const guard = path.join(__dirname, '..', '..', 'dist', 'sandbox', 'closing-guard.js');

function run(script: string): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['-e', `const { withClosingGuard } = require(${JSON.stringify(guard)});\n${script}`], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const OURS = `Object.assign(new Error('JESTPG_FILE_ENDED: The test file x ended'), { code: '57P01' })`;

beforeAll(() => ensureBuilt());

test('what the sandbox closing a connection makes a client throw, and nothing else', () => {
  expect(closedBySandbox(Object.assign(new Error('JESTPG_FILE_ENDED: The test file a.test.js ended'), { code: '57P01' }))).toBe(true);
  expect(closedBySandbox(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }))).toBe(true);
  expect(closedBySandbox(new Error('Connection terminated unexpectedly'))).toBe(true);
  // From a worker thread's pool: the error crosses to this thread without its code.
  expect(closedBySandbox(new Error('JESTPG_FILE_ENDED: The test file a.test.js ended'))).toBe(true);
  expect(closedBySandbox(new Error('terminating connection due to administrator command'))).toBe(false);
  expect(closedBySandbox(Object.assign(new Error('JESTPG_FILE_ENDED: x'), { code: '42P01' }))).toBe(false);
  expect(closedBySandbox(new Error('JESTPG_FILE_ENDED in a test of its own'))).toBe(false);
  expect(closedBySandbox('Connection terminated unexpectedly')).toBe(false);
});

test("a pool of the test's realm with no 'error' listener: Node's ERR_UNHANDLED_ERROR around the sandbox's error is recognised", () => {
  const unhandled = (source: string) => {
    try {
      new EventEmitter().emit('error', vm.runInNewContext(source));
    } catch (e) {
      return e as { code?: string };
    }
    throw new Error('emit did not throw');
  };
  const ours = unhandled(`Object.assign(new Error('JESTPG_FILE_ENDED: The test file a.test.js ended'), { code: '57P01' })`);
  expect(ours.code).toBe('ERR_UNHANDLED_ERROR');
  expect(closedBySandbox(ours)).toBe(true);
  expect(closedBySandbox(unhandled(`Object.assign(new Error('relation "x" does not exist'), { code: '42P01' })`))).toBe(false);
});

test("the listeners that were there stay, and get every error that is not the sandbox's", () => {
  const r = run(`
    const seen = [];
    const mine = (e) => seen.push(e.message);
    process.on('uncaughtException', mine);
    withClosingGuard(async () => {
      setImmediate(() => { throw ${OURS}; });
      setImmediate(() => { throw new Error('a bug of the test'); });
      await new Promise((r) => setTimeout(r, 20));
      return { open: [1] };
    }).then(() => {
      console.log(JSON.stringify({ seen, mine: process.listeners('uncaughtException').includes(mine), count: process.listenerCount('uncaughtException') }));
    });`);
  expect(r.err).toBe('');
  expect(JSON.parse(r.out)).toEqual({ seen: ['a bug of the test'], mine: true, count: 1 });
  expect(r.code).toBe(0);
});

test('with no listener, an error of the sandbox is dropped and any other still ends the process', () => {
  const ours = run(`withClosingGuard(async () => { setImmediate(() => { throw ${OURS}; }); await new Promise((r) => setTimeout(r, 20)); return { open: [1] }; }).then(() => console.log('alive'));`);
  expect(ours).toMatchObject({ code: 0, out: 'alive\n' });
  const other = run(`withClosingGuard(async () => { setImmediate(() => { throw new Error('a bug of the test'); }); await new Promise((r) => setTimeout(r, 20)); return { open: [1] }; }).then(() => console.log('alive'));`);
  expect(other.code).not.toBe(0);
  expect(other.err).toContain('a bug of the test');
  expect(other.out).toBe('');
});
