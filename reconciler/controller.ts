// The reconciler's I/O shell: informers feed a keyed queue; for each key the
// pure plan (plan.ts) decides what to apply, prune and report from the
// caches, and the writer (writer.ts) does every write. The only read outside
// the caches is the namesake lookup the plan asks for before a first write.
import type { Logger } from 'pino';
import { type KubeObject, MODEL_SERVICE_API_VERSION, MODEL_SERVICE_KIND, MODEL_SERVICE_PLURAL, type ModelService } from '../src/model-service.ts';
import { CROSSPLANE_COMPOSITE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MODEL_SERVICE_LABEL, labelValue } from '../src/naming.ts';
import { AI_GATEWAY_API_VERSION, AI_GATEWAY_ROUTE_KIND, AI_GATEWAY_ROUTE_PLURAL, modelsNamed } from '../src/ai-gateway.ts';
import { AFFINITY_READY } from '../src/conditions.ts';
import { crossNamespaceOwnerKey, isGatewayHasherObject, objectKey, ownerIndexKey } from '../src/ownership.ts';
import type { RouteView } from '../src/route-shape.ts';
import { DEFAULT_WATCH_FAILURE_BOUND_MS, type InformerHealth, type Readiness, STARTING, informerReadiness } from '../src/readiness.ts';
import { ENVOY_GATEWAY_API_VERSION, GENERATED_KINDS, type RenderOptions } from '../src/render.ts';
import { KubeApiError, type KubeClient } from './kube.ts';
import { Informer, type InformerOptions, type Watched } from './informer.ts';
import { type Plan, type PlanCache, mustRecreate, orphans, ownedBy, plan, writeFailed } from './plan.ts';
import { planGatewayHashers } from './gateway-plan.ts';
import { DEFAULT_WORKERS, WorkQueue } from './queue.ts';
import { type Writer, refFor } from './writer.ts';

export interface ReconcilerOptions extends RenderOptions {
  logger: Logger;
  workers?: number;
  /** /readyz turns not ready when an informer's list or watch has failed for longer than this. */
  watchFailureBoundMs?: number;
}

/**
 * Longest wait before a failed list or watch is tried again. After an API
 * server outage this bounds how long the caches stay stale once it is back
 * (30 s made the recovery from a 15 s outage take 14 s; a retry costs one
 * request per informer).
 */
const WATCH_RESTART_MAX_MS = 5_000;

/** How often a kind the cluster does not serve (AIGatewayRoute without Envoy AI Gateway) is listed again, to notice its CRD arriving. */
const NOT_SERVED_RETRY_MS = 30_000;

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

/**
 * The queue key of the one pass over every Gateway hasher (gateway-plan.ts):
 * no slash, so never a ModelService's `<namespace>/<name>`. Anything that can
 * change what a hasher keys enqueues it; the queue folds a burst into one pass.
 */
const GATEWAY_HASHERS_KEY = 'gateway-hashers';

export class Reconciler {
  private readonly client: KubeClient;
  private readonly writer: Writer;
  private readonly options: ReconcilerOptions;
  private readonly logger: Logger;
  private readonly queue = new WorkQueue();
  private modelServices?: Informer<ModelService>;
  private readonly owned = new Map<string, Informer<KubeObject>>();
  /** HTTPRoutes, read only to tell what failover their shape allows (src/route-shape.ts). */
  private routes?: Informer<KubeObject>;
  /** AIGatewayRoutes of every namespace, when the cluster serves them (Envoy AI Gateway), read only. */
  private aiGatewayRoutes?: Informer<KubeObject>;
  /** The models each AIGatewayRoute named when last seen: a route that stops naming one must still reconcile it. */
  private readonly aiGatewayRouteModels = new Map<string, string[]>();
  /** Per informer: listed yet, and since when its list or watch has been failing (readiness). */
  private readonly health = new Map<Informer<Watched>, InformerHealth>();
  private started = false;
  private stopped = false;
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private workersDone: Promise<void[]> | undefined;

