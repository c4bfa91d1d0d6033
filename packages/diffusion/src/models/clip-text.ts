/**
 * Stable Diffusion v1's text encoder: CLIP's text transformer (openai/CLIP `clip/model.py` at d05afc43:
 * token + positional embedding, causal pre-LN transformer with QuickGELU, ln_final) under the Hugging Face
 * `CLIPTextModel` names that SD v1 checkpoints store below `cond_stage_model.transformer.` (CompVis
 * `ldm/modules/encoders/modules.py:137-159`, FrozenCLIPEmbedder, returns `last_hidden_state`). So
 * `loadWeights(enc, file, { prefix: 'cond_stage_model.transformer.' })` loads it from a full SD checkpoint.
 *
 * `encodePrompt` tokenizes as SD does and caches results by content hash (weights + token ids), in memory and,
 * when asked, in a directory of small safetensors files.
 */
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BackendMismatchError, DTypeError, DeviceLimitError, ShapeError, Tensor, arange, concat, fmtShape, noGrad, scaledDotProductAttention, tensor, tidy, tidyUnlessRecording } from '@latentdem/tensor';
import type { Backend, BackendName, Generator } from '@latentdem/tensor';
import { Embedding, LayerNorm, Linear, Module, ModuleList, SafetensorsFile, saveSafetensors } from '@latentdem/nn';
import { ConfigError } from './config.js';
import type { ClipPadding, ClipTokenizer } from './clip-tokenizer.js';

/**
 * Hugging Face `CLIPTextConfig`'s arguments under their names (what a fixture's `hf_equivalent.CLIPTextConfig`
 * or a model's config.json `text_config` holds). openai/CLIP's names: transformer_width = hidden_size,
 * transformer_heads = num_attention_heads, transformer_layers = num_hidden_layers, context_length =
 * max_position_embeddings; its MLP width is always 4 * width (model.py:178).
 */
export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  /** 'quick_gelu' (x * sigmoid(1.702 x), openai CLIP and SD v1; the default) or 'gelu' (exact erf). */
  hidden_act?: 'quick_gelu' | 'gelu';
  /** Default 1e-5 (torch's LayerNorm default, used by openai CLIP and HF). */
  layer_norm_eps?: number;
}

/**
 * SD 1.x's text encoder, openai CLIP ViT-L/14's text tower (`openai/clip-vit-large-patch14`, FrozenCLIPEmbedder's
 * default version, modules.py:139): width 768, 12 layers, heads = width // 64 = 12 (clip/model.py:418-422
 * build_model), MLP 4 * 768 = 3072 (model.py:178), 77 positions and 49408 ids (clip.py:205,
 * simple_tokenizer.py:67-73), QuickGELU (model.py:166-168), LayerNorm eps 1e-5. The same numbers are the
 * `text_config` of the Hugging Face model's config.json. 123,060,480 parameters (see clipTextParameterCount).
 */
export const SD15_CLIP_TEXT_CONFIG: Readonly<ClipTextConfig> = Object.freeze({
  vocab_size: 49408,
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
});

/** Where SD v1 checkpoints keep the text encoder (modules.py:142 `self.transformer = CLIPTextModel(...)`). */
export const SD_CLIP_TEXT_PREFIX = 'cond_stage_model.transformer.';

export type ResolvedClipTextConfig = Required<ClipTextConfig>;

const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/** Checks a config and fills in the defaults; ConfigError naming the option otherwise. */
export function checkClipTextConfig(config: ClipTextConfig): ResolvedClipTextConfig {
  const op = 'ClipTextEncoder';
  const c = config as unknown as Record<string, unknown>;
  for (const k of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings'] as const) {
    if (!isPosInt(c[k])) throw new ConfigError(op, k, `must be a positive integer, got ${JSON.stringify(c[k])}`);
  }
  if (config.hidden_size % config.num_attention_heads !== 0) {
    throw new ConfigError(op, 'num_attention_heads', `hidden_size ${config.hidden_size} is not divisible by ${config.num_attention_heads} heads`);
  }
  const act = config.hidden_act ?? 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') throw new ConfigError(op, 'hidden_act', `${JSON.stringify(act)} is not supported (only "quick_gelu" or "gelu")`);
  const eps = config.layer_norm_eps ?? 1e-5;
  if (!(typeof eps === 'number' && eps > 0)) throw new ConfigError(op, 'layer_norm_eps', `must be a positive number, got ${JSON.stringify(eps)}`);
  return {
    vocab_size: config.vocab_size, hidden_size: config.hidden_size, intermediate_size: config.intermediate_size,
    num_hidden_layers: config.num_hidden_layers, num_attention_heads: config.num_attention_heads,
    max_position_embeddings: config.max_position_embeddings, hidden_act: act, layer_norm_eps: eps,
  };
}

