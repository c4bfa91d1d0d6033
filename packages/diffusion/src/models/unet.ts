/**
 * Stable Diffusion v1's denoising UNet: CompVis/stable-diffusion `UNetModel` with spatial transformers
 * (ldm/modules/diffusionmodules/openaimodel.py, ldm/modules/attention.py, ldm/modules/diffusionmodules/util.py
 * at commit 21f890f9). Modules and parameters carry the original names, so the UNet of a full SD checkpoint
 * loads with `loadWeights(unet, file, { prefix: 'model.diffusion_model.' })`.
 *
 * Under noGrad each block frees its intermediates as it goes (tidyUnlessRecording); with gradient recording on
 * they stay for the tape and the caller's tidy frees them.
 */
import { ShapeError, avgPool2d, checkpoint, concat, cos, fmtShape, geglu, sin, tensor, upsample, scaledDotProductAttention, tidyUnlessRecording } from '@latentdem/tensor';
import type { Backend, BackendName, Generator, Tensor } from '@latentdem/tensor';
import { Conv2d, Dropout, GroupNorm, Identity, LayerNorm, Linear, Module, ModuleList, Sequential, SiLU } from '@latentdem/nn';
import type { TensorModule } from '@latentdem/nn';
import { ConfigError } from './config.js';

/**
 * `UNetModel.__init__`'s arguments under their original names (openaimodel.py:443-469), so a fixture's
 * `config` or v1-inference.yaml's `unet_config.params` is usable as-is. Optional fields take the original
 * defaults. Supported: spatial-transformer UNets of SD v1/v2 style (see `checkUNetConfig`).
 */
export interface UNetConfig {
  /** Unused by the original's forward (kept for completeness). */
  image_size?: number | null;
  in_channels: number;
  model_channels: number;
  out_channels: number;
  num_res_blocks: number;
  /** Downsampling factors `ds` (1, 2, 4, ...) at which a SpatialTransformer follows each ResBlock. */
  attention_resolutions: readonly number[];
  /** ResBlock dropout (train mode only). Default 0. */
  dropout?: number;
  /** Default [1, 2, 4, 8]. */
  channel_mult?: readonly number[];
  /** Default true: Downsample is a stride-2 conv and Upsample is followed by a conv (else avg-pool / no conv). */
  conv_resample?: boolean;
  /** Only 2 is supported. */
  dims?: number;
  /** Only null is supported (no class conditioning). */
  num_classes?: number | null;
  /** Activation checkpointing of ResBlocks (BasicTransformerBlocks always are, as in the original): less memory in backward, same values. */
  use_checkpoint?: boolean;
  /** Only false is supported (compute is float32). */
  use_fp16?: boolean;
  /** Fixed head count (SD v1), or -1 when num_head_channels fixes the head width (SD v2). */
  num_heads?: number;
  num_head_channels?: number;
  /** Only used by AttentionBlock, which spatial-transformer UNets do not have: ignored. */
  num_heads_upsample?: number;
  use_scale_shift_norm?: boolean;
  resblock_updown?: boolean;
  use_new_attention_order?: boolean;
  /** Must be true. */
  use_spatial_transformer?: boolean;
  transformer_depth?: number;
  /** Width of the cross-attention context (768 for SD v1's CLIP ViT-L/14). */
  context_dim?: number | null;
  n_embed?: number | null;
  /** Default true; with spatial transformers it only changes d_head when num_head_channels is set. */
  legacy?: boolean;
}

/**
 * SD v1.x's UNet: CompVis/stable-diffusion configs/stable-diffusion/v1-inference.yaml, `unet_config.params`
 * (lines 31-43), field for field.
 */
