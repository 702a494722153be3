// Which live objects the reconciler may touch: only those whose controller
// ownerReference is this ModelService (by uid), and, in other namespaces
// where no ownerReference can point at it, those labelled as its (managed-by,
// model-service and model-service-namespace). Names and annotations are never
// trusted for that.
import type { KubeObject, ModelService } from './model-service.ts';
import { GATEWAY_LABEL } from './gateway-hasher.ts';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, MODEL_SERVICE_LABEL, MODEL_SERVICE_NAMESPACE_LABEL, labelValue } from './naming.ts';

export function isControlledBy(object: KubeObject, ownerUid: string): boolean {
  return (object.metadata.ownerReferences ?? []).some((r) => r.controller === true && r.uid === ownerUid);
}

/** `<namespace>/<label value of the name>`: whose an object outside the ModelService's namespace is, from its labels. */
export function crossNamespaceOwnerKey(object: Pick<KubeObject, 'metadata'>): string | undefined {
  const labels = object.metadata.labels ?? {};
  const namespace = labels[MODEL_SERVICE_NAMESPACE_LABEL];
  const name = labels[MODEL_SERVICE_LABEL];
  if (labels[MANAGED_BY_LABEL] !== MANAGED_BY_VALUE || namespace === undefined || name === undefined || namespace === object.metadata.namespace) return undefined;
  return `${namespace}/${name}`;
}

/** The key crossNamespaceOwnerKey gives this ModelService's objects (a shortened label value for a long name). */
export function modelServiceOwnerKey(ms: Pick<ModelService, 'metadata'>): string {
  return `${ms.metadata.namespace ?? ''}/${labelValue(ms.metadata.name ?? '')}`;
}

/** An object in another namespace than the ModelService's that carries its labels. */
export function isLabelledFor(object: KubeObject, ms: Pick<ModelService, 'metadata'>): boolean {
  return crossNamespaceOwnerKey(object) === modelServiceOwnerKey(ms);
}

export function objectKey(o: { kind: string; metadata: { namespace?: string; name?: string } }): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
}

/** Live objects controlled by the owner that the desired state no longer contains. */
export function objectsToPrune(live: readonly KubeObject[], desired: readonly KubeObject[], ownerUid: string): KubeObject[] {
  const wanted = new Set(desired.map(objectKey));
  return live.filter((o) => isControlledBy(o, ownerUid) && !wanted.has(objectKey(o)));
}

/**
 * True when every field the renderer sets is live with the same value (the API
 * server adds defaults around them). Lets the reconciler skip a no-op apply;
 * a hand edit or a deleted field makes it false, and the apply repairs it.
 */
export function isSubset(wanted: unknown, live: unknown): boolean {
  if (Array.isArray(wanted)) {
    return Array.isArray(live) && wanted.length === live.length && wanted.every((w, i) => isSubset(w, live[i]));
  }
  if (typeof wanted === 'object' && wanted !== null) {
    if (typeof live !== 'object' || live === null || Array.isArray(live)) return false;
    return Object.entries(wanted).every(([k, v]) => isSubset(v, (live as Record<string, unknown>)[k]));
  }
  return wanted === live;
}

/** The live object already carries what the desired one sets (labels, owner, spec). */
export function isUpToDate(desired: KubeObject, live: KubeObject | undefined): boolean {
  if (!live) return false;
  const { name: _n, namespace: _ns, ...desiredMeta } = desired.metadata;
  const { apiVersion: _a, kind: _k, metadata: _m, ...desiredBody } = desired;
  const { apiVersion: _la, kind: _lk, metadata: _lm, ...liveBody } = live;
  return isSubset(desiredMeta, live.metadata) && isSubset(desiredBody, liveBody);
}

/** The index key under which the caches file every Gateway hasher's objects (no slash: never a ModelService's `<namespace>/<name>`, never a uid). */
export const GATEWAY_HASHER_INDEX = 'gateway-hasher';

/** A Gateway hasher's object (src/gateway-hasher.ts): ours, labelled for a Gateway, owned by no ModelService. */
export function isGatewayHasherObject(object: Pick<KubeObject, 'metadata'>): boolean {
  const labels = object.metadata.labels ?? {};
  return labels[MANAGED_BY_LABEL] === MANAGED_BY_VALUE && labels[GATEWAY_LABEL] !== undefined && labels[MODEL_SERVICE_LABEL] === undefined;
}

/** Whose a generated object is, as the caches index it: its controller's uid, a ModelService's `<namespace>/<name>` label key, or GATEWAY_HASHER_INDEX. */
export function ownerIndexKey(object: KubeObject): string | undefined {
  return object.metadata.ownerReferences?.find((r) => r.controller)?.uid ?? crossNamespaceOwnerKey(object) ?? (isGatewayHasherObject(object) ? GATEWAY_HASHER_INDEX : undefined);
}
