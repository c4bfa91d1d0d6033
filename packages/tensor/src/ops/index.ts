export * from './views.js';
export * from './elementwise.js';
export * from './reduce.js';
export * from './linalg.js';
export * from './conv.js';
export * from './nn.js';
export * from './fft.js';
export * from './creation.js';
export { grad, valueAndGrad } from './grad.js';
