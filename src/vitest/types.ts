/**
 * The parts of Vitest's runner API this adapter uses, as Vitest 3 and 4 define them (structural:
 * the published package never imports vitest; it is an optional peer).
 */
export interface VitestTaskResult {
  state?: string;
  errors?: unknown[];
}
export interface VitestTask {
  id: string;
  name: string;
  type: 'test' | 'suite';
  mode?: string;
  suite?: VitestSuite;
  file?: VitestSuite;
  result?: VitestTaskResult;
  meta?: unknown;
  /** Called after the attempt's afterEach hooks, in reverse order of registration (reset after each attempt). */
  onFinished?: ((context: unknown) => unknown)[];
  concurrent?: boolean;
}
export interface VitestSuite extends VitestTask {
  tasks: VitestTask[];
  filepath?: string;
}
export interface VitestHooks {
  beforeAll: ((...args: unknown[]) => unknown)[];
  afterAll: ((...args: unknown[]) => unknown)[];
}
export interface VitestRunnerConfig {
  root: string;
  /** Each test file in a fresh worker (Vitest's default). */
  isolate?: boolean;
  environmentOptions?: Record<string, unknown>;
}
/** The hooks of Vitest's runner that the adapter overrides (all optional on the base class). */
export interface VitestRunnerLike {
  config: VitestRunnerConfig;
  onBeforeCollect?(paths: string[]): unknown;
  onCollected?(files: VitestSuite[]): unknown;
  onBeforeTryTask?(test: VitestTask, options: { retry: number; repeats: number }): unknown;
  onAfterRunSuite?(suite: VitestSuite): unknown;
  onAfterRunFiles?(files: VitestSuite[]): unknown;
  onTaskUpdate?(packs: [string, VitestTaskResult | undefined, unknown][], events: unknown[]): Promise<void>;
}
export type RunnerClass = new (config: VitestRunnerConfig, ...rest: unknown[]) => VitestRunnerLike;
