import t from 'tap';
import { bf16ToF32, f16ToF32, f32ToF16 } from '../src/half.js';

t.test('binary16 known values (IEEE 754 table)', async (t) => {
  const bits = Uint16Array.of(0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x3555, 0x7c00, 0xfc00);
  const want = [0, -0, 1, -2, 65504, 2 ** -24, 2 ** -14, 0.333251953125, Infinity, -Infinity];
  t.same([...f16ToF32(bits)], want);
  t.same([...f32ToF16(Float32Array.from(want))], [...bits], 'and back');
  t.ok(Number.isNaN(f16ToF32(Uint16Array.of(0x7e00))[0]), 'NaN');
  t.same([...f32ToF16(Float32Array.of(65520, 1e-9, 1 + 2 ** -11, 1 + 3 * 2 ** -11))], [0x7c00, 0x0000, 0x3c00, 0x3c02], 'overflow, underflow, ties to even');
});

t.test('every half round-trips through float32', async (t) => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16(f16ToF32(all));
  let bad = 0;
  for (let i = 0; i < 65536; i++) {
    const isNan = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (!isNan && back[i] !== i) bad++;
  }
  t.equal(bad, 0);
});

t.test('bfloat16 is the high half of float32', async (t) => {
  t.same([...bf16ToF32(Uint16Array.of(0x3f80, 0xc040, 0x7f80))], [1, -3, Infinity]);
});
