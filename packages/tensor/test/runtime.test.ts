/** Random draws through the op layer, tracing, images, backend selection, functional gradients. */
import t from 'tap';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as L from '../src/index.js';
import { close, gpuContext, testBackends } from './helpers.js';

const backends = await testBackends();

t.test('rand/randn: same seed, same stream on every backend; generators advance', async (t) => {
  const cpuU = await L.rand([1000], { seed: 42, backend: 'cpu' }).data();
  const cpuN = await L.randn([1001], { seed: 42, backend: 'cpu' }).data();
  for (const b of backends) {
    const u = await L.rand([1000], { seed: 42, backend: b }).data();
    t.same(Buffer.from(u.buffer), Buffer.from(cpuU.buffer), `${b.name}: uniform draws bit-identical to cpu`);
    const n = await L.randn([1001], { seed: 42, backend: b }).data();
    t.ok(close(n, cpuN, 1e-6, 1e-6).ok, `${b.name}: normal draws equal cpu within 1e-6 (${close(n, cpuN, 1e-6, 1e-6).message})`);
    const g = new L.Generator(42);
    const a = await L.rand([300], { generator: g, backend: b }).data();
    const c = await L.rand([700], { generator: g, backend: b }).data();
    t.same([...a, ...c], [...cpuU], `${b.name}: a generator continues the stream`);
  }
  const other = await L.rand([1000], { seed: 43, backend: 'cpu' }).data();
  t.notSame([...other], [...cpuU], 'another seed gives another stream');
});

t.test('trace records op, shapes, backend, kernel and duration; exports Chrome JSON', async (t) => {
  for (const b of backends) {
    const x = L.ones([2, 3], { backend: b });
    const { result, events } = L.trace(() => x.matmul(x.transpose()).relu());
    await result.data();
    const mm = events.find((e) => e.op === 'matmul');
    t.ok(mm, `${b.name}: matmul traced`);
    t.same(mm!.inputs, [[2, 3], [3, 2]]);
    t.same(mm!.outputs, [[2, 2]]);
    t.equal(mm!.backend, b.name);
    t.match(mm!.kernel, /\w/, `kernel name '${mm!.kernel}'`);
    t.ok(events.some((e) => e.op === 'relu'), 'relu traced');
    const chrome = L.traceToChrome(events);
    t.equal((chrome.traceEvents[0] as { ph: string }).ph, 'X', 'complete events');
  }
});

const gpuBackend = backends.find((b) => b.name === 'webgpu');
t.test('a device-timed trace gives each webgpu op its GPU time; a 4x larger matmul takes longer', { skip: gpuBackend?.deviceTiming ? false : 'no webgpu backend with timestamp queries' }, async (t) => {
  const gpu = gpuBackend!;
  const small = L.randn([128, 128], { seed: 1, backend: gpu });
  const big = L.randn([512, 512], { seed: 2, backend: gpu });
  await small.matmul(small).add(big.matmul(big).sum()).data(); // compile the pipelines first
  L.startTrace({ deviceTiming: true });
  const y = small.matmul(small);
  const z = big.matmul(big);
  await Promise.all([y.data(), z.data()]);
  const cpuSide = L.ones([2], { backend: 'cpu' }).add(1);
  const events = await L.stopTraceTimed();
  const [ms, mb] = events.filter((e) => e.op === 'matmul');
  t.ok(ms.device! > 0 && mb.device! > 0, `device times ${ms.device} us and ${mb.device} us`);
  // 64x the work: longer, whatever else the machine is doing (no tighter timing claim in a test)
  t.ok(mb.device! > ms.device!, `512^3 matmul (${mb.device!.toFixed(0)} us) takes longer than the 128^3 one (${ms.device!.toFixed(0)} us)`);
  t.equal(events.find((e) => e.backend === 'cpu')?.device, undefined, 'cpu ops have no device time');
  t.equal(events.filter((e) => 'dispatches' in e).length, 0, 'no raw dispatch ids left on the events');
  void cpuSide;
  const after = L.trace(() => small.add(1));
  await after.result.data();
  t.equal(after.events[0].device, undefined, 'timing stops with the timed trace');
});

