// The reconciler's I/O shell: informers feed a keyed queue; each key is
// reconciled by rendering the desired objects (src/render.ts, the same function
// `render` prints), applying them with server-side apply, pruning what this
// ModelService controls but no longer needs, and reporting AffinityReady.
import type { Logger } from 'pino';
import { AFFINITY_READY, type ConditionInput, Reasons, setAffinityReady } from '../src/conditions.ts';
import { formatFieldError } from '../src/field-errors.ts';
import {
  type KubeObject,
  MODEL_SERVICE_API_VERSION,
  MODEL_SERVICE_KIND,
  MODEL_SERVICE_PLURAL,
  type ModelService,
} from '../src/model-service.ts';
import { CROSSPLANE_COMPOSITE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MODEL_SERVICE_LABEL, labelValue } from '../src/naming.ts';
import { routeShapeWarnings } from '../src/route-shape.ts';
import { isControlledBy, isUpToDate, objectKey, objectsToPrune } from '../src/ownership.ts';
import { ENVOY_GATEWAY_API_VERSION, GENERATED_KINDS, type RenderOptions, render } from '../src/render.ts';
import { FIELD_MANAGER, KubeApiError, type KubeClient } from './kube.ts';
import { Informer, type InformerOptions, type Watched } from './informer.ts';
import { DEFAULT_WORKERS, WorkQueue } from './queue.ts';

export interface ReconcilerOptions extends RenderOptions {
  logger: Logger;
  workers?: number;
}

const PLURAL_BY_KIND = new Map<string, string>(GENERATED_KINDS.map((k) => [k.kind, k.plural]));

function withoutManagedFields<T extends Watched>(object: T): T {
  if (object.metadata) delete object.metadata.managedFields;
  return object;
}

/** Generated objects are compared by what we apply (metadata, spec), never by status: it stays out of the cache. */
function withoutManagedFieldsOrStatus<T extends Watched>(object: T): T {
  delete (object as { status?: unknown }).status;
  return withoutManagedFields(object);
}

function keyOf(namespace: string | undefined, name: string | undefined): string {
  return `${namespace ?? ''}/${name ?? ''}`;
}

export class Reconciler {
  private readonly client: KubeClient;
  private readonly options: ReconcilerOptions;
  private readonly logger: Logger;
  private readonly queue = new WorkQueue();
  private modelServices?: Informer<ModelService>;
  private readonly owned = new Map<string, Informer<KubeObject>>();
  /** HTTPRoutes, read only to tell what failover their shape allows (src/route-shape.ts). */
  private routes?: Informer<KubeObject>;
  private stopped = false;
  private synced = false;
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private workersDone: Promise<void[]> | undefined;

  constructor(client: KubeClient, options: ReconcilerOptions) {
    this.client = client;
    this.options = options;
    this.logger = options.logger;
  }

  /** True once every informer has listed at least once. */
  isSynced(): boolean {
    return this.synced;
  }

  private informer<T extends Watched>(
    apiVersion: string,
    kind: string,
    plural: string,
    options: Pick<InformerOptions<T>, 'labelSelector' | 'transform' | 'indexBy'> = {},
  ): Informer<T> {
    // Dropping managedFields keeps them out of memory (as controller-runtime's default transform does).
    const informer = new Informer<T>(this.client, { ref: { apiVersion, plural }, kind, transform: withoutManagedFields, ...options });
    let failures = 0;
    informer.on('error', (error: unknown) => {
      if (this.stopped) return;
      const delay = Math.min(30_000, 500 * 2 ** failures++);
      this.logger.warn({ kind, error: (error as Error)?.message ?? String(error), retryInMs: delay }, 'watch failed; restarting');
      const timer = setTimeout(() => {
        this.restartTimers.delete(timer);
        if (!this.stopped) informer.start().catch(() => undefined);
      }, delay);
      this.restartTimers.add(timer);
    });
    informer.on('connect', () => (failures = 0));
    return informer;
  }

