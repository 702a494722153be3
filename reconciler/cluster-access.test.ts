import { mkdtempSync, writeFileSync } from 'node:fs';
import type { RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { fromKubeconfig, kubeconfigFiles, loadClusterAccess } from './cluster-access.ts';

function folder(): string {
  return mkdtempSync(join(tmpdir(), 'cluster-access-'));
}

function kubeconfig(dir: string, name: string, doc: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(doc));
  return file;
}

const cluster = (server: string, extra: Record<string, unknown> = {}) => ({ server, ...extra });

async function authorized(access: { authorize(o: RequestOptions): Promise<void> }): Promise<RequestOptions> {
  const options: RequestOptions = { headers: { accept: 'application/json' } };
  await access.authorize(options);
  return options;
}

describe('kubeconfig credentials', () => {
  it('reads client certificates from files relative to the kubeconfig, and impersonation', async () => {
    const dir = folder();
    writeFileSync(join(dir, 'ca.crt'), 'CA');
    writeFileSync(join(dir, 'client.crt'), 'CERT');
    writeFileSync(join(dir, 'client.key'), 'KEY');
    const file = kubeconfig(dir, 'config', {
      clusters: [{ name: 'c', cluster: cluster('https://127.0.0.1:6443', { 'certificate-authority': 'ca.crt' }) }],
      users: [{ name: 'u', user: { 'client-certificate': 'client.crt', 'client-key': 'client.key', as: 'system:serviceaccount:ns:sa', 'as-groups': ['g1', 'g2'] } }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'ctx',
    });
    const access = fromKubeconfig([file]);
    expect(access?.server.origin).toBe('https://127.0.0.1:6443');
    const options = await authorized(access!);
    expect(String(options.ca)).toBe('CA');
    expect(String(options.cert)).toBe('CERT');
    expect(String(options.key)).toBe('KEY');
    expect(options.headers).toEqual({ accept: 'application/json', 'impersonate-user': 'system:serviceaccount:ns:sa', 'impersonate-group': ['g1', 'g2'] });
  });

  it('reads inline data, a bearer token and insecure-skip-tls-verify', async () => {
    const dir = folder();
    const file = kubeconfig(dir, 'config', {
      clusters: [{ name: 'c', cluster: cluster('https://api.example:443', { 'certificate-authority-data': Buffer.from('CA').toString('base64'), 'insecure-skip-tls-verify': true }) }],
      users: [{ name: 'u', user: { token: 'abc' } }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'ctx',
    });
    const options = await authorized(fromKubeconfig([file])!);
    expect(String(options.ca)).toBe('CA');
    expect(options.rejectUnauthorized).toBe(false);
    expect((options.headers as Record<string, string>).authorization).toBe('Bearer abc');
  });

  it('merges several files: the first to name an entry or the current context wins', () => {
    const dir = folder();
    const first = kubeconfig(dir, 'a', { clusters: [{ name: 'c', cluster: cluster('https://first:1') }], 'current-context': 'ctx' });
    const second = kubeconfig(dir, 'b', {
      clusters: [{ name: 'c', cluster: cluster('https://second:2') }],
      users: [{ name: 'u', user: {} }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'other',
    });
    expect(fromKubeconfig([first, second])?.server.origin).toBe('https://first:1');
  });

  it('hands exec plugins, auth providers and proxies to @kubernetes/client-node', () => {
    const dir = folder();
    for (const [user, extra] of [
      [{ exec: { command: 'gke-gcloud-auth-plugin', apiVersion: 'client.authentication.k8s.io/v1beta1' } }, {}],
      [{ 'auth-provider': { name: 'oidc' } }, {}],
      [{ token: 't' }, { 'proxy-url': 'http://proxy:3128' }],
    ] as const) {
      const file = kubeconfig(dir, 'config', {
        clusters: [{ name: 'c', cluster: cluster('https://x:1', extra) }],
        users: [{ name: 'u', user }],
        contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'ctx',
      });
      expect(fromKubeconfig([file])).toBeUndefined();
    }
  });

  it('names what is missing when the current context or its server is absent', () => {
    const dir = folder();
    const noContext = kubeconfig(dir, 'a', { clusters: [], 'current-context': 'gone' });
    expect(() => fromKubeconfig([noContext])).toThrow(/current-context gone is not among its contexts/);
    const noServer = kubeconfig(dir, 'b', { clusters: [{ name: 'c', cluster: {} }], contexts: [{ name: 'x', context: { cluster: 'c' } }], 'current-context': 'x' });
    expect(() => fromKubeconfig([noServer])).toThrow(/cluster c of context x has no server/);
  });
});

describe('choosing the credentials', () => {
  afterEach(() => vi.useRealTimers());

  it('uses $KUBECONFIG files that exist, skipping empty and missing entries', () => {
    const dir = folder();
    const file = kubeconfig(dir, 'config', {});
    expect(kubeconfigFiles({ KUBECONFIG: `${join(dir, 'missing')}::${file}` })).toEqual([file]);
  });

  it('falls back to the ServiceAccount in a pod, re-reading its token file', async () => {
    const sa = folder();
    writeFileSync(join(sa, 'ca.crt'), 'CA');
    writeFileSync(join(sa, 'token'), 'tok-1\n');
    const env = { KUBECONFIG: join(sa, 'missing'), HOME: sa, KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' };
    const access = await loadClusterAccess(env, sa);
    expect(access.server.origin).toBe('https://[fd00::1]');
    const options = await authorized(access);
    expect(String(options.ca)).toBe('CA');
    expect((options.headers as Record<string, string>).authorization).toBe('Bearer tok-1');
    // Projected tokens rotate: a new file is picked up within a minute, not on every request.
    vi.useFakeTimers({ now: Date.now() });
    writeFileSync(join(sa, 'token'), 'tok-2\n');
    expect(((await authorized(access)).headers as Record<string, string>).authorization).toBe('Bearer tok-1');
    vi.advanceTimersByTime(61_000);
    expect(((await authorized(access)).headers as Record<string, string>).authorization).toBe('Bearer tok-2');
  });

  it('hands a kubeconfig with an exec plugin to @kubernetes/client-node, which runs the plugin', async () => {
    const dir = folder();
    const plugin = join(dir, 'credential-plugin.sh');
    writeFileSync(
      plugin,
      `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"from-exec"}}'\n`,
      { mode: 0o755 },
    );
    const file = kubeconfig(dir, 'config', {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: cluster('https://127.0.0.1:6443') }],
      users: [{ name: 'u', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1beta1', command: plugin, interactiveMode: 'Never' } } }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'ctx',
    });
    const access = await loadClusterAccess({ KUBECONFIG: file, HOME: dir }, dir);
    expect(access.source).toMatch(/via @kubernetes\/client-node/);
    expect(access.server.origin).toBe('https://127.0.0.1:6443');
    // client-node writes the header as `Authorization`.
    expect(((await authorized(access)).headers as Record<string, string>).Authorization).toBe('Bearer from-exec');
  });

  it('says how to provide credentials when there are none', async () => {
    const empty = folder();
    await expect(loadClusterAccess({ KUBECONFIG: join(empty, 'missing') }, empty)).rejects.toThrow(/set KUBECONFIG/);
  });
});
