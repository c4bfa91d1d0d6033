/**
 * Fused kernels against the composites they replace, on both backends: groupNorm / groupNormSilu (one
 * GroupNorm kernel with an optional SiLU) vs groupNormComposite (+ silu), geglu vs narrow + gelu + mul,
 * addSilu vs add + silu; forward and gradients, finite differences on tiny cases, trace names, errors.
 */
import t from 'tap';
import * as L from '../src/index.js';
import type { Backend, Tensor } from '../src/index.js';
import { close, gradCheck, hostRandom, on, testBackends } from './helpers.js';

const backends = await testBackends();
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

type GN = (x: Tensor, g: number, w?: Tensor | null, b?: Tensor | null, eps?: number) => Tensor;
const compositeSilu: GN = (x, g, w, b, eps) => L.groupNormComposite(x, g, w, b, eps).silu();
const PAIRS: [string, GN, GN][] = [
  ['groupNorm', L.groupNorm, L.groupNormComposite],
  ['groupNormSilu', L.groupNormSilu, compositeSilu],
];

interface GnCase {
  name: string;
  shape: number[];
  groups: number;
  affine: 'both' | 'weight' | 'none';
  /** Builds x from a base tensor (views: permuted, sliced). */
  view?: (base: Tensor) => Tensor;
  base?: number[];
  lo?: number; hi?: number;
  only?: 'webgpu';
  atol?: number;
  /** Skip the gradient comparison (large cases). */
  noGrad?: boolean;
}

const CASES: GnCase[] = [
  { name: 'SD-like [2,320,32,32], 32 groups', shape: [2, 320, 32, 32], groups: 32, affine: 'both', lo: -2, hi: 3 },
  { name: 'VAE-like [1,512,64,64], 32 groups', shape: [1, 512, 64, 64], groups: 32, affine: 'both', lo: -2, hi: 3, only: 'webgpu', noGrad: true },
  { name: 'awkward [1,6,5,7], 3 groups', shape: [1, 6, 5, 7], groups: 3, affine: 'both' },
  { name: '3D input [2,4,9], 2 groups', shape: [2, 4, 9], groups: 2, affine: 'both' },
  { name: 'rank 2 [3,8], 4 groups', shape: [3, 8], groups: 4, affine: 'both' },
  { name: 'no affine [2,8,4,4], 4 groups', shape: [2, 8, 4, 4], groups: 4, affine: 'none' },
  { name: 'weight only [2,6,3,5], 1 group', shape: [2, 6, 3, 5], groups: 1, affine: 'weight' },
  { name: 'permuted view [2,4,5,6] of [2,5,6,4]', shape: [2, 4, 5, 6], groups: 2, affine: 'both', base: [2, 5, 6, 4], view: (b) => b.permute([0, 3, 1, 2]) },
  { name: 'channel slice [2,8,4,4] of [2,10,4,4] (batch stride != C*H*W)', shape: [2, 8, 4, 4], groups: 4, affine: 'both', base: [2, 10, 4, 4], view: (b) => b.narrow(1, 1, 8) },
  { name: 'batch slice [2,8,3,3] of [3,8,3,3] (odd offset)', shape: [2, 8, 3, 3], groups: 2, affine: 'both', base: [3, 8, 3, 3], view: (b) => b.narrow(0, 1, 2) },
  { name: 'large mean (+100) [2,64,16,16], 32 groups', shape: [2, 64, 16, 16], groups: 32, affine: 'both', lo: 99, hi: 101, atol: 5e-5 },
];

function makeInputs(b: Backend, c: GnCase, requiresGrad = false): { x: Tensor; w: Tensor | null; bias: Tensor | null; leaves: Tensor[] } {
  const baseShape = c.base ?? c.shape;
  const base = on(b, hostRandom(numel(baseShape), 1, c.lo ?? -1, c.hi ?? 1), baseShape, requiresGrad);
  const x = c.view ? c.view(base) : base;
  const ch = c.shape[1];
  const w = c.affine !== 'none' ? on(b, hostRandom(ch, 2, 0.5, 1.5), [ch], requiresGrad) : null;
  const bias = c.affine === 'both' ? on(b, hostRandom(ch, 3, -0.5, 0.5), [ch], requiresGrad) : null;
  return { x, w, bias, leaves: [base, ...(w ? [w] : []), ...(bias ? [bias] : [])] };
}

