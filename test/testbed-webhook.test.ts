// The test bed's webhook registration is the shipped one: a test that passes
// against the bed passes against what `kubectl apply -f manifests/install.yaml` installs.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { SHIPPED_WEBHOOK_CONFIGURATIONS, WEBHOOK_CONFIGURATION_NAME, webhookConfigurations } from './testbed/webhook.ts';

type Configuration = { kind: string; metadata: { name: string }; webhooks: { clientConfig: unknown }[] };
const withoutClientConfig = (c: Configuration) => ({ ...c, metadata: { ...c.metadata, name: '' }, webhooks: c.webhooks.map((w) => ({ ...w, clientConfig: undefined })) });

describe('test bed webhook registration', () => {
  const shipped = parseAllDocuments(readFileSync(SHIPPED_WEBHOOK_CONFIGURATIONS, 'utf8')).map((d) => d.toJS() as Configuration);
  const registered = (JSON.parse(webhookConfigurations('https://127.0.0.1:9443', 'CA PEM')) as { items: Configuration[] }).items;

  it('is the shipped configurations with only clientConfig swapped (and its own name)', () => {
    expect(registered.map(withoutClientConfig)).toEqual(shipped.map(withoutClientConfig));
    expect(registered.map((c) => c.metadata.name)).toEqual([WEBHOOK_CONFIGURATION_NAME, WEBHOOK_CONFIGURATION_NAME]);
  });

  it('points each webhook at the shipped path on the bed URL, trusting the bed CA', () => {
    expect(registered.flatMap((c) => c.webhooks.map((w) => w.clientConfig))).toEqual([
      { url: 'https://127.0.0.1:9443/mutate', caBundle: Buffer.from('CA PEM').toString('base64') },
      { url: 'https://127.0.0.1:9443/validate', caBundle: Buffer.from('CA PEM').toString('base64') },
    ]);
  });

  it('can register the mutating webhook alone, for the one-call floor of the webhook bench', () => {
    const mutating = (JSON.parse(webhookConfigurations('https://127.0.0.1:9443', 'CA', 'mutating only')) as { items: Configuration[] }).items;
    expect(mutating.map((c) => c.kind)).toEqual(['MutatingWebhookConfiguration']);
  });
});
