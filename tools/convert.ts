/**
 * Converts a checkpoint to latentdem safetensors (original CompVis key layout).
 *
 *   node --conditions=latentdem-src --import tsx tools/convert.ts IN OUT.safetensors
 *        [--dtype f32|f16] [--layout compvis|diffusers] [--ema] [--overwrite] [--allow-module-records] [--verbose]
 *
 * IN: .ckpt/.pt/.pth (read by the code-free torch reader) or .safetensors. --layout says which key layout IN
 * uses (detected when left out); diffusers keys are renamed through packages/nn/src/keymaps. Prints "from -> to"
 * per key (a summary with counts when there are many).
 *
 * EMA weights: CompVis-style checkpoints (SD .ckpt, Zero123) also store an exponential moving average of the
 * UNet as `model_ema.*` buffers, one per `model.diffusion_model.*` parameter, named with the dots removed:
 * LitEma(self.model) registers `name.replace('.','')` for each named parameter of the DiffusionWrapper
 * (CompVis/stable-diffusion@21f890f ldm/modules/ema.py:16-21, ldm/models/diffusion/ddpm.py:88-90; identical in
 * cvlab-columbia/zero123@f426883 zero123/ldm/modules/ema.py:16-21, ddpm.py:91-95), so
 * `model.diffusion_model.input_blocks.1.1.norm.weight` has the twin `model_ema.diffusion_modelinput_blocks11normweight`,
 * plus the scalars `model_ema.decay` and `model_ema.num_updates`. Sampling inside `model.ema_scope()` (Zero123's
 * demo, gradio_new.py:79) copies them over the UNet (ema.py copy_to). `--ema` does the same here: each
 * `model.diffusion_model.*` tensor is replaced by its twin; it fails if the file has no `model_ema.*` tensors, if
 * a UNet tensor has no twin (or a twin of another shape), or if a `model_ema.*` tensor matches no UNet tensor.
 * Without `--ema` the `model_ema.*` tensors are dropped (they would double the UNet's share of the file).
 *
 * Exit codes: 0 ok, 1 usage / I/O error, 2 refused
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
  /** Replace `model.diffusion_model.*` by the `model_ema.*` twins (see the header); without it they are dropped. */
  ema?: boolean;
  layout?: 'compvis' | 'diffusers';
  overwrite?: boolean;
  allowModuleRecords?: boolean;
  verbose?: boolean;
  log?: (line: string) => void;
}

class UsageError extends Error {}

const USAGE = 'usage: convert IN OUT.safetensors [--dtype f32|f16] [--layout compvis|diffusers] [--ema] [--overwrite] [--allow-module-records] [--verbose]';

/** A checkpoint that cannot be converted as asked (exit 1, like an I/O error). */
export class ConvertError extends Error {}

const UNET_PREFIX = 'model.diffusion_model.';
const EMA_PREFIX = 'model_ema.';
/** LitEma's own buffers (ema.py:12-14), not weights. */
const EMA_SCALARS = new Set(['model_ema.decay', 'model_ema.num_updates']);

/**
 * The `model_ema.*` name LitEma gives a `model.diffusion_model.*` parameter: LitEma wraps the DiffusionWrapper
 * (`self.model`), so the parameter's name there is `diffusion_model.<rest>`, and ema.py:19 removes its dots.
 */
export function emaKeyFor(unetKey: string): string {
  if (!unetKey.startsWith(UNET_PREFIX)) throw new Error(`emaKeyFor: ${unetKey} is not a ${UNET_PREFIX}* key`);
  return EMA_PREFIX + unetKey.slice('model.'.length).replace(/\./g, '');
}

const listSome = (keys: readonly string[], n = 5): string => `${keys.slice(0, n).join(', ')}${keys.length > n ? ` and ${keys.length - n} more` : ''}`;

/**
 * Applies (ema) or drops the `model_ema.*` tensors of a CompVis-keyed map in place; returns the log line, or
 * null when there is nothing to say. Throws ConvertError (before changing anything) when --ema cannot be honoured.
 */
