// Where the API server is and how to authenticate to it, found the way kubectl
// and client-go look: $KUBECONFIG (files merged, first wins), ~/.kube/config,
// then the pod's ServiceAccount. The common credentials (client certificates,
// bearer tokens and token files, impersonation) are read here; a kubeconfig
// that needs more (exec plugins, auth providers, basic auth, proxies) is handed
// to @kubernetes/client-node's KubeConfig. Why not always KubeConfig: importing
// @kubernetes/client-node loads its whole generated API (~80 MB of RSS), which
// alone exceeds the reconciler's memory budget (bench/RESULTS.md).
import { existsSync, readFileSync } from 'node:fs';
import type { RequestOptions } from 'node:https';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { parse } from 'yaml';

export interface ClusterAccess {
  server: URL;
  /** Adds TLS material and authentication headers to a request's options. */
  authorize(options: RequestOptions): Promise<void>;
  /** Where the credentials came from, for logs. */
  source: string;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** Projected ServiceAccount tokens rotate; re-read the file this often (client-go does the same). */
const TOKEN_FILE_TTL_MS = 60_000;

interface Named<T> {
  name: string;
  [key: string]: unknown;
  cluster?: T;
  user?: T;
  context?: T;
}

interface KubeconfigCluster {
  server?: string;
  'certificate-authority'?: string;
  'certificate-authority-data'?: string;
  'insecure-skip-tls-verify'?: boolean;
  'tls-server-name'?: string;
  'proxy-url'?: string;
}

interface KubeconfigUser {
  token?: string;
  tokenFile?: string;
  'client-certificate'?: string;
  'client-certificate-data'?: string;
  'client-key'?: string;
  'client-key-data'?: string;
  as?: string;
  'as-groups'?: string[];
  'as-uid'?: string;
  exec?: unknown;
  'auth-provider'?: unknown;
  username?: string;
  password?: string;
}

interface Kubeconfig {
  clusters: Named<KubeconfigCluster>[];
  users: Named<KubeconfigUser>[];
  contexts: Named<{ cluster?: string; user?: string }>[];
  currentContext?: string;
}

/** Reads a token file, at most once per TOKEN_FILE_TTL_MS. */
function tokenFileReader(file: string): () => string {
  let token = '';
  let readAt = -Infinity;
  return () => {
    if (Date.now() - readAt > TOKEN_FILE_TTL_MS) {
      token = readFileSync(file, 'utf8').trim();
      readAt = Date.now();
    }
    return token;
  };
}

function access(server: string, source: string, tls: Pick<RequestOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'>, headers: () => Record<string, string | string[]>): ClusterAccess {
  return {
    server: new URL(server),
    source,
    authorize: async (options) => {
      Object.assign(options, tls);
      options.headers = { ...(options.headers as Record<string, string>), ...headers() };
    },
  };
}

function inCluster(env: NodeJS.ProcessEnv, dir: string): ClusterAccess {
  const host = env.KUBERNETES_SERVICE_HOST ?? '';
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT ?? '443'}`;
  const token = tokenFileReader(join(dir, 'token'));
  return access(server, 'in-cluster ServiceAccount', { ca: readFileSync(join(dir, 'ca.crt')) }, () => ({ authorization: `Bearer ${token()}` }));
}

/** Merges kubeconfig files as kubectl does: the first file to name a cluster, user, context or current-context wins. */
function readKubeconfigs(files: string[]): Kubeconfig {
  const merged: Kubeconfig = { clusters: [], users: [], contexts: [] };
  for (const file of files) {
    const doc = (parse(readFileSync(file, 'utf8')) ?? {}) as Record<string, unknown>;
    // Relative paths in a kubeconfig are relative to its own folder.
    const resolve = (p: unknown) => (typeof p === 'string' && p !== '' && !isAbsolute(p) ? join(dirname(file), p) : p);
    const add = <T>(into: Named<T>[], list: unknown, field: 'cluster' | 'user' | 'context', paths: string[]) => {
      for (const entry of (Array.isArray(list) ? list : []) as Named<T>[]) {
        if (into.some((e) => e.name === entry.name)) continue;
        const body = { ...(entry[field] as Record<string, unknown> | undefined) };
        for (const p of paths) if (p in body) body[p] = resolve(body[p]);
        into.push({ name: entry.name, [field]: body as T });
      }
    };
    add(merged.clusters, doc.clusters, 'cluster', ['certificate-authority']);
    add(merged.users, doc.users, 'user', ['client-certificate', 'client-key', 'tokenFile']);
    add(merged.contexts, doc.contexts, 'context', []);
    merged.currentContext ??= typeof doc['current-context'] === 'string' && doc['current-context'] !== '' ? doc['current-context'] : undefined;
  }
  return merged;
}

/** The kubeconfig's current cluster and user when this module can serve them; undefined when KubeConfig must. */
export function fromKubeconfig(files: string[]): ClusterAccess | undefined {
  const config = readKubeconfigs(files);
  const context = config.contexts.find((c) => c.name === config.currentContext)?.context;
  if (!context) throw new Error(`kubeconfig ${files.join(delimiter)}: current-context ${config.currentContext ?? '(unset)'} is not among its contexts`);
  const cluster = config.clusters.find((c) => c.name === context.cluster)?.cluster;
  if (!cluster?.server) throw new Error(`kubeconfig ${files.join(delimiter)}: cluster ${context.cluster ?? '(unset)'} of context ${config.currentContext} has no server`);
  const user: KubeconfigUser = config.users.find((u) => u.name === context.user)?.user ?? {};
  if (user.exec !== undefined || user['auth-provider'] !== undefined || user.username !== undefined || cluster['proxy-url'] !== undefined) return undefined;

  const fileOrData = (file: string | undefined, data: string | undefined) =>
    data !== undefined ? Buffer.from(data, 'base64') : file !== undefined ? readFileSync(file) : undefined;
  const tls: Pick<RequestOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'> = {};
  const ca = fileOrData(cluster['certificate-authority'], cluster['certificate-authority-data']);
  if (ca) tls.ca = ca;
  if (cluster['insecure-skip-tls-verify'] === true) tls.rejectUnauthorized = false;
  if (cluster['tls-server-name']) tls.servername = cluster['tls-server-name'];
  const cert = fileOrData(user['client-certificate'], user['client-certificate-data']);
  const key = fileOrData(user['client-key'], user['client-key-data']);
  if (cert) tls.cert = cert;
  if (key) tls.key = key;

  const tokenFile = user.tokenFile ? tokenFileReader(user.tokenFile) : undefined;
  const impersonation: Record<string, string | string[]> = {};
  if (user.as) impersonation['impersonate-user'] = user.as;
  if (user['as-groups']?.length) impersonation['impersonate-group'] = user['as-groups'];
  if (user['as-uid']) impersonation['impersonate-uid'] = user['as-uid'];
  return access(cluster.server, `kubeconfig ${files.join(delimiter)}`, tls, () => {
    const token = user.token ?? tokenFile?.();
    return token ? { ...impersonation, authorization: `Bearer ${token}` } : impersonation;
  });
}

/** The kubeconfig files kubectl would read, or [] for in-cluster. */
export function kubeconfigFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const fromEnv = (env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '' && existsSync(f));
  if (fromEnv.length > 0) return fromEnv;
  const home = join(env.HOME ?? homedir(), '.kube', 'config');
  return existsSync(home) ? [home] : [];
}

export async function loadClusterAccess(env: NodeJS.ProcessEnv = process.env, serviceAccountDir = SERVICE_ACCOUNT_DIR): Promise<ClusterAccess> {
  const files = kubeconfigFiles(env);
  if (files.length === 0) {
    if (env.KUBERNETES_SERVICE_HOST && existsSync(join(serviceAccountDir, 'token'))) return inCluster(env, serviceAccountDir);
    throw new Error('no Kubernetes credentials: set KUBECONFIG, create ~/.kube/config, or run in a pod with a ServiceAccount token');
  }
  const lean = fromKubeconfig(files);
  if (lean) return lean;
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromFile(files[0] as string);
  for (const file of files.slice(1)) {
    const next = new KubeConfig();
    next.loadFromFile(file);
    // preserveContext: the first file's current-context wins, as above.
    kc.mergeConfig(next, true);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error(`kubeconfig ${files.join(delimiter)}: no current cluster`);
  return { server: new URL(cluster.server), source: `kubeconfig ${files.join(delimiter)} (via @kubernetes/client-node)`, authorize: (options) => kc.applyToHTTPSOptions(options) };
}
