/**
 * Peak-RSS check of the streamed safetensors reader (not part of the test suite: it writes ~2 GB).
 *
 *   node --import tsx --conditions=latentdem-src tools/safetensors-rss.ts [tensorCount=8]
 *
 * Writes a safetensors file of `tensorCount` F32 [8192, 8192] tensors (256 MiB each) into a temp dir,
 * streamed in 16 MiB chunks, then in separate child processes: imports the reader only (baseline), opens the
 * header only, reads one tensor, loads one tensor through loadSafetensors' filter, and loads two. Each child
 * checks the values it read and reports process.resourceUsage().maxRSS; the table compares the peak above the
 * baseline with the bytes kept. The file is deleted at the end.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile, loadSafetensors } from '@latentdem/nn';
import type { Tensor } from '@latentdem/tensor';

const SIDE = 8192;
const NUMEL = SIDE * SIDE;
const BYTES = NUMEL * 4;
const CHUNK = 4 << 20; // elements per write (16 MiB)
const MiB = 1 << 20;

/** Element i of tensor k: exact in float32, different per tensor and position. */
const valueAt = (k: number, i: number): number => k * 1000 + (i % 997);

async function writeBig(path: string, count: number): Promise<void> {
  const parts: string[] = [];
  for (let k = 0; k < count; k++) parts.push(`"t${k}":{"dtype":"F32","shape":[${SIDE},${SIDE}],"data_offsets":[${k * BYTES},${(k + 1) * BYTES}]}`);
  let header = Buffer.from(`{"__metadata__":{"format":"pt"},${parts.join(',')}}`);
  header = Buffer.concat([header, Buffer.alloc((8 - (header.length % 8)) % 8, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  const fh = await open(path, 'wx');
  try {
    await fh.write(prefix);
    await fh.write(header);
    const chunk = new Float32Array(CHUNK);
    const bytes = new Uint8Array(chunk.buffer);
    for (let k = 0; k < count; k++) {
      for (let i0 = 0; i0 < NUMEL; i0 += CHUNK) {
        for (let j = 0; j < CHUNK; j++) chunk[j] = valueAt(k, i0 + j);
        let done = 0;
        while (done < bytes.length) done += (await fh.write(bytes, done, bytes.length - done)).bytesWritten;
      }
    }
  } finally {
    await fh.close();
  }
}

async function check(t: Tensor, k: number): Promise<void> {
  const d = await t.data();
  if (d.length !== NUMEL) throw new Error(`t${k}: ${d.length} values`);
  for (let i = 0; i < NUMEL; i += 4099) if (d[i] !== valueAt(k, i)) throw new Error(`t${k}[${i}] = ${d[i]}, expected ${valueAt(k, i)}`);
  if (d[NUMEL - 1] !== valueAt(k, NUMEL - 1)) throw new Error(`t${k}: last value wrong`);
}

async function child(mode: string, path: string): Promise<void> {
  const t0 = performance.now();
  let kept = 0;
  const keep: Tensor[] = [];
  // Peak RSS is sampled after loading and before checking values: t.data() makes its own copy (and the cpu
  // backend's gather an index array), which is the checker's memory, not the reader's.
  let peakAfterLoad = 0;
  let loadMs = 0;
  const loaded = (): void => { peakAfterLoad = process.resourceUsage().maxRSS; loadMs = performance.now() - t0; };
  if (mode === 'header') {
    const f = await SafetensorsFile.open(path);
    if (f.keys().length < 2) throw new Error('keys missing');
    await f.close();
    loaded();
  } else if (mode === 'read-one') {
    const f = await SafetensorsFile.open(path);
    const t = await f.read('t3');
    loaded();
    await check(t, 3);
    keep.push(t);
    await f.close();
  } else if (mode === 'load-filter-one') {
    const m = await loadSafetensors(path, { filter: (k) => k === 't5' });
    loaded();
    await check(m.get('t5')!, 5);
    keep.push(...m.values());
  } else if (mode === 'load-filter-two') {
    const m = await loadSafetensors(path, { filter: (k) => k === 't1' || k === 't6' });
    loaded();
    await check(m.get('t1')!, 1);
    await check(m.get('t6')!, 6);
    keep.push(...m.values());
  } else if (mode === 'baseline') {
    loaded();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  kept = keep.reduce((a, t) => a + t.size * 4, 0);
  process.stdout.write(`${JSON.stringify({ mode, maxRssKiB: peakAfterLoad, maxRssWithCheckKiB: process.resourceUsage().maxRSS, kept, ms: loadMs })}\n`);
}

async function main(): Promise<void> {
  const count = Math.max(6, Number(process.argv[2] ?? 8));
  const dir = mkdtempSync(join(tmpdir(), 'latentdem-rss-'));
  const path = join(dir, 'big.safetensors');
  try {
    const w0 = performance.now();
    await writeBig(path, count);
    const fileBytes = 8 + count * BYTES;
    console.log(`wrote ${path}: ${count} x F32 [${SIDE}, ${SIDE}] = ${(fileBytes / 2 ** 30).toFixed(2)} GiB in ${((performance.now() - w0) / 1000).toFixed(1)} s (writer peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB)`);
    const self = fileURLToPath(import.meta.url);
    const rows: { mode: string; peak: number; withCheck: number; kept: number; ms: number }[] = [];
    for (const mode of ['baseline', 'header', 'read-one', 'load-filter-one', 'load-filter-two']) {
      const r = spawnSync(process.execPath, [...process.execArgv, self, '--child', mode, path], { encoding: 'utf8', maxBuffer: 1 << 20 });
      if (r.status !== 0) throw new Error(`child ${mode} failed (${r.status}): ${r.stderr}`);
      const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      const o = JSON.parse(line!) as { mode: string; maxRssKiB: number; maxRssWithCheckKiB: number; kept: number; ms: number };
      rows.push({ mode, peak: (o.maxRssKiB * 1024) / MiB, withCheck: (o.maxRssWithCheckKiB * 1024) / MiB, kept: o.kept / MiB, ms: o.ms });
    }
    const base = rows[0].peak;
    console.log('\nmode              peak RSS   above baseline   tensors kept   ratio   load time   (peak incl. value check)');
    for (const r of rows) {
      const above = r.peak - base;
      console.log(`${r.mode.padEnd(17)} ${r.peak.toFixed(0).padStart(5)} MiB ${above.toFixed(0).padStart(9)} MiB ${r.kept.toFixed(0).padStart(10)} MiB ${r.kept ? (above / r.kept).toFixed(3).padStart(7) : '      -'} ${r.ms.toFixed(0).padStart(7)} ms   (${r.withCheck.toFixed(0)} MiB)`);
    }
    console.log(`\nfile size ${(fileBytes / MiB).toFixed(0)} MiB; baseline = the child that only imports the reader`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await child(process.argv[3], process.argv[4]);
else await main();
