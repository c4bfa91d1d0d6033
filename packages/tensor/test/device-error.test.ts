/** A device error (here: a kernel that fails validation) makes later reads fail loudly, never return stale data. */
import t from 'tap';
import * as L from '../src/index.js';
import { gpuBackend } from './helpers.js';

const gpu = await gpuBackend();

t.test('after a device error, reads reject with DeviceError', { skip: gpu ? false : 'no webgpu adapter' }, async (t) => {
  const ctx = (gpu as unknown as { ctx: import('../src/backends/webgpu/context.js').GpuContext }).ctx;
  const x = L.ones([4], { backend: gpu! });
  t.same([...await x.data()], [1, 1, 1, 1], 'healthy before');
  ctx.dispatch({ key: 'broken-kernel', source: () => '@compute @workgroup_size(1) fn main() { let x: u32 = undeclared; }', buffers: [], workgroups: 1, kernel: 'broken' });
  await ctx.device.queue.onSubmittedWorkDone();
  await new Promise((r) => setTimeout(r, 50));
  await t.rejects(x.data(), { name: 'DeviceError', message: /device reported an error/ }, 'reads reject');
  t.throws(() => x.add(1), { name: 'DeviceError' }, 'later dispatches refuse too');
});
