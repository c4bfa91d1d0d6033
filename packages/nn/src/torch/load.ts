/**
 * loadTorchCheckpoint: torch.save files (zip format, torch >= 1.6, and the legacy pre-zip format) read
 * without executing anything. See policy.ts for what the unpickler admits.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Backend, BackendName, Tensor } from '@latentdem/tensor';
import { CheckpointError } from './errors.js';
import { GlobalRef, PyDict, PyRecord, PyTuple, describe, unpickle } from './pickle.js';
import type { PyValue } from './pickle.js';
import { makePolicy } from './policy.js';
import { STORAGE_TYPES, StorageRef, TensorRef, materialize } from './storage.js';
import { ZipArchive } from './zip.js';

export interface TorchLoadOptions {
  backend?: BackendName | Backend;
  /**
   * Files that pickle a whole nn.Module: treat module classes as inert records (attributes only; nothing
   * is ever called) and collect their tensors by attribute path. Any other global, e.g. os.system or
   * builtins.eval, is still refused.
   */
  allowModuleRecords?: boolean;
}

const MAX_NESTING = 1000;
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/**
 * A state dict (nested dicts flattened with '.'; a top-level 'state_dict' key unwrapped as CompVis .ckpt
 * files have) as tensors keyed by name.
 */
export async function loadTorchCheckpoint(path: string, opts: TorchLoadOptions = {}): Promise<Map<string, Tensor>> {
  return withCheckpoint(path, opts, async (refs, fail) => {
    // convert storage by storage, dropping each one's host copy after its last tensor
    const uses = new Map<StorageRef, number>();
    for (const r of refs.values()) uses.set(r.storage, (uses.get(r.storage) ?? 0) + 1);
    const out = new Map<string, Tensor>();
    try {
      for (const [name, ref] of refs) {
        out.set(name, await materialize(ref, name, opts.backend, fail));
        const left = uses.get(ref.storage)! - 1;
        uses.set(ref.storage, left);
        if (left === 0) ref.storage.release();
      }
    } catch (e) {
      for (const t of out.values()) t.dispose();
      throw e;
    }
    return out;
  });
}

/** The names, shapes and storage dtypes of a checkpoint's tensors, without converting any data. */
export async function inspectTorchCheckpoint(path: string, opts: Omit<TorchLoadOptions, 'backend'> = {}): Promise<Map<string, { shape: number[]; storageDType: string; location: string }>> {
  return withCheckpoint(path, opts, async (refs) => {
    const out = new Map<string, { shape: number[]; storageDType: string; location: string }>();
    for (const [k, r] of refs) out.set(k, { shape: [...r.size], storageDType: r.storage.dtype, location: r.storage.location });
    return out;
  });
}

/** Opens the file, unpickles it under the allow-list and runs `fn` on the tensors found while the file is open. */
async function withCheckpoint<T>(path: string, opts: TorchLoadOptions, fn: (refs: Map<string, TensorRef>, fail: (d: string) => never) => Promise<T>): Promise<T> {
  const fail = (d: string): never => { throw new CheckpointError(path, d); };
  let fh: FileHandle;
  try { fh = await open(path, 'r'); } catch (e) { return fail(`cannot open: ${(e as Error).message}`); }
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await fh.read(head, 0, 4, 0);
    let root: PyValue;
    if (bytesRead === 4 && head.readUInt32LE(0) === 0x04034b50) root = await readZip(fh, path, opts, fail);
    else if (bytesRead >= 2 && head[0] === 0x80) root = await readLegacy(fh, path, opts, fail);
    else return fail('not a torch checkpoint (neither a zip archive nor a legacy pickle stream)');
    return await fn(collect(root, fail), fail);
  } finally {
    await fh.close();
  }
}

