/** The kernel-denoiser trainer: a run resumed from its checkpoint ends bit-identical to an uninterrupted one. */
import t from 'tap';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { train } from '../tools/train-dncnn.js';

t.test('train-dncnn: 2 + 2 resumed steps equal 4 straight steps, bit for bit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ld-train-'));
  const base = { batch: 2, lr: 1e-3, seed: 3, backend: 'cpu' as const, every: 1, quiet: true };
  const straight = await train({ ...base, out: join(dir, 'a'), steps: 4 });
  await train({ ...base, out: join(dir, 'b'), steps: 4, stopAt: 2 });
  const resumed = await train({ ...base, out: join(dir, 'b'), steps: 4 });
  t.ok(readFileSync(straight).equals(readFileSync(resumed)), 'final weights are byte-identical');
  const log = JSON.parse(readFileSync(join(dir, 'b', 'log.json'), 'utf8')) as { log: { step: number; loss: number }[] };
  t.same(log.log.map((r) => r.step), [1, 2, 3, 4], 'the log continues across the resume');
  const other = await train({ ...base, seed: 4, out: join(dir, 'c'), steps: 4 });
  t.notOk(readFileSync(other).equals(readFileSync(straight)), 'another seed trains differently');
  await t.rejects(train({ ...base, out: join(dir, 'b'), steps: 6 }), /started with --steps 4/, 'a resume with another length is refused');
});
