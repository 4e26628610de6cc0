// One way for tests to run a Node child: `node -e script`, stdout/stderr collected, an optional fd
// passed as stdio[3] and extra environment. Resolves with the exit code and signal; never rejects
// on a non-zero exit (the test asserts on it).

import { spawn } from 'node:child_process';

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node -e script`, with `fd` as the child's fd 3 when given. */
export function runChild(script: string, fd?: number, env?: NodeJS.ProcessEnv): Promise<ChildResult> {
  const stdio: ('pipe' | 'ignore' | number)[] = ['ignore', 'pipe', 'pipe'];
  if (fd !== undefined) stdio.push(fd);
  const child = spawn(process.execPath, ['-e', script], { stdio, env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}
