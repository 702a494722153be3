// A thin REST client over the Kubernetes API: server-side apply (also on the
// status subresource), get, list, watch, delete and Event creation.
// Credentials come from cluster-access.ts (kubeconfig or in-cluster).
import { Agent, type RequestOptions, request } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { KubeObject } from '../src/model-service.ts';
import type { ClusterAccess } from './cluster-access.ts';

export const FIELD_MANAGER = 'modelplane-affinity';

export class KubeApiError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

export interface ResourceRef {
  apiVersion: string;
  plural: string;
  namespace?: string;
  name?: string;
  subresource?: string;
}

export function resourcePath(ref: ResourceRef): string {
  const base = ref.apiVersion.includes('/') ? `/apis/${ref.apiVersion}` : `/api/${ref.apiVersion}`;
  const ns = ref.namespace ? `/namespaces/${encodeURIComponent(ref.namespace)}` : '';
  const name = ref.name ? `/${encodeURIComponent(ref.name)}` : '';
  const sub = ref.subresource ? `/${ref.subresource}` : '';
  return `${base}${ns}/${ref.plural}${name}${sub}`;
}

/** One line of a watch stream. ERROR carries a Status instead of an object. */
export type WatchEvent<T> =
  | { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK'; object: T }
  | { type: 'ERROR'; object: { code?: number; reason?: string; message?: string; metadata?: undefined } };

export interface WatchOptions {
  resourceVersion: string;
  labelSelector?: string | undefined;
  /** Called once the API server has accepted the watch. */
  onOpen?: () => void;
}

function errorFromBody(method: string, url: URL, status: number, text: string): KubeApiError {
  let parsed: { reason?: string; message?: string } = {};
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    // not a Status: the text is the message
  }
  return new KubeApiError(status, parsed.reason ?? 'Unknown', `${method} ${url.pathname}: ${status} ${parsed.message ?? text}`);
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}

export class KubeClient {
  private readonly access: ClusterAccess;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16 });
  /** Watches hold their connection for minutes: their own pool, so they never starve requests. */
  private readonly watchAgent = new Agent({ keepAlive: true });

  constructor(access: ClusterAccess) {
    this.access = access;
  }

  private async requestOptions(method: string, url: URL): Promise<RequestOptions> {
    const opts: RequestOptions = {
      method,
      hostname: url.hostname,
      port: url.port,
      path: `${url.pathname}${url.search}`,
      headers: { accept: 'application/json' },
    };
    await this.access.authorize(opts);
    return opts;
  }

  private url(path: string, query: Record<string, string | undefined> = {}): URL {
    const url = new URL(path, this.access.server);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
    return url;
  }

  async request<T>(method: string, path: string, options: { body?: unknown; contentType?: string; query?: Record<string, string> } = {}): Promise<T> {
    const url = this.url(path, options.query);
    const opts = await this.requestOptions(method, url);
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    if (payload !== undefined) {
      opts.headers = { ...opts.headers, 'content-type': options.contentType ?? 'application/json', 'content-length': Buffer.byteLength(payload) };
    }
    // After authorize, which may set an agent of its own: ours keeps connections alive.
    opts.agent = this.agent;
    return new Promise<T>((resolve, reject) => {
      const req = request(opts, (res) => {
        readAll(res).then((text) => {
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) return reject(errorFromBody(method, url, status, text));
          try {
            resolve((text === '' ? {} : JSON.parse(text)) as T);
          } catch (error) {
            reject(new Error(`${method} ${url.pathname}: the API server sent a body that is not JSON (${(error as Error).message})`));
          }
        }, reject);
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${url.pathname}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * Follows a watch until the API server ends it (resolves) or it fails
   * (rejects: HTTP errors, broken connections, or onEvent throwing). The
   * server ends it after 5–10 minutes, like client-go's reflector, so
   * connections are rebalanced; aborting the signal ends it quietly.
   */
  async watch<T>(ref: ResourceRef, options: WatchOptions, onEvent: (event: WatchEvent<T>) => void, signal: AbortSignal): Promise<void> {
    const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
    const url = this.url(resourcePath(ref), {
      watch: '1',
      resourceVersion: options.resourceVersion || undefined,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
      labelSelector: options.labelSelector,
    });
    const opts = await this.requestOptions('GET', url);
    opts.agent = this.watchAgent;
    opts.signal = signal;
    return new Promise<void>((resolve, reject) => {
      const fail = (error: Error) => {
        req.destroy();
        if (signal.aborted) resolve();
        else reject(error);
      };
      const req = request(opts, (res) => {
        if (res.statusCode !== 200) {
          readAll(res).then((text) => fail(errorFromBody('GET', url, res.statusCode ?? 0, text)), fail);
          return;
        }
        options.onOpen?.();
        let rest = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          const lines = (rest + chunk).split('\n');
          rest = lines.pop() ?? '';
          try {
            for (const line of lines) if (line.trim() !== '') onEvent(JSON.parse(line) as WatchEvent<T>);
          } catch (error) {
            fail(error as Error);
          }
        });
        res.on('end', () => resolve());
        res.on('error', fail);
      });
      // Bookmarks arrive about once a minute; a silent connection longer than the watch itself is dead.
      req.setTimeout((timeoutSeconds + 60) * 1000, () => fail(new Error(`GET ${url.pathname}: watch silent for ${timeoutSeconds + 60} s`)));
      req.on('error', fail);
      req.end();
    });
  }

  /** Server-side apply with our field manager; `force` takes back fields someone else changed (drift repair). */
  apply<T>(ref: ResourceRef, object: unknown): Promise<T> {
    return this.request<T>('PATCH', resourcePath(ref), {
      body: object,
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager: FIELD_MANAGER, force: 'true' },
    });
  }

  /**
   * `fromCache`: served from the API server's watch cache (resourceVersion=0),
   * which may be milliseconds behind etcd but spares etcd a quorum read.
   */
  get<T>(ref: ResourceRef, options: { fromCache?: boolean } = {}): Promise<T> {
    return this.request<T>('GET', resourcePath(ref), options.fromCache ? { query: { resourceVersion: '0' } } : {});
  }

  list<T>(ref: ResourceRef, labelSelector?: string): Promise<{ items: T[]; metadata: { resourceVersion?: string } }> {
    return this.request('GET', resourcePath(ref), labelSelector ? { query: { labelSelector } } : {});
  }

  /** Deletes only the object with this uid (a precondition), so a namesake created meanwhile is never touched. */
  async delete(ref: ResourceRef, uid: string): Promise<void> {
    await this.request('DELETE', resourcePath(ref), {
      body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid }, propagationPolicy: 'Background' },
    });
  }

  create<T>(ref: ResourceRef, object: KubeObject | Record<string, unknown>): Promise<T> {
    return this.request<T>('POST', resourcePath(ref), { body: object, query: { fieldManager: FIELD_MANAGER } });
  }

  close(): void {
    this.agent.destroy();
    this.watchAgent.destroy();
  }
}
