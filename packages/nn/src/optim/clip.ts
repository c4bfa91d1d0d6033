/** Gradient clipping by total norm (torch.nn.utils.clip_grad_norm_). */
import { keep, noGrad, stack, tidy } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';

/**
 * Scales every gradient in place by min(1, maxNorm / (total + 1e-6)), where total is the norm of all
 * gradients together (normType 2 or Infinity), and returns total as a rank-0 tensor that the caller owns
 * (no read-back, so no sync). Parameters without a gradient are skipped; with none at all it returns null.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, normType: number = 2): Tensor | null {
  const grads = [...params].map((p) => p.grad).filter((g): g is Tensor => g !== null);
  if (!grads.length) return null;
  if (normType !== 2 && normType !== Infinity) throw new Error(`clipGradNorm: normType ${normType} not supported (2 or Infinity)`);
  return keep(noGrad(() => tidy(() => {
    const norms = grads.map((g) => (normType === Infinity ? g.abs().max() : g.square().sum()));
    const total = normType === Infinity ? stack(norms).max() : stack(norms).sum().sqrt();
    const coef = total.add(1e-6).reciprocal().mul(maxNorm).clamp(null, 1);
    for (const g of grads) g.assign(g.mul(coef));
    return total;
  })));
}