/** Parameter count of a config, without building it (123,060,480 for SD15_CLIP_TEXT_CONFIG). */
export function clipTextParameterCount(config: ClipTextConfig): number {
  const c = checkClipTextConfig(config);
  const w = c.hidden_size; const f = c.intermediate_size;
  const layer = 4 * (w * w + w) + (w * f + f) + (f * w + w) + 2 * 2 * w;
  return c.vocab_size * w + c.max_position_embeddings * w + c.num_hidden_layers * layer + 2 * w;
}

export interface ClipTextInitOptions { backend?: BackendName | Backend; generator?: Generator; tokenizer?: ClipTokenizer }

/** Host token ids: one row per batch item. */
export type HostIds = readonly (readonly number[] | Int32Array)[];

/**
 * CLIPTextEmbeddings: token_embedding [vocab, width], position_embedding [positions, width], and the
 * `position_ids` buffer ([1, positions], arange) that SD v1 checkpoints store. It is registered so strict
 * loading accepts it, but it is not read: positions are always 0..L-1 (what the buffer holds in every correct
 * checkpoint; openai CLIP adds its positional_embedding the same way, model.py:346).
 *
 * The token table stays on the cpu backend when the model's backend cannot hold it in one buffer (SD's
 * 49408 x 768 float32 table is 152 MB; lavapipe binds at most 128 MiB): lookups then gather rows on the host
 * and upload [B, L, width], and take host ids only. `tokenTableOnHost` says which case holds.
 */
export class ClipTextEmbeddings extends Module {
  readonly token_embedding: Embedding;
  readonly position_embedding: Embedding;
  readonly tokenTableOnHost: boolean;
  constructor(c: ResolvedClipTextConfig, o: ClipTextInitOptions = {}) {
    super();
    const io = { backend: o.backend, generator: o.generator };
    let table: Embedding;
    let onHost = false;
    try {
      table = new Embedding(c.vocab_size, c.hidden_size, io);
    } catch (e) {
      if (!(e instanceof DeviceLimitError)) throw e;
      table = new Embedding(c.vocab_size, c.hidden_size, { ...io, backend: 'cpu' });
      onHost = true;
    }
    this.tokenTableOnHost = onHost;
    this.token_embedding = this.registerModule('token_embedding', table);
    this.position_embedding = this.registerModule('position_embedding', new Embedding(c.max_position_embeddings, c.hidden_size, io));
    const n = c.max_position_embeddings;
    this.registerBuffer('position_ids', tensor(Int32Array.from({ length: n }, (_, i) => i), { shape: [1, n], backend: o.backend }));
  }

