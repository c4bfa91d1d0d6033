/**
 * Stable Diffusion v1 (and zero123, which shares the layout): diffusers key names -> the original CompVis
 * names. The tables follow the rules of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
 * (re-expressed as data; same pairs, same order, since the substring replacements are order dependent).
 * Each pair is [compvis, diffusers].
 */

export type Pair = readonly [compvis: string, diffusers: string];

/** Where each model lives inside a full CompVis checkpoint. */
export const COMPVIS_PREFIX = {
  unet: 'model.diffusion_model.',
  vae: 'first_stage_model.',
  clip: 'cond_stage_model.transformer.',
} as const;
/** Where each model lives inside a combined diffusers state dict (as some single-file exports have it). */
export const DIFFUSERS_PREFIX = { unet: 'unet.', vae: 'vae.', clip: 'text_encoder.' } as const;
export type SdModel = keyof typeof COMPVIS_PREFIX;

// ----------------------------------------------------------------------------------------------- UNet

/** Whole-key renames. */
export const UNET_EXACT: readonly Pair[] = [
  ['time_embed.0.weight', 'time_embedding.linear_1.weight'],
  ['time_embed.0.bias', 'time_embedding.linear_1.bias'],
  ['time_embed.2.weight', 'time_embedding.linear_2.weight'],
  ['time_embed.2.bias', 'time_embedding.linear_2.bias'],
  ['input_blocks.0.0.weight', 'conv_in.weight'],
  ['input_blocks.0.0.bias', 'conv_in.bias'],
  ['out.0.weight', 'conv_norm_out.weight'],
  ['out.0.bias', 'conv_norm_out.bias'],
  ['out.2.weight', 'conv_out.weight'],
  ['out.2.bias', 'conv_out.bias'],
];

/** Inside resnets (applied to keys whose diffusers name contains "resnets"). */
export const UNET_RESNET_PARTS: readonly Pair[] = [
  ['in_layers.0', 'norm1'],
  ['in_layers.2', 'conv1'],
  ['out_layers.0', 'norm2'],
  ['out_layers.3', 'conv2'],
  ['emb_layers.1', 'time_emb_proj'],
  ['skip_connection', 'conv_shortcut'],
];

/** Block prefixes, in the order the reference script applies them. */
export const UNET_LAYER_PARTS: readonly Pair[] = (() => {
  const m: Pair[] = [];
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 2; j++) {
      m.push([`input_blocks.${3 * i + j + 1}.0.`, `down_blocks.${i}.resnets.${j}.`]);
      if (i < 3) m.push([`input_blocks.${3 * i + j + 1}.1.`, `down_blocks.${i}.attentions.${j}.`]);
    }
    for (let j = 0; j < 3; j++) {
      m.push([`output_blocks.${3 * i + j}.0.`, `up_blocks.${i}.resnets.${j}.`]);
      if (i > 0) m.push([`output_blocks.${3 * i + j}.1.`, `up_blocks.${i}.attentions.${j}.`]);
    }
    if (i < 3) {
      m.push([`input_blocks.${3 * (i + 1)}.0.op.`, `down_blocks.${i}.downsamplers.0.conv.`]);
      m.push([`output_blocks.${3 * i + 2}.${i === 0 ? 1 : 2}.`, `up_blocks.${i}.upsamplers.0.`]);
    }
  }
  m.push(['middle_block.1.', 'mid_block.attentions.0.']);
  for (let j = 0; j < 2; j++) m.push([`middle_block.${2 * j}.`, `mid_block.resnets.${j}.`]);
  return m;
})();

// ------------------------------------------------------------------------------------------------ VAE

export const VAE_PARTS: readonly Pair[] = (() => {
  const m: Pair[] = [
    ['nin_shortcut', 'conv_shortcut'],
    ['norm_out', 'conv_norm_out'],
    ['mid.attn_1.', 'mid_block.attentions.0.'],
  ];
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 2; j++) m.push([`encoder.down.${i}.block.${j}.`, `encoder.down_blocks.${i}.resnets.${j}.`]);
    if (i < 3) {
      m.push([`down.${i}.downsample.`, `down_blocks.${i}.downsamplers.0.`]);
      m.push([`up.${3 - i}.upsample.`, `up_blocks.${i}.upsamplers.0.`]);
    }
    for (let j = 0; j < 3; j++) m.push([`decoder.up.${3 - i}.block.${j}.`, `decoder.up_blocks.${i}.resnets.${j}.`]);
  }
  for (let i = 0; i < 2; i++) m.push([`mid.block_${i + 1}.`, `mid_block.resnets.${i}.`]);
  return m;
})();

