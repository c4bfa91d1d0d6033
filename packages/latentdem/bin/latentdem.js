#!/usr/bin/env node
// The `latentdem` command: runs src/cli/main.ts through tsx with the latentdem-src export condition (the
// packages' TypeScript sources), passing the arguments and the exit status through.
import { spawnSync } from 'node:child_process';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const mainTs = join(here, '..', 'src', 'cli', 'main.ts');
let tsx;
try {
  tsx = import.meta.resolve('tsx');
} catch {
  process.stderr.write("latentdem: cannot find tsx (run 'npm install' in the repository)\n");
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--conditions=latentdem-src', '--import', tsx, mainTs, ...process.argv.slice(2)], { stdio: 'inherit' });
if (r.error) {
  process.stderr.write(`latentdem: cannot start node (${r.error.message})\n`);
  process.exit(1);
}
process.exit(r.status ?? (r.signal ? 128 + (constants.signals[r.signal] ?? 0) : 1));
