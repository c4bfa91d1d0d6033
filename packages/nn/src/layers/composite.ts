/**
 * As the tensor package's composites: a layer's forward outside a gradient runs in a tidy, freeing its
 * intermediates at once; when a gradient will be recorded the tape needs them and the caller's tidy frees them.
 */
import { isGradEnabled, tidy } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';

export function composite(inputs: readonly (Tensor | null | undefined)[], fn: () => Tensor): Tensor {
  if (isGradEnabled() && inputs.some((t) => t?.requiresGrad)) return fn();
  return tidy(fn);
}
