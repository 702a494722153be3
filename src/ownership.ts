// Which live objects the reconciler may touch: only those whose controller
// ownerReference is this ModelService (by uid). Names and annotations are
// never trusted for that.
import type { KubeObject } from './model-service.ts';

export function isControlledBy(object: KubeObject, ownerUid: string): boolean {
  return (object.metadata.ownerReferences ?? []).some((r) => r.controller === true && r.uid === ownerUid);
}

export function objectKey(o: { kind: string; metadata: { namespace?: string; name?: string } }): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
}

/** Live objects controlled by the owner that the desired state no longer contains. */
export function objectsToPrune(live: readonly KubeObject[], desired: readonly KubeObject[], ownerUid: string): KubeObject[] {
  const wanted = new Set(desired.map(objectKey));
  return live.filter((o) => isControlledBy(o, ownerUid) && !wanted.has(objectKey(o)));
}
