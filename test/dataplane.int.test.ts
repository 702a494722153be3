// Real requests through a real Envoy running Envoy Gateway's own
// configuration (SPEC §6): the objects come from `kubectl apply` through our
// webhook and reconciler, Envoy Gateway v1.9.0's controller translates them,
// a host Envoy 1.39 carries the requests, and inference clusters played by
// local servers say who served. Both route shapes: one Maglev cluster
// (llama) and weighted_clusters from per-backendRef filters (kimi).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadXxh64, promptHash } from '../ext-proc/handlers.ts';
import { generatedNames } from '../src/naming.ts';
import { type Locality, type TurnResult, chatBody, locality, runConversations, send, syntheticConversations } from './testbed/conversations.ts';
import { type AffinityMode, type FleetBed, SESSION_HEADER, startFleetBed } from './testbed/fleet-bed.ts';
import type { RouteShapeName } from './testbed/fleet.ts';
import { createNamespace, testbed } from './testbed/testbed.ts';

// The seed's 800 ms cold and 150 ms warm time to first token, scaled down 100x.
const COLD_MS = 8;
const WARM_MS = 1.5;
const ROUTES: Record<string, RouteShapeName> = { llama: 'one-cluster', kimi: 'weighted' };
const SHAPES = Object.entries(ROUTES).map(([modelService, shape]) => ({ modelService, shape }));
const CONVERSATIONS = 200;
const TURNS = 5;

let fleet: FleetBed;

async function report(what: string, l: Locality): Promise<void> {
  // Fail-open events explain a request without a hash: the hasher did not answer within messageTimeout.
  const extProc = (await fleet.dataPlane.stats('ext_proc\\.(message_timeouts|failure_mode_allowed|streams_failed)')).trim().replace(/\n/g, '; ');
  process.stderr.write(
    `[data-plane] ${what}: ${l.laterOnFirstCluster}/${l.laterTurns} later turns on turn 1's cluster, warm ${(l.laterWarm * 100).toFixed(1)}%, ` +
      `split ${JSON.stringify(l.split)}, failed ${l.failed}/${l.requests}, mean ${l.meanMs.toFixed(1)} ms, p99 ${l.p99Ms.toFixed(1)} ms; Envoy ext_proc ${extProc || 'none'}\n`,
  );
}

