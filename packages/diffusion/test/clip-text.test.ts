/**
 * SD v1's CLIP text encoder against the golden fixture of openai/CLIP's text transformer
 * (../shared/fixtures/clip_text_small), SD's prompt encoding with its content-hash cache, the SD 1.5 config,
 * and the errors.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import type { Backend, Tensor } from '@latentdem/tensor';
import { SafetensorsFile, StateDictError, loadWeights, withoutInit } from '@latentdem/nn';
import {
  ClipTextEncoder, ClipTokenizer, ConfigError, SD15_CLIP_TEXT_CONFIG, SD_CLIP_TEXT_PREFIX, clearClipPromptCache, clipTextParameterCount,
} from '../src/index.js';
import type { ClipTextConfig } from '../src/index.js';
import { close, hostRandom, testBackends } from '../../tensor/test/helpers.js';
import { thrown, fixtureErrors as errors } from './fixture-helpers.js';

const shared = (p: string): string => fileURLToPath(new URL(`../../../../shared/${p}`, import.meta.url));
const FIXTURE = shared('fixtures/clip_text_small/');
interface Fixture {
  config: { hf_equivalent: { CLIPTextConfig: ClipTextConfig } };
  tolerance: { max_abs: number; max_rel_to_output_std: number };
  prompts: string[];
  input_ids_full_vocab: number[][];
}
const fx = JSON.parse(readFileSync(`${FIXTURE}fixture.json`, 'utf8')) as Fixture;
const smallConfig = fx.config.hf_equivalent.CLIPTextConfig;

const backends = await testBackends();
const tokenizer = await ClipTokenizer.fromFile(shared('data/clip/bpe_simple_vocab_16e6.txt.gz'));



async function loadSmall(backend: Backend): Promise<{ enc: ClipTextEncoder; file: SafetensorsFile }> {
  const enc = new ClipTextEncoder(smallConfig, { backend }).eval();
  const file = await SafetensorsFile.open(`${FIXTURE}model.safetensors`);
  // Strict: every text_model key, position_ids included; the __fixture__ tensors are outside the prefix.
  await loadWeights(enc, file, { prefix: SD_CLIP_TEXT_PREFIX });
  return { enc, file };
}

/** The fixture's id mapping into its 1000-token vocabulary (fixture.json, tensors.__fixture__.input_ids). */
const toSmallVocab = (id: number): number => (id === 49406 ? 998 : id === 49407 ? 999 : id % 998);

for (const backend of backends) {
  t.test(`clip_text_small ${backend.name}: last_hidden_state equals openai CLIP's ln_final output within the fixture tolerance (tensor ids and host ids)`, async (t) => {
    const { enc, file } = await loadSmall(backend);
    const ids = await file.read('__fixture__.input_ids', { backend });
    const want = await (await file.read('__fixture__.last_hidden_state', { backend: 'cpu' })).data();
    const tol = fx.tolerance;
    const out = L.noGrad(() => enc.forward(ids));
    t.same(out.shape, [2, 77, 32]);
    const e1 = errors(await out.data(), want);
    t.ok(e1.maxAbs <= tol.max_abs && e1.rel <= tol.max_rel_to_output_std,
      `tensor ids: max |diff| ${e1.maxAbs.toExponential(2)} (tol ${tol.max_abs}), max |diff|/std ${e1.rel.toExponential(2)} (tol ${tol.max_rel_to_output_std})`);
    const host = fx.input_ids_full_vocab.map((row) => row.map(toSmallVocab));
    t.same(Array.from(await ids.data()), host.flat(), 'the fixture ids are the full-vocabulary ids mapped into the small vocabulary');
    const e2 = errors(await L.noGrad(() => enc.forward(host)).data(), want);
    t.ok(e2.maxAbs <= tol.max_abs && e2.rel <= tol.max_rel_to_output_std, `host ids: max |diff| ${e2.maxAbs.toExponential(2)}, max |diff|/std ${e2.rel.toExponential(2)}`);
    const pid = enc.text_model.embeddings.getBuffer('position_ids')!;
    t.same([pid.shape, Array.from(await pid.data())], [[1, 77], Array.from({ length: 77 }, (_, i) => i)], 'position_ids buffer loaded (arange(77))');
    await file.close();
    enc.dispose();
  });
}

t.test('the fixture prompts tokenize (SD convention) to the fixture\'s full-vocabulary ids', async (t) => {
  fx.prompts.forEach((p, i) => t.same(Array.from(tokenizer.tokenize(p, { padding: 'sd_hf' })), fx.input_ids_full_vocab[i], `prompt ${i}`));
});