  /**
   * ids [B, L] int32 (a tensor: one-hot lookup, differentiable) or host rows (row gathers, no vocab-sized
   * product; ids checked) -> [B, L, width] on the position table's backend. With the token table on the host
   * only host rows are accepted, and no gradient reaches the token table.
   */
  forward(ids: Tensor | HostIds): Tensor {
    const op = 'ClipTextEmbeddings';
    const weight = this.token_embedding.weight;
    const pos = this.position_embedding.weight;
    const [vocab, width] = weight.shape;
    let tok: Tensor; let l: number;
    if (ids instanceof Tensor && this.tokenTableOnHost && ids.backend.name === 'cpu') {
      // A cpu tensor's ids can be read synchronously: gather on the host as for host rows.
      const flat = cpuArray(ids.contiguous());
      const [b, n] = ids.shape;
      ids = Array.from({ length: b }, (_, r) => flat.subarray(r * n, (r + 1) * n) as Int32Array);
    }
    if (ids instanceof Tensor) {
      if (weight.backend !== ids.backend || this.tokenTableOnHost) {
        throw new BackendMismatchError(op, `ids are on ${ids.backend.name} but the token table (${vocab} x ${width}) lives on ${weight.backend.name}${this.tokenTableOnHost ? ' because it exceeds the device\'s largest buffer: pass host ids (number[][] or Int32Array rows) or cpu ids, or use encodePrompt' : ''}`);
      }
      tok = this.token_embedding.forward(ids);
      l = ids.shape[1];
    } else {
      const rows = ids;
      l = rows[0].length;
      for (const row of rows) {
        for (let i = 0; i < row.length; i++) {
          const id = row[i];
          if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new ShapeError(op, `token id ${id} is outside the vocabulary (0..${vocab - 1})`);
        }
      }
      if (weight.backend === pos.backend) {
        const pieces: Tensor[] = [];
        for (const row of rows) for (let i = 0; i < row.length; i++) pieces.push(weight.narrow(0, row[i], 1));
        tok = concat(pieces, 0).reshape([rows.length, l, width]);
      } else {
        const table = cpuArray(weight) as Float32Array;
        const out = new Float32Array(rows.length * l * width);
        let k = 0;
        for (const row of rows) for (let i = 0; i < row.length; i++, k++) out.set(table.subarray(row[i] * width, (row[i] + 1) * width), k * width);
        tok = tensor(out, { shape: [rows.length, l, width], backend: pos.backend });
      }
    }
    return tok.add(pos.narrow(0, 0, l));
  }
}

/**
 * The values of a contiguous tensor on the cpu backend, read synchronously from its storage (the cpu storage
 * holds a typed array `data`, as safetensors.ts's hostStorage also relies on).
 */
function cpuArray(t: Tensor): Float32Array | Int32Array {
  const data = (t.storage as unknown as { data?: unknown }).data;
  const contiguous = t.strides.every((s, i) => s === t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
  if (t.backend.name !== 'cpu' || !(data instanceof Float32Array || data instanceof Int32Array) || !contiguous) {
    throw new DTypeError('ClipTextEmbeddings', `expected a contiguous cpu tensor with host storage (got ${t.dtype} ${fmtShape(t.shape)} on ${t.backend.name})`);
  }
  return data.subarray(t.offset, t.offset + t.size);
}

/** CLIPAttention: q/k/v/out projections with bias; softmax(q k^T / sqrt(head_dim) + causal mask) v per head. */
export class ClipTextAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(readonly width: number, readonly heads: number, o: ClipTextInitOptions = {}) {
    super();
    const io = { backend: o.backend, generator: o.generator };
    this.q_proj = this.registerModule('q_proj', new Linear(width, width, io));
    this.k_proj = this.registerModule('k_proj', new Linear(width, width, io));
    this.v_proj = this.registerModule('v_proj', new Linear(width, width, io));
    this.out_proj = this.registerModule('out_proj', new Linear(width, width, io));
  }
  /** x [B, L, width]; mask: keep-mask [L, L] (nonzero = attend). */
  forward(x: Tensor, mask: Tensor | null): Tensor {
    const [b, l] = x.shape;
    const h = this.heads; const d = this.width / h;
    // nn.MultiheadAttention splits the projected width into contiguous head_dim chunks.
    const heads = (t: Tensor): Tensor => t.reshape([b, l, h, d]).permute([0, 2, 1, 3]);
    const a = scaledDotProductAttention(heads(this.q_proj.forward(x)), heads(this.k_proj.forward(x)), heads(this.v_proj.forward(x)), { mask, scale: 1 / Math.sqrt(d) });
    return this.out_proj.forward(a.permute([0, 2, 1, 3]).reshape([b, l, this.width]));
  }
}

/** CLIPMLP: fc1 -> activation -> fc2 (openai: mlp.c_fc, QuickGELU, mlp.c_proj; model.py:177-181). */
export class ClipTextMlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(width: number, hidden: number, readonly act: 'quick_gelu' | 'gelu', o: ClipTextInitOptions = {}) {
    super();
    const io = { backend: o.backend, generator: o.generator };
    this.fc1 = this.registerModule('fc1', new Linear(width, hidden, io));
    this.fc2 = this.registerModule('fc2', new Linear(hidden, width, io));
  }
  forward(x: Tensor): Tensor {
    const y = this.fc1.forward(x);
    // QuickGELU, model.py:166-168: x * sigmoid(1.702 * x).
    const a = this.act === 'quick_gelu' ? y.mul(y.mul(1.702).sigmoid()) : y.gelu('none');
    return this.fc2.forward(a);
  }
}