for (const b of backends) {
  for (const c of CASES) {
    if (c.only && c.only !== b.name) continue;
    for (const [name, fused, ref] of PAIRS) {
      t.test(`${name} ${b.name}: ${c.name}: fused equals composite${c.noGrad ? '' : ', gradients of x, weight, bias too'}`, async (t) => {
        const { x, w, bias } = makeInputs(b, c);
        const yf = await fused(x, c.groups, w, bias).data();
        const yr = await ref(x, c.groups, w, bias).data();
        const r = close(yf, yr, c.atol ?? 1e-5, 1e-5);
        t.ok(r.ok, `forward: ${r.message}`);
        if (c.noGrad) return;
        const gTensors = L.tidy(() => {
          const run = (f: GN): Tensor[] => {
            const inp = makeInputs(b, c, true);
            const y = f(inp.x, c.groups, inp.w, inp.bias);
            y.mul(on(b, hostRandom(y.size, 99, 0.5, 1.5), y.shape)).sum().backward();
            return inp.leaves.map((l) => L.keep(L.clone(l.grad!)));
          };
          return [run(fused), run(ref)];
        });
        const labels = ['x', 'weight', 'bias'];
        for (let k = 0; k < gTensors[0].length; k++) {
          const gf = await gTensors[0][k].data(); const gr = await gTensors[1][k].data();
          let scale = 1; for (const v of gr) scale = Math.max(scale, Math.abs(v));
          const rr = close(gf, gr, (c.atol ?? 1e-5) * scale * 10, 1e-4);
          t.ok(rr.ok, `gradient of ${labels[k]}: ${rr.message}`);
        }
        for (const gs of gTensors) for (const g of gs) g.dispose();
      });
    }
  }

  t.test(`groupNorm ${b.name}: large mean (+100) stays within 1e-5 of the f64 reference`, async (t) => {
    const shape = [2, 64, 16, 16]; const groups = 32;
    const xd = hostRandom(numel(shape), 5, 99, 101);
    const m = numel(shape) / (shape[0] * groups);
    const expect = new Float64Array(xd.length);
    for (let g = 0; g < xd.length / m; g++) {
      let s = 0; for (let j = 0; j < m; j++) s += xd[g * m + j];
      const mu = s / m; let v = 0; for (let j = 0; j < m; j++) v += (xd[g * m + j] - mu) ** 2;
      const rstd = 1 / Math.sqrt(v / m + 1e-5);
      for (let j = 0; j < m; j++) expect[g * m + j] = (xd[g * m + j] - mu) * rstd;
    }
    const y = await L.groupNorm(on(b, xd, shape), groups).data();
    const r = close(y, expect, 1e-5, 0);
    t.ok(r.ok, `fused vs f64: ${r.message}`);
  });

  t.test(`groupNorm ${b.name}: statistics live as long as the output, nothing else stays`, async (t) => {
    const before = L.memory().tensors[b.name];
    const x = on(b, hostRandom(2 * 4 * 9, 1), [2, 4, 9], true);
    const y = L.groupNormSilu(x, 2);
    t.equal(L.memory().tensors[b.name], before + 3, 'x, y and the saved statistics');
    y.dispose();
    t.equal(L.memory().tensors[b.name], before + 1, 'disposing y frees the statistics');
    const z = L.noGrad(() => L.groupNorm(x, 2));
    t.equal(L.memory().tensors[b.name], before + 2, 'without recording no statistics are kept');
    z.dispose(); x.dispose();
  });

  // geglu and addSilu
  const gegluRef = (x: Tensor): Tensor => { const h = x.shape[x.rank - 1] / 2; return x.narrow(-1, 0, h).mul(x.narrow(-1, h, h).gelu('none')); };
  const GEGLU: { name: string; shape: number[]; view?: (x: Tensor) => Tensor }[] = [
    { name: '[2,16,64] (vec4 halves)', shape: [2, 16, 64] },
    { name: '[3,10] (odd half 5)', shape: [3, 10] },
    { name: 'transposed view [6,8] of [8,6]', shape: [8, 6], view: (x) => x.transpose() },
    { name: 'SD-like [2,64,2560]', shape: [2, 64, 2560] },
  ];
  for (const c of GEGLU) {
    t.test(`geglu ${b.name}: ${c.name}: fused equals value * gelu(gate), gradient too`, async (t) => {
      const data = hostRandom(numel(c.shape), 7, -3, 3);
      const mk = (): Tensor => on(b, data, c.shape, true);
      const xa = mk(); const xb = mk();
      const ya = L.geglu(c.view ? c.view(xa) : xa);
      const yb = gegluRef(c.view ? c.view(xb) : xb);
      t.ok(close(await ya.data(), await yb.data(), 1e-5, 1e-5).ok, 'forward');
      const r = on(b, hostRandom(ya.size, 99, 0.5, 1.5), ya.shape);
      ya.mul(r).sum().backward(); yb.mul(r).sum().backward();
      const rr = close(await xa.grad!.data(), await xb.grad!.data(), 1e-5, 1e-4);
      t.ok(rr.ok, `gradient: ${rr.message}`);
    });
  }
  const ADD: { name: string; a: number[]; b: number[] }[] = [
    { name: '[3,1,5] + [4,1] (broadcast both)', a: [3, 1, 5], b: [4, 1] },
    { name: '[2,320,8,8] + [2,320,1,1]', a: [2, 320, 8, 8], b: [2, 320, 1, 1] },
    { name: '[7] + [] (scalar)', a: [7], b: [] },
  ];
  for (const c of ADD) {
    t.test(`addSilu ${b.name}: ${c.name}: fused equals silu(a + b), gradients too`, async (t) => {
      const ad = hostRandom(numel(c.a), 11, -4, 4), bd = hostRandom(numel(c.b), 12, -2, 2);
      const [a1, b1, a2, b2] = [on(b, ad, c.a, true), on(b, bd, c.b, true), on(b, ad, c.a, true), on(b, bd, c.b, true)];
      const y1 = L.addSilu(a1, b1); const y2 = a2.add(b2).silu();
      t.same(y1.shape, y2.shape, 'broadcast shape');
      t.ok(close(await y1.data(), await y2.data(), 1e-6, 1e-5).ok, 'forward');
      const r = on(b, hostRandom(y1.size, 99, 0.5, 1.5), y1.shape);
      y1.mul(r).sum().backward(); y2.mul(r).sum().backward();
      t.ok(close(await a1.grad!.data(), await a2.grad!.data(), 1e-5, 1e-4).ok, 'gradient of a');
      t.ok(close(await b1.grad!.data(), await b2.grad!.data(), 1e-5, 1e-4).ok, 'gradient of b');
    });
  }

  t.test(`fused ops ${b.name}: the op trace names the fused kernel, one launch each`, async (t) => {
    const x = on(b, hostRandom(2 * 64 * 8 * 8, 1), [2, 64, 8, 8]);
    const w = on(b, hostRandom(64, 2), [64]);
    const { events } = L.trace(() => L.groupNormSilu(x, 32, w, w));
    t.same(events.map((e) => e.op), ['groupNormSilu'], 'one event, no separate silu');
    t.match(events[0].kernel, /norm\.group_silu/, `kernel ${events[0].kernel}`);
    const xg = on(b, hostRandom(2 * 64 * 8 * 8, 1), [2, 64, 8, 8], true);
    const yg = L.groupNormSilu(xg, 32, w, w);
    const eb = L.trace(() => yg.sum().backward()).events.filter((e) => e.op.startsWith('groupNorm'));
    t.same(eb.map((e) => e.op), ['groupNormSiluBackward'], 'the backward is one launch');
    t.match(eb[0].kernel, /norm\.group_(grad_input|backward)/, `backward kernel ${eb[0].kernel}`);
    const e2 = L.trace(() => L.groupNorm(x, 32, w, w)).events;
    t.ok(/norm\.group\b/.test(e2[0].kernel) && !/silu/.test(e2[0].kernel), `groupNorm kernel ${e2[0].kernel}`);
    const e3 = L.trace(() => L.geglu(x)).events;
    t.same(e3.map((e) => e.op), ['geglu']);
    t.match(e3[0].kernel, /binary\.geglu/, `kernel ${e3[0].kernel}`);
    const e4 = L.trace(() => L.addSilu(x, w.reshape([1, 64, 1, 1]))).events.filter((e) => e.op !== 'reshape');
    t.same(e4.map((e) => e.op), ['addSilu']);
    t.match(e4[0].kernel, /binary\.add_silu/, `kernel ${e4[0].kernel}`);
  });
}

