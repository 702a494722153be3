// The CRDs the tests install: ours from manifests/, Gateway API's and Envoy
// Gateway's straight from the Envoy Gateway v1.9.0 module zip, and Envoy AI
// Gateway's from its v1.0.0 module zip (the module cache), never copied into this repo.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Kubectl } from './control-plane.ts';
import { AIGATEWAY_TOOLS, GATEWAY_TOOLS, REPO_ROOT, goModuleDir } from './go-tools.ts';

export const MODEL_SERVICE_CRD = join(REPO_ROOT, 'manifests', 'crd', 'modelservices.modelplane.ai.yaml');

/** Gateway API (experimental channel, as Envoy Gateway pairs it) and Envoy Gateway CRD files. */
export async function gatewayCrdFiles(): Promise<string[]> {
  const dir = join(await goModuleDir(GATEWAY_TOOLS, 'github.com/envoyproxy/gateway'), 'charts', 'gateway-helm', 'charts', 'crds', 'crds');
  const generated = join(dir, 'generated');
  return [join(dir, 'gatewayapi-crds.yaml'), ...readdirSync(generated).filter((f) => f.endsWith('.yaml')).sort().map((f) => join(generated, f))];
}

/** Envoy AI Gateway's six CRDs, plain YAML in its module zip (tools/aigateway/RECIPE.md §4). */
export async function aiGatewayCrdFiles(): Promise<string[]> {
  const dir = join(await goModuleDir(AIGATEWAY_TOOLS, 'github.com/envoyproxy/ai-gateway'), 'manifests', 'charts', 'ai-gateway-crds-helm', 'templates');
  return readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort().map((f) => join(dir, f));
}

/**
 * Server-side apply: Envoy Gateway's CRDs are too large for the last-applied
 * annotation of client-side apply. Waits until every CRD is Established.
 */
export async function installCrds(k: Kubectl, files: string[]): Promise<void> {
  const out = await k.kubectlOk(['apply', '--server-side', '--force-conflicts', '-o', 'name', ...files.flatMap((f) => ['-f', f])], {
    timeoutMs: 180_000,
  });
  const names = out.split('\n').filter((l) => l.trim() !== '');
  await k.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', ...names], { timeoutMs: 90_000 });
}
