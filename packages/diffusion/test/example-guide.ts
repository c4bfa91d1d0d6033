// The guidance-rule example of docs/samplers.md, verbatim but for the import path (test/sampler.test.ts runs it).
import type { Tensor } from '@latentdem/tensor';
import type { Guide, GuideContext } from '../src/index.js';

/**
 * Range/null-space projection (DDNM, Wang et al. 2023) for a linear A with orthonormal rows (A A^T = I):
 * put y into the measured part of the x0 estimate, x0' = x0 + A^T (y - A x0), and redo the DDIM step from
 * x0'. It needs no gradient through the model, so `needsGrad` stays unset and the model runs without tape.
 */
export function nullSpaceProjection(
  y: Tensor,                         // the measurement [1, m] (broadcast over the chains)
  A: (x: Tensor) => Tensor,          // [N, n] -> [N, m]
  At: (v: Tensor) => Tensor,         // [N, m] -> [N, n]
  eta = 0,                           // DDIM noise of the redone step
): Guide {
  const guide: Guide = (ctx: GuideContext) => {
    // ctx.x0 is the Tweedie estimate from x_t; ctx.xPrev (the unguided step) is simply not used.
    const x0 = ctx.x0.add(At(y.sub(A(ctx.x0))));
    return ctx.schedule.ddimStep(x0, ctx.eps, ctx.step, eta, ctx.generator);
  };
  return guide;
}

// Usage:
//   const s = new Schedule({ steps: 100 });
//   const x = sample({ model, schedule: s, shape: [N, n], seed: 1, guide: nullSpaceProjection(y, A, At) });
