export { ConfigError } from './config.js';
export { UNet, SD15_UNET_CONFIG, checkUNetConfig, timestepEmbedding, ResBlock, Downsample, Upsample, CrossAttention, GEGLU, FeedForward, BasicTransformerBlock, SpatialTransformer, TimestepEmbedSequential } from './unet.js';
export type { UNetConfig, ResolvedUNetConfig, UNetForwardOptions, UNetInitOptions } from './unet.js';
export { AutoencoderKL, Encoder, Decoder, DiagonalGaussian, SD15_VAE_CONFIG } from './autoencoder.js';
export type { AutoencoderKLConfig, AutoencoderDDConfig, PosteriorSampleOptions, EncodeLatentOptions, ModelInitOptions } from './autoencoder.js';