export const SD15_UNET_CONFIG: UNetConfig = Object.freeze({
  image_size: 32,
  in_channels: 4,
  out_channels: 4,
  model_channels: 320,
  attention_resolutions: Object.freeze([4, 2, 1]),
  num_res_blocks: 2,
  channel_mult: Object.freeze([1, 2, 4, 4]),
  num_heads: 8,
  use_spatial_transformer: true,
  transformer_depth: 1,
  context_dim: 768,
  use_checkpoint: true,
  legacy: false,
});

/** A config with the original defaults filled in (openaimodel.py:443-469). */
export type ResolvedUNetConfig = Required<Omit<UNetConfig, 'image_size' | 'num_classes' | 'n_embed' | 'context_dim'>> & { context_dim: number };

const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/** Checks a config and fills in the defaults; ConfigError (naming the option) for anything unsupported. */
export function checkUNetConfig(config: UNetConfig): ResolvedUNetConfig {
  const op = 'UNet';
  const c = config as unknown as Record<string, unknown>;
  const unsupported = (option: string, value: unknown, ok: unknown, why: string): void => {
    if (value !== undefined && value !== ok) throw new ConfigError(op, option, `${JSON.stringify(value)} is not supported (only ${JSON.stringify(ok)}): ${why}`);
  };
  unsupported('use_scale_shift_norm', c.use_scale_shift_norm, false, 'SD v1/v2 UNets add the timestep embedding');
  unsupported('resblock_updown', c.resblock_updown, false, 'SD v1/v2 UNets resample with Downsample/Upsample');
  unsupported('use_new_attention_order', c.use_new_attention_order, false, 'it only concerns AttentionBlock');
  unsupported('use_fp16', c.use_fp16, false, 'compute is float32');
  unsupported('dims', c.dims, 2, 'only 2-D UNets are implemented');
  if (c.num_classes !== undefined && c.num_classes !== null) throw new ConfigError(op, 'num_classes', `${JSON.stringify(c.num_classes)} is not supported (only null): class-conditional UNets are not implemented`);
  if (c.n_embed !== undefined && c.n_embed !== null) throw new ConfigError(op, 'n_embed', `${JSON.stringify(c.n_embed)} is not supported (only null): codebook-id prediction is not implemented`);
  if (c.use_spatial_transformer !== true) throw new ConfigError(op, 'use_spatial_transformer', `${JSON.stringify(c.use_spatial_transformer ?? false)} is not supported (only true; the original's default is false): AttentionBlock UNets are not implemented`);
  for (const k of ['in_channels', 'model_channels', 'out_channels', 'num_res_blocks'] as const) {
    if (!isPosInt(c[k])) throw new ConfigError(op, k, `must be a positive integer, got ${JSON.stringify(c[k])}`);
  }
  if (!isPosInt(c.context_dim)) throw new ConfigError(op, 'context_dim', `must be a positive integer with use_spatial_transformer (the original asserts it is set), got ${JSON.stringify(c.context_dim)}`);
  const channel_mult = config.channel_mult ?? [1, 2, 4, 8];
  if (!Array.isArray(channel_mult) || channel_mult.length === 0 || !channel_mult.every(isPosInt)) throw new ConfigError(op, 'channel_mult', `must be a non-empty list of positive integers, got ${JSON.stringify(channel_mult)}`);
  if (!Array.isArray(config.attention_resolutions) || !config.attention_resolutions.every(isPosInt)) throw new ConfigError(op, 'attention_resolutions', `must be a list of positive integers, got ${JSON.stringify(config.attention_resolutions)}`);
  const num_heads = config.num_heads ?? -1;
  const num_head_channels = config.num_head_channels ?? -1;
  // openaimodel.py:483-487: one of them must be set. When both are, num_head_channels wins (as there).
  if (num_heads === -1 && num_head_channels === -1) throw new ConfigError(op, 'num_heads', 'either num_heads or num_head_channels has to be set (both are -1)');
  if (num_head_channels === -1 ? !isPosInt(num_heads) : !isPosInt(num_head_channels)) {
    throw new ConfigError(op, num_head_channels === -1 ? 'num_heads' : 'num_head_channels', `must be a positive integer or -1, got ${num_head_channels === -1 ? num_heads : num_head_channels}`);
  }
  const transformer_depth = config.transformer_depth ?? 1;
  if (!isPosInt(transformer_depth)) throw new ConfigError(op, 'transformer_depth', `must be a positive integer, got ${JSON.stringify(transformer_depth)}`);
  const dropout = config.dropout ?? 0;
  if (!(dropout >= 0 && dropout <= 1)) throw new ConfigError(op, 'dropout', `must be in [0, 1], got ${JSON.stringify(dropout)}`);
  for (const mult of channel_mult) {
    if ((mult * config.model_channels) % 32 !== 0) throw new ConfigError(op, 'model_channels', `GroupNorm32 needs every level's width (model_channels * channel_mult) divisible by 32, got ${config.model_channels} * ${mult}`);
  }
  return {
    in_channels: config.in_channels, model_channels: config.model_channels, out_channels: config.out_channels,
    num_res_blocks: config.num_res_blocks, attention_resolutions: [...config.attention_resolutions], dropout,
    channel_mult: [...channel_mult], conv_resample: config.conv_resample ?? true, dims: 2,
    use_checkpoint: config.use_checkpoint ?? false, use_fp16: false, num_heads, num_head_channels,
    num_heads_upsample: config.num_heads_upsample ?? -1, use_scale_shift_norm: false, resblock_updown: false,
    use_new_attention_order: false, use_spatial_transformer: true, transformer_depth,
    context_dim: config.context_dim as number, legacy: config.legacy ?? true,
  };
}

