/**
 * Stable Diffusion v1's first stage: CompVis `AutoencoderKL` (ldm/models/autoencoder.py:285) with the
 * `Encoder` / `Decoder` of ldm/modules/diffusionmodules/model.py and `DiagonalGaussianDistribution` of
 * ldm/modules/distributions/distributions.py (CompVis/stable-diffusion @ 21f890f9). Submodules carry the
 * original names, so a checkpoint's `first_stage_model.*` keys load with `loadWeights(vae, file, { prefix:
 * 'first_stage_model.' })`.
 *
 * Images are [N, in_channels, H, W] in [-1, 1] (SD's convention), with H and W multiples of
 * `downsampleFactor` = 2^(len(ch_mult) - 1) (8 for SD). `encode`/`decode` are the original's and apply no
 * latent scale; `encodeLatent`/`decodeLatent` are the diffusion-space ones (times / over SD_LATENT_SCALE).
 * Under noGrad each block frees its intermediates as it goes (tidyUnlessRecording); with gradient recording on
 * they stay for the tape and the caller's tidy frees them.
 */
import { ShapeError, checkpoint, fmtShape, pad, randn, scaledDotProductAttention, tidyUnlessRecording, upsample } from '@latentdem/tensor';
import type { Backend, BackendName, Generator, Tensor } from '@latentdem/tensor';
import { Conv2d, Dropout, GroupNorm, Module, ModuleList } from '@latentdem/nn';
import { SD_LATENT_SCALE } from '../schedule.js';
import { ConfigError } from './config.js';

/** `ddconfig` of the original (the keyword arguments of Encoder and Decoder), under its own names. */
export interface AutoencoderDDConfig {
  double_z: boolean;
  z_channels: number;
  /** Nominal image size; it only decides where `attn_resolutions` puts attention. */
  resolution: number;
  in_channels: number;
  out_ch: number;
  ch: number;
  ch_mult: readonly number[];
  num_res_blocks: number;
  /** Resolutions (image size divided by 2^level, from `resolution`) whose levels get an AttnBlock after each ResnetBlock. */
  attn_resolutions: readonly number[];
  dropout: number;
  /** Optional arguments of the original with their defaults; other values are refused (ConfigError). */
  resamp_with_conv?: boolean;
  use_linear_attn?: boolean;
  attn_type?: 'vanilla' | 'none';
  give_pre_end?: boolean;
  tanh_out?: boolean;
}

/** The original AutoencoderKL's constructor arguments (lossconfig, monitor and the like are accepted and ignored). */
export interface AutoencoderKLConfig {
  ddconfig: AutoencoderDDConfig;
  embed_dim: number;
  lossconfig?: unknown;
  monitor?: string;
  image_key?: string;
}

/** SD v1.x's first stage: configs/stable-diffusion/v1-inference.yaml:46-67 (first_stage_config.params). */
export const SD15_VAE_CONFIG: AutoencoderKLConfig = {
  embed_dim: 4,
  ddconfig: {
    double_z: true, z_channels: 4, resolution: 256, in_channels: 3, out_ch: 3, ch: 128,
    ch_mult: [1, 2, 4, 4], num_res_blocks: 2, attn_resolutions: [], dropout: 0.0,
  },
};

export interface ModelInitOptions { backend?: BackendName | Backend; generator?: Generator }

const DD_KEYS = new Set(['double_z', 'z_channels', 'resolution', 'in_channels', 'out_ch', 'ch', 'ch_mult', 'num_res_blocks',
  'attn_resolutions', 'dropout', 'resamp_with_conv', 'use_linear_attn', 'attn_type', 'give_pre_end', 'tanh_out']);
// Normalize() in model.py:38: GroupNorm(num_groups=32, eps=1e-6, affine=True).
const NORM_GROUPS = 32;
const NORM_EPS = 1e-6;
// DiagonalGaussianDistribution clamps logvar to [-30, 20] (distributions.py:28).
const LOGVAR_MIN = -30;
const LOGVAR_MAX = 20;

const posInt = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v > 0;