  async start(): Promise<void> {
    this.modelServices = this.informer<ModelService>(MODEL_SERVICE_API_VERSION, MODEL_SERVICE_KIND, MODEL_SERVICE_PLURAL);
    const enqueueModelService = (ms: Watched) => this.queue.add(keyOf(ms.metadata?.namespace, ms.metadata?.name));
    this.modelServices.on('add', enqueueModelService);
    this.modelServices.on('update', enqueueModelService);

    for (const kind of GENERATED_KINDS) {
      const informer = this.informer<KubeObject>(kind.apiVersion, kind.kind, kind.plural, {
        labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`,
        transform: withoutManagedFieldsOrStatus,
        // Pruning asks for what one ModelService controls; scanning the whole cache for it made a storm quadratic.
        indexBy: (o) => o.metadata.ownerReferences?.find((r) => r.controller)?.uid,
      });
      // A generated object changed or vanished: reconcile its owner (drift repair).
      const enqueueOwner = (o: KubeObject) => {
        const owner = o.metadata?.ownerReferences?.find((r) => r.controller && r.kind === MODEL_SERVICE_KIND);
        if (owner) this.queue.add(keyOf(o.metadata?.namespace, owner.name));
      };
      informer.on('update', enqueueOwner);
      informer.on('delete', enqueueOwner);
      this.owned.set(kind.kind, informer);
    }

    this.routes = this.informer<KubeObject>('gateway.networking.k8s.io/v1', 'HTTPRoute', 'httproutes');
    const enqueueRouteOwners = (route: KubeObject) => {
      const values = new Set([route.metadata?.labels?.[CROSSPLANE_COMPOSITE_LABEL], route.metadata?.labels?.[MODEL_SERVICE_LABEL]]);
      for (const ms of this.modelServices?.list(route.metadata?.namespace) ?? []) {
        if (values.has(labelValue(ms.metadata?.name ?? ''))) enqueueModelService(ms);
      }
    };
    for (const verb of ['add', 'update', 'delete'] as const) this.routes.on(verb, enqueueRouteOwners);

    const starts = [this.modelServices, ...this.owned.values(), this.routes].map((informer, i) =>
      informer.start().catch((error: Error) => {
        // A missing Envoy Gateway CRD must not stop the rest; the error handler retries it.
        this.logger.warn({ informer: i, error: error.message }, 'informer could not start yet; retrying');
      }),
    );
    await Promise.all(starts);
    this.synced = true;
    const workers = this.options.workers ?? DEFAULT_WORKERS;
    this.workersDone = Promise.all(Array.from({ length: workers }, () => this.worker()));
    this.logger.info({ workers }, 'reconciler started');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.shutDown();
    for (const timer of this.restartTimers) clearTimeout(timer);
    for (const informer of [this.modelServices, ...this.owned.values(), this.routes]) await informer?.stop();
    await this.workersDone;
  }

  private async worker(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      try {
        await this.reconcile(key);
        this.queue.forget(key);
      } catch (error) {
        const retryInMs = this.queue.addRateLimited(key);
        this.logger.warn({ key, error: (error as Error).message, retryInMs }, 'reconcile failed; will retry');
      } finally {
        this.queue.done(key);
      }
    }
  }

  /** One pass for one ModelService. Throws to be retried with backoff. */
  async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const ms = this.modelServices?.get(name, namespace);
    // Deleted: the garbage collector removes what it owned (ownerReferences).
    if (!ms || ms.metadata.deletionTimestamp || !ms.metadata.uid) return;

    const result = render(ms, this.options);
    if (result.errors.length > 0) {
      // Leave existing objects alone: an invalid spec is a user error to fix, not a reason to drop traffic settings.
      const message = result.errors.map(formatFieldError).join('; ');
      await this.report(ms, { status: 'False', reason: Reasons.InvalidSpec, message }, 'Warning');
      return;
    }

    const applied: string[] = [];
    const conflicts: string[] = [];
    let writing: KubeObject | undefined;
    try {
      for (const object of result.objects) {
        writing = object;
        const cached = this.owned.get(object.kind)?.get(object.metadata.name ?? '', object.metadata.namespace);
        if (!(await this.mayWrite(object, cached, ms.metadata.uid))) {
          conflicts.push(`${object.kind} ${object.metadata.name}`);
          continue;
        }
        if (!isUpToDate(object, cached)) await this.client.apply(this.refFor(object), object);
        applied.push(`${object.kind} ${object.metadata.name}`);
      }
      writing = undefined;
      if (conflicts.length > 0) {
        const message = `${conflicts.join(', ')} already exist and are not controlled by this ModelService; rename or delete them (they are left untouched)`;
        await this.report(ms, { status: 'False', reason: Reasons.ObjectConflict, message }, 'Warning');
        return;
      }
      const pruned = await this.prune(ms, result.objects);
      if (pruned.length > 0) await this.event(ms, 'Normal', 'Pruned', `deleted ${pruned.join(', ')} (no longer needed)`);
    } catch (error) {
      // A 404 on writing an Envoy Gateway kind means the cluster does not serve that kind at all.
      const missingGateway = error instanceof KubeApiError && error.status === 404 && writing?.apiVersion === ENVOY_GATEWAY_API_VERSION;
      const input: ConditionInput = missingGateway
        ? {
            status: 'False',
            reason: Reasons.GatewayCRDsMissing,
            message: `Envoy Gateway's policy kinds are not served by this cluster: install Envoy Gateway >= v1.9.0 (${(error as Error).message})`,
          }
        : { status: 'False', reason: Reasons.ApplyFailed, message: (error as Error).message };
      await this.report(ms, input, 'Warning').catch(() => undefined);
      throw error;
    }

    const routeWarnings = routeShapeWarnings(ms, this.routes?.list(ms.metadata.namespace) ?? []);
    const allWarnings = [...result.warnings, ...routeWarnings];
    const warnings = allWarnings.length > 0 ? `; warnings: ${allWarnings.join('; ')}` : '';
    const reason = routeWarnings.length > 0 ? Reasons.FailoverLimited : Reasons.Applied;
    const input: ConditionInput =
      result.objects.length === 0
        ? { status: 'True', reason: Reasons.AffinityDisabled, message: `affinity type None: no gateway objects${warnings}` }
        : { status: 'True', reason, message: `applied ${applied.join(', ')}${warnings}` };
    await this.report(ms, input, allWarnings.length > 0 ? 'Warning' : 'Normal');
  }

  /** Only objects we control, or that do not exist yet, are written: a namesake of someone else's is left alone. */
  private async mayWrite(object: KubeObject, cached: KubeObject | undefined, ownerUid: string): Promise<boolean> {
    if (cached) return isControlledBy(cached, ownerUid);
    try {
      // Our caches see only labelled objects, so a namesake someone else made is looked up
      // before the first write. From the watch cache: this check races with a namesake created
      // between it and our write anyway, and a create storm should not cost etcd a read per object.
      const live = await this.client.get<KubeObject>(this.refFor(object), { fromCache: true });
      return isControlledBy(live, ownerUid);
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 404) return true;
      throw error;
    }
  }

