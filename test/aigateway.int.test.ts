// Envoy AI Gateway as the fleet gateway (issue 16, "Show"): real requests to
// /v1/chat/completions with the model in the body, through a real Envoy
// configured by Envoy Gateway v1.9.0's controller with Envoy AI Gateway
// v1.0.0's extension server (test/testbed/ai-gateway.ts), AI Gateway's
// router-level ext_proc in front, our reconciler and hasher behind. One
// AIGatewayRoute for one model over three AIServiceBackends (EG Backends ->
// inference clusters on 127.0.0.x), labelled for its ModelService in the
// ModelService's namespace: AI Gateway copies the label to the HTTPRoute it
// generates, so our policies' targetSelectors select that route.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { MODEL_SERVICE_LABEL, crossNamespaceNames, generatedNames } from '../src/naming.ts';
import { type LiveRoute, MODEL_HEADER, type RouteBackend, aiGatewayRoute, aiServiceBackend, firstMatch, listenerFilters, liveRoutes, localityPriorities } from './testbed/ai-gateway.ts';
import { type Conversation, type Locality, type TurnResult, chatBody, locality, resetConnections, runConversations, send, syntheticConversations } from './testbed/conversations.ts';
import { GATEWAY_NAME, GATEWAY_NAMESPACE, clientTrafficPolicy } from './testbed/data-plane.ts';
import { type AffinityMode, type FleetBed, GATEWAY_HASHER, SESSION_HEADER, startFleetBed } from './testbed/fleet-bed.ts';
import { type InferenceCluster, startInferenceCluster } from './testbed/inference-cluster.ts';
import { waitFor } from './testbed/processes.ts';
import { loadXxh64, promptHash } from '../ext-proc/handlers.ts';
import { type Testbed, createNamespace, testbed } from './testbed/testbed.ts';

// The seed's 800 ms cold and 150 ms warm time to first token, scaled down 100x.
const COLD_MS = 8;
const WARM_MS = 1.5;
const MS = 'llama';
const MODEL = 'llama-3.1-8b-instruct';
/** The model of a second AIGatewayRoute, older than ours, with no ModelService. */
const OLDER_ROUTE = 'qwen';
const OLDER_MODEL = 'qwen-2.5-7b-instruct';
/** A ModelService whose AIGatewayRoute goes to fqdn Backends (as Modelplane's do). */
const DNS_MS = 'mistral';
const DNS_MODEL = 'mistral-7b-instruct';
/** ModelServices whose AIGatewayRoutes are Modelplane's: in modelplane-system, `<ns>-<name>`, model `<ns>/<name>`; the first is the older. */
const MODELPLANE_SHAPED = ['gemma', 'phi'] as const;
const modelplaneRoute = (ms: string) => `${ns}-${ms}`;
const modelplaneModel = (ms: string) => `${ns}/${ms}`;
const CONVERSATIONS = 100;
const TURNS = 5;
const PATH = '/v1/chat/completions';

let tb: Testbed;
let ns: string;
let fleet: FleetBed;
const hasher = generatedNames(MS).prefixHash;

function say(message: string): void {
  process.stderr.write(`[ai-gateway] ${message}\n`);
}

const body = (model: string) => (c: Conversation, t: number) => chatBody(c, t, model);
const headersFor = (mode: AffinityMode) => (mode === 'Session' ? (c: Conversation) => ({ [SESSION_HEADER]: c.id }) : undefined);

async function conversations(seed: number, mode: AffinityMode, model = MODEL, count = CONVERSATIONS, turns = TURNS): Promise<TurnResult[][]> {
  return runConversations(syntheticConversations(count, turns, seed), { url: fleet.url(MS), body: body(model), headers: headersFor(mode), concurrency: 16 });
}

async function report(what: string, l: Locality): Promise<void> {
  const extProc = (await fleet.dataPlane.stats('ext_proc\\.(message_timeouts|failure_mode_allowed|streams_failed)')).trim().replace(/\n/g, '; ');
  say(
    `${what}: ${l.laterOnFirstCluster}/${l.laterTurns} later turns on turn 1's backend, warm ${(l.laterWarm * 100).toFixed(1)}%, ` +
      `split ${JSON.stringify(l.split)}, failed ${l.failed}/${l.requests}, mean ${l.meanMs.toFixed(1)} ms, p99 ${l.p99Ms.toFixed(1)} ms; Envoy ext_proc ${extProc || 'none'}`,
  );
}

