// Runs our real webhook (the CLI, as a child process) for the test control
// plane and registers it with the shipped webhook configurations, clientConfig
// swapped for url + caBundle, as SPEC §2 and issue 3 describe.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Kubectl } from './control-plane.ts';
import { REPO_ROOT } from './go-tools.ts';
import { type CertificateFiles, makeCa, makeLeaf } from './pki.ts';
import { type ManagedProcess, freePort, startProcess, waitFor } from './processes.ts';

/** The CLI from its TypeScript sources, as tests run it. */
export const CLI = join(REPO_ROOT, 'bin', 'modelplane-affinity.ts');

/**
 * The CLI as the image runs it: compiled to dist/ by `npm run build`, first
 * brought up to date with the sources. Benchmarks use this one, since type
 * stripping alone changes a process's memory (tsconfig.build.json).
 */
export function builtCli(): string {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
  return join(REPO_ROOT, 'dist', 'bin', 'modelplane-affinity.js');
}
export const MUTATING_WEBHOOK_NAME = 'mutate.affinity.modelplane.ai';
export const VALIDATING_WEBHOOK_NAME = 'validate.affinity.modelplane.ai';
export const WEBHOOK_CONFIGURATION_NAME = 'modelplane-affinity-testbed';

/** A CA and a serving pair (IP SAN 127.0.0.1) written as tls.crt/tls.key into certDir. */
export function makeWebhookCertificates(workDir: string, certDir: string, generation: string): { ca: CertificateFiles } {
  const pkiDir = join(workDir, `webhook-pki-${generation}`);
  mkdirSync(pkiDir, { recursive: true });
  mkdirSync(certDir, { recursive: true });
  const ca = makeCa(pkiDir, 'ca', `modelplane-affinity-webhook-ca-${generation}`);
  makeLeaf(certDir, 'tls', ca, { commonName: 'modelplane-affinity-webhook', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], usage: 'server' });
  return { ca };
}

export interface TestWebhook {
  process: ManagedProcess;
  port: number;
  baseUrl: string;
}

/** Starts `modelplane-affinity <command> --port P --cert-dir D` on 127.0.0.1 and waits for /healthz. */
export async function startWebhookProcess(
  command: 'webhook' | 'manager',
  certDir: string,
  logFile: string,
  extraArgs: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Promise<TestWebhook> {
  const port = await freePort();
  const proc = startProcess(process.execPath, [CLI, command, '--port', String(port), '--host', '127.0.0.1', '--cert-dir', certDir, ...extraArgs], logFile, env);
  const baseUrl = `https://127.0.0.1:${port}`;
  await waitFor(
    `${command} /healthz`,
    async () => {
      return new Promise<boolean>((resolve) => {
        const req = request(`${baseUrl}/healthz`, { rejectUnauthorized: false, timeout: 1000 }, (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        });
        req.on('error', () => resolve(false));
        req.end();
      });
    },
    30_000,
    () => proc.tail(),
  );
  return { process: proc, port, baseUrl };
}

export type WebhookRegistrations = 'mutating and validating' | 'mutating only';

/** The webhook configurations we ship (manifests/webhook/manifests.yaml), as the install applies them. */
export const SHIPPED_WEBHOOK_CONFIGURATIONS = join(REPO_ROOT, 'manifests', 'webhook', 'manifests.yaml');

interface WebhookConfiguration {
  apiVersion: string;
  kind: 'MutatingWebhookConfiguration' | 'ValidatingWebhookConfiguration';
  metadata: { name: string; [key: string]: unknown };
  webhooks: { name: string; clientConfig: { service?: { path?: string }; url?: string; caBundle?: string }; [key: string]: unknown }[];
}

/**
 * The shipped Mutating and Validating configurations with only clientConfig
 * swapped: a URL on loopback and our CA instead of the in-cluster Service and
 * cert-manager's injection. Rules, failurePolicy, timeouts, namespaceSelector
 * and reinvocation are what a cluster gets. They are renamed, so that the
 * install test can apply the shipped ones beside them. 'mutating only' is for
 * measuring what one admission call per create costs (bench/webhook.ts).
 */
export function webhookConfigurations(baseUrl: string, caBundlePem: string, registrations: WebhookRegistrations = 'mutating and validating'): string {
  const caBundle = Buffer.from(caBundlePem).toString('base64');
  const shipped = parseAllDocuments(readFileSync(SHIPPED_WEBHOOK_CONFIGURATIONS, 'utf8')).map((d) => d.toJS() as WebhookConfiguration);
  const configurations = shipped.map((c) => ({
    ...c,
    metadata: { ...c.metadata, name: WEBHOOK_CONFIGURATION_NAME },
    webhooks: c.webhooks.map((w) => {
      const path = w.clientConfig.service?.path;
      if (path === undefined) throw new Error(`${SHIPPED_WEBHOOK_CONFIGURATIONS}: webhook ${w.name} has no clientConfig.service.path to serve on ${baseUrl}`);
      return { ...w, clientConfig: { url: `${baseUrl}${path}`, caBundle } };
    }),
  }));
  const items = registrations === 'mutating only' ? configurations.filter((c) => c.kind === 'MutatingWebhookConfiguration') : configurations;
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
}

export async function registerWebhooks(k: Kubectl, baseUrl: string, caBundlePem: string, registrations?: WebhookRegistrations): Promise<void> {
  await k.kubectlOk(['apply', '--server-side', '--force-conflicts', '-f', '-'], { input: webhookConfigurations(baseUrl, caBundlePem, registrations) });
}

export async function unregisterWebhooks(k: Kubectl): Promise<void> {
  await k.kubectlOk(['delete', '--ignore-not-found', `mutatingwebhookconfiguration/${WEBHOOK_CONFIGURATION_NAME}`, `validatingwebhookconfiguration/${WEBHOOK_CONFIGURATION_NAME}`]);
}