t.test('memory().gpu.peakBufferBytes keeps the most device memory held at once until resetPeakMemory()', { skip: gpuBackend ? false : 'no webgpu backend' }, async (t) => {
  const gpu = gpuBackend!;
  L.resetPeakMemory();
  const base = L.memory().gpu!.peakBufferBytes;
  const big = L.zeros([4 << 20], { backend: gpu }); // 16 MiB
  await big.data();
  big.dispose();
  await gpu.sync();
  const peak = L.memory().gpu!.peakBufferBytes;
  t.ok(peak - base >= 16 << 20, `peak rose by ${peak - base} bytes for a 16 MiB tensor`);
  t.ok(L.memory().gpu!.liveBufferBytes < peak, 'live bytes fell back below the peak after dispose');
  L.resetPeakMemory();
  t.ok(L.memory().gpu!.peakBufferBytes <= peak, 'reset starts from what is held now');
});

t.test('writeData overwrites a tensor in place after earlier work, and refuses views and wrong lengths', async (t) => {
  for (const b of backends) {
    const x = L.tensor([1, 2, 3, 4], { backend: b });
    const before = x.mul(10);                       // enqueued before the write: must see the old values
    L.writeData(x, Float32Array.from([5, 6, 7, 8]));
    t.same([...await before.data()], [10, 20, 30, 40], `${b.name}: earlier work read the old data`);
    t.same([...await x.data()], [5, 6, 7, 8], `${b.name}: the tensor holds the new data`);
    t.throws(() => L.writeData(x, new Float32Array(3)), /writeData.*3 values/, `${b.name}: wrong length`);
    t.throws(() => L.writeData(x, new Int32Array(4)), /Float32Array/, `${b.name}: wrong element type`);
    t.throws(() => L.writeData(x.narrow(0, 1, 2), new Float32Array(2)), /whole storage/, `${b.name}: a view`);
  }
});

t.test('backward frees each node\'s temporaries and the gradients it has consumed as it goes', { skip: gpuBackend ? false : 'no webgpu backend' }, async (t) => {
  const { ctx } = await gpuContext();
  const Ctx = ctx!.constructor as unknown as { MAX_PENDING_FREE_BYTES: number };
  const pendingCap = Ctx.MAX_PENDING_FREE_BYTES;
  Ctx.MAX_PENDING_FREE_BYTES = 2 << 20; // reuse freed buffers quickly, so the peak shows what is held
  try {
    const x = L.randn([256 * 1024], { seed: 3, backend: gpuBackend! }).requireGrad(); // 1 MiB
    let y = x;
    for (let i = 0; i < 40; i++) y = y.tanh().mul(1.01);   // the tape holds 80 MiB of activations
    const loss = y.sum();
    await loss.data();
    await gpuBackend!.sync();
    L.resetPeakMemory();
    const base = L.memory().gpu!.peakBufferBytes;
    loss.backward();
    await x.grad!.data();
    const rise = (L.memory().gpu!.peakBufferBytes - base) / (1 << 20);
    // Holding every gradient and temporary to the end would add about 4 MiB per tanh-mul pair (160 MiB).
    t.ok(rise < 24, `device memory rose by ${rise.toFixed(1)} MiB during backward (40 tanh-mul pairs of 1 MiB)`);
  } finally {
    Ctx.MAX_PENDING_FREE_BYTES = pendingCap;
  }
});

t.test('LATENTDEM_TRACE=1 writes a trace file on exit', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const dir = mkdtempSync(join(tmpdir(), 'ldtrace-'));
  const script = `import * as L from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).pathname)}; L.ones([2],{backend:'cpu'}).add(1);`;
  const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), '--conditions=latentdem-src', '--input-type=module', '-e', script], { cwd: dir, env: { ...process.env, LATENTDEM_TRACE: '1' }, encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const m = /wrote op trace \((\d+) events\) to (\S+)/.exec(r.stderr);
  t.ok(m, 'announces the file');
  const json = JSON.parse(readFileSync(join(dir, m![2]), 'utf8'));
  t.ok(json.traceEvents.some((e: { name: string }) => e.name === 'add'), 'add is in the trace');
});

