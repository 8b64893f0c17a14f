import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConnectError, cancelTargetOf, parseUrl, pgpass } from '../../src/proxy/connect';
import { scramClient } from '../../src/proxy/scram';

test('SCRAM-SHA-256: the RFC 7677 example exchange', () => {
  const c = scramClient('pencil', 'rOprNGfwEbeRWgbNEkqO', 'user');
  expect(c.first).toBe('n,,n=user,r=rOprNGfwEbeRWgbNEkqO');
  const serverFirst = 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096';
  expect(c.final(serverFirst)).toBe('c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=');
  expect(() => c.verify('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).not.toThrow();
  expect(() => c.verify('v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).toThrow(/server signature does not match/);
  expect(() => c.verify('e=invalid-proof')).toThrow(/refused: invalid-proof/);
});

test('SCRAM-SHA-256: a server nonce that does not extend ours is refused', () => {
  const c = scramClient('pencil', 'abc');
  expect(c.first).toBe('n,,n=*,r=abc');
  expect(() => c.final('r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096')).toThrow(/nonce/);
  expect(() => c.final('r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0')).toThrow(/iteration/);
});

test('parseUrl: the parts libpq reads', () => {
  expect(parseUrl('postgres://u:p%40ss@db.example:6543/app?sslmode=verify-ca&sslrootcert=/ca.pem')).toEqual({
    host: 'db.example',
    port: 6543,
    user: 'u',
    password: 'p@ss',
    database: 'app',
    sslmode: 'verify-ca',
    sslrootcert: '/ca.pem',
  });
  const sock = parseUrl('postgresql://postgres@localhost:5433/x?host=%2Ftmp%2Fsock');
  expect(sock).toMatchObject({ host: '/tmp/sock', port: 5433, user: 'postgres', password: undefined, database: 'x', sslmode: 'disable' });
  expect(cancelTargetOf(sock)).toEqual({ path: '/tmp/sock/.s.PGSQL.5433' });
  expect(cancelTargetOf(parseUrl('postgres://u@[::1]:5432/x'))).toEqual({ host: '::1', port: 5432 });
  expect(parseUrl('postgres://u@h/').database).toBe('u');
  // An empty host after the credentials, as libpq accepts it (a socket directory in ?host=).
  expect(parseUrl('postgres://postgres@/db?host=%2Fdev%2Fshm%2Fx&port=5433')).toMatchObject({ host: '/dev/shm/x', port: 5433, user: 'postgres', database: 'db' });
  expect(parseUrl('postgresql://u:pw@/db').host).toBe('localhost');
  expect(parseUrl('postgres://u@h/d?ssl=true').sslmode).toBe('verify-full');
  expect(parseUrl('postgres://u@h/d?sslmode=no-verify').sslmode).toBe('require');
  expect(parseUrl('postgres://u@h/d?options=-c%20search_path%3Dapp').options).toBe('-c search_path=app');
  expect(() => parseUrl('postgres://u@h/d?sslmode=sometimes')).toThrow(ConnectError);
  expect(() => parseUrl('mysql://u@h/d')).toThrow(/scheme/);
  expect(() => parseUrl('not a url')).toThrow(/not a postgres/);
});

test('pgpass: wildcards, escapes, first match, and a file others may read is ignored', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgpass-test-'));
  try {
    const file = path.join(dir, 'pgpass');
    writeFileSync(
      file,
      ['# comment', 'other:5432:*:u:wrong', 'h:5432:app:u:first\\:pw', 'h:*:*:u:second', 'localhost:5433:*:postgres:socket-pw', ''].join('\n'),
      { mode: 0o600 },
    );
    const t = parseUrl('postgres://u@h:5432/app');
    expect(pgpass(t, file)).toBe('first:pw');
    expect(pgpass({ ...t, database: 'other' }, file)).toBe('second');
    expect(pgpass(parseUrl('postgres://postgres@localhost:5433/x?host=/tmp/s'), file)).toBe('socket-pw');
    expect(pgpass({ ...t, user: 'nobody' }, file)).toBeUndefined();
    expect(pgpass(t, path.join(dir, 'missing'))).toBeUndefined();
    writeFileSync(path.join(dir, 'open'), 'h:5432:app:u:pw\n', { mode: 0o644 });
    expect(pgpass(t, path.join(dir, 'open'))).toBeUndefined();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