/** Checks a ddconfig; every refusal names the option. */
export function checkDDConfig(op: string, dd: AutoencoderDDConfig): void {
  if (typeof dd !== 'object' || dd === null) throw new ConfigError(op, 'ddconfig', 'must be an object');
  for (const k of Object.keys(dd)) if (!DD_KEYS.has(k)) throw new ConfigError(op, k, 'is not an option of Encoder/Decoder that this implementation knows');
  for (const k of ['z_channels', 'in_channels', 'out_ch', 'ch', 'num_res_blocks', 'resolution'] as const) {
    if (!posInt(dd[k])) throw new ConfigError(op, k, `must be a positive integer, got ${String(dd[k])}`);
  }
  if (!Array.isArray(dd.ch_mult) || dd.ch_mult.length === 0 || !dd.ch_mult.every(posInt)) {
    throw new ConfigError(op, 'ch_mult', `must be a non-empty list of positive integers, got ${JSON.stringify(dd.ch_mult)}`);
  }
  const bad = dd.ch_mult.find((m) => (dd.ch * m) % NORM_GROUPS !== 0);
  if (bad !== undefined) throw new ConfigError(op, 'ch', `ch * ch_mult = ${dd.ch} * ${bad} must be a multiple of GroupNorm's ${NORM_GROUPS} groups`);
  if (!Array.isArray(dd.attn_resolutions) || !dd.attn_resolutions.every(posInt)) {
    throw new ConfigError(op, 'attn_resolutions', `must be a list of positive integers, got ${JSON.stringify(dd.attn_resolutions)}`);
  }
  if (typeof dd.double_z !== 'boolean') throw new ConfigError(op, 'double_z', `must be a boolean, got ${String(dd.double_z)}`);
  if (!(typeof dd.dropout === 'number' && dd.dropout >= 0 && dd.dropout <= 1)) throw new ConfigError(op, 'dropout', `must be in [0, 1], got ${String(dd.dropout)}`);
  if (dd.resamp_with_conv === false) throw new ConfigError(op, 'resamp_with_conv', 'false (average-pool / conv-free resampling) is not supported; SD uses true');
  if (dd.use_linear_attn === true) throw new ConfigError(op, 'use_linear_attn', 'linear attention is not supported; SD uses vanilla attention');
  if (dd.attn_type !== undefined && dd.attn_type !== 'vanilla' && dd.attn_type !== 'none') {
    throw new ConfigError(op, 'attn_type', `'${String(dd.attn_type)}' is not supported (only 'vanilla' and 'none')`);
  }
}

/** `nonlinearity` (model.py:33, x * sigmoid(x)) after Normalize, fused into the GroupNorm kernel. */
const normAct = (norm: GroupNorm, x: Tensor): Tensor => norm.forwardSilu(x);
const normalize = (c: number, o: ModelInitOptions): GroupNorm => new GroupNorm(NORM_GROUPS, c, { eps: NORM_EPS, backend: o.backend });
const conv = (cin: number, cout: number, k: number, o: ModelInitOptions, extra: { stride?: number; padding?: number } = {}): Conv2d =>
  new Conv2d(cin, cout, k, { padding: k === 3 ? 1 : 0, ...extra, backend: o.backend, generator: o.generator });

/** model.py:82 ResnetBlock with temb_channels = 0 (no temb_proj) and a 1x1 nin_shortcut when channels change. */
export class ResnetBlock extends Module {
  readonly norm1: GroupNorm; readonly conv1: Conv2d; readonly norm2: GroupNorm; readonly dropout: Dropout; readonly conv2: Conv2d;
  readonly nin_shortcut: Conv2d | null;
  constructor(readonly inChannels: number, readonly outChannels: number, dropout: number, o: ModelInitOptions = {}) {
    super();
    this.norm1 = this.registerModule('norm1', normalize(inChannels, o));
    this.conv1 = this.registerModule('conv1', conv(inChannels, outChannels, 3, o));
    this.norm2 = this.registerModule('norm2', normalize(outChannels, o));
    this.dropout = this.registerModule('dropout', new Dropout(dropout, { generator: o.generator }));
    this.conv2 = this.registerModule('conv2', conv(outChannels, outChannels, 3, o));
    this.nin_shortcut = inChannels !== outChannels ? this.registerModule('nin_shortcut', conv(inChannels, outChannels, 1, o)) : null;
  }
  /** Activation checkpointing (AutoencoderKL.gradientCheckpointing()). */
  checkpointed = false;
  forward(x: Tensor): Tensor {
    const body = (x: Tensor): Tensor => tidyUnlessRecording(() => {
      let h = this.conv1.forward(normAct(this.norm1, x));
      h = this.conv2.forward(this.dropout.forward(normAct(this.norm2, h)));
      return (this.nin_shortcut ? this.nin_shortcut.forward(x) : x).add(h);
    });
    return this.checkpointed && !(this.training && this.dropout.p > 0) ? checkpoint(body, [x], this.parameters()) : body(x);
  }
}