/** Requests Envoy let through without an ext_proc answer (failOpen: our hasher's, AI Gateway's fails closed), on the Gateway's listener. */
async function failedOpen(): Promise<number> {
  const lines = (await fleet.dataPlane.stats('ext_proc\\.failure_mode_allowed')).split('\n');
  return lines.filter((l) => l.startsWith('http.')).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** Whether a ClientTrafficPolicy on the fleet Gateway removes x-prompt-hash before routing. */
async function gatewayStripsPromptHash(): Promise<boolean> {
  const out = await tb.kubectlOk(['get', 'clienttrafficpolicy', '-n', GATEWAY_NAMESPACE, '-o', 'json']);
  const items = (JSON.parse(out) as { items: Array<{ spec?: { headers?: { earlyRequestHeaders?: { remove?: string[] } } } }> }).items;
  return items.some((p) => (p.spec?.headers?.earlyRequestHeaders?.remove ?? []).some((h) => h.toLowerCase() === 'x-prompt-hash'));
}

/** Streams Envoy opened to a hasher (its own Prometheus counter); 0 when it does not run. */
async function streamsOf(deployment: string): Promise<number> {
  const pod = fleet.hashers.pod(deployment);
  if (pod === undefined) return 0;
  const text = await (await fetch(`http://${pod.address}:9090/metrics`)).text();
  return Number(/^ext_proc_streams_total (\d+)/m.exec(text)?.[1] ?? Number.NaN);
}
/** Streams Envoy opened to the ModelService's own hasher. */
const hasherStreams = () => streamsOf(hasher);
const isHash = (value: string) => /^[0-9a-f]{16}$/.test(value);

async function applyRoute(name: string, model: string, labels: Record<string, string>, backends: RouteBackend[] = fleet.clusters.map((c) => ({ name: c.name }))): Promise<void> {
  await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(aiGatewayRoute(ns, name, model, backends, labels)) });
  await waitFor(
    `AIGatewayRoute ${ns}/${name} Accepted and its HTTPRoute generated`,
    async () => {
      const accepted = await tb.kubectl(['get', 'aigatewayroute', name, '-n', ns, '-o', 'jsonpath={.status.conditions[?(@.type=="Accepted")].status}']);
      const route = await tb.kubectl(['get', 'httproute', name, '-n', ns, '-o', 'name']);
      return accepted.stdout === 'True' && route.code === 0;
    },
    60_000,
  );
}

/** Waits until AI Gateway's extproc knows the model and a request for it reaches a backend. */
async function waitServed(model: string): Promise<void> {
  await fleet.aiGateway?.waitForModels([model]);
  await waitFor(
    `a request for ${model} to reach a backend`,
    async () => {
      const r = await send(fleet.url(MS), JSON.stringify({ model, messages: [{ role: 'user', content: `ready ${Date.now()}` }] }));
      return r.status === 200 && r.cluster !== '';
    },
    60_000,
  );
}

/** The filters Envoy runs for a request without x-ai-eg-model: those its first route match enables. */
async function attachment(what: string): Promise<{ first: LiveRoute | undefined; ours: string[] }> {
  const dump = await fleet.dataPlane.configDump();
  const filters = listenerFilters(dump);
  const routes = liveRoutes(dump);
  const first = firstMatch(routes, PATH, {});
  const ours = filters.filter((f) => f.name.includes(`/${ns}/${hasher}/`)).map((f) => f.name);
  say(`${what}: listener HTTP filters ${JSON.stringify(filters.map((f) => `${f.name}${f.disabled ? ' (disabled)' : ''}`))}`);
  say(`${what}: routes in Envoy's order ${JSON.stringify(routes.map((r) => ({ name: r.name, prefix: r.prefix, headers: r.headers, enables: r.enables })))}`);
  say(`${what}: first match for POST ${PATH} without ${MODEL_HEADER}: ${first?.name}, enabling ${JSON.stringify(first?.enables)}`);
  return { first, ours };
}

beforeAll(async () => {
  tb = testbed();
  ns = await createNamespace(tb, 'aigw');
  fleet = await startFleetBed({
    kubectl: tb,
    kubeconfig: tb.kubeconfig,
    dir: tb.dir,
    namespace: ns,
    clusters: 3,
    coldMs: COLD_MS,
    warmMs: WARM_MS,
    routes: {},
    aiGateway: {
      models: { [MS]: MODEL, [DNS_MS]: DNS_MODEL, ...Object.fromEntries(MODELPLANE_SHAPED.map((ms) => [ms, modelplaneModel(ms)])) },
      routes: Object.fromEntries(MODELPLANE_SHAPED.map((ms) => [ms, { namespace: GATEWAY_NAMESPACE, name: modelplaneRoute(ms) }])),
    },
  });
  await applyRoute(MS, MODEL, { [MODEL_SERVICE_LABEL]: MS });
  await waitServed(MODEL);
}, 900_000);

afterAll(async () => {
  await fleet?.stop();
});

