import { Framer, FrameError } from '../../src/proxy/framer';
import * as m from '../../src/proxy/messages';

const stream = Buffer.concat([
  m.query('SELECT 1'),
  m.syncFrame,
  m.query('x'.repeat(5000)),
  m.commandComplete('INSERT 0 1'),
  Buffer.from([0x48, 0, 0, 0, 4]), // Flush
]);

function frames(chunks: Buffer[]): string[] {
  const f = new Framer();
  const out: string[] = [];
  for (const c of chunks) f.push(c, (buf, code, start, end) => out.push(`${String.fromCharCode(code)}:${buf.subarray(start, end).toString('hex')}`));
  expect(f.buffered).toBe(0);
  return out;
}

const whole = frames([stream]);

test('frames a stream into its messages', () => {
  expect(whole.map((f) => f[0])).toEqual(['Q', 'S', 'Q', 'C', 'H']);
});

test('the same frames come out however the stream is split in two, at every offset', () => {
  for (let i = 1; i < stream.length; i++) {
    expect(frames([stream.subarray(0, i), stream.subarray(i)])).toEqual(whole);
  }
});

test('and when it arrives one byte at a time', () => {
  const bytes = Array.from(stream, (b) => Buffer.from([b]));
  expect(frames(bytes)).toEqual(whole);
});

test('split at every pair of offsets in the first 40 bytes', () => {
  for (let i = 1; i < 40; i++) {
    for (let j = i + 1; j < 40; j++) {
      expect(frames([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)])).toEqual(whole);
    }
  }
});

test('a length below 4 is a protocol error, not a hang', () => {
  const f = new Framer();
  expect(() => f.push(Buffer.from([0x51, 0, 0, 0, 2]), () => undefined)).toThrow(FrameError);
});

test('messages round-trip: error fields and cstrings', () => {
  const e = m.errorResponse({ code: '23505', message: 'dup', detail: 'd', hint: 'h' });
  expect(m.readFields(e, 0, e.length)).toEqual({ S: 'ERROR', V: 'ERROR', C: '23505', M: 'dup', D: 'd', H: 'h' });
  const c = m.cancelRequest(12, 34);
  expect(c.length).toBe(16);
  expect(c.readInt32BE(0)).toBe(16);
  expect(c.readInt32BE(4)).toBe(80877102);
});

test('shiftPosition maps the P field back and keeps every other field', () => {
  const e = Buffer.concat([Buffer.from('E'), Buffer.alloc(4), Buffer.from('SERROR\0C42703\0Mcolumn "nope" does not exist\0P33\0\0')]);
  e.writeInt32BE(e.length - 1, 1);
  const shifted = m.shiftPosition(e, 0, e.length, (p) => p - 25);
  expect(m.readFields(shifted, 0, shifted.length)).toEqual({ S: 'ERROR', C: '42703', M: 'column "nope" does not exist', P: '8' });
  expect(shifted.readInt32BE(1)).toBe(shifted.length - 1);
});
