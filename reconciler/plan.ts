// What one reconcile of one ModelService should do, decided without I/O:
// which objects to apply, which to prune, which names are taken by someone
// else, and what AffinityReady and the Events should say. The controller
// hands this to the writer (writer.ts), which does every write; like Envoy
// Gateway's translator, resources go in and the outcome comes out.
import { type ConditionInput, Reasons, setAffinityReady } from '../src/conditions.ts';
import { formatFieldError } from '../src/field-errors.ts';
import type { Condition, KubeObject, ModelService } from '../src/model-service.ts';
import { isControlledBy, isUpToDate, objectsToPrune } from '../src/ownership.ts';
import { type RenderOptions, render } from '../src/render.ts';
import { routeShapeWarnings } from '../src/route-shape.ts';

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
}

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
}

const NOTHING: Plan = { lookups: [], apply: [], prune: [], conflicts: [], condition: undefined, events: [], desired: [] };

const describe = (o: KubeObject) => `${o.kind} ${o.metadata.name}`;

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
 * One reconcile of one ModelService. `modelService` undefined, being deleted or
 * without a uid: nothing to do (the garbage collector removes what it owned).
 * `routes`: the HTTPRoutes of its namespace, for what failover their shape allows.
 */
export function plan(
  modelService: ModelService | undefined,
  cache: PlanCache,
  routes: readonly KubeObject[],
  options: RenderOptions,
  now: Date,
): Plan {
  const ms = modelService;
  const uid = ms?.metadata.uid;
  if (!ms || ms.metadata.deletionTimestamp || !uid) return NOTHING;

  const result = render(ms, options);
  if (result.errors.length > 0) {
    // Leave existing objects alone: an invalid spec is a user error to fix, not a reason to drop traffic settings.
    const message = result.errors.map(formatFieldError).join('; ');
    return { ...NOTHING, ...report(ms, { status: 'False', reason: Reasons.InvalidSpec, message }, 'Warning', now) };
  }

  const namespace = ms.metadata.namespace ?? '';
  const known = result.objects.map((o) => ({ object: o, live: cache.get(o.kind, o.metadata.namespace ?? namespace, o.metadata.name ?? '') }));
  const lookups = known.filter((k) => k.live === undefined).map((k) => k.object);
  if (lookups.length > 0) return { ...NOTHING, lookups };

  // Only objects we control, or that do not exist yet, are written: a namesake of someone else's is left alone.
  const ours = known.filter((k) => k.live === null || isControlledBy(k.live as KubeObject, uid));
  const conflicts = known.filter((k) => !ours.includes(k)).map((k) => describe(k.object));
  const apply = ours.filter((k) => !isUpToDate(k.object, k.live ?? undefined)).map((k) => k.object);
  const base = { ...NOTHING, apply, conflicts, desired: result.objects };

  if (conflicts.length > 0) {
    const message = `${conflicts.join(', ')} already exist and are not controlled by this ModelService; rename or delete them (they are left untouched)`;
    return { ...base, ...report(ms, { status: 'False', reason: Reasons.ObjectConflict, message }, 'Warning', now) };
  }

  const prune = objectsToPrune(cache.controlledBy(uid), result.objects, uid);
  const pruned: PlannedEvent[] =
    prune.length > 0 ? [{ type: 'Normal', reason: 'Pruned', message: `deleted ${prune.map(describe).join(', ')} (no longer needed)` }] : [];

  const routeWarnings = routeShapeWarnings(ms, routes.filter((r) => r.metadata.namespace === namespace));
  const allWarnings = [...result.warnings, ...routeWarnings];
  const warnings = allWarnings.length > 0 ? `; warnings: ${allWarnings.join('; ')}` : '';
  const input: ConditionInput =
    result.objects.length === 0
      ? { status: 'True', reason: Reasons.AffinityDisabled, message: `affinity type None: no gateway objects${warnings}` }
      : {
          status: 'True',
          reason: routeWarnings.length > 0 ? Reasons.FailoverLimited : Reasons.Applied,
          message: `applied ${result.objects.map(describe).join(', ')}${warnings}`,
        };
  const reported = report(ms, input, allWarnings.length > 0 ? 'Warning' : 'Normal', now);
  return { ...base, prune, condition: reported.condition, events: [...pruned, ...reported.events] };
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
 * it is ours, is deleted (uid precondition) and applied afresh.
 */
export function mustRecreate(error: { status?: number }, live: KubeObject | null | undefined, ownerUid: string): boolean {
  return error.status === 422 && live !== null && live !== undefined && isControlledBy(live, ownerUid);
}
