/**
 * Op trace: op, input/output shapes, backend, kernel, duration. On the webgpu backend the duration is the
 * host time to validate and record the dispatch (the GPU runs it later, batched); a trace started with
 * `{ deviceTiming: true }` and ended with `stopTraceTimed()` also has each op's device time, from GPU
 * timestamp queries around every dispatch.
 */
import { writeFileSync } from 'node:fs';
import { initializedBackends } from './runtime.js';

export interface TraceEvent {
  op: string;
  backend: string;
  kernel: string;
  inputs: number[][];
  outputs: number[][];
  /** Microseconds since the trace started. */
  start: number;
  /** Host microseconds. */
  duration: number;
  /** Device microseconds summed over the op's dispatches (device-timed traces only). */
  device?: number;
  /** Ids of the op's timed dispatches, until stopTraceTimed() turns them into `device`. */
  dispatches?: number[];
}

let events: TraceEvent[] | null = null;
let origin = 0;

export function tracing(): boolean { return events !== null; }

export function startTrace(opts: { deviceTiming?: boolean } = {}): void {
  events = []; origin = performance.now();
  if (opts.deviceTiming) for (const b of initializedBackends()) b.deviceTiming?.start();
}
export function stopTrace(): TraceEvent[] { const e = events ?? []; events = null; return e; }

/** Stops the trace and fills each event's device time (for a trace started with deviceTiming). */
export async function stopTraceTimed(): Promise<TraceEvent[]> {
  const evts = stopTrace();
  const times = new Map<string, Float64Array>();
  for (const b of initializedBackends()) if (b.deviceTiming) times.set(b.name, await b.deviceTiming.stop());
  for (const e of evts) {
    const t = times.get(e.backend);
    if (t && e.dispatches) e.device = e.dispatches.reduce((a, id) => a + (t[id] ?? 0), 0);
    delete e.dispatches;
  }
  return evts;
}

export function recordEvent(op: string, backend: string, kernel: string, inputs: number[][], outputs: number[][], t0: number, dispatches?: number[]): void {
  if (!events) return;
  const now = performance.now();
  const e: TraceEvent = { op, backend, kernel, inputs, outputs, start: (t0 - origin) * 1000, duration: (now - t0) * 1000 };
  if (dispatches?.length) e.dispatches = dispatches;
  events.push(e);
}

export const now = (): number => performance.now();

/** Runs `fn` with tracing on and returns its result with the events it recorded. */
export function trace<T>(fn: () => T): { result: T; events: TraceEvent[] } {
  const outer = events;
  startTrace();
  try {
    const result = fn();
    return { result, events: events! };
  } finally {
    const inner = events!;
    events = outer;
    if (outer) outer.push(...inner);
  }
}

/** Chrome trace-event JSON (open in Perfetto or chrome://tracing). */
export function traceToChrome(evts: readonly TraceEvent[]): { traceEvents: object[] } {
  return {
    traceEvents: evts.map((e) => ({
      name: e.op, cat: e.backend, ph: 'X', ts: e.start, dur: e.duration, pid: 1, tid: e.backend === 'webgpu' ? 2 : 1,
      args: { kernel: e.kernel, inputs: e.inputs.map((s) => `[${s}]`).join(' '), outputs: e.outputs.map((s) => `[${s}]`).join(' '), ...(e.device !== undefined ? { device_us: e.device } : {}) },
    })),
  };
}

// LATENTDEM_TRACE=1 traces the whole process and writes latentdem-trace-<pid>.json on exit.
if (process.env.LATENTDEM_TRACE === '1') {
  startTrace();
  process.on('exit', () => {
    const file = `latentdem-trace-${process.pid}.json`;
    writeFileSync(file, JSON.stringify(traceToChrome(events ?? [])));
    process.stderr.write(`latentdem: wrote op trace (${events?.length ?? 0} events) to ${file}\n`);
  });
}
