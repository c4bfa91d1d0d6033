/**
 * CLIP's image encoder as Zero123 uses it: openai/CLIP `VisionTransformer` (clip/model.py:206-240 at commit
 * d05afc43), wrapped by Zero123's `FrozenCLIPImageEmbedder` (cvlab-columbia/zero123 @ f426883b,
 * zero123/ldm/modules/encoders/modules.py:343-382), which also fixes the preprocessing (`zero123ClipPreprocess`).
 * Parameters carry the original names, so the encoder of a Zero123 checkpoint loads with
 * `loadWeights(encoder, file, { prefix: ZERO123_CLIP_VISION_PREFIX })`.
 */
import { ShapeError, concat, fmtShape, scaledDotProductAttention, tensor, tidyUnlessRecording, matmul, permute, zeros } from '@latentdem/tensor';
import type { Backend, BackendName, Generator, Tensor } from '@latentdem/tensor';
import { Conv2d, LayerNorm, Linear, Module, ModuleList, normal, uniform } from '@latentdem/nn';
import { ConfigError } from './config.js';

/** `VisionTransformer.__init__`'s arguments under their original names (clip/model.py:207). */
export interface ClipVisionConfig {
  input_resolution: number;
  patch_size: number;
  width: number;
  layers: number;
  heads: number;
  output_dim: number;
}

/**
 * ViT-L/14, the encoder of `FrozenCLIPImageEmbedder(model='ViT-L/14')` (modules.py:350). CLIP builds it from
 * the checkpoint's shapes (clip/model.py:403-407, 417, 272): width = conv1 out channels = 1024, layers = 24
 * resblocks, patch_size = 14, input_resolution = 14 * 16 = 224, heads = width // 64 = 16, output_dim =
 * text_projection's width = 768; the same numbers as open_clip's model_configs/ViT-L-14.json (embed_dim 768,
 * vision_cfg image_size 224, layers 24, width 1024, patch_size 14) and the CLIP paper's table of ViT models.
 */
export const ZERO123_CLIP_VISION_CONFIG: ClipVisionConfig = Object.freeze({
  input_resolution: 224,
  patch_size: 14,
  width: 1024,
  layers: 24,
  heads: 16,
  output_dim: 768,
});

/** Where a Zero123 checkpoint stores the encoder: LatentDiffusion.cond_stage_model (FrozenCLIPImageEmbedder).model (CLIP).visual. */
export const ZERO123_CLIP_VISION_PREFIX = 'cond_stage_model.model.visual.';

/** CLIP's normalization (modules.py:360-361; also clip/clip.py:85). */
export const CLIP_MEAN: readonly number[] = Object.freeze([0.48145466, 0.4578275, 0.40821073]);
export const CLIP_STD: readonly number[] = Object.freeze([0.26862954, 0.26130258, 0.27577711]);

interface InitOptions { backend?: BackendName | Backend; generator?: Generator }

const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/** Checks a config; ConfigError naming the argument otherwise. */
export function checkClipVisionConfig(config: ClipVisionConfig): ClipVisionConfig {
  const op = 'ClipVisionEncoder';
  if (typeof config !== 'object' || config === null) throw new ConfigError(op, 'config', 'must be an object with input_resolution, patch_size, width, layers, heads, output_dim');
  const c = config as unknown as Record<string, unknown>;
  const known = new Set(['input_resolution', 'patch_size', 'width', 'layers', 'heads', 'output_dim']);
  for (const k of Object.keys(c)) if (!known.has(k)) throw new ConfigError(op, k, 'is not an argument of VisionTransformer');
  for (const k of known) if (!isPosInt(c[k])) throw new ConfigError(op, k, `must be a positive integer, got ${JSON.stringify(c[k])}`);
  if (config.width % config.heads !== 0) throw new ConfigError(op, 'heads', `${config.heads} heads do not divide width ${config.width} (nn.MultiheadAttention needs width % heads == 0)`);
  if (config.input_resolution % config.patch_size !== 0) {
    // Conv2d(stride = kernel = patch_size) would drop the remainder while the positional embedding has
    // (input_resolution // patch_size)^2 + 1 rows: it still works, but no CLIP model does this.
    throw new ConfigError(op, 'input_resolution', `${config.input_resolution} is not a multiple of patch_size ${config.patch_size}`);
  }
  return config;
}

