/**
 * The allow-list: which globals a torch checkpoint may name, and the pure data builders that stand in
 * for the few calls a state dict needs. Nothing here resolves a name to code or calls anything.
 */
import { CheckpointError } from './errors.js';
import { GlobalRef, PyDict, PyOpaque, PyRecord, PySet, PyTuple, describe } from './pickle.js';
import type { PicklePolicy, PyValue } from './pickle.js';
import { STORAGE_TYPES, StorageRef, TensorRef } from './storage.js';

const norm = (module: string): string => (module === '__builtin__' ? 'builtins' : module === 'copy_reg' ? 'copyreg' : module);

const TORCH_DTYPES = ['float32', 'float', 'float16', 'half', 'bfloat16', 'float64', 'double', 'int64', 'long', 'int32', 'int', 'int16', 'int8', 'uint8', 'bool'];

/** Globals that may be referenced without being called (storage classes in persistent ids, tensor types, dtypes). */
const REFERENCE_ONLY = new Set<string>([
  ...Object.keys(STORAGE_TYPES).map((n) => `torch.${n}`),
  'torch.Tensor',
  'torch.nn.parameter.Parameter',
  // classes PyTorch Lightning .ckpt files use as dict keys (callbacks state); referenced, never called
  'pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint',
  'pytorch_lightning.callbacks.ModelCheckpoint',
  'lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint',
  'numpy.ndarray',
  ...TORCH_DTYPES.map((n) => `torch.${n}`),
]);

/** Roots of module paths that are never admitted, even as inert record classes. */
const DENY_ROOTS = new Set([
  'os', 'posix', 'nt', 'subprocess', 'sys', 'builtins', 'shutil', 'socket', 'importlib', 'runpy', 'code', 'codeop',
  'pickle', '_pickle', 'cPickle', 'marshal', 'ctypes', 'pty', 'multiprocessing', 'webbrowser', 'types', 'functools',
  'operator', 'codecs', '_codecs', 'io', '_io', 'pathlib', 'tempfile', 'signal', 'asyncio', 'threading', '_thread',
  'urllib', 'http', 'requests', 'copyreg', 'inspect', 'gc', 'pdb', 'bdb', 'timeit', 'trace', 'commands', 'popen2',
  'platform', 'glob', 'zipimport', 'pkgutil', 'site', 'distutils', 'setuptools', 'pip', 'ftplib', 'smtplib',
  'telnetlib', 'xmlrpc', 'ssl', 'select', 'selectors', 'mmap', 'resource', 'fcntl', 'numpy', 'dill', 'joblib',
  'cloudpickle', 'yaml', 'torch', '_posixsubprocess', '_winapi', 'posixpath', 'ntpath', 'sysconfig', 'zipfile',
  'tarfile', 'sqlite3', 'email', 'logging', 'warnings', 'atexit',
]);
/** Names that are never a record class, whatever module they come from. */
const DENY_NAMES = new Set([
  'system', 'popen', 'Popen', 'eval', 'exec', 'execfile', 'compile', 'getattr', 'setattr', 'delattr', 'globals',
  'locals', 'vars', 'open', 'input', 'apply', 'spawn', 'call', 'check_call', 'check_output', 'run', 'load', 'loads',
  'reload', 'import_module', 'breakpoint', 'exit', 'quit', 'remove', 'unlink', 'rmtree', 'kill',
]);

const NUMPY_CALLS = ['numpy.dtype', 'numpy.core.multiarray.scalar', 'numpy.core.multiarray._reconstruct', 'numpy._core.multiarray.scalar', 'numpy._core.multiarray._reconstruct'];

