/** Conv2d and ConvTranspose2d with PyTorch's parameter layouts and default init. */
import { ShapeError, conv2d, convTranspose2d } from '@latentdem/tensor';
import type { Pair, Tensor } from '@latentdem/tensor';
import { Module, required } from '../module.js';
import { defaultLinearInit } from '../init.js';
import type { InitOptions } from '../init.js';
import { composite } from './composite.js';

export interface Conv2dLayerOptions extends InitOptions {
  stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number; bias?: boolean;
}
const pair = (v: Pair): [number, number] => (typeof v === 'number' ? [v, v] : [v[0], v[1]]);

function checkGroups(name: string, cin: number, cout: number, groups: number): void {
  if (!Number.isInteger(groups) || groups < 1 || cin % groups !== 0 || cout % groups !== 0) {
    throw new ShapeError(name, `in_channels ${cin} and out_channels ${cout} must be divisible by groups ${groups}`);
  }
}

/** What Conv2d and ConvTranspose2d share: group checks, the default init of weight and bias, accessors. */
abstract class ConvLayer<O extends Conv2dLayerOptions> extends Module {
  readonly kernelSize: [number, number];
  /** `weightShape` gets the channel pair that leads the weight: [out, in/groups] or [in, out/groups]. */
  constructor(name: string, readonly inChannels: number, readonly outChannels: number, kernelSize: Pair, readonly options: O,
    leading: (groups: number) => [number, number]) {
    super();
    const g = options.groups ?? 1;
    checkGroups(name, inChannels, outChannels, g);
    this.kernelSize = pair(kernelSize);
    const { weight, bias } = defaultLinearInit([...leading(g), ...this.kernelSize], options.bias === false ? null : outChannels, options);
    this.registerParameter('weight', weight);
    this.registerParameter('bias', bias);
  }
  get weight(): Tensor { return required(this, 'weight'); }
  get bias(): Tensor | null { return this.getParameter('bias'); }
}

/** torch.nn.Conv2d: weight [out, in/groups, kh, kw], bias [out]. */
export class Conv2d extends ConvLayer<Conv2dLayerOptions> {
  constructor(inChannels: number, outChannels: number, kernelSize: Pair, options: Conv2dLayerOptions = {}) {
    super('Conv2d', inChannels, outChannels, kernelSize, options, (g) => [outChannels, inChannels / g]);
  }

  forward(x: Tensor): Tensor {
    const o = this.options;
    const w = this.weight; const bias = this.bias;
    // composite: tensor's conv2d adds the bias as a separate op, whose intermediate would otherwise outlive a noGrad call.
    return composite([x, w, bias], () => conv2d(x, w, { stride: o.stride, padding: o.padding, dilation: o.dilation, groups: o.groups, bias }));
  }
}

export interface ConvTranspose2dLayerOptions extends Conv2dLayerOptions { outputPadding?: Pair }

/** torch.nn.ConvTranspose2d: weight [in, out/groups, kh, kw], bias [out]; PyTorch's fan_in is (out/groups)*kh*kw. */
export class ConvTranspose2d extends ConvLayer<ConvTranspose2dLayerOptions> {
  constructor(inChannels: number, outChannels: number, kernelSize: Pair, options: ConvTranspose2dLayerOptions = {}) {
    super('ConvTranspose2d', inChannels, outChannels, kernelSize, options, (g) => [inChannels, outChannels / g]);
  }

  forward(x: Tensor): Tensor {
    const o = this.options;
    return convTranspose2d(x, this.weight, { stride: o.stride, padding: o.padding, dilation: o.dilation, groups: o.groups, outputPadding: o.outputPadding, bias: this.bias });
  }
}