t.test('PNG round trip through tensors', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ldpng-'));
  for (const b of backends) {
    const img = L.linspace(0, 1, 3 * 4 * 5, { backend: b }).reshape([3, 4, 5]);
    const path = join(dir, `${b.name}.png`);
    await L.writeImage(path, img);
    const back = await L.readImage(path, { backend: b });
    t.same(back.shape, [3, 4, 5]);
    t.ok(close(await back.data(), await img.data(), 0.5 / 255 + 1e-6).ok, `${b.name}: 8-bit round trip`);
    await t.rejects(L.writeImage(path, L.zeros([2, 4, 4], { backend: b })), { name: 'ShapeError' });
  }
});

t.test('grad and valueAndGrad leave arguments untouched', async (t) => {
  const x = L.tensor([1, 2, 3], { backend: 'cpu' });
  const { value, grads } = L.valueAndGrad((a) => a.square().sum())(x);
  t.equal(await value.item(), 14);
  t.same([...await grads[0].data()], [2, 4, 6]);
  t.equal(x.requiresGrad, false);
  t.equal(x.grad, null);
  const [gx, gy] = L.grad((a, b) => a.mul(b).sum())(x, L.tensor([4, 5, 6], { backend: 'cpu' }));
  t.same([...await gx.data()], [4, 5, 6]);
  t.same([...await gy.data()], [1, 2, 3]);
  // backward() accumulates into .grad over calls
  const w = L.tensor([1, 2], { backend: 'cpu', requiresGrad: true });
  w.mul(3).sum().backward();
  w.mul(3).sum().backward();
  t.same([...await w.grad!.data()], [6, 6], 'backward accumulates');
  // a gradient that reaches two leaves through the same tensor must not alias
  const p = L.tensor([1], { backend: 'cpu', requiresGrad: true });
  const q = L.tensor([1], { backend: 'cpu', requiresGrad: true });
  p.add(q).sum().backward();
  p.grad!.dispose();
  t.same([...await q.grad!.data()], [1], 'leaf grads are independent tensors');
  t.equal(L.noGrad(() => w.mul(2)).requiresGrad, false, 'noGrad records nothing');
});

t.test('LATENTDEM_BACKEND picks the backend; auto falls back with one notice', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const src = JSON.stringify(new URL('../src/index.ts', import.meta.url).pathname);
  const run = (env: Record<string, string>) => spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), '--conditions=latentdem-src', '--input-type=module', '-e',
    `import * as L from ${src}; const b = await L.ready(); console.log(b.name, L.ones([1]).backendName); process.exit(0);`], { env: { ...process.env, ...env }, encoding: 'utf8' });
  const cpu = run({ LATENTDEM_BACKEND: 'cpu' });
  t.equal(cpu.stdout.trim(), 'cpu cpu', cpu.stderr);
  const bad = run({ LATENTDEM_BACKEND: 'tpu' });
  t.not(bad.status, 0, 'an unknown backend name fails');
  t.match(bad.stderr, /LATENTDEM_BACKEND='tpu' is not one of cpu, webgpu, auto/);
  if (backends.some((b) => b.name === 'webgpu')) {
    const gpu = run({ LATENTDEM_BACKEND: 'webgpu' });
    t.equal(gpu.stdout.trim(), 'webgpu webgpu', gpu.stderr);
    const auto = run({ LATENTDEM_BACKEND: 'auto' });
    t.equal(auto.stdout.trim(), 'webgpu webgpu', 'auto picks webgpu when an adapter exists');
  }
  const noAdapter = run({ LATENTDEM_BACKEND: 'auto', VK_ICD_FILENAMES: '/nonexistent.json', VK_DRIVER_FILES: '/nonexistent.json' });
  if (noAdapter.stdout.trim() === 'cpu cpu') t.match(noAdapter.stderr, /no WebGPU adapter.*using the cpu backend/, 'auto without an adapter: cpu with a notice');
});
