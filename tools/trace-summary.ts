/**
 * Summarizes an op trace (LATENTDEM_TRACE=1 writes latentdem-trace-<pid>.json): total time, calls and share
 * per op name (or per kernel with --by kernel), largest first. On webgpu the durations are host-side
 * (encoding and any waits), not GPU time; with --device the device times of a device-timed trace
 * (`startTrace({ deviceTiming: true })`, args.device_us) are summed instead. See docs/tensor.md.
 *
 *   node --conditions=latentdem-src --import tsx tools/trace-summary.ts TRACE.json [--by name|kernel] [--top N] [--device]
 */
import { readFileSync } from 'node:fs';

const argv = process.argv.slice(2);
const file = argv.find((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1].startsWith('--')));
if (!file) throw new Error('trace-summary: give a trace file (latentdem-trace-<pid>.json)');
const opt = (name: string): string | undefined => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
const by = opt('by') ?? 'name';
if (by !== 'name' && by !== 'kernel') throw new Error(`trace-summary: --by must be name or kernel, got '${by}'`);
const top = Number(opt('top') ?? 10);
const device = argv.includes('--device');

interface Event { name: string; ph: string; dur?: number; args?: { kernel?: string; device_us?: number } }
const json = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents?: Event[] };
if (!Array.isArray(json.traceEvents)) throw new Error(`trace-summary: ${file} has no traceEvents array`);
const rows = new Map<string, { ms: number; calls: number }>();
let total = 0;
for (const e of json.traceEvents) {
  const us = device ? e.args?.device_us : e.dur;
  if (e.ph !== 'X' || typeof us !== 'number') continue;
  const key = by === 'kernel' ? (e.args?.kernel ?? e.name) : e.name;
  const r = rows.get(key) ?? { ms: 0, calls: 0 };
  r.ms += us / 1000; r.calls++; total += us / 1000;
  rows.set(key, r);
}
if (device && rows.size === 0) throw new Error(`trace-summary: ${file} has no device times (record it with startTrace({ deviceTiming: true }) and stopTraceTimed())`);
const sorted = [...rows].sort((a, b) => b[1].ms - a[1].ms).slice(0, top);
const lines = [`| ${by} | calls | ${device ? 'device ms' : 'host ms'} | share |`, '|---|---|---|---|',
  ...sorted.map(([k, r]) => `| ${k} | ${r.calls} | ${r.ms.toFixed(1)} | ${((100 * r.ms) / total).toFixed(1)} % |`),
  `| all | ${[...rows.values()].reduce((a, r) => a + r.calls, 0)} | ${total.toFixed(1)} | 100 % |`];
process.stdout.write(`${lines.join('\n')}\n`);