/**
 * torch.nn.MultiheadAttention(width, heads) as CLIP uses it (self-attention, no mask, need_weights=False):
 * in_proj_weight [3 width, width] (rows q; k; v), in_proj_bias [3 width], out_proj (Linear). Inputs are
 * batch-first here ([B, L, width]); CLIP's LND layout is only a transpose of the same computation.
 */
export class MultiheadSelfAttention extends Module {
  readonly out_proj: Linear;
  constructor(readonly width: number, readonly heads: number, o: InitOptions = {}) {
    super();
    // nn.MultiheadAttention._reset_parameters: xavier_uniform_ in_proj_weight, zero biases. Loaded weights
    // replace these; the init only has to be sane.
    const bound = Math.sqrt(6 / (width + 3 * width));
    this.registerParameter('in_proj_weight', uniform([3 * width, width], -bound, bound, o));
    this.registerParameter('in_proj_bias', zeros([3 * width], { backend: o.backend }));
    this.out_proj = this.registerModule('out_proj', new Linear(width, width, o));
  }
  get in_proj_weight(): Tensor { return this.getParameter('in_proj_weight')!; }
  get in_proj_bias(): Tensor { return this.getParameter('in_proj_bias')!; }
  forward(x: Tensor): Tensor {
    const [b, l, w] = x.shape;
    const h = this.heads; const d = w / h;
    const qkv = x.matmul(this.in_proj_weight.transpose()).add(this.in_proj_bias);
    // [B, L, 3, h, d] -> three [B, h, L, d]
    const parts = qkv.reshape([b, l, 3, h, d]);
    const head = (i: number): Tensor => parts.narrow(2, i, 1).reshape([b, l, h, d]).permute([0, 2, 1, 3]);
    const a = scaledDotProductAttention(head(0), head(1), head(2), { scale: 1 / Math.sqrt(d) });
    return this.out_proj.forward(a.permute([0, 2, 1, 3]).reshape([b, l, w]));
  }
}

/** mlp = Sequential(c_fc, QuickGELU, c_proj) (clip/model.py:177-181); QuickGELU(x) = x * sigmoid(1.702 x) (l.166-168). */
export class ClipMlp extends Module {
  readonly c_fc: Linear;
  readonly c_proj: Linear;
  constructor(width: number, o: InitOptions = {}) {
    super();
    this.c_fc = this.registerModule('c_fc', new Linear(width, width * 4, o));
    this.c_proj = this.registerModule('c_proj', new Linear(width * 4, width, o));
  }
  forward(x: Tensor): Tensor {
    const h = this.c_fc.forward(x);
    return this.c_proj.forward(h.mul(h.mul(1.702).sigmoid()));
  }
}

/** ResidualAttentionBlock (clip/model.py:171-192): x + attn(ln_1(x)), then x + mlp(ln_2(x)); LayerNorm eps 1e-5. */
export class ResidualAttentionBlock extends Module {
  readonly attn: MultiheadSelfAttention;
  readonly ln_1: LayerNorm;
  readonly mlp: ClipMlp;
  readonly ln_2: LayerNorm;
  constructor(width: number, heads: number, o: InitOptions = {}) {
    super();
    this.attn = this.registerModule('attn', new MultiheadSelfAttention(width, heads, o));
    this.ln_1 = this.registerModule('ln_1', new LayerNorm(width, { backend: o.backend }));
    this.mlp = this.registerModule('mlp', new ClipMlp(width, o));
    this.ln_2 = this.registerModule('ln_2', new LayerNorm(width, { backend: o.backend }));
  }
  forward(x: Tensor): Tensor {
    return tidyUnlessRecording(() => {
      const y = x.add(this.attn.forward(this.ln_1.forward(x)));
      return y.add(this.mlp.forward(this.ln_2.forward(y)));
    });
  }
}

