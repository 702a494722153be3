// The one "list what the reconciler generated" helper for tests and benches,
// and a pure check of a namespace against what render() says it should hold:
// missing, orphaned, foreign-owned or drifted objects, and ModelServices whose
// AffinityReady is not yet True or reports a conflict.
import type { KubeObject, ModelService } from '../../src/model-service.ts';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../../src/naming.ts';
import { isUpToDate, objectKey } from '../../src/ownership.ts';
import { GENERATED_RESOURCES, type RenderOptions, render } from '../../src/render.ts';
import type { Kubectl } from './control-plane.ts';

/** Every object of the generated kinds in `namespace` that carries our managed-by label (or, with `modelService`, its label). */
export async function generatedObjects(k: Kubectl, namespace: string, modelService?: string): Promise<KubeObject[]> {
  const selector = modelService === undefined ? `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}` : `affinity.modelplane.ai/model-service=${modelService}`;
  const out = await k.kubectlOk(['get', GENERATED_RESOURCES.join(','), '-n', namespace, '-l', selector, '-o', 'json'], { timeoutMs: 300_000 });
  return (JSON.parse(out) as { items: KubeObject[] }).items;
}

/** The live ModelServices of a namespace (with uid, status). */
export async function liveModelServices(k: Kubectl, namespace: string): Promise<ModelService[]> {
  const out = await k.kubectlOk(['get', 'modelservices.modelplane.ai', '-n', namespace, '-o', 'json'], { timeoutMs: 300_000 });
  return (JSON.parse(out) as { items: ModelService[] }).items;
}

export interface Convergence {
  /** How many objects render() asks for, over all ModelServices. */
  expected: number;
  /** How many generated objects exist. */
  present: number;
  /** Desired objects that do not exist, or exist but differ from render (`Kind/ns/name`). */
  missing: string[];
  drifted: string[];
  /** Generated objects no ModelService wants: no live owner, or an owner that no longer renders them. */
  orphans: string[];
  /** Generated objects with other than exactly one controller ownerReference. */
  badOwners: string[];
  /** ModelServices whose AffinityReady is not True, or says ObjectConflict. */
  notReady: string[];
  conflicts: string[];
}

/** Compares a namespace with what render() says it should hold (pure). */
export function convergence(modelServices: readonly ModelService[], objects: readonly KubeObject[], options: RenderOptions): Convergence {
  const live = new Map(objects.map((o) => [objectKey(o), o]));
  const wanted = new Set<string>();
  const report: Convergence = { expected: 0, present: objects.length, missing: [], drifted: [], orphans: [], badOwners: [], notReady: [], conflicts: [] };
  for (const ms of modelServices) {
    for (const desired of render(ms, options).objects) {
      const key = objectKey(desired);
      wanted.add(key);
      report.expected++;
      const current = live.get(key);
      if (!current) report.missing.push(key);
      else if (!isUpToDate(desired, current)) report.drifted.push(key);
    }
    const ready = ms.status?.conditions?.find((c) => c.type === 'AffinityReady');
    const name = `${ms.metadata.namespace}/${ms.metadata.name}`;
    if (ready?.reason === 'ObjectConflict') report.conflicts.push(name);
    if (ready?.status !== 'True') report.notReady.push(name);
  }
  for (const o of objects) {
    const controllers = (o.metadata.ownerReferences ?? []).filter((r) => r.controller);
    if (controllers.length !== 1) report.badOwners.push(objectKey(o));
    if (!wanted.has(objectKey(o))) report.orphans.push(objectKey(o));
  }
  return report;
}

/** Converged: every desired object present and as rendered, nothing else, every ModelService ready. */
export function isConverged(c: Convergence): boolean {
  return c.missing.length + c.drifted.length + c.orphans.length + c.badOwners.length + c.notReady.length + c.conflicts.length === 0;
}
