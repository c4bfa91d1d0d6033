/**
 * LatentDEM's step schedules, as functions of the DDIM index (999 at the first reverse step, 0 at the last,
 * as the release's `index`): the two forms of annealing consistency and the skip-gradient rule.
 * Sources: ../shared/data/latentdem-release/ALGORITHM.md section 2 (release psld.py lines cited there) and
 * the paper (Bai, Chen, Chen, Sun 2024, Techniques 1 and 2).
 */

/** The release's data-term scale (psld.py:292-306): 0.8 (0.1/0.8)^((index-600)/400) above index 600, then 0.8. */
export const RELEASE_ANNEAL = { start: 0.1, end: 0.8, untilIndex: 600, steps: 1000 } as const;

export function releaseAnnealScale(index: number): number {
  const { start, end, untilIndex, steps } = RELEASE_ANNEAL;
  if (index <= untilIndex) return end;
  return end * (start / end) ** ((index - untilIndex) / (steps - untilIndex));
}

export interface PaperAnnealOptions {
  /** Divisor of the data term at the first step (paper: 10). */
  from?: number;
  /** Divisor once the anneal is over (paper: 1). */
  to?: number;
  /** The anneal runs while index > untilIndex (default 600, the release's early range), then holds `to`. */
  untilIndex?: number;
  /** Number of DDIM steps (the first index is steps - 1). */
  steps?: number;
}

/** The paper's annealing consistency as a multiplier of the data term: 1 / factor, factor linear from 10 to 1. */
export function paperAnnealScale(index: number, o: PaperAnnealOptions = {}): number {
  const from = o.from ?? 10;
  const to = o.to ?? 1;
  const until = o.untilIndex ?? 600;
  const first = (o.steps ?? 1000) - 1;
  if (index <= until) return 1 / to;
  const progress = (first - Math.min(index, first)) / (first - until);   // 0 at the first step, 1 at untilIndex
  return 1 / (from + (to - from) * progress);
}

export type AnnealKind = 'paper' | 'release' | 'none';

/** The data-term multiplier of step `index` for the chosen annealing form. */
export function annealScale(kind: AnnealKind, index: number, o: PaperAnnealOptions = {}): number {
  if (kind === 'release') return releaseAnnealScale(index);
  if (kind === 'paper') return paperAnnealScale(index, o);
  return 1;
}

export interface SkipGradientOptions {
  /** A full E+M step every `every` indices in the early phase (release's commented rule: 16; 1 = never skip). */
  every?: number;
  /** Every step with index <= cutoff is a full step (release's commented rule: 40). */
  cutoff?: number;
}

/**
 * Skip-gradient (paper Technique 2; the release's commented-out rule, psld.py:275-277): whether step `index`
 * runs the full E+M step (decoder, guidance gradient, M-step) or only the plain prior (DDIM) step.
 */
export function isFullStep(index: number, o: SkipGradientOptions = {}): boolean {
  const every = o.every ?? 16;
  const cutoff = o.cutoff ?? 40;
  return every <= 1 || index % every === 0 || index <= cutoff;
}
