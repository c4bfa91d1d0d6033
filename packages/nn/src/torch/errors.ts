/** The typed error of the torch checkpoint reader. */
import { LatentdemError } from '@latentdem/tensor';

/**
 * A checkpoint that cannot be read, or that asks for something the reader refuses (a global outside the
 * allow-list, a call, a corrupted archive). The message names the file and the global or key involved.
 */
export class CheckpointError extends LatentdemError {
  constructor(readonly file: string, detail: string) {
    super(file, detail);
  }
}
