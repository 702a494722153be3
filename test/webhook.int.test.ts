// The admission webhook as users meet it: `kubectl apply` against a real
// kube-apiserver with our webhook registered (see test/testbed).
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { makeWebhookCertificates, registerWebhooks } from './testbed/webhook.ts';
import { type Testbed, createNamespace, testbed } from './testbed/testbed.ts';

let tb: Testbed;
let ns: string;

beforeAll(async () => {
  tb = testbed();
  ns = await createNamespace(tb, 'webhook');
});

function manifest(name: string, affinity: unknown, extra: { endpoints?: unknown[]; spec?: Record<string, unknown> } = {}): string {
  return stringify({
    apiVersion: 'modelplane.ai/v1alpha1',
    kind: 'ModelService',
    metadata: { name, namespace: ns },
    spec: {
      endpoints: extra.endpoints ?? [{ selector: { matchLabels: { 'modelplane.ai/deployment': name } }, weight: 1 }],
      ...(affinity === undefined ? {} : { affinity }),
      ...extra.spec,
    },
  });
}

async function getModelService(name: string): Promise<{ metadata: { annotations?: Record<string, string>; resourceVersion: string }; spec: { affinity?: unknown } }> {
  return JSON.parse(await tb.kubectlOk(['get', 'modelservice', name, '-n', ns, '-o', 'json']));
}

describe('the CRD', () => {
  it('teaches the feature through kubectl explain', async () => {
    const out = await tb.kubectlOk(['explain', 'modelservice.spec.affinity']);
    for (const text of ['prefixBytes', 'sessionHeader', 'fallback', 'PrefixHash, Session, None', '64..32768']) expect(out).toContain(text);
  });
});

