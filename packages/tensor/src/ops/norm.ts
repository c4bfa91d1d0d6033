/**
 * GroupNorm as one backend primitive (statistics, normalization, affine and an optional SiLU in one launch),
 * and its first-order backward as another, from the saved (mean, rstd). `groupNormComposite` in nn.ts is the
 * reference both are tested against.
 */
import type { NormAct } from '../backend.js';
import { ShapeError, fmtShape } from '../errors.js';
import { record } from '../autodiff.js';
import { keep } from '../memory.js';
import type { Tensor } from '../tensor.js';
import { backendOf, empty, launch, requireFloat } from './core.js';
import { contiguous, narrow, reshape } from './views.js';

/** The shape checks shared by the fused op and the composite. */
export function checkGroupNorm(op: string, x: Tensor, groups: number, weight: Tensor | null, bias: Tensor | null): void {
  requireFloat(op, x, ...[weight, bias].filter((t): t is Tensor => !!t));
  if (x.rank < 2 || !Number.isInteger(groups) || groups < 1 || x.shape[1] % groups !== 0) {
    throw new ShapeError(op, `${groups} groups do not divide the channels of ${fmtShape(x.shape)}`);
  }
  const c = x.shape[1];
  for (const [name, t] of [['weight', weight], ['bias', bias]] as const) {
    if (t && (t.rank !== 1 || t.shape[0] !== c)) throw new ShapeError(op, `${name} ${fmtShape(t.shape)} must be [${c}] (the channels of x ${fmtShape(x.shape)})`);
  }
}

function fusedGroupNorm(op: string, x: Tensor, groups: number, weight: Tensor | null, bias: Tensor | null, eps: number, act: NormAct): Tensor {
  checkGroupNorm(op, x, groups, weight, bias);
  const inputs = [x, weight, bias].filter((t): t is Tensor => !!t);
  const be = backendOf(op, ...inputs);
  const out = empty(be, x.shape, 'float32');
  const stats = empty(be, [x.shape[0], groups, 2], 'float32');
  if (x.size > 0) launch(op, be, inputs, [out], () => be.groupNorm(x, groups, weight, bias, eps, act, out.storage, stats.storage));
  record(op, inputs, [out], ([g]) => {
    const [dx, dw, db] = groupNormBackward(op, g!, x, stats, groups, weight, bias, act);
    return [dx, ...(weight ? [dw] : []), ...(bias ? [db] : [])];
  });
  // The backward needs the statistics exactly as long as the output exists.
  if (out.node) { keep(stats); out.own(stats); } else stats.dispose();
  return out;
}

/**
 * Gradients of y = act(xhat * w + b), xhat = (x - mean) * rstd per group, from the saved (mean, rstd), in one
 * backend launch (Backend.groupNormBackward): dz = dy * act'(z); db = sum dz; dw = sum dz * xhat;
 * dx = rstd * (dz w - mean_group(dz w) - xhat * mean_group(dz w xhat)).
 */
function groupNormBackward(op: string, g: Tensor, x: Tensor, stats: Tensor, groups: number, weight: Tensor | null, bias: Tensor | null, act: NormAct): (Tensor | null)[] {
  const be = x.backend;
  const c = x.shape[1];
  const dy = contiguous(g);
  const dx = x.requiresGrad ? empty(be, x.shape, 'float32') : null;
  const dwdb = empty(be, [2, c], 'float32');
  const inputs = [x, dy, ...[weight, bias].filter((t): t is Tensor => !!t)];
  if (x.size > 0) launch(`${op}Backward`, be, inputs, dx ? [dx, dwdb] : [dwdb], () => be.groupNormBackward(x, dy, stats, groups, weight, bias, act, dx?.storage ?? null, dwdb.storage));
  else be.fill(dwdb.storage, 0);
  const row = (k: number): Tensor => reshape(narrow(dwdb, 0, k, 1), [c]);
  return [dx, weight?.requiresGrad ? row(0) : null, bias?.requiresGrad ? row(1) : null];
}

/** Group norm over [N, C, ...]: statistics per (sample, group of C/groups channels), affine per channel; one fused kernel. */
export function groupNorm(x: Tensor, groups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return fusedGroupNorm('groupNorm', x, groups, weight ?? null, bias ?? null, eps, 'none');
}

/** silu(groupNorm(x, ...)) in one fused kernel: the GroupNorm + SiLU pairs of SD's UNet and VAE. */
export function groupNormSilu(x: Tensor, groups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return fusedGroupNorm('groupNormSilu', x, groups, weight ?? null, bias ?? null, eps, 'silu');
}
