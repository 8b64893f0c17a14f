import { maxConnections, serverSettings } from '../../src/server/cluster';

test("the embedded server allows Postgres' default connections, more on a machine with many cores", () => {
  expect(maxConnections(2)).toBe(100);
  expect(maxConnections(20)).toBe(100);
  expect(maxConnections(64)).toBe(276);
});

test('the embedded server is tuned for throwaway data and sized for the run', () => {
  const s = serverSettings(18, 5432, '/tmp/x');
  expect(s).toMatchObject({ fsync: 'off', full_page_writes: 'off', synchronous_commit: 'off', autovacuum: 'off', shared_buffers: '32MB', max_locks_per_transaction: '256' });
  expect(Number(s.max_connections)).toBeGreaterThanOrEqual(100);
  expect(s.io_method).toBe('sync');
  expect(serverSettings(15, 5432, '/tmp/x').io_method).toBeUndefined();
});
