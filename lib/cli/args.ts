// The one argument parser of the dmamem command (node:util's parseArgs): every subcommand declares
// its options once, and gets the same behaviour: `--help`/`-h` prints its usage on stdout (exit
// 0); misuse (an unknown option, a missing value, a stray argument) prints one line and the usage
// on stderr (exit 2), worded the same way everywhere.

import { parseArgs } from 'node:util';

export interface OptionSpec {
  type: 'boolean' | 'string';
  short?: string;
  /** The value's placeholder in the usage (string options), e.g. 'group,...'. */
  value?: string;
  help: string;
}

export interface CommandSpec {
  /** The subcommand's name, as typed after `dmamem`. */
  command: string;
  /** One or two sentences: what the command does. */
  summary: string;
  options: Record<string, OptionSpec>;
}

/** Either the parsed options, or the exit code when parsing already answered (help or misuse). */
export type Parsed = { values: Record<string, string | boolean | undefined> } | { exit: number };

const HELP: OptionSpec = { type: 'boolean', short: 'h', help: 'print this text and exit' };

/** Lines of at most `width` columns: `text` broken at spaces, continuation lines indented by `indent`. */
export function wrap(text: string, width: number, indent: string): string[] {
  const lead = /^ */.exec(text)![0];
  const lines: string[] = [];
  let line = lead;
  let empty = true;
  for (const word of text.slice(lead.length).split(' ')) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = indent + word;
    } else line = empty ? line + word : `${line} ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines;
}

/** The usage text of a subcommand, at most 100 columns. */
export function usage(spec: CommandSpec): string {
  const rows = Object.entries({ ...spec.options, help: HELP }).map(([name, o]) => {
    const flag = `--${name}${o.type === 'string' ? ` <${o.value ?? 'value'}>` : ''}${o.short === undefined ? '' : `, -${o.short}`}`;
    return [flag, o.help] as const;
  });
  const width = Math.max(...rows.map(([f]) => f.length));
  const lines = rows.flatMap(([f, h]) => wrap(`  ${f.padEnd(width)}  ${h}`, 100, ' '.repeat(width + 4)));
  return `Usage: dmamem ${spec.command} [options]\n\n${spec.summary}\n\nOptions:\n${lines.join('\n')}\n`;
}

/** Misuse: one line naming the command, then the usage, on stderr; exit code 2. */
export function misuse(command: string, message: string, usageText: string): { exit: number } {
  process.stderr.write(`dmamem${command === '' ? '' : ` ${command}`}: ${message}\n\n${usageText}`);
  return { exit: 2 };
}

/** parseArgs's error as one line in our wording. */
function wording(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const quoted = /'([^']*)'/.exec(e.message ?? '')?.[1] ?? '';
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': return `unknown option '${quoted}'`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': return `unexpected argument '${quoted}'`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const name = /--[\w-]+/.exec(e.message ?? '')?.[0] ?? quoted;
      return /argument missing/.test(e.message ?? '') ? `option ${name} needs a value` : `option ${name} takes no value`;
    }
    default: return e.message ?? String(err);
  }
}

/**
 * Parses a subcommand's arguments. `--help` prints the usage and answers exit 0; misuse prints
 * the error and the usage on stderr and answers exit 2.
 * @example const p = parseCommand(DEMO, args); if ('exit' in p) return p.exit; const json = p.values.json === true;
 */
export function parseCommand(spec: CommandSpec, args: string[]): Parsed {
  const options: Record<string, { type: 'boolean' | 'string'; short?: string }> = {};
  for (const [name, o] of Object.entries({ ...spec.options, help: HELP })) options[name] = o.short === undefined ? { type: o.type } : { type: o.type, short: o.short };
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    return misuse(spec.command, wording(err), usage(spec));
  }
  if (values.help === true) {
    process.stdout.write(usage(spec));
    return { exit: 0 };
  }
  delete values.help;
  return { values };
}
