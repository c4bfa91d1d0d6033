/** What the model CLIs share: the usage error class, the one-line error report, and the run-as-script hook. */
import { pathToFileURL } from 'node:url';
import { StateDictError } from '@latentdem/nn';

/** A mistake in the command line or its files: reported with the usage text. */
export class UsageError extends Error {}

/** Writes one error line (plus the usage for a UsageError) to stderr; returns the exit code 1. */
export function reportCliError(name: string, usage: string, e: unknown): number {
  if (e instanceof UsageError) process.stderr.write(`${name}: ${e.message}\n${usage}\n`);
  else if (e instanceof StateDictError) process.stderr.write(`${name}: the weights do not fit the config (check --config): ${e.summary()}\n`);
  else process.stderr.write(`${name}: ${(e as Error).message}\n`);
  return 1;
}

/** Runs `main` with the process arguments when `moduleUrl` is the script node was started with. */
export function runIfScript(moduleUrl: string, main: (argv: string[]) => Promise<number>): void {
  if (process.argv[1] && moduleUrl === pathToFileURL(process.argv[1]).href) {
    main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
  }
}
