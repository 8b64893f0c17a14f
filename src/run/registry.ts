import type { RunManifest } from './manifest';

/**
 * What this process knows of its runs beyond their manifests, in one object: work a teardown
 * must wait for, runs already torn down, and reapers still starting when their run began.
 */
export class RunRegistry {
  /** Work of this process that must end before a teardown returns (cache entries being written). */
  private readonly background = new Set<Promise<unknown>>();
  /** Runs this process tore down (a teardown is idempotent). */
  readonly torn = new Set<string>();
  /**
   * Reapers still starting when startRun returned, by run id: each settles with undefined once
   * its reaper holds the lease, or with the error that says why it never will.
   */
  private readonly reapers = new Map<string, Promise<Error | undefined>>();
  /** The run a Jest worker attached to (attachRun), keyed by its manifest path or "env-only". */
  attached: { key: string; promise: Promise<RunManifest> } | undefined;

  trackBackground(p: Promise<unknown>): void {
    const done: Promise<unknown> = p.then(
      () => this.background.delete(done),
      () => this.background.delete(done),
    );
    this.background.add(done);
  }

  async backgroundDone(): Promise<void> {
    if (this.background.size) await Promise.allSettled([...this.background]);
  }

  trackReaper(runId: string, outcome: Promise<Error | undefined>): void {
    this.reapers.set(runId, outcome);
  }

  /** Wait for the run's reaper if it was still starting; its error if it never took the lease. */
  async reaperOutcome(runId: string): Promise<Error | undefined> {
    const p = this.reapers.get(runId);
    this.reapers.delete(runId);
    return p ? await p : undefined;
  }
}

/** The one registry of this process (global setup, teardown and the workers share it). */
export const processRuns = new RunRegistry();
