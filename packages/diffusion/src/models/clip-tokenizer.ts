/**
 * CLIP's byte-level BPE tokenizer: openai/CLIP `clip/simple_tokenizer.py` (`SimpleTokenizer`) and
 * `clip/clip.py` (`tokenize`) at commit d05afc43, plus the padding Stable Diffusion v1 feeds its text encoder
 * (Hugging Face `CLIPTokenizer(..., truncation=True, max_length=77, padding="max_length")` in CompVis
 * `ldm/modules/encoders/modules.py:153-154`, FrozenCLIPEmbedder at commit 21f890f9).
 *
 * ftfy: the original first runs `ftfy.fix_text` (simple_tokenizer.py:51), which repairs mojibake, curly quotes,
 * full-width forms, ligatures, '\r' and similar. This tokenizer does NOT: it is the identity there (as the
 * fixture generator's stub), then everything else the original does: `html.unescape` twice (HTML 4 named
 * references, the HTML 5 legacy forms without ';', numeric references with Python's HTML 5 rules; the ~2000
 * HTML5-only names such as `&NotNestedLessLess;` are left as they are), strip, whitespace runs -> ' ',
 * lower-casing, the word-splitting pattern, BPE. Text that ftfy would change (e.g. "cafÃ©", "“quoted”") may
 * therefore tokenize differently from an environment with ftfy installed, as SD's is.
 */
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { LatentdemError } from '@latentdem/tensor';