/** model.py:150 AttnBlock: single-head self-attention over the H*W positions with 1x1-conv q, k, v, proj_out. */
export class AttnBlock extends Module {
  readonly norm: GroupNorm; readonly q: Conv2d; readonly k: Conv2d; readonly v: Conv2d; readonly proj_out: Conv2d;
  constructor(readonly channels: number, o: ModelInitOptions = {}) {
    super();
    this.norm = this.registerModule('norm', normalize(channels, o));
    this.q = this.registerModule('q', conv(channels, channels, 1, o));
    this.k = this.registerModule('k', conv(channels, channels, 1, o));
    this.v = this.registerModule('v', conv(channels, channels, 1, o));
    this.proj_out = this.registerModule('proj_out', conv(channels, channels, 1, o));
  }
  /** Activation checkpointing (AutoencoderKL.gradientCheckpointing()). */
  checkpointed = false;
  forward(x: Tensor): Tensor {
    return this.checkpointed ? checkpoint((x) => this.attend(x), [x], this.parameters()) : this.attend(x);
  }
  private attend(x: Tensor): Tensor {
    return tidyUnlessRecording(() => {
      const [b, c, hh, ww] = x.shape;
      const h = this.norm.forward(x);
      const seq = (t: Tensor): Tensor => t.reshape([b, c, hh * ww]).permute([0, 2, 1]);   // [b, hw, c]
      // model.py:191: scores scaled by int(c)**(-0.5), softmax over the keys.
      const a = scaledDotProductAttention(seq(this.q.forward(h)), seq(this.k.forward(h)), seq(this.v.forward(h)), { scale: c ** -0.5 });
      return x.add(this.proj_out.forward(a.permute([0, 2, 1]).reshape([b, c, hh, ww])));
    });
  }
}

/** model.py:60 Downsample with conv: zero pad right and bottom by one, then a 3x3 conv with stride 2 and no padding. */
export class Downsample extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, o: ModelInitOptions = {}) {
    super();
    this.conv = this.registerModule('conv', conv(channels, channels, 3, o, { stride: 2, padding: 0 }));
  }
  forward(x: Tensor): Tensor { return this.conv.forward(pad(x, [0, 1, 0, 1])); }
}

/** model.py:42 Upsample with conv: nearest x2, then a 3x3 conv with padding 1. */
export class Upsample extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, o: ModelInitOptions = {}) {
    super();
    this.conv = this.registerModule('conv', conv(channels, channels, 3, o));
  }
  forward(x: Tensor): Tensor { return this.conv.forward(upsample(x, { scaleFactor: 2, mode: 'nearest' })); }
}

/** One resolution level: `block.{j}` ResnetBlocks, `attn.{j}` AttnBlocks (if any), and the resampler. */
class Level extends Module {
  readonly block = this.registerModule('block', new ModuleList<ResnetBlock>());
  readonly attn = this.registerModule('attn', new ModuleList<AttnBlock>());
  resample: Downsample | Upsample | null = null;
  forward(x: Tensor): Tensor {
    return tidyUnlessRecording(() => {
      let h = x;
      for (let j = 0; j < this.block.length; j++) {
        h = this.block.at(j).forward(h);
        if (this.attn.length > 0) h = this.attn.at(j).forward(h);
      }
      return this.resample ? this.resample.forward(h) : h;
    });
  }
}

/** `mid`: block_1, attn_1, block_2 at the lowest resolution. */
class Mid extends Module {
  readonly block_1: ResnetBlock; readonly attn_1: AttnBlock | null; readonly block_2: ResnetBlock;
  constructor(c: number, dd: AutoencoderDDConfig, o: ModelInitOptions) {
    super();
    this.block_1 = this.registerModule('block_1', new ResnetBlock(c, c, dd.dropout, o));
    // make_attn(attn_type='none') is nn.Identity (model.py:210): no parameters.
    this.attn_1 = dd.attn_type === 'none' ? null : this.registerModule('attn_1', new AttnBlock(c, o));
    this.block_2 = this.registerModule('block_2', new ResnetBlock(c, c, dd.dropout, o));
  }
  forward(x: Tensor): Tensor {
    const h = this.block_1.forward(x);
    return this.block_2.forward(this.attn_1 ? this.attn_1.forward(h) : h);
  }
}

