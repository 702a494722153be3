// The webhook process (the CLI, as in a pod) against hostile clients: TLS 1.0
// and 1.1 are refused by the server and there is no plaintext listener; a
// corpus of hostile inputs to both /mutate and /validate (malformed JSON,
// wrong envelopes, 10 MiB bodies, deep nesting, __proto__ and constructor
// keys, 1e309, invalid UTF-8, CRLF in header names, broken framing) gets no
// 5xx and no crash, memory comes back near where it was, and a bad spec is
// still denied afterwards.
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type SecureVersion } from 'node:tls';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request as httpsRequest } from 'node:https';
import { memoryMiB, sampleSum } from '../bench/stats.ts';
import { type ManagedProcess } from './testbed/processes.ts';
import { makeWebhookCertificates, startWebhookProcess } from './testbed/webhook.ts';

const fixture = readFileSync(new URL('./fixtures/admission/create-prefixhash.json', import.meta.url), 'utf8');
const review = JSON.parse(fixture) as { request: { object: Record<string, unknown> } & Record<string, unknown> } & Record<string, unknown>;
let port: number;
let proc: ManagedProcess;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpa-hostile-'));
  const certDir = join(dir, 'certs');
  makeWebhookCertificates(dir, certDir, 'hostile');
  const webhook = await startWebhookProcess('webhook', certDir, join(dir, 'webhook.log'), [], { ...process.env, LOG_LEVEL: 'error' });
  port = webhook.port;
  proc = webhook.process;
});

afterAll(async () => {
  await proc?.stop();
});

/**
 * Raw bytes over TLS; the status of the answer, or 0 when the server closed
 * without one. The client half-closes only after 1.5 s of silence: Node's
 * HTTP server drops the answer to a request whose client has already ended
 * (a body still being inflated, say), which is the client's doing, not a fault.
 */
function raw(bytes: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => socket.write(bytes));
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    const done = () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0));
    socket.on('close', done);
    socket.on('error', () => undefined); // a server that answers 413 and closes mid-upload: the status is what counts
    socket.setTimeout(1500, () => socket.end());
  });
}

