export * from './schedule.js';
export * from './sampler.js';
export * from './guidance.js';
export * as testing from './testing/gaussian.js';
export * from './models/index.js';