/** Where parameters live and which generator draws their (PyTorch-default) initial values. */
export interface UNetInitOptions { backend?: BackendName | Backend; generator?: Generator }
interface BackendOption { backend?: BackendName | Backend }

/**
 * Sinusoidal timestep embedding [N, dim] as util.py:151 `timestep_embedding(t, dim, repeat_only=False)`:
 * half = dim // 2, freqs = exp(-ln(max_period) * arange(half) / half) (float32), args = t * freqs,
 * cat[cos(args), sin(args)] (cos FIRST), plus a zero column when dim is odd. Numbers are embedded on the host
 * (args rounded to float32 as the original's float32 product, cos/sin in float64); a tensor (float32 or
 * int32, [N]) on its backend.
 */
export function timestepEmbedding(timesteps: Tensor | number | readonly number[], dim: number, o: BackendOption & { maxPeriod?: number } = {}): Tensor {
  if (!isPosInt(dim)) throw new ShapeError('timestepEmbedding', `dim must be a positive integer, got ${dim}`);
  const maxPeriod = o.maxPeriod ?? 10000;
  const half = Math.floor(dim / 2);
  const freqs = new Float32Array(half);
  // float32 like torch (util.py:162-164): the Python scalar -ln(max_period) is rounded to float32 before it
  // multiplies arange; then / half and exp, each rounded to float32. (torch's float32 exp can differ by 1 ulp.)
  const negLog = Math.fround(-Math.log(maxPeriod));
  for (let i = 0; i < half; i++) freqs[i] = Math.exp(Math.fround(Math.fround(negLog * i) / half));
  if (typeof timesteps === 'number' || Array.isArray(timesteps)) {
    const ts = typeof timesteps === 'number' ? [timesteps] : (timesteps as readonly number[]);
    const out = new Float32Array(ts.length * dim);
    ts.forEach((t, n) => {
      for (let i = 0; i < half; i++) {
        const a = Math.fround(Math.fround(t) * freqs[i]);
        out[n * dim + i] = Math.cos(a);
        out[n * dim + half + i] = Math.sin(a);
      }
    });
    return tensor(out, { shape: [ts.length, dim], backend: o.backend });
  }
  const t = timesteps as Tensor;
  if (t.rank !== 1) throw new ShapeError('timestepEmbedding', `timesteps must be 1-D [N], got ${fmtShape(t.shape)}`);
  const args = (t.dtype === 'float32' ? t : t.cast('float32')).unsqueeze(1).mul(tensor(freqs, { shape: [1, half], backend: t.backend }));
  const parts = [cos(args), sin(args)];
  if (dim % 2) parts.push(args.narrow(1, 0, 1).mul(0));
  return concat(parts, 1);
}

