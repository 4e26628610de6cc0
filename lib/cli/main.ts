// The dmamem command's dispatcher: picks the subcommand and hands it its arguments. Top-level
// `--help` and `--version` answer on stdout; anything else before a command is misuse (exit 2).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { misuse } from './args';

const USAGE = `Usage: dmamem <command> [options]

Commands:
  info     explain this machine: page sizes, hugepage pools, THP, PFN visibility,
           RLIMIT_MEMLOCK, NUMA nodes, IOMMU groups, and how to enable what is missing
  demo     play a small driver end to end on the default machine (the main job)
  bench    run the benchmarks (--quick for a run under a minute, --only <group>, --check)

Options:
  --version, -v  print dmamem's version and exit
  --help, -h     print this text and exit

Every command takes --help; info, demo and bench take --json.
`;

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * Runs the dmamem command; returns the exit code (0 done, 1 a failure it reports, 2 misuse).
 * @example process.exitCode = await main(process.argv.slice(2));
 */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case 'info': {
      const { runInfo } = await import('./info');
      return runInfo(rest);
    }
    case 'demo': {
      const { runDemo } = await import('./demo');
      return runDemo(rest);
    }
    case 'bench': {
      const { runBench } = await import('../../bench/index');
      return runBench(rest);
    }
    case 'help':
    case '-h':
    case '--help':
      process.stdout.write(USAGE);
      return 0;
    case '-v':
    case '--version':
      process.stdout.write(`${version()}\n`);
      return 0;
    case undefined:
      return misuse('', 'missing command', USAGE).exit;
    default:
      if (command.startsWith('-')) return misuse('', `unknown option '${command}' (options go after the command, as in: dmamem info --json)`, USAGE).exit;
      return misuse('', `unknown command '${command}'`, USAGE).exit;
  }
}
