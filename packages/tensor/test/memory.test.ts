/** 1000 iterations of a small MLP training loop: live tensors and bytes must not grow. */
import t from 'tap';
import * as L from '../src/index.js';
import { testBackends } from './helpers.js';

const backends = await testBackends();

for (const b of backends) {
  t.test(`${b.name}: MLP forward+backward+SGD for 1000 steps keeps memory flat`, async (t) => {
    const gen = new L.Generator(5);
    const w1 = L.randn([8, 32], { backend: b, generator: gen }).mul(0.3).requireGrad();
    const b1 = L.zeros([32], { backend: b, requiresGrad: true });
    const w2 = L.randn([32, 1], { backend: b, generator: gen }).mul(0.3).requireGrad();
    const params = [w1, b1, w2];
    const x = L.randn([16, 8], { backend: b, generator: gen });
    const target = L.tensor(Array.from({ length: 16 }, (_, i) => [Math.sin(i)]), { backend: b });
    const step = (): L.Tensor => L.tidy(() => {
      const h = x.matmul(w1).add(b1).silu();
      const loss = h.matmul(w2).sub(target).square().mean();
      const [g1, gb1, g2] = L.grad((a, c, d) => x.matmul(a).add(c).silu().matmul(d).sub(target).square().mean())(w1, b1, w2);
      L.noGrad(() => {
        for (const [p, g] of [[w1, g1], [b1, gb1], [w2, g2]] as const) p.assign(p.sub(g.mul(0.05)));
      });
      return loss;
    });
    let first = 0; let last = 0;
    let before = L.memory();
    let after = before;
    for (let i = 0; i < 1000; i++) {
      const loss = step();
      if (i === 0) first = await loss.item();
      if (i === 999) last = await loss.item();
      loss.dispose();
      // Snapshots at the same phase of a step (after its result is freed and the queue drained).
      if (i === 100) { await b.sync(); before = L.memory(); }
      if (i === 900) { await b.sync(); after = L.memory(); }
      if (i % 100 === 99) await b.sync();
    }
    t.equal(after.tensors[b.name], before.tensors[b.name], `live tensors flat: ${before.tensors[b.name]} -> ${after.tensors[b.name]}`);
    t.equal(after.bytes[b.name], before.bytes[b.name], `live bytes flat: ${before.bytes[b.name]} -> ${after.bytes[b.name]}`);
    if (b.name === 'webgpu' && after.gpu && before.gpu) {
      t.equal(after.gpu.liveBufferBytes, before.gpu.liveBufferBytes, `GPU buffer bytes of live storages flat: ${before.gpu.liveBufferBytes} -> ${after.gpu.liveBufferBytes}`);
      t.equal(after.gpu.pooledBytes, before.gpu.pooledBytes, `GPU pool flat (buffers are reused, not added): ${before.gpu.pooledBytes} -> ${after.gpu.pooledBytes}`);
    }
    t.ok(last < first * 0.5, `the loop really trains: loss ${first.toFixed(4)} -> ${last.toFixed(4)}`);
    t.comment(`${b.name}: after step 100 / step 900: tensors ${before.tensors[b.name]} / ${after.tensors[b.name]}, bytes ${before.bytes[b.name]} / ${after.bytes[b.name]}${b.name === 'webgpu' && after.gpu ? `, GPU live buffer bytes ${before.gpu?.liveBufferBytes} / ${after.gpu.liveBufferBytes}, pooled ${before.gpu?.pooledBytes} / ${after.gpu.pooledBytes}` : ''}`);
    for (const p of params) p.dispose();
  });
}

t.test('tidy frees everything but its result; keep() escapes', async (t) => {
  const base = L.memory().tensors.cpu;
  let kept: L.Tensor | null = null;
  const r = L.tidy(() => {
    const a = L.ones([4], { backend: 'cpu' });
    kept = L.keep(a.mul(3));
    const b = a.add(1).mul(2);
    return { b, list: [a.sum()] };
  });
  t.equal(L.memory().tensors.cpu, base + 3, 'the result (2 tensors) and the kept one live');
  t.same([...await r.b.data()], [4, 4, 4, 4]);
  t.same([...await kept!.data()], [3, 3, 3, 3]);
  t.throws(() => L.tidy(() => Promise.resolve(1) as unknown as number), /synchronous/);
});
