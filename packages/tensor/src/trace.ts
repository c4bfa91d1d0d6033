/**
 * Op trace: op, input/output shapes, backend, kernel, duration. On the webgpu backend the duration is the
 * host time to validate and record the dispatch (the GPU runs it later, batched); call `sync()` inside the
 * traced region to account device time.
 */
import { writeFileSync } from 'node:fs';

export interface TraceEvent {
  op: string;
  backend: string;
  kernel: string;
  inputs: number[][];
  outputs: number[][];
  /** Microseconds since the trace started. */
  start: number;
  duration: number;
}

let events: TraceEvent[] | null = null;
let origin = 0;

export function tracing(): boolean { return events !== null; }

export function startTrace(): void { events = []; origin = performance.now(); }
export function stopTrace(): TraceEvent[] { const e = events ?? []; events = null; return e; }

export function recordEvent(op: string, backend: string, kernel: string, inputs: number[][], outputs: number[][], t0: number): void {
  if (!events) return;
  const now = performance.now();
  events.push({ op, backend, kernel, inputs, outputs, start: (t0 - origin) * 1000, duration: (now - t0) * 1000 });
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
      args: { kernel: e.kernel, inputs: e.inputs.map((s) => `[${s}]`).join(' '), outputs: e.outputs.map((s) => `[${s}]`).join(' ') },
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
