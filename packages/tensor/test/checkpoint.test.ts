/** Activation checkpointing: same values and gradients as the plain tape, with the block's intermediates recomputed. */
import t from 'tap';
import * as L from '../src/index.js';
import { close, hostRandom, on, testBackends } from './helpers.js';

const backends = await testBackends();

for (const b of backends) {
  t.test(`${b.name}: checkpoint gives the plain tape's output and gradients for inputs and parameters, and keeps no intermediates`, async (t) => {
    const w = on(b, hostRandom(12, 1), [4, 3], true);          // a parameter read through the closure
    const bias = on(b, hostRandom(3, 2), [3], true);
    const block = (x: L.Tensor, e: L.Tensor): L.Tensor => L.matmul(x.tanh(), w).add(bias).mul(e).sigmoid().square();
    const run = (useCheckpoint: boolean): { y: L.Tensor; x: L.Tensor; e: L.Tensor; nodes: number } => {
      const x = on(b, hostRandom(20, 3), [5, 4], true);
      const e = on(b, hostRandom(3, 4), [3], true);
      const h = x.mul(2);                                        // the block's input comes from the tape
      const y = useCheckpoint ? L.checkpoint(block, [h, e], [w, bias]) : block(h, e);
      let nodes = 0;
      const seen = new Set<unknown>();
      const walk = (z: L.Tensor): void => { const n = z.node; if (!n || seen.has(n)) return; seen.add(n); nodes++; n.inputs.forEach(walk); };
      walk(y);
      return { y, x, e, nodes };
    };
    const grads = async (useCheckpoint: boolean): Promise<{ out: ArrayLike<number>; gs: ArrayLike<number>[]; nodes: number }> => {
      w.grad = null; bias.grad = null;
      const r = run(useCheckpoint);
      r.y.mul(on(b, hostRandom(15, 9, 0.5, 1.5), [5, 3])).sum().backward();
      return { out: await r.y.data(), gs: await Promise.all([r.x, r.e, w, bias].map((v) => v.grad!.data())), nodes: r.nodes };
    };
    const plain = await grads(false);
    const ck = await grads(true);
    t.ok(close(ck.out, plain.out, 0, 0).ok, 'same output');
    ['x', 'e', 'w', 'bias'].forEach((name, i) => {
      const c = close(ck.gs[i], plain.gs[i], 1e-6, 1e-5);
      t.ok(c.ok, `d/d${name}: ${c.message}`);
    });
    t.equal(ck.nodes, 2, `the tape holds the input's op and one checkpoint node (plain: ${plain.nodes} nodes)`);
    t.ok(plain.nodes > 5, 'the plain tape has every op of the block');
    // without anything requiring grad it is a plain call
    const y = L.noGrad(() => L.checkpoint(block, [on(b, hostRandom(20, 3), [5, 4], true), on(b, hostRandom(3, 4), [3])], [w, bias]));
    t.notOk(y.node, 'no node under noGrad');
  });
}