function post(path: string, body: Buffer | string, headers: Record<string, string> = {}): Buffer {
  const data = typeof body === 'string' ? Buffer.from(body) : body;
  const head = { host: '127.0.0.1', 'content-type': 'application/json', 'content-length': String(data.length), connection: 'close', ...headers };
  return Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\n${Object.entries(head).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`), data]);
}

const withObject = (object: unknown) => JSON.stringify({ ...review, request: { ...review.request, object } });
const withRequest = (request: unknown) => JSON.stringify({ ...review, request });
const nested = (depth: number, open: string, close: string, inner = '1') => open.repeat(depth) + inner + close.repeat(depth);
const MiB = 1024 * 1024;

/** Each input: the raw request for a path. */
const corpus: { name: string; bytes: (path: string) => Buffer }[] = [
  // Malformed JSON: the fixture cut at 30 places, and classic breakages.
  ...Array.from({ length: 30 }, (_, i) => ({ name: `fixture cut at ${i * 50}`, bytes: (p: string) => post(p, fixture.slice(0, i * 50)) })),
  ...['{', '[', '"', '{"a":}', '{"a":1,}', "{'a':1}", 'NaN', 'undefined', '{"a":1}{"b":2}', '\u0000', '{"apiVersion":"admission.k8s.io/v1"', 'null', 'true', '0', '""', '[]', '{}'].map((body) => ({
    name: `malformed ${JSON.stringify(body)}`,
    bytes: (p: string) => post(p, body),
  })),
  // Wrong envelopes.
  ...[
    { ...review, apiVersion: 'admission.k8s.io/v1beta1' },
    { ...review, kind: 'NotAReview' },
    { ...review, request: null },
    { ...review, request: 'string' },
    { ...review, request: [] },
    { ...review, request: { ...review.request, uid: '' } },
    { ...review, request: { ...review.request, uid: 42 } },
    { ...review, request: { ...review.request, operation: 'EXPLODE' } },
    { ...review, request: { ...review.request, kind: null } },
    { ...review, request: { ...review.request, kind: { group: 1, version: [], kind: {} } } },
    { ...review, request: { ...review.request, object: [] } },
    { ...review, request: { ...review.request, object: 'yaml: true' } },
    { ...review, request: { ...review.request, oldObject: 7 } },
    { ...review, request: { ...review.request, dryRun: 'yes' } },
    { ...review, response: { allowed: true } },
  ].map((body, i) => ({ name: `wrong envelope ${i}`, bytes: (p: string) => post(p, JSON.stringify(body)) })),
  // ModelService objects the rules must survive.
  ...[
    { metadata: { name: 'x' }, spec: 'not an object' },
    { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: null, spec: { affinity: { type: 'Session' } } },
    { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x', annotations: 'none' }, spec: { affinity: { type: 'PrefixHash' } } },
    { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: { affinity: [] } },
    { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: { affinity: { type: { $ne: 1 } } } },
    { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: { endpoints: 'many', affinity: { type: 'Session', sessionHeader: 'X' } } },
    { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x'.repeat(100_000) }, spec: { affinity: { type: 'PrefixHash' } } },
    { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: { affinity: { type: 'Session', sessionHeader: 'X'.repeat(1_000_000) } } },
  ].map((object, i) => ({ name: `odd ModelService ${i}`, bytes: (p: string) => post(p, withObject(object)) })),
  // 10 MiB bodies, declared and chunked, and a gzip bomb.
  { name: '10 MiB of spaces', bytes: (p) => post(p, Buffer.alloc(10 * MiB, 0x20)) },
  { name: '10 MiB string value', bytes: (p) => post(p, withObject({ metadata: { name: 'x'.repeat(10 * MiB) } })) },
  { name: '10 MiB chunked without a length', bytes: (p) => chunked(p, Buffer.alloc(10 * MiB, 0x20)) },
  { name: '10 MiB gzip bomb', bytes: (p) => post(p, gzipSync(Buffer.alloc(10 * MiB, 0x20)), { 'content-encoding': 'gzip' }) },
  { name: 'garbage gzip', bytes: (p) => post(p, Buffer.from('not gzip at all'), { 'content-encoding': 'gzip' }) },
  { name: 'unknown content-encoding', bytes: (p) => post(p, fixture, { 'content-encoding': 'zstd-9000' }) },
  // Deep nesting, in the body and inside the object.
  ...[10, 1000, 100_000].flatMap((depth) => [
    { name: `arrays nested ${depth} deep`, bytes: (p: string) => post(p, nested(depth, '[', ']')) },
    { name: `objects nested ${depth} deep`, bytes: (p: string) => post(p, nested(depth, '{"a":', '}')) },
    {
      name: `object spec nested ${depth} deep`,
      bytes: (p: string) => post(p, withObject({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: 'SPEC' }).replace('"SPEC"', nested(depth, '{"a":', '}'))),
    },
  ]),
  // __proto__ and constructor keys.
  ...[
    '{"__proto__":{"allowed":true}}',
    '{"constructor":{"prototype":{"allowed":true}}}',
    withRequest({ ...review.request, __proto__: { uid: 'polluted' } }).replace('"uid"', '"__proto__":{"uid":"x"},"uid"'),
    withObject({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x', annotations: { __proto__: 'x' } }, spec: { affinity: { type: 'Session', sessionHeader: 'X' } } }).replace('"annotations":{}', '"annotations":{"__proto__":{"polluted":"yes"}}'),
    withObject({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: { affinity: { type: 'PrefixHash' } } }).replace('"affinity":{', '"affinity":{"__proto__":{"prefixBytes":1},"constructor":{"prototype":{"type":"None"}},'),
    withObject({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: { constructor: { name: 'Object' }, affinity: { type: 'Session', sessionHeader: 'X' } } }),
  ].map((body, i) => ({ name: `prototype keys ${i}`, bytes: (p: string) => post(p, body) })),
  // Numbers JSON cannot hold.
  ...['1e309', '-1e309', '1e-400', '18446744073709551617', '-0', '0.1e1'].map((n) => ({
    name: `prefixBytes ${n}`,
    bytes: (p: string) => post(p, withObject({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'x' }, spec: { affinity: { type: 'PrefixHash', prefixBytes: 0 } } }).replace('"prefixBytes":0', `"prefixBytes":${n}`)),
  })),
  // Invalid UTF-8 and odd strings.
  ...[
    Buffer.from([0xff, 0xfe, 0xfd]),
    Buffer.concat([Buffer.from('{"apiVersion":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]),
    Buffer.concat([Buffer.from(fixture.slice(0, 100)), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(fixture.slice(100))]),
    Buffer.from(withObject({ metadata: { name: '\ud800' } })),
    Buffer.from(fixture.replace('"uid":', '"u\\u0000id":')),
  ].map((body, i) => ({ name: `invalid UTF-8 ${i}`, bytes: (p: string) => post(p, body) })),
  // Content types and charsets.
  ...['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=utf-16', 'application/json; charset=bogus', ''].map((type) => ({
    name: `content-type ${JSON.stringify(type)}`,
    bytes: (p: string) => post(p, fixture, { 'content-type': type }),
  })),
  // Broken HTTP framing: CRLF in header names, bad lengths, bad chunks, long lines.
  ...[
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nX-Evil\r\nInjected: 1\r\nContent-Length: 2\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nX-Ev\ril: 1\r\nContent-Length: 2\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nContent-Length: 2\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\n: empty-name\r\nContent-Length: 2\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n`),
    (p: string) => Buffer.from(`POST ${p}?${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\nContent-Length: 2\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/9.9\r\nHost: x\r\n\r\n`),
    (p: string) => Buffer.from(`POST ${p}\r\n\r\n`),
    (p: string) => Buffer.from(`GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`),
    (p: string) => Buffer.from(`POST ${p}/../../etc/passwd HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}`),
    (p: string) => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}`),
  ].map((bytes, i) => ({ name: `framing ${i}`, bytes })),
];

function chunked(path: string, data: Buffer): Buffer {
  const head = Buffer.from(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`);
  const chunks: Buffer[] = [head];
  for (let i = 0; i < data.length; i += MiB) chunks.push(Buffer.from(`${MiB.toString(16)}\r\n`), data.subarray(i, i + MiB), Buffer.from('\r\n'));
  chunks.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(chunks);
}

