/**
 * Sampler speed and memory: steps/s of DDIM, DDIM+DPS and DDIM+PSLD on both backends for the Gaussian
 * test problem (exact eps, a few ops per step) and for a small convolutional noise model (4 Conv2d layers,
 * 32x32, @latentdem/nn), and a flat-memory check over a 1000-step loop (live tensors and bytes before,
 * after, and the peak during). Writes bench-results/samplers.{json,md}.
 *
 *   node --conditions=latentdem-src --import tsx tools/bench-samplers.ts
 * Env: BENCH_BACKENDS (default "cpu,webgpu"), BENCH_STEPS (default 50), BENCH_RUNS (default 3; the minimum is reported).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import { Conv2d } from '@latentdem/nn';
import { Schedule, sample, dps, psld, testing as T, type Guide, type NoiseModel } from '@latentdem/diffusion';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const BACKENDS = (process.env.BENCH_BACKENDS ?? 'cpu,webgpu').split(',') as L.BackendName[];
const STEPS = Number(process.env.BENCH_STEPS ?? 50);
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));

interface Row { problem: string; guide: string; backend: string; batch: string; steps: number; seconds: number; stepsPerSec: number }
interface MemRow { backend: string; problem: string; steps: number; tensorsBefore: number; tensorsAfter: number; tensorsPeak: number; bytesBefore: number; bytesAfter: number; bytesPeak: number; flat: boolean; gpuLiveBufferBytesBefore?: number; gpuLiveBufferBytesAfter?: number }

/** A small conv eps-model: 4 -> 32 -> 32 -> 32 -> 4 channels, 3x3, SiLU, plus a timestep bias. */
async function convModel(backend: L.Backend): Promise<{ model: NoiseModel; dispose: () => void }> {
  const layers = [new Conv2d(4, 32, 3, { padding: 1 }), new Conv2d(32, 32, 3, { padding: 1 }), new Conv2d(32, 32, 3, { padding: 1 }), new Conv2d(32, 4, 3, { padding: 1 })];
  for (const l of layers) await l.to(backend);
  const model: NoiseModel = (x, t) => {
    let h = x.add(t / 1000);
    layers.forEach((l, i) => { h = l.forward(h); if (i < layers.length - 1) h = h.silu(); });
    return h.mul(0.1);
  };
  return { model, dispose: () => { for (const l of layers) for (const p of l.parameters()) p.dispose(); } };
}

/** Minimum over RUNS runs of fn (the result is read back, so the device has finished). */
async function timeIt(fn: () => L.Tensor, runs = RUNS): Promise<number> {
  let best = Infinity;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    const x = fn();
    await x.data();
    x.dispose();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return best;
}

const rows: Row[] = [];
const mem: MemRow[] = [];
const P = T.linearGaussianProblem({ d: 4, n: 6, m: 3, sigmaY: 0.1, seed: 3 });