const attnAt = (dd: AutoencoderDDConfig, res: number): boolean => dd.attn_type !== 'none' && dd.attn_resolutions.includes(res);

/** model.py:368 Encoder: image [N, in_channels, H, W] -> [N, 2*z_channels (double_z) or z_channels, H/f, W/f]. */
export class Encoder extends Module {
  readonly conv_in: Conv2d;
  readonly down: ModuleList<Level>;
  readonly mid: Mid;
  readonly norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  constructor(readonly dd: AutoencoderDDConfig, o: ModelInitOptions = {}) {
    super();
    checkDDConfig('Encoder', dd);
    const { ch, ch_mult } = dd;
    this.conv_in = this.registerModule('conv_in', conv(dd.in_channels, ch, 3, o));
    this.down = this.registerModule('down', new ModuleList<Level>());
    let res = dd.resolution;
    let blockIn = ch;
    for (let i = 0; i < ch_mult.length; i++) {
      const level = new Level();
      const blockOut = ch * ch_mult[i];
      for (let j = 0; j < dd.num_res_blocks; j++) {
        level.block.append(new ResnetBlock(blockIn, blockOut, dd.dropout, o));
        blockIn = blockOut;
        if (attnAt(dd, res)) level.attn.append(new AttnBlock(blockIn, o));
      }
      if (i !== ch_mult.length - 1) {
        level.resample = level.registerModule('downsample', new Downsample(blockIn, o));
        res = Math.floor(res / 2);
      }
      this.down.append(level);
    }
    this.mid = this.registerModule('mid', new Mid(blockIn, dd, o));
    this.norm_out = this.registerModule('norm_out', normalize(blockIn, o));
    this.conv_out = this.registerModule('conv_out', conv(blockIn, dd.double_z ? 2 * dd.z_channels : dd.z_channels, 3, o));
  }
  forward(x: Tensor): Tensor {
    let h = this.conv_in.forward(x);
    for (const level of this.down) h = level.forward(h);
    h = this.mid.forward(h);
    return this.conv_out.forward(normAct(this.norm_out, h));
  }
}

/** model.py:462 Decoder: [N, z_channels, h, w] -> [N, out_ch, h*f, w*f]; `up.{i}` is level i (up.0 = full resolution). */
export class Decoder extends Module {
  readonly conv_in: Conv2d;
  readonly mid: Mid;
  readonly up: ModuleList<Level>;
  readonly norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  constructor(readonly dd: AutoencoderDDConfig, o: ModelInitOptions = {}) {
    super();
    checkDDConfig('Decoder', dd);
    const { ch, ch_mult } = dd;
    const n = ch_mult.length;
    let blockIn = ch * ch_mult[n - 1];
    let res = Math.floor(dd.resolution / 2 ** (n - 1));
    this.conv_in = this.registerModule('conv_in', conv(dd.z_channels, blockIn, 3, o));
    this.mid = this.registerModule('mid', new Mid(blockIn, dd, o));
    // Built deepest level first (the channel counts flow that way), registered as up.0 .. up.{n-1} like the
    // original's insert(0, ...) (model.py:525).
    const levels: Level[] = [];
    for (let i = n - 1; i >= 0; i--) {
      const level = new Level();
      const blockOut = ch * ch_mult[i];
      for (let j = 0; j < dd.num_res_blocks + 1; j++) {
        level.block.append(new ResnetBlock(blockIn, blockOut, dd.dropout, o));
        blockIn = blockOut;
        if (attnAt(dd, res)) level.attn.append(new AttnBlock(blockIn, o));
      }
      if (i !== 0) {
        level.resample = level.registerModule('upsample', new Upsample(blockIn, o));
        res *= 2;
      }
      levels[i] = level;
    }
    this.up = this.registerModule('up', new ModuleList<Level>(levels));
    this.norm_out = this.registerModule('norm_out', normalize(blockIn, o));
    this.conv_out = this.registerModule('conv_out', conv(blockIn, dd.out_ch, 3, o));
  }
  forward(z: Tensor): Tensor {
    let h = this.mid.forward(this.conv_in.forward(z));
    for (let i = this.up.length - 1; i >= 0; i--) h = this.up.at(i).forward(h);
    if (this.dd.give_pre_end) return h;
    h = this.conv_out.forward(normAct(this.norm_out, h));
    return this.dd.tanh_out ? h.tanh() : h;
  }
}