describe('kubectl apply of valid ModelServices', () => {
  const cases = [
    {
      name: 'prefix',
      affinity: { type: 'PrefixHash' },
      defaulted: { type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Conversation', fallback: 'NextEndpoint' },
      annotations: {
        'affinity.modelplane.ai/backend-traffic-policy': 'prefix-affinity',
        'affinity.modelplane.ai/envoy-extension-policy': 'prefix-prefix-hash',
        'affinity.modelplane.ai/ext-proc': 'prefix-prefix-hash',
      },
    },
    {
      name: 'session',
      affinity: { type: 'Session', sessionHeader: 'X-Session-ID' },
      defaulted: { type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'NextEndpoint' },
      annotations: { 'affinity.modelplane.ai/backend-traffic-policy': 'session-affinity' },
    },
    { name: 'none', affinity: { type: 'None' }, defaulted: { type: 'None' }, annotations: {} },
    { name: 'empty', affinity: {}, defaulted: { type: 'None' }, annotations: {} },
  ];
  it.each(cases)('creates $name with the defaults and annotations of SPEC §1-2', async ({ name, affinity, defaulted, annotations }) => {
    const result = await tb.kubectl(['apply', '-f', '-'], { input: manifest(name, affinity) });
    expect(result.stderr).toBe('');
    expect(result.stdout).toContain(`modelservice.modelplane.ai/${name} created`);
    const yamlOut = await tb.kubectlOk(['get', 'modelservice', name, '-n', ns, '-o', 'yaml']);
    expect(yamlOut).toContain('affinity:');
    const ms = await getModelService(name);
    expect(ms.spec.affinity).toEqual(defaulted);
    const ours = Object.fromEntries(Object.entries(ms.metadata.annotations ?? {}).filter(([k]) => k.startsWith('affinity.modelplane.ai/')));
    expect(ours).toEqual(annotations);
  });

  it('prints the admission warning for a field the type ignores', async () => {
    const result = await tb.kubectl(['apply', '-f', '-'], { input: manifest('warned', { type: 'PrefixHash', sessionHeader: 'X-Session-ID' }) });
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('Warning: spec.affinity.sessionHeader is ignored when type is PrefixHash');
  });

  it('prints the Maglev weight warning for unequal endpoint weights with affinity', async () => {
    const result = await tb.kubectl(['apply', '-f', '-'], {
      input: manifest('weighted', { type: 'Session', sessionHeader: 'x-user' }, { endpoints: [{ weight: 1 }, { weight: 4 }] }),
    });
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/Warning: spec\.endpoints: unequal weights \(1, 4\).*envoyproxy\/gateway#9775/);
  });
});

describe('kubectl apply of invalid ModelServices', () => {
  // [description, affinity (or spec patch), fields kubectl's stderr must name]
  const cases: { name: string; affinity: unknown; fields: string[]; message?: string }[] = [
    { name: 'prefixBytes 10', affinity: { type: 'PrefixHash', prefixBytes: 10 }, fields: ['spec.affinity.prefixBytes'], message: 'spec.affinity.prefixBytes: Invalid value: 10: must be between 64 and 32768' },
    { name: 'prefixBytes 63 (below the lower bound)', affinity: { type: 'PrefixHash', prefixBytes: 63 }, fields: ['spec.affinity.prefixBytes'], message: 'Invalid value: 63: must be between 64 and 32768' },
    { name: 'prefixBytes 32769 (above the upper bound)', affinity: { type: 'PrefixHash', prefixBytes: 32769 }, fields: ['spec.affinity.prefixBytes'], message: 'Invalid value: 32769: must be between 64 and 32768' },
    { name: 'prefixBytes 0', affinity: { type: 'PrefixHash', prefixBytes: 0 }, fields: ['spec.affinity.prefixBytes'] },
    { name: 'prefixBytes negative', affinity: { type: 'PrefixHash', prefixBytes: -1024 }, fields: ['spec.affinity.prefixBytes'] },
    { name: 'prefixBytes 1000000', affinity: { type: 'PrefixHash', prefixBytes: 1000000 }, fields: ['spec.affinity.prefixBytes'] },
    { name: 'prefixBytes as a string', affinity: { type: 'PrefixHash', prefixBytes: '1024' }, fields: ['spec.affinity.prefixBytes'] },
    { name: 'prefixBytes as a fraction', affinity: { type: 'PrefixHash', prefixBytes: 100.5 }, fields: ['spec.affinity.prefixBytes'] },
    { name: 'Session without sessionHeader', affinity: { type: 'Session' }, fields: ['spec.affinity.sessionHeader'], message: 'spec.affinity.sessionHeader: Required value: required when type is Session' },
    { name: 'Session with an empty sessionHeader', affinity: { type: 'Session', sessionHeader: '' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'sessionHeader with a space', affinity: { type: 'Session', sessionHeader: 'X Session' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'sessionHeader with a colon', affinity: { type: 'Session', sessionHeader: 'x-session:id' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'sessionHeader with non-ASCII', affinity: { type: 'Session', sessionHeader: 'x-sitzung-ü' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'sessionHeader of 257 characters', affinity: { type: 'Session', sessionHeader: 'x'.repeat(257) }, fields: ['spec.affinity.sessionHeader'], message: 'Too long: may not be more than 256 bytes' },
    { name: 'a pseudo-header', affinity: { type: 'Session', sessionHeader: ':path' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'hop-by-hop Connection', affinity: { type: 'Session', sessionHeader: 'Connection' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'hop-by-hop keep-alive', affinity: { type: 'Session', sessionHeader: 'keep-alive' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'hop-by-hop Transfer-Encoding', affinity: { type: 'Session', sessionHeader: 'Transfer-Encoding' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'hop-by-hop TE', affinity: { type: 'Session', sessionHeader: 'TE' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'hop-by-hop Upgrade', affinity: { type: 'Session', sessionHeader: 'Upgrade' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'hop-by-hop Trailer', affinity: { type: 'Session', sessionHeader: 'Trailer' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'hop-by-hop Proxy-Connection', affinity: { type: 'Session', sessionHeader: 'Proxy-Connection' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'the Host header', affinity: { type: 'Session', sessionHeader: 'Host' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'the Content-Length header', affinity: { type: 'Session', sessionHeader: 'content-length' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'the reserved X-Prompt-Hash header', affinity: { type: 'Session', sessionHeader: 'X-PROMPT-HASH' }, fields: ['spec.affinity.sessionHeader'] },
    { name: 'type in the wrong case', affinity: { type: 'prefixhash' }, fields: ['spec.affinity.type'], message: 'spec.affinity.type: Unsupported value: "prefixhash": supported values: "PrefixHash", "Session", "None"' },
    { name: 'an unknown type', affinity: { type: 'RoundRobin' }, fields: ['spec.affinity.type'] },
    { name: 'type as a number', affinity: { type: 1 }, fields: ['spec.affinity.type'] },
    { name: 'fallback Next', affinity: { type: 'PrefixHash', fallback: 'Next' }, fields: ['spec.affinity.fallback'], message: 'spec.affinity.fallback: Unsupported value: "Next": supported values: "NextEndpoint", "None"' },
    { name: 'fallback in the wrong case', affinity: { type: 'Session', sessionHeader: 'x-s', fallback: 'nextendpoint' }, fields: ['spec.affinity.fallback'] },
    { name: 'an unknown field', affinity: { type: 'PrefixHash', prefixbytes: 1024 }, fields: ['spec.affinity.prefixbytes'] },
    { name: 'affinity as a string', affinity: 'PrefixHash', fields: ['spec.affinity'] },
    {
      name: 'several errors at once',
      affinity: { type: 'Session', fallback: 'Sometimes', prefixBytes: 5 },
      fields: ['spec.affinity.fallback', 'spec.affinity.sessionHeader'],
      message: 'spec.affinity.fallback: Unsupported value: "Sometimes": supported values: "NextEndpoint", "None"',
    },
    {
      name: 'two bad fields on PrefixHash',
      affinity: { type: 'PrefixHash', prefixBytes: 40000, fallback: 'Always' },
      fields: ['spec.affinity.prefixBytes', 'spec.affinity.fallback'],
    },
  ];

  it('has at least 25 cases', () => expect(cases.length).toBeGreaterThanOrEqual(25));

  it.each(cases.map((c, i) => ({ ...c, index: i })))('rejects $name and names the field', async ({ affinity, fields, message, index }) => {
    const name = `invalid-${index}`;
    const result = await tb.kubectl(['apply', '-f', '-'], { input: manifest(name, affinity) });
    expect(result.code, result.stdout).not.toBe(0);
    for (const field of fields) expect(result.stderr).toContain(field);
    if (message) expect(result.stderr).toContain(message);
    const exists = await tb.kubectl(['get', 'modelservice', name, '-n', ns]);
    expect(exists.code).not.toBe(0);
  });
});

describe('updates', () => {
  it('switching PrefixHash to Session removes the stale annotations', async () => {
    await tb.kubectlOk(['apply', '-f', '-'], { input: manifest('switch', { type: 'PrefixHash' }) });
    expect(Object.keys((await getModelService('switch')).metadata.annotations ?? {})).toEqual(
      expect.arrayContaining(['affinity.modelplane.ai/ext-proc', 'affinity.modelplane.ai/envoy-extension-policy']),
    );
    await tb.kubectlOk(['apply', '-f', '-'], { input: manifest('switch', { type: 'Session', sessionHeader: 'X-Session-ID' }) });
    const ms = await getModelService('switch');
    expect(ms.spec.affinity).toEqual({ type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'NextEndpoint' });
    const ours = Object.keys(ms.metadata.annotations ?? {}).filter((k) => k.startsWith('affinity.modelplane.ai/'));
    expect(ours).toEqual(['affinity.modelplane.ai/backend-traffic-policy']);
  });

  it.each([
    { mode: 'client-side apply', args: ['apply', '-f', '-'] },
    { mode: 'server-side apply', args: ['apply', '--server-side', '-f', '-'] },
  ])('re-applying an unchanged manifest changes nothing ($mode)', async ({ mode, args }) => {
    const name = mode.startsWith('client') ? 'steady-csa' : 'steady-ssa';
    const input = manifest(name, { type: 'PrefixHash', prefixBytes: 2048 });
    await tb.kubectlOk(args, { input });
    const before = (await getModelService(name)).metadata.resourceVersion;
    const again = await tb.kubectlOk(args, { input });
    expect(again).toMatch(/unchanged|serverside-applied/);
    expect((await getModelService(name)).metadata.resourceVersion).toBe(before);
  });
});

describe('certificate rotation', () => {
  function servedIssuer(baseUrl: string): Promise<string> {
    const { port } = new URL(baseUrl);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: Number(port), rejectUnauthorized: false }, () => {
        const issuer = socket.getPeerCertificate().issuer?.CN;
        socket.end();
        resolve(String(issuer));
      });
      socket.on('error', reject);
    });
  }

  it('keeps every apply working while the certificate and caBundle rotate, without a restart', async () => {
    const pidBefore = tb.webhookPid;
    expect(() => process.kill(pidBefore, 0)).not.toThrow();
    expect(await servedIssuer(tb.webhookBaseUrl)).toBe('modelplane-affinity-webhook-ca-initial');

    const failures: string[] = [];
    let applies = 0;
    let rotating = true;
    const loop = (async () => {
      // Bounded: at most 400 applies, and it stops a few applies after the rotation ends.
      let after = 0;
      while (applies < 400 && (rotating || after++ < 5)) {
        const i = applies++;
        const r = await tb.kubectl(['apply', '-f', '-'], { input: manifest(`rotate-${i % 5}`, { type: 'PrefixHash', prefixBytes: 64 + i }) });
        if (r.code !== 0) failures.push(r.stderr);
      }
    })();

    const staging = mkdtempSync(join(tb.dir, 'rotation-'));
    const { ca: newCa } = makeWebhookCertificates(tb.dir, staging, 'rotated');
    // 1. Trust both CAs, 2. swap the files under the running webhook, 3. trust only the new CA.
    await registerWebhooks(tb, tb.webhookBaseUrl, tb.webhookCaPem + newCa.certPem);
    await new Promise((r) => setTimeout(r, 1500));
    for (const file of ['tls.key', 'tls.crt']) {
      writeFileSync(join(tb.webhookCertDir, `.${file}.new`), readFileSync(join(staging, file)));
      renameSync(join(tb.webhookCertDir, `.${file}.new`), join(tb.webhookCertDir, file));
    }
    const deadline = Date.now() + 15_000;
    while ((await servedIssuer(tb.webhookBaseUrl)) !== 'modelplane-affinity-webhook-ca-rotated' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await servedIssuer(tb.webhookBaseUrl)).toBe('modelplane-affinity-webhook-ca-rotated');
    await new Promise((r) => setTimeout(r, 1500));
    await registerWebhooks(tb, tb.webhookBaseUrl, newCa.certPem);
    await new Promise((r) => setTimeout(r, 1500));
    rotating = false;
    await loop;

    expect(failures).toEqual([]);
    expect(applies).toBeGreaterThan(5);
    // Same process, still alive: the new certificate was picked up without a restart.
    expect(() => process.kill(pidBefore, 0)).not.toThrow();
    expect(readFileSync(tb.webhookLog, 'utf8')).toContain('serving certificate reloaded');
  });
});