/** normalization(channels) (util.py:199-205): GroupNorm32(32, channels), torch's default eps 1e-5. */
const normalization = (ch: number, o: BackendOption): GroupNorm => new GroupNorm(32, ch, { backend: o.backend });

/**
 * Runs a Sequential that starts [GroupNorm, SiLU, ...] with those two fused into one kernel
 * (GroupNorm.forwardSilu); the modules, and so the checkpoint keys, stay as in the original.
 */
function normSiluThen(seq: Sequential, x: Tensor): Tensor {
  const norm = seq.at(0);
  if (seq.length < 2 || !(norm instanceof GroupNorm) || !(seq.at(1) instanceof SiLU)) return seq.forward(x);
  let h = norm.forwardSilu(x);
  for (let i = 2; i < seq.length; i++) h = seq.at(i).forward(h);
  return h;
}

/** ResBlock without up/down and scale-shift (openaimodel.py:163-275): keys in_layers, emb_layers, out_layers, skip_connection. */
export class ResBlock extends Module {
  readonly in_layers: Sequential;
  readonly emb_layers: Sequential;
  readonly out_layers: Sequential;
  readonly skip_connection: TensorModule;
  /**
   * `useCheckpoint`: activation checkpointing, as the original's use_checkpoint (openaimodel.py:250-251): the
   * backward recomputes the block instead of keeping its intermediates. Off while dropout is active.
   */
  constructor(readonly channels: number, embChannels: number, readonly dropout: number, readonly outChannels: number, o: UNetInitOptions = {}, readonly useCheckpoint = false) {
    super();
    this.in_layers = this.registerModule('in_layers', new Sequential(normalization(channels, o), new SiLU(), new Conv2d(channels, outChannels, 3, { padding: 1, ...o })));
    this.emb_layers = this.registerModule('emb_layers', new Sequential(new SiLU(), new Linear(embChannels, outChannels, o)));
    this.out_layers = this.registerModule('out_layers', new Sequential(normalization(outChannels, o), new SiLU(), new Dropout(dropout), new Conv2d(outChannels, outChannels, 3, { padding: 1, ...o })));
    this.skip_connection = this.registerModule('skip_connection', outChannels === channels ? new Identity() : new Conv2d(channels, outChannels, 1, o));
  }
  forward(x: Tensor, emb: Tensor): Tensor {
    const body = (x: Tensor, emb: Tensor): Tensor => tidyUnlessRecording(() => {
      const h = normSiluThen(this.in_layers, x);
      const e = this.emb_layers.forward(emb);
      return this.skip_connection.forward(x).add(normSiluThen(this.out_layers, h.add(e.reshape([e.shape[0], e.shape[1], 1, 1]))));
    });
    if (!this.useCheckpoint || (this.training && this.dropout > 0)) return body(x, emb);
    return checkpoint(body, [x, emb], this.parameters());
  }
}

class AvgPool2x extends Module { forward(x: Tensor): Tensor { return avgPool2d(x, { kernel: 2, stride: 2 }); } }

/** Downsample (openaimodel.py:134-160): `op` = 3x3 conv, stride 2, padding 1 (or 2x2 average pooling without conv_resample). */
export class Downsample extends Module {
  readonly op: TensorModule;
  constructor(channels: number, useConv: boolean, o: UNetInitOptions = {}) {
    super();
    this.op = this.registerModule('op', useConv ? new Conv2d(channels, channels, 3, { stride: 2, padding: 1, ...o }) : new AvgPool2x());
  }
  forward(x: Tensor): Tensor { return this.op.forward(x); }
}