t.test('causal: changing a later token leaves earlier positions unchanged; gradients reach the token embedding', async (t) => {
  const { enc, file } = await loadSmall(backends[0]);
  await file.close();
  const a = fx.input_ids_full_vocab[0].map(toSmallVocab);
  const b = [...a]; b[40] = 5;
  const [ya, yb] = await Promise.all([L.noGrad(() => enc.forward([a])).data(), L.noGrad(() => enc.forward([b])).data()]);
  const w = 32;
  t.same(Array.from(ya.subarray(0, 40 * w)), Array.from(yb.subarray(0, 40 * w)), 'positions 0..39 identical');
  t.ok(Math.abs(ya[40 * w] - yb[40 * w]) > 1e-4, 'position 40 changes');
  L.tidy(() => { enc.forward([a]).sum().backward(); });
  const g = enc.text_model.embeddings.token_embedding.weight.grad;
  t.ok(g && (await g.data()).some((v) => v !== 0), 'token_embedding receives a gradient through the host-id row gather');
  enc.dispose();
});

/** A tiny encoder with CLIP's real vocabulary, so the real tokenizer's ids fit. */
const tinyReal = (seed: number, backend: Backend | 'cpu' = 'cpu'): ClipTextEncoder => new ClipTextEncoder(
  { vocab_size: 49408, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 77 },
  { backend, generator: new L.Generator(seed), tokenizer },
).eval();

/** Wraps enc.forward to count calls. */
function countForwards(enc: ClipTextEncoder): { n: number } {
  const counter = { n: 0 };
  const orig = enc.forward.bind(enc);
  enc.forward = (ids) => { counter.n++; return orig(ids); };
  return counter;
}

t.test('encodePrompt: SD tokenization, [1, 77, width]; cached in memory by content hash (weights + ids)', async (t) => {
  clearClipPromptCache();
  const enc = tinyReal(1);
  const calls = countForwards(enc);
  const e1 = await enc.emptyPromptEmbedding();
  t.same(e1.shape, [1, 77, 8]);
  const direct = await L.noGrad(() => enc.forward(L.tensor(tokenizer.tokenize('', { padding: 'sd_hf' }), { shape: [1, 77], backend: 'cpu' }))).data();
  const c = close(await e1.data(), direct, 0, 0);
  t.ok(c.ok, `equals forward(tokenize("", sd_hf)): ${c.message}`);
  t.equal(calls.n, 2, 'one forward for encodePrompt (+1 for the direct check)');
  const e2 = await enc.encodePrompt('');
  t.equal(calls.n, 2, 'second call: no forward (memory cache)');
  t.not(e1, e2, 'a fresh tensor each time');
  e1.dispose();
  t.same(Array.from(await e2.data()), Array.from(direct), 'the cached copy survives disposing an earlier result');
  await enc.encodePrompt('', { cache: false });
  t.equal(calls.n, 3, 'cache: false recomputes');

  const kEmpty = await enc.promptCacheKey('');
  const kCat = await enc.promptCacheKey('a cat');
  t.not(kEmpty, kCat, 'a different prompt: a different key');
  t.equal(await enc.promptCacheKey('  A   CAT '), kCat, 'prompts with the same ids share the key');
  t.not(await enc.promptCacheKey('', { padding: 'openai' }), kEmpty, 'the padding convention is part of the key');
  const other = tinyReal(2);
  t.not(await other.promptCacheKey(''), kEmpty, 'different weights: a different key');
  const o = await other.encodePrompt('');
  t.ok((await o.data()).some((v, i) => v !== direct[i]), 'and a different embedding');
  // Same weights in another instance: same key (content, not identity).
  const twin = tinyReal(1);
  t.equal(await twin.promptCacheKey(''), kEmpty, 'same weights in another encoder: the same key');
  // In-place weight changes need forgetWeightsHash().
  L.noGrad(() => enc.text_model.final_layer_norm.bias!.assign(L.full([8], 0.5, { backend: 'cpu' })));
  t.equal(await enc.promptCacheKey(''), kEmpty, 'the weights hash is memoized');
  enc.forgetWeightsHash();
  t.not(await enc.promptCacheKey(''), kEmpty, 'after forgetWeightsHash the key follows the new weights');
});

