/** torch storages (raw little-endian bytes of one dtype) and the strided tensor rebuild over them. */
import { tensor } from '@latentdem/tensor';
import type { Backend, BackendName, Tensor } from '@latentdem/tensor';
import { bf16ToF32, f16ToF32 } from '../half.js';
import { PyOpaque } from './pickle.js';

export type StorageDType = 'f32' | 'f16' | 'bf16' | 'f64' | 'i64' | 'i32' | 'i16' | 'i8' | 'u8' | 'bool';

/** The storage classes we accept, by their pickle name (`torch.<Name>`), and their element sizes. */
export const STORAGE_TYPES: Readonly<Record<string, { dtype: StorageDType; size: number }>> = {
  FloatStorage: { dtype: 'f32', size: 4 },
  HalfStorage: { dtype: 'f16', size: 2 },
  BFloat16Storage: { dtype: 'bf16', size: 2 },
  DoubleStorage: { dtype: 'f64', size: 8 },
  LongStorage: { dtype: 'i64', size: 8 },
  IntStorage: { dtype: 'i32', size: 4 },
  ShortStorage: { dtype: 'i16', size: 2 },
  CharStorage: { dtype: 'i8', size: 1 },
  ByteStorage: { dtype: 'u8', size: 1 },
  BoolStorage: { dtype: 'bool', size: 1 },
};

/** Host values of a storage: floats as float32, integers as int32 (int64 kept as bigint until checked). */
export type HostData = { kind: 'float'; data: Float32Array } | { kind: 'int'; data: Int32Array } | { kind: 'i64'; data: BigInt64Array };

/** A storage referenced by a persistent id; its bytes are read on demand and cached. */
export class StorageRef extends PyOpaque {
  private host: HostData | null = null;
  constructor(
    readonly key: string,
    readonly dtype: StorageDType,
    readonly elementSize: number,
    readonly location: string,
    readonly numel: number,
    private readonly load: () => Promise<Uint8Array>,
    /** For legacy storage views: the element offset into the root storage. */
    readonly viewOffset = 0,
  ) { super(); }

  /** Drops the converted values (a later data() reads them again). */
  release(): void { this.host = null; }

  async data(fail: (d: string) => never): Promise<HostData> {
    if (this.host) return this.host;
    const raw = await this.load();
    const start = this.viewOffset * this.elementSize;
    const nbytes = this.numel * this.elementSize;
    if (start + nbytes > raw.byteLength) fail(`storage ${this.key} holds ${raw.byteLength} bytes, needs ${start + nbytes} (${this.numel} x ${this.dtype})`);
    // copy into an aligned buffer so typed views are legal
    const bytes = new Uint8Array(nbytes);
    bytes.set(raw.subarray(start, start + nbytes));
    const buf = bytes.buffer;
    let h: HostData;
    switch (this.dtype) {
      case 'f32': h = { kind: 'float', data: new Float32Array(buf) }; break;
      case 'f16': h = { kind: 'float', data: f16ToF32(new Uint16Array(buf)) }; break;
      case 'bf16': h = { kind: 'float', data: bf16ToF32(new Uint16Array(buf)) }; break;
      case 'f64': h = { kind: 'float', data: Float32Array.from(new Float64Array(buf)) }; break;
      case 'i64': h = { kind: 'i64', data: new BigInt64Array(buf) }; break;
      case 'i32': h = { kind: 'int', data: new Int32Array(buf) }; break;
      case 'i16': h = { kind: 'int', data: Int32Array.from(new Int16Array(buf)) }; break;
      case 'i8': h = { kind: 'int', data: Int32Array.from(new Int8Array(buf)) }; break;
      case 'u8': case 'bool': h = { kind: 'int', data: Int32Array.from(bytes) }; break;
    }
    this.host = h;
    return h;
  }
}

/** A tensor described by `_rebuild_tensor_v2`: a strided view into a storage. Materialised later. */
export class TensorRef extends PyOpaque {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: number[],
    readonly stride: number[],
    readonly isParameter = false,
  ) { super(); }
  asParameter(): TensorRef { return new TensorRef(this.storage, this.offset, this.size, this.stride, true); }
}

/** The most elements one tensor may have (a typed array's practical limit). */
export const MAX_ELEMENTS = 2 ** 31 - 1;

/** Gathers the strided view into a contiguous array and makes a tensor of it (int64 range-checked to int32). */
export async function materialize(ref: TensorRef, name: string, backend: BackendName | Backend | undefined, fail: (d: string) => never): Promise<Tensor> {
  const { size, stride, offset } = ref;
  const n = size.reduce((a, b) => a * b, 1);
  if (n > MAX_ELEMENTS) fail(`tensor ${name}: ${n} elements ([${size.join(',')}]) is more than one tensor may hold (${MAX_ELEMENTS})`);
  let maxIndex = offset;
  for (let d = 0; d < size.length; d++) if (size[d] > 0) maxIndex += (size[d] - 1) * stride[d];
  if (n > 0 && (offset < 0 || maxIndex >= ref.storage.numel)) {
    fail(`tensor ${name}: view (offset ${offset}, size [${size.join(',')}], stride [${stride.join(',')}]) reaches element ${maxIndex} of a ${ref.storage.numel}-element storage`);
  }
  const host = await ref.storage.data(fail);
  let contiguous = true;
  let expect = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expect) { contiguous = false; break; }
    expect *= size[d];
  }
  const gather = <A extends { length: number; [i: number]: number | bigint }>(src: A, dst: A): void => {
    if (contiguous) {
      if (ArrayBuffer.isView(src) && ArrayBuffer.isView(dst)) { (dst as unknown as Float32Array).set((src as unknown as Float32Array).subarray(offset, offset + n)); return; }
      for (let i = 0; i < n; i++) dst[i] = src[offset + i];
      return;
    }
    const nd = size.length;
    const idx = new Array<number>(nd).fill(0);
    let p = offset;
    for (let i = 0; i < n; i++) {
      dst[i] = src[p];
      for (let d = nd - 1; d >= 0; d--) {
        idx[d]++; p += stride[d];
        if (idx[d] < size[d]) break;
        p -= idx[d] * stride[d]; idx[d] = 0;
      }
    }
  };
  let out: Float32Array | Int32Array;
  if (host.kind === 'float') { out = new Float32Array(n); gather(host.data, out); }
  else if (host.kind === 'int') { out = new Int32Array(n); gather(host.data, out); }
  else {
    const tmp = new BigInt64Array(n);
    gather(host.data, tmp);
    out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const v = tmp[i];
      if (v > 2147483647n || v < -2147483648n) fail(`tensor ${name}: int64 value ${v} at element ${i} does not fit int32`);
      out[i] = Number(v);
    }
  }
  return tensor(out, { shape: size, backend });
}