/** Transformer (clip/model.py:195-203): `resblocks`. */
export class ClipTransformer extends Module {
  readonly resblocks: ModuleList<ResidualAttentionBlock>;
  constructor(width: number, layers: number, heads: number, o: InitOptions = {}) {
    super();
    this.resblocks = this.registerModule('resblocks', new ModuleList(Array.from({ length: layers }, () => new ResidualAttentionBlock(width, heads, o))));
  }
  forward(x: Tensor): Tensor {
    for (const block of this.resblocks) x = block.forward(x);
    return x;
  }
}

/**
 * VisionTransformer (clip/model.py:206-240). Parameters: conv1.weight (no bias), class_embedding [width],
 * positional_embedding [grid^2 + 1, width], ln_pre, transformer.resblocks.N.*, ln_post, proj [width, output_dim].
 */
export class ClipVisionEncoder extends Module {
  readonly config: Readonly<ClipVisionConfig>;
  readonly conv1: Conv2d;
  readonly ln_pre: LayerNorm;
  readonly transformer: ClipTransformer;
  readonly ln_post: LayerNorm;

  constructor(config: ClipVisionConfig, o: InitOptions = {}) {
    super();
    const c = checkClipVisionConfig(config);
    this.config = Object.freeze({ ...c });
    const w = c.width;
    this.conv1 = this.registerModule('conv1', new Conv2d(3, w, c.patch_size, { stride: c.patch_size, bias: false, ...o }));
    const scale = w ** -0.5; // model.py:213
    this.registerParameter('class_embedding', normal([w], 0, scale, o));
    this.registerParameter('positional_embedding', normal([this.grid ** 2 + 1, w], 0, scale, o));
    this.ln_pre = this.registerModule('ln_pre', new LayerNorm(w, { backend: o.backend }));
    this.transformer = this.registerModule('transformer', new ClipTransformer(w, c.layers, c.heads, o));
    this.ln_post = this.registerModule('ln_post', new LayerNorm(w, { backend: o.backend }));
    this.registerParameter('proj', normal([w, c.output_dim], 0, scale, o));
  }

  /** Patches per side: input_resolution // patch_size. */
  get grid(): number { return Math.floor(this.config.input_resolution / this.config.patch_size); }
  get class_embedding(): Tensor { return this.getParameter('class_embedding')!; }
  get positional_embedding(): Tensor { return this.getParameter('positional_embedding')!; }
  get proj(): Tensor { return this.getParameter('proj')!; }

  /**
   * The projected image embedding [B, output_dim] of preprocessed pixels [B, 3, R, R], R = input_resolution
   * (`encode_image`, model.py:340-341 = `visual(image)`): ln_post of the class token, times proj (x @ proj,
   * proj NOT transposed).
   */
  forward(pixels: Tensor): Tensor {
    const c = this.config;
    const op = 'ClipVisionEncoder.forward';
    const r = c.input_resolution;
    if (pixels.rank !== 4 || pixels.shape[1] !== 3 || pixels.shape[2] !== r || pixels.shape[3] !== r) {
      throw new ShapeError(op, `needs preprocessed pixels [B, 3, ${r}, ${r}] (input_resolution ${r}), got ${fmtShape(pixels.shape)}`);
    }
    const b = pixels.shape[0];
    const w = c.width;
    return tidyUnlessRecording(() => {
      const g = this.grid;
      // conv1 -> [B, width, grid^2] -> [B, grid^2, width] (row-major patches) (model.py:224-226)
      const x = this.conv1.forward(pixels).reshape([b, w, g * g]).permute([0, 2, 1]);
      // class token first (model.py:227), + positional embedding (l.228), ln_pre (l.229)
      const cls = this.class_embedding.reshape([1, 1, w]).expand([b, 1, w]);
      const tokens = this.ln_pre.forward(concat([cls, x], 1).add(this.positional_embedding));
      const y = this.transformer.forward(tokens);
      // ln_post of the class token (l.235), @ proj (l.238)
      return this.ln_post.forward(y.narrow(1, 0, 1).reshape([b, w])).matmul(this.proj);
    });
  }
}

/**
 * PyTorch's bicubic interpolation weights for one axis as a matrix [nOut, nIn] (aten UpSample.h:
 * `upsample_get_value_bounded` clamps the four taps to the border; `get_cubic_upsample_coefficients` with
 * A = -0.75; align_corners=True maps output i to input i (nIn - 1) / (nOut - 1), else (i + 0.5) nIn / nOut - 0.5).
 * Computed in float32 like the kernel's float opmath.
 */