  constructor(client: KubeClient, writer: Writer, options: ReconcilerOptions) {
    this.client = client;
    this.writer = writer;
    this.options = options;
    this.logger = options.logger;
  }

  /** Ready once every informer has listed; not ready while one has been failing longer than the bound. */
  readiness(now = Date.now()): Readiness {
    if (!this.started) return STARTING;
    return informerReadiness([...this.health.values()], now, this.options.watchFailureBoundMs ?? DEFAULT_WATCH_FAILURE_BOUND_MS);
  }

  private informer<T extends Watched>(
    apiVersion: string,
    kind: string,
    plural: string,
    options: Pick<InformerOptions<T>, 'labelSelector' | 'transform' | 'indexBy'> & { optional?: boolean } = {},
  ): Informer<T> {
    const { optional, ...informerOptions } = options;
    // Dropping managedFields keeps them out of memory (as controller-runtime's default transform does).
    const informer = new Informer<T>(this.client, { ref: { apiVersion, plural }, kind, transform: withoutManagedFields, ...informerOptions });
    const health: InformerHealth = { kind, synced: false, failingSince: undefined };
    this.health.set(informer as unknown as Informer<Watched>, health);
    let failures = 0;
    informer.on('error', (error: unknown) => {
      if (this.stopped) return;
      if (optional && error instanceof KubeApiError && error.status === 404) {
        // Not installed is a state, not a failure: readiness stays, and the kind is looked for again now and then.
        if (!health.notServed) this.logger.info({ kind, retryInMs: NOT_SERVED_RETRY_MS }, 'kind not served by this cluster; looking again periodically');
        health.notServed = true;
        health.failingSince = undefined;
        const timer = setTimeout(() => {
          this.restartTimers.delete(timer);
          if (!this.stopped) informer.start().catch(() => undefined);
        }, NOT_SERVED_RETRY_MS);
        this.restartTimers.add(timer);
        return;
      }
      health.failingSince ??= Date.now();
      const delay = Math.min(WATCH_RESTART_MAX_MS, 500 * 2 ** failures++);
      this.logger.warn({ kind, error: (error as Error)?.message ?? String(error), retryInMs: delay }, 'watch failed; restarting');
      const timer = setTimeout(() => {
        this.restartTimers.delete(timer);
        if (!this.stopped) informer.start().catch(() => undefined);
      }, delay);
      this.restartTimers.add(timer);
    });
    informer.on('listed', () => {
      health.synced = true;
      health.notServed = false;
    });
    informer.on('connect', () => {
      if (health.failingSince !== undefined) {
        // The reconciles that failed meanwhile failed for the outage: retry them now, not after their backoff.
        const retried = this.queue.retryNow();
        this.logger.info({ kind, downForMs: Date.now() - health.failingSince, retried }, 'watch restored');
      }
      failures = 0;
      health.failingSince = undefined;
    });
    return informer;
  }

