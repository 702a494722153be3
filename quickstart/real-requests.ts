// The quickstart's last step: real requests through Envoy Gateway v1.9.0's
// own controller and a real Envoy, over the objects the manager generated for
// the examples. Two local inference clusters stand for us-east and eu-west
// (each with a prefix cache: cold 80 ms, warm 15 ms), the example routes are
// pointed at them (Backends on 127.0.0.x, same shapes: kimi-k2's backendRefs
// carry their own filters, llama-70b's do not), and the hasher Deployment's
// own args run as a host process.
import { join } from 'node:path';
import type { Kubectl } from '../test/testbed/control-plane.ts';
import { chatBody, locality, runConversations, send, syntheticConversations } from '../test/testbed/conversations.ts';
import { startDataPlane } from '../test/testbed/data-plane.ts';
import { SESSION_HEADER, waitUntilRouted } from '../test/testbed/fleet-bed.ts';
import { type RouteShapeName, backend, httpRoute, routePrefix, yamlDocuments } from '../test/testbed/fleet.ts';
import { startHasherPods } from '../test/testbed/hasher-pods.ts';
import { startInferenceCluster } from '../test/testbed/inference-cluster.ts';

const NAMESPACE = 'ml';
const MODELS: Array<{ name: string; mode: 'PrefixHash' | 'Session'; shape: RouteShapeName }> = [
  { name: 'kimi-k2', mode: 'PrefixHash', shape: 'weighted' },
  { name: 'llama-70b', mode: 'Session', shape: 'one-cluster' },
];

export async function realRequests(k: Kubectl, kubeconfig: string, dir: string, cleanup: Array<() => Promise<void>>, print: (line: string) => void): Promise<void> {
  const clusters = [];
  for (const [i, name] of ['us-east', 'eu-west'].entries()) {
    const cluster = await startInferenceCluster({ name, host: `127.0.0.${11 + i}`, coldMs: 80, warmMs: 15 });
    cleanup.unshift(() => cluster.close());
    clusters.push(cluster);
  }
  const addresses = clusters.map((c) => ({ name: c.name, host: c.host, port: c.port }));
  await k.kubectlOk(['apply', '-f', '-'], { input: yamlDocuments([...addresses.map((a) => backend(NAMESPACE, a)), ...MODELS.map((m) => httpRoute(NAMESPACE, m.name, m.shape, addresses))]) });
  print(`    inference clusters: ${clusters.map((c) => `${c.name} at ${c.host}:${c.port}`).join(', ')}; routes kimi-k2 (weighted_clusters) and llama-70b (one Maglev cluster) point at them`);
  const dataPlane = await startDataPlane({ kubectl: k, kubeconfig, dir: join(dir, 'data-plane') });
  cleanup.unshift(() => dataPlane.stop());
  const hashers = startHasherPods({ kubectl: k, namespace: NAMESPACE, dir });
  cleanup.unshift(() => hashers.stop());
  print(`    Envoy Gateway's controller is running a real Envoy; the Gateway listens at ${dataPlane.gatewayUrl}`);
  for (const model of MODELS) {
    const url = `${dataPlane.gatewayUrl}${routePrefix(NAMESPACE, model.name)}v1/chat/completions`;
    await waitUntilRouted({ dataPlane, hashers, namespace: NAMESPACE, modelService: model.name, mode: model.mode, url });
    const conversations = syntheticConversations(20, 5, 7);
    const headers = model.mode === 'Session' ? (c: { id: string }) => ({ [SESSION_HEADER]: c.id }) : undefined;
    const results = await runConversations(conversations, { url, headers, concurrency: 4 });
    const l = locality(results);
    print(
      `  ${model.name} (${model.mode}): 20 conversations x 5 turns: ${l.laterOnFirstCluster}/${l.laterTurns} later turns on turn 1's cluster, ` +
        `${Math.round(l.laterWarm * 100)}% warm, conversations per cluster ${JSON.stringify(l.split)}, mean time to answer ${l.meanMs.toFixed(0)} ms`,
    );
    print(`      one conversation, turn by turn: ${(results[0] ?? []).map((t) => `${t.cluster} (${t.warm ? 'warm' : 'cold'})`).join(' -> ')}`);
    if (model.mode === 'PrefixHash') {
      const body = chatBody(conversations[0] as (typeof conversations)[number], 0);
      const honest = await send(url, body);
      const spoofed = await send(url, body, { 'x-prompt-hash': 'client-chosen' });
      const same = spoofed.cluster === honest.cluster && spoofed.promptHash === honest.promptHash;
      print(
        `      a client-sent x-prompt-hash: client-chosen ${same ? 'changes nothing' : 'MOVED the request'}: ${spoofed.cluster} with x-prompt-hash ${spoofed.promptHash} ` +
          `(without it: ${honest.cluster}, ${honest.promptHash})`,
      );
    }
  }
}