/** Upsample (openaimodel.py:91-118): nearest x2, then `conv` 3x3 padding 1 when conv_resample. */
export class Upsample extends Module {
  readonly conv: Conv2d | null;
  constructor(channels: number, useConv: boolean, o: UNetInitOptions = {}) {
    super();
    this.conv = useConv ? this.registerModule('conv', new Conv2d(channels, channels, 3, { padding: 1, ...o })) : null;
  }
  forward(x: Tensor): Tensor {
    const y = upsample(x, { scaleFactor: 2, mode: 'nearest' });
    return this.conv ? this.conv.forward(y) : y;
  }
}

/** CrossAttention (attention.py:152-193): to_q/to_k/to_v without bias, to_out = [Linear, Dropout]. */
export class CrossAttention extends Module {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: Sequential;
  constructor(queryDim: number, contextDim: number, readonly heads: number, readonly dimHead: number, o: UNetInitOptions = {}) {
    super();
    const inner = heads * dimHead;
    this.to_q = this.registerModule('to_q', new Linear(queryDim, inner, { bias: false, ...o }));
    this.to_k = this.registerModule('to_k', new Linear(contextDim, inner, { bias: false, ...o }));
    this.to_v = this.registerModule('to_v', new Linear(contextDim, inner, { bias: false, ...o }));
    this.to_out = this.registerModule('to_out', new Sequential(new Linear(inner, queryDim, o), new Dropout(0)));
  }
  /** x [B, N, query_dim], context [B, M, context_dim] (x itself when absent: self-attention). */
  forward(x: Tensor, context?: Tensor): Tensor {
    const ctx = context ?? x;
    const h = this.heads; const d = this.dimHead;
    // 'b n (h d) -> b h n d'
    const heads = (t: Tensor): Tensor => t.reshape([t.shape[0], t.shape[1], h, d]).permute([0, 2, 1, 3]);
    // attention.py:158: scale = dim_head ** -0.5.
    const a = scaledDotProductAttention(heads(this.to_q.forward(x)), heads(this.to_k.forward(ctx)), heads(this.to_v.forward(ctx)), { scale: 1 / Math.sqrt(d) });
    const [b, , n] = a.shape;
    return this.to_out.forward(a.permute([0, 2, 1, 3]).reshape([b, n, h * d]));
  }
}

/** GEGLU (attention.py:37-44): proj to 2*dim_out; the FIRST half is the value, the SECOND the gate: value * gelu(gate), exact erf GELU. */
export class GEGLU extends Module {
  readonly proj: Linear;
  constructor(dimIn: number, readonly dimOut: number, o: UNetInitOptions = {}) {
    super();
    this.proj = this.registerModule('proj', new Linear(dimIn, dimOut * 2, o));
  }
  forward(x: Tensor): Tensor {
    // One fused kernel for value * gelu(gate) over the two halves of the projection.
    return geglu(this.proj.forward(x));
  }
}

/** FeedForward(dim, glu=True) (attention.py:47-63): net = [GEGLU(dim, 4 dim), Dropout, Linear(4 dim, dim)]. */
export class FeedForward extends Module {
  readonly net: Sequential;
  constructor(dim: number, o: UNetInitOptions = {}) {
    super();
    const inner = dim * 4; // attention.py:49: mult=4
    this.net = this.registerModule('net', new Sequential(new GEGLU(dim, inner, o), new Dropout(0), new Linear(inner, dim, o)));
  }
  forward(x: Tensor): Tensor { return this.net.forward(x); }
}