  async start(): Promise<void> {
    this.modelServices = this.informer<ModelService>(MODEL_SERVICE_API_VERSION, MODEL_SERVICE_KIND, MODEL_SERVICE_PLURAL);
    const enqueueModelService = (ms: Watched) => this.queue.add(keyOf(ms.metadata?.namespace, ms.metadata?.name));
    const enqueueGatewayHashers = () => this.queue.add(GATEWAY_HASHERS_KEY);
    this.modelServices.on('add', enqueueModelService);
    this.modelServices.on('update', enqueueModelService);
    for (const verb of ['add', 'update', 'delete'] as const) this.modelServices.on(verb, enqueueGatewayHashers);

    for (const kind of GENERATED_KINDS) {
      const informer = this.informer<KubeObject>(kind.apiVersion, kind.kind, kind.plural, {
        labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`,
        transform: withoutManagedFieldsOrStatus,
        // Pruning asks for what one ModelService controls; scanning the whole cache for it made a storm quadratic.
        // Objects in other namespaces have no owner uid: their labels' `<namespace>/<name>` (no uid has a slash).
        // The Gateway hashers' objects: all under one key (ownerIndexKey).
        indexBy: ownerIndexKey,
      });
      // A generated object changed or vanished: reconcile its owner (drift repair).
      const enqueueOwner = (o: KubeObject) => {
        const owner = o.metadata?.ownerReferences?.find((r) => r.controller && r.kind === MODEL_SERVICE_KIND);
        if (owner) this.queue.add(keyOf(o.metadata?.namespace, owner.name));
        else if (isGatewayHasherObject(o)) enqueueGatewayHashers();
        else this.enqueueLabelledOwner(o);
      };
      informer.on('update', enqueueOwner);
      informer.on('delete', enqueueOwner);
      // An object in another namespace whose ModelService is gone (an orphan), or a Gateway hasher no longer needed, shows up as an add, at start too.
      informer.on('add', (o) => {
        if (o.metadata.ownerReferences?.length) return;
        if (isGatewayHasherObject(o)) enqueueGatewayHashers();
        else this.enqueueLabelledOwner(o);
      });
      this.owned.set(kind.kind, informer);
    }

    this.routes = this.informer<KubeObject>('gateway.networking.k8s.io/v1', 'HTTPRoute', 'httproutes');
    const enqueueRouteOwners = (route: KubeObject) => {
      const values = new Set([route.metadata?.labels?.[CROSSPLANE_COMPOSITE_LABEL], route.metadata?.labels?.[MODEL_SERVICE_LABEL]]);
      for (const ms of this.modelServices?.list(route.metadata?.namespace) ?? []) {
        if (values.has(labelValue(ms.metadata?.name ?? ''))) enqueueModelService(ms);
      }
    };
    for (const verb of ['add', 'update', 'delete'] as const) {
      this.routes.on(verb, enqueueRouteOwners);
      this.routes.on(verb, enqueueGatewayHashers);
    }

    this.aiGatewayRoutes = this.informer<KubeObject>(AI_GATEWAY_API_VERSION, AI_GATEWAY_ROUTE_KIND, AI_GATEWAY_ROUTE_PLURAL, { optional: true });
    const enqueueModels = (route: KubeObject, gone = false) => {
      const key = keyOf(route.metadata?.namespace, route.metadata?.name);
      const named = modelsNamed(route);
      for (const model of new Set([...(this.aiGatewayRouteModels.get(key) ?? []), ...named])) this.queue.add(model);
      if (gone) this.aiGatewayRouteModels.delete(key);
      else this.aiGatewayRouteModels.set(key, named);
      enqueueRouteOwners(route);
      enqueueGatewayHashers();
    };
    this.aiGatewayRoutes.on('add', (r) => enqueueModels(r));
    this.aiGatewayRoutes.on('update', (r) => enqueueModels(r));
    this.aiGatewayRoutes.on('delete', (r) => enqueueModels(r, true));
    // Reconciled while AIGatewayRoutes were unknown or not served, a ModelService may keep objects it no longer needs.
    this.aiGatewayRoutes.on('listed', () => {
      if (this.started) for (const ms of this.modelServices?.list() ?? []) enqueueModelService(ms);
      enqueueGatewayHashers();
    });

    const starts = [this.modelServices, ...this.owned.values(), this.routes, this.aiGatewayRoutes].map((informer, i) =>
      informer.start().catch((error: Error) => {
        // A missing Envoy Gateway CRD must not stop the rest; the error handler retries it (and has said so for a kind not served).
        if (this.health.get(informer as unknown as Informer<Watched>)?.notServed) return;
        this.logger.warn({ informer: i, error: error.message }, 'informer could not start yet; retrying');
      }),
    );
    await Promise.all(starts);
    this.started = true;
    const workers = this.options.workers ?? DEFAULT_WORKERS;
    this.workersDone = Promise.all(Array.from({ length: workers }, () => this.worker()));
    this.logger.info({ workers }, 'reconciler started');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.shutDown();
    for (const timer of this.restartTimers) clearTimeout(timer);
    for (const informer of [this.modelServices, ...this.owned.values(), this.routes, this.aiGatewayRoutes]) await informer?.stop();
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

  /** The caches as the plan sees them, with the namesakes looked up in this pass laid over them. */
  private planCache(namesakes: ReadonlyMap<string, KubeObject | null>): PlanCache {
    return {
      get: (kind, namespace, name) => this.owned.get(kind)?.get(name, namespace) ?? namesakes.get(objectKey({ kind, metadata: { namespace, name } })),
      controlledBy: (uid) => [...this.owned.values()].flatMap((informer) => informer.byIndex(uid)),
      labelledFor: (ownerKey) => [...this.owned.values()].flatMap((informer) => informer.byIndex(ownerKey)),
    };
  }

  /** The ModelService a labelled object of another namespace belongs to (its label may hold a shortened name). */
  private enqueueLabelledOwner(o: KubeObject): void {
    const owner = crossNamespaceOwnerKey(o);
    if (owner === undefined) return;
    const [namespace, value] = owner.split('/') as [string, string];
    const ms = this.modelServices?.list(namespace).find((m) => labelValue(m.metadata.name ?? '') === value);
    this.queue.add(keyOf(namespace, ms?.metadata.name ?? value));
  }

  /** What the route discovery reads: AIGatewayRoutes are [] when not served, undefined until listed. */
  private routeView(): RouteView {
    const health = this.aiGatewayRoutes && this.health.get(this.aiGatewayRoutes as unknown as Informer<Watched>);
    const aiGatewayRoutes = health?.notServed ? [] : health?.synced ? (this.aiGatewayRoutes?.list() ?? []) : undefined;
    return { httpRoutes: this.routes?.list() ?? [], aiGatewayRoutes };
  }

  /**
   * Our caches see only labelled objects, so a namesake someone else made is
   * looked up before the first write. From the watch cache: this check races
   * with a namesake created between it and our write anyway, and a create
   * storm should not cost etcd a read per object.
   */
  private async lookUp(object: KubeObject): Promise<KubeObject | null> {
    try {
      return await this.client.get<KubeObject>(refFor(object), { fromCache: true });
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 404) return null;
      throw error;
    }
  }

  /** One pass for one ModelService: plan, look up what the plan asks for, plan again, write. Throws to be retried with backoff. */
  async reconcile(key: string): Promise<void> {
    if (key === GATEWAY_HASHERS_KEY) return this.reconcileGatewayHashers();
    const [namespace, name] = key.split('/') as [string, string];
    const ms = this.modelServices?.get(name, namespace);
    if (!ms) return this.pruneOrphans(namespace, name);
    const routes = this.routeView();
    const namesakes = new Map<string, KubeObject | null>();
    let next = plan(ms, this.planCache(namesakes), routes, this.options, new Date());
    let writing: KubeObject | undefined;
    try {
      for (const object of next.lookups) {
        writing = object;
        namesakes.set(objectKey(object), await this.lookUp(object));
      }
      if (next.lookups.length > 0) next = plan(ms, this.planCache(namesakes), routes, this.options, new Date());
      const cache = this.planCache(namesakes);
      // Before anything is created in another namespace, so that deleting the ModelService waits for its cleanup.
      if (next.finalizer === 'add') await this.writer.finalizer(key, ms, 'add');
      for (const object of next.apply) {
        writing = object;
        const refused = await this.applyOrRecreate(key, object, cache, ownedBy(ms));
        if (refused) next.events.unshift({ type: 'Warning', reason: 'Recreated', message: `${object.kind} ${object.metadata.name} was recreated: ${refused.message}` });
      }
      writing = undefined;
      for (const object of next.prune) {
        await this.writer.delete(key, object);
        this.logger.info({ object: objectKey(object) }, 'pruned');
      }
      if (next.finalizer === 'remove') await this.writer.finalizer(key, ms, 'remove');
    } catch (error) {
      await this.report(ms as ModelService, writeFailed(ms as ModelService, writing, error as Error & { status?: number }, ENVOY_GATEWAY_API_VERSION, new Date())).catch(() => undefined);
      throw error;
    }
    await this.report(ms, next);
  }

  /**
   * Applies one object; when the API server refuses the apply as invalid and
   * the live object is ours, deletes it and applies it afresh (mustRecreate).
   * Returns the refusal when it recreated; throws any other failure.
   */
  private async applyOrRecreate(key: string, object: KubeObject, cache: PlanCache, isOurs: (live: KubeObject) => boolean): Promise<Error | undefined> {
    try {
      await this.writer.apply(key, object);
      return undefined;
    } catch (error) {
      const live = cache.get(object.kind, object.metadata.namespace ?? '', object.metadata.name ?? '');
      if (!mustRecreate(error as { status?: number }, live, isOurs)) throw error;
      await this.writer.delete(key, live as KubeObject);
      await this.writer.apply(key, object);
      this.logger.warn({ object: objectKey(object), error: (error as Error).message }, 'recreated: the API server refused to repair it in place');
      return error as Error;
    }
  }

  /** One pass over every Gateway hasher: plan, look up, plan again, write. Throws to be retried with backoff. */
  private async reconcileGatewayHashers(): Promise<void> {
    const routes = this.routeView();
    const modelServices = this.modelServices?.list() ?? [];
    const namesakes = new Map<string, KubeObject | null>();
    let next = planGatewayHashers(modelServices, this.planCache(namesakes), routes, this.options);
    for (const object of next.lookups) namesakes.set(objectKey(object), await this.lookUp(object));
    if (next.lookups.length > 0) next = planGatewayHashers(modelServices, this.planCache(namesakes), routes, this.options);
    if (next.conflicts.length > 0) {
      this.logger.warn({ conflicts: next.conflicts }, 'Gateway hasher objects already exist and are not ours (no affinity.modelplane.ai/gateway label); rename or delete them: they are left untouched');
    }
    const cache = this.planCache(namesakes);
    for (const object of next.apply) await this.applyOrRecreate(GATEWAY_HASHERS_KEY, object, cache, isGatewayHasherObject);
    for (const object of next.prune) {
      await this.writer.delete(GATEWAY_HASHERS_KEY, object);
      this.logger.info({ object: objectKey(object) }, 'pruned a Gateway hasher object no longer needed');
    }
    if (next.apply.length > 0 || next.prune.length > 0) {
      const hashers = next.hashers.map((h) => ({ gateway: `${h.gateway.namespace}/${h.gateway.name}`, models: h.models.map((m) => `${m.model} (${m.modelService})`) }));
      this.logger.info({ hashers, applied: next.apply.map(objectKey), pruned: next.prune.map(objectKey) }, 'Gateway hashers written');
    }
  }

  /**
   * No ModelService under this key: delete what it left in other namespaces
   * (the garbage collector takes the rest). Its label may hold a shortened
   * name that a live ModelService of the namespace shares: then they are that one's.
   */
  private async pruneOrphans(namespace: string, name: string): Promise<void> {
    if (this.modelServices?.list(namespace).some((m) => labelValue(m.metadata.name ?? '') === labelValue(name))) return;
    for (const object of orphans(this.planCache(new Map()), namespace, name)) {
      await this.writer.delete(keyOf(namespace, name), object);
      this.logger.info({ object: objectKey(object), modelService: keyOf(namespace, name) }, 'pruned an object whose ModelService is gone');
    }
  }

  /** Writes AffinityReady (when it changed) and the plan's Events. */
  private async report(ms: ModelService, outcome: Pick<Plan, 'condition' | 'events'>): Promise<void> {
    const { condition } = outcome;
    if (condition) await this.writer.status(ms, condition);
    for (const event of outcome.events) await this.writer.event(ms, event);
    if (condition) {
      this.logger.info({ modelService: keyOf(ms.metadata.namespace, ms.metadata.name), condition: AFFINITY_READY, status: condition.status, reason: condition.reason }, condition.message);
    }
  }
}
