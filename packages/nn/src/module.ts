/**
 * Module: named parameters, buffers and child modules, registered under the same names as PyTorch's
 * state-dict keys (so an original checkpoint loads by a direct walk of dotted keys).
 */
import { Tensor, keep, fmtShape, noGrad } from '@latentdem/tensor';
import type { Backend, BackendName } from '@latentdem/tensor';
import { StateDictError } from './errors.js';

export type StateDict = Map<string, Tensor>;
export interface LoadResult { missing: string[]; unexpected: string[] }
export interface LoadOptions {
  /** Default true: any missing or unexpected key throws. Mis-shaped keys always throw (as PyTorch). */
  strict?: boolean;
}

export class Module {
  /** Train mode (dropout active, batch norm on batch statistics). Set through train()/eval(). */
  training = true;
  private readonly params = new Map<string, Tensor | null>();
  private readonly bufs = new Map<string, Tensor | null>();
  private readonly nonPersistent = new Set<string>();
  private readonly children_ = new Map<string, Module>();

  /**
   * Registers (or replaces) parameter `name`; it becomes a grad-requiring leaf that belongs to the module
   * (kept out of any tidy scope). `null` registers an absent parameter (e.g. bias=false). Returns it.
   */
  registerParameter<T extends Tensor | null>(name: string, t: T): T {
    checkName(name, this, this.params, [this.params, this.bufs, this.children_]);
    if (t) { keep(t); t.requiresGrad = true; }
    this.params.set(name, t);
    return t;
  }

  /** Registers a buffer (state that is not trained: running statistics). Non-persistent ones stay out of stateDict. */
  registerBuffer<T extends Tensor | null>(name: string, t: T, opts: { persistent?: boolean } = {}): T {
    checkName(name, this, this.bufs, [this.params, this.bufs, this.children_]);
    if (t) keep(t);
    this.bufs.set(name, t);
    if (opts.persistent === false) this.nonPersistent.add(name); else this.nonPersistent.delete(name);
    return t;
  }

  registerModule<M extends Module>(name: string, m: M): M {
    checkName(name, this, this.children_, [this.params, this.bufs, this.children_]);
    this.children_.set(name, m);
    return m;
  }

  /** This module's own parameter `name` (not a child's). */
  getParameter(name: string): Tensor | null { return this.params.get(name) ?? null; }
  getBuffer(name: string): Tensor | null { return this.bufs.get(name) ?? null; }
  getChild(name: string): Module | undefined { return this.children_.get(name); }

  /** The submodule at a dotted path ('' is this module). */
  getSubmodule(path: string): Module {
    let m: Module = this;
    if (path === '') return m;
    for (const part of path.split('.')) {
      const c = m.children_.get(part);
      if (!c) throw new Error(`getSubmodule: no submodule '${part}' in '${path}'`);
      m = c;
    }
    return m;
  }

  children(): Module[] { return [...this.children_.values()]; }
  namedChildren(): Map<string, Module> { return new Map(this.children_); }

  /** This module and all descendants with their dotted paths ('' for this one), depth-first, each once. */
  namedModules(prefix = '', seen = new Set<Module>()): Map<string, Module> {
    const out = new Map<string, Module>();
    if (seen.has(this)) return out;
    seen.add(this);
    out.set(prefix, this);
    for (const [n, c] of this.children_) for (const [k, m] of c.namedModules(prefix ? `${prefix}.${n}` : n, seen)) out.set(k, m);
    return out;
  }
  modules(): Module[] { return [...this.namedModules().values()]; }

  /** Parameters under dotted names; a tensor shared by several modules appears once (as PyTorch). */
  namedParameters(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    const seen = new Set<Tensor>();
    for (const [path, m] of this.namedModules()) {
      for (const [n, t] of m.params) if (t && !seen.has(t)) { seen.add(t); out.set(path ? `${path}.${n}` : n, t); }
    }
    return out;
  }
  parameters(): Tensor[] { return [...this.namedParameters().values()]; }

  namedBuffers(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    const seen = new Set<Tensor>();
    for (const [path, m] of this.namedModules()) {
      for (const [n, t] of m.bufs) if (t && !seen.has(t)) { seen.add(t); out.set(path ? `${path}.${n}` : n, t); }
    }
    return out;
  }
  buffers(): Tensor[] { return [...this.namedBuffers().values()]; }

  /**
   * Parameters and persistent buffers under PyTorch's dotted keys, in registration order. The values are
   * the module's own tensors (as PyTorch's state_dict, not copies): clone them for a snapshot.
   */
  stateDict(): StateDict {
    const out: StateDict = new Map();
    const walk = (m: Module, prefix: string): void => {
      for (const [n, t] of m.params) if (t) out.set(prefix + n, t);
      for (const [n, t] of m.bufs) if (t && !m.nonPersistent.has(n)) out.set(prefix + n, t);
      for (const [n, c] of m.children_) walk(c, `${prefix}${n}.`);
    };
    walk(this, '');
    return out;
  }

