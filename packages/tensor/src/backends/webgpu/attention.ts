/**
 * Fused attention on WebGPU (flash attention, forward and backward): softmax(Q K^T * scale) V without the
 * Lq x Lk score matrix. Every kernel is two of matmul.ts's GEMM micro-kernels glued by the softmax algebra,
 * built the way that kernel is fast on lavapipe (see its header: loads are costly per lane, vec4 FMAs and
 * subgroupBroadcast are cheap, shared memory and barriers are slow):
 * - A workgroup is one subgroup of S lanes owning MT rows (query rows forward and for dQ, key rows for
 *   dK/dV). It streams over blocks of 4S columns (keys, or queries for dK/dV).
 * - Phase 1 (scores): each lane computes the 4 columns it owns for all MT rows, S_i = A_i . B^T[:, 4 cols],
 *   loading the rows of A cooperatively (MT/S rows per lane, handed round by subgroupBroadcast) and B^T as
 *   vec4s from a transposed copy (K^T, V^T, Q^T, dO^T, packed once per call: O(L d), not O(L^2)).
 * - Softmax: a running row max (subgroupMax over the block) and per-lane partial row sums, rescaled by
 *   exp(m_old - m_new); the backward reuses the saved row logsumexp instead.
 * - Phase 2 (accumulate): O_i += P_i V over the block, lanes now owning vec4 column groups of V (G groups
 *   each); P's entries go round by subgroupBroadcast, V rows are vec4 loads. Wide outputs (dv = 512) are
 *   split into column slices over grid y, each recomputing phase 1, so the accumulators stay small.
 * Without subgroups the same kernels run with S = 1 (each invocation its own MT rows, 4-column blocks).
 */
import type { View } from '../../backend.js';
import { DTypeError, ShapeError, fmtShape } from '../../errors.js';
import type { GpuContext, GpuStorage } from './context.js';
import { dispatchGrid, pack, subgroupSize } from './matmul.js';

/** Tile of the attention kernels: MT rows per subgroup, up to gmax vec4 column groups per lane in phase 2. */
export interface AttentionTile { mt: number; gmax: number; sg: number }

/**
 * The tile for this device; `LATENTDEM_ATTN_TILE=mt,gmax[,0]` overrides it (a trailing 0: no subgroups). On
 * lavapipe mt = 16 is the row tile whose pipelines LLVM compiles in about a second: mt = 8, 24 or 32 took
 * 27 s to minutes, as did 3 column groups per lane in the backward kernels (so those stay at <= 2; measured).
 */
export function attentionTile(ctx: GpuContext): AttentionTile {
  let sg = subgroupSize(ctx);
  const env = process.env.LATENTDEM_ATTN_TILE;
  if (env) {
    const [mt, gmax, noSg] = env.split(',').map(Number);
    if (noSg === 0) sg = 0;
    if (sg && mt % sg) throw new ShapeError('attention', `LATENTDEM_ATTN_TILE=${env}: mt must be a multiple of the subgroup size ${sg}`);
    return { mt, gmax, sg };
  }
  return sg ? { mt: Math.max(16, sg), gmax: 4, sg } : { mt: 4, gmax: 2, sg: 0 };
}

/** Lanes per row tile, and invocations per workgroup (without subgroups: 8 independent invocations). */
const lanes = (t: AttentionTile): number => t.sg || 1;
const wgSize = (t: AttentionTile): number => t.sg || 8;

/** Column slicing of an output with nc4 vec4 columns: g groups per lane, `slices` slices over grid y. */
function slicing(t: AttentionTile, nc4: number): { g: number; slices: number } {
  const per = Math.ceil(nc4 / lanes(t));
  const slices = Math.ceil(per / t.gmax);
  return { g: Math.ceil(per / slices), slices };
}

const XYZW = 'xyzw';

/** WGSL emitters shared by the three kernels. `L` collects lines. */
class Emit {
  readonly L: string[] = [];
  readonly S: number;
  readonly MT: number;
  constructor(readonly t: AttentionTile) { this.S = lanes(t); this.MT = t.mt; }
  line(s: string): void { this.L.push(s); }
  bcast(x: string, lane: number): string { return this.t.sg ? `subgroupBroadcast(${x}, ${lane}u)` : x; }
  rmax(x: string): string { return this.t.sg ? `subgroupMax(${x})` : x; }
  radd(x: string): string { return this.t.sg ? `subgroupAdd(${x})` : x; }