async function readZip(fh: FileHandle, path: string, opts: TorchLoadOptions, fail: (d: string) => never): Promise<PyValue> {
  const zip = await ZipArchive.open(fh, fail);
  const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n) || n === 'data.pkl');
  if (pkls.length !== 1) fail(`zip: expected one <name>/data.pkl entry, found ${pkls.length}`);
  const prefix = pkls[0].slice(0, -'data.pkl'.length);
  const bo = zip.entries.has(`${prefix}byteorder`) ? new TextDecoder().decode(await zip.read(`${prefix}byteorder`)).trim() : 'little';
  if (bo !== 'little') fail(`zip: byteorder ${bo} is not supported`);
  const byKey = new Map<string, StorageRef>();
  const policy = makePolicy({
    file: path,
    allowModuleRecords: !!opts.allowModuleRecords,
    storage(type: GlobalRef, key: string, location: string, numel: number) {
      const known = byKey.get(key);
      if (known) return known;
      const entry = `${prefix}data/${key}`;
      if (!zip.entries.has(entry)) fail(`storage ${key}: no entry ${entry} in the archive`);
      const t = STORAGE_TYPES[type.name];
      // read once: the StorageRef keeps the converted values, the raw bytes can go
      const load = (): Promise<Uint8Array> => zip.read(entry);
      const s = new StorageRef(key, t.dtype, t.size, location, numel, load);
      byKey.set(key, s);
      return s;
    },
  });
  const pkl = await zip.read(pkls[0]);
  const { value } = unpickle(pkl, 0, policy);
  return value;
}

async function readLegacy(fh: FileHandle, path: string, opts: TorchLoadOptions, fail: (d: string) => never): Promise<PyValue> {
  const size = (await fh.stat()).size;
  const buf = new Uint8Array(size);
  const { bytesRead } = await fh.read(buf, 0, size, 0);
  if (bytesRead !== size) fail('short read');
  // the header pickles hold only numbers, strings, dicts: no globals admitted
  const plain = makePolicy({ file: path, allowModuleRecords: false, storage: () => fail('legacy header: unexpected persistent id') });
  const strictHeader = { ...plain, checkGlobal: (m: string, n: string) => fail(`legacy header: global ${m}.${n} refused`) };
  let pos = 0;
  const magic = unpickle(buf, pos, strictHeader); pos = magic.end;
  if (magic.value !== LEGACY_MAGIC && magic.value !== Number(LEGACY_MAGIC)) {
    return fail(`legacy format: bad magic number ${String(magic.value)} (a pre-1.0 tar checkpoint, or not a torch file)`);
  }
  const proto = unpickle(buf, pos, strictHeader); pos = proto.end;
  if (proto.value !== 1001) fail(`legacy format: unsupported protocol version ${String(proto.value)}`);
  const sys = unpickle(buf, pos, strictHeader); pos = sys.end;
  if (sys.value instanceof PyDict && sys.value.map.get('little_endian') === false) fail('legacy format: big-endian files are not supported');

  type Root = { type: GlobalRef; numel: number; location: string; data?: Uint8Array };
  const roots = new Map<string, Root>();
  const views = new Map<string, StorageRef>();
  const policy = makePolicy({
    file: path,
    allowModuleRecords: !!opts.allowModuleRecords,
    storage(type, key, location, numel, view) {
      const t = STORAGE_TYPES[type.name];
      let root = roots.get(key);
      if (!root) { root = { type, numel, location }; roots.set(key, root); }
      const r = root;
      const load = async (): Promise<Uint8Array> => r.data ?? fail(`storage ${key}: its data is missing from the file`);
      if (view === null) {
        // one StorageRef per key, however often the pickle names it, so shared storages convert once
        let s = views.get(key);
        if (!s) { s = new StorageRef(key, t.dtype, t.size, location, numel, load); views.set(key, s); }
        return s;
      }
      // (view_key, offset, view_size): a slice of the root storage
      if (!(view instanceof PyTuple) || view.items.length !== 3) return fail(`storage ${key}: bad view metadata ${describe(view)}`);
      const [vkey, off, vsize] = view.items;
      if (typeof off !== 'number' || typeof vsize !== 'number') return fail(`storage ${key}: bad view metadata`);
      const id = `${key}/${String(vkey)}`;
      let v = views.get(id);
      if (!v) { v = new StorageRef(id, t.dtype, t.size, location, vsize, load, off); views.set(id, v); }
      return v;
    },
  });
  const obj = unpickle(buf, pos, policy); pos = obj.end;
  const keys = unpickle(buf, pos, strictHeader); pos = keys.end;
  if (!Array.isArray(keys.value)) return fail('legacy format: the storage key list is missing');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (const k of keys.value) {
    const root = roots.get(String(k));
    if (!root) return fail(`legacy format: storage ${String(k)} is listed but never referenced`);
    if (pos + 8 > size) fail(`legacy format: storage ${String(k)} is truncated`);
    const n = Number(dv.getBigInt64(pos, true)); pos += 8;
    const es = STORAGE_TYPES[root.type.name].size;
    if (n !== root.numel) fail(`legacy format: storage ${String(k)} has ${n} elements, its id says ${root.numel}`);
    if (pos + n * es > size) fail(`legacy format: storage ${String(k)} is truncated (needs ${n * es} bytes at ${pos}, the file has ${size})`);
    root.data = buf.subarray(pos, pos + n * es);
    pos += n * es;
  }
  return obj.value;
}