/** Where sample() takes its standard normal draw from: given noise, else a generator, else a fresh stream of `seed`. */
export interface PosteriorSampleOptions { noise?: Tensor; seed?: number; generator?: Generator }

/**
 * distributions.py:24 DiagonalGaussianDistribution over moments [N, 2C, h, w]: mean = moments[:, :C],
 * logvar = clamp(moments[:, C:], -30, 20), std = exp(logvar / 2).
 */
export class DiagonalGaussian {
  readonly mean: Tensor;
  readonly logvar: Tensor;
  readonly std: Tensor;
  constructor(readonly moments: Tensor) {
    if (moments.rank < 2 || moments.shape[1] % 2 !== 0) throw new ShapeError('DiagonalGaussian', `moments ${fmtShape(moments.shape)} need an even channel count (mean and logvar)`);
    const c = moments.shape[1] / 2;
    this.mean = moments.narrow(1, 0, c);
    this.logvar = moments.narrow(1, c, c).clamp(LOGVAR_MIN, LOGVAR_MAX);
    this.std = this.logvar.mul(0.5).exp();
  }
  /**
   * mean + std * eps, eps ~ N(0, I) from `noise` (shape of mean), else `generator`, else a fresh stream of
   * `seed` (default 0, as randn: pass a generator when sampling repeatedly).
   */
  sample(o: PosteriorSampleOptions = {}): Tensor {
    let eps = o.noise;
    if (eps) {
      if (eps.shape.length !== this.mean.rank || eps.shape.some((d, i) => d !== this.mean.shape[i])) {
        throw new ShapeError('DiagonalGaussian.sample', `noise ${fmtShape(eps.shape)} must have the shape of the mean ${fmtShape(this.mean.shape)}`);
      }
    } else {
      eps = randn(this.mean.shape, { backend: this.mean.backend, ...(o.generator ? { generator: o.generator } : { seed: o.seed ?? 0 }) });
    }
    return this.mean.add(this.std.mul(eps));
  }
  /** The mean (distributions.py mode()). */
  mode(): Tensor { return this.mean; }
}

export interface EncodeLatentOptions extends Omit<PosteriorSampleOptions, 'noise'> {
  /** Draw from the posterior (true) or take its mean (false, default). */
  sample?: boolean;
  noise?: Tensor;
}

/** autoencoder.py:285 AutoencoderKL: encoder, quant_conv (2z -> 2*embed_dim, 1x1), post_quant_conv (embed_dim -> z, 1x1), decoder. */
export class AutoencoderKL extends Module {
  readonly encoder: Encoder;
  readonly decoder: Decoder;
  readonly quant_conv: Conv2d;
  readonly post_quant_conv: Conv2d;
  readonly config: AutoencoderKLConfig;
  constructor(config: AutoencoderKLConfig, o: ModelInitOptions = {}) {
    super();
    const op = 'AutoencoderKL';
    if (typeof config !== 'object' || config === null) throw new ConfigError(op, 'config', 'must be an object with ddconfig and embed_dim');
    const known = new Set(['ddconfig', 'embed_dim', 'lossconfig', 'monitor', 'image_key', 'ignore_keys', 'ckpt_path', 'colorize_nlabels']);
    for (const k of Object.keys(config)) if (!known.has(k)) throw new ConfigError(op, k, 'is not an argument of AutoencoderKL');
    const extra = config as { ckpt_path?: unknown; colorize_nlabels?: unknown };
    if (extra.ckpt_path != null) throw new ConfigError(op, 'ckpt_path', 'is not read here: build the model, then loadWeights(model, file, { prefix })');
    if (extra.colorize_nlabels != null) throw new ConfigError(op, 'colorize_nlabels', 'segmentation colorizing is not supported');
    if (!posInt(config.embed_dim)) throw new ConfigError(op, 'embed_dim', `must be a positive integer, got ${String(config.embed_dim)}`);
    checkDDConfig(op, config.ddconfig);
    const dd = config.ddconfig;
    // autoencoder.py:301 asserts double_z: the encoder must output mean and logvar.
    if (!dd.double_z) throw new ConfigError(op, 'double_z', 'must be true for the KL autoencoder (the encoder outputs mean and logvar)');
    if (dd.give_pre_end) throw new ConfigError(op, 'give_pre_end', 'true makes decode return pre-output features; not supported in AutoencoderKL');
    this.config = config;
    this.encoder = this.registerModule('encoder', new Encoder(dd, o));
    this.decoder = this.registerModule('decoder', new Decoder(dd, o));
    this.quant_conv = this.registerModule('quant_conv', conv(2 * dd.z_channels, 2 * config.embed_dim, 1, o));
    this.post_quant_conv = this.registerModule('post_quant_conv', conv(config.embed_dim, dd.z_channels, 1, o));
  }

