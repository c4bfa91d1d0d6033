/** Running the tape backwards: `backward()` for leaves' `.grad`, and the functional `grad` / `valueAndGrad`. */
import { enableGrad, isGradEnabled, noGrad, record, topoNodes } from '../autodiff.js';
import { GradientError, ShapeError, fmtShape } from '../errors.js';
import { keep, tidy } from '../memory.js';
import { sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { full } from './creation.js';
import { add } from './elementwise.js';
import { viewOf } from './core.js';
import { clone } from './views.js';

/**
 * Back-propagates from `roots` (seeded with `seeds`, default ones for one-element roots). With
 * `accumulate`, leaf gradients are added into `.grad`; returns the gradients of `wrt` (if given).
 */
export function backward(roots: readonly Tensor[], seeds?: readonly Tensor[], accumulate = false, wrt: readonly Tensor[] = []): (Tensor | null)[] {
  return noGrad(() => tidy(() => {
    const grads = new Map<Tensor, Tensor>();
    const push = (t: Tensor, g: Tensor): void => {
      if (!sameShape(g.shape, t.shape)) throw new GradientError('backward', `gradient ${fmtShape(g.shape)} does not match tensor ${fmtShape(t.shape)}`);
      const prev = grads.get(t);
      grads.set(t, prev ? add(prev, g) : g);
    };
    roots.forEach((r, i) => {
      const seed = seeds?.[i];
      if (!seed && r.size !== 1) throw new GradientError('backward', `needs a seed gradient for a non-scalar output ${fmtShape(r.shape)}`);
      if (seed && !sameShape(seed.shape, r.shape)) throw new ShapeError('backward', `seed ${fmtShape(seed.shape)} does not match output ${fmtShape(r.shape)}`);
      push(r, seed ?? full(r.shape, 1, { backend: r.backend }));
    });
    const nodes = topoNodes(roots);
    for (let i = nodes.length - 1; i >= 0; i--) {
      const node = nodes[i];
      const outGrads = node.outputs.map((o) => grads.get(o) ?? null);
      if (outGrads.every((g) => g === null)) continue;
      for (const o of node.outputs) if (!wrt.includes(o)) grads.delete(o);
      for (const t of node.inputs) t.assertLive(`backward through ${node.name}`);
      // Each node's temporaries are freed as soon as its input gradients are in the map, and a consumed output
      // gradient as soon as nothing holds it: a UNet's backward otherwise keeps every gradient until the end.
      tidy(() => {
        const inGrads = node.backward(outGrads);
        node.inputs.forEach((t, k) => { const g = inGrads[k]; if (g && t.requiresGrad) push(t, g); });
        return [...grads.values()];
      });
      const held = new Set(grads.values());
      for (const g of outGrads) if (g && !held.has(g) && !roots.includes(g) && !seeds?.includes(g)) g.dispose();
    }
    if (accumulate) {
      for (const [t, g] of grads) {
        if (t.node) continue;
        // A private copy: the same gradient tensor may reach several leaves.
        // .grad belongs to its leaf, not to any tidy scope (the caller's included): keep() it.
        const own = keep(clone(g));
        if (t.grad) { const sum = keep(add(t.grad, own)); t.grad.dispose(); own.dispose(); t.grad = sum; } else t.grad = own;
      }
    }
    return wrt.map((t) => { const g = grads.get(t); return g ? clone(g) : null; });
  }));
}

/**
 * Activation checkpointing (CompVis util.py:102 `checkpoint`, torch.utils.checkpoint): runs `fn(...inputs)`
 * without keeping its intermediates on the tape, and recomputes them when the backward reaches it. `params`
 * are the tensors `fn` reads besides its inputs whose gradients are wanted (a block's parameters); anything
 * else `fn` reads gets no gradient through it. `fn` must be deterministic (no active dropout).
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: readonly Tensor[], params: readonly Tensor[] = []): Tensor {
  const gradParams = params.filter((p) => p.requiresGrad);
  if (!isGradEnabled() || !(inputs.some((x) => x.requiresGrad) || gradParams.length)) return fn(...inputs);
  const out = noGrad(() => tidy(() => fn(...inputs)));
  record('checkpoint', [...inputs, ...gradParams], [out], ([g]) => {
    const leaves = inputs.map((x) => { const v = viewOf(x, x.shape, x.strides, x.offset); v.requiresGrad = x.requiresGrad; return v; });
    const wrt = [...leaves.filter((v) => v.requiresGrad), ...gradParams];
    const y = enableGrad(() => fn(...leaves));
    const gs = backward([y], [g!], false, wrt);
    let k = 0;
    return [...leaves.map((v) => (v.requiresGrad ? gs[k++] : null)), ...gradParams.map(() => gs[k++])];
  });
  return out;
}

/** Functional gradient: grad(f)(...xs) returns d f / d x_i for each argument (f must return one element). */
export function grad(f: (...xs: Tensor[]) => Tensor): (...xs: Tensor[]) => Tensor[] {
  return (...xs) => valueAndGrad(f)(...xs).grads;
}

/** Like `grad`, also returning f's value. The arguments' own `.grad` and flags are left untouched. */
export function valueAndGrad(f: (...xs: Tensor[]) => Tensor): (...xs: Tensor[]) => { value: Tensor; grads: Tensor[] } {
  return (...xs) => {
    const watched = xs.map((x) => { x.assertLive('grad'); const w = viewOf(x, x.shape, x.strides, x.offset); w.requiresGrad = true; return w; });
    const value = f(...watched);
    if (!(value instanceof Tensor)) throw new GradientError('grad', 'f must return a Tensor');
    if (!value.requiresGrad) throw new GradientError('grad', `f's result ${fmtShape(value.shape)} does not depend on its arguments`);
    const gs = backward([value], undefined, false, watched);
    const grads = gs.map((g, i) => g ?? full(xs[i].shape, 0, { backend: xs[i].backend }));
    for (const w of watched) { if (w === value) w.requiresGrad = false; else w.dispose(); }
    return { value, grads };
  };
}
