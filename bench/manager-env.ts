// The plain `value` env entries of the manager Deployment
// (manifests/manager/manager.yaml), and the hasher Deployment's (render.ts
// EXT_PROC_ENV), so benchmarks run the webhook, the reconciler and the
// hasher with the flags they run with in a cluster.
// MANAGER_NODE_OPTIONS overrides NODE_OPTIONS for experiments.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { KubeObject } from '../src/model-service.ts';
import { EXT_PROC_ENV } from '../src/render.ts';
import { REPO_ROOT } from '../test/testbed/go-tools.ts';

export function managerEnv(): Record<string, string> {
  const deployment = parseAllDocuments(readFileSync(join(REPO_ROOT, 'manifests', 'manager', 'manager.yaml'), 'utf8'))
    .map((d) => d.toJS() as KubeObject)
    .find((o) => o.kind === 'Deployment') as { spec: { template: { spec: { containers: { env?: { name: string; value?: string }[] }[] } } } } | undefined;
  const env: Record<string, string> = {};
  for (const e of deployment?.spec.template.spec.containers[0]?.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  if (process.env.MANAGER_NODE_OPTIONS !== undefined) env.NODE_OPTIONS = process.env.MANAGER_NODE_OPTIONS;
  return env;
}

/** The hasher Deployment's environment (NODE_OPTIONS, malloc thresholds). */
export function hasherEnv(): Record<string, string> {
  return Object.fromEntries(EXT_PROC_ENV.map((e) => [e.name, e.value]));
}