/** BasicTransformerBlock (attention.py:196-215): self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm (eps 1e-5) and residual. */
export class BasicTransformerBlock extends Module {
  readonly attn1: CrossAttention;
  readonly ff: FeedForward;
  readonly attn2: CrossAttention;
  readonly norm1: LayerNorm;
  readonly norm2: LayerNorm;
  readonly norm3: LayerNorm;
  constructor(dim: number, heads: number, dimHead: number, contextDim: number, o: UNetInitOptions = {}) {
    super();
    this.attn1 = this.registerModule('attn1', new CrossAttention(dim, dim, heads, dimHead, o));
    this.ff = this.registerModule('ff', new FeedForward(dim, o));
    this.attn2 = this.registerModule('attn2', new CrossAttention(dim, contextDim, heads, dimHead, o));
    this.norm1 = this.registerModule('norm1', new LayerNorm(dim, o));
    this.norm2 = this.registerModule('norm2', new LayerNorm(dim, o));
    this.norm3 = this.registerModule('norm3', new LayerNorm(dim, o));
  }
  /** Always checkpointed, as the original (attention.py:197, 209: checkpoint=True by default): no dropout here. */
  forward(x: Tensor, context?: Tensor): Tensor {
    const body = (x: Tensor, context?: Tensor): Tensor => {
      x = this.attn1.forward(this.norm1.forward(x)).add(x);
      x = this.attn2.forward(this.norm2.forward(x), context).add(x);
      return this.ff.forward(this.norm3.forward(x)).add(x);
    };
    return checkpoint(body, context ? [x, context] : [x], this.parameters());
  }
}

/**
 * SpatialTransformer (attention.py:218-261): GroupNorm(32, eps 1e-6 — attention.py:76 `Normalize`), 1x1 conv
 * proj_in, tokens 'b c h w -> b (h w) c', transformer_blocks, back to 'b c h w', 1x1 conv proj_out, + input.
 */
export class SpatialTransformer extends Module {
  readonly norm: GroupNorm;
  readonly proj_in: Conv2d;
  readonly transformer_blocks: ModuleList<BasicTransformerBlock>;
  readonly proj_out: Conv2d;
  constructor(readonly inChannels: number, heads: number, dimHead: number, depth: number, readonly contextDim: number, o: UNetInitOptions = {}) {
    super();
    const inner = heads * dimHead;
    this.norm = this.registerModule('norm', new GroupNorm(32, inChannels, { eps: 1e-6, backend: o.backend }));
    this.proj_in = this.registerModule('proj_in', new Conv2d(inChannels, inner, 1, o));
    this.transformer_blocks = this.registerModule('transformer_blocks', new ModuleList(Array.from({ length: depth }, () => new BasicTransformerBlock(inner, heads, dimHead, contextDim, o))));
    this.proj_out = this.registerModule('proj_out', new Conv2d(inner, inChannels, 1, o));
  }
  forward(x: Tensor, context?: Tensor): Tensor {
    return tidyUnlessRecording(() => {
      const [b, , h, w] = x.shape;
      const y = this.proj_in.forward(this.norm.forward(x));
      const c = y.shape[1];
      let tokens = y.reshape([b, c, h * w]).transpose(1, 2);
      for (const block of this.transformer_blocks) tokens = block.forward(tokens, context);
      return this.proj_out.forward(tokens.transpose(1, 2).reshape([b, c, h, w])).add(x);
    });
  }
}

/** TimestepEmbedSequential (openaimodel.py:74-88): ResBlocks get the embedding, SpatialTransformers the context. */
export class TimestepEmbedSequential extends ModuleList<Module> {
  forward(x: Tensor, emb: Tensor, context: Tensor): Tensor {
    return tidyUnlessRecording(() => {
      for (const m of this) {
        if (m instanceof ResBlock) x = m.forward(x, emb);
        else if (m instanceof SpatialTransformer) x = m.forward(x, context);
        else x = (m as unknown as TensorModule).forward(x);
      }
      return x;
    });
  }
}

