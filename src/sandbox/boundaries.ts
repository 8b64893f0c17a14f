/**
 * The boundaries a file posts to its sandbox (per-file settings, the current file, a test or a
 * hook begins): sent without waiting, applied in order and before any client byte sent after
 * them. The same messages whichever side carries them: the sandbox thread's control port
 * (thread.ts) or the connection to a sandbox the runner's main process hosts (hosted.ts).
 */
import type { Sandbox } from '../proxy/sandbox';

export type Boundary =
  | { op: 'configure'; args: Parameters<Sandbox['configure']>[0] }
  | { op: 'currentFile'; file: string }
  | { op: 'beginTest'; name: string }
  | { op: 'enterHook' }
  | { op: 'leaveHook' }
  | { op: 'expectFile' };

/** A sandbox's boundary methods, over how its carrier posts a boundary. */
export abstract class BoundaryPoster {
  private currentFile_: string | undefined;

  protected abstract post(b: Boundary): void;

  configure(args: Parameters<Sandbox['configure']>[0]): void {
    this.post({ op: 'configure', args });
  }
  get currentFile(): string | undefined {
    return this.currentFile_;
  }
  set currentFile(file: string | undefined) {
    this.currentFile_ = file;
    if (file !== undefined) this.post({ op: 'currentFile', file });
  }
  beginTest(name: string): void {
    this.post({ op: 'beginTest', name });
  }
  enterHook(): void {
    this.post({ op: 'enterHook' });
  }
  leaveHook(): void {
    this.post({ op: 'leaveHook' });
  }
  /** A file is about to start: clients that connect before beginFile wait for it (setupFiles). */
  expectFile(): void {
    this.post({ op: 'expectFile' });
  }
}
