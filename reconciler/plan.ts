// What one reconcile of one ModelService should do, decided without I/O:
// which objects to apply, which to prune, which names are taken by someone
// else, and what AffinityReady and the Events should say. The controller
// hands this to the writer (writer.ts), which does every write; like Envoy
// Gateway's translator, resources go in and the outcome comes out.
import { type ConditionInput, EventReasons, type Reason, Reasons, setAffinityReady } from '../src/conditions.ts';
import { formatFieldError } from '../src/field-errors.ts';
import type { Condition, KubeObject, ModelService } from '../src/model-service.ts';
import { CLEANUP_FINALIZER, labelValue } from '../src/naming.ts';
import { isControlledBy, isLabelledFor, isUpToDate, modelServiceOwnerKey, objectsToPrune } from '../src/ownership.ts';
import { type RenderOptions, crossNamespaceObjects, render, sortObjects } from '../src/render.ts';
import { type RouteFinding, type RouteView, discoverRoutes } from '../src/route-shape.ts';

export type EventType = 'Normal' | 'Warning';

export interface PlannedEvent {
  type: EventType;
  reason: string;
  message: string;
}

/** What the controller knows of the generated objects: its informer caches plus any namesakes it looked up. */
export interface PlanCache {
  /**
   * The object of this kind and name: from the caches (which hold only objects
   * carrying our label), or a namesake looked up live. `null`: known not to
   * exist. `undefined`: not known, so it must be looked up before any write.
   */
  get(kind: string, namespace: string, name: string): KubeObject | null | undefined;
  /** Cached generated objects whose controller ownerReference has this uid. */
  controlledBy(uid: string): KubeObject[];
  /** Cached generated objects outside a ModelService's namespace labelled as its: by `crossNamespaceOwnerKey` (src/ownership.ts). */
  labelledFor(ownerKey: string): KubeObject[];
}

/** A change to the ModelService's cleanup finalizer: added before objects in other namespaces are created, removed after they are deleted. */
export type FinalizerChange = 'add' | 'remove' | undefined;

export interface Plan {
  /**
   * Desired objects whose name is neither cached nor looked up: a namesake may
   * exist that is not ours. When non-empty nothing else is decided; look them
   * up (`null` for a 404) and plan again.
   */
  lookups: KubeObject[];
  /** Objects to server-side apply, in apply order (only those not already up to date). */
  apply: KubeObject[];
  /** Live objects this ModelService controls and no longer needs: delete each with its uid as a precondition. */
  prune: KubeObject[];
  /** `Kind name` of desired objects held by someone else; they are left untouched. */
  conflicts: string[];
  /** AffinityReady to write to status, or undefined when it would not change. */
  condition: Condition | undefined;
  /** Events to record, once the writes above have succeeded. */
  events: PlannedEvent[];
  /** Every desired object (those already up to date too), for the condition message and failure reports. */
  desired: KubeObject[];
  /** `add`: before any apply; `remove`: after every prune succeeded. */
  finalizer: FinalizerChange;
}

const NOTHING: Plan = { lookups: [], apply: [], prune: [], conflicts: [], condition: undefined, events: [], desired: [], finalizer: undefined };

