// A real Kubernetes control plane for tests: etcd v3.6 and kube-apiserver
// v1.36 (and optionally kube-controller-manager, for garbage collection),
// built from the tools modules, on free loopback ports, with an admin
// kubeconfig and a matching kubectl. No mocks: admission, CRD schemas and
// server-side apply behave exactly as in a cluster.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ETCD_TOOLS, KUBE_TOOLS, ensureGoTools } from './go-tools.ts';
import { type CertificateFiles, makeCa, makeLeaf, makeServiceAccountKey } from './pki.ts';
import { type ManagedProcess, freePort, startProcess, waitFor } from './processes.ts';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ControlPlane {
  /** Scratch folder: logs, certificates, kubeconfig. */
  dir: string;
  kubeconfig: string;
  /** https://127.0.0.1:PORT */
  server: string;
  /** Folder with kubectl, kube-apiserver, kube-controller-manager. */
  kubeBin: string;
  /** Process ids, for benchmarks that account CPU per process. */
  pids: { etcd: number; apiserver: number };
  kubectl(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<KubectlResult>;
  /** Like kubectl, but throws with stderr on a non-zero exit. */
  kubectlOk(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** Stops kube-apiserver (SIGTERM) and leaves etcd running: an API server outage. */
  stopApiServer(): Promise<void>;
  /** Starts kube-apiserver again with the same flags on the same port, and waits for its /readyz. */
  startApiServer(): Promise<void>;
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  /** Extra kube-apiserver flags, e.g. `--max-requests-inflight=5` to make it answer 429. */
  apiServerFlags?: string[];
  /** Also run kube-controller-manager (garbage collector, namespace deletion). */
  controllerManager?: boolean;
  /** Keep the scratch folder after stop (for debugging). */
  keepDir?: boolean;
}

function writeKubeconfig(file: string, server: string, ca: CertificateFiles, client: CertificateFiles): void {
  writeFileSync(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'testbed', cluster: { server, 'certificate-authority': ca.certFile } }],
      users: [{ name: 'admin', user: { 'client-certificate': client.certFile, 'client-key': client.keyFile } }],
      contexts: [{ name: 'testbed', context: { cluster: 'testbed', user: 'admin', namespace: 'default' } }],
      'current-context': 'testbed',
    }),
  );
}

/** Credentials read once, for polling the API server's health before a kubeconfig exists. */
function tlsOptions(ca: CertificateFiles, client: CertificateFiles): { ca: Buffer; cert: Buffer; key: Buffer } {
  return { ca: readFileSync(ca.certFile), cert: readFileSync(client.certFile), key: readFileSync(client.keyFile) };
}

