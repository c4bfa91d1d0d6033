import t from 'tap';
import type { Test } from 'tap';
import { mkdtemp, open, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { tensor } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { SafetensorsError, SafetensorsFile, loadSafetensors, saveSafetensors } from '../src/safetensors.js';
import { f16ToF32, f32ToF16 } from '../src/half.js';
import { buildFile, bytesOfArray } from './safetensors-build.js';

const root = process.cwd();
const DNCNN = resolve(root, '../shared/fixtures/dncnn_small/model.safetensors');
const KERNELS = resolve(root, '../shared/data/mstep-eval/kernels.safetensors');

const dir = await mkdtemp(join(tmpdir(), 'latentdem-st-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

function randomF32(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = (s / 2 ** 32) * 20 - 10; }
  return out;
}

async function expectError(t: Test, p: Promise<unknown>, pattern: RegExp, what: string): Promise<SafetensorsError | null> {
  try {
    await p;
    t.fail(`${what}: no error`);
    return null;
  } catch (e) {
    t.type(e, SafetensorsError, `${what}: a SafetensorsError`);
    t.match((e as Error).message, pattern, `${what}: ${(e as Error).message}`);
    return e as SafetensorsError;
  }
}

t.test('round trip F32, F16 and I32 (rank 0, empty, n-d)', async (t) => {
  const a = randomF32(2 * 3 * 4, 1);
  const ints = Int32Array.of(0, -1, 1, 2147483647, -2147483648, 12345);
  const src: Record<string, Tensor> = {
    'b.weight': tensor(a, { shape: [2, 3, 4] }),
    'a.scalar': tensor(Float32Array.of(3.25), { shape: [] }),
    'empty': tensor(new Float32Array(0), { shape: [0, 5] }),
    'ids': tensor(ints, { shape: [2, 3] }),
    'odd': tensor(Float32Array.of(1, 2, 3), { shape: [3] }),
  };
  for (const dtype of ['F32', 'F16'] as const) {
    const path = join(dir, `rt-${dtype}.safetensors`);
    await saveSafetensors(path, src, { dtype, metadata: { format: 'pt', note: 'héllo "quoted"' } });
    const f = await SafetensorsFile.open(path);
    t.same(f.metadata, { format: 'pt', note: 'héllo "quoted"' }, `${dtype}: metadata`);
    t.same(f.keys().sort(), Object.keys(src).sort(), `${dtype}: keys`);
    t.equal(f.entries.get('ids')!.dtype, 'I32', `${dtype}: int32 written as I32`);
    t.equal(f.entries.get('b.weight')!.dtype, dtype);
    for (const [k, x] of Object.entries(src)) {
      const y = await f.read(k);
      t.same(y.shape, x.shape, `${dtype} ${k}: shape`);
      t.equal(y.dtype, x.dtype, `${dtype} ${k}: dtype`);
      const want = x.dtype === 'float32' && dtype === 'F16' ? [...f16ToF32(f32ToF16((await x.data()) as Float32Array))] : [...(await x.data())];
      t.same([...(await y.data())], want, `${dtype} ${k}: values`);
      y.dispose();
    }
    await f.close();
    await expectError(t, f.read('ids'), /closed/, 'read after close');
    // header layout as the reference writes it
    const bytes = await readFile(path);
    const n = Number(bytes.readBigUInt64LE(0));
    t.equal(n % 8, 0, 'header length is a multiple of 8');
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    t.match(text, /^\{"__metadata__":\{"format":"pt","note":"h\u00e9llo \\"quoted\\""\},"a\.scalar":\{"dtype":"F(32|16)","shape":\[\],"data_offsets":\[\d+,\d+\]\}/);
    const tail = text.slice(text.lastIndexOf('}') + 1);
    t.ok(/^ {0,7}$/.test(tail), `padded with fewer than 8 trailing spaces (${tail.length})`);
    const keys = Object.keys(JSON.parse(text) as object);
    t.same(keys, ['__metadata__', 'a.scalar', 'b.weight', 'empty', 'ids', 'odd'], 'keys sorted');
    if (dtype === 'F16') {
      const ids = (JSON.parse(text) as Record<string, { data_offsets: number[] }>).ids.data_offsets[0];
      t.equal(ids % 4, 0, 'I32 data stays 4-byte aligned among F16 tensors');
    }
  }
  const all = await loadSafetensors(join(dir, 'rt-F32.safetensors'), { filter: (k) => k !== 'empty' });
  t.same([...all.keys()].sort(), ['a.scalar', 'b.weight', 'ids', 'odd']);
  t.same([...(await all.get('b.weight')!.data())], [...a]);
  t.equal(await all.get('a.scalar')!.item(), 3.25);
  t.same(all.get('a.scalar')!.shape, []);
  for (const x of all.values()) x.dispose();
  // a Map works as input too, and an empty file is valid
  await saveSafetensors(join(dir, 'empty.safetensors'), new Map());
  const e = await SafetensorsFile.open(join(dir, 'empty.safetensors'));
  t.same(e.keys(), []);
  await e.close();
});

t.test('refuses to overwrite unless asked', async (t) => {
  const path = join(dir, 'once.safetensors');
  await saveSafetensors(path, { x: tensor([1, 2, 3]) });
  await expectError(t, saveSafetensors(path, { x: tensor([4, 5, 6]) }), /once\.safetensors.*exists.*overwrite: true/, 'second save');
  t.same([...(await (await loadSafetensors(path)).get('x')!.data())], [1, 2, 3], 'old content kept');
  await saveSafetensors(path, { x: tensor([4, 5, 6]) }, { overwrite: true });
  t.same([...(await (await loadSafetensors(path)).get('x')!.data())], [4, 5, 6], 'overwritten');
  const gone = tensor([1]);
  gone.dispose();
  await expectError(t, saveSafetensors(join(dir, 'bad.safetensors'), { y: gone }), /bad\.safetensors \["y"\]: tensor was disposed/, 'disposed tensor');
  await expectError(t, saveSafetensors(join(dir, 'bad.safetensors'), { __metadata__: tensor([1]) }), /reserved/, 'reserved key');
  await expectError(t, saveSafetensors(join(dir, 'bad.safetensors'), { y: tensor([1]) }, { metadata: { a: 1 as unknown as string } }), /metadata value "a" must be a string/, 'metadata value');
  t.notOk(existsSync(join(dir, 'bad.safetensors')), 'no partial file left');
  t.notOk((await readdir(dir)).some((f) => f.endsWith('.tmp')), 'no temp file left');
});

t.test('BF16, F16, I32 and I64 from hand-built bytes', async (t) => {
  const bytes = buildFile([
    { name: 'bf', dtype: 'BF16', shape: [2, 2], data: bytesOfArray(Uint16Array.of(0x3f80, 0xc040, 0x7f80, 0x0000)) },
    { name: 'h', dtype: 'F16', shape: [3], data: bytesOfArray(Uint16Array.of(0x3c00, 0xc000, 0x7bff)) },
    { name: 'i', dtype: 'I32', shape: [2], data: bytesOfArray(Int32Array.of(-7, 2147483647)) },
    { name: 'l', dtype: 'I64', shape: [5], data: bytesOfArray(BigInt64Array.of(0n, -1n, 2147483647n, -2147483648n, 10499n)) },
    { name: 'big', dtype: 'I64', shape: [1, 2], data: bytesOfArray(BigInt64Array.of(5n, 2147483648n)) },
    { name: 'neg', dtype: 'I64', shape: [1], data: bytesOfArray(BigInt64Array.of(-2147483649n)) },
  ], { metadata: { a: 'b' } });
  const path = join(dir, 'hand.safetensors');
  await writeFile(path, bytes);
  const f = await SafetensorsFile.open(path);
  t.same(f.keys(), ['bf', 'h', 'i', 'l', 'big', 'neg'], 'file order');
  t.same(f.metadata, { a: 'b' });
  const bf = await f.read('bf');
  t.same(bf.shape, [2, 2]);
  t.equal(bf.dtype, 'float32');
  t.same([...(await bf.data())], [1, -3, Infinity, 0]);
  t.same([...(await (await f.read('h')).data())], [1, -2, 65504]);
  const i = await f.read('i');
  t.equal(i.dtype, 'int32');
  t.same([...(await i.data())], [-7, 2147483647]);
  const l = await f.read('l');
  t.equal(l.dtype, 'int32');
  t.same([...(await l.data())], [0, -1, 2147483647, -2147483648, 10499]);
  await expectError(t, f.read('big'), /hand\.safetensors \["big"\]: I64 value 2147483648 at index 1 does not fit in int32/, 'I64 overflow');
  await expectError(t, f.read('neg'), /\["neg"\]: I64 value -2147483649 at index 0/, 'I64 underflow');
  await expectError(t, f.read('nope'), /\["nope"\]: no such tensor/, 'unknown key');
  await f.close();
  await f.close();
  // a header padded the reference way (spaces) and one with BF16 read through loadSafetensors from bytes
  const g = await SafetensorsFile.fromBytes(buildFile([{ name: 'x', dtype: 'BF16', shape: [], data: bytesOfArray(Uint16Array.of(0x4049)) }], { pad: 7 }), 'mem');
  t.same([...(await (await g.read('x')).data())], [3.140625]);
});

t.test('byte-range reads: a tensor behind 1 GiB of (sparse) data, without touching it', async (t) => {
  const path = join(dir, 'sparse.safetensors');
  const GiB = 2 ** 30;
  const header = Buffer.from(`{"big":{"dtype":"F32","shape":[${GiB / 4}],"data_offsets":[0,${GiB}]},"tail":{"dtype":"F32","shape":[2,2],"data_offsets":[${GiB},${GiB + 16}]}}`);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  const fh = await open(path, 'w');
  await fh.write(Buffer.concat([prefix, header]));
  await fh.write(bytesOfArray(Float32Array.of(1, 2, 3, 4)), 0, 16, 8 + header.length + GiB);
  await fh.close();
  const t0 = performance.now();
  const f = await SafetensorsFile.open(path);
  const tail = await f.read('tail');
  t.same([...(await tail.data())], [1, 2, 3, 4]);
  t.same(f.entries.get('big')!.shape, [GiB / 4]);
  await f.close();
  t.ok(performance.now() - t0 < 2000, 'fast: the 1 GiB range is never read');
  await rm(path);
});

t.test('real fixture: dncnn_small', async (t) => {
  const f = await SafetensorsFile.open(DNCNN);
  t.equal(f.keys().length, 28);
  t.same(f.entries.get('model.0.weight'), { dtype: 'F32', shape: [32, 2, 3, 3], dataOffsets: [43688, 45992] });
  t.same(f.entries.get('model.11.weight')!.shape, [1, 32, 3, 3]);
  const nbt = await f.read('model.3.num_batches_tracked');
  t.same(nbt.shape, []);
  t.equal(nbt.dtype, 'int32');
  t.equal(await nbt.item(), 1000, 'I64 scalar num_batches_tracked = 1000');
  const x = await (await f.read('__fixture__.x')).data();
  const n = await (await f.read('__fixture__.noise')).data();
  const out = await (await f.read('__fixture__.out')).data();
  // out = x - noise, broadcast over the 2 channels: a fact of the fixture that needs every byte right
  let worst = 0;
  for (let b = 0; b < 2; b++) for (let c = 0; c < 2; c++) for (let p = 0; p < 33 * 33; p++) {
    const i = (b * 2 + c) * 1089 + p;
    worst = Math.max(worst, Math.abs(out[i] - (x[i] - n[b * 1089 + p])));
  }
  t.ok(worst < 1e-6, `out == x - noise (max diff ${worst})`);
  const var3 = await (await f.read('model.3.running_var')).data();
  t.ok([...var3].every((v) => v >= 0.5 && v <= 1.5), 'running_var ~ U(0.5, 1.5)');
  await f.close();
  const sd = await loadSafetensors(DNCNN, { filter: (k) => k.startsWith('model.') });
  t.equal(sd.size, 25);
});

t.test('real fixture: mstep-eval kernels', async (t) => {
  const f = await SafetensorsFile.open(KERNELS);
  t.same(f.keys(), ['kernels', 'seeds']);
  t.same(f.entries.get('seeds'), { dtype: 'I64', shape: [500], dataOffsets: [8192000, 8196000] });
  const seeds = await f.read('seeds');
  t.same([...(await seeds.data())], Array.from({ length: 500 }, (_, i) => 10000 + i), 'seeds 10000..10499');
  const k = await f.read('kernels');
  t.same(k.shape, [500, 64, 64]);
  const d = await k.data();
  let worstSum = 0; let min = Infinity;
  for (let i = 0; i < 500; i++) {
    let s = 0;
    for (let j = 0; j < 4096; j++) { s += d[i * 4096 + j]; min = Math.min(min, d[i * 4096 + j]); }
    worstSum = Math.max(worstSum, Math.abs(s - 1));
  }
  t.ok(worstSum < 1e-5, `every kernel sums to 1 (worst |sum - 1| = ${worstSum})`);
  t.ok(min >= 0, 'kernels are non-negative');
  await f.close();
});

t.test('validation errors name the file and the key', async (t) => {
  const good = { name: 'w', dtype: 'F32', shape: [2], data: new Uint8Array(8) };
  const raw = (header: string, data = 0): Uint8Array => buildFile([], { rawHeader: header, dataBytes: data });
  const cases: [string, Uint8Array, RegExp][] = [
    ['too short', new Uint8Array(5), /file is 5 bytes, shorter than the 8-byte header length/],
    ['header past the end', (() => { const b = buildFile([good]); new DataView(b.buffer).setBigUint64(0, 1000n, true); return b; })(), /header length 1000 runs past the end of the \d+-byte file/],
    ['absurd header length', (() => { const b = buildFile([good]); new DataView(b.buffer).setBigUint64(0, 2n ** 63n, true); return b; })(), /header length 9223372036854775808 is larger than the 100000000-byte limit/],
    ['empty header', raw(''), /header is empty/],
    ['non-UTF-8', buildFile([], { rawHeader: Uint8Array.of(0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d) }), /header is not valid UTF-8/],
    ['byte-order mark', buildFile([], { rawHeader: Uint8Array.of(0xef, 0xbb, 0xbf, 0x7b, 0x7d) }), /must start with '\{'/],
    ['does not start with {', raw(' {}'), /must start with '\{'/],
    ['bad JSON', raw('{"w": {'), /not valid JSON/],
    ['not an object', raw('[1, 2]'), /must start with '\{'/],
    ['entry not an object', raw('{"w": [1, 2]}'), /\["w"\]: entry must be an object.*got an array/],
    ['unknown dtype', raw('{"w": {"dtype": "F33", "shape": [], "data_offsets": [0, 0]}}'), /\["w"\]: unknown dtype "F33"/],
    ['unsupported dtype', raw('{"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}', 8), /\["w"\]: unsupported dtype F64 \(supported: F32, F16, BF16, I32, I64\)/],
    ['dtype not a string', raw('{"w": {"dtype": 4, "shape": [], "data_offsets": [0, 4]}}', 4), /\["w"\]: dtype must be a string, got the number 4/],
    ['shape missing', raw('{"w": {"dtype": "F32", "data_offsets": [0, 4]}}', 4), /\["w"\]: shape must be a list of integers, got undefined/],
    ['negative shape', raw('{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', 4), /\["w"\]: shape must hold non-negative integers.*-1/],
    ['fractional shape', raw('{"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}', 4), /\["w"\]: shape must hold non-negative integers/],
    ['huge shape', raw('{"w": {"dtype": "F32", "shape": [9007199254740993], "data_offsets": [0, 4]}}', 4), /\["w"\]: shape must hold non-negative integers below 2\^53/],
    ['shape overflow', raw('{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}', 4), /\["w"\]: shape \[4294967296,4294967296\] has more than 2\^53 elements/],
    ['offsets not two', raw('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}', 4), /\["w"\]: data_offsets must have 2 entries, got 1/],
    ['offsets not integers', raw('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}}', 4), /\["w"\]: data_offsets must hold non-negative integers.*the string "4"/],
    ['begin after end', raw('{"w": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}', 4), /\["w"\]: data_offsets \[4, 0\]: begin is after end/],
    ['size mismatch', raw('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', 4), /\["w"\]: data_offsets \[0, 4\] span 4 bytes, but F32 \[2\] needs 8/],
    ['past the buffer', raw('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', 4), /\["w"\]: data_offsets \[0, 8\] run past the 4-byte data buffer/],
    ['overlap', raw('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', 8), /\["b"\]: data_offsets \[4, 8\] overlap those of "a", which end at 8/],
    ['hole', raw('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}', 12), /\["b"\]: bytes \[4, 8\) of the data buffer belong to no tensor/],
    ['trailing bytes', raw('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 12), /data buffer is 12 bytes but the tensors cover only 4/],
    ['duplicate key', raw('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "\\u0061": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 4), /\["a"\]: key appears twice in the header/],
    ['duplicate field', raw('{"a": {"dtype": "F32", "shape": [1], "dtype": "I32", "data_offsets": [0, 4]}}', 4), /\["a"\]: field "dtype" appears twice in "a"/],
    ['metadata not an object', raw('{"__metadata__": ["x"]}'), /\["__metadata__"\]: __metadata__ must be an object of strings, got an array/],
    ['metadata value not a string', raw('{"__metadata__": {"epoch": 3}}'), /\["__metadata__"\]: __metadata__ value "epoch" must be a string, got the number 3/],
  ];
  for (const [what, bytes, pattern] of cases) {
    const e = await expectError(t, SafetensorsFile.fromBytes(bytes, 'case.safetensors'), pattern, what);
    if (e) t.match(e.message, /^safetensors: case\.safetensors/, `${what}: names the file`);
  }
  // the same checks through a real file
  const path = join(dir, 'truncated.safetensors');
  const whole = buildFile([good, { ...good, name: 'v' }]);
  await writeFile(path, whole.subarray(0, whole.length - 3));
  await expectError(t, SafetensorsFile.open(path), /truncated\.safetensors \["v"\]: data_offsets \[8, 16\] run past the 13-byte data buffer/, 'truncated file');
  await expectError(t, SafetensorsFile.open(join(dir, 'missing.safetensors')), /missing\.safetensors: cannot open .*ENOENT/, 'missing file');
  await expectError(t, SafetensorsFile.open(dir), /not a regular file|cannot/, 'a directory');
  // null metadata and unknown extra fields are accepted, as the reference does
  const ok = await SafetensorsFile.fromBytes(raw('{"__metadata__": null, "a": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4], "extra": 1}}', 4));
  t.same(ok.keys(), ['a']);
  t.same(ok.metadata, {});
});