/** `Kind name`, with the namespace for an object outside the ModelService's. */
const describeIn = (namespace: string) => (o: KubeObject) =>
  `${o.kind} ${o.metadata.namespace !== undefined && o.metadata.namespace !== namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;

const prunedEvent = (objects: readonly KubeObject[], namespace: string, why: string): PlannedEvent[] =>
  objects.length > 0 ? [{ type: 'Normal', reason: EventReasons.Pruned, message: `deleted ${objects.map(describeIn(namespace)).join(', ')} (${why})` }] : [];

const hasFinalizer = (ms: ModelService) => ((ms.metadata.finalizers as string[] | undefined) ?? []).includes(CLEANUP_FINALIZER);

/** The condition's reason: the first route that gets no affinity, else the first that limits it, else Applied. */
function reasonOf(findings: readonly RouteFinding[]): Reason {
  const worst = findings.find((f) => f.level === 'notApplied') ?? findings.find((f) => f.level === 'limited');
  return (worst?.reason as Reason | undefined) ?? Reasons.Applied;
}

/** The status AffinityReady would get; undefined when unchanged (so our own status write triggers no further write). */
function conditionFor(ms: ModelService, input: ConditionInput, now: Date): Condition | undefined {
  return setAffinityReady(ms.status?.conditions, { ...input, observedGeneration: ms.metadata.generation ?? 0 }, now);
}

/** Condition and its Event, both only when the condition changes (Events are written on changes, not on every pass). */
function report(ms: ModelService, input: ConditionInput, type: EventType, now: Date): Pick<Plan, 'condition' | 'events'> {
  const condition = conditionFor(ms, input, now);
  return { condition, events: condition ? [{ type, reason: input.reason, message: input.message }] : [] };
}

/**
 * One reconcile of one ModelService. `modelService` undefined or without a
 * uid: nothing to do (the garbage collector removes what it owned; see
 * `orphans` for what it cannot). Being deleted: only the objects in other
 * namespaces are deleted, then the finalizer that waited for them is removed.
 * `routes`: every HTTPRoute and AIGatewayRoute, for the routes this
 * ModelService attaches to (src/route-shape.ts) and what their shape allows.
 */
export function plan(
  modelService: ModelService | undefined,
  cache: PlanCache,
  routes: RouteView,
  options: RenderOptions,
  now: Date,
): Plan {
  const ms = modelService;
  const uid = ms?.metadata.uid;
  if (!ms || !uid) return NOTHING;
  const namespace = ms.metadata.namespace ?? '';
  const describe = describeIn(namespace);
  const elsewhere = cache.labelledFor(modelServiceOwnerKey(ms));
  if (ms.metadata.deletionTimestamp) {
    if (!hasFinalizer(ms)) return NOTHING;
    return { ...NOTHING, prune: elsewhere, finalizer: 'remove', events: prunedEvent(elsewhere, namespace, 'the ModelService is being deleted') };
  }

  const result = render(ms, options);
  if (result.errors.length > 0) {
    // Leave existing objects alone: an invalid spec is a user error to fix, not a reason to drop traffic settings.
    const message = result.errors.map(formatFieldError).join('; ');
    return { ...NOTHING, ...report(ms, { status: 'False', reason: Reasons.InvalidSpec, message }, 'Warning', now) };
  }

  const discovery = discoverRoutes(result.modelService, routes);
  // While AIGatewayRoutes are not known, what belongs in other namespaces is left as it is: neither applied nor pruned.
  const crossDesired = discovery.complete ? crossNamespaceObjects(result.modelService, discovery.targets) : [];
  const desired = sortObjects([...result.objects, ...crossDesired]);
  const known = desired.map((o) => ({ object: o, live: cache.get(o.kind, o.metadata.namespace ?? namespace, o.metadata.name ?? '') }));
  const lookups = known.filter((k) => k.live === undefined).map((k) => k.object);
  if (lookups.length > 0) return { ...NOTHING, lookups };

  // Only objects we control (or label, in other namespaces), or that do not exist yet, are written: a namesake of someone else's is left alone.
  const ours = known.filter((k) => k.live === null || isControlledBy(k.live as KubeObject, uid) || isLabelledFor(k.live as KubeObject, ms));
  const conflicts = known.filter((k) => !ours.includes(k)).map((k) => describe(k.object));
  const apply = ours.filter((k) => !isUpToDate(k.object, k.live ?? undefined)).map((k) => k.object);
  const finalizer: FinalizerChange = !discovery.complete
    ? undefined
    : crossDesired.length > 0 && !hasFinalizer(ms)
      ? 'add'
      : crossDesired.length === 0 && hasFinalizer(ms)
        ? 'remove'
        : undefined;
  const base = { ...NOTHING, apply, conflicts, desired, finalizer };

  if (conflicts.length > 0) {
    const message = `${conflicts.join(', ')} already exist and are not controlled by this ModelService; rename or delete them (they are left untouched)`;
    return { ...base, ...report(ms, { status: 'False', reason: Reasons.ObjectConflict, message }, 'Warning', now) };
  }

  const wanted = new Set(desired.map((o) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`));
  const staleElsewhere = discovery.complete ? elsewhere.filter((o) => !wanted.has(`${o.kind}/${o.metadata.namespace}/${o.metadata.name}`)) : [];
  const prune = [...objectsToPrune(cache.controlledBy(uid), desired, uid), ...staleElsewhere];
  const pruned = prunedEvent(prune, namespace, 'no longer needed');

  const routeWarnings = discovery.findings.filter((f) => f.level !== 'attached').map((f) => f.message);
  const unknown = discovery.complete
    ? []
    : ['AIGatewayRoutes are not known yet (their informer has not listed; see /readyz): objects in other namespaces are left as they are'];
  const allWarnings = [...result.warnings, ...routeWarnings, ...unknown];
  const warnings = allWarnings.length > 0 ? `; warnings: ${allWarnings.join('; ')}` : '';
  const found = [...new Set(discovery.findings.map((f) => f.route))];
  const routesFound = found.length > 0 ? `; routes: ${found.join(', ')}` : '';
  const input: ConditionInput =
    result.objects.length === 0
      ? { status: 'True', reason: Reasons.AffinityDisabled, message: `affinity type None: no gateway objects${warnings}` }
      : { status: 'True', reason: reasonOf(discovery.findings), message: `applied ${desired.map(describe).join(', ')}${routesFound}${warnings}` };
  const reported = report(ms, input, allWarnings.length > 0 ? 'Warning' : 'Normal', now);
  // One Event per route found, written with the condition they explain (only when it changes, like every Event).
  const routeEvents: PlannedEvent[] = reported.condition
    ? discovery.findings.map((f) => ({ type: f.level === 'attached' ? 'Normal' : 'Warning', reason: f.reason, message: f.message }))
    : [];
  return { ...base, prune, condition: reported.condition, events: [...pruned, ...routeEvents, ...reported.events] };
}

