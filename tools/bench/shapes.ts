/** The benchmark's workloads, shared by our timing (run.ts) and PyTorch's (torch_bench.py reads them as JSON). */
export interface Workload {
  name: string;
  kind: 'matmul' | 'conv2d' | 'softmax' | 'groupnorm' | 'fft2';
  /** matmul: [M, K, N]; conv2d: [N, C, H, W, O, kh, kw, pad]; softmax: shape; groupnorm: [...shape, groups]; fft2: shape. */
  dims: number[];
  unit: 'GFLOP/s' | 'GB/s';
  /** Flops or bytes moved per run. */
  work: number;
}

const mm = (n: number): Workload => ({ name: `matmul ${n}x${n}x${n}`, kind: 'matmul', dims: [n, n, n], unit: 'GFLOP/s', work: 2 * n ** 3 });
const conv = (n: number, c: number, h: number, o: number): Workload => ({
  name: `conv2d ${n}x${c}x${h}x${h} * ${o}x${c}x3x3 pad 1`, kind: 'conv2d', dims: [n, c, h, h, o, 3, 3, 1], unit: 'GFLOP/s', work: 2 * n * o * h * h * c * 9,
});

export const WORKLOADS: Workload[] = [
  mm(256), mm(512), mm(1024), mm(2048),
  conv(2, 320, 32, 320), conv(2, 640, 16, 640),
  { name: 'softmax last axis 8x1024x1024', kind: 'softmax', dims: [8, 1024, 1024], unit: 'GB/s', work: 2 * 8 * 1024 * 1024 * 4 },
  { name: 'group norm 2x320x64x64, 32 groups, affine', kind: 'groupnorm', dims: [2, 320, 64, 64, 32], unit: 'GB/s', work: 2 * 2 * 320 * 64 * 64 * 4 },
  // 5 N log2 N: the usual flop count of a complex FFT of N points.
  { name: 'fft2 complex 256x256', kind: 'fft2', dims: [1, 256, 256], unit: 'GFLOP/s', work: 5 * 65536 * 16 },
];