/** A merges file that cannot be read or parsed, or text that does not fit (names the file or the lengths). */
export class ClipTokenizerError extends LatentdemError {
  constructor(op: string, detail: string, readonly file?: string, options?: { cause?: unknown }) {
    super(op, detail);
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** 'openai': clip.tokenize (zeros after <|endoftext|>); 'sd_hf': HF CLIPTokenizer padded with <|endoftext|> as SD v1. */
export type ClipPadding = 'openai' | 'sd_hf';

export interface ClipTokenizeOptions {
  /** Default 'sd_hf' (what SD v1's FrozenCLIPEmbedder feeds CLIPTextModel). */
  padding?: ClipPadding;
  /** Context length, default 77 (clip.py:205, modules.py:139). */
  length?: number;
  /** Default true (SD truncates; clip.tokenize's own default is false). Without it, too long text throws. */
  truncate?: boolean;
}

/** simple_tokenizer.py:67: the merges kept are lines [1, 49152-256-2+1) — 48894 of them. */
export const CLIP_NUM_MERGES = 49152 - 256 - 2;
export const CLIP_START_OF_TEXT = '<|startoftext|>';
export const CLIP_END_OF_TEXT = '<|endoftext|>';

/**
 * bytes_to_unicode (simple_tokenizer.py:15-35): the printable bytes '!'..'~', '¡'..'¬', '®'..'ÿ' map to
 * themselves; the other 68 bytes, in increasing order, to U+0100, U+0101, ... Returned indexed by byte, and in
 * the dict's insertion order (the printable bytes first), which is the vocabulary's order.
 */
function bytesToUnicode(): { byByte: string[]; dictOrder: string[] } {
  const byByte = new Array<string>(256);
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const dictOrder: string[] = [];
  for (let b = 0; b < 256; b++) if (printable(b)) { byByte[b] = String.fromCodePoint(b); dictOrder.push(byByte[b]); }
  let n = 0;
  for (let b = 0; b < 256; b++) if (!printable(b)) { byByte[b] = String.fromCodePoint(256 + n++); dictOrder.push(byByte[b]); }
  return { byByte, dictOrder };
}

// Python's str.isspace() (what str.strip() removes): Unicode White_Space plus U+001C..U+001F.
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');
/** `regex`'s \s on str is the Unicode White_Space property (whitespace_clean, simple_tokenizer.py:57). */
const WHITESPACE_RUN = /\p{White_Space}+/gu;
/**
 * simple_tokenizer.py:78, with IGNORECASE. Every digit is its own pre-token ([\p{N}] matches one character);
 * the specials match as whole words.
 */
const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\p{White_Space}\p{L}\p{N}]+/giu;

/**
 * HTML 4.01's 252 named character references (name:hex code point), with HTML 5's values for lang/rang
 * (U+27E8/U+27E9). Python's html.entities.html5 has these and ~2000 more.
 */
const HTML4_ENTITIES = `AElig:c6 Aacute:c1 Acirc:c2 Agrave:c0 Alpha:391 Aring:c5 Atilde:c3 Auml:c4 Beta:392 Ccedil:c7 Chi:3a7
Dagger:2021 Delta:394 ETH:d0 Eacute:c9 Ecirc:ca Egrave:c8 Epsilon:395 Eta:397 Euml:cb Gamma:393 Iacute:cd
Icirc:ce Igrave:cc Iota:399 Iuml:cf Kappa:39a Lambda:39b Mu:39c Ntilde:d1 Nu:39d OElig:152 Oacute:d3 Ocirc:d4
Ograve:d2 Omega:3a9 Omicron:39f Oslash:d8 Otilde:d5 Ouml:d6 Phi:3a6 Pi:3a0 Prime:2033 Psi:3a8 Rho:3a1
Scaron:160 Sigma:3a3 THORN:de Tau:3a4 Theta:398 Uacute:da Ucirc:db Ugrave:d9 Upsilon:3a5 Uuml:dc Xi:39e
Yacute:dd Yuml:178 Zeta:396 aacute:e1 acirc:e2 acute:b4 aelig:e6 agrave:e0 alefsym:2135 alpha:3b1 amp:26
and:2227 ang:2220 aring:e5 asymp:2248 atilde:e3 auml:e4 bdquo:201e beta:3b2 brvbar:a6 bull:2022 cap:2229
ccedil:e7 cedil:b8 cent:a2 chi:3c7 circ:2c6 clubs:2663 cong:2245 copy:a9 crarr:21b5 cup:222a curren:a4
dArr:21d3 dagger:2020 darr:2193 deg:b0 delta:3b4 diams:2666 divide:f7 eacute:e9 ecirc:ea egrave:e8 empty:2205
emsp:2003 ensp:2002 epsilon:3b5 equiv:2261 eta:3b7 eth:f0 euml:eb euro:20ac exist:2203 fnof:192 forall:2200
frac12:bd frac14:bc frac34:be frasl:2044 gamma:3b3 ge:2265 gt:3e hArr:21d4 harr:2194 hearts:2665 hellip:2026
iacute:ed icirc:ee iexcl:a1 igrave:ec image:2111 infin:221e int:222b iota:3b9 iquest:bf isin:2208 iuml:ef
kappa:3ba lArr:21d0 lambda:3bb lang:27e8 laquo:ab larr:2190 lceil:2308 ldquo:201c le:2264 lfloor:230a
lowast:2217 loz:25ca lrm:200e lsaquo:2039 lsquo:2018 lt:3c macr:af mdash:2014 micro:b5 middot:b7 minus:2212
mu:3bc nabla:2207 nbsp:a0 ndash:2013 ne:2260 ni:220b not:ac notin:2209 nsub:2284 ntilde:f1 nu:3bd oacute:f3
ocirc:f4 oelig:153 ograve:f2 oline:203e omega:3c9 omicron:3bf oplus:2295 or:2228 ordf:aa ordm:ba oslash:f8
otilde:f5 otimes:2297 ouml:f6 para:b6 part:2202 permil:2030 perp:22a5 phi:3c6 pi:3c0 piv:3d6 plusmn:b1 pound:a3
prime:2032 prod:220f prop:221d psi:3c8 quot:22 rArr:21d2 radic:221a rang:27e9 raquo:bb rarr:2192 rceil:2309
rdquo:201d real:211c reg:ae rfloor:230b rho:3c1 rlm:200f rsaquo:203a rsquo:2019 sbquo:201a scaron:161 sdot:22c5
sect:a7 shy:ad sigma:3c3 sigmaf:3c2 sim:223c spades:2660 sub:2282 sube:2286 sum:2211 sup:2283 sup1:b9 sup2:b2
sup3:b3 supe:2287 szlig:df tau:3c4 there4:2234 theta:3b8 thetasym:3d1 thinsp:2009 thorn:fe tilde:2dc times:d7
trade:2122 uArr:21d1 uacute:fa uarr:2191 ucirc:fb ugrave:f9 uml:a8 upsih:3d2 upsilon:3c5 uuml:fc weierp:2118
xi:3be yacute:fd yen:a5 yuml:ff zeta:3b6 zwj:200d zwnj:200c`;

/** Name (with ';', and without it for HTML 5's legacy names) -> replacement text. */
const ENTITIES: Map<string, string> = (() => {
  const m = new Map<string, string>();
  for (const item of HTML4_ENTITIES.split(/\s+/)) {
    const [name, hex] = item.split(':');
    const ch = String.fromCodePoint(parseInt(hex, 16));
    m.set(`${name};`, ch);
    // HTML 5's legacy references that need no ';' are exactly the ones below U+0100 (and the six upper-case ones).
    if (ch.codePointAt(0)! < 0x100) m.set(name, ch);
  }
  for (const [name, ch] of [['AMP', '&'], ['COPY', '\xa9'], ['GT', '>'], ['LT', '<'], ['QUOT', '"'], ['REG', '\xae']]) {
    m.set(name, ch); m.set(`${name};`, ch);
  }
  m.set('apos;', "'");
  return m;
})();

/** Python's html._invalid_charrefs for 0x80..0x9f: the windows-1252 characters (HTML 5 tokenizer rules). */
const CP1252 = '\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178';

function numericCharref(num: number): string {
  if (num === 0) return '\ufffd';
  if (num === 0x0d) return '\r';
  if (num >= 0x80 && num <= 0x9f) return CP1252[num - 0x80];
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
  // Python's _invalid_codepoints: C0 controls but \t \n \f \r, DEL and C1, U+FDD0..U+FDEF, U+xFFFE/U+xFFFF.
  if ((num >= 0x1 && num <= 0x8) || num === 0xb || (num >= 0xe && num <= 0x1f) || num === 0x7f
    || (num >= 0xfdd0 && num <= 0xfdef) || (num & 0xfffe) === 0xfffe) return '';
  return String.fromCodePoint(num);
}

const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/g;

/** Python's html.unescape (HTML 5 rules; named references limited to the table above). */
export function htmlUnescape(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(CHARREF, (whole, ref: string) => {
    if (ref[0] === '#') {
      const hex = ref[1] === 'x' || ref[1] === 'X';
      const digits = ref.slice(hex ? 2 : 1).replace(/;$/, '');
      // Huge numbers: Python's int() is exact; anything above 0x10FFFF gives U+FFFD either way.
      const num = digits.length > 8 ? Infinity : parseInt(digits, hex ? 16 : 10);
      return numericCharref(num);
    }
    const direct = ENTITIES.get(ref);
    if (direct !== undefined) return direct;
    // The longest known prefix (html/__init__.py: for x in range(len(s)-1, 1, -1)).
    for (let x = ref.length - 1; x > 1; x--) {
      const hit = ENTITIES.get(ref.slice(0, x));
      if (hit !== undefined) return hit + ref.slice(x);
    }
    return whole;
  });
}

/** basic_clean + whitespace_clean + lower() (simple_tokenizer.py:50-59, 123), with ftfy as the identity. */
export function clipCleanText(text: string): string {
  let t = htmlUnescape(htmlUnescape(text)).replace(STRIP, '');
  t = t.replace(WHITESPACE_RUN, ' ').replace(STRIP, '');
  return t.toLowerCase();
}

const utf8 = new TextEncoder();

/** CLIP's tokenizer over a merges file (bpe_simple_vocab_16e6.txt.gz): 49408 ids. */
export class ClipTokenizer {
  /** Token string -> id, in the original's vocabulary order (simple_tokenizer.py:69-74). */
  readonly encoder = new Map<string, number>();
  readonly decoder: string[] = [];
  readonly startOfText: number;
  readonly endOfText: number;
  private readonly ranks = new Map<string, number>();
  private readonly byteEncoder: string[];
  private readonly byteDecoder = new Map<string, number>();
  private readonly cache = new Map<string, string[]>();