/** CLIPEncoderLayer (openai ResidualAttentionBlock, model.py:189-192): x + attn(ln1(x)), then x + mlp(ln2(x)). */
export class ClipTextEncoderLayer extends Module {
  readonly self_attn: ClipTextAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: ClipTextMlp;
  readonly layer_norm2: LayerNorm;
  constructor(c: ResolvedClipTextConfig, o: ClipTextInitOptions = {}) {
    super();
    this.self_attn = this.registerModule('self_attn', new ClipTextAttention(c.hidden_size, c.num_attention_heads, o));
    this.layer_norm1 = this.registerModule('layer_norm1', new LayerNorm(c.hidden_size, { eps: c.layer_norm_eps, backend: o.backend }));
    this.mlp = this.registerModule('mlp', new ClipTextMlp(c.hidden_size, c.intermediate_size, c.hidden_act, o));
    this.layer_norm2 = this.registerModule('layer_norm2', new LayerNorm(c.hidden_size, { eps: c.layer_norm_eps, backend: o.backend }));
  }
  forward(x: Tensor, mask: Tensor | null): Tensor {
    return tidyUnlessRecording(() => {
      const y = x.add(this.self_attn.forward(this.layer_norm1.forward(x), mask));
      return y.add(this.mlp.forward(this.layer_norm2.forward(y)));
    });
  }
}

/** CLIPEncoder: the ModuleList `layers` (openai: transformer.resblocks). */
export class ClipTextLayers extends Module {
  readonly layers: ModuleList<ClipTextEncoderLayer>;
  constructor(c: ResolvedClipTextConfig, o: ClipTextInitOptions = {}) {
    super();
    this.layers = this.registerModule('layers', new ModuleList(Array.from({ length: c.num_hidden_layers }, () => new ClipTextEncoderLayer(c, o))));
  }
}

/** CLIPTextTransformer: embeddings, encoder, final_layer_norm (openai: ln_final). */
export class ClipTextTransformer extends Module {
  readonly embeddings: ClipTextEmbeddings;
  readonly encoder: ClipTextLayers;
  readonly final_layer_norm: LayerNorm;
  constructor(c: ResolvedClipTextConfig, o: ClipTextInitOptions = {}) {
    super();
    this.embeddings = this.registerModule('embeddings', new ClipTextEmbeddings(c, o));
    this.encoder = this.registerModule('encoder', new ClipTextLayers(c, o));
    this.final_layer_norm = this.registerModule('final_layer_norm', new LayerNorm(c.hidden_size, { eps: c.layer_norm_eps, backend: o.backend }));
  }
}

export interface EncodePromptOptions {
  /** Default: the encoder's `tokenizer`. */
  tokenizer?: ClipTokenizer;
  /** Default 'sd_hf': SD v1 pads with <|endoftext|> (HF CLIPTokenizer, padding="max_length", modules.py:153-154). */
  padding?: ClipPadding;
  /** In-memory cache by content hash (default true). Results are copied in and out: the caller owns the tensor. */
  cache?: boolean;
  /**
   * Directory of an on-disk cache: `clip-text-<sha256>.safetensors`, one per prompt (307 KB at SD's size). Read
   * and written only when given; created if absent. A file whose recorded key or shape does not match is
   * recomputed and replaced.
   */
  cacheDir?: string;
}

/** The in-memory prompt cache (content hash -> last_hidden_state [1, L, width] on the host). */
const promptCache = new Map<string, { shape: number[]; data: Float32Array }>();

/** Empties the in-memory prompt cache (all encoders). */
export function clearClipPromptCache(): void { promptCache.clear(); }

const CACHE_FORMAT = 'latentdem clip-text prompt cache v1';

/**
 * SD v1's text encoder (transformers' CLIPTextModel as FrozenCLIPEmbedder uses it): the module tree is
 * `text_model.{embeddings, encoder.layers.N, final_layer_norm}`, so SD checkpoint keys load with the prefix
 * `cond_stage_model.transformer.` (SD_CLIP_TEXT_PREFIX).
 */
