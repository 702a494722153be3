// spec.affinity.prefixKey as users meet it (SPEC §1, issue 14): `kubectl
// apply` and `kubectl explain` against the test bed's real kube-apiserver
// with our CRD and webhook, and the webhook's own /mutate on the stored object.
import { request } from 'node:https';
import { beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type Testbed, createNamespace, testbed } from './testbed/testbed.ts';
import { WEBHOOK_CONFIGURATION_NAME } from './testbed/webhook.ts';

let tb: Testbed;
let ns: string;

beforeAll(async () => {
  tb = testbed();
  ns = await createNamespace(tb, 'prefix-key');
});

function manifest(name: string, affinity: unknown): string {
  return stringify({
    apiVersion: 'modelplane.ai/v1alpha1',
    kind: 'ModelService',
    metadata: { name, namespace: ns },
    spec: { endpoints: [{ selector: { matchLabels: { 'modelplane.ai/deployment': name } }, weight: 1 }], affinity },
  });
}

interface Stored {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; uid: string; resourceVersion: string };
  spec: { affinity?: Record<string, unknown> };
}

async function stored(name: string): Promise<Stored> {
  return JSON.parse(await tb.kubectlOk(['get', 'modelservice', name, '-n', ns, '-o', 'json'])) as Stored;
}

/** POSTs an AdmissionReview for `object` to the test bed's webhook and returns its response. */
async function mutate(object: Stored): Promise<{ allowed: boolean; patch?: string; patchType?: string; uid: string }> {
  const review = {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'second-pass',
      kind: { group: 'modelplane.ai', version: 'v1alpha1', kind: 'ModelService' },
      resource: { group: 'modelplane.ai', version: 'v1alpha1', resource: 'modelservices' },
      name: object.metadata.name,
      namespace: object.metadata.namespace,
      operation: 'UPDATE',
      userInfo: { username: 'test' },
      object,
      oldObject: object,
    },
  };
  const url = new URL('/mutate', tb.webhookBaseUrl);
  // The CA the API server trusts now: another file may have rotated the webhook's certificate (webhook.int).
  const registered = JSON.parse(await tb.kubectlOk(['get', 'mutatingwebhookconfiguration', WEBHOOK_CONFIGURATION_NAME, '-o', 'json'])) as { webhooks: { clientConfig: { caBundle: string } }[] };
  const ca = Buffer.from(registered.webhooks[0]?.clientConfig.caBundle ?? '', 'base64').toString('utf8');
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { response: { allowed: boolean; patch?: string; patchType?: string; uid: string } }).response);
        } catch (error) {
          reject(error as Error);
        }
      });
    });
    req.on('error', reject);
    req.end(JSON.stringify(review));
  });
}

describe('spec.affinity.prefixKey', () => {
  it('is explained by kubectl explain: its values, its default and what each keys on', async () => {
    const out = await tb.kubectlOk(['explain', 'modelservice.spec.affinity.prefixKey']);
    for (const text of ['ENUM', 'Conversation', 'Body', 'default Conversation', 'first user message', 'prefixBytes']) expect(out).toContain(text);
  });

  it('is written as Conversation for PrefixHash', async () => {
    const result = await tb.kubectl(['apply', '-f', '-'], { input: manifest('default-key', { type: 'PrefixHash' }) });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect((await stored('default-key')).spec.affinity).toEqual({ type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Conversation', fallback: 'NextEndpoint' });
  });

  it('keeps Body', async () => {
    const result = await tb.kubectl(['apply', '-f', '-'], { input: manifest('body-key', { type: 'PrefixHash', prefixKey: 'Body', prefixBytes: 256 }) });
    expect(result.code, result.stderr).toBe(0);
    expect((await stored('body-key')).spec.affinity).toEqual({ type: 'PrefixHash', prefixBytes: 256, prefixKey: 'Body', fallback: 'NextEndpoint' });
  });

  it.each(['body', 'Prompt', ''])('rejects %j, naming spec.affinity.prefixKey and the supported values', async (value) => {
    const result = await tb.kubectl(['apply', '-f', '-'], { input: manifest('bad-key', { type: 'PrefixHash', prefixKey: value }) });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(`spec.affinity.prefixKey: Unsupported value: "${value}": supported values: "Conversation", "Body"`);
    const missing = await tb.kubectl(['get', 'modelservice', 'bad-key', '-n', ns]);
    expect(missing.code).not.toBe(0);
  });

  it('is accepted with a warning, and not defaulted, for Session', async () => {
    const result = await tb.kubectl(['apply', '-f', '-'], { input: manifest('session-key', { type: 'Session', sessionHeader: 'X-Session-ID', prefixKey: 'Body' }) });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('Warning: spec.affinity.prefixKey is ignored when type is Session');
    const none = await tb.kubectl(['apply', '-f', '-'], { input: manifest('session-no-key', { type: 'Session', sessionHeader: 'X-Session-ID' }) });
    expect(none.stderr).toBe('');
    expect((await stored('session-no-key')).spec.affinity).not.toHaveProperty('prefixKey');
  });

  it('leaves nothing for a second mutation: the stored object gets no patch, and a re-apply is unchanged', async () => {
    for (const name of ['default-key', 'body-key']) {
      const object = await stored(name);
      const response = await mutate(object);
      expect(response).toMatchObject({ allowed: true, uid: 'second-pass' });
      expect(response.patch).toBeUndefined();
    }
    const again = await tb.kubectl(['apply', '-f', '-'], { input: manifest('default-key', { type: 'PrefixHash' }) });
    expect(again.stdout).toContain('unchanged');
  });

  it('a first mutation does write the default (the second-pass check can fail)', async () => {
    const object = await stored('default-key');
    delete object.spec.affinity?.prefixKey;
    const response = await mutate(object);
    const patch = JSON.parse(Buffer.from(response.patch ?? '', 'base64').toString('utf8') || '[]') as unknown[];
    expect(patch).toContainEqual({ op: 'add', path: '/spec/affinity/prefixKey', value: 'Conversation' });
  });
});
