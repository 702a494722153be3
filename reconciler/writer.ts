// The one module that writes to the cluster: server-side apply of generated
// objects with our field manager, deletes with a uid precondition, the
// AffinityReady status, the cleanup finalizer, Events and Leases. Every write goes through `send`,
// which honours 429 Too Many Requests: the throttled write waits what
// Retry-After asks (or a per-key exponential backoff, whichever is longer)
// and gives up after a bounded number of attempts (the work queue's own
// backoff takes over from there); and the writes in flight at once are halved
// on each 429 and grow back by one as writes succeed (additive increase,
// multiplicative decrease), so a throttled API server sees fewer requests,
// not the same number retried. Decisions are made elsewhere (plan.ts,
// lease.ts); this module only carries them out.
import type { Logger } from 'pino';
import type { Condition, KubeObject, ModelService } from '../src/model-service.ts';
import { MODEL_SERVICE_API_VERSION, MODEL_SERVICE_KIND, MODEL_SERVICE_PLURAL } from '../src/model-service.ts';
import { objectKey } from '../src/ownership.ts';
import { GENERATED_KINDS } from '../src/render.ts';
import { KubeApiError, type KubeClient, type ResourceRef, resourcePath } from './kube.ts';
import type { Lease } from './lease.ts';
import { type PlannedEvent, finalizerPatch } from './plan.ts';

export const FIELD_MANAGER = 'modelplane-affinity';

const PLURAL_BY_KIND = new Map<string, string>(GENERATED_KINDS.map((k) => [k.kind, k.plural]));

/** Where a generated object lives in the API. */
export function refFor(object: KubeObject): ResourceRef {
  const plural = PLURAL_BY_KIND.get(object.kind);
  if (!plural) throw new Error(`no resource for kind ${object.kind}: only ${[...PLURAL_BY_KIND.keys()].join(', ')} are generated`);
  return { apiVersion: object.apiVersion, plural, namespace: object.metadata.namespace, name: object.metadata.name };
}

const modelServiceKey = (ms: ModelService) => `${ms.metadata.namespace ?? ''}/${ms.metadata.name ?? ''}`;

/** Kubernetes' Event timestamps are RFC 3339 in whole seconds. */
const seconds = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The core/v1 Event for a ModelService (messages are capped at 1 KiB as kubectl shows them). */
export function eventObject(ms: ModelService, event: PlannedEvent, now: Date, instance: string): Record<string, unknown> {
  const at = seconds(now);
  return {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { generateName: `${ms.metadata.name}.`, namespace: ms.metadata.namespace },
    involvedObject: { apiVersion: MODEL_SERVICE_API_VERSION, kind: MODEL_SERVICE_KIND, name: ms.metadata.name, namespace: ms.metadata.namespace, uid: ms.metadata.uid },
    type: event.type,
    reason: event.reason,
    message: event.message.slice(0, 1024),
    source: { component: FIELD_MANAGER },
    reportingComponent: FIELD_MANAGER,
    reportingInstance: instance,
    firstTimestamp: at,
    lastTimestamp: at,
    count: 1,
  };
}

/** The server-side apply body for the status subresource: only our condition, so other owners' conditions stay. */
export function statusObject(ms: ModelService, condition: Condition): Record<string, unknown> {
  return { apiVersion: MODEL_SERVICE_API_VERSION, kind: MODEL_SERVICE_KIND, metadata: { name: ms.metadata.name, namespace: ms.metadata.namespace }, status: { conditions: [condition] } };
}

export interface ThrottlePolicy {
  /** Attempts per write while the API server answers 429; then the 429 is thrown. */
  maxAttempts: number;
  /** Writes in flight at most (above the reconciler's workers, so unthrottled it never binds). */
  maxConcurrent: number;
  /** First wait without a Retry-After; doubles with each consecutive 429 of the same key. */
  baseDelayMs: number;
  /** Longest wait between two attempts, whatever Retry-After says. */
  maxDelayMs: number;
}

export const DEFAULT_THROTTLE: ThrottlePolicy = { maxAttempts: 6, maxConcurrent: 16, baseDelayMs: 250, maxDelayMs: 10_000 };

