/** Errors of packages/nn (typed like those of @latentdem/tensor: they name the op and what is wrong). */
import { LatentdemError } from '@latentdem/tensor';

/**
 * A state dict that does not fit a module (or an optimizer): every missing, unexpected and mis-shaped
 * key is named in the one message, and kept in the fields for programs.
 */
export class StateDictError extends LatentdemError {
  constructor(
    op: string,
    readonly missing: readonly string[],
    readonly unexpected: readonly string[],
    /** One line per key: `key: checkpoint [a,b] float32, model [c,d] float32`. */
    readonly mismatched: readonly string[],
  ) {
    const parts: string[] = [];
    if (missing.length) parts.push(`missing keys (${missing.length}): ${missing.join(', ')}`);
    if (unexpected.length) parts.push(`unexpected keys (${unexpected.length}): ${unexpected.join(', ')}`);
    if (mismatched.length) parts.push(`mis-shaped keys (${mismatched.length}): ${mismatched.join('; ')}`);
    super(op, parts.join('; ') || 'state dict does not fit');
  }

  /** One short line for a CLI: the counts, and the first few keys of each kind. */
  summary(): string {
    const part = (what: string, keys: readonly string[]): string[] =>
      keys.length ? [`${keys.length} ${what} (${keys.slice(0, 3).join('; ')}${keys.length > 3 ? '; ...' : ''})`] : [];
    return [...part('mis-shaped', this.mismatched), ...part('missing', this.missing), ...part('unexpected', this.unexpected)].join(', ');
  }
}
