/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors).
 *
 * Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then the byte buffer;
 * offsets are relative to the buffer start.
 *
 * Reading is streamed by byte range: `open` reads only the 8-byte length and the header; `read` reads one
 * tensor's byte range, in chunks, straight into the destination typed array (on the cpu backend, into the
 * tensor's own storage), so loading never holds the whole file, nor a second copy of a tensor.
 *
 * Validation follows the reference (Rust) implementation, and is strict in the same places:
 * - N <= 100,000,000 and 8 + N <= file size; the header is valid UTF-8 (a BOM is not skipped), starts with
 *   `{` and is a JSON object (trailing spaces, the reference's padding, are fine);
 * - no key appears twice in any JSON object of the header (JSON.parse would silently keep the last one);
 * - each entry is an object with a supported dtype (F32, F16, BF16, I32, I64; other safetensors dtypes such as
 *   F64 or BOOL are named and refused when the file is opened), a shape of non-negative safe integers, and
 *   data_offsets of two safe integers with begin <= end <= buffer size and end - begin == numel * itemsize;
 *   unknown extra fields in an entry are ignored (as serde does);
 * - the byte ranges, sorted by offset, cover the buffer exactly: no overlap, no hole and no trailing bytes
 *   (the reference refuses such files too, so every file it writes passes, and none it would refuse does);
 * - `__metadata__` is absent, null, or an object of string values.
 * Known leniency: a number written as `1.0` in a shape or offset is read as the integer 1 (JSON.parse cannot
 * tell them apart; serde would refuse it).
 * Every failure is a SafetensorsError naming the file and, where there is one, the key.
 */
import { open as fsOpen, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { LatentdemError, getBackend, tensor, zeros } from '@latentdem/tensor';
import type { Backend, BackendName, Tensor, TypedArray } from '@latentdem/tensor';
import { bf16ToF32, f16ToF32, f32ToF16 } from './half.js';

/** A safetensors file that cannot be read, validated or written; the message names the file (and key). */
export class SafetensorsError extends LatentdemError {
  readonly file: string;
  readonly key: string | undefined;
  constructor(file: string, detail: string, opts: { key?: string; cause?: unknown } = {}) {
    super('safetensors', `${file}${opts.key !== undefined ? ` [${showKey(opts.key)}]` : ''}: ${detail}`);
    this.file = file;
    this.key = opts.key;
    if (opts.cause !== undefined) this.cause = opts.cause;
  }
}

export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64';
export interface SafetensorsEntry { dtype: SafetensorsDType; shape: number[]; dataOffsets: [number, number] }

/** The header size limit of the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;

const ITEMSIZE: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 };
/** Every dtype the format defines; the ones we do not read are refused by name. */
const KNOWN_DTYPES = new Set([
  'BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'I16', 'U16', 'F16', 'BF16',
  'I32', 'U32', 'F32', 'F64', 'I64', 'U64', 'C64',
]);
const METADATA_KEY = '__metadata__';
/** Bytes per read call for direct reads, and per scratch chunk for converted reads. */
const DIRECT_CHUNK = 64 << 20;
const CONVERT_CHUNK = 16 << 20;

function showKey(key: string): string {
  const s = JSON.stringify(key);
  return s.length > 120 ? `${s.slice(0, 117)}..."` : s;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${showKey(v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

if (endianness() !== 'LE') {
  // Typed arrays use the host byte order; every platform Node supports today is little-endian.
  throw new LatentdemError('safetensors', 'this reader assumes a little-endian host');
}

// ---------------------------------------------------------------------------------------------------------
// byte sources

interface ByteSource {
  readonly size: number;
  /** Fills `dst` with the bytes at [position, position + dst.length), or throws. */
  readInto(dst: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

class FileSource implements ByteSource {
  constructor(private readonly fh: FileHandle, readonly size: number, private readonly name: string) {}
  async readInto(dst: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < dst.length) {
      const len = Math.min(dst.length - done, DIRECT_CHUNK);
      const { bytesRead } = await this.fh.read(dst, done, len, position + done);
      if (bytesRead === 0) throw new SafetensorsError(this.name, `unexpected end of file at byte ${position + done} (was the file truncated after it was opened?)`);
      done += bytesRead;
    }
  }
  close(): Promise<void> { return this.fh.close(); }
}

class BytesSource implements ByteSource {
  constructor(private readonly bytes: Uint8Array) {}
  get size(): number { return this.bytes.length; }
  async readInto(dst: Uint8Array, position: number): Promise<void> {
    dst.set(this.bytes.subarray(position, position + dst.length));
  }
  async close(): Promise<void> {}
}

// ---------------------------------------------------------------------------------------------------------
// header validation

/**
 * Finds a key that appears twice in one JSON object. `text` must already be valid JSON (JSON.parse accepted
 * it), so a small state machine suffices: strings are skipped as units, and a string is a key when it
 * follows `{` or `,` inside an object.
 */
function findDuplicateKey(text: string): { key: string; parent: string | undefined } | null {
  const stack: (Set<string> | null)[] = [];
  const keyOf: (string | undefined)[] = [];
  let lastKey: string | undefined;
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      let escaped = false;
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) { escaped = true; i++; continue; }
        if (d === 0x22) break;
      }
      if (expectKey) {
        const raw = text.slice(start, i + 1);
        const key = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        const set = stack[stack.length - 1]!;
        if (set.has(key)) return { key, parent: keyOf[keyOf.length - 1] };
        set.add(key);
        lastKey = key;
        expectKey = false;
      }
    } else if (c === 0x7b /* { */) {
      keyOf.push(stack.length === 0 ? undefined : lastKey);
      stack.push(new Set());
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      keyOf.push(lastKey);
      stack.push(null);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      keyOf.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = stack.length > 0 && stack[stack.length - 1] !== null;
    }
  }
  return null;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function checkIntList(name: string, field: string, key: string, v: unknown, count?: number): number[] {
  if (!Array.isArray(v)) throw new SafetensorsError(name, `${field} must be a list of integers, got ${describe(v)}`, { key });
  if (count !== undefined && v.length !== count) throw new SafetensorsError(name, `${field} must have ${count} entries, got ${v.length}`, { key });
  const out: number[] = [];
  for (const x of v) {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
      throw new SafetensorsError(name, `${field} must hold non-negative integers below 2^53, got ${describe(x)} in ${showKey(JSON.stringify(v))}`, { key });
    }
    out.push(x + 0); // -0 -> 0
  }
  return out;
}

function numelOf(name: string, key: string, shape: number[]): number {
  if (shape.includes(0)) return 0;
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) throw new SafetensorsError(name, `shape [${shape.join(',')}] has more than 2^53 elements`, { key });
  }
  return n;
}