  /**
   * Activation checkpointing of every ResnetBlock and AttnBlock (not in the original, which never back-propagates
   * through its autoencoder at sampling time): gradients through decode/encode keep only block inputs and
   * recompute the rest. Same values; for the posterior samplers' d/dz through the decoder.
   */
  gradientCheckpointing(flag = true): this {
    return this.apply((m) => { if (m instanceof ResnetBlock || m instanceof AttnBlock) m.checkpointed = flag; });
  }

  /** Image side over latent side: 2^(len(ch_mult) - 1) (8 for SD). */
  get downsampleFactor(): number { return 2 ** (this.config.ddconfig.ch_mult.length - 1); }
  /** Latent channels (embed_dim: 4 for SD). */
  get latentChannels(): number { return this.config.embed_dim; }

  /** The posterior q(z | image) for an image [N, in_channels, H, W] in [-1, 1], H and W multiples of downsampleFactor. */
  encode(image: Tensor): DiagonalGaussian {
    const dd = this.config.ddconfig;
    const f = this.downsampleFactor;
    const op = 'AutoencoderKL.encode';
    if (image.rank !== 4) throw new ShapeError(op, `needs an image batch [N, ${dd.in_channels}, H, W], got ${fmtShape(image.shape)}`);
    if (image.shape[1] !== dd.in_channels) throw new ShapeError(op, `image ${fmtShape(image.shape)} has ${image.shape[1]} channels, the model takes ${dd.in_channels} (in_channels)`);
    const [h, w] = [image.shape[2], image.shape[3]];
    if (h % f !== 0 || w % f !== 0 || h === 0 || w === 0) {
      throw new ShapeError(op, `image ${fmtShape(image.shape)}: height ${h} and width ${w} must be positive multiples of the downsampling factor ${f} (2^(len(ch_mult)-1)); pad the image first`);
    }
    return new DiagonalGaussian(this.quant_conv.forward(this.encoder.forward(image)));
  }

  /** decoder(post_quant_conv(z)) for z [N, embed_dim, h, w] (unscaled): the image [N, out_ch, h*f, w*f], nominally in [-1, 1]. */
  decode(z: Tensor): Tensor {
    const op = 'AutoencoderKL.decode';
    const c = this.config.embed_dim;
    if (z.rank !== 4 || z.shape[1] !== c) throw new ShapeError(op, `needs a latent [N, ${c}, h, w] (embed_dim ${c}), got ${fmtShape(z.shape)}`);
    if (z.shape[2] === 0 || z.shape[3] === 0) throw new ShapeError(op, `latent ${fmtShape(z.shape)} is empty`);
    return this.decoder.forward(this.post_quant_conv.forward(z));
  }

  /** The diffusion-space latent SD_LATENT_SCALE * z of an image in [-1, 1], z the posterior mode (default) or a sample. */
  encodeLatent(image: Tensor, o: EncodeLatentOptions = {}): Tensor {
    const post = this.encode(image);
    return (o.sample ? post.sample(o) : post.mode()).mul(SD_LATENT_SCALE);
  }

  /** The image in [-1, 1] of a diffusion-space latent: decode(z / SD_LATENT_SCALE). */
  decodeLatent(z: Tensor): Tensor {
    return this.decode(z.div(SD_LATENT_SCALE));
  }
}
