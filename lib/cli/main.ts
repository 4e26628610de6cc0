// The dmamem command's dispatcher: picks the subcommand and hands it its arguments.

const USAGE = `Usage: dmamem <command> [options]

Commands:
  info            explain this machine: page sizes, hugepage pools, THP, PFN visibility,
                  RLIMIT_MEMLOCK, NUMA nodes, IOMMU groups, and how to enable what is missing
  demo            play a small driver end to end on the default machine (the main job)
  bench           run the benchmarks (--quick for a run under a minute, --only <group>)

Options:
  --json          machine-readable output
  -h, --help      this text
`;

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
    case undefined:
    case 'help':
    case '-h':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 1 : 0;
    default:
      process.stderr.write(`dmamem: unknown command '${command}'\n\n${USAGE}`);
      return 2;
  }
}
