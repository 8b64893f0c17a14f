/**
 * The project's own globalSetup/globalTeardown, kept alongside ours. Jest runs one globalSetup per
 * project, so with the preset a project's own would replace ours; instead it goes in the
 * `pg.globalSetup` / `pg.globalTeardown` options and we run it: setup after ours (the template is
 * built and JEST_PG_MANIFEST is set), teardown before ours (the databases still exist). It is
 * loaded as Jest loads a globalSetup: through Jest's own transformer (TypeScript, Babel) when one
 * is loaded in this process, else with a plain require/import.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { errors, messageOf } from '../util/errors';
import { teardownRun, type RunManifest } from '../run/run';

export type HookKind = 'globalSetup' | 'globalTeardown';

export interface ProjectConfigLike {
  rootDir?: string;
  testEnvironmentOptions?: Record<string, unknown>;
}

/** An absolute path for `spec`: `<rootDir>` replaced, relative paths against rootDir, else a module name resolved from rootDir. */
export function resolveHook(kind: HookKind, spec: string, rootDir: string): string {
  const p = spec.replace(/^<rootDir>/, rootDir);
  const candidates = path.isAbsolute(p) || p.startsWith('.') ? [path.resolve(rootDir, p)] : [path.resolve(rootDir, p), p];
  for (const c of candidates) {
    try {
      return require.resolve(c, { paths: [rootDir] });
    } catch {
      // next
    }
  }
  if (existsSync(candidates[0])) return candidates[0]; // an .mjs/.ts file require.resolve does not know
  throw errors.globalHook(kind, spec, `it was not found (looked for ${candidates[0]}${candidates[1] ? ` and the module "${p}"` : ''})`);
}

/** Load the hook module's function and call it with Jest's arguments. Errors carry JESTPG_GLOBAL_HOOK and the cause. */
export async function runHook(kind: HookKind, spec: string, globalConfig: unknown, projectConfig: ProjectConfigLike | undefined): Promise<void> {
  const rootDir = projectConfig?.rootDir ?? process.cwd();
  const file = resolveHook(kind, spec, rootDir);
  const call = async (mod: unknown) => {
    const fn = pickFunction(mod);
    if (!fn) throw errors.globalHook(kind, spec, `${file} does not export a function (module.exports = async (globalConfig, projectConfig) => {}, or export default)`);
    try {
      await fn(globalConfig, projectConfig);
    } catch (e) {
      const at = String((e as Error | undefined)?.stack ?? '')
        .split('\n')
        .find((l) => /^\s+at /.test(l));
      throw errors.globalHook(kind, spec, `it threw: ${messageOf(e)}${at ? ` (${at.trim()})` : ''}`, e);
    }
  };
  const transformer = await jestTransformer(projectConfig, rootDir);
  if (transformer) {
    await transformer.requireAndTranspileModule(file, call);
    return;
  }
  let mod: unknown;
  try {
    mod = /\.(mjs|mts)$/.test(file) ? await import(pathToFileURL(file).href) : require(file);
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw errors.globalHook(kind, spec, `loading ${file} failed: ${messageOf(e)}`, e);
    mod = await import(pathToFileURL(file).href);
  }
  await call(mod);
}

function pickFunction(mod: unknown): ((g: unknown, p: unknown) => unknown) | undefined {
  let m = mod;
  for (let i = 0; i < 3 && m && typeof m !== 'function'; i++) m = (m as { default?: unknown }).default;
  return typeof m === 'function' ? (m as (g: unknown, p: unknown) => unknown) : undefined;
}

interface Transformer {
  requireAndTranspileModule(file: string, cb: (mod: unknown) => Promise<void>): Promise<unknown>;
}

/**
 * The @jest/transform that Jest itself loaded in this process (so the project's transform config
 * applies exactly as to Jest's own globalSetup), else one resolvable from rootDir; undefined when
 * neither is available or the project config is not a full one.
 */
async function jestTransformer(projectConfig: ProjectConfigLike | undefined, rootDir: string): Promise<Transformer | undefined> {
  const full = projectConfig as { moduleFileExtensions?: unknown; transform?: unknown } | undefined;
  if (!full || !Array.isArray(full.moduleFileExtensions) || !full.transform) return undefined;
  const loaded = Object.keys(require.cache).find((k) => /[\\/]@jest[\\/]transform[\\/]build[\\/]index\.js$/.test(k));
  let modPath = loaded;
  if (!modPath) {
    try {
      modPath = require.resolve('@jest/transform', { paths: [rootDir] });
    } catch {
      return undefined;
    }
  }
  const t = require(modPath) as { createScriptTransformer?: (config: unknown) => Promise<Transformer> };
  return t.createScriptTransformer ? t.createScriptTransformer(projectConfig) : undefined;
}

/** After our globalSetup: the project's own, if any. If it fails, our run is torn down again (Jest runs no teardown then). */
export async function runProjectSetup(m: RunManifest, globalConfig: unknown, projectConfig: ProjectConfigLike | undefined): Promise<void> {
  const spec = m.options.globalSetup;
  if (!spec) return;
  try {
    await runHook('globalSetup', spec, globalConfig, projectConfig);
  } catch (e) {
    await teardownRun(m).catch(() => undefined);
    throw e;
  }
}

/** Before our globalTeardown: the project's own, if any. Resolves with its error (ours runs anyway; the caller throws it after). */
export async function runProjectTeardown(m: RunManifest, globalConfig: unknown, projectConfig: ProjectConfigLike | undefined): Promise<unknown> {
  const spec = m.options.globalTeardown;
  if (!spec) return undefined;
  return runHook('globalTeardown', spec, globalConfig, projectConfig ?? { rootDir: m.rootDir }).then(
    () => undefined,
    (e: unknown) => e,
  );
}
