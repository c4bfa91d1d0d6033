/**
 * Fuzzes the safetensors reader: >= 10,000 deterministic mutations (byte flips, truncations, header-length
 * edits, JSON field edits, header text splices) of a few valid files. Every file must either open and read
 * completely, or fail with a SafetensorsError; any other exception, or a slow (hanging) case, fails the test.
 */
import t from 'tap';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { tensor } from '@latentdem/tensor';
import { SafetensorsError, SafetensorsFile, saveSafetensors } from '../src/safetensors.js';
import { buildFile, bytesOfArray } from './safetensors-build.js';

const ITERATIONS = 20_000;
const SEED = 0x5afe7e45;
const SLOW_MS = 5000;

/** mulberry32: a small deterministic PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

class Raw { constructor(readonly text: string) {} }
type Pair = [string, unknown];

/** Serializes pairs in order (duplicates allowed); a Raw value is pasted as is. */
function ser(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (Array.isArray(v) && (v as unknown as { pairs?: boolean }).pairs) {
    return `{${(v as Pair[]).map(([k, x]) => `${JSON.stringify(k)}:${ser(x)}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
const objectOf = (pairs: Pair[]): Pair[] => Object.assign(pairs, { pairs: true });

function withHeader(header: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

function split(file: Uint8Array): { header: string; data: Uint8Array } {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  return { header: new TextDecoder().decode(file.subarray(8, 8 + n)), data: file.subarray(8 + n) };
}

const root = process.cwd();
const dir = await mkdtemp(join(tmpdir(), 'latentdem-st-fuzz-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

async function baseFiles(): Promise<Uint8Array[]> {
  const hand = buildFile([
    { name: 'f32', dtype: 'F32', shape: [2, 3], data: bytesOfArray(Float32Array.of(1, -2, 3.5, 0, 1e-3, -7)) },
    { name: 'f16', dtype: 'F16', shape: [4], data: bytesOfArray(Uint16Array.of(0x3c00, 0xc000, 0x7bff, 0x0001)) },
    { name: 'bf16', dtype: 'BF16', shape: [2, 1], data: bytesOfArray(Uint16Array.of(0x3f80, 0xc040)) },
    { name: 'i32', dtype: 'I32', shape: [3], data: bytesOfArray(Int32Array.of(-1, 0, 2147483647)) },
    { name: 'i64', dtype: 'I64', shape: [2], data: bytesOfArray(BigInt64Array.of(-5n, 10499n)) },
    { name: 'scalar', dtype: 'F32', shape: [], data: bytesOfArray(Float32Array.of(42)) },
    { name: 'empty', dtype: 'F32', shape: [0, 3], data: new Uint8Array(0) },
  ], { metadata: { format: 'pt', who: 'fuzz' } });
  const saved = join(dir, 'saved.safetensors');
  await saveSafetensors(saved, {
    'layer.0.weight': tensor(Float32Array.from({ length: 12 }, (_, i) => i / 7 - 1), { shape: [3, 4] }),
    'layer.0.bias': tensor(Float32Array.of(0.5, -0.25, 3)),
    'ids': tensor(Int32Array.of(3, 1, 4, 1, 5), { shape: [5] }),
  }, { dtype: 'F16', metadata: { step: '7' } });
  const tiny = buildFile([{ name: 'x', dtype: 'I64', shape: [1], data: bytesOfArray(BigInt64Array.of(2147483647n)) }], { pad: 5 });
  return [hand, new Uint8Array(await readFile(saved)), tiny, new Uint8Array(await readFile(resolve(root, '../shared/fixtures/dncnn_small/model.safetensors')))];
}

const DTYPES: unknown[] = ['F32', 'F16', 'BF16', 'I32', 'I64', 'F64', 'BOOL', 'U8', 'f32', '', 'F32 ', 7, null, [], {}];
const INTS = [0, 1, 2, 3, 4, 7, 8, -1, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e300, -0];

function mutateJson(r: () => number, header: string, dataLen: number): string | null {
  let obj: Record<string, unknown>;
  try { obj = JSON.parse(header) as Record<string, unknown>; } catch { return null; }
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const int = (): number => (r() < 0.5 ? pick(INTS) : Math.floor(r() * (dataLen + 16)));
  const pairs: Pair[] = Object.entries(obj).map(([k, v]) => [k, isObj(v) ? objectOf(Object.entries(v)) : v]);
  if (pairs.length === 0) return null;
  const edits = 1 + Math.floor(r() * 2);
  for (let e = 0; e < edits && pairs.length > 0; e++) {
    const i = Math.floor(r() * pairs.length);
    const [key, val] = pairs[i];
    const fields = Array.isArray(val) && (val as unknown as { pairs?: boolean }).pairs ? (val as Pair[]) : null;
    const set = (name: string, v: unknown): void => {
      if (!fields) return;
      const f = fields.find((p) => p[0] === name);
      if (f) f[1] = v; else fields.push([name, v]);
    };
    const get = (name: string): unknown => fields?.find((p) => p[0] === name)?.[1];
    switch (Math.floor(r() * 12)) {
      case 0: set('dtype', pick(DTYPES)); break;
      case 1: {
        const s = get('shape');
        const opts: unknown[] = [[], [0], [int()], [int(), int()], null, 'abc', ['2'], [[1]], 5];
        if (Array.isArray(s) && s.length) opts.push([...s].reverse(), [...s, 1], s.slice(1), s.map((d: number) => d * 2), s.map(() => int()));
        set('shape', pick(opts));
        break;
      }
      case 2: {
        const o = get('data_offsets');
        const [b, en] = Array.isArray(o) ? (o as number[]) : [0, 0];
        set('data_offsets', pick([[en, b], [b + 1, en + 1], [b, en + 2], [0, en], [b], [b, en, 0], [String(b), en], [-1, en], [b, 2 ** 60], null, [1.5, en], [int(), int()], [b - 4, en - 4], [b, dataLen], [dataLen, dataLen]]));
        break;
      }
      case 3: if (fields) fields.splice(Math.floor(r() * fields.length), 1); break;
      case 4: pairs[i] = [key, pick([null, 1, 'x', [], {}, true, objectOf([])])]; break;
      case 5: pairs.push([pick([key, `${key}.copy`, '', '__metadata__', '\u0000', '\ud800'])!, val]); break; // duplicate / overlap
      case 6: pairs.push(['__metadata__', pick([{ a: 1 }, [], 'x', null, { a: 'b' }, {}, { '': '' }, { a: ['b'] }])]); break;
      case 7: set(pick(['extra', 'dtype', 'shape', 'data_offsets']), pick([1, 'F32', [1], null])); if (fields && r() < 0.5) fields.push(['dtype', pick(DTYPES)]); break;
      case 8: pairs.splice(i, 1); break; // a hole, or an empty header
      case 9: pairs.push([`z${i}`, objectOf([['dtype', pick(DTYPES)], ['shape', [int()]], ['data_offsets', [int(), int()]]])]); break;
      case 10: pairs[i] = [pick([key.toUpperCase(), key + ' ', `${key}\\`, 'a'.repeat(300)]), val]; break;
      default: { const j = Math.floor(r() * pairs.length); [pairs[i], pairs[j]] = [pairs[j], pairs[i]]; }
    }
  }
  return `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${ser(v)}`).join(',')}}${' '.repeat(Math.floor(r() * 9))}`;
}
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const SPLICE = '{}[]":,0123456789-.eE \\u\u00ff\ud800a';

function mutate(r: () => number, base: Uint8Array): { bytes: Uint8Array; kind: string } {
  let b: Uint8Array = base.slice();
  const kinds: string[] = [];
  const rounds = r() < 0.8 ? 1 : 1 + Math.floor(r() * 3);
  for (let k = 0; k < rounds; k++) {
    const headerEnd = b.length < 8 ? b.length : 8 + Math.min(Number(new DataView(b.buffer).getBigUint64(0, true) & 0xffffffffn), b.length);
    switch (Math.floor(r() * 7)) {
      case 0: { // byte flips, mostly in the length and header
        const n = 1 + Math.floor(r() * 4);
        for (let i = 0; i < n && b.length; i++) {
          const pos = r() < 0.8 ? Math.floor(r() * Math.min(headerEnd, b.length)) : Math.floor(r() * b.length);
          if (r() < 0.5) b[pos] ^= 1 << Math.floor(r() * 8); else b[pos] = Math.floor(r() * 256);
        }
        kinds.push('flip');
        break;
      }
      case 1: b = b.slice(0, Math.floor(r() * b.length)); kinds.push('truncate'); break;
      case 2: { // append bytes
        const extra = new Uint8Array(1 + Math.floor(r() * 16)).map(() => Math.floor(r() * 256));
        const out = new Uint8Array(b.length + extra.length); out.set(b); out.set(extra, b.length); b = out;
        kinds.push('extend');
        break;
      }
      case 3: { // header length edits
        if (b.length < 8) break;
        const n = new DataView(b.buffer).getBigUint64(0, true);
        const len = BigInt(b.length);
        const opts = [0n, n - 1n, n + 1n, n + BigInt(Math.floor(r() * 33) - 16), len - 8n, len, len - 7n, 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n, 100_000_001n, 100_000_000n, BigInt(Math.floor(r() * 2 ** 32))];
        let v = opts[Math.floor(r() * opts.length)];
        v = ((v % 2n ** 64n) + 2n ** 64n) % 2n ** 64n;
        new DataView(b.buffer).setBigUint64(0, v, true);
        kinds.push('length');
        break;
      }
      case 4: case 5: { // JSON field edits, with a consistent length
        if (b.length < 8 || headerEnd > b.length) break;
        const { header, data } = split(b);
        const h = mutateJson(r, header, data.length);
        if (h === null) break;
        b = withHeader(new TextEncoder().encode(h), data);
        kinds.push('json');
        break;
      }
      default: { // splice characters into / out of the header text, keeping the length consistent
        if (b.length < 8 || headerEnd > b.length) break;
        const { header, data } = split(b);
        const pos = Math.floor(r() * (header.length + 1));
        const h = r() < 0.5
          ? header.slice(0, pos) + SPLICE[Math.floor(r() * SPLICE.length)] + header.slice(pos)
          : header.slice(0, pos) + header.slice(pos + 1 + Math.floor(r() * 3));
        b = withHeader(new TextEncoder().encode(h), data);
        kinds.push('splice');
      }
    }
  }
  return { bytes: b, kind: kinds.join('+') || 'none' };
}

async function readAll(f: SafetensorsFile): Promise<void> {
  try {
    for (const k of f.keys()) {
      const x = await f.read(k);
      await x.data();
      x.dispose();
    }
  } finally {
    await f.close();
  }
}

t.test(`fuzz: ${ITERATIONS} mutated files give only SafetensorsError`, async (t) => {
  const bases = await baseFiles();
  for (const b of bases) await readAll(await SafetensorsFile.fromBytes(b, 'base')); // the bases are valid
  const r = rng(SEED);
  const started = performance.now();
  const bad: string[] = [];
  const kinds = new Map<string, { ok: number; err: number }>();
  const messages = new Map<string, number>();
  let slowest = 0;
  let viaFile = 0;
  for (let it = 0; it < ITERATIONS; it++) {
    const base = bases[it % 10 === 9 ? 3 : it % 3]; // the 160 KB fixture one time in ten
    const { bytes, kind } = mutate(r, base);
    const k = kinds.get(kind) ?? { ok: 0, err: 0 };
    kinds.set(kind, k);
    const t0 = performance.now();
    try {
      if (it % 100 === 0) {
        // the byte-range file path too
        const p = join(dir, `m${it}.safetensors`);
        await writeFile(p, bytes);
        viaFile++;
        try { await readAll(await SafetensorsFile.open(p)); } finally { await rm(p, { force: true }); }
      } else {
        await readAll(await SafetensorsFile.fromBytes(bytes, `fuzz#${it}`));
      }
      k.ok++;
    } catch (e) {
      if (e instanceof SafetensorsError) {
        k.err++;
        const m = e.message.replace(/^safetensors: [^:]*?(\[.*?\])?: /, '').replace(/"[^"]*"|\d+/g, '#').slice(0, 40);
        messages.set(m, (messages.get(m) ?? 0) + 1);
      } else {
        bad.push(`iteration ${it} (${kind}): ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
      }
    }
    const dt = performance.now() - t0;
    slowest = Math.max(slowest, dt);
    if (dt > SLOW_MS) bad.push(`iteration ${it} (${kind}) took ${dt.toFixed(0)} ms`);
  }
  const seconds = (performance.now() - started) / 1000;
  let ok = 0; let err = 0;
  for (const v of kinds.values()) { ok += v.ok; err += v.err; }
  t.comment(`${ITERATIONS} mutations (${viaFile} through files) in ${seconds.toFixed(1)} s, slowest ${slowest.toFixed(1)} ms: ${ok} read fine, ${err} SafetensorsError, ${bad.length} other`);
  t.comment(`by kind: ${[...kinds].sort((a, b) => b[1].ok + b[1].err - a[1].ok - a[1].err).slice(0, 12).map(([k, v]) => `${k} ${v.ok}/${v.err}`).join(', ')}`);
  t.comment(`${messages.size} distinct error shapes; most common: ${[...messages].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([m, n]) => `${n}x "${m}"`).join('; ')}`);
  t.same(bad.slice(0, 20), [], 'nothing but SafetensorsError, and nothing slow');
  t.equal(ok + err, ITERATIONS);
  t.ok(ITERATIONS >= 10_000, 'at least 10,000 mutations');
  t.ok(ok > ITERATIONS * 0.02 && err > ITERATIONS * 0.5, 'mutations produce both valid and invalid files');
  t.ok(messages.size >= 20, `many different validation failures (${messages.size})`);
});