export function bicubicMatrix(nIn: number, nOut: number, alignCorners: boolean): Float32Array {
  if (!isPosInt(nIn) || !isPosInt(nOut)) throw new ShapeError('bicubicMatrix', `sizes must be positive integers, got ${nIn} -> ${nOut}`);
  const f = Math.fround;
  const A = -0.75;
  const cc1 = (x: number): number => ((A + 2) * x - (A + 3)) * x * x + 1;        // |x| <= 1
  const cc2 = (x: number): number => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;  // 1 < |x| < 2
  const m = new Float32Array(nOut * nIn);
  const scale = alignCorners ? (nOut > 1 ? f((nIn - 1) / (nOut - 1)) : 0) : f(nIn / nOut);
  for (let i = 0; i < nOut; i++) {
    const src = alignCorners ? f(scale * i) : f(f(scale * (i + 0.5)) - 0.5); // cubic: no clamp at 0
    const i0 = Math.floor(src);
    const t = f(src - i0);
    const w = [cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)];
    for (let k = 0; k < 4; k++) {
      const j = Math.min(Math.max(i0 - 1 + k, 0), nIn - 1);
      m[i * nIn + j] += w[k];
    }
  }
  return m;
}

/** Bicubic resize of [N, C, H, W] to [N, C, size[0], size[1]] as F.interpolate(mode='bicubic') (differentiable). */
export function resizeBicubic(x: Tensor, size: readonly [number, number], o: { alignCorners?: boolean } = {}): Tensor {
  if (x.rank !== 4) throw new ShapeError('resizeBicubic', `needs x [N, C, H, W], got ${fmtShape(x.shape)}`);
  const [, , h, w] = x.shape;
  const ac = o.alignCorners ?? false;
  const mh = tensor(bicubicMatrix(h, size[0], ac), { shape: [size[0], h], backend: x.backend });
  const mwT = permute(tensor(bicubicMatrix(w, size[1], ac), { shape: [size[1], w], backend: x.backend }), [1, 0]);
  return matmul(mh, matmul(x, mwT));
}

export interface ClipPreprocessOptions {
  /** Output side (default 224, modules.py:365; use the encoder's input_resolution for other configs). */
  size?: number;
}

/**
 * Zero123's `FrozenCLIPImageEmbedder.preprocess` (modules.py:363-371) for an image batch [N, 3, H, W] in
 * [-1, 1] (gradio_new.py:380 maps [0, 1] to [-1, 1] first): kornia.geometry.resize to 224x224 with
 * interpolation='bicubic', align_corners=True, antialias=False (l.365-367; l.353: antialias defaults to False;
 * kornia then calls F.interpolate(mode='bicubic', align_corners=True) with no blur), THEN (x + 1) / 2
 * (l.368), then (x - CLIP_MEAN) / CLIP_STD per channel (l.370). No centre crop and no clamp: bicubic overshoot
 * outside [-1, 1] is kept.
 */
export function zero123ClipPreprocess(image: Tensor, o: ClipPreprocessOptions = {}): Tensor {
  const op = 'zero123ClipPreprocess';
  if (image.rank !== 4 || image.shape[1] !== 3) throw new ShapeError(op, `needs an RGB batch [N, 3, H, W] in [-1, 1], got ${fmtShape(image.shape)}`);
  const size = o.size ?? 224;
  if (!isPosInt(size)) throw new ShapeError(op, `size must be a positive integer, got ${size}`);
  return tidyUnlessRecording(() => {
    const [, , h, w] = image.shape;
    const r = h === size && w === size ? image : resizeBicubic(image, [size, size], { alignCorners: true });
    const mean = tensor(Float32Array.from(CLIP_MEAN), { shape: [1, 3, 1, 1], backend: image.backend });
    const std = tensor(Float32Array.from(CLIP_STD), { shape: [1, 3, 1, 1], backend: image.backend });
    return r.add(1).div(2).sub(mean).div(std);
  });
}
