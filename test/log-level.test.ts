// LOG_LEVEL reaches every long-running command: each one, started from the
// CLI, logs its start-up at info, and nothing below warn with LOG_LEVEL=warn.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, waitFor } from './testbed/processes.ts';
import { CLI, makeWebhookCertificates } from './testbed/webhook.ts';

const work = mkdtempSync(join(tmpdir(), 'log-level-'));
const certDir = join(work, 'certs');
makeWebhookCertificates(work, certDir, 'log-level');
/** A kubeconfig whose API server refuses connections: the reconciler starts, its informers retry. */
const kubeconfig = join(work, 'kubeconfig');
writeFileSync(
  kubeconfig,
  JSON.stringify({
    clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:1', 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'u', user: { token: 't' } }],
    contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
    'current-context': 'x',
  }),
);

const up = (url: string) => () =>
  new Promise<boolean>((resolve) => {
    const get = url.startsWith('https:') ? httpsGet : httpGet;
    const req = get(url, { rejectUnauthorized: false, timeout: 1000 }, (res) => (res.resume(), resolve(res.statusCode === 200)));
    req.on('error', () => resolve(false));
  });

interface Case {
  command: string;
  args: (port: number) => string[];
  /** Answers once the command is up. */
  probe: (port: number) => string;
  startLine: string;
}

const cases: Case[] = [
  { command: 'webhook', args: (p) => ['--port', String(p), '--host', '127.0.0.1', '--cert-dir', certDir], probe: (p) => `https://127.0.0.1:${p}/healthz`, startLine: 'admission webhook listening (HTTPS)' },
  {
    command: 'manager',
    args: (p) => ['--port', String(p), '--host', '127.0.0.1', '--cert-dir', certDir, '--no-leader-elect'],
    probe: (p) => `https://127.0.0.1:${p}/healthz`,
    startLine: 'connecting to the Kubernetes API',
  },
  { command: 'reconcile', args: (p) => ['--no-leader-elect', '--health-port', String(p), '--health-host', '127.0.0.1'], probe: (p) => `http://127.0.0.1:${p}/healthz`, startLine: 'connecting to the Kubernetes API' },
  { command: 'ext-proc', args: (p) => ['--port', '0', '--host', '127.0.0.1', '--prefix-bytes', '256', '--metrics-port', String(p)], probe: (p) => `http://127.0.0.1:${p}/metrics`, startLine: 'ext_proc prefix hasher serving' },
];

/** Runs the command until it answers its probe, stops it with SIGTERM, and returns its log lines' levels and messages. */
async function logsOf(c: Case, level: string): Promise<{ level: number; msg: string }[]> {
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, c.command, ...c.args(port)], { env: { ...process.env, KUBECONFIG: kubeconfig, LOG_LEVEL: level }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await waitFor(`${c.command} up`, up(c.probe(port)), 15_000, () => out);
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; msg: string });
}

describe('LOG_LEVEL', () => {
  it.each(cases)('reaches $command', async (c) => {
    const info = await logsOf(c, 'info');
    expect(info.map((l) => l.msg)).toContain(c.startLine);
    const warn = await logsOf(c, 'warn');
    expect(warn.filter((l) => l.level < 40)).toEqual([]);
  });
});