/** A numpy scalar, dtype or array from training metadata: kept opaque (never part of a state dict). */
export class NumpyValue extends PyOpaque {
  constructor(readonly fn: string, readonly args: PyValue[]) { super(); }
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface PolicyHooks {
  file: string;
  allowModuleRecords: boolean;
  /** ('storage', StorageClass, key, location, numel[, view]) -> the storage it names. */
  storage(storageType: GlobalRef, key: string, location: string, numel: number, view: PyValue): StorageRef;
}

const fail = (file: string, detail: string): never => {
  throw new CheckpointError(file, detail);
};

const int = (v: PyValue, what: string, f: (d: string) => never): number => {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  return f(`${what} must be an integer, got ${describe(v)}`);
};
const intList = (v: PyValue, what: string, f: (d: string) => never): number[] => {
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : f(`${what} must be a tuple, got ${describe(v)}`);
  return items.map((x, i) => {
    const n = int(x, `${what}[${i}]`, f);
    if (n < 0) f(`${what}[${i}] is negative (${n})`);
    return n;
  });
};

export function makePolicy(h: PolicyHooks): PicklePolicy {
  const f = (detail: string): never => fail(h.file, detail);

  const rebuildTensor = (fn: string, args: PyValue[]): TensorRef => {
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof StorageRef)) return f(`${fn}: expected a storage, got ${describe(storage ?? null)}`);
    const sz = intList(size ?? null, `${fn} size`, f);
    const st = intList(stride ?? null, `${fn} stride`, f);
    if (sz.length !== st.length) f(`${fn}: size [${sz}] and stride [${st}] differ in length`);
    return new TensorRef(storage, int(offset ?? null, `${fn} storage_offset`, f), sz, st);
  };
  const rebuildParameter = (fn: string, args: PyValue[]): TensorRef => {
    const data = args[0];
    if (!(data instanceof TensorRef)) return f(`${fn}: expected a tensor, got ${describe(data ?? null)}`);
    return data.asParameter();
  };

  /** The pure data builders standing in for the calls a state dict needs. */
  const SAFE_CALLS: Record<string, (args: PyValue[]) => PyValue> = {
    'collections.OrderedDict': (args) => {
      const d = new PyDict();
      if (args.length === 0) return d;
      const src = args[0];
      const pairs = src instanceof PyTuple ? src.items : Array.isArray(src) ? src : f(`collections.OrderedDict: unsupported argument ${describe(src)}`);
      for (const p of pairs) {
        if (!(p instanceof PyTuple) || p.items.length !== 2) f('collections.OrderedDict: items must be (key, value) pairs');
        d.map.set((p as PyTuple).items[0], (p as PyTuple).items[1]);
      }
      return d;
    },
    'builtins.set': (args) => setOf(args),
    'builtins.frozenset': (args) => setOf(args),
    'torch.Size': (args) => new PyTuple(intList(args[0] ?? new PyTuple([]), 'torch.Size', f)),
    '_codecs.encode': (args) => {
      const [s, enc] = args;
      if (typeof s !== 'string' || (enc !== 'latin1' && enc !== 'latin-1')) return f(`_codecs.encode: only (str, 'latin1') is accepted, got (${describe(s ?? null)}, ${String(enc)})`);
      const out = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c > 255) f('_codecs.encode: character outside latin1');
        out[i] = c;
      }
      return out;
    },
    // numpy values in training metadata (Lightning callback scores, optimizer extras): recorded, never decoded
    ...Object.fromEntries(NUMPY_CALLS.map((n) => [n, (args: PyValue[]) => new NumpyValue(n, args)])),
    'torch._utils._rebuild_tensor': (args) => rebuildTensor('torch._utils._rebuild_tensor', args),
    'torch._utils._rebuild_tensor_v2': (args) => rebuildTensor('torch._utils._rebuild_tensor_v2', args),
    'torch._utils._rebuild_parameter': (args) => rebuildParameter('torch._utils._rebuild_parameter', args),
    'torch._utils._rebuild_parameter_with_state': (args) => rebuildParameter('torch._utils._rebuild_parameter_with_state', args),
    'torch._tensor._rebuild_from_type_v2': (args) => {
      // (func, new_type, args, state): only the plain tensor rebuild into Tensor / Parameter
      const [fn, type, inner] = args;
      if (!(fn instanceof GlobalRef) || fn.full !== 'torch._utils._rebuild_tensor_v2') return f(`torch._tensor._rebuild_from_type_v2: refusing to call ${describe(fn ?? null)}`);
      if (!(type instanceof GlobalRef) || (type.full !== 'torch.Tensor' && type.full !== 'torch.nn.parameter.Parameter')) return f(`torch._tensor._rebuild_from_type_v2: refusing type ${describe(type ?? null)}`);
      if (!(inner instanceof PyTuple)) return f('torch._tensor._rebuild_from_type_v2: arguments must be a tuple');
      const t = rebuildTensor('torch._utils._rebuild_tensor_v2', inner.items);
      return type.full === 'torch.Tensor' ? t : t.asParameter();
    },
  };
  const setOf = (args: PyValue[]): PySet => {
    if (args.length === 0) return new PySet([]);
    const src = args[0];
    if (src instanceof PyTuple) return new PySet([...src.items]);
    if (Array.isArray(src)) return new PySet([...src]);
    return f(`set: unsupported argument ${describe(src)}`);
  };

  const recordable = (module: string, name: string): boolean => {
    if (!h.allowModuleRecords) return false;
    if (!IDENT.test(name) || name.startsWith('__') || DENY_NAMES.has(name)) return false;
    const parts = module.split('.');
    if (!parts.every((p) => IDENT.test(p))) return false;
    if (parts[0] === 'torch') return module.startsWith('torch.nn.modules.') && module.split('.').length >= 4;
    return !DENY_ROOTS.has(parts[0]);
  };
  const recordOnly = new Set(['copyreg._reconstructor', 'builtins.object']);

  return {
    fail: f,
    checkGlobal(module, name) {
      const full = `${norm(module)}.${name}`;
      if (full in SAFE_CALLS || REFERENCE_ONLY.has(full)) return;
      if (h.allowModuleRecords && (recordOnly.has(full) || recordable(norm(module), name))) return;
      f(`global ${module}.${name} is not on the allow-list${h.allowModuleRecords ? '' : ' (files that pickle a whole module need allowModuleRecords)'}; refused, nothing was executed`);
    },
    call(fn, args) {
      if (fn instanceof GlobalRef) {
        const full = `${norm(fn.module)}.${fn.name}`;
        const safe = SAFE_CALLS[full];
        if (safe) return safe(args);
        if (full === 'copyreg._reconstructor' && h.allowModuleRecords) {
          const [cls, base] = args;
          if (cls instanceof GlobalRef && recordable(norm(cls.module), cls.name) && base instanceof GlobalRef && `${norm(base.module)}.${base.name}` === 'builtins.object') {
            return new PyRecord(cls, []);
          }
          return f(`copyreg._reconstructor of ${describe(cls ?? null)} (base ${describe(base ?? null)}) refused; nothing was executed`);
        }
      }
      return f(`refusing to call ${describe(fn)}: only tensor rebuilds, OrderedDict and set may be called; nothing was executed`);
    },
    construct(cls, args) {
      if (cls instanceof GlobalRef) {
        const full = `${norm(cls.module)}.${cls.name}`;
        if (full === 'collections.OrderedDict') return new PyDict();
        if (full === 'builtins.set' || full === 'builtins.frozenset') return new PySet([]);
        if (recordable(norm(cls.module), cls.name)) return new PyRecord(cls, args);
      }
      return f(`refusing to construct ${describe(cls)}${h.allowModuleRecords ? '' : ' (files that pickle a whole module need allowModuleRecords)'}; nothing was executed`);
    },
    persistentLoad(pid) {
      if (!(pid instanceof PyTuple) || pid.items[0] !== 'storage') return f(`unsupported persistent id ${describe(pid)}`);
      const [, type, key, location, numel, view] = pid.items;
      if (!(type instanceof GlobalRef) || type.module !== 'torch' || !(type.name in STORAGE_TYPES)) return f(`unsupported storage type ${describe(type ?? null)}`);
      if (typeof key !== 'string' && typeof key !== 'number') return f('storage key must be a string');
      if (typeof location !== 'string') return f(`storage ${key}: location must be a string`);
      const n = int(numel ?? null, `storage ${key} numel`, f);
      if (n < 0) f(`storage ${key}: negative numel`);
      return h.storage(type, String(key), location, n, view ?? null);
    },
  };
}