  /** `merges`: the merge pairs in rank order ("a b" lines after the header, already cut to CLIP_NUM_MERGES). */
  constructor(merges: readonly (readonly [string, string])[], readonly source = '<merges>') {
    const { byByte, dictOrder } = bytesToUnicode();
    this.byteEncoder = byByte;
    byByte.forEach((c, b) => this.byteDecoder.set(c, b));
    const vocab = [...dictOrder, ...dictOrder.map((c) => `${c}</w>`)];
    merges.forEach(([a, b], rank) => {
      vocab.push(a + b);
      // A pair repeated later keeps its later rank, as dict(zip(merges, range(...))) does.
      this.ranks.set(`${a} ${b}`, rank);
    });
    vocab.push(CLIP_START_OF_TEXT, CLIP_END_OF_TEXT);
    vocab.forEach((tok, id) => { this.encoder.set(tok, id); this.decoder[id] = tok; });
    this.startOfText = this.encoder.get(CLIP_START_OF_TEXT)!;
    this.endOfText = this.encoder.get(CLIP_END_OF_TEXT)!;
    // simple_tokenizer.py:77: the specials are never split.
    this.cache.set(CLIP_START_OF_TEXT, [CLIP_START_OF_TEXT]);
    this.cache.set(CLIP_END_OF_TEXT, [CLIP_END_OF_TEXT]);
  }

