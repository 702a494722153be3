// Envoy Gateway's own translator, offline: `egctl x translate` (v1.9.0, built
// from tools/gateway) turns Gateway API + Envoy Gateway resources into the
// resources' status and the xDS Envoy would receive.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { MANIFEST_YAML_OPTIONS } from '../../src/render.ts';
import { GATEWAY_TOOLS, ensureGoTools } from './go-tools.ts';

/** Kinds the translator reads; anything else (ModelService, Deployment, ...) is left out of its input. */
export const TRANSLATOR_KINDS = new Set([
  'GatewayClass', 'Gateway', 'HTTPRoute', 'GRPCRoute', 'Service', 'EndpointSlice', 'Backend', 'Namespace',
  'BackendTrafficPolicy', 'EnvoyExtensionPolicy', 'EnvoyPatchPolicy', 'ClientTrafficPolicy', 'SecurityPolicy', 'EnvoyProxy', 'ReferenceGrant',
]);

export interface TranslateResult {
  /** Parsed YAML output: gatewayClass, gateways, httpRoutes, backendTrafficPolicies, ..., xds. */
  output: Record<string, unknown>;
  raw: string;
}

export async function translate(objects: readonly { kind: string }[]): Promise<TranslateResult> {
  const bin = await ensureGoTools(GATEWAY_TOOLS);
  const dir = mkdtempSync(join(tmpdir(), 'mpa-egctl-'));
  try {
    const input = join(dir, 'input.yaml');
    writeFileSync(input, objects.filter((o) => TRANSLATOR_KINDS.has(o.kind)).map((o) => `---\n${stringify(o, MANIFEST_YAML_OPTIONS)}`).join(''));
    const raw = await new Promise<string>((resolve, reject) => {
      execFile(
        join(bin, 'egctl'),
        ['x', 'translate', '--from', 'gateway-api', '--to', 'gateway-api,xds', '-t', 'all', '-o', 'yaml', '-f', input],
        { maxBuffer: 256 * 1024 * 1024, timeout: 120_000 },
        (error, stdout, stderr) => (error ? reject(new Error(`egctl x translate failed: ${stderr || error.message}`)) : resolve(stdout)),
      );
    });
    return { output: parse(raw, { maxAliasCount: -1 }) as Record<string, unknown>, raw };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