t.test('groupNormSilu: webgpu gradients equal the cpu kernel\'s (f64 sums) at a large mean (+100)', { skip: backends.length < 2 ? 'no WebGPU adapter' : false }, async (t) => {
  const c = CASES.find((k) => k.name.startsWith('large mean'))!;
  const run = async (b: Backend): Promise<Float32Array[]> => {
    const { x, w, bias, leaves } = makeInputs(b, c, true);
    const y = L.groupNormSilu(x, c.groups, w, bias);
    y.mul(on(b, hostRandom(y.size, 99, 0.5, 1.5), y.shape)).sum().backward();
    return Promise.all(leaves.map(async (l) => (await l.grad!.data()) as Float32Array));
  };
  const [cpu, gpu] = [await run(backends[0]), await run(backends[1])];
  ['x', 'weight', 'bias'].forEach((name, k) => {
    const r = close(gpu[k], cpu[k], 1e-4, 1e-6);
    t.ok(r.ok, `gradient of ${name}: ${r.message}`);
  });
});

// Finite differences on tiny cases (cpu, f32 evaluation: eps 1e-2).
t.test('groupNorm, groupNormSilu, geglu, addSilu: cpu gradients match finite differences', async (t) => {
  const x = { data: hostRandom(2 * 4 * 3, 21, -2, 2), shape: [2, 4, 3] };
  const w = { data: hostRandom(4, 22, 0.5, 1.5), shape: [4] };
  const bias = { data: hostRandom(4, 23), shape: [4] };
  for (const [name, f] of [['groupNorm', L.groupNorm], ['groupNormSilu', L.groupNormSilu]] as const) {
    const fd = await gradCheck('cpu', (a, b, c) => f(a, 2, b, c), [x, w, bias]);
    t.ok(fd.worst < 1e-2, `${name} affine: worst ${fd.worst.toExponential(2)} ${fd.where}`);
    const fd2 = await gradCheck('cpu', (a) => f(a, 4), [{ data: hostRandom(1 * 4 * 5, 24, -2, 2), shape: [1, 4, 5] }]);
    t.ok(fd2.worst < 1e-2, `${name} no affine, groups of one channel: worst ${fd2.worst.toExponential(2)} ${fd2.where}`);
  }
  const fd3 = await gradCheck('cpu', (a) => L.geglu(a), [{ data: hostRandom(12, 25, -2, 2), shape: [2, 6] }]);
  t.ok(fd3.worst < 1e-2, `geglu: worst ${fd3.worst.toExponential(2)} ${fd3.where}`);
  const fd4 = await gradCheck('cpu', (a, b) => L.addSilu(a, b), [{ data: hostRandom(6, 26, -2, 2), shape: [2, 3] }, { data: hostRandom(3, 27), shape: [3] }]);
  t.ok(fd4.worst < 1e-2, `addSilu: worst ${fd4.worst.toExponential(2)} ${fd4.where}`);
});