describe('one AIGatewayRoute, labelled for its ModelService', () => {
  it("AI Gateway's HTTPRoute carries the label; our policies select it and Envoy Gateway accepts them", async () => {
    const route = JSON.parse(await tb.kubectlOk(['get', 'httproute', MS, '-n', ns, '-o', 'json'])) as {
      metadata: { labels?: Record<string, string>; annotations?: Record<string, string> };
      spec: { rules: unknown[] };
    };
    expect(route.metadata.labels?.[MODEL_SERVICE_LABEL]).toBe(MS);
    expect(route.metadata.annotations?.['gateway.envoyproxy.io/ai-gateway-generated']).toBe('true');
    // The model's rule, then AI Gateway's catch-all route-not-found rule.
    expect(route.spec.rules).toHaveLength(2);
    await fleet.setAffinity(MS, 'PrefixHash');
    for (const kind of ['backendtrafficpolicy', 'envoyextensionpolicy']) {
      const name = kind === 'backendtrafficpolicy' ? generatedNames(MS).backendTrafficPolicy : hasher;
      const status = JSON.parse(await tb.kubectlOk(['get', kind, name, '-n', ns, '-o', 'json'])) as {
        status?: { ancestors?: Array<{ ancestorRef: { name: string }; conditions: Array<{ type: string; status: string }> }> };
      };
      const accepted = (status.status?.ancestors ?? []).map((a) => `${a.ancestorRef.name}:${a.conditions.find((c) => c.type === 'Accepted')?.status}`);
      say(`${kind}/${name} ancestors: ${JSON.stringify(accepted)}`);
      expect(accepted).toContain(`${GATEWAY_NAME}:True`);
    }
    const { first, ours } = await attachment('one route');
    expect(ours).toHaveLength(1);
    // The catch-all of our own HTTPRoute is the first match, and it enables our filter.
    expect(first?.name.startsWith(`httproute/${ns}/${MS}/rule/1/`)).toBe(true);
    expect(first?.enables).toContain(ours[0]);
  });

  it.each(['Session', 'PrefixHash'] as const)('%s keeps every later turn of 100 five-turn conversations on turn 1 backend', async (mode) => {
    await fleet.setAffinity(MS, mode);
    // The labelled route also puts its model in the Gateway hasher: running, it must still get no stream.
    if (mode === 'PrefixHash') await waitFor('the Gateway hasher to run', async () => fleet.hashers.pod(GATEWAY_HASHER) !== undefined, 90_000);
    const [before, gatewayBefore] = [await hasherStreams(), await streamsOf(GATEWAY_HASHER)];
    const results = await conversations(11, mode);
    const gatewayStreams = (await streamsOf(GATEWAY_HASHER)) - gatewayBefore;
    const l = locality(results);
    await report(`${mode}, one route`, l);
    expect(l.failed).toBe(0);
    expect(l.laterOnFirstCluster).toBe(l.laterTurns);
    expect(Object.keys(l.split).sort()).toEqual(fleet.clusters.map((c) => c.name).sort());
    for (const count of Object.values(l.split)) expect(count).toBeGreaterThan(CONVERSATIONS / 3 / 2);
    if (mode === 'PrefixHash') {
      const streams = (await hasherStreams()) - before;
      say(`PrefixHash, one route: the hasher opened ${streams} streams for ${l.requests} requests, the Gateway hasher ${gatewayStreams}`);
      expect(streams).toBeGreaterThanOrEqual(l.requests);
      // The route has an EnvoyExtensionPolicy of its own, so Envoy Gateway gives it no Gateway-level filter.
      expect(gatewayStreams).toBe(0);
      for (const turn of results.flat()) expect(turn.promptHash).toMatch(/^[0-9a-f]{16}$/);
    }
  });

  it('None spreads the turns: about 1/3 of later turns land on turn 1 backend', async () => {
    await fleet.setAffinity(MS, 'None');
    const l = locality(await conversations(12, 'None'));
    await report('None, one route', l);
    const share = l.laterOnFirstCluster / l.laterTurns;
    expect({ failed: l.failed, spread: share > 0.15 && share < 0.6 }).toEqual({ failed: 0, spread: true });
  });

  it('a client-sent x-prompt-hash (any case, repeated, empty) changes nothing', async () => {
    await fleet.setAffinity(MS, 'PrefixHash');
    // A new hasher process after None: its first requests, one at a time, before 60 at once.
    for (const c of syntheticConversations(50, 1, 14)) await send(fleet.url(MS), chatBody(c, 0, MODEL));
    const openings = syntheticConversations(60, 1, 13);
    const open0 = await failedOpen();
    const honest = await Promise.all(openings.map((c) => send(fleet.url(MS), chatBody(c, 0, MODEL))));
    expect(await failedOpen()).toBe(open0);
    const names = ['x-prompt-hash', 'X-PROMPT-HASH', 'X-Prompt-Hash', 'x-Prompt-hash'];
    const values = ['0000000000000000', 'ffffffffffffffff', '', 'aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb'];
    for (const spoof of values.map((value, i) => ({ [names[i] as string]: value }))) {
      const spoofed = await Promise.all(openings.map((c) => send(fleet.url(MS), chatBody(c, 0, MODEL), spoof)));
      spoofed.forEach((r, i) => {
        const expected = honest[i] as TurnResult;
        expect({ spoof, status: r.status, cluster: r.cluster, hash: r.promptHash }).toEqual({ spoof, status: 200, cluster: expected.cluster, hash: expected.promptHash });
      });
    }
  });

  it('the hasher SIGKILLed mid-run: every request still gets a 200 (fail open), and affinity returns with it', async () => {
    await fleet.setAffinity(MS, 'PrefixHash');
    const streams0 = await hasherStreams();
    const run = conversations(21, 'PrefixHash', MODEL, 60);
    // Killed once the run is under way (some 20 requests through it).
    await waitFor('the run to reach the hasher', async () => (await hasherStreams()) >= streams0 + 20, 30_000);
    await fleet.hashers.kill(hasher);
    const killed = locality(await run);
    await report('hasher SIGKILLed mid-run', killed);
    expect({ failed: killed.failed, requests: killed.requests }).toEqual({ failed: 0, requests: 60 * TURNS });
    const down = locality(await conversations(22, 'PrefixHash', MODEL, 30));
    await report('hasher down', down);
    expect(down.failed).toBe(0);
    await fleet.hashers.restart(hasher);
    await fleet.setAffinity(MS, 'PrefixHash');
    const open0 = await failedOpen();
    const back = locality(await conversations(23, 'PrefixHash'));
    const openedBack = (await failedOpen()) - open0;
    await report('hasher back', back);
    expect(back.failed).toBe(0);
    // A just-restarted hasher may miss Envoy's 200 ms messageTimeout on a loaded machine: each such request
    // goes on without a hash (failOpen) and may land elsewhere; every other later turn stays.
    expect(back.laterTurns - back.laterOnFirstCluster).toBeLessThanOrEqual(openedBack);
  });

  describe('a backend down', () => {
    const sessions = syntheticConversations(150, 1, 31);
    const sessionTurn = async (model = MODEL) => Promise.all(sessions.map((c) => send(fleet.url(MS), chatBody(c, 0, model), { [SESSION_HEADER]: c.id })));
    const tally = (values: readonly (string | number)[]) => values.reduce<Record<string, number>>((m, v) => ({ ...m, [v]: (m[v] ?? 0) + 1 }), {});
    const statuses = (rs: TurnResult[]) => tally(rs.map((r) => r.status));
    const count = (on: string[], clusters: readonly InferenceCluster[] = fleet.clusters) => ({ ...Object.fromEntries(clusters.map((x) => [x.name, 0])), ...tally(on) });

    it('equal priorities (one Maglev cluster): its keys move to the others, the rest stay, and they come back after the ejection', async () => {
      await fleet.setAffinity(MS, 'Session');
      const before = (await sessionTurn()).map((r) => r.cluster);
      const down = fleet.clusters[1];
      if (down === undefined) throw new Error('three clusters expected');
      await down.stop();
      const during = await sessionTurn();
      const again = await sessionTurn();
      await down.start();
      const onDown = before.filter((c) => c === down.name).length;
      const stayed = before.filter((c, i) => c !== down.name && during[i]?.cluster === c).length;
      say(
        `equal priorities, ${down.name} stopped with ${onDown}/${before.length} keys: statuses right after ${JSON.stringify(statuses(during))}, then ${JSON.stringify(statuses(again))}; ` +
          `its keys now on ${JSON.stringify(Object.fromEntries(fleet.clusters.map((c) => [c.name, before.filter((b, i) => b === down.name && during[i]?.cluster === c.name).length])))}; ` +
          `${stayed}/${before.length - onDown} other keys stayed`,
      );
      expect(onDown).toBeGreaterThan(0);
      expect(during.filter((r) => r.status !== 200)).toEqual([]);
      expect(again.filter((r) => r.status !== 200)).toEqual([]);
      for (const [i, c] of before.entries()) if (c === down.name) expect(during[i]?.cluster).not.toBe(down.name);
      expect(stayed).toBeGreaterThanOrEqual(Math.floor((before.length - onDown) * 0.9));
      const started = Date.now();
      let after: string[] = [];
      while (Date.now() - started < 90_000) {
        after = (await sessionTurn()).map((r) => r.cluster);
        if (after.every((c, i) => c === before[i])) break;
        await new Promise((r) => setTimeout(r, 2000));
      }
      say(`equal priorities, ${down.name} restarted: keys back in ${Math.round((Date.now() - started) / 1000)} s`);
      expect(after).toEqual(before);
    }, 240_000);

    it('priorities 0, 0, 1 over IP Backends: AI Gateway v1.0.0 cannot set them (Envoy Gateway sends those endpoints by EDS), so the priority-1 backend takes keys', async () => {
      const [a, b, c] = fleet.clusters as [InferenceCluster, InferenceCluster, InferenceCluster];
      await applyRoute(MS, MODEL, { [MODEL_SERVICE_LABEL]: MS }, [{ name: a.name, priority: 0 }, { name: b.name, priority: 0 }, { name: c.name, priority: 1 }]);
      await waitServed(MODEL);
      const cluster = `httproute/${ns}/${MS}/rule/0`;
      await waitFor(
        "the HTTPRoute's backend-ref-priority annotation",
        async () => (await tb.kubectlOk(['get', 'httproute', MS, '-n', ns, '-o', 'jsonpath={.metadata.annotations.gateway\\.envoyproxy\\.io/backend-ref-priority}'])).includes(`0:${c.name}:1`),
        30_000,
      );
      // Envoy Gateway's translation and xDS after the route change.
      await new Promise((r) => setTimeout(r, 5000));
      // The hook sees no endpoints on an EDS cluster: it logs so and sets one backend name on the cluster instead of each endpoint's.
      const hook = (fleet.aiGateway?.controller.tail(2000) ?? '').includes(`LoadAssignment is nil, setting cluster-level metadata\t{"cluster_name": "${cluster}"}`);
      const live = localityPriorities(await fleet.dataPlane.configDump(), cluster);
      const keys = count((await sessionTurn()).map((r) => r.cluster));
      say(`priorities 0,0,1 over IP Backends: Envoy's cluster ${cluster} is ${live?.type}, its localities' priorities ${JSON.stringify(live?.priorities)}; extension server logged "LoadAssignment is nil" for it: ${hook}; keys ${JSON.stringify(keys)}`);
      expect(hook).toBe(true);
      expect(live).toEqual({ type: 'EDS', priorities: [0, 0, 0] });
      expect(keys[c.name]).toBeGreaterThan(0);
      await applyRoute(MS, MODEL, { [MODEL_SERVICE_LABEL]: MS });
      await waitServed(MODEL);
    });

    it("priorities 0, 0, 1 over fqdn Backends (Modelplane's shape): the priority-1 backend takes keys only once a priority-0 one is down and ejected", async () => {
      const dns: InferenceCluster[] = [];
      try {
        for (const x of ['a', 'b', 'c']) dns.push(await startInferenceCluster({ name: `dns-${x}`, host: '127.0.0.1', coldMs: COLD_MS, warmMs: WARM_MS }));
        const [a, , c] = dns as [InferenceCluster, InferenceCluster, InferenceCluster];
        // Host infrastructure accepts a one-label hostname; localhost is 127.0.0.1 here, so each cluster is localhost:<its port>.
        await tb.kubectlOk(['apply', '-f', '-'], {
          input: dns
            .flatMap((d) => [
              { apiVersion: 'gateway.envoyproxy.io/v1alpha1', kind: 'Backend', metadata: { name: d.name, namespace: ns }, spec: { endpoints: [{ fqdn: { hostname: 'localhost', port: d.port } }] } },
              aiServiceBackend(ns, d),
            ])
            .map((o) => stringify(o))
            .join('---\n'),
        });
        await applyRoute(DNS_MS, DNS_MODEL, { [MODEL_SERVICE_LABEL]: DNS_MS }, dns.map((d, i) => ({ name: d.name, priority: i === 2 ? 1 : 0 })));
        await waitServed(DNS_MODEL);
        await fleet.setAffinity(DNS_MS, 'Session');
        const cluster = `httproute/${ns}/${DNS_MS}/rule/0`;
        const live = localityPriorities(await fleet.dataPlane.configDump(), cluster);
        // Envoy's outlier-detection and retry counters of the route's cluster.
        const counters = async () => {
          const text = await fleet.dataPlane.stats('outlier_detection\\.ejections_(active|enforced_total)|upstream_rq_retry(_success)?$');
          return Object.fromEntries(text.split('\n').filter((l) => l.startsWith(`cluster.${cluster}.`)).map((l) => [l.slice(l.lastIndexOf('.') + 1, l.indexOf(':')), Number(l.slice(l.indexOf(':') + 1))]));
        };
        const before = (await sessionTurn(DNS_MODEL)).map((r) => r.cluster);
        await a.stop();
        // Passes over the same keys until the stopped backend is ejected and a whole pass needs no retry (the
        // load balancers have dropped it), at most 25 s (the ejection lasts 30 s).
        const passes: Array<{ at: number; turn: TurnResult[]; counters: Record<string, number>; settled: boolean }> = [];
        const stopped = Date.now();
        let retries = (await counters())['upstream_rq_retry'] ?? 0;
        for (;;) {
          const turn = await sessionTurn(DNS_MODEL);
          const now = await counters();
          const settled = turn.every((r) => r.status === 200) && (now['ejections_active'] ?? 0) > 0 && now['upstream_rq_retry'] === retries;
          retries = now['upstream_rq_retry'] ?? 0;
          passes.push({ at: Math.round((Date.now() - stopped) / 100) / 10, turn, counters: now, settled });
          if (settled || Date.now() - stopped > 25_000) break;
          await new Promise((r) => setTimeout(r, 1000));
        }
        await a.start();
        const last = passes[passes.length - 1] as (typeof passes)[number];
        const keysOfA = (turn: TurnResult[]) => count(before.map((x, i) => (x === a.name ? (turn[i]?.cluster ?? '') : undefined)).filter((x): x is string => x !== undefined), dns);
        const othersMoved = before.filter((x, i) => x !== a.name && last.turn[i]?.cluster !== x).length;
        say(
          `priorities 0,0,1 over fqdn Backends: cluster ${live?.type}, its localities' priorities ${JSON.stringify(live?.priorities)}; before ${JSON.stringify(count(before, dns))}; ${a.name} stopped, then: ` +
            passes.map((p) => `at ${p.at} s statuses ${JSON.stringify(statuses(p.turn))}, ${a.name}'s keys on ${JSON.stringify(keysOfA(p.turn))}, counters ${JSON.stringify(p.counters)}`).join('; ') +
            `; at the end ${othersMoved}/${before.filter((x) => x !== a.name).length} keys of the others had moved, all keys on ${JSON.stringify(count(last.turn.map((r) => r.cluster), dns))}`,
        );
        expect(live?.type).not.toBe('EDS');
        expect(live?.priorities).toEqual([0, 0, 1]);
        expect(count(before, dns)[c.name]).toBe(0);
        // Once the stopped backend is ejected and out of the load balancers: every request served at once, none
        // on it, and priority 1 takes load (priority 0 is below Envoy's overprovisioning: 1.4 x its healthy share).
        expect(last.settled).toBe(true);
        expect(keysOfA(last.turn)[a.name]).toBe(0);
        expect(count(last.turn.map((r) => r.cluster), dns)[c.name]).toBeGreaterThan(0);
      } finally {
        await tb.kubectl(['delete', 'aigatewayroute', DNS_MS, '-n', ns, '--ignore-not-found']);
        await tb.kubectl(['delete', 'modelservice', DNS_MS, '-n', ns, '--ignore-not-found']);
        for (const d of dns) await d.close();
      }
    }, 240_000);
  });
});