/** The next limit on writes in flight: halved on a 429 (at least 1), one more after `limit` writes in a row succeed. */
export function nextConcurrency(policy: ThrottlePolicy, limit: number, event: 'throttled' | 'succeeded', successes: number): { limit: number; successes: number } {
  if (event === 'throttled') return { limit: Math.max(1, Math.floor(limit / 2)), successes: 0 };
  if (successes + 1 < limit) return { limit, successes: successes + 1 };
  return { limit: Math.min(policy.maxConcurrent, limit + 1), successes: 0 };
}

/** How long to wait before attempt `attempt + 1` of a throttled write (pure, table-tested). */
export function throttleDelay(policy: ThrottlePolicy, consecutive429s: number, retryAfterMs: number | undefined): number {
  const backoff = policy.baseDelayMs * 2 ** Math.max(0, consecutive429s - 1);
  return Math.min(policy.maxDelayMs, Math.max(retryAfterMs ?? 0, backoff));
}

export interface WriterOptions {
  logger: Logger;
  throttle?: ThrottlePolicy;
  /** reportingInstance of Events. */
  instance?: string;
  /** For tests: how waiting is done. */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export type DeleteOutcome = 'deleted' | 'gone';

export class Writer {
  private readonly client: KubeClient;
  private readonly logger: Logger;
  private readonly throttle: ThrottlePolicy;
  private readonly instance: string;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly now: () => number;
  /** Consecutive 429s per key (a ModelService, or the Lease). */
  private readonly throttled = new Map<string, number>();
  /** Writes allowed in flight now, those in flight, successes since the last change, and who waits for a slot. */
  private limit: number;
  private inFlight = 0;
  private successes = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(client: KubeClient, options: WriterOptions) {
    this.client = client;
    this.logger = options.logger;
    this.throttle = options.throttle ?? DEFAULT_THROTTLE;
    this.instance = options.instance ?? process.env.HOSTNAME ?? FIELD_MANAGER;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.now = options.now ?? Date.now;
    this.limit = this.throttle.maxConcurrent;
  }

  /** Writes in flight allowed now (lowered by 429s). */
  get concurrency(): number {
    return this.limit;
  }

  private async slot(): Promise<void> {
    while (this.inFlight >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inFlight++;
  }

  private release(event: 'throttled' | 'succeeded' | 'failed'): void {
    this.inFlight--;
    if (event !== 'failed') ({ limit: this.limit, successes: this.successes } = nextConcurrency(this.throttle, this.limit, event, this.successes));
    for (let free = this.limit - this.inFlight; free > 0 && this.waiting.length > 0; free--) this.waiting.shift()?.();
  }

  /** One write, retried while the API server answers 429 (at most maxAttempts, each wait at most maxDelayMs). */
  private async send<T>(key: string, what: string, write: () => Promise<T>, maxAttempts = this.throttle.maxAttempts, limited = true): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (limited) await this.slot();
      try {
        const result = await write();
        if (limited) this.release('succeeded');
        this.throttled.delete(key);
        return result;
      } catch (error) {
        const throttled = error instanceof KubeApiError && error.status === 429;
        if (limited) this.release(throttled ? 'throttled' : 'failed');
        if (!throttled) throw error;
        const count = (this.throttled.get(key) ?? 0) + 1;
        this.throttled.set(key, count);
        if (attempt >= maxAttempts) {
          this.throttled.delete(key);
          throw new KubeApiError(429, error.reason, `${error.message} (still throttled after ${attempt} attempts; the work queue retries later)`, error.retryAfterMs);
        }
        const delayMs = throttleDelay(this.throttle, count, error.retryAfterMs);
        this.logger.warn({ key, write: what, attempt, retryAfterMs: error.retryAfterMs, delayMs, concurrency: this.limit }, 'API server throttled a write (429); backing off');
        await this.sleep(delayMs);
      }
    }
  }

  /** Server-side apply with our field manager; `force` takes back fields someone else changed (drift repair). */
  apply(key: string, object: KubeObject): Promise<unknown> {
    return this.send(key, `apply ${objectKey(object)}`, () => this.client.request('PATCH', resourcePath(refFor(object)), applyRequest(object)));
  }

