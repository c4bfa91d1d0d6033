/**
 * CLIP's BPE tokenizer against openai/CLIP's SimpleTokenizer / clip.tokenize and SD v1's HF padding
 * (../shared/fixtures/clip_tokenizer_cases.json), its text clean-up, and its errors.
 */
import t from 'tap';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { CLIP_NUM_MERGES, ClipTokenizer, ClipTokenizerError, clipCleanText, htmlUnescape } from '../src/index.js';

const shared = (p: string): string => fileURLToPath(new URL(`../../../../shared/${p}`, import.meta.url));
const MERGES = shared('data/clip/bpe_simple_vocab_16e6.txt.gz');
interface Case { name: string; text: string; bpe_ids: number[]; n_bpe: number; truncated: boolean; openai: number[]; sd_hf: number[]; decoded: string }
const fx = JSON.parse(readFileSync(shared('fixtures/clip_tokenizer_cases.json'), 'utf8')) as { cases: Case[]; vocab: { size: number; start_of_text: number; end_of_text: number } };

const tok = await ClipTokenizer.fromFile(MERGES);

t.test('vocabulary: 49408 ids, <|startoftext|> 49406, <|endoftext|> 49407, byte symbols in bytes_to_unicode dict order', async (t) => {
  t.equal(tok.vocabSize, fx.vocab.size);
  t.equal(tok.startOfText, fx.vocab.start_of_text);
  t.equal(tok.endOfText, fx.vocab.end_of_text);
  // The printable bytes come first ('!' = 0 ... 'ÿ' = 187), then the remapped ones (U+0100 = byte 0 at 188).
  t.same([tok.encoder.get('!'), tok.encoder.get('ÿ'), tok.encoder.get('Ā'), tok.encoder.get('!</w>')], [0, 187, 188, 256]);
});

t.test(`all ${fx.cases.length} fixture cases: BPE ids, the openai (zero-padded) and sd_hf (49407-padded) 77-token arrays, decoded text`, async (t) => {
  t.equal(fx.cases.length, 10);
  for (const c of fx.cases) {
    t.same(tok.encode(c.text), c.bpe_ids, `${c.name}: bpe ids (${c.n_bpe})`);
    const openai = tok.tokenize(c.text, { padding: 'openai' });
    const sdhf = tok.tokenize(c.text, { padding: 'sd_hf' });
    t.ok(openai instanceof Int32Array && openai.length === 77 && sdhf.length === 77, `${c.name}: Int32Array of 77`);
    t.same(Array.from(openai), c.openai, `${c.name}: openai convention${c.truncated ? ' (truncated)' : ''}`);
    t.same(Array.from(sdhf), c.sd_hf, `${c.name}: sd_hf convention${c.truncated ? ' (truncated)' : ''}`);
    t.same(Array.from(tok.tokenize(c.text)), c.sd_hf, `${c.name}: the default is SD's convention`);
    t.equal(tok.decode(c.bpe_ids), c.decoded, `${c.name}: decode`);
  }
});

t.test('truncation keeps the first 75 BPE ids in both conventions; without truncate, too long text throws naming the lengths', async (t) => {
  const long = fx.cases.find((c) => c.truncated)!;
  const ids = tok.tokenize(long.text, { padding: 'openai' });
  t.same(Array.from(ids.subarray(1, 76)), long.bpe_ids.slice(0, 75));
  t.equal(ids[76], 49407);
  let err: unknown = null;
  try { tok.tokenize(long.text, { truncate: false }); } catch (e) { err = e; }
  t.ok(err instanceof ClipTokenizerError && /84 BPE tokens \+ 2 specials = 86, more than the context length 77/.test((err as Error).message), String(err));
  // Exactly 75 BPE ids fit without truncation; a shorter context is honoured.
  const fits = 'a '.repeat(75);
  t.equal(tok.tokenize(fits, { truncate: false, padding: 'openai' })[76], 49407);
  t.throws(() => tok.tokenize(`${fits} a`, { truncate: false }), ClipTokenizerError);
  t.same(Array.from(tok.tokenize('a photo of a cat', { length: 5, padding: 'openai' })), [49406, 320, 1125, 539, 49407]);
});

t.test('specials written in the text are single tokens, as the original pattern matches them first', async (t) => {
  t.same(tok.encode('<|startoftext|>a<|endoftext|>'), [49406, 320, 49407]);
  t.equal(tok.decode([49406, 320, 49407]), '<|startoftext|>a <|endoftext|>');
});

t.test("clean-up: html.unescape twice, Python's strip and whitespace, lower-casing (ftfy is the identity)", async (t) => {
  t.equal(htmlUnescape('&amp;amp; &lt;b&gt; &quot;x&quot; &#39; &#x41; &eacute; &eacutex &copy2 &nosuch; &#0; &#x80; &#129; &#1; &#xFFFF; &#99999999999;'),
    '&amp; <b> "x" \' A é éx ©2 &nosuch; \ufffd \u20ac \x81   \ufffd', 'matches Python 3 html.unescape on the same string');
  t.equal(clipCleanText('  Salt &amp;amp; PEPPER\u3000\u00a0x\x1c '), 'salt & pepper x');
  t.equal(clipCleanText('\u00c9COLE\t\tZ\u00dcRICH'), '\u00e9cole z\u00fcrich');
});

t.test('errors: a missing, non-gzip-but-binary, truncated or malformed merges file throws ClipTokenizerError naming the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clip-tok-'));
  try {
    const missing = join(dir, 'nope.txt.gz');
    const check = async (path: string, pattern: RegExp, what: string): Promise<void> => {
      const err = await ClipTokenizer.fromFile(path).then(() => null, (e: unknown) => e);
      t.ok(err instanceof ClipTokenizerError && (err as ClipTokenizerError).file === path && (err as Error).message.includes(path) && pattern.test((err as Error).message), `${what}: ${String(err)}`);
    };
    await check(missing, /cannot read merges file/, 'missing');
    const badGz = join(dir, 'bad.txt.gz');
    writeFileSync(badGz, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(64, 7)]));
    await check(badGz, /not valid gzip/, 'corrupt gzip');
    const text = gunzipSync(readFileSync(MERGES)).toString('utf8');
    const lines = text.split('\n');
    const short = join(dir, 'short.txt.gz');
    writeFileSync(short, gzipSync(lines.slice(0, 1000).join('\n')));
    await check(short, new RegExp(`999 merge lines after its header, CLIP needs ${CLIP_NUM_MERGES}`), 'truncated');
    const broken = join(dir, 'broken.txt');
    writeFileSync(broken, [...lines.slice(0, 5), 'abc', ...lines.slice(6)].join('\n'));
    await check(broken, /line 6: expected two symbols/, 'malformed line');
    const binary = join(dir, 'binary.txt');
    writeFileSync(binary, Buffer.from([0xff, 0xfe, 0x00, 0x80]));
    await check(binary, /not UTF-8 text/, 'binary');
    // The same merges uncompressed load as well.
    const plain = join(dir, 'plain.txt');
    writeFileSync(plain, text);
    const fromPlain = await ClipTokenizer.fromFile(plain);
    t.same(fromPlain.encode(fx.cases[1].text), fx.cases[1].bpe_ids, 'plain-text merges file gives the same ids');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  t.throws(() => tok.decode([49408]), ClipTokenizerError, 'decode: id outside the vocabulary');
  t.throws(() => tok.tokenize('x', { length: 1 }), ClipTokenizerError, 'tokenize: length < 2');
});