describe('a second AIGatewayRoute, older than ours, for another model on the same Gateway', () => {
  beforeAll(async () => {
    await applyRoute(OLDER_ROUTE, OLDER_MODEL, {});
    // Envoy Gateway orders routes by creationTimestamp, whole seconds, then by name: within the same
    // second our `llama` would sort before `qwen`. Ours is made again at least a second later.
    const olderCreated = Date.parse(await tb.kubectlOk(['get', 'httproute', OLDER_ROUTE, '-n', ns, '-o', 'jsonpath={.metadata.creationTimestamp}']));
    await waitFor(`a second past ${OLDER_ROUTE}'s creationTimestamp`, async () => Date.now() >= olderCreated + 2_000, 10_000);
    // Ours again, now the newer: AI Gateway deletes its HTTPRoute with it (ownerReference), then makes it anew.
    await tb.kubectlOk(['delete', 'aigatewayroute', MS, '-n', ns]);
    await waitFor(`HTTPRoute ${ns}/${MS} gone`, async () => (await tb.kubectl(['get', 'httproute', MS, '-n', ns])).code !== 0, 60_000);
    await applyRoute(MS, MODEL, { [MODEL_SERVICE_LABEL]: MS });
    await waitServed(OLDER_MODEL);
    await waitServed(MODEL);
  }, 300_000);

  it("the Gateway hasher keys the newer route's requests: the older route's catch-all is the first match, and it enables the Gateway-targeted filter", async () => {
    await fleet.setAffinity(MS, 'PrefixHash', {}, { gatewayHasher: true });
    const { first, ours } = await attachment('older route first');
    const gatewayFilter = `envoyextensionpolicy/${GATEWAY_NAMESPACE}/${GATEWAY_HASHER}/`;
    const [own0, gateway0] = [await hasherStreams(), await streamsOf(GATEWAY_HASHER)];
    const results = await conversations(41, 'PrefixHash');
    const [own, gateway] = [(await hasherStreams()) - own0, (await streamsOf(GATEWAY_HASHER)) - gateway0];
    const l = locality(results);
    await report('PrefixHash, newer route, Gateway hasher', l);
    say(`newer route: for ${l.requests} requests the Gateway hasher opened ${gateway} streams, the route-level one ${own}; its args ${JSON.stringify(fleet.hashers.pod(GATEWAY_HASHER)?.args)}`);
    // The other model has no ModelService: the Gateway hasher does not key it.
    const other = await Promise.all(syntheticConversations(30, 1, 46).map((c) => send(fleet.url(MS), chatBody(c, 0, OLDER_MODEL))));
    say(`newer route: the older model's requests reach a backend with x-prompt-hash: ${other.filter((r) => isHash(r.promptHash)).length}/${other.length}`);
    // A client that sends the model header itself matches the model's rule first, whose route-level filter is the ModelService's own hasher.
    const direct = await Promise.all(syntheticConversations(30, 1, 42).map((c) => send(fleet.url(MS), chatBody(c, 0, MODEL), { [MODEL_HEADER]: MODEL })));
    say(`newer route, client-sent ${MODEL_HEADER}: ${direct.filter((r) => isHash(r.promptHash)).length}/${direct.length} hashed`);
    const openings = syntheticConversations(60, 1, 47);
    const honest = await Promise.all(openings.map((c) => send(fleet.url(MS), chatBody(c, 0, MODEL))));
    const spoofed = await Promise.all(openings.map((c) => send(fleet.url(MS), chatBody(c, 0, MODEL), { 'x-prompt-hash': '0000000000000000' })));
    expect(first?.name.startsWith(`httproute/${ns}/${OLDER_ROUTE}/rule/1/`)).toBe(true);
    expect(first?.enables.some((f) => ours.includes(f))).toBe(false);
    expect(first?.enables.some((f) => f.includes(gatewayFilter))).toBe(true);
    expect(l.failed).toBe(0);
    expect(l.laterOnFirstCluster).toBe(l.laterTurns);
    for (const turn of results.flat()) expect(turn.promptHash).toMatch(/^[0-9a-f]{16}$/);
    expect(gateway).toBeGreaterThanOrEqual(l.requests);
    expect(own).toBe(0);
    expect(other.every((r) => r.status === 200 && r.promptHash === '')).toBe(true);
    expect(direct.every((r) => isHash(r.promptHash))).toBe(true);
    expect(spoofed.map((r) => [r.status, r.cluster, r.promptHash])).toEqual(honest.map((r) => [200, r.cluster, r.promptHash]));
  });

  it('Session needs no filter: it keeps every later turn on turn 1 backend there too', async () => {
    await fleet.setAffinity(MS, 'Session');
    const l = locality(await conversations(44, 'Session'));
    await report('Session, newer route', l);
    expect(l.failed).toBe(0);
    expect(l.laterOnFirstCluster).toBe(l.laterTurns);
  });
});

