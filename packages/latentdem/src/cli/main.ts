/**
 * The `latentdem` command: subcommand dispatch.
 *
 *   latentdem deblur IN.png --out OUT.png [...]    blind deblurring (see cli/deblur.ts; `latentdem deblur --help`)
 *   latentdem eval-deblur [...]                    the evaluation tables (cli/eval-deblur.ts)
 *   latentdem help [COMMAND]                       this list, or a subcommand's usage
 *
 * Later subcommands (eval-deblur, demo, ...) register in COMMANDS. Exit codes: 0 ok, 1 error (one line on stderr; an unknown command also prints the command list).
 * Run from the repository through the bin (packages/latentdem/bin/latentdem.js, `npx latentdem ...`), or
 * `node --conditions=latentdem-src --import tsx packages/latentdem/src/cli/main.ts ...`.
 */
import { DEBLUR_USAGE, deblurCommand } from './deblur.js';
import { EVAL_DEBLUR_USAGE, evalDeblurCommand } from './eval-deblur.js';
import { processIO, runIfScript } from './common.js';
import type { CliIO } from './common.js';

interface Command { summary: string; usage: string; run(argv: readonly string[], io: CliIO): Promise<number> }

export const COMMANDS: Record<string, Command> = {
  deblur: { summary: 'blind deblurring of a photo with LatentDEM (image, kernel, JSON record)', usage: DEBLUR_USAGE, run: deblurCommand },
  'eval-deblur': { summary: 'the deblurring evaluation on ../shared/data/mstep-eval (tables of PSNR, SSIM, kernel MSE, MNC)', usage: EVAL_DEBLUR_USAGE, run: evalDeblurCommand },
};

export function usage(): string {
  const w = Math.max(...Object.keys(COMMANDS).map((k) => k.length), 4);
  return [
    'usage: latentdem COMMAND [ARGS...]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(w)}  ${c.summary}`),
    `  ${'help'.padEnd(w)}  this list; 'latentdem help COMMAND' or 'latentdem COMMAND --help' for a command's options`,
  ].join('\n');
}

/** Runs the command line `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) { io.stderr.write(`${usage()}\n`); return 1; }
  if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
    const sub = rest[0];
    if (sub === undefined) { io.stdout.write(`${usage()}\n`); return 0; }
    const c = COMMANDS[sub];
    if (!c) { io.stderr.write(`latentdem: unknown command '${sub}'\n${usage()}\n`); return 1; }
    io.stdout.write(`${c.usage}\n`);
    return 0;
  }
  const c = COMMANDS[cmd];
  if (!c) { io.stderr.write(`latentdem: unknown command '${cmd}'\n${usage()}\n`); return 1; }
  return c.run(rest, io);
}

runIfScript(import.meta.url, (argv) => main(argv));