export interface UNetForwardOptions {
  /**
   * Called with intermediate results of this call, for tests and debugging: 't_sinusoid' [B, model_channels],
   * 'temb' [B, 4 model_channels], 'input_block<i>' (output of input_blocks[i], as a forward hook sees it),
   * 'middle_block', 'output_block<i>'. The tensors belong to the call (the caller's tidy frees them).
   */
  tap?: (name: string, t: Tensor) => void;
}

/**
 * UNetModel (openaimodel.py:413-741) for spatial-transformer configs. Parameter names are the checkpoint's
 * without 'model.diffusion_model.': time_embed.{0,2}, input_blocks.i.j.*, middle_block.{0,1,2}.*,
 * output_blocks.i.j.*, out.{0,2}.
 */
export class UNet extends Module {
  readonly config: Readonly<ResolvedUNetConfig>;
  readonly time_embed: Sequential;
  readonly input_blocks: ModuleList<TimestepEmbedSequential>;
  readonly middle_block: TimestepEmbedSequential;
  readonly output_blocks: ModuleList<TimestepEmbedSequential>;
  readonly out: Sequential;

  constructor(config: UNetConfig, o: UNetInitOptions = {}) {
    super();
    const c = checkUNetConfig(config);
    this.config = c;
    const mc = c.model_channels;
    const embDim = mc * 4; // openaimodel.py:506: time_embed_dim = model_channels * 4
    const seq = (...ms: Module[]): TimestepEmbedSequential => new TimestepEmbedSequential(ms);
    // openaimodel.py:539-549 (and 588-596, 642-650): heads and head width of a SpatialTransformer on ch channels.
    const transformer = (ch: number): SpatialTransformer => {
      let heads: number; let dimHead: number;
      if (c.num_head_channels === -1) { heads = c.num_heads; dimHead = Math.floor(ch / heads); } else { heads = Math.floor(ch / c.num_head_channels); dimHead = c.num_head_channels; }
      if (c.legacy) dimHead = Math.floor(ch / heads);
      if (heads < 1 || dimHead < 1) throw new ConfigError('UNet', c.num_head_channels === -1 ? 'num_heads' : 'num_head_channels', `gives ${heads} heads of width ${dimHead} on ${ch} channels`);
      return new SpatialTransformer(ch, heads, dimHead, c.transformer_depth, c.context_dim, o);
    };

    this.time_embed = this.registerModule('time_embed', new Sequential(new Linear(mc, embDim, o), new SiLU(), new Linear(embDim, embDim, o)));

    // openaimodel.py:514-574
    const input = new ModuleList<TimestepEmbedSequential>([seq(new Conv2d(c.in_channels, mc, 3, { padding: 1, ...o }))]);
    const chans = [mc];
    let ch = mc; let ds = 1;
    c.channel_mult.forEach((mult, level) => {
      for (let i = 0; i < c.num_res_blocks; i++) {
        const layers: Module[] = [new ResBlock(ch, embDim, c.dropout, mult * mc, o, c.use_checkpoint)];
        ch = mult * mc;
        if (c.attention_resolutions.includes(ds)) layers.push(transformer(ch));
        input.append(seq(...layers));
        chans.push(ch);
      }
      if (level !== c.channel_mult.length - 1) {
        input.append(seq(new Downsample(ch, c.conv_resample, o)));
        chans.push(ch);
        ds *= 2;
      }
    });
    this.input_blocks = this.registerModule('input_blocks', input);

    // openaimodel.py:588-623
    this.middle_block = this.registerModule('middle_block', seq(new ResBlock(ch, embDim, c.dropout, ch, o, c.use_checkpoint), transformer(ch), new ResBlock(ch, embDim, c.dropout, ch, o, c.use_checkpoint)));

    // openaimodel.py:625-680: levels in reverse, skips popped LIFO.
    const output = new ModuleList<TimestepEmbedSequential>();
    for (let level = c.channel_mult.length - 1; level >= 0; level--) {
      const mult = c.channel_mult[level];
      for (let i = 0; i <= c.num_res_blocks; i++) {
        const ich = chans.pop()!;
        const layers: Module[] = [new ResBlock(ch + ich, embDim, c.dropout, mc * mult, o, c.use_checkpoint)];
        ch = mc * mult;
        if (c.attention_resolutions.includes(ds)) layers.push(transformer(ch));
        if (level && i === c.num_res_blocks) {
          layers.push(new Upsample(ch, c.conv_resample, o));
          ds /= 2;
        }
        output.append(seq(...layers));
      }
    }
    this.output_blocks = this.registerModule('output_blocks', output);

    // openaimodel.py:682-686
    this.out = this.registerModule('out', new Sequential(normalization(ch, o), new SiLU(), new Conv2d(mc, c.out_channels, 3, { padding: 1, ...o })));
  }

