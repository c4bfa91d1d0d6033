/** Annealing consistency (paper and release forms) and the skip-gradient rule, pinned by hand-computed values. */
import t from 'tap';
import { annealScale, isFullStep, paperAnnealScale, releaseAnnealScale } from '../src/index.js';

const near = (a: number, b: number, tol = 1e-12): boolean => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));

t.test('release anneal: 0.8 (1/8)^((index - 600) / 400) above 600, then 0.8 (psld.py:292-306)', async (t) => {
  t.ok(near(releaseAnnealScale(999), 0.8 * 0.125 ** (399 / 400)), `index 999: ${releaseAnnealScale(999)}`);
  t.ok(near(releaseAnnealScale(999), 0.1 * 8 ** (1 / 400)), 'index 999: 0.1 * 8^(1/400) = 0.10052 (one step short of the 0.1 at index 1000)');
  t.ok(near(releaseAnnealScale(800), 0.8 / Math.sqrt(8)), 'index 800: halfway in the exponent = 0.8 / sqrt 8');
  t.equal(releaseAnnealScale(600), 0.8, 'index 600: 0.8');
  t.equal(releaseAnnealScale(0), 0.8, 'late steps hold 0.8');
  for (let i = 999; i > 600; i--) if (!(releaseAnnealScale(i - 1) > releaseAnnealScale(i))) { t.fail(`not rising at ${i}`); break; }
});

t.test('paper anneal: the data term is divided by a factor linear from 10 to 1 over the early range, then 1', async (t) => {
  t.ok(near(paperAnnealScale(999), 1 / 10), 'first step: 1/10');
  t.ok(near(paperAnnealScale(600), 1), 'end of the range: 1');
  t.ok(near(paperAnnealScale(0), 1), 'late steps: 1');
  // halfway through 999..600 (index 799.5) the factor is 5.5
  t.ok(near(1 / paperAnnealScale(799.5), 5.5), `halfway: factor ${1 / paperAnnealScale(799.5)}`);
  t.ok(near(paperAnnealScale(99, { steps: 100, untilIndex: 50, from: 4, to: 2 }), 1 / 4), 'configurable start');
  t.ok(near(paperAnnealScale(74.5, { steps: 100, untilIndex: 50, from: 4, to: 2 }), 1 / 3), 'configurable middle');
  t.equal(annealScale('none', 999), 1);
  t.equal(annealScale('release', 999), releaseAnnealScale(999));
});

t.test('skip-gradient: full steps at index % 16 == 0 or index <= 40: 101 of 1000 (psld.py:275-277)', async (t) => {
  const full = Array.from({ length: 1000 }, (_, i) => i).filter((i) => isFullStep(i));
  t.equal(full.length, 63 + 38, '63 multiples of 16 in 0..999 plus the 38 other indices <= 40');
  t.ok(isFullStep(992) && !isFullStep(991) && isFullStep(40) && !isFullStep(41), 'edges');
  t.equal(Array.from({ length: 1000 }, (_, i) => i).filter((i) => isFullStep(i, { every: 1 })).length, 1000, 'every 1: no skipping');
  t.equal(Array.from({ length: 100 }, (_, i) => i).filter((i) => isFullStep(i, { every: 10, cutoff: 0 })).length, 10, 'every 10, no late phase');
});
