/** CPU random fills: the Philox stream of random/philox.ts, written to float32. */
import type { RandomParams } from '../../backend.js';
import { DTypeError } from '../../errors.js';
import { INV_2_24, boxMuller, checkStreamRange, philox4x32, splitIndex } from '../../random/philox.js';
import type { CpuStorage } from './storage.js';

export function random(p: RandomParams, out: CpuStorage): void {
  if (out.dtype !== 'float32') throw new DTypeError(`random.${p.kind}`, `output must be float32, got ${out.dtype}`);
  const data = out.data;
  const n = data.length;
  checkStreamRange(p.offset, n);
  if (p.kind === 'uniform') {
    // One Philox block serves four consecutive elements.
    let i = 0;
    while (i < n) {
      const e = p.offset + i;
      const [lo, hi] = splitIndex(Math.floor(e / 4));
      const w = philox4x32([lo, hi, 0, 0], p.key);
      for (let word = e % 4; word < 4 && i < n; word++, i++) data[i] = (w[word] >>> 8) * INV_2_24;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const [lo, hi] = splitIndex(p.offset + i);
      const w = philox4x32([lo, hi, 0, 1], p.key);
      data[i] = boxMuller(w[0], w[1]);
    }
  }
}
