/**
 * The tuner: times the candidate GEMM tiles of each shape class and the conv2d algorithms on this adapter,
 * then saves the fastest (tuning.ts explains the cache). About a minute on lavapipe; best run on an idle machine.
 */
import type { Conv2dParams, View } from '../../backend.js';
import type { GpuContext, GpuStorage } from './context.js';
import { chooseTile, gemm, subgroupSize, tileKey, type GemmArgs } from './matmul.js';
import { conv2d, convChoice } from './conv2d.js';
import { DEFAULT_TUNING, TILE_CANDIDATES, TUNING_VERSION, saveTuning, setTuning, type ConvAlgorithmChoice, type GemmClass, type TileChoice, type Tuning } from './tuning.js';

export interface TuneOptions { runs?: number; log?: (line: string) => void; save?: boolean }

/** Representative problems per class: [batch, M, N, K]. */
const CLASS_SHAPES: Record<GemmClass, [number, number, number, number]> = {
  square: [1, 1024, 1024, 1024],
  narrow: [36, 320, 128, 320], // Winograd F(4x4) GEMMs of an SD 320-channel conv at a 32x32 latent, batch 2
  smallM: [1, 4, 2048, 1024],
};

const CONV_SHAPES: { x: number[]; w: number[] }[] = [
  { x: [2, 320, 32, 32], w: [320, 320, 3, 3] },
  { x: [1, 128, 128, 128], w: [128, 128, 3, 3] },
];

function randomStorage(ctx: GpuContext, n: number, seed: number): GpuStorage {
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; data[i] = (s >>> 8) / 8388608 - 1; }
  const st = ctx.alloc(n, 'float32');
  ctx.writeBuffer(st.buffer, data);
  return st;
}

const view = (storage: GpuStorage, shape: number[]): View =>
  ({ storage, shape, strides: shape.map((_, i) => shape.slice(i + 1).reduce((x, y) => x * y, 1)), offset: 0 });

async function timeMin(ctx: GpuContext, runs: number, fn: () => void): Promise<number> {
  fn(); await ctx.sync();
  let best = Infinity;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    fn(); await ctx.sync();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/** Times every candidate and returns (and by default saves) the winning tuning for this adapter. */
export async function tune(ctx: GpuContext, opts: TuneOptions = {}): Promise<{ tuning: Tuning; path: string | null }> {
  const runs = Math.max(3, opts.runs ?? 3);
  const log = opts.log ?? (() => {});
  const sg = subgroupSize(ctx);
  const measured: Record<string, number> = {};
  const gemmChoice = { ...DEFAULT_TUNING.gemm };
  if (sg) {
    for (const cls of Object.keys(CLASS_SHAPES) as GemmClass[]) {
      const [batch, m, n, k] = CLASS_SHAPES[cls];
      const a = randomStorage(ctx, batch * m * k, 1), b = randomStorage(ctx, batch * k * n, 2), c = ctx.alloc(batch * m * n, 'float32');
      const args: GemmArgs = { batch, m, n, k, a: a.buffer, aOff: 0, aSb: m * k, aSm: k, b: b.buffer, bOff: 0, bSb: k * n, bSk: n, bCols: n, c: c.buffer, cOff: 0, cSb: m * n, cSm: n };
      let best: { t: TileChoice; ms: number } | null = null;
      for (const t of TILE_CANDIDATES[cls]) {
        const tile = { ...t, mt: Math.ceil(t.mt / sg) * sg, wg: Math.ceil(t.wg / sg) * sg, sg };
        const ms = await timeMin(ctx, runs, () => gemm(ctx, args, tile));
        measured[`gemm ${cls} ${batch}x${m}x${n}x${k} ${tileKey(tile)}`] = ms;
        log(`tune: gemm ${cls} [${batch}] ${m}x${k} @ ${k}x${n}, tile ${tileKey(tile)}: ${ms.toFixed(2)} ms (${(2 * batch * m * n * k / ms / 1e6).toFixed(1)} GFLOP/s)`);
        if (!best || ms < best.ms) best = { t, ms };
      }
      gemmChoice[cls] = best!.t;
      for (const x of [a, b, c]) ctx.free(x);
    }
  }
  // Conv algorithms: with the GEMM tiles just chosen in force.
  const base: Tuning = { ...DEFAULT_TUNING, adapter: ctx.adapterInfo, gemm: gemmChoice };
  setTuning(ctx, base);
  const totals: Record<ConvAlgorithmChoice, number> = { im2col: 0, winograd2: 0, winograd4: 0 };
  const p: Conv2dParams = { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };
  for (const s of CONV_SHAPES) {
    const [N, C, H, W] = s.x; const O = s.w[0];
    const xb = randomStorage(ctx, N * C * H * W, 3), wb = randomStorage(ctx, O * C * 9, 4);
    const out = ctx.alloc(N * O * H * W, 'float32');
    for (const algo of ['im2col', 'winograd2', 'winograd4'] as const) {
      convChoice.algorithm = algo;
      try {
        const ms = await timeMin(ctx, runs, () => conv2d(ctx, view(xb, s.x), view(wb, s.w), p, out));
        measured[`conv2d ${s.x.join('x')} * ${s.w.join('x')} ${algo}`] = ms;
        totals[algo] += ms;
        log(`tune: conv2d x ${s.x.join('x')} w ${s.w.join('x')} ${algo}: ${ms.toFixed(2)} ms`);
      } finally {
        convChoice.algorithm = 'auto';
      }
    }
    ctx.free(xb); ctx.free(wb); ctx.free(out);
  }
  const algorithm = (Object.keys(totals) as ConvAlgorithmChoice[]).reduce((x, y) => (totals[y] < totals[x] ? y : x));
  const tuning: Tuning = { version: TUNING_VERSION, adapter: ctx.adapterInfo, gemm: gemmChoice, conv: { algorithm, minChannels: DEFAULT_TUNING.conv.minChannels }, measured, date: new Date().toISOString() };
  setTuning(ctx, tuning);
  const path = opts.save === false ? null : saveTuning(ctx, tuning);
  log(`tune: chose square ${tileKey(chooseTile(ctx, 1024, 1024))}, narrow ${tileKey(chooseTile(ctx, 320, 128))}, smallM ${tileKey(chooseTile(ctx, 4, 2048))}, conv ${algorithm}${path ? `; saved ${path}` : ''}`);
  return { tuning, path };
}