/** Inside the mid-block attention (keys whose diffusers name contains "attentions"): old and new diffusers names. */
export const VAE_ATTENTION_PARTS: readonly Pair[] = [
  ['norm.', 'group_norm.'],
  ['q.', 'query.'],
  ['k.', 'key.'],
  ['v.', 'value.'],
  ['proj_out.', 'proj_attn.'],
  ['q.', 'to_q.'],
  ['k.', 'to_k.'],
  ['v.', 'to_v.'],
  ['proj_out.', 'to_out.0.'],
];

/** CompVis keys whose weights are 1x1 convs where diffusers has linear layers ([C,C] -> [C,C,1,1]). */
export const VAE_CONV1X1: readonly string[] = ['q', 'k', 'v', 'proj_out'].map((w) => `mid.attn_1.${w}.weight`);

// ------------------------------------------------------------------------------------------------- CLIP

/** SD v1's text encoder is transformers' CLIPTextModel under cond_stage_model.transformer: names are kept. */
export const CLIP_PARTS: readonly Pair[] = [];

// ------------------------------------------------------------------------------------------ the engine

const replaceAll = (s: string, from: string, to: string): string => s.split(from).join(to);

/** One diffusers key of `model` (without its diffusers prefix) -> its CompVis name (without prefix). */
export function diffusersToCompvis(model: SdModel, key: string): string {
  if (model === 'unet') {
    let v = key;
    const exact = UNET_EXACT.find(([, hf]) => hf === key);
    if (exact) v = exact[0];
    if (key.includes('resnets')) for (const [sd, hf] of UNET_RESNET_PARTS) v = replaceAll(v, hf, sd);
    for (const [sd, hf] of UNET_LAYER_PARTS) v = replaceAll(v, hf, sd);
    return v;
  }
  if (model === 'vae') {
    let v = key;
    for (const [sd, hf] of VAE_PARTS) v = replaceAll(v, hf, sd);
    if (key.includes('attentions')) for (const [sd, hf] of VAE_ATTENTION_PARTS) v = replaceAll(v, hf, sd);
    return v;
  }
  let v = key;
  for (const [sd, hf] of CLIP_PARTS) v = replaceAll(v, hf, sd);
  return v;
}

/** Whether the CompVis tensor is a 1x1 conv where diffusers stores a linear weight. */
export const needsConv1x1 = (model: SdModel, compvisKey: string): boolean => model === 'vae' && VAE_CONV1X1.some((k) => compvisKey.endsWith(k));

/** Which SD model a bare diffusers state dict (no unet./vae./text_encoder. prefix) belongs to, or null. */
export function detectDiffusersModel(keys: readonly string[]): SdModel | null {
  if (keys.some((k) => k.startsWith('time_embedding.') || k.startsWith('down_blocks.') || k.startsWith('mid_block.'))) return 'unet';
  if (keys.some((k) => k.startsWith('encoder.down_blocks.') || k.startsWith('decoder.up_blocks.') || k.startsWith('quant_conv.'))) return 'vae';
  if (keys.some((k) => k.startsWith('text_model.'))) return 'clip';
  return null;
}

export interface KeyMapping {
  from: string;
  to: string;
  model: SdModel | null;
  /** Reshape a [C, C] linear weight to a [C, C, 1, 1] conv weight. */
  conv1x1: boolean;
}

/**
 * The renames for a whole diffusers-layout state dict. Combined dicts (unet./vae./text_encoder. prefixes)
 * map to a full CompVis checkpoint (model.diffusion_model., first_stage_model., cond_stage_model.transformer.);
 * a single model's dict maps to that model's own CompVis names, without a prefix. Keys of no known model
 * are kept as they are (model null).
 */
export function mapDiffusersKeys(keys: readonly string[]): KeyMapping[] {
  const prefixed = keys.some((k) => Object.values(DIFFUSERS_PREFIX).some((p) => k.startsWith(p)));
  const bare = prefixed ? null : detectDiffusersModel(keys);
  return keys.map((from) => {
    if (prefixed) {
      for (const model of Object.keys(DIFFUSERS_PREFIX) as SdModel[]) {
        const p = DIFFUSERS_PREFIX[model];
        if (from.startsWith(p)) {
          const to = diffusersToCompvis(model, from.slice(p.length));
          return { from, to: COMPVIS_PREFIX[model] + to, model, conv1x1: needsConv1x1(model, to) };
        }
      }
      return { from, to: from, model: null, conv1x1: false };
    }
    if (!bare) return { from, to: from, model: null, conv1x1: false };
    const to = diffusersToCompvis(bare, from);
    return { from, to, model: bare, conv1x1: needsConv1x1(bare, to) };
  });
}
