/** Re-centring: centre of mass moved to the target with a bilinear sub-pixel shift, clamped and renormalised. */
import t from 'tap';
import { centerOfMass, motionKernelData, recenterKernel, shiftBilinear } from '../src/index.js';

t.test('centerOfMass and shiftBilinear by hand', async (t) => {
  const k = new Float32Array(16); k[1 * 4 + 2] = 3; k[3 * 4 + 2] = 1;           // rows 1 and 3, column 2, weights 3:1
  t.same(centerOfMass(k, 4, 4), [1.5, 2]);
  const s = shiftBilinear(k, 4, 4, 0.5, -1);                                       // half a row down, one column left
  t.same([...s].map((v) => +v.toFixed(6)), [0, 0, 0, 0, 0, 1.5, 0, 0, 0, 1.5, 0, 0, 0, 0.5, 0, 0]);
  t.throws(() => centerOfMass(new Float32Array(4), 2, 2), /sums to zero/);
});

t.test('recenterKernel: the centre of mass lands on (h//2, w//2) (or the release\'s h//2 + 0.5), non-negative, sum 1', async (t) => {
  for (const seed of [1, 7, 64]) {
    const raw = motionKernelData({ size: 64, seed });
    // move it off-centre first so there is something to undo
    const off = shiftBilinear(raw, 64, 64, 3.3, -2.6);
    for (const [target, want] of [['origin', 32], ['release', 32.5]] as const) {
      const k = recenterKernel(off, 64, 64, { target });
      const [cy, cx] = centerOfMass(k, 64, 64);
      t.ok(Math.abs(cy - want) < 0.02 && Math.abs(cx - want) < 0.02, `seed ${seed} ${target}: centre (${cy.toFixed(3)}, ${cx.toFixed(3)}) ~ ${want}`);
      t.ok(k.every((v) => v >= 0), 'non-negative');
      t.ok(Math.abs(k.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'sums to 1');
    }
  }
  t.throws(() => recenterKernel(new Float32Array(3), 2, 2), /3 values for a 2x2/);
});