  /**
   * Copies the values of `dict` into this module's tensors (same shapes, dtypes and backend; the input is
   * not modified). Everything is checked before anything is copied: a StateDictError lists every missing,
   * unexpected and mis-shaped key. With strict=false, missing and unexpected keys are returned instead.
   */
  loadStateDict(dict: Map<string, Tensor> | Record<string, Tensor>, opts: LoadOptions = {}): LoadResult {
    const strict = opts.strict ?? true;
    const src = dict instanceof Map ? dict : new Map(Object.entries(dict));
    const own = this.stateDict();
    const missing: string[] = [];
    const mismatched: string[] = [];
    const pairs: [Tensor, Tensor][] = [];
    for (const [k, dst] of own) {
      const v = src.get(k);
      if (!v) { missing.push(k); continue; }
      const sameShape = v.shape.length === dst.shape.length && v.shape.every((n, i) => n === dst.shape[i]);
      if (!sameShape || v.dtype !== dst.dtype) {
        mismatched.push(`${k}: checkpoint ${fmtShape(v.shape)} ${v.dtype}, model ${fmtShape(dst.shape)} ${dst.dtype}`);
      } else if (v.backend !== dst.backend) {
        mismatched.push(`${k}: checkpoint on ${v.backend.name}, model on ${dst.backend.name}`);
      } else if (v.isDisposed) {
        mismatched.push(`${k}: checkpoint tensor was disposed`);
      } else pairs.push([dst, v]);
    }
    const unexpected = [...src.keys()].filter((k) => !own.has(k));
    if (mismatched.length || (strict && (missing.length || unexpected.length))) {
      throw new StateDictError('loadStateDict', strict ? missing : [], strict ? unexpected : [], mismatched);
    }
    noGrad(() => { for (const [dst, v] of pairs) if (dst !== v) dst.assign(v); });
    return { missing, unexpected };
  }

  /** Sets train mode on this module and every descendant. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }
  eval(): this { return this.train(false); }

  /** Sets requiresGrad on every parameter (false freezes the module). */
  requireGrad(flag = true): this {
    for (const p of this.parameters()) p.requiresGrad = flag;
    return this;
  }

  /** Disposes and clears every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.parameters()) { p.grad?.dispose(); p.grad = null; }
  }

  /** Calls fn on every module (descendants first, as PyTorch's apply). */
  apply(fn: (m: Module) => void): this {
    for (const c of this.children_.values()) c.apply(fn);
    fn(this);
    return this;
  }

  /**
   * Moves every parameter and buffer to `backend` (new tensors; the old ones are disposed, gradients
   * dropped). Own fields that referenced a moved tensor are updated to the new one.
   */
  async to(backend: BackendName | Backend): Promise<this> {
    const name = typeof backend === 'string' ? backend : backend.name;
    const moved = new Map<Tensor, Tensor>();
    const move = async (t: Tensor): Promise<Tensor> => {
      let n = moved.get(t);
      if (!n) {
        n = keep(await t.to(backend));
        n.requiresGrad = t.requiresGrad;
        moved.set(t, n);
      }
      return n;
    };
    for (const m of this.modules()) {
      for (const map of [m.params, m.bufs]) {
        for (const [k, t] of map) {
          if (!t || t.backendName === name) continue;
          const n = await move(t);
          map.set(k, n);
          // Keep plain fields (`this.weight = registerParameter(...)` in user subclasses) in step.
          for (const f of Object.keys(m)) if ((m as unknown as Record<string, unknown>)[f] === t) (m as unknown as Record<string, unknown>)[f] = n;
        }
      }
    }
    for (const t of moved.keys()) t.dispose();
    return this;
  }

  /** Disposes every parameter and buffer of this module and its descendants. */
  dispose(): void {
    for (const m of this.modules()) {
      for (const t of m.params.values()) t?.dispose();
      for (const t of m.bufs.values()) t?.dispose();
    }
  }

  /** Number of parameter elements. */
  numParameters(): number { return this.parameters().reduce((a, p) => a + p.size, 0); }
}

/** Names are non-empty, dot-free, and unique across a module's parameters, buffers and children. */
function checkName(name: string, m: Module, own: Map<string, unknown>, all: Map<string, unknown>[]): void {
  if (name === '' || name.includes('.')) throw new Error(`${m.constructor.name}: invalid name '${name}' (non-empty, no dots)`);
  for (const other of all) if (other !== own && other.has(name)) throw new Error(`${m.constructor.name}: '${name}' is already registered (as another kind)`);
}

/** A module whose forward maps one tensor to one tensor (what Sequential chains). */
export interface TensorModule extends Module { forward(x: Tensor): Tensor }

/** Reads a registered parameter that must exist (for layer getters). */
export function required(m: Module, name: string, kind: 'parameter' | 'buffer' = 'parameter'): Tensor {
  const t = kind === 'parameter' ? m.getParameter(name) : m.getBuffer(name);
  if (!t) throw new Error(`${m.constructor.name}: ${kind} '${name}' is not set`);
  return t;
}