/** Tensors by name: a state dict's keys, nested dicts joined with '.', module records by attribute path. */
function collect(root: PyValue, fail: (d: string) => never): Map<string, TensorRef> {
  const out = new Map<string, TensorRef>();
  if (root instanceof PyDict) {
    const sd = root.map.get('state_dict');
    if (sd instanceof PyDict) root = sd;
  }
  if (!(root instanceof PyDict) && !(root instanceof PyRecord)) return fail(`the checkpoint holds ${describe(root)}, not a state dict or module`);
  const seen = new Set<object>();
  const join = (prefix: string, k: string): string => (prefix ? `${prefix}.${k}` : k);
  const keyName = (k: unknown): string | null => (typeof k === 'string' || typeof k === 'number' || typeof k === 'bigint' ? String(k) : null);
  const walk = (v: PyValue, prefix: string): void => {
    if (v instanceof TensorRef) { out.set(prefix, v); return; }
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    if (seen.size > MAX_NESTING) fail(`nesting deeper than ${MAX_NESTING} levels at ${prefix.slice(0, 200)}...`);
    if (v instanceof PyDict) {
      seen.add(v);
      for (const [k, x] of v.map) { const name = keyName(k); if (name !== null) walk(x, join(prefix, name)); }
      seen.delete(v);
    } else if (v instanceof PyRecord) {
      seen.add(v);
      let state = v.state;
      if (state instanceof PyTuple) state = state.items[0] ?? null;
      if (state instanceof PyDict) {
        const m = state.map;
        if (m.has('_parameters') || m.has('_modules') || m.has('_buffers')) {
          // an nn.Module: the names its state_dict() would produce
          const params = m.get('_parameters');
          if (params instanceof PyDict) for (const [k, x] of params.map) if (x instanceof TensorRef) out.set(join(prefix, String(k)), x);
          const nonPersistent = new Set<unknown>();
          const np = m.get('_non_persistent_buffers_set');
          if (np && typeof np === 'object' && 'items' in np && Array.isArray(np.items)) for (const x of np.items) nonPersistent.add(x);
          const bufs = m.get('_buffers');
          if (bufs instanceof PyDict) for (const [k, x] of bufs.map) if (x instanceof TensorRef && !nonPersistent.has(k)) out.set(join(prefix, String(k)), x);
          const mods = m.get('_modules');
          if (mods instanceof PyDict) for (const [k, x] of mods.map) { const name = keyName(k); if (name !== null) walk(x, join(prefix, name)); }
        } else {
          for (const [k, x] of m) { const name = keyName(k); if (name !== null) walk(x, join(prefix, name)); }
        }
      }
      seen.delete(v);
    }
  };
  walk(root, '');
  return out;
}
