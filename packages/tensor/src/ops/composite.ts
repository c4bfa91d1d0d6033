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

/**
 * Runs a model block's body in a tidy scope when no gradient is being recorded (inside noGrad), so inference
 * frees each block's intermediates as it goes; with recording on it runs plainly, since the tape needs them.
 * Models wrap their blocks' forward in it; run inference under noGrad to benefit.
 */
export function tidyUnlessRecording<T>(fn: () => T): T {
  return isGradEnabled() ? fn() : tidy(fn);
}
