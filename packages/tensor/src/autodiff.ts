/**
 * Reverse-mode autodiff on a tape. An op whose inputs require grad records a node (inputs, backward);
 * `backward()` walks the nodes in reverse topological order. Higher-order gradients are not supported:
 * backward functions run with recording off.
 */
import type { Tensor } from './tensor.js';

export type BackwardFn = (grads: (Tensor | null)[]) => (Tensor | null)[];

export interface Node {
  readonly name: string;
  readonly inputs: readonly Tensor[];
  readonly outputs: readonly Tensor[];
  readonly backward: BackwardFn;
}

let gradEnabled = true;

export function isGradEnabled(): boolean { return gradEnabled; }

/** Runs `fn` without recording anything on the tape. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try { return fn(); } finally { gradEnabled = prev; }
}

/** Runs `fn` with recording on (inside a backward function, to rebuild a piece of the tape). */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try { return fn(); } finally { gradEnabled = prev; }
}

/** Records `outputs = name(inputs)` when any input requires grad. */
export function record(name: string, inputs: readonly Tensor[], outputs: readonly Tensor[], backward: BackwardFn): void {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return;
  const node: Node = { name, inputs, outputs, backward };
  outputs.forEach((o, i) => { o.requiresGrad = true; o.node = node; o.outputIndex = i; });
}

/** Nodes reachable from `roots`, in topological order (inputs before outputs). */
export function topoNodes(roots: readonly Tensor[]): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>();
  const stack: Array<[Node, number]> = [];
  for (const r of roots) if (r.node && !seen.has(r.node)) { seen.add(r.node); stack.push([r.node, 0]); }
  // Iterative DFS (a UNet's tape is deep enough to overflow the JS stack when recursive).
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1]++;
      const child = node.inputs[i].node;
      if (child && !seen.has(child)) { seen.add(child); stack.push([child, 0]); }
    } else {
      stack.pop();
      order.push(node);
    }
  }
  return order;
}
