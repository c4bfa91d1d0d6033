/** Embedding: a lookup table of num_embeddings rows of embedding_dim (torch.nn.Embedding). */
import { arange, noGrad, tidy, where } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { DTypeError } from '@latentdem/tensor';
import { Module, required } from '../module.js';
import { normal } from '../init.js';
import { composite } from './composite.js';
import type { InitOptions } from '../init.js';

export interface EmbeddingOptions extends InitOptions { paddingIdx?: number }

/** weight [num, dim] ~ N(0, 1) (PyTorch's default); the padding row, if any, starts at zero. */
export class Embedding extends Module {
  readonly paddingIdx: number | null;
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, o: EmbeddingOptions = {}) {
    super();
    const w = normal([numEmbeddings, embeddingDim], 0, 1, o);
    this.paddingIdx = o.paddingIdx === undefined ? null : o.paddingIdx < 0 ? o.paddingIdx + numEmbeddings : o.paddingIdx;
    if (this.paddingIdx !== null) {
      const p = this.paddingIdx;
      noGrad(() => tidy(() => { w.narrow(0, p, 1).assign(w.narrow(0, p, 1).mul(0)); }));
    }
    this.registerParameter('weight', w);
  }
  get weight(): Tensor { return required(this, 'weight'); }

  /**
   * ids: int32 of any shape -> [...ids.shape, dim]. The tensor package has no gather op, so the lookup is
   * a one-hot matrix (ids == arange(num)) times the weight: differentiable for free (the weight's gradient
   * is onehot^T g). As in PyTorch the padding row receives no gradient: it is read through a detached
   * view. Ids out of range give zero rows (PyTorch raises).
   */
  forward(ids: Tensor): Tensor {
    if (ids.dtype !== 'int32') throw new DTypeError('Embedding', `ids must be int32, got ${ids.dtype}`);
    const weight = this.weight;
    return composite([weight], () => {
      const range = arange(0, this.numEmbeddings, 1, { dtype: 'int32', backend: weight.backend });
      const onehot = ids.unsqueeze(-1).eq(range);
      const w = this.paddingIdx !== null && weight.requiresGrad ? where(range.ne(this.paddingIdx).unsqueeze(-1), weight, weight.detach()) : weight;
      return onehot.matmul(w);
    });
  }
}
