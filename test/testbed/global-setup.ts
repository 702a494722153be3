// vitest global setup for the `integration` project: one real control plane
// per run, our CRD plus Gateway API's and Envoy Gateway's, and our webhook
// registered with a CA bundle. Test files reach it through `testbed()`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { certManagerCrdFiles } from './cert-manager.ts';
import { startControlPlane } from './control-plane.ts';
import { ETCD_TOOLS, GATEWAY_TOOLS, KUBE_TOOLS, ensureGoTools } from './go-tools.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from './crds.ts';
import type { TestbedInfo } from './testbed.ts';
import { makeWebhookCertificates, registerWebhooks, startWebhookProcess } from './webhook.ts';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  const progress = (message: string) => process.stderr.write(`[testbed] ${message} (${Math.round((Date.now() - started) / 1000)}s)\n`);
  // Every Go binary and module the tests use, before any test's timeout starts:
  // a cold build takes many minutes on 2 cores (progress lines follow), a warm one a second.
  progress('finding or building the Go tools: kube-apiserver, kubectl, kube-controller-manager, etcd, egctl; cert-manager CRDs');
  for (const tools of [KUBE_TOOLS, ETCD_TOOLS, GATEWAY_TOOLS]) await ensureGoTools(tools);
  await certManagerCrdFiles();
  progress('starting etcd and kube-apiserver');
  const cp = await startControlPlane({ controllerManager: true, keepDir: process.env.TESTBED_KEEP === '1' });
  try {
    progress(`control plane up at ${cp.server}; installing CRDs`);
    await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
    const certDir = join(cp.dir, 'webhook-certs');
    const { ca } = makeWebhookCertificates(cp.dir, certDir, 'initial');
    const webhook = await startWebhookProcess('webhook', certDir, join(cp.dir, 'webhook.log'));
    await registerWebhooks(cp, webhook.baseUrl, ca.certPem);
    progress(`webhook registered at ${webhook.baseUrl}`);
    const info: TestbedInfo = {
      dir: cp.dir,
      kubeconfig: cp.kubeconfig,
      server: cp.server,
      kubeBin: cp.kubeBin,
      webhookBaseUrl: webhook.baseUrl,
      webhookCertDir: certDir,
      webhookCaPem: readFileSync(ca.certFile, 'utf8'),
      webhookLog: webhook.process.logFile,
      webhookPid: webhook.process.child.pid ?? 0,
    };
    project.provide('testbed', info);
    return async () => {
      await webhook.process.stop();
      await cp.stop();
    };
  } catch (error) {
    await cp.stop();
    throw error;
  }
}
