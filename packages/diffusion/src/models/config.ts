/** Errors about model configurations (shared by the diffusion package's models). */
import { LatentdemError } from '@latentdem/tensor';

/**
 * A model configuration that is invalid or asks for something this implementation does not support.
 * `option` names the offending constructor argument (the original's snake_case name).
 */
export class ConfigError extends LatentdemError {
  constructor(op: string, readonly option: string, detail: string) {
    super(op, `${option}: ${detail}`);
  }
}
