// A thin REST client over the Kubernetes API: requests, get, list and watch.
// It decides nothing and writes nothing on its own: every write of the
// reconciler goes through writer.ts. Credentials come from cluster-access.ts
// (kubeconfig or in-cluster).
import { Agent, type RequestOptions, request } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { ClusterAccess } from './cluster-access.ts';

export class KubeApiError extends Error {
  readonly status: number;
  readonly reason: string;
  /** The server's Retry-After, in milliseconds (429 Too Many Requests, 503, some 5xx). */
  readonly retryAfterMs: number | undefined;
  constructor(status: number, reason: string, message: string, retryAfterMs?: number) {
    super(message);
    this.status = status;
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Retry-After in seconds (what the API server sends) or as an HTTP date, in milliseconds from `now`. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text.trim() === '') return undefined;
  if (/^\d+$/.test(text.trim())) return Number(text.trim()) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
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

function errorFromBody(method: string, url: URL, status: number, text: string, retryAfter?: string | string[]): KubeApiError {
  let parsed: { reason?: string; message?: string } = {};
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    // not a Status: the text is the message
  }
  return new KubeApiError(status, parsed.reason ?? 'Unknown', `${method} ${url.pathname}: ${status} ${parsed.message ?? text}`, parseRetryAfter(retryAfter));
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
          if (status < 200 || status >= 300) return reject(errorFromBody(method, url, status, text, res.headers['retry-after']));
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
          readAll(res).then((text) => fail(errorFromBody('GET', url, res.statusCode ?? 0, text, res.headers['retry-after'])), fail);
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

  close(): void {
    this.agent.destroy();
    this.watchAgent.destroy();
  }
}
