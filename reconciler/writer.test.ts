// The writer against a fake API server over real HTTPS: the requests it sends
// for each kind of write, and what it does when the server answers 429.
import { mkdtempSync, readFileSync } from 'node:fs';
import { type IncomingMessage, type ServerResponse } from 'node:http';
import { type Server, createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { KubeObject } from '../src/model-service.ts';
import { render } from '../src/render.ts';
import { modelService } from '../test/fixtures/model-service.ts';
import { makeCa, makeLeaf } from '../test/testbed/pki.ts';
import { KubeApiError, KubeClient, parseRetryAfter } from './kube.ts';
import { type Lease, type LeaseDecision, nextLease } from './lease.ts';
import { DEFAULT_THROTTLE, Writer, nextConcurrency, throttleDelay } from './writer.ts';

interface Seen {
  method: string;
  path: string;
  contentType: string | undefined;
  body: unknown;
}
type Answer = { status: number; body?: unknown; retryAfter?: string };
/**
 * Requests the fake server held at once, at most. With `gate` set, answers
 * wait until that many requests are in flight (or 3 s pass), so a test sees
 * the writer's concurrency, not the machine's speed; otherwise they wait `holdMs`.
 */
let maxInFlight = 0;
let inFlight = 0;
let holdMs = 0;
let gate = 0;
const held: (() => void)[] = [];

let server: Server;
let client: KubeClient;
const seen: Seen[] = [];
/** Answers in turn; when they run out, 200 with an empty object. */
let answers: Answer[] = [];

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'writer-test-'));
  const ca = makeCa(dir, 'ca', 'writer-test-ca');
  const leaf = makeLeaf(dir, 'tls', ca, { commonName: 'fake-apiserver', ipAddresses: ['127.0.0.1'], usage: 'server' });
  server = createServer({ cert: leaf.certPem, key: readFileSync(leaf.keyFile) }, (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    req.on('end', () => {
      if (gate === 0) return void setTimeout(() => answer(), holdMs);
      held.push(answer);
      if (inFlight >= gate) for (const release of held.splice(0)) release();
      else setTimeout(() => held.includes(answer) && (held.splice(held.indexOf(answer), 1), answer()), 3000);
    });
    const answer = () => {
      inFlight--;
      const text = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', path: req.url ?? '', contentType: req.headers['content-type'], body: text ? JSON.parse(text) : undefined });
      const next = answers.shift() ?? { status: 200, body: {} };
      res.writeHead(next.status, { 'content-type': 'application/json', ...(next.retryAfter ? { 'retry-after': next.retryAfter } : {}) });
      res.end(JSON.stringify(next.body ?? { kind: 'Status', reason: next.status === 429 ? 'TooManyRequests' : 'Failure', message: `fake ${next.status}` }));
    };
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  client = new KubeClient({ server: new URL(`https://127.0.0.1:${port}`), source: 'test', authorize: async (o) => void (o.ca = ca.certPem) });
});

afterAll(async () => {
  client.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  seen.length = 0;
  answers = [];
  maxInFlight = 0;
  holdMs = 0;
  gate = 0;
});

/** A writer whose waits are recorded instead of slept, with its log lines kept. */
function writer(options: { sleep?: (ms: number) => Promise<void> } = {}) {
  const sleeps: number[] = [];
  const logs: { msg: string; delayMs?: number; attempt?: number }[] = [];
  const stream = new Writable({ write: (line: Buffer, _e, done) => (logs.push(JSON.parse(line.toString())), done()) });
  let clock = 1_000_000;
  const w = new Writer(client, {
    logger: pino({ level: 'debug' }, stream),
    instance: 'test-pod',
    now: () => clock,
    sleep:
      options.sleep ??
      (async (ms) => {
        sleeps.push(ms);
        clock += ms;
      }),
  });
  return { w, sleeps, logs };
}

const ms = modelService('kimi', { type: 'Session', sessionHeader: 'X-Session-ID' }, { uid: 'uid-1' });
const [policy] = render(ms, { extProcImage: 'x' }).objects as [KubeObject];