t.test('encodePrompt with cacheDir: written only when asked, read back without a forward, bad files replaced', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clip-cache-'));
  try {
    clearClipPromptCache();
    const enc = tinyReal(3);
    const calls = countForwards(enc);
    await enc.encodePrompt('a red car');
    t.same(readdirSync(dir), [], 'nothing written without cacheDir');
    const cacheDir = join(dir, 'sub');
    const first = await (await enc.encodePrompt('a red car', { cacheDir })).data();
    t.equal(calls.n, 1, 'memory hit: still one forward');
    t.notOk(existsSync(cacheDir), 'a memory hit writes nothing');
    clearClipPromptCache();
    const again = await (await enc.encodePrompt('a red car', { cacheDir })).data();
    t.equal(calls.n, 2, 'memory cleared: computed');
    const key = await enc.promptCacheKey('a red car');
    t.same(readdirSync(cacheDir), [`clip-text-${key}.safetensors`], 'one file named by the content hash');
    t.same(Array.from(again), Array.from(first));
    clearClipPromptCache();
    const fromDisk = await enc.encodePrompt('a red car', { cacheDir });
    t.equal(calls.n, 2, 'read from disk: no forward');
    t.same([fromDisk.shape, Array.from(await fromDisk.data())], [[1, 77, 8], Array.from(first)], 'round trip is exact');
    const f = await SafetensorsFile.open(join(cacheDir, `clip-text-${key}.safetensors`));
    t.same([f.metadata.key, f.metadata.prompt, f.metadata.weights_sha256], [key, 'a red car', await enc.weightsHash()], 'metadata names key, prompt and weights');
    await f.close();
    writeFileSync(join(cacheDir, `clip-text-${key}.safetensors`), 'garbage');
    clearClipPromptCache();
    const fixed = await (await enc.encodePrompt('a red car', { cacheDir })).data();
    t.equal(calls.n, 3, 'a corrupt file is recomputed');
    t.same(Array.from(fixed), Array.from(first));
    clearClipPromptCache();
    await enc.encodePrompt('a red car', { cacheDir });
    t.equal(calls.n, 3, '... and replaced by a good one');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

t.test('SD15_CLIP_TEXT_CONFIG: ViT-L/14 text tower, 123,060,480 parameters, SD v1 key names', async (t) => {
  t.same(SD15_CLIP_TEXT_CONFIG, {
    vocab_size: 49408, hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12,
    max_position_embeddings: 77, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5,
  });
  t.equal(clipTextParameterCount(SD15_CLIP_TEXT_CONFIG), 123_060_480);
  // The same structure at a small width: the count formula equals the built module, and the keys are SD's.
  const narrow = { ...SD15_CLIP_TEXT_CONFIG, vocab_size: 300, hidden_size: 24, intermediate_size: 96, num_attention_heads: 3 };
  const m = withoutInit(() => new ClipTextEncoder(narrow, { backend: 'cpu' }));
  t.equal(m.numParameters(), clipTextParameterCount(narrow), 'parameter count formula');
  const keys = [...m.stateDict().keys()];
  t.equal(keys.length, 197, "SD 1.x's cond_stage_model.transformer holds 197 tensors (position_ids included)");
  for (const k of ['text_model.embeddings.token_embedding.weight', 'text_model.embeddings.position_embedding.weight', 'text_model.embeddings.position_ids',
    'text_model.encoder.layers.11.self_attn.out_proj.bias', 'text_model.encoder.layers.0.mlp.fc2.weight', 'text_model.encoder.layers.5.layer_norm2.weight',
    'text_model.final_layer_norm.bias']) t.ok(keys.includes(k), k);
});

const gpu = backends.find((b) => b.name === 'webgpu');
t.test('a token table larger than one device buffer stays on the host: webgpu equals cpu', { skip: gpu ? false : 'no WebGPU adapter' }, async (t) => {
  // 49408 x 704 float32 = 139 MB > lavapipe's 128 MiB maxStorageBufferBindingSize (SD's table is 152 MB).
  const config = { vocab_size: 49408, hidden_size: 704, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 77 };
  const cpuEnc = withoutInit(() => new ClipTextEncoder(config, { backend: 'cpu' }));
  const gpuEnc = withoutInit(() => new ClipTextEncoder(config, { backend: gpu! }));
  if (!gpuEnc.text_model.embeddings.tokenTableOnHost) { t.pass('this device holds the table in one buffer: nothing to test'); return; }
  t.equal(gpuEnc.text_model.embeddings.token_embedding.weight.backend.name, 'cpu', 'token table on cpu');
  t.equal(gpuEnc.backend.name, 'webgpu', 'everything else on the device');
  const ids = [Array.from(tokenizer.tokenize('a photograph of an astronaut riding a horse'))];
  // Same seeded values in both: fan-in scaled weights, LayerNorm weights near 1; of the token table only the rows
  // the prompt uses (filling 35M values through the cpu kernels would take seconds).
  const gpuState = gpuEnc.stateDict();
  let seed = 1;
  for (const [k, dst] of cpuEnc.stateDict()) {
    if (dst.dtype !== 'float32') continue;
    seed++;
    const put = (values: Float32Array, shape: number[], pick: (t: Tensor) => Tensor): void => {
      for (const target of [dst, gpuState.get(k)!]) {
        L.noGrad(() => L.tidy(() => { pick(target).assign(L.tensor(values, { shape, backend: target.backend })); }));
      }
    };
    if (k.endsWith('token_embedding.weight')) {
      for (const id of new Set(ids[0])) put(hostRandom(dst.shape[1], seed * 100003 + id), [1, dst.shape[1]], (t) => t.narrow(0, id, 1));
      continue;
    }
    const lim = k.includes('layer_norm') ? 0.1 : dst.rank === 2 && !k.includes('embedding') ? 1 / Math.sqrt(dst.shape[1]) : k.endsWith('bias') ? 0.05 : 1;
    const values = hostRandom(dst.size, seed, -lim, lim);
    if (k.includes('layer_norm') && k.endsWith('weight')) for (let i = 0; i < values.length; i++) values[i] += 1;
    put(values, [...dst.shape], (t) => t);
  }
  const want = await L.noGrad(() => cpuEnc.forward(ids)).data();
  const got = await L.noGrad(() => gpuEnc.forward(ids)).data();
  const e1 = errors(got, want);
  t.ok(e1.maxAbs <= 1e-4 && e1.rel <= 1e-4, `host ids: max |diff| ${e1.maxAbs.toExponential(2)}, max |diff|/std ${e1.rel.toExponential(2)} (tol 1e-4 each)`);
  const viaCpuTensor = await L.noGrad(() => gpuEnc.forward(L.tensor(Int32Array.from(ids[0]), { shape: [1, 77], backend: 'cpu' }))).data();
  t.same(Array.from(viaCpuTensor), Array.from(got), 'cpu int32 ids are read on the host');
  const e = thrown(() => gpuEnc.forward(L.tensor(Int32Array.from(ids[0]), { shape: [1, 77], backend: gpu! })));
  t.ok(e instanceof L.BackendMismatchError && /exceeds the device's largest buffer/.test((e as Error).message), `device ids: ${String(e)}`);
  cpuEnc.dispose(); gpuEnc.dispose();
});

t.test('errors: ids of the wrong shape, dtype or length; ids outside the vocabulary; mis-sized weights; bad configs; no tokenizer', async (t) => {
  const enc = new ClipTextEncoder(smallConfig, { backend: 'cpu' });
  const ids = (shape: number[], dtype: 'int32' | 'float32' = 'int32'): Tensor => L.zeros(shape, { dtype, backend: 'cpu' });
  const cases: [string, () => unknown, new (...a: never[]) => Error, RegExp][] = [
    ['rank 1', () => enc.forward(ids([77])), L.ShapeError, /ids must be \[B, L\], got \[77\]/],
    ['float ids', () => enc.forward(ids([1, 77], 'float32')), L.DTypeError, /must be int32, got float32/],
    ['78 tokens', () => enc.forward(ids([1, 78])), L.ShapeError, /sequence length 78 must be in 1\.\.77/],
    ['ragged host rows', () => enc.forward([[1, 2], [3]]), L.ShapeError, /equally long rows/],
    ['host id out of range', () => enc.forward([[1, 1000]]), L.ShapeError, /token id 1000 is outside the vocabulary \(0\.\.999\)/],
  ];
  for (const [what, fn, cls, pattern] of cases) {
    const e = thrown(fn);
    t.ok(e instanceof cls && pattern.test((e as Error).message), `${what}: ${String(e)}`);
  }
  const wide = new ClipTextEncoder({ ...smallConfig, hidden_size: 16 }, { backend: 'cpu' });
  const err = await loadWeights(wide, `${FIXTURE}model.safetensors`, { prefix: SD_CLIP_TEXT_PREFIX }).then(() => null, (e: unknown) => e);
  t.ok(err instanceof StateDictError && err.mismatched.some((m) => m.startsWith(`${SD_CLIP_TEXT_PREFIX}text_model.embeddings.token_embedding.weight: checkpoint [1000,32]`)),
    `mis-sized weights: StateDictError (${String(err).slice(0, 160)}...)`);
  const bad: [string, Partial<Record<keyof ClipTextConfig, unknown>>][] = [
    ['num_attention_heads', { num_attention_heads: 3 }], ['hidden_act', { hidden_act: 'relu' }], ['layer_norm_eps', { layer_norm_eps: 0 }], ['vocab_size', { vocab_size: 0 }],
  ];
  for (const [option, change] of bad) {
    const e = thrown(() => new ClipTextEncoder({ ...smallConfig, ...change } as ClipTextConfig, { backend: 'cpu' }));
    t.ok(e instanceof ConfigError && e.option === option, `${option}: ${String(e)}`);
  }
  const noTok = await enc.encodePrompt('x').then(() => null, (e: unknown) => e);
  t.ok(noTok instanceof ConfigError && noTok.option === 'tokenizer', `no tokenizer: ${String(noTok)}`);
  const vocab = await enc.encodePrompt('x', { tokenizer }).then(() => null, (e: unknown) => e);
  t.ok(vocab instanceof ConfigError && /token id 49406 .* vocabulary of 1000/.test((vocab as Error).message), `tokenizer/encoder mismatch: ${String(vocab)}`);
});
