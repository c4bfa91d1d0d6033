/** The benchmark's workloads, shared by our timing (run.ts) and PyTorch's (torch_bench.py reads them as JSON). */
export interface Workload {
  name: string;
  kind: 'matmul' | 'conv2d' | 'conv2d_dx' | 'conv2d_dw' | 'softmax' | 'groupnorm' | 'groupnorm_silu' | 'attention' | 'fft2';
  /**
   * matmul: [M, K, N]; conv2d, conv2d_dx, conv2d_dw: [N, C, H, W, O, kh, kw, pad]; softmax: shape; groupnorm and
   * groupnorm_silu: [...shape, groups]; attention: [batch, L, d] of q, k and v; fft2: shape.
   * conv2d_dx / conv2d_dw: the gradient of conv2d w.r.t. its input / its weight for a given output gradient (ours:
   * autodiff of L.conv2d, the forward untimed; PyTorch: torch.nn.grad.conv2d_input / conv2d_weight).
   */
  dims: number[];
  unit: 'GFLOP/s' | 'GB/s';
  /** Flops or bytes moved per run. */
  work: number;
}

const mm = (n: number): Workload => ({ name: `matmul ${n}x${n}x${n}`, kind: 'matmul', dims: [n, n, n], unit: 'GFLOP/s', work: 2 * n ** 3 });
/** Conv rows' flops are PyTorch-equivalent direct-convolution flops (2 N O Ho Wo C kh kw), the same for both gradients. */
const conv = (n: number, c: number, h: number, o: number, kind: 'conv2d' | 'conv2d_dx' | 'conv2d_dw' = 'conv2d'): Workload => ({
  name: `${kind === 'conv2d' ? 'conv2d' : kind === 'conv2d_dx' ? 'conv2d input-grad' : 'conv2d weight-grad'} ${n}x${c}x${h}x${h} * ${o}x${c}x3x3 pad 1`,
  kind, dims: [n, c, h, h, o, 3, 3, 1], unit: 'GFLOP/s', work: 2 * n * o * h * h * c * 9,
});

export const WORKLOADS: Workload[] = [
  mm(256), mm(512), mm(1024), mm(2048),
  conv(2, 320, 32, 320), conv(2, 640, 16, 640),
  conv(2, 320, 32, 320, 'conv2d_dx'), conv(2, 320, 32, 320, 'conv2d_dw'),
  // softmax(q k^T / sqrt(d)) v: SD's first-level self-attention (batch 2 x 8 heads, 32x32 latent, d 40); 2 matmuls of 2 L^2 d flops.
  { name: 'attention softmax(QK^T/sqrt(d))V 16x1024x40', kind: 'attention', dims: [16, 1024, 40], unit: 'GFLOP/s', work: 2 * 2 * 16 * 1024 * 1024 * 40 },
  { name: 'softmax last axis 8x1024x1024', kind: 'softmax', dims: [8, 1024, 1024], unit: 'GB/s', work: 2 * 8 * 1024 * 1024 * 4 },
  { name: 'group norm 2x320x64x64, 32 groups, affine', kind: 'groupnorm', dims: [2, 320, 64, 64, 32], unit: 'GB/s', work: 2 * 2 * 320 * 64 * 64 * 4 },
  { name: 'group norm + SiLU 2x320x64x64, 32 groups, affine', kind: 'groupnorm_silu', dims: [2, 320, 64, 64, 32], unit: 'GB/s', work: 2 * 2 * 320 * 64 * 64 * 4 },
  // 5 N log2 N: the usual flop count of a complex FFT of N points.
  { name: 'fft2 complex 256x256', kind: 'fft2', dims: [1, 256, 256], unit: 'GFLOP/s', work: 5 * 65536 * 16 },
];