export function applyEma(out: Map<string, Tensor>, ema: boolean): string | null {
  const emaKeys = [...out.keys()].filter((k) => k.startsWith(EMA_PREFIX));
  const weights = emaKeys.filter((k) => !EMA_SCALARS.has(k));
  if (!ema) {
    for (const k of emaKeys) out.delete(k);
    return emaKeys.length ? `dropped ${emaKeys.length} ${EMA_PREFIX}* tensors (the UNet's EMA weights; --ema uses them in place of ${UNET_PREFIX}*)` : null;
  }
  if (!weights.length) throw new ConvertError(`--ema: the checkpoint has no ${EMA_PREFIX}* weights${emaKeys.length ? ` (only ${emaKeys.join(', ')})` : ''}; convert without --ema`);
  const unet = [...out.keys()].filter((k) => k.startsWith(UNET_PREFIX));
  if (!unet.length) throw new ConvertError(`--ema: the checkpoint has ${weights.length} ${EMA_PREFIX}* weights but no ${UNET_PREFIX}* tensors to replace`);
  const twin = new Map<string, string>(); // ema key -> unet key
  const missing: string[] = []; const mismatched: string[] = []; const clashes: string[] = [];
  for (const k of unet) {
    const e = emaKeyFor(k);
    if (twin.has(e)) { clashes.push(`${twin.get(e)!} and ${k} -> ${e}`); continue; }
    twin.set(e, k);
    const t = out.get(e);
    if (!t) missing.push(`${k} (no ${e})`);
    else if (t.shape.join(',') !== out.get(k)!.shape.join(',')) mismatched.push(`${e} [${t.shape.join(',')}] vs ${k} [${out.get(k)!.shape.join(',')}]`);
  }
  const orphans = weights.filter((k) => !twin.has(k));
  const problems = [
    clashes.length ? `${clashes.length} UNet keys share a dotless EMA name: ${listSome(clashes)}` : '',
    missing.length ? `${missing.length} of ${unet.length} UNet tensors have no EMA twin: ${listSome(missing)}` : '',
    mismatched.length ? `${mismatched.length} EMA twins differ in shape: ${listSome(mismatched)}` : '',
    orphans.length ? `${orphans.length} ${EMA_PREFIX}* tensors match no UNet tensor: ${listSome(orphans)}` : '',
  ].filter(Boolean);
  if (problems.length) throw new ConvertError(`--ema: ${problems.join('; ')}`);
  for (const [e, k] of twin) out.set(k, out.get(e)!);
  for (const k of emaKeys) out.delete(k);
  const skipped = emaKeys.filter((k) => EMA_SCALARS.has(k));
  return `--ema: replaced ${twin.size} ${UNET_PREFIX}* tensors by their ${EMA_PREFIX}* twins${skipped.length ? ` (skipped ${skipped.join(', ')})` : ''}`;
}

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
    const emaLine = applyEma(out, !!o.ema);
    const renamed = mapping.filter((m) => m.from !== m.to);
    log(`${input}: ${mapping.length} tensors, layout ${layout}, ${renamed.length} renamed`);
    if (mapping.length <= 200 || o.verbose) {
      const kept = (k: string): string => (!k.startsWith(EMA_PREFIX) ? 'kept' : o.ema ? (EMA_SCALARS.has(k) ? 'skipped' : 'copied over its UNet twin') : 'dropped');
      for (const m of mapping) log(m.from === m.to ? `  ${m.from} (${kept(m.from)})` : `  ${m.from} -> ${m.to}${m.conv1x1 ? ' (linear -> 1x1 conv)' : ''}`);
    } else {
      const counts = new Map<string, number>();
      for (const m of mapping) counts.set(m.model ?? 'other', (counts.get(m.model ?? 'other') ?? 0) + 1);
      for (const [model, n] of counts) log(`  ${model}: ${n} keys`);
      for (const m of renamed.slice(0, 10)) log(`  ${m.from} -> ${m.to}`);
      if (renamed.length > 10) log(`  ... and ${renamed.length - 10} more renames (--verbose lists all)`);
    }
    if (emaLine) log(emaLine);
    const dtype = o.dtype === 'f16' ? 'F16' : 'F32';
    await saveSafetensors(output, out, { dtype, overwrite: !!o.overwrite, metadata: { format: 'pt', source: basename(input), source_layout: layout, ...(o.ema ? { unet_weights: 'model_ema' } : {}) } });
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
      else if (a === '--ema') o.ema = true;
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
    if (e instanceof ConvertError) { process.stderr.write(`convert: ${e.message}\n`); return 1; }
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