export class ClipTextEncoder extends Module {
  readonly config: Readonly<ResolvedClipTextConfig>;
  readonly text_model: ClipTextTransformer;
  /** The tokenizer encodePrompt uses when none is passed. */
  tokenizer: ClipTokenizer | null;
  private weightsHashMemo: Promise<string> | null = null;

  constructor(config: ClipTextConfig, o: ClipTextInitOptions = {}) {
    super();
    this.config = Object.freeze(checkClipTextConfig(config));
    this.text_model = this.registerModule('text_model', new ClipTextTransformer(this.config, o));
    this.tokenizer = o.tokenizer ?? null;
  }

  /** The backend the weights live on (all but a token table kept on the host, see ClipTextEmbeddings). */
  get backend(): Backend { return this.text_model.final_layer_norm.weight!.backend; }

  /**
   * last_hidden_state [B, L, width] (after final_layer_norm, every position) for token ids [B, L], L <= max
   * positions: an int32 tensor, or host rows (same result; gathers embedding rows instead of a one-hot product
   * over the vocabulary, and checks the ids). Causal: position i attends to j <= i (model.py:328-334); padding
   * is attended like any token, as in the original. Tensor ids outside the vocabulary give zero embeddings
   * (PyTorch raises; checking needs a readback).
   */
  forward(ids: Tensor | HostIds): Tensor {
    const op = 'ClipTextEncoder.forward';
    const c = this.config;
    let b: number; let l: number;
    if (!(ids instanceof Tensor)) {
      const rows = ids;
      b = rows.length; l = b ? rows[0].length : 0;
      if (!b || rows.some((r) => r.length !== l)) throw new ShapeError(op, `host ids must be a non-empty list of equally long rows, got lengths [${rows.map((r) => r.length).join(',')}]`);
    } else {
      const t = ids;
      if (t.dtype !== 'int32') throw new DTypeError(op, `ids must be int32, got ${t.dtype} ${fmtShape(t.shape)}`);
      if (t.rank !== 2) throw new ShapeError(op, `ids must be [B, L], got ${fmtShape(t.shape)}`);
      [b, l] = t.shape;
    }
    if (l < 1 || l > c.max_position_embeddings) throw new ShapeError(op, `sequence length ${l} must be in 1..${c.max_position_embeddings} (max_position_embeddings) (ids [${b},${l}])`);
    if (b < 1) throw new ShapeError(op, `empty batch (ids [${b},${l}])`);
    return tidyUnlessRecording(() => {
      const backend = this.backend;
      // Keep-mask of build_attention_mask (-inf above the diagonal, model.py:328-334): j <= i.
      const pos = arange(0, l, 1, { dtype: 'int32', backend });
      const mask = pos.unsqueeze(0).le(pos.unsqueeze(1));
      let x = this.text_model.embeddings.forward(ids);
      for (const layer of this.text_model.encoder.layers) x = layer.forward(x, mask);
      return this.text_model.final_layer_norm.forward(x);
    });
  }

  /**
   * SHA-256 of the config and every parameter (names, shapes, float32 values), computed once per encoder
   * (a readback of all weights). Call forgetWeightsHash() after changing the weights in place (loadWeights,
   * assign, an optimizer step), or the prompt cache would serve results of the old weights.
   */
  weightsHash(): Promise<string> {
    this.weightsHashMemo ??= (async () => {
      const h = createHash('sha256');
      h.update(`ClipTextEncoder ${JSON.stringify(this.config)}\n`);
      const sd = this.stateDict();
      for (const name of [...sd.keys()].sort()) {
        if (name.endsWith('position_ids')) continue; // not read by forward
        const t = sd.get(name)!;
        h.update(`${name} ${t.dtype} ${fmtShape(t.shape)}\n`);
        const data = await t.data();
        h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      }
      return h.digest('hex');
    })();
    const memo = this.weightsHashMemo;
    memo.catch(() => { if (this.weightsHashMemo === memo) this.weightsHashMemo = null; });
    return memo;
  }

  forgetWeightsHash(): void { this.weightsHashMemo = null; }