interface ParsedHeader { headerBytes: number; metadata: Record<string, string>; entries: Map<string, SafetensorsEntry> }

async function readHeader(src: ByteSource, name: string): Promise<ParsedHeader> {
  if (src.size < 8) throw new SafetensorsError(name, `file is ${src.size} bytes, shorter than the 8-byte header length`);
  const lenBytes = new Uint8Array(8);
  await src.readInto(lenBytes, 0);
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(name, `header length ${n64} is larger than the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(n64);
  if (8 + n > src.size) throw new SafetensorsError(name, `header length ${n} runs past the end of the ${src.size}-byte file`);
  if (n === 0) throw new SafetensorsError(name, 'header is empty');
  const bytes = new Uint8Array(n);
  await src.readInto(bytes, 8);
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (e) {
    throw new SafetensorsError(name, 'header is not valid UTF-8', { cause: e });
  }
  if (text.charCodeAt(0) !== 0x7b) throw new SafetensorsError(name, `header must start with '{', got ${showKey(text.slice(0, 16))}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(name, `header is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isObject(json)) throw new SafetensorsError(name, `header must be a JSON object, got ${describe(json)}`);
  const dup = findDuplicateKey(text);
  if (dup) {
    throw new SafetensorsError(name, dup.parent === undefined ? 'key appears twice in the header' : `field ${showKey(dup.key)} appears twice in ${showKey(dup.parent)}`, { key: dup.parent ?? dup.key });
  }

  const bufferBytes = src.size - 8 - n;
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  const list: [string, SafetensorsEntry][] = [];
  for (const [key, v] of Object.entries(json)) {
    if (key === METADATA_KEY) {
      if (v === null) continue;
      if (!isObject(v)) throw new SafetensorsError(name, `__metadata__ must be an object of strings, got ${describe(v)}`, { key });
      for (const [mk, mv] of Object.entries(v)) {
        if (typeof mv !== 'string') throw new SafetensorsError(name, `__metadata__ value ${showKey(mk)} must be a string, got ${describe(mv)}`, { key });
        metadata[mk] = mv;
      }
      continue;
    }
    if (!isObject(v)) throw new SafetensorsError(name, `entry must be an object {dtype, shape, data_offsets}, got ${describe(v)}`, { key });
    const dtype = v.dtype;
    if (typeof dtype !== 'string') throw new SafetensorsError(name, `dtype must be a string, got ${describe(dtype)}`, { key });
    if (!Object.hasOwn(ITEMSIZE, dtype)) {
      throw new SafetensorsError(name, KNOWN_DTYPES.has(dtype)
        ? `unsupported dtype ${dtype} (supported: F32, F16, BF16, I32, I64)`
        : `unknown dtype ${showKey(dtype)}`, { key });
    }
    const dt = dtype as SafetensorsDType;
    const shape = checkIntList(name, 'shape', key, v.shape);
    const [begin, end] = checkIntList(name, 'data_offsets', key, v.data_offsets, 2) as [number, number];
    if (begin > end) throw new SafetensorsError(name, `data_offsets [${begin}, ${end}]: begin is after end`, { key });
    if (end > bufferBytes) throw new SafetensorsError(name, `data_offsets [${begin}, ${end}] run past the ${bufferBytes}-byte data buffer`, { key });
    const bytesWanted = numelOf(name, key, shape) * ITEMSIZE[dt];
    if (end - begin !== bytesWanted) {
      throw new SafetensorsError(name, `data_offsets [${begin}, ${end}] span ${end - begin} bytes, but ${dt} [${shape.join(',')}] needs ${bytesWanted}`, { key });
    }
    list.push([key, { dtype: dt, shape, dataOffsets: [begin, end] }]);
  }

  list.sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let covered = 0;
  let prev: string | undefined;
  for (const [key, e] of list) {
    const [begin] = e.dataOffsets;
    if (begin < covered) throw new SafetensorsError(name, `data_offsets [${e.dataOffsets.join(', ')}] overlap those of ${showKey(prev!)}, which end at ${covered}`, { key });
    if (begin > covered) throw new SafetensorsError(name, `bytes [${covered}, ${begin}) of the data buffer belong to no tensor (a hole before this one)`, { key });
    covered = e.dataOffsets[1];
    prev = key;
  }
  if (covered !== bufferBytes) throw new SafetensorsError(name, `the data buffer is ${bufferBytes} bytes but the tensors cover only ${covered} (trailing bytes)`);
  return { headerBytes: n, metadata, entries: new Map(list) };
}

// ---------------------------------------------------------------------------------------------------------
// reading

/** The cpu storage's own typed array, when `t` is a fresh contiguous cpu tensor of `n` elements. */
function hostStorage(t: Tensor, n: number): TypedArray | null {
  const data = (t.storage as unknown as { data?: unknown }).data;
  if (t.backend.name !== 'cpu' || t.offset !== 0) return null;
  if ((data instanceof Float32Array || data instanceof Int32Array) && data.length === n) return data;
  return null;
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** An open safetensors file: the validated header, and tensors read one at a time by byte range. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Entries in data-offset (file) order. */
  readonly entries: ReadonlyMap<string, SafetensorsEntry>;
  private src: ByteSource | null;
  private readonly dataStart: number;

  private constructor(path: string, src: ByteSource, header: ParsedHeader) {
    this.path = path;
    this.src = src;
    this.metadata = header.metadata;
    this.entries = header.entries;
    this.dataStart = 8 + header.headerBytes;
  }

  /** Opens `path`, reading and validating only the 8-byte length and the header. */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await fsOpen(path, 'r');
    } catch (e) {
      throw new SafetensorsError(path, `cannot open (${(e as Error).message})`, { cause: e });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new SafetensorsError(path, 'not a regular file');
      const src = new FileSource(fh, st.size, path);
      return new SafetensorsFile(path, src, await readHeader(src, path));
    } catch (e) {
      await fh.close().catch(() => undefined);
      if (e instanceof SafetensorsError) throw e;
      throw new SafetensorsError(path, `cannot read (${(e as Error).message})`, { cause: e });
    }
  }

  /** Opens an in-memory file (tests, fuzzing, data already fetched); `name` stands for the path in messages. */
  static async fromBytes(bytes: Uint8Array, name = '<bytes>'): Promise<SafetensorsFile> {
    const src = new BytesSource(bytes);
    return new SafetensorsFile(name, src, await readHeader(src, name));
  }

  /** Tensor names, in file order. */
  keys(): string[] { return [...this.entries.keys()]; }

  /**
   * Reads one tensor by byte range: F32/F16/BF16 -> float32 Tensor; I32 -> int32; I64 -> int32 with a range
   * check (SafetensorsError if a value does not fit).
   */
  async read(key: string, opts: { backend?: BackendName | Backend } = {}): Promise<Tensor> {
    const e = this.entries.get(key);
    if (!e) throw new SafetensorsError(this.path, `no such tensor (the file has ${this.entries.size})`, { key });
    const src = this.src;
    if (!src) throw new SafetensorsError(this.path, 'file is closed', { key });
    const n = e.shape.includes(0) ? 0 : e.shape.reduce((a, b) => a * b, 1);
    const isInt = e.dtype === 'I32' || e.dtype === 'I64';
    let out: Tensor | null = null;
    try {
      const backend = getBackend(opts.backend);
      // On the cpu backend, read straight into the new tensor's storage; elsewhere into a host array to upload.
      let dst: TypedArray | null = null;
      if (n > 0 && backend.name === 'cpu') {
        out = zeros(e.shape, { dtype: isInt ? 'int32' : 'float32', backend });
        dst = hostStorage(out, n);
        if (!dst) { out.dispose(); out = null; }
      }
      dst ??= isInt ? new Int32Array(n) : new Float32Array(n);
      await this.fill(src, key, e, dst);
      out ??= tensor(dst, { shape: e.shape, backend });
      return out;
    } catch (err) {
      out?.dispose();
      if (err instanceof SafetensorsError) throw err;
      if (err instanceof LatentdemError) throw err;
      throw new SafetensorsError(this.path, `cannot read ${e.dtype} [${e.shape.join(',')}] (${(err as Error).message})`, { key, cause: err });
    }
  }

  /** One tensor's values as a host array (Float32Array for F32/F16/BF16, Int32Array for I32/I64), not a Tensor. */
  async readHost(key: string): Promise<Float32Array | Int32Array> {
    const e = this.entries.get(key);
    if (!e) throw new SafetensorsError(this.path, `no such tensor (the file has ${this.entries.size})`, { key });
    const src = this.src;
    if (!src) throw new SafetensorsError(this.path, 'file is closed', { key });
    const n = e.shape.includes(0) ? 0 : e.shape.reduce((a, b) => a * b, 1);
    const dst = e.dtype === 'I32' || e.dtype === 'I64' ? new Int32Array(n) : new Float32Array(n);
    try {
      await this.fill(src, key, e, dst);
    } catch (err) {
      if (err instanceof LatentdemError) throw err;
      throw new SafetensorsError(this.path, `cannot read ${e.dtype} [${e.shape.join(',')}] (${(err as Error).message})`, { key, cause: err });
    }
    return dst;
  }

  private async fill(src: ByteSource, key: string, e: SafetensorsEntry, dst: TypedArray): Promise<void> {
    const start = this.dataStart + e.dataOffsets[0];
    const n = dst.length;
    if (e.dtype === 'F32' || e.dtype === 'I32') {
      await src.readInto(bytesOf(dst), start);
      return;
    }
    const item = ITEMSIZE[e.dtype];
    const perChunk = Math.max(1, Math.floor(CONVERT_CHUNK / item));
    const scratch = new ArrayBuffer(Math.min(n, perChunk) * item);
    for (let i = 0; i < n; i += perChunk) {
      const m = Math.min(perChunk, n - i);
      const chunk = new Uint8Array(scratch, 0, m * item);
      await src.readInto(chunk, start + i * item);
      if (e.dtype === 'F16') {
        dst.set(f16ToF32(new Uint16Array(scratch, 0, m)), i);
      } else if (e.dtype === 'BF16') {
        dst.set(bf16ToF32(new Uint16Array(scratch, 0, m)), i);
      } else {
        // I64: little-endian (lo, hi) word pairs; a value fits int32 iff hi is lo's sign extension.
        const w = new Int32Array(scratch, 0, 2 * m);
        for (let j = 0; j < m; j++) {
          const lo = w[2 * j];
          if (w[2 * j + 1] !== (lo >> 31)) {
            const v = new BigInt64Array(scratch, 8 * j, 1)[0];
            throw new SafetensorsError(this.path, `I64 value ${v} at index ${i + j} does not fit in int32`, { key });
          }
          dst[i + j] = lo;
        }
      }
    }
  }

  /** Closes the file; later reads throw. Idempotent. */
  async close(): Promise<void> {
    const src = this.src;
    this.src = null;
    if (src) await src.close();
  }
}

/** Reads every tensor (or those `filter` keeps) of a safetensors file, one byte range at a time. */
export async function loadSafetensors(
  path: string,
  opts: { backend?: BackendName | Backend; filter?: (key: string) => boolean } = {},
): Promise<Map<string, Tensor>> {
  const f = await SafetensorsFile.open(path);
  const out = new Map<string, Tensor>();
  try {
    for (const key of f.keys()) {
      if (opts.filter && !opts.filter(key)) continue;
      out.set(key, await f.read(key, { backend: opts.backend }));
    }
    return out;
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  } finally {
    await f.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// writing

const utf8Compare = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/**
 * Writes F32 (default) or F16 (float tensors converted; int32 tensors written as I32); refuses to overwrite an
 * existing file unless overwrite: true. Header keys are sorted (UTF-8 byte order); the header is padded with
 * spaces to a multiple of 8 bytes as the reference implementation does. The data is laid out like the
 * reference: by item size (largest first), then by name, so every tensor is aligned to its item size. Tensors
 * are fetched and written one at a time. With overwrite: true the file is written beside the target and renamed
 * over it at the end, so a failed write leaves the old file intact.
 */
export async function saveSafetensors(
  path: string,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  opts: { dtype?: 'F32' | 'F16'; metadata?: Record<string, string>; overwrite?: boolean } = {},
): Promise<void> {
  const floatType = opts.dtype ?? 'F32';
  if (floatType !== 'F32' && floatType !== 'F16') throw new SafetensorsError(path, `cannot write dtype ${String(floatType)} (F32 or F16)`);
  const list = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const plan: { key: string; t: Tensor; dtype: SafetensorsDType; bytes: number; begin: number }[] = [];
  for (const [key, t] of list) {
    if (key === METADATA_KEY) throw new SafetensorsError(path, `${METADATA_KEY} is reserved and cannot name a tensor`, { key });
    if (t.isDisposed) throw new SafetensorsError(path, 'tensor was disposed', { key });
    const dtype: SafetensorsDType = t.dtype === 'int32' ? 'I32' : floatType;
    plan.push({ key, t, dtype, bytes: t.size * ITEMSIZE[dtype], begin: 0 });
  }
  const byName = [...plan].sort((a, b) => utf8Compare(a.key, b.key));
  for (let i = 1; i < byName.length; i++) {
    if (byName[i].key === byName[i - 1].key) throw new SafetensorsError(path, 'key given twice', { key: byName[i].key });
  }
  const layout = [...plan].sort((a, b) => ITEMSIZE[b.dtype] - ITEMSIZE[a.dtype] || utf8Compare(a.key, b.key));
  let offset = 0;
  for (const p of layout) { p.begin = offset; offset += p.bytes; }

  const parts: string[] = [];
  if (opts.metadata) {
    const meta = Object.entries(opts.metadata).sort((a, b) => utf8Compare(a[0], b[0]));
    for (const [k, v] of meta) {
      if (typeof v !== 'string') throw new SafetensorsError(path, `metadata value ${showKey(k)} must be a string, got ${describe(v)}`, { key: METADATA_KEY });
    }
    if (meta.length > 0) parts.push(`${JSON.stringify(METADATA_KEY)}:{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  }
  for (const p of byName) {
    parts.push(`${JSON.stringify(p.key)}:{"dtype":"${p.dtype}","shape":[${p.t.shape.join(',')}],"data_offsets":[${p.begin},${p.begin + p.bytes}]}`);
  }
  let header = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const pad = (8 - (header.length % 8)) % 8;
  if (pad) header = Buffer.concat([header, Buffer.alloc(pad, 0x20)]);
  if (header.length > MAX_HEADER_BYTES) throw new SafetensorsError(path, `header would be ${header.length} bytes, over the ${MAX_HEADER_BYTES}-byte limit`);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length), 0);

  const overwrite = opts.overwrite === true;
  const target = overwrite ? join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}.tmp`) : path;
  let fh: FileHandle;
  try {
    fh = await fsOpen(target, overwrite ? 'w' : 'wx');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new SafetensorsError(path, 'file exists; pass { overwrite: true } to replace it', { cause: e });
    throw new SafetensorsError(path, `cannot create (${(e as Error).message})`, { cause: e });
  }
  let ok = false;
  let current: string | undefined;
  try {
    await writeAll(fh, prefix);
    await writeAll(fh, header);
    for (const p of layout) {
      current = p.key;
      if (p.bytes === 0) continue;
      const data = await p.t.data();
      if (data.length !== p.t.size) throw new SafetensorsError(path, `backend returned ${data.length} values for ${p.t.size} elements`, { key: p.key });
      if (p.dtype === 'F16') {
        for (let i = 0; i < data.length; i += CONVERT_CHUNK / 2) {
          await writeAll(fh, bytesOf(f32ToF16(data.subarray(i, i + CONVERT_CHUNK / 2) as Float32Array)));
        }
      } else {
        await writeAll(fh, bytesOf(data));
      }
    }
    current = undefined;
    await fh.close();
    if (overwrite) await rename(target, path);
    ok = true;
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, `cannot write (${(e as Error).message})`, { key: current, cause: e });
  } finally {
    if (!ok) {
      await fh.close().catch(() => undefined);
      await unlink(target).catch(() => undefined);
    }
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(bytes.length - done, DIRECT_CHUNK));
    done += bytesWritten;
  }
}