/** Requests Envoy let through without the hasher's answer (failOpen), over the whole run so far. */
async function failOpens(): Promise<number> {
  const text = await fleet.dataPlane.stats('ext_proc\\.failure_mode_allowed');
  return [...text.matchAll(/: (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/**
 * PrefixHash locality as the gateway delivers it. A request reaches a cluster without a hash only when
 * Envoy failed open past the hasher (an answer slower than messageTimeout: a starved machine); each one
 * is accounted for by Envoy's counter, and rare. Every answered turn follows its hash.
 */
async function expectHashedLocality(results: TurnResult[][], l: Locality, failOpensBefore: number): Promise<void> {
  const unhashed = results.flat().filter((turn) => turn.promptHash === '').length;
  expect(unhashed).toBe((await failOpens()) - failOpensBefore);
  expect(unhashed).toBeLessThanOrEqual(Math.ceil(l.requests * 0.02));
  // What the gateway does with the hasher's answer: one hash, one cluster...
  const clusterOfHash = new Map<string, Set<string>>();
  for (const turn of results.flat()) {
    if (turn.promptHash === '') continue;
    expect(turn.promptHash).toMatch(/^[0-9a-f]{16}$/);
    clusterOfHash.set(turn.promptHash, (clusterOfHash.get(turn.promptHash) ?? new Set()).add(turn.cluster));
  }
  expect([...clusterOfHash.values()].filter((clusters) => clusters.size > 1)).toEqual([]);
  // ...and every turn the hasher answered reaches the cluster of the conversation's first answered turn.
  const hashed = results.map((turns) => turns.filter((turn) => turn.promptHash !== ''));
  const moved = hashed.filter((turns) => turns.some((turn) => turn.cluster !== turns[0]?.cluster)).length;
  expect(moved).toBe(0);
  if (unhashed === 0) expect(l.laterOnFirstCluster).toBe(l.laterTurns);
}

function headersFor(mode: AffinityMode) {
  return mode === 'Session' ? (c: { id: string }) => ({ [SESSION_HEADER]: c.id }) : undefined;
}

beforeAll(async () => {
  const tb = testbed();
  const namespace = await createNamespace(tb, 'fleet');
  fleet = await startFleetBed({ kubectl: tb, kubeconfig: tb.kubeconfig, dir: tb.dir, namespace, clusters: 3, coldMs: COLD_MS, warmMs: WARM_MS, routes: ROUTES });
}, 600_000);

afterAll(async () => {
  await fleet?.stop();
});

describe.each(SHAPES)('through Envoy on the $shape route ($modelService)', ({ modelService, shape }) => {
  it.each(['Session', 'PrefixHash'] as const)(
    '%s keeps every later turn of 200 five-turn conversations on turn 1 cluster and spreads the conversations',
    async (mode) => {
      await fleet.setAffinity(modelService, mode);
      const failOpensBefore = await failOpens();
      const results = await runConversations(syntheticConversations(CONVERSATIONS, TURNS, 11), { url: fleet.url(modelService), headers: headersFor(mode), concurrency: 16 });
      const l = locality(results);
      await report(`${mode} on ${shape}`, l);
      expect(l.failed).toBe(0);
      if (mode === 'Session') expect(l.laterOnFirstCluster).toBe(l.laterTurns);
      if (mode === 'PrefixHash') await expectHashedLocality(results, l, failOpensBefore);
      // Spread: every cluster holds a fair share of the conversations (1/3 expected).
      expect(Object.keys(l.split).sort()).toEqual(fleet.clusters.map((c) => c.name).sort());
      for (const count of Object.values(l.split)) expect(count).toBeGreaterThan(CONVERSATIONS / 3 / 2);
    },
  );

  it('None spreads the turns: about 1/N of later turns land on turn 1 cluster', async () => {
    await fleet.setAffinity(modelService, 'None');
    const l = locality(await runConversations(syntheticConversations(CONVERSATIONS, TURNS, 12), { url: fleet.url(modelService), concurrency: 16 }));
    await report(`None on ${shape}`, l);
    expect(l.failed).toBe(0);
    const share = l.laterOnFirstCluster / l.laterTurns;
    expect(share).toBeGreaterThan(0.15);
    expect(share).toBeLessThan(0.6);
  });

  it('a 40 KB body reaches the hasher whole, past the 32 KiB buffer: its x-prompt-hash is the whole body\'s key, not the first 32 KiB\'s', async () => {
    await fleet.setAffinity(modelService, 'PrefixHash');
    const hash64 = await loadXxh64();
    // The system prompt comes after 40 KB of messages: only a key of the whole body has it.
    const systemAfter = Buffer.from(
      JSON.stringify({
        messages: [{ role: 'user', content: 'first question' }, { role: 'assistant', content: 'y'.repeat(40_000) }, { role: 'user', content: 'next' }],
        system: 'a system prompt placed after the messages',
        max_tokens: 64,
      }),
    );
    const whole = promptHash(systemAfter, 1024, hash64, 'Conversation');
    expect(whole).not.toBe(promptHash(systemAfter.subarray(0, 32_768), 1024, hash64, 'Conversation'));
    // Sent again only when no hash came (Envoy failed open past a starved hasher, or the request timed out).
    let delivered = await send(fleet.url(modelService), systemAfter.toString());
    for (let retry = 0; retry < 3 && delivered.promptHash === ''; retry++) delivered = await send(fleet.url(modelService), systemAfter.toString());
    expect({ status: delivered.status, hash: delivered.promptHash }).toEqual({ status: 200, hash: whole });
  });

  it('a client-sent x-prompt-hash (any case, repeated, empty) never moves a request off the cluster its body hashes to', async () => {
    await fleet.setAffinity(modelService, 'PrefixHash');
    const conversations = syntheticConversations(60, 1, 13);
    const honest = await Promise.all(conversations.map((c) => send(fleet.url(modelService), chatBody(c, 0))));
    const spoofs: Array<Record<string, string | string[]>> = [
      { 'x-prompt-hash': '0000000000000000' },
      { 'X-PROMPT-HASH': 'ffffffffffffffff' },
      { 'X-Prompt-Hash': '' },
      { 'x-prompt-hash': 'aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb' },
      { 'x-prompt-hash': ['cccccccccccccccc', 'dddddddddddddddd'] },
    ];
    for (const spoof of spoofs) {
      const spoofed = await Promise.all(conversations.map((c) => send(fleet.url(modelService), chatBody(c, 0), spoof)));
      spoofed.forEach((r, i) => {
        const expected = honest[i] as TurnResult;
        expect({ spoof, status: r.status, cluster: r.cluster, hash: r.promptHash }).toEqual({ spoof, status: 200, cluster: expected.cluster, hash: expected.promptHash });
      });
    }
    // A bodyless request gets no hash: the spoofed value is removed, so one value cannot pin them all to one cluster.
    const bodyless = await Promise.all(Array.from({ length: 60 }, () => send(fleet.url(modelService), undefined, { 'x-prompt-hash': '0000000000000000' })));
    for (const r of bodyless) expect({ status: r.status, hash: r.promptHash }).toEqual({ status: 200, hash: '' });
    expect(new Set(bodyless.map((r) => r.cluster)).size).toBeGreaterThan(1);
  });
});

describe('an inference cluster down', () => {
  const sessions = syntheticConversations(150, 1, 31);
  const sessionTurn = (url: string) => Promise.all(sessions.map((c) => send(url, chatBody(c, 0), { [SESSION_HEADER]: c.id })));
  const onCluster = (results: TurnResult[]) => results.map((r) => r.cluster);

  it('on one Maglev cluster: its keys move to the others with no failed request, and come back after the ejection', async () => {
    await fleet.setAffinity('llama', 'Session');
    const url = fleet.url('llama');
    const before = onCluster(await sessionTurn(url));
    const down = fleet.clusters[1];
    if (down === undefined) throw new Error('three clusters expected');
    await down.stop();
    const during = await sessionTurn(url);
    const again = await sessionTurn(url);
    await down.start();
    const movedOff = before.filter((c) => c === down.name).length;
    const stayed = before.filter((c, i) => c !== down.name && during[i]?.cluster === c).length;
    process.stderr.write(
      `[data-plane] ${down.name} stopped: ${during.filter((r) => r.status !== 200).length} failed right after, ${again.filter((r) => r.status !== 200).length} failed after the ejection; ` +
        `${movedOff} keys moved off it, ${stayed}/${before.length - movedOff} others stayed\n`,
    );
    expect(movedOff).toBeGreaterThan(0);
    expect(during.map((r) => r.status).filter((s) => s !== 200)).toEqual([]);
    expect(again.map((r) => r.status).filter((s) => s !== 200)).toEqual([]);
    // Its keys went elsewhere; the others' keys stayed (Maglev moves few others when a host leaves the table).
    for (const [i, c] of before.entries()) if (c === down.name) expect(during[i]?.cluster).not.toBe(down.name);
    expect(stayed).toBeGreaterThanOrEqual(Math.floor((before.length - movedOff) * 0.9));
    // Back after the ejection (baseEjectionTime 30s): every key on its first cluster again.
    const started = Date.now();
    let after: string[] = [];
    while (Date.now() - started < 90_000) {
      after = onCluster(await sessionTurn(url));
      if (after.every((c, i) => c === before[i])) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    process.stderr.write(`[data-plane] ${down.name} restarted: keys back in ${Math.round((Date.now() - started) / 1000)} s\n`);
    expect(after).toEqual(before);
  }, 180_000);

  it('on weighted_clusters: the hash keeps picking the stopped cluster, and its requests fail (what FailoverLimited says)', async () => {
    await fleet.setAffinity('kimi', 'Session');
    const url = fleet.url('kimi');
    const before = onCluster(await sessionTurn(url));
    const down = fleet.clusters[2];
    if (down === undefined) throw new Error('three clusters expected');
    await down.stop();
    const during = await sessionTurn(url);
    const later = (await new Promise((r) => setTimeout(r, 6000)), await sessionTurn(url));
    await down.start();
    const onDown = before.map((c, i) => (c === down.name ? i : -1)).filter((i) => i >= 0);
    const statuses = (results: TurnResult[]) => {
      const counts: Record<string, number> = {};
      for (const i of onDown) counts[String(results[i]?.status)] = (counts[String(results[i]?.status)] ?? 0) + 1;
      return counts;
    };
    process.stderr.write(
      `[data-plane] weighted: ${down.name} stopped with ${onDown.length} keys on it; their statuses right after ${JSON.stringify(statuses(during))}, ` +
        `6 s later ${JSON.stringify(statuses(later))}; served elsewhere: ${onDown.filter((i) => during[i]?.status === 200).length}\n`,
    );
    expect(onDown.length).toBeGreaterThan(0);
    // The keys of the stopped cluster do not move: every one of its requests fails, before and after outlier detection.
    for (const i of onDown) {
      expect(during[i]?.status).toBe(503);
      expect(later[i]?.status).toBe(503);
    }
    // The other clusters' keys are untouched.
    for (const [i, c] of before.entries()) if (c !== down.name) expect({ status: during[i]?.status, cluster: during[i]?.cluster }).toEqual({ status: 200, cluster: c });
  }, 120_000);
});

describe('scale', () => {
  it('adding a third cluster moves about 1/3 of the keys, all to the new cluster; the rest stay', async () => {
    await fleet.setAffinity('llama', 'Session');
    const url = fleet.url('llama');
    const keys = syntheticConversations(300, 1, 41);
    const turn = async () => (await Promise.all(keys.map((c) => send(url, chatBody(c, 0), { [SESSION_HEADER]: c.id })))).map((r) => r.cluster);
    const [a, b, c] = fleet.clusters.map((x) => x.name) as [string, string, string];
    await fleet.setRouteClusters('llama', [a, b]);
    const two = await turn();
    await fleet.setRouteClusters('llama', [a, b, c]);
    const three = await turn();
    const toNew = three.filter((x, i) => x !== two[i] && x === c).length;
    const elsewhere = three.filter((x, i) => x !== two[i] && x !== c).length;
    process.stderr.write(`[data-plane] 2 -> 3 clusters: ${toNew}/${keys.length} keys moved to ${c}, ${elsewhere} moved between the old two\n`);
    expect(toNew / keys.length).toBeGreaterThan(0.2);
    expect(toNew / keys.length).toBeLessThan(0.45);
    expect(elsewhere / keys.length).toBeLessThan(0.05);
  }, 180_000);
});

describe('fail open: the hasher down', () => {
  const modelService = 'kimi';
  const hasher = generatedNames(modelService).prefixHash;

  it('SIGKILLed mid-run, then hung past messageTimeout: every request gets a 200, and affinity returns with the hasher', async () => {
    await fleet.setAffinity(modelService, 'PrefixHash');
    // Killed in the middle of a run.
    const run = runConversations(syntheticConversations(60, TURNS, 21), { url: fleet.url(modelService), concurrency: 8 });
    await new Promise((r) => setTimeout(r, 300));
    await fleet.hashers.kill(hasher);
    const killed = locality(await run);
    await report('hasher SIGKILLed mid-run', killed);
    expect(killed.failed).toBe(0);
    expect(killed.requests).toBe(60 * TURNS);

    // Hung: connections stay open, nothing answers; Envoy gives up after messageTimeout (200 ms) and goes on.
    await fleet.hashers.restart(hasher);
    fleet.hashers.hang(hasher);
    const hung = locality(await runConversations(syntheticConversations(20, 3, 22), { url: fleet.url(modelService), concurrency: 8 }));
    await report('hasher hung (SIGSTOP)', hung);
    expect(hung.failed).toBe(0);
    expect(hung.meanMs).toBeGreaterThan(150);

    // Hung, and clients send their own x-prompt-hash: Envoy fails open past the hasher, but the
    // Gateway's ClientTrafficPolicy removed the header before routing, so no client chose its cluster.
    const url = fleet.url(modelService);
    const bodies = syntheticConversations(20, 1, 24).map((c) => chatBody(c, 0));
    const spoofWhileHung = () => Promise.all(bodies.map((b) => send(url, b, { 'x-prompt-hash': 'ffffffffffffffff' })));
    for (const r of await spoofWhileHung()) expect({ status: r.status, hash: r.promptHash }).toEqual({ status: 200, hash: '' });
    // Without that policy the client's header reaches the router whenever the hasher is down: it steers.
    await fleet.withoutClientTrafficPolicy(async () => {
      const steered = await spoofWhileHung();
      process.stderr.write(`[data-plane] hasher hung, no ClientTrafficPolicy: ${steered.filter((r) => r.promptHash === 'ffffffffffffffff').length}/${steered.length} requests reached a cluster with the client's x-prompt-hash\n`);
      for (const r of steered) expect({ status: r.status, hash: r.promptHash }).toEqual({ status: 200, hash: 'ffffffffffffffff' });
    });

    fleet.hashers.resume(hasher);
    await fleet.hashers.restart(hasher);
    await fleet.setAffinity(modelService, 'PrefixHash');
    const failOpensBefore = await failOpens();
    const backResults = await runConversations(syntheticConversations(100, TURNS, 23), { url: fleet.url(modelService), concurrency: 16 });
    const back = locality(backResults);
    await report('hasher back', back);
    expect(back.failed).toBe(0);
    await expectHashedLocality(backResults, back, failOpensBefore);
  });
});
