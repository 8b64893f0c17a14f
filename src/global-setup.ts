/** Jest globalSetup: start the run (server, template, reaper) before any worker exists. */
import { startRun } from './run';

interface ProjectConfigLike {
  rootDir?: string;
  testEnvironmentOptions?: Record<string, unknown>;
}

export default async function globalSetup(_globalConfig: unknown, projectConfig?: ProjectConfigLike): Promise<void> {
  await startRun(projectConfig?.testEnvironmentOptions?.pg, process.pid, { rootDir: projectConfig?.rootDir });
}
