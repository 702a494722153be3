// A list-then-watch cache of one resource, the reflector + store pattern of
// client-go: list once, then follow a watch from the list's resourceVersion,
// with bookmarks; an expired resourceVersion (410) lists again. Handlers see
// add / update / delete, like client-go's informers; 'listed' after each
// list (the first one: synced), 'connect' when a watch is accepted, 'error'
// when the list or watch is down and start() must be called again (the
// controller does, with backoff).
import type { KubeObject } from '../src/model-service.ts';
import { KubeApiError, type KubeClient, type ResourceRef, type WatchEvent } from './kube.ts';

/** What the cache needs of an object: its identity and resourceVersion. */
export type Watched = Pick<KubeObject, 'apiVersion' | 'kind' | 'metadata'>;

export type ObjectHandler<T> = (object: T) => void;
type Events<T> = { add: ObjectHandler<T>; update: ObjectHandler<T>; delete: ObjectHandler<T>; listed: () => void; connect: () => void; error: (error: Error) => void };

export interface InformerOptions<T> {
  ref: Pick<ResourceRef, 'apiVersion' | 'plural'>;
  kind: string;
  labelSelector?: string | undefined;
  /** Applied to every object before it is cached and handed to handlers. */
  transform?: (object: T) => T;
  /** One value each object is also found by (byIndex), like a client-go indexer; e.g. its owner's uid. */
  indexBy?: (object: T) => string | undefined;
}

export function cacheKey(object: Watched): string {
  return `${object.metadata.namespace ?? ''}/${object.metadata.name ?? ''}`;
}

export interface CacheChange<T> {
  type: 'add' | 'update' | 'delete';
  object: T;
}

/** What a fresh list changes in the cache: new and changed objects, and the ones gone since. */
export function diffList<T extends Watched>(cache: ReadonlyMap<string, T>, items: T[]): CacheChange<T>[] {
  const changes: CacheChange<T>[] = [];
  const seen = new Set<string>();
  for (const item of items) {
    const key = cacheKey(item);
    seen.add(key);
    const old = cache.get(key);
    if (!old) changes.push({ type: 'add', object: item });
    else if (old.metadata.resourceVersion !== item.metadata.resourceVersion) changes.push({ type: 'update', object: item });
  }
  for (const [key, old] of cache) if (!seen.has(key)) changes.push({ type: 'delete', object: old });
  return changes;
}

/** The cache change a watch event makes; undefined for bookmarks and for events that change nothing. */
export function watchChange<T extends Watched>(cache: ReadonlyMap<string, T>, event: WatchEvent<T>): CacheChange<T> | undefined {
  if (event.type === 'DELETED') return { type: 'delete', object: event.object };
  if (event.type !== 'ADDED' && event.type !== 'MODIFIED') return undefined;
  const old = cache.get(cacheKey(event.object));
  if (old?.metadata.resourceVersion === event.object.metadata.resourceVersion) return undefined;
  return { type: old ? 'update' : 'add', object: event.object };
}

export class Informer<T extends Watched> {
  private readonly client: KubeClient;
  private readonly options: InformerOptions<T>;
  private readonly cache = new Map<string, T>();
  /** indexBy value → cache keys. */
  private readonly index = new Map<string, Set<string>>();
  private readonly handlers: { [E in keyof Events<T>]: Events<T>[E][] } = { add: [], update: [], delete: [], listed: [], connect: [], error: [] };
  private abort: AbortController | undefined;
  private resourceVersion = '';

  constructor(client: KubeClient, options: InformerOptions<T>) {
    this.client = client;
    this.options = options;
  }

  on<E extends keyof Events<T>>(event: E, handler: Events<T>[E]): void {
    this.handlers[event].push(handler);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.cache.get(`${namespace ?? ''}/${name}`);
  }

  /** The cached objects whose indexBy value is `value`. */
  byIndex(value: string): T[] {
    return [...(this.index.get(value) ?? [])].map((key) => this.cache.get(key) as T);
  }

  list(namespace?: string): T[] {
    const all = [...this.cache.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  /** Lists (resolving once the cache holds the list), then watches in the background. */
  async start(): Promise<void> {
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    try {
      await this.relist();
    } catch (error) {
      // Reported like a failed watch, so the owner's retry covers a list that fails (e.g. a CRD not installed yet).
      if (this.abort === abort) this.abort = undefined;
      this.emitError(error);
      throw error;
    }
    if (abort.signal.aborted) return;
    void this.watchLoop(abort.signal);
  }

  async stop(): Promise<void> {
    this.abort?.abort();
    this.abort = undefined;
  }

  private async relist(): Promise<void> {
    const { apiVersion } = this.options.ref;
    const result = await this.client.list<T>(this.options.ref, this.options.labelSelector);
    // List items carry no apiVersion/kind; the rest of the code relies on them.
    const items = result.items.map((item) => this.transform({ ...item, apiVersion, kind: this.options.kind }));
    for (const change of diffList(this.cache, items)) this.apply(change);
    this.resourceVersion = result.metadata.resourceVersion ?? '';
    for (const handler of this.handlers.listed) handler();
  }

  private async watchLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.client.watch<T>(
          this.options.ref,
          { resourceVersion: this.resourceVersion, labelSelector: this.options.labelSelector, onOpen: () => this.handlers.connect.forEach((handler) => handler()) },
          (event) => {
            if (event.type === 'ERROR') throw new KubeApiError(event.object.code ?? 500, event.object.reason ?? 'Unknown', `watch ${this.options.kind}: ${event.object.message ?? ''}`);
            if (event.object.metadata?.resourceVersion) this.resourceVersion = event.object.metadata.resourceVersion;
            if (event.type === 'BOOKMARK') return;
            const change = watchChange(this.cache, { ...event, object: this.transform({ ...event.object, apiVersion: this.options.ref.apiVersion, kind: this.options.kind }) });
            if (change) this.apply(change);
          },
          signal,
        );
        // The server ended the watch (its timeout): follow on from the last resourceVersion.
      } catch (error) {
        if (signal.aborted) return;
        // 410 Gone: the resourceVersion is too old to watch from; a fresh list catches up.
        if (error instanceof KubeApiError && error.status === 410) {
          try {
            await this.relist();
            continue;
          } catch (relistError) {
            error = relistError;
          }
        }
        if (this.abort?.signal === signal) this.abort = undefined;
        this.emitError(error);
        return;
      }
    }
  }

  private transform(object: T): T {
    return this.options.transform ? this.options.transform(object) : object;
  }

  private apply(change: CacheChange<T>): void {
    const key = cacheKey(change.object);
    this.unindex(key);
    if (change.type === 'delete') this.cache.delete(key);
    else {
      this.cache.set(key, change.object);
      const value = this.options.indexBy?.(change.object);
      if (value !== undefined) this.index.set(value, (this.index.get(value) ?? new Set()).add(key));
    }
    for (const handler of this.handlers[change.type]) handler(change.object);
  }

  private unindex(key: string): void {
    const old = this.cache.get(key);
    const value = old && this.options.indexBy?.(old);
    if (value === undefined) return;
    const keys = this.index.get(value);
    keys?.delete(key);
    if (keys?.size === 0) this.index.delete(value);
  }

  private emitError(error: unknown): void {
    for (const handler of this.handlers.error) handler(error instanceof Error ? error : new Error(String(error)));
  }
}
