import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeWebhookCertificates } from '../test/testbed/webhook.ts';
import { MAX_BODY_BYTES } from './app.ts';
import { type RunningWebhook, startWebhookServer } from './server.ts';

const fixture = readFileSync(new URL('../test/fixtures/admission/create-prefixhash.json', import.meta.url), 'utf8');
let dir: string;
let certDir: string;
let caPem: string;
let webhook: RunningWebhook;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mpa-webhook-test-'));
  certDir = join(dir, 'certs');
  caPem = makeWebhookCertificates(dir, certDir, 'one').ca.certPem;
  webhook = await startWebhookServer({ port: 0, host: '127.0.0.1', certDir, logger: pino({ level: 'silent' }) });
});

afterAll(async () => {
  await webhook.close();
  rmSync(dir, { recursive: true, force: true });
});

function call(method: string, path: string, body?: string | Buffer, contentType = 'application/json'): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: webhook.port, method, path, ca: caPem, servername: 'localhost', headers: body === undefined ? {} : { 'content-type': contentType } },
      (res) => {
        let data = '';
        res.on('data', (d) => (data += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data, type: String(res.headers['content-type']) }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('webhook HTTPS server', () => {
  it('answers a real AdmissionReview on /mutate with a JSONPatch and the echoed uid', async () => {
    const res = await call('POST', '/mutate', fixture);
    expect(res.status).toBe(200);
    const reply = JSON.parse(res.body);
    expect(reply.response.uid).toBe('0df28fbd-5f5f-11e8-bc74-36e6bb280816');
    expect(reply.response.patchType).toBe('JSONPatch');
  });

  it('answers /validate', async () => {
    const res = await call('POST', '/validate', fixture);
    expect(JSON.parse(res.body).response).toEqual({ uid: '0df28fbd-5f5f-11e8-bc74-36e6bb280816', allowed: true });
  });

  const malformed: { name: string; body: string | Buffer; contentType?: string; status: number; error: RegExp }[] = [
    { name: 'invalid JSON', body: '{"kind": ', status: 400, error: /JSON|Unexpected|Expected/ },
    { name: 'a JSON array', body: '[]', status: 400, error: /AdmissionReview/ },
    { name: 'an AdmissionReview without request', body: '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}', status: 400, error: /request/ },
    { name: 'a body that is not JSON at all', body: 'hello', contentType: 'text/plain', status: 400, error: /AdmissionReview/ },
    { name: 'an empty body', body: '', status: 400, error: /AdmissionReview/ },
    { name: 'a body over the size cap', body: Buffer.alloc(MAX_BODY_BYTES + 10, 0x20), status: 413, error: /larger than/ },
  ];
  it.each(malformed)('answers $name with a JSON $status, and keeps serving', async ({ body, contentType, status, error }) => {
    const res = await call('POST', '/validate', body, contentType);
    expect(res.status).toBe(status);
    expect(res.type).toContain('application/json');
    expect(JSON.parse(res.body).error).toMatch(error);
    expect((await call('GET', '/healthz')).status).toBe(200);
  });

  it('serves /healthz, /readyz and Prometheus /metrics', async () => {
    expect((await call('GET', '/healthz')).body).toBe('ok');
    expect((await call('GET', '/readyz')).body).toBe('ok');
    const metrics = await call('GET', '/metrics');
    expect(metrics.body).toContain('modelplane_affinity_admission_requests_total{path="mutate",result="patched"}');
    expect(metrics.body).toContain('modelplane_affinity_admission_duration_seconds_bucket');
  });

  it('answers unknown paths with a JSON 404', async () => {
    const res = await call('GET', '/nope');
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body).error).toMatch(/POST \/mutate/);
  });

  it('serves a new certificate after the files change, without a restart', async () => {
    const staging = join(dir, 'staging');
    makeWebhookCertificates(dir, staging, 'two');
    for (const f of ['tls.key', 'tls.crt']) {
      writeFileSync(join(certDir, `.${f}`), readFileSync(join(staging, f)));
      renameSync(join(certDir, `.${f}`), join(certDir, f));
    }
    const issuer = () =>
      new Promise<string>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: webhook.port, rejectUnauthorized: false }, () => {
          resolve(String(s.getPeerCertificate().issuer?.CN));
          s.end();
        });
        s.on('error', reject);
      });
    const deadline = Date.now() + 5000;
    while ((await issuer()) !== 'modelplane-affinity-webhook-ca-two' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await issuer()).toBe('modelplane-affinity-webhook-ca-two');
  });
});

describe('webhook drain (SIGTERM)', () => {
  it('fails /readyz, closes each kept-alive connection after its answer, then stops listening', async () => {
    const drainDir = join(dir, 'drain-certs');
    const drainCa = makeWebhookCertificates(dir, drainDir, 'drain').ca.certPem;
    const server = await startWebhookServer({ port: 0, host: '127.0.0.1', certDir: drainDir, logger: pino({ level: 'silent' }) });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const send = (method: string, path: string, body?: string) =>
      new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: server.port, method, path, ca: drainCa, servername: 'localhost', agent, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
          let data = '';
          res.on('data', (d) => (data += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data, connection: res.headers.connection }));
        });
        req.on('error', reject);
        req.end(body);
      });
    expect(await send('POST', '/validate', fixture)).toMatchObject({ status: 200, connection: 'keep-alive' });
    const drained = server.drain();
    expect(await send('GET', '/readyz')).toMatchObject({ status: 503, body: 'not ready\n[-]draining: shutting down, send reviews elsewhere\n', connection: 'close' });
    // A review that still arrives (the balancer has not noticed yet) is answered, and its connection closed.
    const late = await send('POST', '/validate', fixture);
    expect(late.status).toBe(200);
    expect(JSON.parse(late.body).response.allowed).toBe(true);
    expect(late.connection).toBe('close');
    // The balancer's health checks keep coming; only reviews hold a drain open.
    let probing = true;
    const probes = (async () => {
      while (probing) {
        await send('GET', '/readyz').catch(() => (probing = false));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    expect(await drained).toEqual({ ended: 'quiet', servedWhileDraining: 1, cutInFlight: 0 });
    probing = false;
    await probes;
    await expect(send('GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
    agent.destroy();
  });
});