  /** Deletes only the object with this uid (a precondition), so a namesake created meanwhile is never touched. */
  async delete(key: string, object: KubeObject): Promise<DeleteOutcome> {
    const body = { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: object.metadata.uid ?? '' }, propagationPolicy: 'Background' };
    try {
      await this.send(key, `delete ${objectKey(object)}`, () => this.client.request('DELETE', resourcePath(refFor(object)), { body }));
      return 'deleted';
    } catch (error) {
      // Already gone (404), or replaced by a namesake (409 on the uid): nothing of ours to delete.
      if (error instanceof KubeApiError && (error.status === 404 || error.status === 409)) return 'gone';
      throw error;
    }
  }

  /**
   * Adds or removes the cleanup finalizer with a JSON patch (finalizerPatch:
   * tested against this ModelService's uid). Removing it from a ModelService
   * already gone is done.
   */
  async finalizer(key: string, ms: ModelService, change: 'add' | 'remove'): Promise<void> {
    const patch = finalizerPatch(ms, change);
    if (!patch) return;
    const ref = { apiVersion: MODEL_SERVICE_API_VERSION, plural: MODEL_SERVICE_PLURAL, namespace: ms.metadata.namespace, name: ms.metadata.name };
    const write = () => this.client.request('PATCH', resourcePath(ref), { body: patch, contentType: 'application/json-patch+json', query: { fieldManager: FIELD_MANAGER } });
    try {
      await this.send(key, `${change} finalizer`, write);
    } catch (error) {
      if (change === 'remove' && error instanceof KubeApiError && error.status === 404) return;
      throw error;
    }
  }

  /** AffinityReady, applied to the status subresource. */
  status(ms: ModelService, condition: Condition): Promise<unknown> {
    const ref = { apiVersion: MODEL_SERVICE_API_VERSION, plural: MODEL_SERVICE_PLURAL, namespace: ms.metadata.namespace, name: ms.metadata.name, subresource: 'status' };
    return this.send(modelServiceKey(ms), 'status', () => this.client.request('PATCH', resourcePath(ref), applyRequest(statusObject(ms, condition))));
  }

  /** Records an Event; a failure is logged, never thrown (an Event is worth less than the reconcile it reports). */
  async event(ms: ModelService, event: PlannedEvent, now = new Date(this.now())): Promise<void> {
    const ref = { apiVersion: 'v1', plural: 'events', namespace: ms.metadata.namespace };
    await this.send(modelServiceKey(ms), `event ${event.reason}`, () =>
      this.client.request('POST', resourcePath(ref), { body: eventObject(ms, event, now, this.instance), query: { fieldManager: FIELD_MANAGER } }),
    ).catch((error: Error) => this.logger.warn({ modelService: modelServiceKey(ms), reason: event.reason, error: error.message }, 'could not record event'));
  }

  /**
   * Creates or replaces a Lease. A replace carries the resourceVersion it was
   * read with, so a concurrent writer makes it fail with 409 (optimistic
   * concurrency is what makes leader election safe). `attempts` bounds the
   * 429 retries: a renewal must not outlive the renew deadline. Lease writes
   * do not wait for a slot among the writes in flight.
   */
  lease(lease: Lease, action: 'create' | 'update', attempts = this.throttle.maxAttempts): Promise<unknown> {
    const ref = { apiVersion: 'coordination.k8s.io/v1', plural: 'leases', namespace: lease.metadata.namespace, ...(action === 'update' ? { name: lease.metadata.name } : {}) };
    const key = `lease ${lease.metadata.namespace}/${lease.metadata.name}`;
    const write = () => this.client.request(action === 'create' ? 'POST' : 'PUT', resourcePath(ref), { body: lease });
    // Not behind the reconcile writes' limit: a renewal queued behind them could miss the renew deadline.
    return this.send(key, `${action} lease`, write, attempts, false);
  }
}

function applyRequest(body: unknown): { body: unknown; contentType: string; query: Record<string, string> } {
  return { body, contentType: 'application/apply-patch+yaml', query: { fieldManager: FIELD_MANAGER, force: 'true' } };
}