  /** Number of resolution levels (len(channel_mult)); inputs need H and W divisible by 2^(levels-1). */
  get levels(): number { return this.config.channel_mult.length; }

  /**
   * eps prediction [B, out_channels, H, W] for latents x [B, in_channels, H, W], timesteps (a tensor [B],
   * float32 or int32; numbers; or one number for the whole batch) and context [B, L, context_dim]
   * (openaimodel.py:709-741).
   */
  forward(x: Tensor, timesteps: Tensor | number | readonly number[], context: Tensor, opts: UNetForwardOptions = {}): Tensor {
    const c = this.config;
    const op = 'UNet.forward';
    if (x.rank !== 4) throw new ShapeError(op, `x must be [B, C, H, W], got ${fmtShape(x.shape)}`);
    const [b, ch, h, w] = x.shape;
    if (ch !== c.in_channels) throw new ShapeError(op, `x has ${ch} channels, the model's in_channels is ${c.in_channels} (x ${fmtShape(x.shape)})`);
    const f = 2 ** (this.levels - 1);
    if (h % f !== 0 || w % f !== 0) throw new ShapeError(op, `x's spatial size ${h}x${w} must be divisible by ${f} (2^(levels-1), ${this.levels} levels) (x ${fmtShape(x.shape)})`);
    if (context.rank !== 3 || context.shape[2] !== c.context_dim) throw new ShapeError(op, `context must be [B, L, ${c.context_dim}] (context_dim), got ${fmtShape(context.shape)}`);
    if (context.shape[0] !== b) throw new ShapeError(op, `batch sizes differ: x ${fmtShape(x.shape)}, context ${fmtShape(context.shape)}`);
    let ts = timesteps;
    if (typeof ts === 'number') ts = new Array<number>(b).fill(ts);
    const nT = Array.isArray(ts) ? ts.length : (ts as Tensor).rank === 1 ? (ts as Tensor).shape[0] : -1;
    if (nT !== b) throw new ShapeError(op, `timesteps must be [${b}] (one per batch item), got ${Array.isArray(ts) ? `${nT} numbers` : fmtShape((ts as Tensor).shape)}`);

    const tap = opts.tap;
    const tSin = timestepEmbedding(ts, c.model_channels, { backend: x.backend });
    tap?.('t_sinusoid', tSin);
    const emb = this.time_embed.forward(tSin);
    tap?.('temb', emb);

    const hs: Tensor[] = [];
    let hcur = x;
    let i = 0;
    for (const block of this.input_blocks) {
      hcur = block.forward(hcur, emb, context);
      tap?.(`input_block${i++}`, hcur);
      hs.push(hcur);
    }
    hcur = this.middle_block.forward(hcur, emb, context);
    tap?.('middle_block', hcur);
    i = 0;
    for (const block of this.output_blocks) {
      hcur = block.forward(concat([hcur, hs.pop()!], 1), emb, context);
      tap?.(`output_block${i++}`, hcur);
    }
    return normSiluThen(this.out, hcur);
  }
}
