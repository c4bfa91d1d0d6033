/** Shared by the model fixture tests. */

/** The error `fn` throws, or null. (tap's t.throws takes no predicate.) */
export function thrown(fn: () => unknown): unknown {
  try { fn(); } catch (e) { return e; }
  return null;
}

/** The fixtures' two measures: max |a - e| and that over std(e) (population std). */
export function fixtureErrors(a: ArrayLike<number>, e: ArrayLike<number>): { maxAbs: number; rel: number } {
  let maxAbs = 0; let s = 0; let s2 = 0;
  for (let i = 0; i < e.length; i++) { maxAbs = Math.max(maxAbs, Math.abs(a[i] - e[i])); s += e[i]; s2 += e[i] * e[i]; }
  const mean = s / e.length;
  return { maxAbs: a.length === e.length ? maxAbs : Infinity, rel: maxAbs / Math.sqrt(Math.max(s2 / e.length - mean * mean, 0)) };
}
