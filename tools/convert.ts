/**
 * Converts a checkpoint to latentdem safetensors (original CompVis key layout).
 *
 *   node --conditions=latentdem-src --import tsx tools/convert.ts IN OUT.safetensors
 *        [--dtype f32|f16] [--layout compvis|diffusers] [--overwrite] [--allow-module-records] [--verbose]
 *
 * IN: .ckpt/.pt/.pth (read by the code-free torch reader) or .safetensors. --layout says which key layout IN
 * uses (detected when left out); diffusers keys are renamed through packages/nn/src/keymaps. Prints "from -> to"
 * per key (a summary with counts when there are many). Exit codes: 0 ok, 1 usage / I/O error, 2 refused
 * checkpoint (a global outside the allow-list, a corrupted file).
 */
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';
import { reshape, setBackend } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { CheckpointError, DIFFUSERS_PREFIX, detectDiffusersModel, loadSafetensors, loadTorchCheckpoint, mapDiffusersKeys, saveSafetensors } from '@latentdem/nn';
import type { KeyMapping } from '@latentdem/nn';

export interface ConvertOptions {
  dtype?: 'f32' | 'f16';
  layout?: 'compvis' | 'diffusers';
  overwrite?: boolean;
  allowModuleRecords?: boolean;
  verbose?: boolean;
  log?: (line: string) => void;
}

class UsageError extends Error {}

const USAGE = 'usage: convert IN OUT.safetensors [--dtype f32|f16] [--layout compvis|diffusers] [--overwrite] [--allow-module-records] [--verbose]';

/** Which layout a set of keys is in: diffusers when its prefixes or block names show, else compvis. */
export function detectLayout(keys: readonly string[]): 'compvis' | 'diffusers' {
  if (keys.some((k) => k.startsWith('model.diffusion_model.') || k.startsWith('first_stage_model.') || k.startsWith('cond_stage_model.'))) return 'compvis';
  if (keys.some((k) => Object.values(DIFFUSERS_PREFIX).some((p) => k.startsWith(p))) || detectDiffusersModel(keys)) return 'diffusers';
  return 'compvis';
}

export async function convert(input: string, output: string, o: ConvertOptions = {}): Promise<KeyMapping[]> {
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  if (existsSync(output) && !o.overwrite) throw new UsageError(`${output} exists; pass --overwrite to replace it`);
  const tensors = /\.safetensors$/i.test(input)
    ? await loadSafetensors(input)
    : await loadTorchCheckpoint(input, { allowModuleRecords: o.allowModuleRecords });
  try {
    const keys = [...tensors.keys()];
    const layout = o.layout ?? detectLayout(keys);
    const mapping: KeyMapping[] = layout === 'diffusers' ? mapDiffusersKeys(keys) : keys.map((k) => ({ from: k, to: k, model: null, conv1x1: false }));
    const out = new Map<string, Tensor>();
    const extra: Tensor[] = [];
    for (const m of mapping) {
      if (out.has(m.to)) throw new UsageError(`two keys map to ${m.to} (the second is ${m.from})`);
      let t = tensors.get(m.from)!;
      if (m.conv1x1 && t.shape.length === 2) { t = reshape(t, [...t.shape, 1, 1]); extra.push(t); }
      out.set(m.to, t);
    }
    const renamed = mapping.filter((m) => m.from !== m.to);
    log(`${input}: ${mapping.length} tensors, layout ${layout}, ${renamed.length} renamed`);
    if (mapping.length <= 200 || o.verbose) {
      for (const m of mapping) log(m.from === m.to ? `  ${m.from} (kept)` : `  ${m.from} -> ${m.to}${m.conv1x1 ? ' (linear -> 1x1 conv)' : ''}`);
    } else {
      const counts = new Map<string, number>();
      for (const m of mapping) counts.set(m.model ?? 'other', (counts.get(m.model ?? 'other') ?? 0) + 1);
      for (const [model, n] of counts) log(`  ${model}: ${n} keys`);
      for (const m of renamed.slice(0, 10)) log(`  ${m.from} -> ${m.to}`);
      if (renamed.length > 10) log(`  ... and ${renamed.length - 10} more renames (--verbose lists all)`);
    }
    const dtype = o.dtype === 'f16' ? 'F16' : 'F32';
    await saveSafetensors(output, out, { dtype, overwrite: !!o.overwrite, metadata: { format: 'pt', source: basename(input), source_layout: layout } });
    log(`wrote ${out.size} tensors (${dtype}) to ${output}`);
    for (const t of extra) t.dispose();
    return mapping;
  } finally {
    for (const t of tensors.values()) if (!t.isDisposed) t.dispose();
  }
}

export async function main(argv: string[]): Promise<number> {
  const pos: string[] = [];
  const o: ConvertOptions = {};
  try {
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i];
      if (a === '--overwrite') o.overwrite = true;
      else if (a === '--allow-module-records') o.allowModuleRecords = true;
      else if (a === '--verbose') o.verbose = true;
      else if (a === '--dtype' || a === '--layout') {
        const v = argv[++i];
        if (a === '--dtype') { if (v !== 'f32' && v !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got ${v}`); o.dtype = v; }
        else { if (v !== 'compvis' && v !== 'diffusers') throw new UsageError(`--layout must be compvis or diffusers, got ${v}`); o.layout = v; }
      } else if (a === '-h' || a === '--help') { process.stdout.write(`${USAGE}\n`); return 0; }
      else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
      else pos.push(a);
    }
    if (pos.length !== 2) throw new UsageError('expected IN and OUT');
    await setBackend('cpu'); // conversion is host work
    await convert(pos[0], pos[1], o);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) { process.stderr.write(`convert: ${e.message}\n${USAGE}\n`); return 1; }
    if (e instanceof CheckpointError) {
      const hint = /allowModuleRecords/.test(e.message) ? ' (if this file pickles a whole trusted module, --allow-module-records reads its tensors as inert records)' : '';
      process.stderr.write(`convert: refused: ${e.message}${hint}\n`);
      return 2;
    }
    process.stderr.write(`convert: ${(e as Error).message}\n`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