  header(bindings: Array<[string, string, boolean]>): void {
    if (this.t.sg) this.line('enable subgroups;');
    bindings.forEach(([name, type, rw], i) => this.line(`@group(0) @binding(${i}) var<storage, ${rw ? 'read_write' : 'read'}> ${name}: array<${type}>;`));
    this.line(`@group(0) @binding(${bindings.length}) var<storage, read> p: array<u32>;`);
    this.line(`@compute @workgroup_size(${wgSize(this.t)})`);
    this.line(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${this.t.sg ? ', @builtin(subgroup_invocation_id) sid: u32' : ''}) {`);
    if (!this.t.sg) this.line('  let sid = 0u;');
    // The row tile of this subgroup (without subgroups, of this invocation).
    this.line(`  let tile = ${this.t.sg ? 'wid.x' : `wid.x * ${wgSize(this.t)}u + lid`};`);
    this.line(`  let m0 = tile * ${this.MT}u;`);
  }

  /** Row bases `${name}r{v}` of the A rows this lane loads (clamped to the last row). */
  rowBases(name: string, base: string, stride: string, rows: string): void {
    const NA = this.MT / this.S;
    for (let v = 0; v < NA; v++) {
      const row = this.t.sg ? `m0 + ${v * this.S}u + sid` : `m0 + ${v}u`;
      this.line(`  let ${name}r${v} = ${base} + min(${row}, ${rows} - 1u) * ${stride};`);
    }
  }

  /**
   * Phase 1: acc{i} (vec4: this lane's 4 columns of row i) = sum_c A[row i, c] * BT[c, cols], c over k4 vec4
   * steps; A rows at `${a}r{v}`, BT column group at `bcol`, BT row stride `bsr` (vec4 units).
   */
  phase1(acc: string, A: string, a: string, BT: string, bcol: string, bsr: string, k4: string): void {
    const { MT, S } = this;
    const NA = MT / S;
    for (let i = 0; i < MT; i++) this.line(`    var ${acc}${i} = vec4<f32>(0.0);`);
    this.line(`    for (var c4 = 0u; c4 < ${k4}; c4++) {`);
    for (let v = 0; v < NA; v++) this.line(`      let a${v} = ${A}[${a}r${v} + c4];`);
    this.line(`      let br = ${bcol} + c4 * 4u * ${bsr};`);
    for (let kk = 0; kk < 4; kk++) this.line(`      let b${kk} = ${BT}[br + ${kk}u * ${bsr}];`);
    for (let kk = 0; kk < 4; kk++) {
      for (let i = 0; i < MT; i++) {
        const x = this.bcast(`a${Math.floor(i / S)}.${XYZW[kk]}`, i % S);
        this.line(`      ${acc}${i} = fma(vec4<f32>(${x}), b${kk}, ${acc}${i});`);
      }
    }
    this.line('    }');
  }

  /**
   * Phase 2: for each of the 4S block columns jj (the row `r0 + jj` of B, clamped to `rows`),
   * acc{i}_{g} += P{i}[jj] * B[row, col group g], for each (P, B, acc) triple given.
   */
  phase2(r0: string, rows: string, terms: Array<{ P: string; B: string; base: string; sr: string; col: string; acc: string }>, g: number): void {
    const { MT, S } = this;
    for (let j = 0; j < S; j++) {
      for (let c = 0; c < 4; c++) {
        const jj = 4 * j + c;
        this.line('    {');
        this.line(`      let r = min(${r0} + ${jj}u, ${rows} - 1u);`);
        for (const [ti, tm] of terms.entries()) {
          this.line(`      let rb${ti} = ${tm.base} + r * ${tm.sr};`);
          for (let gg = 0; gg < g; gg++) this.line(`      let v${ti}_${gg} = ${tm.B}[rb${ti} + ${tm.col}${gg}];`);
        }
        for (let i = 0; i < MT; i++) {
          for (const [ti, tm] of terms.entries()) {
            this.line(`      { let s = vec4<f32>(${this.bcast(`${tm.P}${i}.${XYZW[c]}`, j)});`);
            for (let gg = 0; gg < g; gg++) this.line(`        ${tm.acc}${i}_${gg} = fma(s, v${ti}_${gg}, ${tm.acc}${i}_${gg});`);
            this.line('      }');
          }
        }
        this.line('    }');
      }
    }
  }

  /** Column groups `${name}{g}` this lane owns in phase 2 of slice `slice` (clamped), with their unclamped index. */
  colGroups(name: string, g: number, n4: string): void {
    for (let gg = 0; gg < g; gg++) {
      this.line(`  let ${name}u${gg} = slice * ${this.S * g}u + ${gg * this.S}u + sid;`);
      this.line(`  let ${name}${gg} = min(${name}u${gg}, ${n4} - 1u);`);
    }
  }

  /** Stores acc{i}_{g} (times `mul(i)` when given) into a contiguous [rows, n] f32 output. */
  store(acc: string, Out: string, base: string, rowsN: string, n: string, col: string, g: number, mul?: (i: number) => string): void {
    for (let i = 0; i < this.MT; i++) {
      this.line(`  if (m0 + ${i}u < ${rowsN}) {`);
      this.line(`    let ob = ${base} + (m0 + ${i}u) * ${n};`);
      for (let gg = 0; gg < g; gg++) {
        const val = mul ? `${acc}${i}_${gg} * ${mul(i)}` : `${acc}${i}_${gg}`;
        this.line(`    { let x = ${val}; let c0 = ${col}u${gg} * 4u;`);
        for (let q = 0; q < 4; q++) this.line(`      if (c0 + ${q}u < ${n}) { ${Out}[ob + c0 + ${q}u] = x.${XYZW[q]}; }`);
        this.line('    }');
      }
      this.line('  }');
    }
  }
}

const tileKey = (t: AttentionTile, g: number): string => `mt${t.mt}g${g}sg${t.sg}`;
/** A score far below any real one (finite, so that max/exp never meet inf - inf). */
const NEG = '-1.0e30';

/**
 * Forward. p: Lq Lk dv D4 DV4 LK4 | qOff4 qSb4 qSr4 | ktOff4 ktSb4 | vOff4 vSb4 vSr4 | oOff lseOff scale | y0 z0.
 */
function forwardSource(t: AttentionTile, g: number): string {
  const e = new Emit(t);
  const { MT, S } = e;
  e.header([['Q', 'vec4<f32>', false], ['KT', 'vec4<f32>', false], ['V', 'vec4<f32>', false], ['O', 'f32', true], ['LSE', 'f32', true]]);
  e.line(`  let Lq = p[0]; let Lk = p[1]; let dv = p[2]; let D4 = p[3]; let DV4 = p[4]; let LK4 = p[5];
  let scale = bitcast<f32>(p[16]);
  let slice = wid.y + p[17]; let b = wid.z + p[18];
  let qB = p[6] + b * p[7]; let ktB = p[9] + b * p[10]; let vB = p[11] + b * p[12]; let vSr = p[13];`);
  e.rowBases('q', 'qB', 'p[8]', 'Lq');
  e.colGroups('cg', g, 'DV4');
  for (let i = 0; i < MT; i++) {
    e.line(`  var mx${i} = ${NEG}; var l${i} = 0.0;`);
    for (let gg = 0; gg < g; gg++) e.line(`  var o${i}_${gg} = vec4<f32>(0.0);`);
  }
  e.line(`  for (var kb = 0u; kb < Lk; kb += ${4 * S}u) {`);
  e.line(`    let kc = min(kb / 4u + sid, LK4 - 1u);`);
  e.phase1('s', 'Q', 'q', 'KT', 'ktB + kc', 'LK4', 'D4');
  e.line(`    let key = vec4<u32>(kb + 4u * sid) + vec4<u32>(0u, 1u, 2u, 3u);
    let valid = key < vec4<u32>(Lk);`);
  for (let i = 0; i < MT; i++) {
    e.line(`    {
      let sc = select(vec4<f32>(${NEG}), s${i} * scale, valid);
      let mn = max(mx${i}, ${e.rmax('max(max(sc.x, sc.y), max(sc.z, sc.w))')});
      let alpha = exp(mx${i} - mn);
      s${i} = exp(sc - mn);
      l${i} = l${i} * alpha + (s${i}.x + s${i}.y + s${i}.z + s${i}.w);
      mx${i} = mn;`);
    for (let gg = 0; gg < g; gg++) e.line(`      o${i}_${gg} = o${i}_${gg} * alpha;`);
    e.line('    }');
  }
  e.phase2('kb', 'Lk', [{ P: 's', B: 'V', base: 'vB', sr: 'vSr', col: 'cg', acc: 'o' }], g);
  e.line('  }');
  for (let i = 0; i < MT; i++) e.line(`  let rl${i} = 1.0 / ${e.radd(`l${i}`)};`);
  e.store('o', 'O', 'p[14] + b * Lq * dv', 'Lq', 'dv', 'cg', g, (i) => `rl${i}`);
  e.line('  if (slice == 0u && sid == 0u) {');
  for (let i = 0; i < MT; i++) e.line(`    if (m0 + ${i}u < Lq) { LSE[p[15] + b * Lq + m0 + ${i}u] = mx${i} - log(rl${i}); }`);
  e.line('  }');
  e.line('}');
  return e.L.join('\n');
}

/**
 * Backward prologue: LD[b] = [lse (LQP, padded with 1e30), D = rowsum(dout * out) (LQP, padded with 0)].
 * p: Lq dv LQP nb | oOff oSb oSr oSc | gOff gSb gSr gSc | lOff lSb lSr | y0 z0.
 */
const prepSource = (): string => `@group(0) @binding(0) var<storage, read> OUT: array<f32>;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> LSE: array<f32>;
@group(0) @binding(3) var<storage, read_write> LD: array<f32>;
@group(0) @binding(4) var<storage, read> p: array<u32>;
fn pi(i: u32) -> i32 { return bitcast<i32>(p[i]); }
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let Lq = p[0]; let dv = p[1]; let LQP = p[2];
  let r = gid.x; let b = wid.z + p[16];
  if (r >= LQP) { return; }
  let rr = min(r, Lq - 1u);
  let ob = pi(4u) + i32(b) * pi(5u) + i32(rr) * pi(6u);
  let gb = pi(8u) + i32(b) * pi(9u) + i32(rr) * pi(10u);
  var acc = 0.0;
  for (var c = 0u; c < dv; c++) { acc = fma(OUT[u32(ob + i32(c) * pi(7u))], G[u32(gb + i32(c) * pi(11u))], acc); }
  let lse = LSE[u32(pi(12u) + i32(b) * pi(13u) + i32(rr) * pi(14u))];
  LD[b * 2u * LQP + r] = select(1.0e30, lse, r < Lq);
  LD[b * 2u * LQP + LQP + r] = select(0.0, acc, r < Lq);
}`;

/**
 * dQ = scale * sum_j P_ij (dP_ij - D_i) K_j per query-row tile.
 * p: Lq Lk d dv D4 DV4 LK4 LQ4 | qOff4 qSb4 qSr4 | ktOff4 ktSb4 | gOff4 gSb4 gSr4 | vtOff4 vtSb4 |
 *    kOff4 kSb4 kSr4 | dqOff scale | y0 z0.
 */
function dqSource(t: AttentionTile, g: number): string {
  const e = new Emit(t);
  const { MT, S } = e;
  e.header([['Q', 'vec4<f32>', false], ['KT', 'vec4<f32>', false], ['G', 'vec4<f32>', false], ['VT', 'vec4<f32>', false],
    ['K', 'vec4<f32>', false], ['LD', 'f32', false], ['DQ', 'f32', true]]);
  e.line(`  let Lq = p[0]; let Lk = p[1]; let d = p[2]; let D4 = p[4]; let DV4 = p[5]; let LK4 = p[6]; let LQP = p[7] * 4u;
  let scale = bitcast<f32>(p[22]);
  let slice = wid.y + p[23]; let b = wid.z + p[24];
  let qB = p[8] + b * p[9]; let ktB = p[11] + b * p[12]; let gB = p[13] + b * p[14]; let vtB = p[16] + b * p[17];
  let kB = p[18] + b * p[19]; let kSr = p[20];`);
  e.rowBases('q', 'qB', 'p[10]', 'Lq');
  e.rowBases('g', 'gB', 'p[15]', 'Lq');
  e.colGroups('cg', g, 'D4');
  for (let i = 0; i < MT; i++) {
    e.line(`  let lse${i} = LD[b * 2u * LQP + min(m0 + ${i}u, Lq - 1u)]; let dd${i} = LD[b * 2u * LQP + LQP + min(m0 + ${i}u, Lq - 1u)];`);
    for (let gg = 0; gg < g; gg++) e.line(`  var o${i}_${gg} = vec4<f32>(0.0);`);
  }
  e.line(`  for (var kb = 0u; kb < Lk; kb += ${4 * S}u) {`);
  e.line(`    let kc = min(kb / 4u + sid, LK4 - 1u);`);
  e.phase1('s', 'Q', 'q', 'KT', 'ktB + kc', 'LK4', 'D4');
  e.phase1('dp', 'G', 'g', 'VT', 'vtB + kc', 'LK4', 'DV4');
  e.line(`    let key = vec4<u32>(kb + 4u * sid) + vec4<u32>(0u, 1u, 2u, 3u);
    let valid = key < vec4<u32>(Lk);`);
  for (let i = 0; i < MT; i++) {
    e.line(`    s${i} = select(vec4<f32>(0.0), exp(s${i} * scale - lse${i}), valid) * (dp${i} - dd${i});`);
  }
  e.phase2('kb', 'Lk', [{ P: 's', B: 'K', base: 'kB', sr: 'kSr', col: 'cg', acc: 'o' }], g);
  e.line('  }');
  e.store('o', 'DQ', 'p[21] + b * Lq * d', 'Lq', 'd', 'cg', g, () => 'scale');
  e.line('}');
  return e.L.join('\n');
}

/**
 * dV = sum_i P_ij dO_i and dK = scale * sum_i P_ij (dP_ij - D_i) Q_i per key-row tile, streaming over queries.
 * p: Lq Lk d dv D4 DV4 LQ4 | kOff4 kSb4 kSr4 | qtOff4 qtSb4 | vOff4 vSb4 vSr4 | gtOff4 gtSb4 |
 *    gOff4 gSb4 gSr4 | qOff4 qSb4 qSr4 | dkOff dvOff scale | y0 z0.
 */
function dkvSource(t: AttentionTile, g: number): string {
  const e = new Emit(t);
  const { MT, S } = e;
  e.header([['K', 'vec4<f32>', false], ['QT', 'vec4<f32>', false], ['V', 'vec4<f32>', false], ['GT', 'vec4<f32>', false],
    ['G', 'vec4<f32>', false], ['Q', 'vec4<f32>', false], ['LD', 'vec4<f32>', false], ['DK', 'f32', true], ['DV', 'f32', true]]);
  e.line(`  let Lq = p[0]; let Lk = p[1]; let d = p[2]; let dv = p[3]; let D4 = p[4]; let DV4 = p[5]; let LQ4 = p[6];
  let scale = bitcast<f32>(p[25]);
  let slice = wid.y + p[26]; let b = wid.z + p[27];
  let kB = p[7] + b * p[8]; let qtB = p[10] + b * p[11]; let vB = p[12] + b * p[13]; let gtB = p[15] + b * p[16];
  let gB = p[17] + b * p[18]; let gSr = p[19]; let qB = p[20] + b * p[21]; let qSr = p[22];
  let ldB = b * 2u * LQ4;`);
  e.rowBases('k', 'kB', 'p[9]', 'Lk');
  e.rowBases('v', 'vB', 'p[14]', 'Lk');
  e.colGroups('cq', g, 'D4');
  e.colGroups('cv', g, 'DV4');
  for (let i = 0; i < MT; i++) {
    for (let gg = 0; gg < g; gg++) e.line(`  var dk${i}_${gg} = vec4<f32>(0.0); var dv${i}_${gg} = vec4<f32>(0.0);`);
  }
  e.line(`  for (var qb = 0u; qb < Lq; qb += ${4 * S}u) {`);
  e.line(`    let qc = min(qb / 4u + sid, LQ4 - 1u);`);
  e.phase1('s', 'K', 'k', 'QT', 'qtB + qc', 'LQ4', 'D4');
  e.phase1('dp', 'V', 'v', 'GT', 'gtB + qc', 'LQ4', 'DV4');
  e.line(`    let qi = vec4<u32>(qb + 4u * sid) + vec4<u32>(0u, 1u, 2u, 3u);
    let valid = qi < vec4<u32>(Lq);
    let lse = LD[ldB + qc]; let dd = LD[ldB + LQ4 + qc];`);
  for (let i = 0; i < MT; i++) {
    e.line(`    s${i} = select(vec4<f32>(0.0), exp(s${i} * scale - lse), valid);`);
    e.line(`    dp${i} = s${i} * (dp${i} - dd);`);
  }
  e.phase2('qb', 'Lq', [
    { P: 's', B: 'G', base: 'gB', sr: 'gSr', col: 'cv', acc: 'dv' },
    { P: 'dp', B: 'Q', base: 'qB', sr: 'qSr', col: 'cq', acc: 'dk' },
  ], g);
  e.line('  }');
  e.store('dk', 'DK', 'p[23] + b * Lk * d', 'Lk', 'd', 'cq', g, () => 'scale');
  e.store('dv', 'DV', 'p[24] + b * Lk * dv', 'Lk', 'dv', 'cv', g);
  e.line('}');
  return e.L.join('\n');
}

// ---- operands ----

interface Operand { buf: GPUBuffer; off4: number; sb4: number; sr4: number }

const aligned = (...xs: number[]): boolean => xs.every((x) => x % 4 === 0 && x >= 0);
const ceil4 = (x: number): number => Math.ceil(x / 4) * 4;
const bufOf = (v: View): GPUBuffer => (v.storage as GpuStorage).buffer;

/** The view [B, rows, cols] with rows contiguous and vec4-aligned (cols zero-padded to a multiple of 4): as is, or packed. */
function rowsOperand(ctx: GpuContext, v: View, temps: GPUBuffer[]): Operand {
  const [batch, rows, cols] = v.shape;
  const [sb, sr, sc] = v.strides;
  if (sc === 1 && cols % 4 === 0 && aligned(v.offset, sb) && (rows === 1 || aligned(sr))) {
    return { buf: bufOf(v), off4: v.offset / 4, sb4: sb / 4, sr4: rows === 1 ? 0 : sr / 4 };
  }
  const bb = sb === 0 ? 1 : batch;
  const cp = ceil4(cols);
  const buf = pack(ctx, { ...v, shape: [bb, rows, cols] }, rows, cp, 'attention');
  temps.push(buf);
  return { buf, off4: 0, sb4: bb === 1 ? 0 : (rows * cp) / 4, sr4: cp / 4 };
}

/** The view [B, rows, cols] transposed to [B, ceil4(cols), ceil4(rows)] (zero-padded); sr4 = ceil4(rows) / 4. */
function transOperand(ctx: GpuContext, v: View, temps: GPUBuffer[]): Operand {
  const [batch, rows, cols] = v.shape;
  const [sb, sr, sc] = v.strides;
  const bb = sb === 0 ? 1 : batch;
  const rp = ceil4(cols), cp = ceil4(rows);
  const buf = pack(ctx, { storage: v.storage, shape: [bb, cols, rows], strides: [sb, sc, sr], offset: v.offset }, rp, cp, 'attention');
  temps.push(buf);
  return { buf, off4: 0, sb4: bb === 1 ? 0 : (rp * cp) / 4, sr4: cp / 4 };
}

/** The batch range [b0, b0 + n) of a 3D view. */
const batchSlice = (v: View, b0: number, n: number): View => ({ ...v, shape: [n, v.shape[1], v.shape[2]], offset: v.offset + b0 * v.strides[0] });

/** Batch chunks whose packed temporaries (perBatch bytes each, per batch) fit one storage binding. */
function batchChunks(ctx: GpuContext, batch: number, perBatch: number[]): Array<[number, number]> {
  const worst = Math.max(16, ...perBatch);
  const n = Math.max(1, Math.min(batch, Math.floor(ctx.limits.maxStorageBufferBindingSize / worst)));
  const out: Array<[number, number]> = [];
  for (let b0 = 0; b0 < batch; b0 += n) out.push([b0, Math.min(n, batch - b0)]);
  return out;
}

const f32bits = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0];

function dims(q: View, k: View, v: View, op: string): [number, number, number, number, number] {
  if (q.shape.length !== 3 || k.shape.length !== 3 || v.shape.length !== 3) {
    throw new ShapeError(op, `expected 3D views, got q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)}`);
  }
  const [b, lq, d] = q.shape;
  const [, lk, dv] = v.shape;
  if (k.shape[0] !== b || v.shape[0] !== b || k.shape[2] !== d || k.shape[1] !== lk) {
    throw new ShapeError(op, `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)} do not fit`);
  }
  for (const x of [q, k, v]) if (x.storage.dtype !== 'float32') throw new DTypeError(op, 'webgpu attention needs float32 operands');
  return [b, lq, lk, d, dv];
}

/** Workgroups along x for `rows` rows. */
const tilesX = (t: AttentionTile, rows: number): number => Math.ceil(Math.ceil(rows / t.mt) / (t.sg ? 1 : wgSize(t)));

/** out = softmax(q k^T * scale) v, lse = rows' logsumexp of the scaled scores. */
export function attention(ctx: GpuContext, q: View, k: View, v: View, scale: number, out: GpuStorage, lse: GpuStorage): void {
  const [batch, lq, lk, d, dv] = dims(q, k, v, 'attention');
  if (batch === 0 || lq === 0) return;
  if (lk === 0) throw new ShapeError('attention', 'needs at least one key');
  const t = attentionTile(ctx);
  const D4 = Math.ceil(d / 4), DV4 = Math.ceil(dv / 4), LK4 = Math.ceil(lk / 4);
  const { g, slices } = slicing(t, DV4);
  const key = `attention.fwd:${tileKey(t, g)}`;
  // Per-batch bytes of the packed copies (K^T always; Q and V when not already aligned rows).
  const chunks = batchChunks(ctx, batch, [D4 * 4 * LK4 * 16, lq * D4 * 16, lk * DV4 * 16]);
  for (const [b0, nb] of chunks) {
    const temps: GPUBuffer[] = [];
    const Q = rowsOperand(ctx, batchSlice(q, b0, nb), temps);
    const KT = transOperand(ctx, batchSlice(k, b0, nb), temps);
    const V = rowsOperand(ctx, batchSlice(v, b0, nb), temps);
    const params = [lq, lk, dv, D4, DV4, LK4, Q.off4, Q.sb4, Q.sr4, KT.off4, KT.sb4, V.off4, V.sb4, V.sr4,
      b0 * lq * dv, b0 * lq, f32bits(scale), 0, 0];
    dispatchGrid(ctx, { key, source: () => forwardSource(t, g), buffers: [Q.buf, KT.buf, V.buf, out.buffer, lse.buffer], kernel: 'attention.flash_fwd' },
      params, 17, [tilesX(t, lq), slices, nb]);
    for (const b of temps) ctx.release(b);
  }
}

/** Flash-attention backward: dq, dk, dv (contiguous, batch B) from q, k, v, out, lse and dout. */
export function attentionBackward(ctx: GpuContext, q: View, k: View, v: View, out: View, lse: View, dout: View, scale: number,
  dq: GpuStorage, dk: GpuStorage, dvOut: GpuStorage): void {
  const [batch, lq, lk, d, dv] = dims(q, k, v, 'attentionBackward');
  if (batch === 0 || lk === 0 || (d === 0 && dv === 0)) return;
  const t = attentionTile(ctx);
  const D4 = Math.ceil(d / 4), DV4 = Math.ceil(dv / 4), LK4 = Math.ceil(lk / 4), LQ4 = Math.ceil(lq / 4);
  if (lq === 0) throw new ShapeError('attentionBackward', 'needs at least one query row');
  // The backward's accumulators stay at <= 2 column groups per lane (see attentionTile: LLVM compile time).
  const tb = { ...t, gmax: Math.min(t.gmax, 2) };
  const sq = slicing(tb, D4);
  const skv = slicing(tb, Math.max(D4, DV4));
  const chunks = batchChunks(ctx, batch, [D4 * 4 * LK4 * 16, DV4 * 4 * LK4 * 16, D4 * 4 * LQ4 * 16, DV4 * 4 * LQ4 * 16,
    lq * D4 * 16, lq * DV4 * 16, lk * D4 * 16, lk * DV4 * 16, 2 * LQ4 * 16]);
  for (const [b0, nb] of chunks) {
    const temps: GPUBuffer[] = [];
    const qs = batchSlice(q, b0, nb), ks = batchSlice(k, b0, nb), vs = batchSlice(v, b0, nb);
    const gs = batchSlice(dout, b0, nb), os = batchSlice(out, b0, nb);
    // LD: per batch [lse padded to 4*LQ4, D padded to 4*LQ4].
    const ld = ctx.acquire(Math.max(16, nb * 2 * LQ4 * 16), 'attentionBackward');
    temps.push(ld);
    const ls = { ...lse, offset: lse.offset + b0 * lse.strides[0] };
    dispatchGrid(ctx, { key: 'attention.bwd_prep', source: prepSource, buffers: [bufOf(os), bufOf(gs), bufOf(ls), ld], kernel: 'attention.flash_bwd_prep' },
      [lq, dv, LQ4 * 4, nb, os.offset, os.strides[0], os.strides[1], os.strides[2], gs.offset, gs.strides[0], gs.strides[1], gs.strides[2],
        ls.offset, ls.strides[0], ls.strides[1], 0, 0], 15, [Math.ceil((LQ4 * 4) / 64), 1, nb]);
    const Q = rowsOperand(ctx, qs, temps), K = rowsOperand(ctx, ks, temps), V = rowsOperand(ctx, vs, temps), G = rowsOperand(ctx, gs, temps);
    const KT = transOperand(ctx, ks, temps), VT = transOperand(ctx, vs, temps);
    dispatchGrid(ctx, { key: `attention.bwd_dq:${tileKey(t, sq.g)}`, source: () => dqSource(t, sq.g), buffers: [Q.buf, KT.buf, G.buf, VT.buf, K.buf, ld, dq.buffer], kernel: 'attention.flash_bwd_dq' },
      [lq, lk, d, dv, D4, DV4, LK4, LQ4, Q.off4, Q.sb4, Q.sr4, KT.off4, KT.sb4, G.off4, G.sb4, G.sr4, VT.off4, VT.sb4, K.off4, K.sb4, K.sr4,
        b0 * lq * d, f32bits(scale), 0, 0], 23, [tilesX(t, lq), sq.slices, nb]);
    const QT = transOperand(ctx, qs, temps), GT = transOperand(ctx, gs, temps);
    dispatchGrid(ctx, { key: `attention.bwd_dkv:${tileKey(t, skv.g)}`, source: () => dkvSource(t, skv.g), buffers: [K.buf, QT.buf, V.buf, GT.buf, G.buf, Q.buf, ld, dk.buffer, dvOut.buffer], kernel: 'attention.flash_bwd_dkv' },
      [lq, lk, d, dv, D4, DV4, LQ4, K.off4, K.sb4, K.sr4, QT.off4, QT.sb4, V.off4, V.sb4, V.sr4, GT.off4, GT.sb4, G.off4, G.sb4, G.sr4,
        Q.off4, Q.sb4, Q.sr4, b0 * lk * d, b0 * lk * dv, f32bits(scale), 0, 0], 26, [tilesX(t, lk), skv.slices, nb]);
    for (const b of temps) ctx.release(b);
  }
}
