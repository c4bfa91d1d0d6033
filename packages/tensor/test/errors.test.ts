/** Bad input gets a typed error that names the op and the shapes. */
import t from 'tap';
import * as L from '../src/index.js';
import { testBackends } from './helpers.js';

const backends = await testBackends();
const gpu = backends.find((b) => b.name === 'webgpu');
const needsGpu = { skip: gpu ? false : 'no webgpu adapter' };

t.test('shape, axis, dtype and gradient errors name the op and shapes', async (t) => {
  const a = L.zeros([2, 3], { backend: 'cpu' });
  const b = L.zeros([4, 5], { backend: 'cpu' });
  t.throws(() => a.matmul(b), { name: 'ShapeError', message: 'matmul: inner dimensions differ: [2,3] @ [4,5]' });
  t.throws(() => a.add(L.zeros([4], { backend: 'cpu' })), { name: 'ShapeError', message: /add: shapes \[2,3\] and \[4\] cannot be broadcast/ });
  t.throws(() => a.reshape([4, 2]), { name: 'ShapeError', message: /reshape: cannot reshape \[2,3\] \(6 elements\) to \[4,2\]/ });
  t.throws(() => a.sum(2), { name: 'AxisError', message: /sum: axis 2 is out of range for a tensor of rank 2/ });
  t.throws(() => a.permute([0, 0]), { name: 'AxisError', message: /permute: repeated axis/ });
  t.throws(() => a.add(L.zeros([2, 3], { backend: 'cpu', dtype: 'int32' })), { name: 'DTypeError', message: /add: inputs have different dtypes: \[2,3\] float32, \[2,3\] int32/ });
  t.throws(() => L.zeros([3], { dtype: 'int32', backend: 'cpu' }).exp(), { name: 'DTypeError', message: /exp: needs float32 input, got int32 \[3\]/ });
  t.throws(() => L.conv2d(L.zeros([1, 3, 5, 5]), L.zeros([2, 2, 3, 3])), { name: 'ShapeError', message: /conv2d: x \[1,3,5,5\] and w \[2,2,3,3\] do not fit groups=1/ });
  t.throws(() => L.conv2d(L.zeros([1, 1, 2, 2]), L.zeros([1, 1, 3, 3])), { name: 'ShapeError', message: /conv2d: kernel 3x3/ });
  t.throws(() => L.concat([L.zeros([2, 3]), L.zeros([3, 3])], 1), { name: 'ShapeError', message: /concat: shapes \[2,3\], \[3,3\] differ outside axis 1/ });
  t.throws(() => L.zeros([2, 3]).pad([3, 3], 'reflect'), { name: 'ShapeError', message: /pad: reflect padding/ });
  t.throws(() => L.tensor([[1, 2], [3]]), { name: 'ShapeError', message: /tensor: ragged nested array/ });
  t.throws(() => L.zeros([2, -1]), { name: 'ShapeError', message: /full: invalid shape \[2,-1\]/ });
  t.throws(() => L.zeros([3]).backward(), { name: 'GradientError', message: /backward: tensor \[3\] does not require grad/ });
  t.throws(() => L.zeros([3], { requiresGrad: true }).mul(2).backward(), { name: 'GradientError', message: /needs a seed gradient for a non-scalar output \[3\]/ });
  t.throws(() => L.zeros([2]).max(0).add(L.zeros([0, 2]).max(0)), { name: 'ShapeError', message: /max: cannot reduce over an empty axis of \[0,2\]/ });
  t.throws(() => L.rand([2], { seed: -1 }), { name: 'RangeError' });
});

t.test('use after dispose is a DisposedError naming the op and shape', async (t) => {
  const a = L.ones([2, 2], { backend: 'cpu' });
  const v = a.reshape([4]);
  a.dispose();
  t.equal(a.isDisposed, true);
  t.same([...await v.data()], [1, 1, 1, 1], 'a view keeps the storage alive');
  t.throws(() => a.add(1), { name: 'DisposedError', message: /add: tensor #\d+ \[2,2\] was used after dispose\(\)/ });
  await t.rejects(a.data(), { name: 'DisposedError' });
  a.dispose();
  t.pass('dispose is idempotent');
});

t.test('mixing backends is a BackendMismatchError', needsGpu, async (t) => {
  if (!gpu) return;
  const a = L.ones([2], { backend: 'cpu' });
  const b = L.ones([2], { backend: gpu });
  t.throws(() => a.add(b), { name: 'BackendMismatchError', message: /add: inputs live on different backends: \[2\] on cpu, \[2\] on webgpu/ });
  const moved = await a.to('webgpu');
  t.same([...await moved.add(b).data()], [2, 2], 'after to(), they combine');
});

t.test('a buffer beyond the device limit is a DeviceLimitError, not a wrong result', needsGpu, async (t) => {
  if (!gpu) return;
  const limit = (gpu as unknown as { ctx: { limits: GPUSupportedLimits } }).ctx.limits.maxStorageBufferBindingSize;
  t.throws(() => L.zeros([Math.ceil(limit / 4) + 1024], { backend: gpu }), { name: 'DeviceLimitError', message: /maxStorageBufferBindingSize/ });
});

t.test('backend selection errors', async (t) => {
  await t.rejects(L.initBackend('tpu' as 'cpu'), { name: 'BackendUnavailableError', message: /unknown backend 'tpu'/ });
});