function httpsOk(url: string, tls: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { ...tls, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

export interface Kubectl {
  kubectl(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<KubectlResult>;
  kubectlOk(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<string>;
}

/** kubectl (the v1.36 one built with the API server) bound to a kubeconfig. */
export function kubectlFor(kubeBin: string, kubeconfig: string): Kubectl {
  const kubectl = (args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<KubectlResult> =>
    new Promise((resolve) => {
      const child = execFile(
        join(kubeBin, 'kubectl'),
        args,
        { env: { ...process.env, KUBECONFIG: kubeconfig }, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
        (error, stdout, stderr) => {
          const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : 1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
      // kubectl may exit before reading its input (the exit code says why): no unhandled EPIPE.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(opts.input ?? '');
    });
  const kubectlOk = async (args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> => {
    const result = await kubectl(args, opts);
    if (result.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (exit ${result.code}): ${result.stderr}`);
    return result.stdout;
  };
  return { kubectl, kubectlOk };
}

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const [kubeBin, etcdBin] = await Promise.all([ensureGoTools(KUBE_TOOLS), ensureGoTools(ETCD_TOOLS)]);
  const dir = mkdtempSync(join(tmpdir(), 'mpa-controlplane-'));
  const pki = join(dir, 'pki');
  mkdirSync(pki);
  const processes: ManagedProcess[] = [];
  const stop = async () => {
    for (const p of processes.reverse()) await p.stop();
    if (!options.keepDir) rmSync(dir, { recursive: true, force: true });
  };

  try {
    const ca = makeCa(pki, 'ca', 'modelplane-affinity-testbed-ca');
    const serving = makeLeaf(pki, 'apiserver', ca, {
      commonName: 'kube-apiserver',
      dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc'],
      ipAddresses: ['127.0.0.1', '10.0.0.1'],
      usage: 'server',
    });
    const admin = makeLeaf(pki, 'admin', ca, { commonName: 'admin', organization: 'system:masters', usage: 'client' });
    const sa = makeServiceAccountKey(pki);

    const [etcdClientPort, etcdPeerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    const etcd = startProcess(
      join(etcdBin, 'etcd'),
      [
        '--data-dir', join(dir, 'etcd'),
        '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
        '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', `default=${peerUrl}`,
        '--unsafe-no-fsync', '--log-level', 'warn',
      ],
      join(dir, 'etcd.log'),
    );
    processes.push(etcd);
    await waitFor('etcd', async () => (await fetch(`${etcdUrl}/health`)).ok, 30_000, () => etcd.tail());

    const server = `https://127.0.0.1:${apiPort}`;
    const apiServerArgs = [
      `--etcd-servers=${etcdUrl}`,
      `--secure-port=${apiPort}`, '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1',
      `--tls-cert-file=${serving.certFile}`, `--tls-private-key-file=${serving.keyFile}`,
      `--client-ca-file=${ca.certFile}`,
      '--service-cluster-ip-range=10.0.0.0/16', '--allow-privileged=true',
      '--authorization-mode=RBAC', '--disable-admission-plugins=ServiceAccount',
      `--service-account-issuer=${server}/`, `--service-account-key-file=${sa.pubFile}`,
      `--service-account-signing-key-file=${sa.keyFile}`,
      `--cert-dir=${pki}`,
      '--v=1',
      ...(options.apiServerFlags ?? []),
    ];
    const adminTls = tlsOptions(ca, admin);
    let apiserver: ManagedProcess | undefined;
    const startApiServer = async () => {
      const started = startProcess(join(kubeBin, 'kube-apiserver'), apiServerArgs, join(dir, 'kube-apiserver.log'));
      apiserver = started;
      processes.push(started);
      pids.apiserver = started.child.pid ?? 0;
      await waitFor('kube-apiserver /readyz', () => httpsOk(`${server}/readyz`, adminTls), 90_000, () => started.tail());
    };
    const stopApiServer = async () => {
      const running = apiserver;
      if (!running) return;
      apiserver = undefined;
      processes.splice(processes.indexOf(running), 1);
      await running.stop();
    };
    const pids = { etcd: etcd.child.pid ?? 0, apiserver: 0 };
    await startApiServer();

    const kubeconfig = join(dir, 'kubeconfig');
    writeKubeconfig(kubeconfig, server, ca, admin);

    if (options.controllerManager) {
      const cm = startProcess(
        join(kubeBin, 'kube-controller-manager'),
        [
          `--kubeconfig=${kubeconfig}`, '--bind-address=127.0.0.1', `--secure-port=${await freePort()}`,
          '--leader-elect=false', '--controllers=garbage-collector-controller,namespace-controller',
          `--cert-dir=${join(dir, 'kcm')}`, '--use-service-account-credentials=false',
          `--service-account-private-key-file=${sa.keyFile}`, `--root-ca-file=${ca.certFile}`,
        ],
        join(dir, 'kube-controller-manager.log'),
      );
      processes.push(cm);
    }

    const { kubectl, kubectlOk } = kubectlFor(kubeBin, kubeconfig);
    // The default namespace and RBAC bootstrap come up just after /readyz.
    await waitFor('namespace default', async () => (await kubectl(['get', 'namespace', 'default'])).code === 0, 30_000);
    return { dir, kubeconfig, server, kubeBin, pids, kubectl, kubectlOk, stopApiServer, startApiServer, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