t.test('fused ops: bad inputs give ShapeError naming the op', async (t) => {
  const x = on('cpu', hostRandom(2 * 6 * 4, 1), [2, 6, 4]);
  t.throws(() => L.groupNorm(x, 4), { name: 'ShapeError', message: /^groupNorm: 4 groups do not divide the channels of \[2,6,4\]/ });
  t.throws(() => L.groupNormSilu(x, 4), { name: 'ShapeError', message: /^groupNormSilu: 4 groups/ });
  t.throws(() => L.groupNormSilu(x, 0), { name: 'ShapeError', message: /^groupNormSilu:/ });
  t.throws(() => L.groupNorm(on('cpu', hostRandom(6, 1), [6]), 2), { name: 'ShapeError', message: /^groupNorm:/ });
  t.throws(() => L.groupNormSilu(x, 2, on('cpu', hostRandom(5, 1), [5])), { name: 'ShapeError', message: /^groupNormSilu: weight \[5\] must be \[6\]/ });
  t.throws(() => L.groupNorm(x, 2, null, on('cpu', hostRandom(6, 1), [1, 6])), { name: 'ShapeError', message: /^groupNorm: bias \[1,6\] must be \[6\]/ });
  t.throws(() => L.groupNormComposite(x, 4), { name: 'ShapeError', message: /^groupNorm:/ });
  t.throws(() => L.geglu(on('cpu', hostRandom(6, 1), [2, 3])), { name: 'ShapeError', message: /^geglu: needs an even last axis/ });
  t.throws(() => L.addSilu(x, on('cpu', hostRandom(5, 1), [5])), { name: 'ShapeError', message: /^addSilu:/ });
  t.throws(() => L.geglu(L.full([2, 4], 1, { dtype: 'int32' })), { name: 'DTypeError', message: /^geglu:/ });
});
