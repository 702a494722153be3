// A thin REST client over the Kubernetes API: server-side apply (also on the
// status subresource), get, delete and Event creation. Credentials come from
// @kubernetes/client-node's KubeConfig (in-cluster or KUBECONFIG).
import { Agent, request } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeObject } from '../src/model-service.ts';

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

export class KubeClient {
  private readonly kc: KubeConfig;
  private readonly server: URL;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16 });

  constructor(kc: KubeConfig) {
    this.kc = kc;
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('no current cluster in the kubeconfig; set KUBECONFIG or run in a cluster');
    this.server = new URL(cluster.server);
  }

  async request<T>(method: string, path: string, options: { body?: unknown; contentType?: string; query?: Record<string, string> } = {}): Promise<T> {
    const url = new URL(path, this.server);
    for (const [k, v] of Object.entries(options.query ?? {})) url.searchParams.set(k, v);
    const opts: Parameters<typeof request>[1] = {
      method,
      hostname: url.hostname,
      port: url.port,
      path: `${url.pathname}${url.search}`,
      headers: { accept: 'application/json' },
    };
    await this.kc.applyToHTTPSOptions(opts);
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    if (payload !== undefined) {
      opts.headers = { ...opts.headers, 'content-type': options.contentType ?? 'application/json', 'content-length': Buffer.byteLength(payload) };
    }
    // After applyToHTTPSOptions, which may set an agent of its own: ours keeps connections alive.
    opts.agent = this.agent;
    return new Promise<T>((resolve, reject) => {
      const req = request(opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            parsed = { message: text };
          }
          if (status >= 200 && status < 300) resolve(parsed as T);
          else {
            const s = parsed as { reason?: string; message?: string };
            reject(new KubeApiError(status, s.reason ?? 'Unknown', `${method} ${url.pathname}: ${status} ${s.message ?? text}`));
          }
        });
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${url.pathname}: timed out`)));
      req.on('error', reject);
      req.end(payload);
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

  get<T>(ref: ResourceRef): Promise<T> {
    return this.request<T>('GET', resourcePath(ref));
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
  }
}