  /** Number of ids (49408 for CLIP's file). */
  get vocabSize(): number { return this.decoder.length; }

  /**
   * Reads a merges file, gzipped (detected by its magic bytes) or plain UTF-8: line 0 is a version header,
   * lines 1..48894 are the merges (simple_tokenizer.py:66-68). ClipTokenizerError naming the file when it is
   * missing, not valid gzip/UTF-8, or has too few or malformed merge lines.
   */
  static async fromFile(path: string): Promise<ClipTokenizer> {
    const op = 'ClipTokenizer.fromFile';
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (e) {
      throw new ClipTokenizerError(op, `cannot read merges file ${path} (${(e as Error).message})`, path, { cause: e });
    }
    if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
      try {
        bytes = gunzipSync(bytes);
      } catch (e) {
        throw new ClipTokenizerError(op, `merges file ${path} is not valid gzip (${(e as Error).message})`, path, { cause: e });
      }
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
      throw new ClipTokenizerError(op, `merges file ${path} is not UTF-8 text`, path, { cause: e });
    }
    const lines = text.split('\n');
    if (lines.length < CLIP_NUM_MERGES + 1) {
      throw new ClipTokenizerError(op, `merges file ${path} has ${Math.max(lines.length - 1, 0)} merge lines after its header, CLIP needs ${CLIP_NUM_MERGES}`, path);
    }
    const merges: [string, string][] = [];
    for (let i = 1; i <= CLIP_NUM_MERGES; i++) {
      const parts = lines[i].trim().split(/\s+/);
      if (parts.length !== 2) {
        throw new ClipTokenizerError(op, `merges file ${path}, line ${i + 1}: expected two symbols "a b", got ${JSON.stringify(lines[i].slice(0, 80))}`, path);
      }
      merges.push([parts[0], parts[1]]);
    }
    return new ClipTokenizer(merges, path);
  }

