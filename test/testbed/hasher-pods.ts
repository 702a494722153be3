// The test bed has no kubelet: this plays one for the hasher Deployments our
// reconciler writes. For each Deployment it runs the container's own args
// with our CLI as a host process, and writes the EndpointSlice the
// endpoint-slice controller would write for a ready pod, so Envoy Gateway
// resolves the hasher Service exactly as it would in a cluster.
//
// Pod addresses: the API server refuses EndpointSlice addresses in
// 127.0.0.0/8, so each hasher listens on an address of its own from
// 198.18.0.0/15 (RFC 2544, reserved for benchmarking) added to the loopback
// device for the run and removed at the end: reachable from this machine
// only, like 127.0.0.x.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { KubeObject } from '../../src/model-service.ts';
import type { Kubectl } from './control-plane.ts';
import { type ManagedProcess, startProcess, waitFor } from './processes.ts';
import { CLI } from './webhook.ts';

interface Container {
  name: string;
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  ports?: Array<{ name?: string; containerPort: number }>;
}

interface Deployment extends KubeObject {
  spec: { template: { spec: { containers: Container[] } } };
}

export interface HasherPod {
  deployment: string;
  namespace: string;
  address: string;
  process: ManagedProcess;
  args: string[];
  /** Its gRPC port accepts connections and its EndpointSlice is written. */
  ready?: boolean;
}

export interface HasherPods {
  /** The running hasher of a Deployment, once it is up. */
  pod(deployment: string): HasherPod | undefined;
  waitForPod(deployment: string, timeoutMs?: number): Promise<HasherPod>;
  /** SIGKILL, as a crashed pod: the EndpointSlice stays (as it would until the kubelet reports). */
  kill(deployment: string): Promise<void>;
  /** SIGSTOP: the process holds its connections and answers nothing (a hung pod). */
  hang(deployment: string): void;
  resume(deployment: string): void;
  /** Starts the hasher again on the same address (a restarted pod). */
  restart(deployment: string): Promise<void>;
  stop(): Promise<void>;
}

const ADDRESS_BASE = '198.18.0.';
const MANAGED_BY = 'app.kubernetes.io/managed-by=modelplane-affinity';

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

