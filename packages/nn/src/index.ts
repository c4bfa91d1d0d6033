/** @latentdem/nn: modules, layers, optimizers, checkpoint I/O. */
export {};