  /** simple_tokenizer.py:80-119: merge the lowest-ranked adjacent pair until none is in the merges. */
  private bpe(token: string): string[] {
    const hit = this.cache.get(token);
    if (hit) return hit;
    const chars = Array.from(token);
    let word = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`];
    while (word.length > 1) {
      let best = -1; let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
      }
      if (best < 0) break;
      const first = word[best]; const second = word[best + 1];
      // Merge every non-overlapping occurrence, left to right.
      const next: string[] = [];
      for (let i = 0; i < word.length;) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) { next.push(first + second); i += 2; } else { next.push(word[i]); i += 1; }
      }
      word = next;
    }
    this.cache.set(token, word);
    return word;
  }

  /** BPE ids of `text`, without <|startoftext|>/<|endoftext|> (SimpleTokenizer.encode, simple_tokenizer.py:121-127). */
  encode(text: string): number[] {
    const ids: number[] = [];
    const clean = clipCleanText(text);
    for (const m of clean.matchAll(PATTERN)) {
      let mapped = '';
      for (const b of utf8.encode(m[0])) mapped += this.byteEncoder[b];
      for (const piece of this.bpe(mapped)) {
        const id = this.encoder.get(piece);
        // Every single byte (with or without </w>) is in the vocabulary, so only a broken merges list gets here.
        if (id === undefined) throw new ClipTokenizerError('ClipTokenizer.encode', `BPE piece ${JSON.stringify(piece)} is not in the vocabulary of ${this.source}`, this.source);
        ids.push(id);
      }
    }
    return ids;
  }

  /**
   * The `length`-long id array the text encoder takes: [<|startoftext|>] + ids[:length-2] + [<|endoftext|>],
   * then 0 (`openai`, clip.py:231-243) or <|endoftext|> (`sd_hf`, HF's pad_token for openai/clip-vit-large-patch14)
   * up to `length`. Both conventions keep the first length-2 BPE ids when truncating. Without truncate, text
   * whose ids do not fit throws ClipTokenizerError naming both lengths.
   */
  tokenize(text: string, opts: ClipTokenizeOptions = {}): Int32Array {
    const padding = opts.padding ?? 'sd_hf';
    const length = opts.length ?? 77;
    const truncate = opts.truncate ?? true;
    const op = 'ClipTokenizer.tokenize';
    if (padding !== 'openai' && padding !== 'sd_hf') throw new ClipTokenizerError(op, `padding must be 'openai' or 'sd_hf', got ${JSON.stringify(padding)}`);
    if (!Number.isInteger(length) || length < 2) throw new ClipTokenizerError(op, `length must be an integer >= 2 (room for the start and end tokens), got ${length}`);
    let ids = this.encode(text);
    if (ids.length + 2 > length) {
      if (!truncate) {
        throw new ClipTokenizerError(op, `text gives ${ids.length} BPE tokens + 2 specials = ${ids.length + 2}, more than the context length ${length} (pass truncate: true to keep the first ${length - 2})`);
      }
      ids = ids.slice(0, length - 2);
    }
    const out = new Int32Array(length).fill(padding === 'openai' ? 0 : this.endOfText);
    out[0] = this.startOfText;
    out.set(ids, 1);
    out[ids.length + 1] = this.endOfText;
    return out;
  }

  /**
   * Text of ids (SimpleTokenizer.decode, simple_tokenizer.py:129-132): pieces joined, bytes decoded as UTF-8
   * with U+FFFD for invalid sequences, '</w>' -> ' ' (so a trailing space, no clean-up around punctuation).
   * Specials decode to their names; ids outside the vocabulary throw.
   */
  decode(ids: ArrayLike<number>): string {
    let text = '';
    for (let i = 0; i < ids.length; i++) {
      const tok = this.decoder[ids[i]];
      if (tok === undefined) throw new ClipTokenizerError('ClipTokenizer.decode', `id ${ids[i]} at position ${i} is outside the vocabulary (0..${this.vocabSize - 1})`);
      text += tok;
    }
    const bytes: number[] = [];
    for (const c of text) {
      const b = this.byteDecoder.get(c);
      // The original raises KeyError here; only specials' text (all printable ASCII) and byte symbols occur.
      if (b === undefined) throw new ClipTokenizerError('ClipTokenizer.decode', `symbol ${JSON.stringify(c)} has no byte`);
      bytes.push(b);
    }
    return new TextDecoder('utf-8').decode(new Uint8Array(bytes)).replaceAll('</w>', ' ');
  }
}
