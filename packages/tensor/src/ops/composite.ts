import { isGradEnabled } from '../autodiff.js';
import { tidy } from '../memory.js';
import type { Tensor } from '../tensor.js';

/**
 * Runs a composite op's body. When no gradient will be recorded its intermediates are freed at once
 * (tidy); otherwise the tape needs them and they live until the caller's tidy scope ends.
 */
export function composite<T extends Tensor | Tensor[]>(inputs: readonly (Tensor | null | undefined)[], fn: () => T): T {
  if (isGradEnabled() && inputs.some((t) => t?.requiresGrad)) return fn();
  return tidy(fn);
}