for (const name of BACKENDS) {
  let backend: L.Backend;
  try { backend = await L.setBackend(name); } catch (e) { console.error(`skip ${name}: ${(e as Error).message}`); continue; }
  const y = L.keep(L.tensor(P.y, { shape: [1, 3], backend }));
  const Dm = T.linearMap(P.D, backend), Am = T.linearMap(P.A, backend), Em = T.linearMap(P.E, backend), At = T.linearMap(T.transpose(P.A), backend);
  const encode = (x: L.Tensor, g: L.Generator): L.Tensor => Em(x).add(L.randn([x.shape[0], 4], { generator: g, backend }).mul(0.01));
  const guides: Record<string, () => Guide | undefined> = {
    ddim: () => undefined,
    'ddim+dps': () => dps({ y, forward: Am, decode: Dm, scale: 0.05 }),
    'ddim+psld': () => psld({ y, forward: Am, transpose: At, decode: Dm, encode, noiseStd: 0.1, scale: 0.03 }),
  };
  const s = new Schedule({ steps: STEPS, eta: 1 });
  const gaussian = T.exactEps([{ weight: 1, mean: P.mu, cov: P.cov }], s);
  for (const batch of [1024]) for (const [g, mk] of Object.entries(guides)) {
    await timeIt(() => sample({ model: gaussian, schedule: s, shape: [batch, 4], seed: 1, backend, guide: mk() }), 1);   // warm-up: pipelines
    const sec = await timeIt(() => sample({ model: gaussian, schedule: s, shape: [batch, 4], seed: 1, backend, guide: mk() }));
    rows.push({ problem: 'gaussian d=4', guide: g, backend: name, batch: `[${batch}, 4]`, steps: STEPS, seconds: sec, stepsPerSec: STEPS / sec });
    console.error(JSON.stringify(rows[rows.length - 1]));
  }
  // conv model, latent-like [1, 4, 32, 32]; guidance with D = identity and A = 2x average pooling
  const { model: conv, dispose } = await convModel(backend);
  const yc = L.keep(L.zeros([1, 4, 16, 16], { backend }));
  const pool = (x: L.Tensor): L.Tensor => L.avgPool2d(x, { kernel: 2 });
  const convGuides: Record<string, () => Guide | undefined> = { ddim: () => undefined, 'ddim+dps': () => dps({ y: yc, forward: pool, scale: 0.3 }) };
  for (const [g, mk] of Object.entries(convGuides)) {
    const cs = new Schedule({ steps: Math.max(5, Math.floor(STEPS / 2)), eta: 1 });
    await timeIt(() => sample({ model: conv, schedule: cs, shape: [1, 4, 32, 32], seed: 1, backend, guide: mk() }), 1);   // warm-up: pipelines
    const sec = await timeIt(() => sample({ model: conv, schedule: cs, shape: [1, 4, 32, 32], seed: 1, backend, guide: mk() }));
    rows.push({ problem: 'conv 4x(3x3) 32x32', guide: g, backend: name, batch: '[1, 4, 32, 32]', steps: cs.length, seconds: sec, stepsPerSec: cs.length / sec });
    console.error(JSON.stringify(rows[rows.length - 1]));
  }
  dispose(); yc.dispose();
  // flat memory over 1000 DPS-guided steps
  const s1000 = new Schedule({ steps: 1000, eta: 1 });
  const m1000 = T.exactEps([{ weight: 1, mean: P.mu, cov: P.cov }], s1000);
  const before = L.memory();
  let peakT = 0, peakB = 0;
  const x = sample({ model: m1000, schedule: s1000, shape: [256, 4], seed: 2, backend, guide: guides['ddim+dps'](),
    onStep: () => { const m = L.memory(); peakT = Math.max(peakT, m.tensors[name]); peakB = Math.max(peakB, m.bytes[name]); } });
  await x.data(); x.dispose();
  const after = L.memory();
  mem.push({ backend: name, problem: 'gaussian [256, 4], DPS-guided DDIM', steps: 1000,
    tensorsBefore: before.tensors[name], tensorsAfter: after.tensors[name], tensorsPeak: peakT,
    bytesBefore: before.bytes[name], bytesAfter: after.bytes[name], bytesPeak: peakB, flat: before.tensors[name] === after.tensors[name] && before.bytes[name] === after.bytes[name],
    gpuLiveBufferBytesBefore: before.gpu?.liveBufferBytes, gpuLiveBufferBytesAfter: after.gpu?.liveBufferBytes });
  console.error(JSON.stringify(mem[mem.length - 1]));
  y.dispose();
}

const out = join(root, 'bench-results');
mkdirSync(out, { recursive: true });
const meta = { date: new Date().toISOString(), loadavg: loadavg(), note: 'machine shared with a training job; webgpu is lavapipe (software Vulkan)' };
writeFileSync(join(out, 'samplers.json'), JSON.stringify({ meta, rows, memory: mem }, null, 2));
const md = [
  `# Sampler benchmarks (${meta.date}, load ${meta.loadavg.map((v) => v.toFixed(2)).join(' ')})`, '', meta.note, '',
  '| problem | guidance | backend | batch | steps | s | steps/s |', '|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.problem} | ${r.guide} | ${r.backend} | ${r.batch} | ${r.steps} | ${r.seconds.toFixed(2)} | ${r.stepsPerSec.toFixed(1)} |`),
  '', '## Memory over a 1000-step loop', '',
  'Peak: the maximum seen from `onStep`, inside a step (its temporaries alive).', '',
  '| backend | run | tensors before / after / peak | bytes before / after / peak | GPU buffer bytes before / after | flat |', '|---|---|---|---|---|---|',
  ...mem.map((m) => `| ${m.backend} | ${m.problem} | ${m.tensorsBefore} / ${m.tensorsAfter} / ${m.tensorsPeak} | ${m.bytesBefore} / ${m.bytesAfter} / ${m.bytesPeak} | ${m.gpuLiveBufferBytesBefore ?? '-'} / ${m.gpuLiveBufferBytesAfter ?? '-'} | ${m.flat ? 'yes' : 'NO'} |`),
  '',
].join('\n');
writeFileSync(join(out, 'samplers.md'), md);
console.log(md);