/** The webhook's own V8 heap in use (prom-client's nodejs_heap_size_used_bytes), in MiB. */
const heapUsedMiB = () =>
  new Promise<number>((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/metrics', rejectUnauthorized: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve(sampleSum(text, 'nodejs_heap_size_used_bytes') / MiB));
    });
    req.on('error', reject);
    req.end();
  });

const denied = () =>
  raw(post('/validate', withObject({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'bad', namespace: 'ml' }, spec: { affinity: { type: 'Session' } } })));

describe('webhook against hostile input', () => {
  it('has a corpus of at least 100 inputs', () => expect(corpus.length).toBeGreaterThanOrEqual(100));

  it.each(['/mutate', '/validate'])('answers every input to %s without a 5xx or a crash, memory back near its baseline, and still denies a bad spec', async (path) => {
    expect(await denied()).toBe(200);
    const baseline = memoryMiB(proc.child.pid as number, 'VmRSS');
    const heapBefore = await heapUsedMiB();
    const statuses = new Map<string, number>();
    for (const input of corpus) statuses.set(input.name, await raw(input.bytes(path)));
    const serverErrors = [...statuses].filter(([, status]) => status >= 500);
    expect(serverErrors).toEqual([]);
    expect(proc.child.exitCode).toBeNull();
    // Closed without an answer is allowed only for input HTTP itself cannot frame.
    expect([...statuses].filter(([name, status]) => status === 0 && !name.startsWith('framing') && !name.startsWith('10 MiB'))).toEqual([]);
    await new Promise((r) => setTimeout(r, 2000));
    const after = memoryMiB(proc.child.pid as number, 'VmRSS');
    expect(after - baseline).toBeLessThan(64);
    const reply = await new Promise<string>((resolve) => {
      const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () =>
        socket.end(post('/validate', withObject({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'bad', namespace: 'ml' }, spec: { affinity: { type: 'Session' } } }))),
      );
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('close', () => resolve(text));
    });
    expect(reply).toContain('"allowed":false');
    expect(reply).toContain('spec.affinity.sessionHeader: Required value');
    process.stdout.write(
      `[reliability] ${JSON.stringify({ scenario: `hostile corpus to ${path}`, inputs: corpus.length, byStatus: Object.fromEntries([...new Set(statuses.values())].sort().map((s) => [s, [...statuses.values()].filter((v) => v === s).length])), rssBaselineMiB: baseline, rssAfterMiB: after, heapUsedBeforeMiB: heapBefore, heapUsedAfterMiB: await heapUsedMiB() })}\n`,
    );
  }, 120_000);
});

describe('webhook TLS', () => {
  const handshake = (version: SecureVersion) =>
    new Promise<string>((resolve) => {
      // SECLEVEL=0 lets this client offer the old protocols: the refusal must come from the server.
      const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: version, maxVersion: version, ciphers: 'DEFAULT@SECLEVEL=0' }, () => {
        resolve(`connected ${socket.getProtocol()}`);
        socket.end();
      });
      socket.on('error', (e: NodeJS.ErrnoException) => resolve(String(e.code ?? e.message)));
    });

  it.each(['TLSv1', 'TLSv1.1'] as const)('refuses %s with a protocol_version alert from the server', async (version) => {
    expect(await handshake(version)).toMatch(/ALERT_PROTOCOL_VERSION/);
  });

  it('accepts TLS 1.2 and 1.3', async () => {
    expect(await handshake('TLSv1.2')).toBe('connected TLSv1.2');
    expect(await handshake('TLSv1.3')).toBe('connected TLSv1.3');
  });

  it('has no plaintext listener: HTTP without TLS gets no HTTP answer', async () => {
    const answer = await new Promise<string>((resolve) => {
      const socket = tcpConnect({ host: '127.0.0.1', port }, () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      socket.on('close', () => resolve(text));
      socket.on('error', () => resolve(text));
      socket.setTimeout(5000, () => socket.destroy());
    });
    expect(answer).not.toMatch(/^HTTP\/1\.1 2/);
  });
});
