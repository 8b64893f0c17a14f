/**
 * Serializer for the few messages the proxy writes itself. Pure functions returning
 * buffers; constant frames are built once at module load.
 */
import { B, F } from './codes';

class Writer {
  private buf = Buffer.allocUnsafe(1024);
  private off = 5;
  private ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n));
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }
  byte(v: number): this {
    this.ensure(1);
    this.buf[this.off++] = v;
    return this;
  }
  int16(v: number): this {
    this.ensure(2);
    this.buf.writeInt16BE(v, this.off);
    this.off += 2;
    return this;
  }
  int32(v: number): this {
    this.ensure(4);
    this.buf.writeInt32BE(v, this.off);
    this.off += 4;
    return this;
  }
  cstring(s: string): this {
    const n = Buffer.byteLength(s);
    this.ensure(n + 1);
    this.buf.write(s, this.off, 'utf8');
    this.off += n;
    this.buf[this.off++] = 0;
    return this;
  }
  bytes(b: Buffer, start = 0, end = b.length): this {
    this.ensure(end - start);
    b.copy(this.buf, this.off, start, end);
    this.off += end - start;
    return this;
  }
  /** Finish a typed message (code 0 = untyped startup-phase packet) and return a copy. */
  flush(code: number): Buffer {
    let out: Buffer;
    if (code === 0) {
      this.buf.writeInt32BE(this.off - 1, 1);
      out = Buffer.from(this.buf.subarray(1, this.off));
    } else {
      this.buf[0] = code;
      this.buf.writeInt32BE(this.off - 1, 1);
      out = Buffer.from(this.buf.subarray(0, this.off));
    }
    this.off = 5;
    return out;
  }
}

export const writer = new Writer();

const readyFrames = {
  I: Buffer.from([B.ReadyForQuery, 0, 0, 0, 5, 0x49]),
  T: Buffer.from([B.ReadyForQuery, 0, 0, 0, 5, 0x54]),
  E: Buffer.from([B.ReadyForQuery, 0, 0, 0, 5, 0x45]),
};
export const readyForQuery = (status: 'I' | 'T' | 'E'): Buffer => readyFrames[status];
export const syncFrame = Buffer.from([F.Sync, 0, 0, 0, 4]);
export const authOk = Buffer.from([B.Authentication, 0, 0, 0, 8, 0, 0, 0, 0]);
export const sslNo = Buffer.from('N');

export const query = (sql: string): Buffer => writer.cstring(sql).flush(F.Query);
export const close = (kind: 'S' | 'P', name: string): Buffer => writer.byte(kind.charCodeAt(0)).cstring(name).flush(F.Close);
export const commandComplete = (tag: string): Buffer => writer.cstring(tag).flush(B.CommandComplete);
export const parameterStatus = (name: string, value: string): Buffer => writer.cstring(name).cstring(value).flush(B.ParameterStatus);
export const backendKeyData = (pid: number, key: number): Buffer => writer.int32(pid).int32(key).flush(B.BackendKeyData);
export const authMd5 = (salt: Buffer): Buffer => writer.int32(5).bytes(salt).flush(B.Authentication);
/** AuthenticationSASL (10) offering SCRAM-SHA-256, then SASLContinue (11) / SASLFinal (12) with their data. */
export const authSasl = (): Buffer => writer.int32(10).cstring('SCRAM-SHA-256').byte(0).flush(B.Authentication);
export const authSaslContinue = (data: string): Buffer => writer.int32(11).bytes(Buffer.from(data)).flush(B.Authentication);
export const authSaslFinal = (data: string): Buffer => writer.int32(12).bytes(Buffer.from(data)).flush(B.Authentication);
export const cancelRequest = (pid: number, key: number): Buffer => writer.int32(80877102).int32(pid).int32(key).flush(0);

export interface ErrorFields {
  severity?: 'ERROR' | 'FATAL' | 'WARNING' | 'NOTICE';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

function fields(e: ErrorFields, type: number): Buffer {
  const sev = e.severity ?? 'ERROR';
  writer.byte(0x53).cstring(sev).byte(0x56).cstring(sev).byte(0x43).cstring(e.code).byte(0x4d).cstring(e.message);
  if (e.detail) writer.byte(0x44).cstring(e.detail);
  if (e.hint) writer.byte(0x48).cstring(e.hint);
  return writer.byte(0).flush(type);
}
export const errorResponse = (e: ErrorFields): Buffer => fields(e, B.ErrorResponse);

/** Read a NUL-terminated string at `off`; returns the string and the offset after the NUL. */
export function readCString(buf: Buffer, off: number, end: number): [string, number] {
  const nul = buf.indexOf(0, off);
  if (nul < 0 || nul >= end) throw new RangeError('unterminated string');
  return [buf.toString('utf8', off, nul), nul + 1];
}

/** The values of a DataRow frame at `start` as text, NULL as null. */
export function readDataRow(buf: Buffer, start: number): (string | null)[] {
  const row: (string | null)[] = [];
  let p = start + 5;
  const n = buf.readInt16BE(p);
  p += 2;
  for (let i = 0; i < n; i++) {
    const l = buf.readInt32BE(p);
    p += 4;
    row.push(l < 0 ? null : buf.toString('utf8', p, p + l));
    if (l > 0) p += l;
  }
  return row;
}

/** The columns of a RowDescription frame at `start`: names and type OIDs. */
export function readRowDescription(buf: Buffer, start: number, end: number): { name: string; type: number }[] {
  const cols: { name: string; type: number }[] = [];
  let p = start + 5;
  const n = buf.readInt16BE(p);
  p += 2;
  for (let i = 0; i < n; i++) {
    const [name, next] = readCString(buf, p, end);
    // table oid (4), column number (2), then the type oid
    cols.push({ name, type: buf.readUInt32BE(next + 6) });
    p = next + 18;
  }
  return cols;
}

/** Parse the fields of an ErrorResponse/NoticeResponse frame into a map keyed by field letter. */
export function readFields(buf: Buffer, start: number, end: number): Record<string, string> {
  const out: Record<string, string> = {};
  let off = start + 5;
  while (off < end && buf[off] !== 0) {
    const k = String.fromCharCode(buf[off]);
    const [v, next] = readCString(buf, off + 1, end);
    out[k] = v;
    off = next;
  }
  return out;
}

/** The same ErrorResponse with its position field ('P') mapped back to the client's text. */
export function shiftPosition(buf: Buffer, start: number, end: number, map: (p: number) => number): Buffer {
  let off = start + 5;
  while (off < end && buf[off] !== 0) {
    const k = buf[off];
    const [v, next] = readCString(buf, off + 1, end);
    if (k === 0x50) writer.byte(k).cstring(String(Math.max(1, map(Number(v)))));
    else writer.byte(k).bytes(buf, off + 1, next);
    off = next;
  }
  return writer.byte(0).flush(buf[start]);
}