  private tokenizerFor(opts: EncodePromptOptions, op: string): ClipTokenizer {
    const tok = opts.tokenizer ?? this.tokenizer;
    if (!tok) throw new ConfigError(op, 'tokenizer', 'no tokenizer: pass { tokenizer } or set encoder.tokenizer (ClipTokenizer.fromFile(bpe_simple_vocab_16e6.txt.gz))');
    return tok;
  }

  /** The ids encodePrompt feeds the encoder: [1, max_position_embeddings], SD's convention by default. */
  promptIds(text: string, opts: EncodePromptOptions = {}): Int32Array {
    const op = 'ClipTextEncoder.promptIds';
    const ids = this.tokenizerFor(opts, op).tokenize(text, { padding: opts.padding ?? 'sd_hf', length: this.config.max_position_embeddings, truncate: true });
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] >= this.config.vocab_size) throw new ConfigError(op, 'vocab_size', `token id ${ids[i]} (position ${i}) does not fit the encoder's vocabulary of ${this.config.vocab_size}: tokenizer and encoder do not belong together`);
    }
    return ids;
  }

  /** The content hash encodePrompt caches `text` under: SHA-256 of the weights hash and the token ids. */
  async promptCacheKey(text: string, opts: EncodePromptOptions = {}): Promise<string> {
    return cacheKey(await this.weightsHash(), this.promptIds(text, opts));
  }

  /**
   * FrozenCLIPEmbedder.forward for one prompt (modules.py:152-159): tokenize with SD's padding (truncated to
   * 77), run the encoder, last_hidden_state [1, 77, width] on the encoder's backend, owned by the caller.
   * Cached by content hash (weights and token ids): in memory unless cache: false, and in `cacheDir` when given.
   */
  async encodePrompt(text: string, opts: EncodePromptOptions = {}): Promise<Tensor> {
    const ids = this.promptIds(text, opts);
    const useMemory = opts.cache ?? true;
    const shape = [1, ids.length, this.config.hidden_size];
    const backend = this.backend;
    const key = useMemory || opts.cacheDir ? cacheKey(await this.weightsHash(), ids) : null;
    if (key && useMemory) {
      const hit = promptCache.get(key);
      if (hit) return tensor(hit.data, { shape: hit.shape, backend });
    }
    const file = key && opts.cacheDir ? join(opts.cacheDir, `clip-text-${key}.safetensors`) : null;
    if (file && key) {
      const data = await readCached(file, key, shape);
      if (data) {
        if (useMemory) promptCache.set(key, { shape, data });
        return tensor(data, { shape, backend });
      }
    }
    const out = noGrad(() => tidy(() => this.forward([ids])));
    if (key) {
      const data = Float32Array.from(await out.data());
      if (useMemory) promptCache.set(key, { shape, data });
      if (file && opts.cacheDir) {
        await mkdir(opts.cacheDir, { recursive: true });
        await saveSafetensors(file, { last_hidden_state: out }, {
          overwrite: true,
          metadata: { format: CACHE_FORMAT, key, weights_sha256: await this.weightsHash(), ids: Array.from(ids).join(','), prompt: text },
        });
      }
    }
    return out;
  }

  /** The embedding of the empty prompt "" (LatentDEM's null text condition), cached as encodePrompt caches. */
  emptyPromptEmbedding(opts: EncodePromptOptions = {}): Promise<Tensor> { return this.encodePrompt('', opts); }
}

function cacheKey(weightsHash: string, ids: Int32Array): string {
  return createHash('sha256').update(`${CACHE_FORMAT}\n${weightsHash}\n${Array.from(ids).join(',')}`).digest('hex');
}

/** The cached embedding in `file` if it is one for `key` of `shape`; null when absent or not matching. */
async function readCached(file: string, key: string, shape: readonly number[]): Promise<Float32Array | null> {
  let f: SafetensorsFile;
  try {
    f = await SafetensorsFile.open(file);
  } catch {
    return null;
  }
  try {
    const e = f.entries.get('last_hidden_state');
    if (f.metadata.format !== CACHE_FORMAT || f.metadata.key !== key || !e || e.shape.join(',') !== shape.join(',')) return null;
    const data = await f.readHost('last_hidden_state');
    return data instanceof Float32Array ? data : null;
  } catch {
    return null;
  } finally {
    await f.close();
  }
}