describe('Writer requests', () => {
  it('applies server-side with our field manager, forcing ownership back (drift repair)', async () => {
    await writer().w.apply('ml/kimi', policy);
    expect(seen).toEqual([
      {
        method: 'PATCH',
        path: '/apis/gateway.envoyproxy.io/v1alpha1/namespaces/ml/backendtrafficpolicies/kimi-affinity?fieldManager=modelplane-affinity&force=true',
        contentType: 'application/apply-patch+yaml',
        body: policy,
      },
    ]);
  });

  it('deletes with the uid as a precondition, and takes 404 and 409 as already gone', async () => {
    const { w } = writer();
    const live = { ...policy, metadata: { ...policy.metadata, uid: 'uid-btp' } };
    expect(await w.delete('ml/kimi', live)).toBe('deleted');
    expect(seen[0]).toMatchObject({ method: 'DELETE', body: { kind: 'DeleteOptions', preconditions: { uid: 'uid-btp' }, propagationPolicy: 'Background' } });
    answers = [{ status: 404 }, { status: 409 }];
    expect(await w.delete('ml/kimi', live)).toBe('gone');
    expect(await w.delete('ml/kimi', live)).toBe('gone');
  });

  it('writes AffinityReady to the status subresource with server-side apply, only our condition', async () => {
    const condition = { type: 'AffinityReady', status: 'True' as const, reason: 'Applied', message: 'm', lastTransitionTime: '2026-01-01T00:00:00Z' };
    await writer().w.status(ms, condition);
    expect(seen[0]).toMatchObject({
      method: 'PATCH',
      path: '/apis/modelplane.ai/v1alpha1/namespaces/ml/modelservices/kimi/status?fieldManager=modelplane-affinity&force=true',
      body: { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'kimi', namespace: 'ml' }, status: { conditions: [condition] } },
    });
  });

  it('records an Event about the ModelService, and only logs when the API server refuses it', async () => {
    const { w, logs } = writer();
    await w.event(ms, { type: 'Warning', reason: 'ObjectConflict', message: 'x'.repeat(2000) }, new Date('2026-01-02T03:04:05.678Z'));
    expect(seen[0]?.path).toBe('/api/v1/namespaces/ml/events?fieldManager=modelplane-affinity');
    expect(seen[0]?.body).toMatchObject({
      metadata: { generateName: 'kimi.', namespace: 'ml' },
      involvedObject: { kind: 'ModelService', name: 'kimi', uid: 'uid-1' },
      type: 'Warning',
      reason: 'ObjectConflict',
      reportingInstance: 'test-pod',
      firstTimestamp: '2026-01-02T03:04:05Z',
    });
    expect((seen[0]?.body as { message: string }).message).toHaveLength(1024);
    answers = [{ status: 403 }];
    await expect(w.event(ms, { type: 'Normal', reason: 'Applied', message: 'm' })).resolves.toBeUndefined();
    expect(logs.map((l) => l.msg)).toContain('could not record event');
  });

  it('creates a Lease with POST and replaces it with PUT carrying the resourceVersion read; a 409 is thrown', async () => {
    const { w } = writer();
    const identity = { holder: 'a', namespace: 'sys', name: 'mpa', leaseDurationMs: 15_000 };
    const leaseOf = (d: LeaseDecision): Lease => {
      if (d.action === 'wait') throw new Error(`expected to acquire, but ${d.holder} holds the lease`);
      return d.lease;
    };
    const created = leaseOf(nextLease(undefined, identity, new Date()));
    await w.lease(created, 'create');
    const renewed = leaseOf(nextLease({ ...created, metadata: { ...created.metadata, resourceVersion: '7' } }, identity, new Date()));
    answers = [{ status: 200 }, { status: 409 }];
    await w.lease(renewed, 'update');
    await expect(w.lease(renewed, 'update')).rejects.toMatchObject({ status: 409 });
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual([
      'POST /apis/coordination.k8s.io/v1/namespaces/sys/leases',
      'PUT /apis/coordination.k8s.io/v1/namespaces/sys/leases/mpa',
      'PUT /apis/coordination.k8s.io/v1/namespaces/sys/leases/mpa',
    ]);
    expect(seen[1]?.body).toMatchObject({ metadata: { resourceVersion: '7' }, spec: { holderIdentity: 'a' } });
  });
});

