/** Key renames between checkpoint layouts: the only place renames live. */
export {
  COMPVIS_PREFIX, DIFFUSERS_PREFIX, UNET_EXACT, UNET_RESNET_PARTS, UNET_LAYER_PARTS, VAE_PARTS, VAE_ATTENTION_PARTS, VAE_CONV1X1, CLIP_PARTS,
  diffusersToCompvis, needsConv1x1, detectDiffusersModel, mapDiffusersKeys,
} from './sd1.js';
export type { Pair, SdModel, KeyMapping } from './sd1.js';
