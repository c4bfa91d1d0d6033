/** Loading a module's weights straight from a safetensors file, one tensor at a time. */
import { noGrad, tensor, writeData } from '@latentdem/tensor';
import { StateDictError } from './errors.js';
import type { LoadResult, Module } from './module.js';
import { SafetensorsFile } from './safetensors.js';

export interface LoadWeightsOptions {
  /**
   * Where the module lives in the file (e.g. 'model.diffusion_model.' in a full SD checkpoint). Keys outside
   * the prefix belong to other models and are ignored, never "unexpected".
   */
  prefix?: string;
  /** Missing or unexpected keys under the prefix are an error (default true). Mis-shaped keys always are. */
  strict?: boolean;
}

/**
 * Copies the tensors of a safetensors file into `module`'s parameters and persistent buffers, on the module's
 * own backend. Every key and shape is checked against the header before anything is read, so a file that does
 * not fit fails with one StateDictError listing every problem and leaves the module untouched. Tensors are read
 * and copied one at a time: peak memory is the module plus its largest tensor, not the file.
 */
export async function loadWeights(module: Module, source: string | SafetensorsFile, opts: LoadWeightsOptions = {}): Promise<LoadResult> {
  const prefix = opts.prefix ?? '';
  const strict = opts.strict ?? true;
  const file = typeof source === 'string' ? await SafetensorsFile.open(source) : source;
  try {
    const own = module.stateDict();
    const inFile = new Map<string, string>();
    for (const key of file.keys()) if (key.startsWith(prefix)) inFile.set(key.slice(prefix.length), key);
    const missing: string[] = [];
    const mismatched: string[] = [];
    const plan: [string, string][] = [];
    for (const [name, dst] of own) {
      const key = inFile.get(name);
      if (key === undefined) { missing.push(prefix + name); continue; }
      const e = file.entries.get(key)!;
      const isInt = e.dtype === 'I32' || e.dtype === 'I64';
      const sameShape = e.shape.length === dst.shape.length && e.shape.every((n, i) => n === dst.shape[i]);
      if (!sameShape || isInt !== (dst.dtype === 'int32')) {
        mismatched.push(`${key}: checkpoint [${e.shape.join(',')}] ${e.dtype}, model [${dst.shape.join(',')}] ${dst.dtype}`);
      } else plan.push([name, key]);
    }
    const unexpected = [...inFile.keys()].filter((n) => !own.has(n)).map((n) => prefix + n);
    if (mismatched.length || (strict && (missing.length || unexpected.length))) {
      throw new StateDictError(`loadWeights(${file.path})`, strict ? missing : [], strict ? unexpected : [], mismatched);
    }
    for (const [name, key] of plan) {
      const dst = own.get(name)!;
      const values = await file.readHost(key);
      // Straight into the parameter's storage: no device temporary per tensor.
      if (dst.isContiguous && dst.offset === 0 && dst.storage.size === dst.size) writeData(dst, values);
      else noGrad(() => { const v = tensor(values, { shape: dst.shape, backend: dst.backend }); dst.assign(v); v.dispose(); });
    }
    return { missing, unexpected };
  } finally {
    if (typeof source === 'string') await file.close();
  }
}