describe("Modelplane's shape: an AIGatewayRoute per ModelService in modelplane-system, matching x-ai-eg-model <namespace>/<name>", () => {
  const [OLDER, NEWER] = MODELPLANE_SHAPED;
  const routeName = modelplaneRoute;
  const model = modelplaneModel;

  beforeAll(async () => {
    // Only Modelplane's routes on the Gateway: the older ones of this file go.
    for (const r of [OLDER_ROUTE, MS]) await tb.kubectlOk(['delete', 'aigatewayroute', r, '-n', ns, '--ignore-not-found']);
    await tb.kubectlOk(['apply', '-f', '-'], {
      input: fleet.clusters
        .flatMap((c) => [
          { apiVersion: 'gateway.envoyproxy.io/v1alpha1', kind: 'Backend', metadata: { name: `${ns}-${c.name}`, namespace: GATEWAY_NAMESPACE }, spec: { endpoints: [{ ip: { address: c.host, port: c.port } }] } },
          aiServiceBackend(GATEWAY_NAMESPACE, { name: `${ns}-${c.name}` }),
        ])
        .map((o) => stringify(o))
        .join('---\n'),
    });
    for (const ms of [OLDER, NEWER]) {
      await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(aiGatewayRoute(GATEWAY_NAMESPACE, routeName(ms), model(ms), fleet.clusters.map((c) => ({ name: `${ns}-${c.name}` })))) });
      await waitFor(`AIGatewayRoute ${routeName(ms)} Accepted`, async () => (await tb.kubectl(['get', 'aigatewayroute', routeName(ms), '-n', GATEWAY_NAMESPACE, '-o', 'jsonpath={.status.conditions[?(@.type=="Accepted")].status}'])).stdout === 'True', 60_000);
      await waitServed(model(ms));
    }
  }, 300_000);

  afterAll(async () => {
    for (const ms of [OLDER, NEWER]) await tb.kubectl(['delete', 'aigatewayroute', routeName(ms), '-n', GATEWAY_NAMESPACE, '--ignore-not-found']);
  });

  it("both PrefixHash: the BackendTrafficPolicies sit beside the routes, and the Gateway hasher keys each model's requests with that model's settings", async () => {
    await fleet.setAffinity(OLDER, 'PrefixHash', {}, { gatewayHasher: true });
    // Settings of its own: 64 bytes of the opening give every turn of this trace another key than the default 1024.
    await fleet.setAffinity(NEWER, 'PrefixHash', { prefixBytes: 64 }, { gatewayHasher: true });
    const policies = await tb.kubectlOk(['get', 'backendtrafficpolicy,envoyextensionpolicy', '-n', GATEWAY_NAMESPACE, '-l', `${MODEL_SERVICE_LABEL}=${NEWER}`, '-o', 'name']);
    say(`Modelplane's shape: policies of ${NEWER} in ${GATEWAY_NAMESPACE}: ${policies.trim().replace(/\n/g, ', ')}; Gateway hasher args ${JSON.stringify(fleet.hashers.pod(GATEWAY_HASHER)?.args)}`);
    const dump = await fleet.dataPlane.configDump();
    const first = firstMatch(liveRoutes(dump), PATH, {});
    say(`Modelplane's shape: first match ${first?.name}, enabling ${JSON.stringify(first?.enables)}`);
    const [older0, newer0, gateway0] = [await streamsOf(generatedNames(OLDER).prefixHash), await streamsOf(generatedNames(NEWER).prefixHash), await streamsOf(GATEWAY_HASHER)];

    const trace = syntheticConversations(CONVERSATIONS, TURNS, 51);
    const results = await conversations(51, 'PrefixHash', model(NEWER));
    const streams = {
      older: (await streamsOf(generatedNames(OLDER).prefixHash)) - older0,
      newer: (await streamsOf(generatedNames(NEWER).prefixHash)) - newer0,
      gateway: (await streamsOf(GATEWAY_HASHER)) - gateway0,
    };
    const l = locality(results);
    await report(`Modelplane's shape, ${NEWER} (newer route), both PrefixHash`, l);
    // The hash each turn got, against the one NEWER's settings give for the body sent, and the one the default settings would.
    const hash64 = await loadXxh64();
    const sent = trace.map((c, i) => (results[i] ?? []).map((_, t) => Buffer.from(chatBody(c, t, model(NEWER)))));
    const ownSettings = sent.flatMap((turns, i) => turns.filter((b, t) => promptHash(b, 64, hash64, 'Conversation') === results[i]?.[t]?.promptHash)).length;
    const defaults = sent.flatMap((turns, i) => turns.filter((b, t) => promptHash(b, 1024, hash64, 'Conversation') === results[i]?.[t]?.promptHash)).length;
    say(
      `Modelplane's shape: for ${l.requests} requests of ${NEWER}, streams opened ${JSON.stringify(streams)}; ` +
        `hashes as ${NEWER}'s settings (Conversation, 64) give: ${ownSettings}/${l.requests}, as the defaults (Conversation, 1024) give: ${defaults}/${l.requests}`,
    );
    expect(policies.trim().split('\n')).toEqual([`backendtrafficpolicy.gateway.envoyproxy.io/${crossNamespaceNames(ns, NEWER).backendTrafficPolicy}`]);
    expect(fleet.hashers.pod(GATEWAY_HASHER)?.args.filter((a) => a.includes('='))).toEqual([`${model(OLDER)}=Conversation:1024`, `${model(NEWER)}=Conversation:64`].sort());
    expect(first?.name.startsWith(`httproute/${GATEWAY_NAMESPACE}/${routeName(OLDER)}/rule/1/`)).toBe(true);
    expect(l.failed).toBe(0);
    expect(streams).toMatchObject({ older: 0, newer: 0 });
    expect(streams.gateway).toBeGreaterThanOrEqual(l.requests);
    expect({ ownSettings, defaults }).toEqual({ ownSettings: l.requests, defaults: 0 });
    expect(l.laterOnFirstCluster).toBe(l.laterTurns);

    // The oldest model on Session (it leaves the Gateway hasher): the newer one keeps every turn.
    await fleet.setAffinity(OLDER, 'Session');
    await waitFor(`${model(OLDER)} out of the Gateway hasher`, async () => !(fleet.hashers.pod(GATEWAY_HASHER)?.args.some((a) => a.startsWith(`${model(OLDER)}=`)) ?? true), 60_000);
    // Its new process (a new ReplicaSet's pod) on the same address: Envoy reconnects on the next request.
    await waitFor(`requests of ${NEWER} hashed by the new Gateway hasher`, async () => isHash((await send(fleet.url(NEWER), chatBody(syntheticConversations(1, 1, Date.now())[0] as Conversation, 0, model(NEWER)))).promptHash), 60_000);
    const still = locality(await conversations(52, 'PrefixHash', model(NEWER)));
    await report(`Modelplane's shape, ${NEWER} PrefixHash, ${OLDER} Session`, still);
    expect(still.failed).toBe(0);
    expect(still.laterOnFirstCluster).toBe(still.laterTurns);
  });
  it("a later turn over 128 KiB in one message (AI Gateway's 50Mi connection buffer): keyed from its first bytes, on turn 1's backend", async () => {
    await fleet.setAffinity(NEWER, 'PrefixHash', {}, { gatewayHasher: true });
    // AI Gateway's examples set bufferLimit 50Mi, because its processor buffers whole bodies; our BufferedPartial filter then gets the whole body in one message.
    const policy = clientTrafficPolicy() as ReturnType<typeof clientTrafficPolicy> & { spec: Record<string, unknown> };
    const buffered = { ...policy, spec: { ...policy.spec, connection: { bufferLimit: '50Mi' } } };
    // Active listeners only: a replaced listener stays in the dump while it drains.
    const limit = async () => {
      const dump = (await fleet.dataPlane.configDump()) as { configs?: Array<Record<string, unknown>> };
      const listeners = dump.configs?.find((c) => String(c['@type']).endsWith('ListenersConfigDump'))?.dynamic_listeners as Array<{ active_state?: unknown }> | undefined;
      return JSON.stringify((listeners ?? []).map((l) => l.active_state)).includes('"per_connection_buffer_limit_bytes":52428800');
    };
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(buffered) });
    try {
      await waitFor("Envoy's listener with the 50Mi buffer limit", limit, 90_000);
      resetConnections();
      const history = 'x'.repeat(300 * 1024);
      const longBody = (c: Conversation, t: number) => {
        const body = JSON.parse(chatBody(c, t, model(NEWER))) as { messages: Array<{ role: string; content: string }> };
        if (t > 0) body.messages.splice(2, 0, { role: 'assistant', content: history }, { role: 'user', content: 'go on' });
        return JSON.stringify(body);
      };
      const trace = syntheticConversations(30, 3, 53);
      const results = await runConversations(trace, { url: fleet.url(NEWER), body: longBody, concurrency: 8 });
      const l = locality(results);
      await report(`Modelplane's shape, ${NEWER}, later turns of ${Math.round(Buffer.byteLength(longBody(trace[0] as Conversation, 1)) / 1024)} KiB, 50Mi buffer`, l);
      const hash64 = await loadXxh64();
      const expected = trace.map((c, i) => (results[i] ?? []).map((_, t) => promptHash(Buffer.from(longBody(c, t)), 1024, hash64, 'Conversation')));
      const matching = results.flatMap((turns, i) => turns.filter((turn, t) => turn.promptHash === expected[i]?.[t])).length;
      const statuses: Record<string, number> = {};
      for (const r of results.flat()) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      say(`long turns: ${matching}/${l.requests} hashes as the whole body's Conversation key gives; statuses ${JSON.stringify(statuses)}`);
      expect(results.flat().map((r) => r.status)).toEqual(results.flat().map(() => 200));
      expect(matching).toBe(l.requests);
      expect(l.laterOnFirstCluster).toBe(l.laterTurns);
    } finally {
      await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(policy) });
      await waitFor("Envoy's listener back to the default buffer limit", async () => !(await limit()), 90_000);
      resetConnections();
    }
  });
});
