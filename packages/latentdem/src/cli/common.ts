/** What the `latentdem` subcommands share: the usage error, the one-line error report, option parsing, output checks. */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { StateDictError } from '@latentdem/nn';

/** A mistake in the command line or its files: reported with the usage text. */
export class UsageError extends Error {}

/** A problem with an input file or the environment: reported as one line, without the usage. */
export class CliError extends Error {}

/** Where a command writes: process.stdout / process.stderr, or collectors in tests. */
export interface CliIO {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown; isTTY?: boolean };
  /** Environment for CI detection (default process.env). */
  env?: Record<string, string | undefined>;
}

export const processIO = (): CliIO => ({ stdout: process.stdout, stderr: process.stderr, env: process.env });

/** The message of any error on one line (multi-line messages are joined). */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/**
 * Writes ONE error line to stderr and returns the exit code 1. A UsageError's line ends with a pointer to `hint`
 * (e.g. "see latentdem deblur --help"). A StateDictError (weights that do not fit the model
 * config) is shortened to its summary.
 */
export function reportCliError(io: CliIO, name: string, hint: string, e: unknown): number {
  if (e instanceof UsageError) {
    io.stderr.write(`${name}: ${oneLine(e.message)} (${hint})\n`);
    return 1;
  }
  if (e instanceof StateDictError) {
    const file = /^loadWeights\((.*)\)$/.exec(e.op)?.[1];
    io.stderr.write(`${name}: the weights${file ? ` in ${file}` : ''} do not fit the model config: ${oneLine(e.summary())}\n`);
    return 1;
  }
  const msg = e instanceof Error ? e.message : String(e);
  io.stderr.write(`${name}: ${oneLine(msg)}\n`);
  return 1;
}

export interface OptionSpec {
  /** true: takes a value; false: a flag. */
  value: boolean;
  /** Number of values (default 1) for options such as --save-every N DIR. */
  arity?: number;
}

export interface ParsedArgs {
  positional: string[];
  /** Option name (without dashes) -> its values (flags: []). */
  options: Map<string, string[]>;
}

/** Parses `--name value`, `--name=value` and flags; unknown options and missing values are UsageErrors. */
export function parseArgs(argv: readonly string[], spec: Record<string, OptionSpec>): ParsedArgs {
  const positional: string[] = [];
  const options = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') { positional.push(...argv.slice(i + 1)); break; }
    if (!a.startsWith('-') || a === '-') { positional.push(a); continue; }
    const eq = a.indexOf('=');
    const raw = a.replace(/^--?/, '');
    const name = eq >= 0 ? raw.slice(0, raw.indexOf('=')) : raw;
    const s = spec[name];
    if (!s) throw new UsageError(`unknown option ${eq >= 0 ? a.slice(0, eq) : a}`);
    if (options.has(name)) throw new UsageError(`--${name} given twice`);
    if (!s.value) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      options.set(name, []);
      continue;
    }
    const n = s.arity ?? 1;
    const vals: string[] = [];
    if (eq >= 0) {
      if (n !== 1) throw new UsageError(`--${name} needs ${n} values`);
      vals.push(a.slice(eq + 1));
    } else {
      for (let k = 0; k < n; k++) {
        const v = argv[++i];
        if (v === undefined || (v.startsWith('--') && v.length > 2)) throw new UsageError(`--${name} needs ${n === 1 ? 'a value' : `${n} values`}`);
        vals.push(v);
      }
    }
    if (vals.some((v) => v === '')) throw new UsageError(`--${name} needs a non-empty value`);
    options.set(name, vals);
  }
  return { positional, options };
}

/** An integer option in [min, max]. */
export function intOption(name: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(v);
  if (!/^[+-]?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer${max === Number.MAX_SAFE_INTEGER ? ` >= ${min}` : ` in [${min}, ${max}]`}, got ${v}`);
  }
  return n;
}

/** A finite number option >= min. */
export function numberOption(name: string, v: string, min: number): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min) throw new UsageError(`--${name} must be a number >= ${min}, got ${v}`);
  return n;
}

/** One of the listed words. */
export function choiceOption<T extends string>(name: string, v: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(v)) throw new UsageError(`--${name} must be ${choices.join(', ').replace(/, ([^,]*)$/, ' or $1')}, got ${v}`);
  return v as T;
}

/**
 * Refuses (CliError) when any of `outputs` exists and `force` is not set, or when an output is the input.
 * Called before any heavy work.
 */
export function checkOutputs(outputs: readonly string[], inputs: readonly string[], force: boolean): void {
  const ins = new Set(inputs.map((p) => resolve(p)));
  const clash = outputs.filter((p) => ins.has(resolve(p)));
  if (clash.length) throw new CliError(`refusing to overwrite the input: ${clash.join(', ')} is both input and output`);
  const seen = new Map<string, string>();
  for (const p of outputs) {
    const r = resolve(p);
    if (seen.has(r)) throw new CliError(`two outputs are the same file: ${seen.get(r)} and ${p}`);
    seen.set(r, p);
  }
  const existing = outputs.filter((p) => existsSync(p));
  if (existing.length && !force) throw new CliError(`output exists, not overwritten (pass --force to replace): ${existing.join(', ')}`);
}

/** Runs `main` with the process arguments when `moduleUrl` is the script node was started with. */
export function runIfScript(moduleUrl: string, main: (argv: string[]) => Promise<number>): void {
  if (process.argv[1] && moduleUrl === pathToFileURL(process.argv[1]).href) {
    main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
  }
}

/** mm:ss (or h:mm:ss) for an ETA. */
export function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(2, '0'), ss = String(r).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}