/**
 * Objects in other namespaces labelled for a ModelService that no longer
 * exists (its finalizer removed by hand, or deleted while no reconciler ran):
 * nothing else deletes them. `name` as the key has it; the caller checks
 * first that no live ModelService of the namespace has the same label value.
 */
export function orphans(cache: PlanCache, namespace: string, name: string): KubeObject[] {
  return cache.labelledFor(`${namespace}/${labelValue(name)}`);
}

/**
 * The JSON patch (RFC 6902) that adds or removes the cleanup finalizer. Its
 * `test` operations make it apply only to this ModelService (uid) and, for a
 * removal, only while the entry is where it was read, so it never acts on a
 * namesake created since, nor on a list someone else changed (the API server
 * answers 422 and the reconcile is retried). A patch, unlike an apply, never
 * creates a ModelService that was deleted meanwhile.
 */
export function finalizerPatch(ms: ModelService, change: 'add' | 'remove'): Record<string, unknown>[] | undefined {
  const finalizers = (ms.metadata.finalizers as string[] | undefined) ?? [];
  const test = { op: 'test', path: '/metadata/uid', value: ms.metadata.uid };
  const index = finalizers.indexOf(CLEANUP_FINALIZER);
  if (change === 'add') {
    if (index >= 0) return undefined;
    return [test, ms.metadata.finalizers === undefined ? { op: 'add', path: '/metadata/finalizers', value: [CLEANUP_FINALIZER] } : { op: 'add', path: '/metadata/finalizers/-', value: CLEANUP_FINALIZER }];
  }
  if (index < 0) return undefined;
  const at = `/metadata/finalizers/${index}`;
  return [test, { op: 'test', path: at, value: CLEANUP_FINALIZER }, { op: 'remove', path: at }];
}

/** What a write the API server refused means for AffinityReady; `object` is the one being written. */
export function writeFailed(ms: ModelService, object: KubeObject | undefined, error: { status?: number; message: string }, gatewayApiVersion: string, now: Date): Pick<Plan, 'condition' | 'events'> {
  // A 404 on writing an Envoy Gateway kind means the cluster does not serve that kind at all.
  const input: ConditionInput =
    error.status === 404 && object?.apiVersion === gatewayApiVersion
      ? {
          status: 'False',
          reason: Reasons.GatewayCRDsMissing,
          message: `Envoy Gateway's policy kinds are not served by this cluster: install Envoy Gateway >= v1.9.0 (${error.message})`,
        }
      : { status: 'False', reason: Reasons.ApplyFailed, message: error.message };
  return report(ms, input, 'Warning', now);
}

/**
 * Server-side apply cannot repair every hand edit: a field another manager
 * now owns stays, and can make our apply invalid (a Service port whose number
 * was edited keeps its name, so ours is a duplicate: 422). Such an object, if
 * it is ours (`isOurs`: ownedBy for a ModelService's, isGatewayHasherObject
 * for a Gateway hasher's), is deleted (uid precondition) and applied afresh.
 */
export function mustRecreate(error: { status?: number }, live: KubeObject | null | undefined, isOurs: (live: KubeObject) => boolean): boolean {
  return error.status === 422 && live !== null && live !== undefined && isOurs(live);
}

/** A ModelService's objects: controlled by it, or in another namespace labelled as its. */
export function ownedBy(ms: ModelService): (object: KubeObject) => boolean {
  return (object) => isControlledBy(object, ms.metadata.uid ?? '') || isLabelledFor(object, ms);
}
