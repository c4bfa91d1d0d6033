/** Explicit memory: live-tensor accounting and `tidy` scopes. */
import type { BackendName } from './backend.js';

export interface Disposable { dispose(): void; readonly isDisposed: boolean }

const scopes: Set<Disposable>[] = [];

export const liveStats = {
  tensors: { cpu: 0, webgpu: 0 } as Record<BackendName, number>,
  bytes: { cpu: 0, webgpu: 0 } as Record<BackendName, number>,
  storages: { cpu: 0, webgpu: 0 } as Record<BackendName, number>,
};

export function trackInScope(t: Disposable): void {
  if (scopes.length) scopes[scopes.length - 1].add(t);
}

export function untrack(t: Disposable): void {
  for (const s of scopes) s.delete(t);
}

/** Walks arrays and plain objects (one level of nesting at a time) for values of the tracked kind. */
function collect(value: unknown, isTracked: (v: unknown) => v is Disposable, out: Set<Disposable>, depth = 0): void {
  if (depth > 8 || value === null || typeof value !== 'object') return;
  if (isTracked(value)) { out.add(value); return; }
  if (Array.isArray(value)) { for (const v of value) collect(v, isTracked, out, depth + 1); return; }
  if (value instanceof Map) { for (const v of value.values()) collect(v, isTracked, out, depth + 1); return; }
  if (Object.getPrototypeOf(value) === Object.prototype) for (const v of Object.values(value)) collect(v, isTracked, out, depth + 1);
}

let isTensor: (v: unknown) => v is Disposable = (_v): _v is Disposable => false;
export function registerTensorClass(pred: (v: unknown) => v is Disposable): void { isTensor = pred; }

/**
 * Runs `fn`; every tensor created inside and not returned (in an array, Map or plain object) is disposed
 * on exit. Returned tensors move to the enclosing scope. `fn` must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
    if (result instanceof Promise) throw new TypeError('tidy: fn must be synchronous (it returned a Promise); await outside tidy');
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  const keep = new Set<Disposable>();
  collect(result, isTensor, keep);
  for (const t of scope) if (!keep.has(t)) t.dispose();
  // Only tensors this scope owned move to the enclosing one: a returned tensor created outside (or keep()-ed)
  // must not become the enclosing scope's to dispose.
  for (const t of keep) if (!t.isDisposed && scope.has(t)) trackInScope(t);
  return result;
}

/** Keeps `t` alive past the enclosing tidy scopes. */
export function keep<T extends Disposable>(t: T): T { untrack(t); return t; }
