/**
 * Splits a byte stream into protocol frames: a type byte, an int32 length that counts
 * itself, and a body. Frames are handed out as offsets into the buffer they arrived in,
 * so a caller that forwards them unchanged copies nothing. The bytes of an incomplete
 * frame are kept in a buffer sized once for the whole frame, so a large frame arriving
 * in many chunks is copied once, not quadratically.
 */
export type FrameHandler = (buf: Buffer, code: number, start: number, end: number) => void;

export class FrameError extends Error {}

export class Framer {
  private pending: Buffer | undefined;
  private pendingLen = 0;
  constructor(private readonly maxFrame = 0x3fffffff) {}

  get buffered(): number {
    return this.pendingLen;
  }

  push(chunk: Buffer, onFrame: FrameHandler): void {
    let buf = chunk;
    if (this.pending !== undefined) {
      const total = this.pendingLen + chunk.length;
      if (this.pending.length < total) {
        const grown = Buffer.allocUnsafe(Math.max(total, this.frameSize(this.pending, this.pendingLen)));
        this.pending.copy(grown, 0, 0, this.pendingLen);
        this.pending = grown;
      }
      chunk.copy(this.pending, this.pendingLen);
      buf = this.pending.subarray(0, total);
      this.pending = undefined;
      this.pendingLen = 0;
    }
    let off = 0;
    const n = buf.length;
    while (n - off >= 5) {
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || len > this.maxFrame) {
        throw new FrameError(`invalid length ${len} for message type ${JSON.stringify(String.fromCharCode(buf[off]))}`);
      }
      const end = off + 1 + len;
      if (end > n) break;
      onFrame(buf, buf[off], off, end);
      off = end;
    }
    if (off < n) {
      const left = n - off;
      const size = Math.max(left, this.frameSize(buf.subarray(off), left), 64);
      this.pending = Buffer.allocUnsafe(size);
      buf.copy(this.pending, 0, off, n);
      this.pendingLen = left;
    }
  }

  private frameSize(buf: Buffer, len: number): number {
    return len >= 5 ? 1 + buf.readInt32BE(1) : 5;
  }
}
