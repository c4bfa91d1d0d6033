import { AxisError, ShapeError, fmtShape } from './errors.js';

export type Shape = readonly number[];

export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const d = rank - s.length + i;
      const n = s[i];
      if (n === out[d] || n === 1) continue;
      if (out[d] === 1) { out[d] = n; continue; }
      throw new ShapeError(op, `shapes ${shapes.map(fmtShape).join(' and ')} cannot be broadcast together (axis ${d}: ${out[d]} vs ${n})`);
    }
  }
  return out;
}

export function normalizeAxis(op: string, axis: number, rank: number): number {
  // A rank-0 tensor accepts axis 0 and -1, as in PyTorch.
  const r = Math.max(rank, 1);
  if (!Number.isInteger(axis) || axis < -r || axis >= r) {
    throw new AxisError(op, `axis ${axis} is out of range for a tensor of rank ${rank}`);
  }
  return axis < 0 ? axis + r : axis;
}

/** Sorted, unique axes; undefined means all axes. */
export function normalizeAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = (typeof axes === 'number' ? [axes] : [...axes]).map((a) => normalizeAxis(op, a, rank));
  const set = new Set(list);
  if (set.size !== list.length) throw new AxisError(op, `repeated axis in [${axes}]`);
  // Axis 0 / -1 of a rank-0 tensor names no real axis: reducing, flipping or squeezing it is the identity.
  if (rank === 0) return [];
  return [...set].sort((a, b) => a - b);
}

export function checkShape(op: string, shape: Shape): void {
  for (const n of shape) {
    if (!Number.isInteger(n) || n < 0) throw new ShapeError(op, `invalid shape ${fmtShape(shape)}: sizes must be non-negative integers`);
  }
}

export const numel = (shape: Shape): number => shape.reduce((a, b) => a * b, 1);

export const sameShape = (a: Shape, b: Shape): boolean => a.length === b.length && a.every((n, i) => n === b[i]);
