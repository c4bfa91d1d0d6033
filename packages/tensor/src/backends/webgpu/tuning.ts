/**
 * The GEMM tile and conv2d algorithm choices, measured once per adapter and cached on disk.
 *
 * `tune(ctx)` times a short list of candidate tiles on three shape classes (square GEMMs, the narrow batched
 * GEMMs of Winograd convolution, GEMMs of at most 8 rows) and the conv2d algorithms on SD-shaped layers, then
 * writes the winners to `<cache dir>/webgpu-tuning-<adapter hash>.json`. A new context reads that file when it
 * exists (`loadTuning`); otherwise the defaults below apply, which are what the tuner chose on lavapipe
 * (Mesa 25, 2-core AMD EPYC). Nothing tunes implicitly: tests and CI see the same kernels on every run unless a
 * cache file exists. `npm run tune` (tools/tune.ts) runs it; `npm run bench` runs it first when no file exists.
 *
 * Cache directory: LATENTDEM_CACHE_DIR, else $XDG_CACHE_HOME/latentdem, else ~/.cache/latentdem.
 * LATENTDEM_TUNING=off ignores the file.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { GpuContext } from './context.js';

/** One register-tile configuration of the GEMM kernel (see matmul.ts). */
export interface TileChoice { mt: number; g: number; wg: number; unroll: number }

export type GemmClass = 'square' | 'narrow' | 'smallM';
export type ConvAlgorithmChoice = 'im2col' | 'winograd2' | 'winograd4';

export interface Tuning {
  /** Bumped when kernels change so that stale cache files are ignored. */
  version: number;
  adapter: string;
  /** Tiles for subgroup-capable devices, per GEMM shape class. */
  gemm: Record<GemmClass, TileChoice>;
  /** Algorithm for 3x3 stride-1 ungrouped convolutions with at least `minChannels` channels in and out. */
  conv: { algorithm: ConvAlgorithmChoice; minChannels: number };
  /** The measurements behind the choice (ms, min over runs), for the record. */
  measured?: Record<string, number>;
  date?: string;
}

export const TUNING_VERSION = 1;

export const DEFAULT_TUNING: Omit<Tuning, 'adapter'> = {
  version: TUNING_VERSION,
  gemm: {
    square: { mt: 16, g: 2, wg: 8, unroll: 1 },
    narrow: { mt: 16, g: 1, wg: 16, unroll: 1 },
    smallM: { mt: 8, g: 2, wg: 16, unroll: 1 },
  },
  conv: { algorithm: 'winograd4', minChannels: 16 },
};

const tuned = new WeakMap<GpuContext, Tuning>();

export function cacheDir(): string {
  return process.env.LATENTDEM_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'latentdem');
}

export function tuningPath(ctx: GpuContext): string {
  const h = createHash('sha256').update(`${ctx.adapterInfo}|sg${subgroupInfo(ctx)}`).digest('hex').slice(0, 16);
  return join(cacheDir(), `webgpu-tuning-${h}.json`);
}

function subgroupInfo(ctx: GpuContext): string {
  const dev = ctx.device as GPUDevice & { adapterInfo?: { subgroupMinSize?: number; subgroupMaxSize?: number } };
  return `${dev.features.has('subgroups')}:${dev.adapterInfo?.subgroupMinSize}-${dev.adapterInfo?.subgroupMaxSize}`;
}

const isTile = (t: unknown): t is TileChoice => {
  const o = t as TileChoice;
  return !!o && [o.mt, o.g, o.wg, o.unroll].every((v) => Number.isInteger(v) && v > 0 && v <= 64);
};

/** The tuning in force for `ctx`: the cache file when present and valid, else the defaults. */
export function tuningFor(ctx: GpuContext): Tuning {
  let t = tuned.get(ctx);
  if (t) return t;
  t = { ...DEFAULT_TUNING, adapter: ctx.adapterInfo };
  const path = tuningPath(ctx);
  if (process.env.LATENTDEM_TUNING !== 'off' && existsSync(path)) {
    try {
      const f = JSON.parse(readFileSync(path, 'utf8')) as Tuning;
      const ok = f.version === TUNING_VERSION && f.adapter === ctx.adapterInfo && f.gemm && isTile(f.gemm.square) && isTile(f.gemm.narrow) &&
        isTile(f.gemm.smallM) && f.conv && ['im2col', 'winograd2', 'winograd4'].includes(f.conv.algorithm) && Number.isInteger(f.conv.minChannels);
      if (ok) t = f;
      else process.stderr.write(`latentdem webgpu: ignoring ${path} (stale or malformed tuning file; run \`npm run tune\` to remake it)\n`);
    } catch (e) {
      process.stderr.write(`latentdem webgpu: ignoring ${path}: ${(e as Error).message}\n`);
    }
  }
  tuned.set(ctx, t);
  return t;
}

/** Replaces the tuning in force for `ctx` (the tuner uses it to time candidates). */
export function setTuning(ctx: GpuContext, t: Tuning): void { tuned.set(ctx, t); }

/** Writes `t` to the cache file atomically (a concurrent reader sees the old file or the new one). */
export function saveTuning(ctx: GpuContext, t: Tuning): string {
  const path = tuningPath(ctx);
  mkdirSync(cacheDir(), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(t, null, 2) + '\n');
  renameSync(tmp, path);
  return path;
}

/** Candidate tiles per class (a short list: each new pipeline costs an LLVM compile on lavapipe). */
export const TILE_CANDIDATES: Record<GemmClass, TileChoice[]> = {
  square: [
    { mt: 16, g: 1, wg: 16, unroll: 1 }, { mt: 16, g: 1, wg: 8, unroll: 1 }, { mt: 16, g: 2, wg: 8, unroll: 1 },
    { mt: 24, g: 1, wg: 16, unroll: 1 }, { mt: 16, g: 1, wg: 32, unroll: 1 }, { mt: 16, g: 1, wg: 16, unroll: 2 },
    { mt: 8, g: 2, wg: 16, unroll: 1 }, { mt: 32, g: 1, wg: 8, unroll: 1 },
  ],
  narrow: [
    { mt: 16, g: 1, wg: 8, unroll: 1 }, { mt: 16, g: 1, wg: 16, unroll: 1 }, { mt: 24, g: 1, wg: 8, unroll: 1 },
    { mt: 32, g: 1, wg: 8, unroll: 1 }, { mt: 8, g: 1, wg: 8, unroll: 1 },
  ],
  smallM: [{ mt: 8, g: 1, wg: 16, unroll: 1 }, { mt: 8, g: 2, wg: 16, unroll: 1 }, { mt: 8, g: 1, wg: 32, unroll: 1 }],
};
