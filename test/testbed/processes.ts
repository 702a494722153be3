// Child processes of the test bed: output goes to a log file, and every child
// is stopped on teardown or when this process exits, so nothing is left running.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';

const running = new Set<ChildProcess>();
const groups = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) signal(child, 'SIGKILL');
});

/** A child started as a process group leader is signalled with its whole group (what it started, too). */
function signal(child: ChildProcess, name: NodeJS.Signals): void {
  try {
    if (groups.has(child) && child.pid !== undefined) process.kill(-child.pid, name);
    else child.kill(name);
  } catch {
    /* already gone */
  }
}

export interface ManagedProcess {
  child: ChildProcess;
  logFile: string;
  /** The last lines of its log, for error messages. */
  tail(lines?: number): string;
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

export interface StartOptions {
  /**
   * Start it as the leader of a new process group and signal the group: for
   * a child that starts processes of its own (Envoy Gateway starts Envoy),
   * so none outlives the test.
   */
  processGroup?: boolean;
}

export function startProcess(command: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env, options: StartOptions = {}): ManagedProcess {
  const log = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env, detached: options.processGroup === true });
  if (options.processGroup === true) groups.add(child);
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  running.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      running.delete(child);
      // The leader is gone; anything left in its group goes with it.
      if (groups.has(child)) signal(child, 'SIGKILL');
      groups.delete(child);
      resolve();
    });
    child.once('error', (error) => {
      log.write(`spawn error: ${error.message}\n`);
      running.delete(child);
      resolve();
    });
  });
  return {
    child,
    logFile,
    tail(lines = 30) {
      try {
        return readFileSync(logFile, 'utf8').split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
    async stop(name = 'SIGTERM', graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        signal(child, name);
        const timer = setTimeout(() => signal(child, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      await exited;
      log.end();
    },
  };
}

/** A free loopback port (the OS picks it; the caller binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, diagnose?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${diagnose ? `\n${diagnose()}` : ''}`);
}

/** `reconcile --health-port`'s /readyz on loopback: its status and body, status 0 while nothing answers. */
export function readyz(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = get(`http://127.0.0.1:${port}/readyz`, { timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (e) => resolve({ status: 0, body: e.message }));
  });
}
