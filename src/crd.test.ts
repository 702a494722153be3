// The CRD documents the rules the webhook enforces (kubectl explain teaches
// them); this keeps its text in step with the one source of truth in src/.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { PREFIX_BYTES_DEFAULT, PREFIX_BYTES_MAX, PREFIX_BYTES_MIN, PREFIX_KEY_DEFAULT, SESSION_HEADER_MAX } from './affinity.ts';
import { AFFINITY_TYPES, FALLBACKS, PREFIX_KEYS } from './model-service.ts';

const crd = parse(readFileSync(new URL('../manifests/crd/modelservices.modelplane.ai.yaml', import.meta.url), 'utf8'));
const affinity = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.affinity;

describe('ModelService CRD', () => {
  it('documents the prefixBytes bounds and default', () => {
    expect(affinity.properties.prefixBytes.description).toContain(`${PREFIX_BYTES_MIN}..${PREFIX_BYTES_MAX}`);
    expect(affinity.properties.prefixBytes.description).toContain(`default ${PREFIX_BYTES_DEFAULT}`);
  });
  it('lists the prefixKey values as an enum and documents them with the default', () => {
    expect(affinity.properties.prefixKey.enum).toEqual([...PREFIX_KEYS]);
    expect(affinity.properties.prefixKey.description).toContain(`One of ${PREFIX_KEYS.join(', ')} (default ${PREFIX_KEY_DEFAULT})`);
  });
  it('documents every affinity type and fallback', () => {
    expect(affinity.properties.type.description).toContain(`One of ${AFFINITY_TYPES.join(', ')}`);
    expect(affinity.properties.fallback.description).toContain(`One of ${FALLBACKS.join(', ')}`);
  });
  it('documents the sessionHeader length limit', () => {
    expect(affinity.properties.sessionHeader.description).toContain(`1..${SESSION_HEADER_MAX} characters`);
  });
  it('types every affinity field and keeps unknown affinity fields out (no preserve-unknown-fields)', () => {
    expect(Object.keys(affinity.properties).sort()).toEqual(['fallback', 'prefixBytes', 'prefixKey', 'sessionHeader', 'type']);
    expect(affinity['x-kubernetes-preserve-unknown-fields']).toBeUndefined();
  });
  it('has a status subresource, the short name ms and an Affinity printer column', () => {
    expect(crd.spec.versions[0].subresources.status).toEqual({});
    expect(crd.spec.names.shortNames).toEqual(['ms']);
    expect(crd.spec.versions[0].additionalPrinterColumns.map((c: { name: string }) => c.name)).toContain('Affinity');
  });
});