async function healthy(address: string, port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * `namespace`: where the ModelServices' hashers run; `alsoNamespaces`: more
 * namespaces to run ours in (a Gateway's hasher sits in the Gateway's). Pods
 * are found by their Deployment's name, which must differ across them.
 */
export function startHasherPods(options: { kubectl: Kubectl; namespace: string; alsoNamespaces?: readonly string[]; dir: string; pollMs?: number }): HasherPods {
  const k = options.kubectl;
  const pods = new Map<string, HasherPod>();
  const addresses: string[] = [];
  let stopped = false;
  let nextAddress = 10;

  const launch = (deployment: string, address: string, args: string[], env: NodeJS.ProcessEnv): ManagedProcess =>
    startProcess(process.execPath, [CLI, ...args, '--host', address], join(options.dir, `hasher-${deployment}.log`), { ...process.env, ...env });

  async function endpointSlice(deployment: Deployment, address: string, port: number): Promise<void> {
    const name = deployment.metadata.name as string;
    await k.kubectlOk(['apply', '--server-side', '--field-manager', 'testbed-kubelet', '-f', '-'], {
      input: stringify({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: `${name}-testbed`,
          namespace: deployment.metadata.namespace,
          labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'testbed-kubelet' },
        },
        addressType: 'IPv4',
        endpoints: [{ addresses: [address], conditions: { ready: true, serving: true, terminating: false } }],
        ports: [{ name: 'grpc', port, protocol: 'TCP', appProtocol: 'kubernetes.io/h2c' }],
      }),
    });
  }

  async function sync(): Promise<void> {
    const items: Deployment[] = [];
    for (const namespace of [options.namespace, ...(options.alsoNamespaces ?? [])]) {
      items.push(...(JSON.parse(await k.kubectlOk(['get', 'deployments', '-n', namespace, '-l', MANAGED_BY, '-o', 'json'])) as { items: Deployment[] }).items);
    }
    const seen = new Set<string>();
    for (const deployment of items) {
      const name = deployment.metadata.name as string;
      seen.add(name);
      const container = deployment.spec.template.spec.containers[0];
      if (container === undefined) continue;
      const args = container.args ?? [];
      const current = pods.get(name);
      if (current !== undefined && current.args.join('\0') === args.join('\0')) continue;
      // New, or its args changed (a new ReplicaSet): replace the process on the same address.
      const address = current?.address ?? `${ADDRESS_BASE}${nextAddress++}`;
      if (current === undefined) {
        ip(['addr', 'replace', `${address}/32`, 'dev', 'lo']);
        addresses.push(address);
      } else {
        await current.process.stop();
      }
      const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value ?? '']));
      const grpcPort = container.ports?.find((p) => p.name === 'grpc')?.containerPort ?? 9002;
      const proc = launch(name, address, args, env);
      const pod: HasherPod = { deployment: name, namespace: deployment.metadata.namespace ?? options.namespace, address, process: proc, args };
      pods.set(name, pod);
      await waitFor(`hasher ${name} on ${address}:${grpcPort}`, () => healthy(address, grpcPort), 30_000, () => proc.tail());
      pod.ready = true;
      await endpointSlice(deployment, address, grpcPort);
    }
    for (const [name, pod] of pods) {
      if (seen.has(name)) continue;
      pods.delete(name);
      await pod.process.stop();
      await k.kubectl(['delete', 'endpointslice', `${name}-testbed`, '-n', pod.namespace, '--ignore-not-found']);
    }
  }

  const loop = (async () => {
    while (!stopped) {
      try {
        await sync();
      } catch (error) {
        if (!stopped) process.stderr.write(`[hasher-pods] ${(error as Error).message}\n`);
      }
      await new Promise((r) => setTimeout(r, options.pollMs ?? 500));
    }
  })();

  const need = (deployment: string): HasherPod => {
    const pod = pods.get(deployment);
    if (pod === undefined) throw new Error(`no hasher runs for Deployment ${deployment}`);
    return pod;
  };

  return {
    pod: (deployment) => (pods.get(deployment)?.ready ? pods.get(deployment) : undefined),
    async waitForPod(deployment, timeoutMs = 60_000) {
      await waitFor(`the hasher of Deployment ${deployment}`, async () => pods.get(deployment)?.ready === true, timeoutMs);
      return need(deployment);
    },
    async kill(deployment) {
      await need(deployment).process.stop('SIGKILL');
    },
    hang(deployment) {
      need(deployment).process.child.kill('SIGSTOP');
    },
    resume(deployment) {
      need(deployment).process.child.kill('SIGCONT');
    },
    async restart(deployment) {
      const pod = need(deployment);
      await pod.process.stop('SIGKILL');
      const list = JSON.parse(await k.kubectlOk(['get', 'deployment', deployment, '-n', pod.namespace, '-o', 'json'])) as Deployment;
      const container = list.spec.template.spec.containers[0] as Container;
      const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value ?? '']));
      pod.process = launch(deployment, pod.address, pod.args, env);
      const grpcPort = container.ports?.find((p) => p.name === 'grpc')?.containerPort ?? 9002;
      await waitFor(`hasher ${deployment} restarted`, () => healthy(pod.address, grpcPort), 30_000, () => pod.process.tail());
    },
    async stop() {
      stopped = true;
      await loop;
      for (const pod of pods.values()) {
        pod.process.child.kill('SIGCONT');
        await pod.process.stop();
      }
      for (const address of addresses) {
        try {
          ip(['addr', 'del', `${address}/32`, 'dev', 'lo']);
        } catch {
          /* already gone */
        }
      }
    },
  };
}