describe('Writer under 429 Too Many Requests', () => {
  it('waits what Retry-After asks, then succeeds, and logs each backoff', async () => {
    const { w, sleeps, logs } = writer();
    answers = [
      { status: 429, retryAfter: '2' },
      { status: 429, retryAfter: '2' },
    ];
    await w.apply('ml/kimi', policy);
    expect(seen).toHaveLength(3);
    expect(sleeps).toEqual([2000, 2000]);
    expect(logs.filter((l) => l.msg === 'API server throttled a write (429); backing off').map((l) => [l.attempt, l.delayMs])).toEqual([
      [1, 2000],
      [2, 2000],
    ]);
  });

  it('without Retry-After, backs off exponentially per key', async () => {
    const { w, sleeps } = writer();
    answers = [{ status: 429 }, { status: 429 }, { status: 429 }];
    await w.apply('ml/kimi', policy);
    expect(sleeps).toEqual([250, 500, 1000]);
  });

  it('gives up after a bounded number of attempts with an error that says so', async () => {
    const { w, sleeps } = writer();
    answers = Array.from({ length: 20 }, () => ({ status: 429, retryAfter: '1' }));
    const error = await w.apply('ml/kimi', policy).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KubeApiError);
    expect((error as KubeApiError).status).toBe(429);
    expect((error as Error).message).toContain(`still throttled after ${DEFAULT_THROTTLE.maxAttempts} attempts`);
    expect(seen).toHaveLength(DEFAULT_THROTTLE.maxAttempts);
    expect(sleeps).toHaveLength(DEFAULT_THROTTLE.maxAttempts - 1);
  });

  it('does not retry other refusals', async () => {
    const { w, sleeps } = writer();
    answers = [{ status: 500 }];
    await expect(w.apply('ml/kimi', policy)).rejects.toMatchObject({ status: 500 });
    expect(seen).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });

  it('halves the writes in flight on a 429 and grows them back one at a time as writes succeed', async () => {
    const { w } = writer();
    gate = 5;
    const many = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => w.apply(`ml/m${i}`, { ...policy, metadata: { ...policy.metadata, name: `m${i}-affinity` } })));
    // Unthrottled, every write goes out at once.
    await many(5);
    expect(maxInFlight).toBe(5);
    expect(w.concurrency).toBe(DEFAULT_THROTTLE.maxConcurrent);
    gate = 0;
    holdMs = 200;
    // Four 429s in a row: 16 → 8 → 4 → 2 → 1.
    answers = [{ status: 429, retryAfter: '1' }, { status: 429, retryAfter: '1' }, { status: 429, retryAfter: '1' }, { status: 429, retryAfter: '1' }];
    await w.apply('ml/kimi', policy);
    expect(w.concurrency).toBe(2);
    maxInFlight = 0;
    await many(5);
    // Limit 2, and 3 once two writes have succeeded: never the 5 an unlimited writer sends.
    expect(maxInFlight).toBeGreaterThan(1);
    expect(maxInFlight).toBeLessThanOrEqual(3);
  });

  it('lets a Lease write through while the writes in flight are at their limit', async () => {
    const { w } = writer();
    answers = [{ status: 429, retryAfter: '1' }, { status: 429, retryAfter: '1' }, { status: 429, retryAfter: '1' }, { status: 429, retryAfter: '1' }];
    await w.apply('ml/kimi', policy);
    expect(w.concurrency).toBe(2);
    gate = 3;
    const writes = Promise.all([1, 2].map((i) => w.apply(`ml/m${i}`, { ...policy, metadata: { ...policy.metadata, name: `m${i}-affinity` } })));
    const lease = nextLease(undefined, { holder: 'a', namespace: 'sys', name: 'mpa', leaseDurationMs: 15_000 }, new Date());
    maxInFlight = 0;
    await Promise.all([writes, w.lease((lease as { lease: Lease }).lease, 'create')]);
    expect(maxInFlight).toBe(3);
  });
});

describe('nextConcurrency', () => {
  it.each([
    { name: 'a 429 halves the limit', limit: 8, event: 'throttled', successes: 3, next: { limit: 4, successes: 0 } },
    { name: 'never below one write', limit: 1, event: 'throttled', successes: 0, next: { limit: 1, successes: 0 } },
    { name: 'a success counts towards growing', limit: 4, event: 'succeeded', successes: 1, next: { limit: 4, successes: 2 } },
    { name: 'as many successes as the limit add one', limit: 4, event: 'succeeded', successes: 3, next: { limit: 5, successes: 0 } },
    { name: 'never above maxConcurrent', limit: DEFAULT_THROTTLE.maxConcurrent, event: 'succeeded', successes: DEFAULT_THROTTLE.maxConcurrent, next: { limit: DEFAULT_THROTTLE.maxConcurrent, successes: 0 } },
  ] as const)('$name', ({ limit, event, successes, next }) => expect(nextConcurrency(DEFAULT_THROTTLE, limit, event, successes)).toEqual(next));
});

describe('throttleDelay', () => {
  it.each([
    { name: 'the first 429 without Retry-After waits the base delay', n: 1, retryAfter: undefined, ms: 250 },
    { name: 'each further 429 of the same key doubles it', n: 4, retryAfter: undefined, ms: 2000 },
    { name: 'Retry-After wins when longer than the backoff', n: 1, retryAfter: 1000, ms: 1000 },
    { name: 'the backoff wins when longer than Retry-After', n: 4, retryAfter: 1000, ms: 2000 },
    { name: 'no wait is longer than the cap, whatever the server asks', n: 2, retryAfter: 3_600_000, ms: 10_000 },
  ])('$name', ({ n, retryAfter, ms }) => expect(throttleDelay(DEFAULT_THROTTLE, n, retryAfter)).toBe(ms));
});

describe('parseRetryAfter', () => {
  it.each([
    { value: '1', ms: 1000 },
    { value: ' 7 ', ms: 7000 },
    { value: 'Fri, 02 Jan 2026 03:04:10 GMT', ms: 5000 },
    { value: 'soon', ms: undefined },
    { value: undefined, ms: undefined },
  ])('$value → $ms', ({ value, ms }) => expect(parseRetryAfter(value, Date.parse('2026-01-02T03:04:05Z'))).toBe(ms));
});