  private refFor(object: KubeObject) {
    const plural = PLURAL_BY_KIND.get(object.kind);
    if (!plural) throw new Error(`no resource for kind ${object.kind}`);
    return { apiVersion: object.apiVersion, plural, namespace: object.metadata.namespace, name: object.metadata.name };
  }

  private async prune(ms: ModelService, desired: KubeObject[]): Promise<string[]> {
    const live = [...this.owned.values()].flatMap((informer) => informer.byIndex(ms.metadata.uid ?? ''));
    const pruned: string[] = [];
    for (const object of objectsToPrune(live, desired, ms.metadata.uid ?? '')) {
      try {
        await this.client.delete(this.refFor(object), object.metadata.uid ?? '');
      } catch (error) {
        // Already gone (or replaced): nothing of ours to delete.
        if (!(error instanceof KubeApiError && (error.status === 404 || error.status === 409))) throw error;
      }
      pruned.push(`${object.kind} ${object.metadata.name}`);
      this.logger.info({ object: objectKey(object) }, 'pruned');
    }
    return pruned;
  }

  /** Writes AffinityReady (only on change) and an Event on each change. */
  private async report(ms: ModelService, input: ConditionInput, eventType: 'Normal' | 'Warning'): Promise<void> {
    const condition = setAffinityReady(ms.status?.conditions, { ...input, observedGeneration: ms.metadata.generation ?? 0 }, new Date());
    if (!condition) return;
    await this.client.apply(
      { apiVersion: MODEL_SERVICE_API_VERSION, plural: MODEL_SERVICE_PLURAL, namespace: ms.metadata.namespace, name: ms.metadata.name, subresource: 'status' },
      { apiVersion: MODEL_SERVICE_API_VERSION, kind: MODEL_SERVICE_KIND, metadata: { name: ms.metadata.name, namespace: ms.metadata.namespace }, status: { conditions: [condition] } },
    );
    await this.event(ms, eventType, input.reason, input.message);
    this.logger.info({ modelService: keyOf(ms.metadata.namespace, ms.metadata.name), condition: AFFINITY_READY, status: input.status, reason: input.reason }, input.message);
  }

  private async event(ms: ModelService, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    await this.client
      .create(
        { apiVersion: 'v1', plural: 'events', namespace: ms.metadata.namespace },
        {
          apiVersion: 'v1',
          kind: 'Event',
          metadata: { generateName: `${ms.metadata.name}.`, namespace: ms.metadata.namespace },
          involvedObject: { apiVersion: MODEL_SERVICE_API_VERSION, kind: MODEL_SERVICE_KIND, name: ms.metadata.name, namespace: ms.metadata.namespace, uid: ms.metadata.uid },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: FIELD_MANAGER },
          reportingComponent: FIELD_MANAGER,
          reportingInstance: process.env.HOSTNAME ?? FIELD_MANAGER,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      )
      .catch((error: Error) => this.logger.warn({ error: error.message }, 'could not record event'));
  }
}
