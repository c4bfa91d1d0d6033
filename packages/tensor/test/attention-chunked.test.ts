/** Attention over chunks of query rows (the path long sequences take) equals the one-matrix path, values and gradients. */
import t from 'tap';
import * as L from '../src/index.js';
import { close, gradCheck, hostRandom, on, testBackends } from './helpers.js';

const backends = await testBackends();
// These cases test the composite path (masked attention, and what unmasked attention was before the fused kernel).
L.attentionTuning.fused = false;
const fullBudget = L.attentionTuning.maxScoreBytes;

/** Runs f with the score budget set so that `rows` query rows fit per chunk for a [batch, *, lk] score. */
function withRows<T>(rows: number, batch: number, lk: number, f: () => T): T {
  L.attentionTuning.maxScoreBytes = rows * batch * lk * 4;
  try { return f(); } finally { L.attentionTuning.maxScoreBytes = fullBudget; }
}

interface Case { name: string; q: number[]; k: number[]; v: number[]; mask?: number[]; batch: number }
const cases: Case[] = [
  // 7 query rows in chunks of 3 (a short last chunk), broadcast k/v batch, a per-row mask
  { name: 'q [2,3,7,4], k/v [1,3,5,*], per-row mask', q: [2, 3, 7, 4], k: [1, 3, 5, 4], v: [1, 3, 5, 2], mask: [7, 5], batch: 6 },
  // cross-attention shape (few keys), mask broadcast over rows
  { name: 'q [2,10,8], k/v [2,3,8] cross-attention, row-broadcast mask', q: [2, 10, 8], k: [2, 3, 8], v: [2, 3, 8], mask: [1, 3], batch: 2 },
];

for (const b of backends) {
  for (const c of cases) {
    t.test(`${b.name}: chunked attention equals the one-matrix path on ${c.name}, forward and gradients`, async (t) => {
      const lk = c.k[c.k.length - 2];
      const data = [hostRandom(c.q.reduce((a, n) => a * n), 1), hostRandom(c.k.reduce((a, n) => a * n), 2), hostRandom(c.v.reduce((a, n) => a * n), 3)];
      const shapes = [c.q, c.k, c.v];
      const mask = c.mask ? on(b, hostRandom(c.mask.reduce((a, n) => a * n), 4), c.mask).gt(-0.5) : null;
      // keep at least one key per row so no row is all -inf
      const maskFixed = mask ? L.maximum(mask, L.concat([L.ones([...c.mask!.slice(0, -1), 1], { backend: b }), L.zeros([...c.mask!.slice(0, -1), lk - 1], { backend: b })], -1)) : null;
      const run = async (rows: number): Promise<{ out: ArrayLike<number>; grads: ArrayLike<number>[] }> => {
        const xs = data.map((d, i) => on(b, d, shapes[i], true));
        const out = withRows(rows, c.batch, lk, () => L.scaledDotProductAttention(xs[0], xs[1], xs[2], { mask: maskFixed }));
        const r = on(b, hostRandom(out.size, 9, 0.5, 1.5), out.shape);
        out.mul(r).sum().backward();
        return { out: await out.data(), grads: await Promise.all(xs.map(async (x) => x.grad!.data())) };
      };
      const whole = await run(1e9);
      for (const rows of [1, 3]) {
        const part = await run(rows);
        const o = close(part.out, whole.out, 1e-6, 1e-5);
        t.ok(o.ok, `output, ${rows} rows per chunk: ${o.message}`);
        ['dq', 'dk', 'dv'].forEach((name, i) => {
          const g = close(part.grads[i], whole.grads[i], 1e-5, 1e-4);
          t.ok(g.ok, `${name}, ${rows} rows per chunk: ${g.message}`);
        });
      }
    });
  }

  t.test(`${b.name}: chunked attention gradients match finite differences`, async (t) => {
    const shapes = [[2, 5, 3], [2, 4, 3], [2, 4, 2]];
    const inputs = shapes.map((shape, i) => ({ shape, data: hostRandom(shape.reduce((a, n) => a * n), 20 + i) }));
    L.attentionTuning.maxScoreBytes = 2 * 2 * 4 * 4; // 2 rows per chunk
    try {
      const { worst, where } = await gradCheck(b, (q, k, v) => L.scaledDotProductAttention(q, k, v), inputs, 1e-2);
      t.ok(worst < 2e-3, `worst relative error ${worst.toExponential(2)} (${where})`);
    } finally {
      L.attentionTuning.maxScoreBytes = fullBudget;
    }
  });

  t.test(`${b.name}: a sequence whose score matrix exceeds the budget never materializes it, forward or backward`, async (t) => {
    // 2 x 4 heads x 256 x 256 scores = 2 MiB; budget 256 KiB -> chunks of 32 rows
    const shape = [2, 4, 256, 16];
    const data = [5, 6, 7].map((seed) => hostRandom(2 * 4 * 256 * 16, seed));
    const run = (budget: number): { out: L.Tensor; grads: L.Tensor[]; largest: number } => {
      L.attentionTuning.maxScoreBytes = budget;
      try {
        const xs = data.map((d) => on(b, d, shape, true));
        const { result, events } = L.trace(() => {
          const out = L.scaledDotProductAttention(xs[0], xs[1], xs[2]);
          out.mul(L.ones(out.shape, { backend: b })).sum().backward();
          return out;
        });
        const largest = Math.max(...events.flatMap((e) => e.outputs.map((s) => s.reduce((a, n) => a * n, 1))));
        return { out: result, grads: xs.map((x) => x.grad!), largest };
      } finally {
        L.attentionTuning.maxScoreBytes = fullBudget;
      }
    };
    const whole = run(1e9);
    const part = run(256 * 1024);
    t.equal(whole.largest, 2 * 4 * 256 * 256, 'the one-matrix path does build the full score matrix (the check can fail)');
    t.ok(part.largest <= (256 * 1024) / 4, `largest kernel output ${part.largest} elements <= the 256 KiB budget`);
    const o = close(await part.out.data(), await whole.out.data(), 1e-6, 1e-5);
    t.ok(o.ok, `output: ${o.message}`);
    for (let i = 0; i < 3; i++) {
      const g = close(await part.grads[i].data(), await whole.grads[i].data(), 1e-5, 1e-4);
      t.ok(g.ok, `gradient ${i}: ${g.message}`);
    }
  });
}
