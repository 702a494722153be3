import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { crossNamespaceLabels, crossNamespaceNames, generatedName, generatedNames, isDns1035Label, labelValue, ownershipLabels } from './naming.ts';

describe('generatedNames', () => {
  it('appends -affinity and -prefix-hash to a short name', () => {
    expect(generatedNames('kimi-k2')).toEqual({ backendTrafficPolicy: 'kimi-k2-affinity', prefixHash: 'kimi-k2-prefix-hash' });
  });

  const awkward: { name: string; modelService: string }[] = [
    { name: 'a dotted name', modelService: 'llama.3.70b' },
    { name: 'a 63-character name', modelService: 'a'.repeat(63) },
    { name: 'a 253-character dotted name', modelService: `${'abc.'.repeat(63)}z` },
    { name: 'a name starting with a digit', modelService: '3b-model' },
    { name: 'a name whose cut ends in a dash', modelService: `${'a'.repeat(40)}-${'b'.repeat(30)}` },
  ];
  it.each(awkward)('makes a valid DNS-1035 label of at most 63 characters from $name', ({ modelService }) => {
    for (const suffix of ['affinity', 'prefix-hash']) {
      const name = generatedName(modelService, suffix);
      expect(isDns1035Label(name), name).toBe(true);
      expect(name.endsWith(`-${suffix}`)).toBe(true);
      expect(generatedName(modelService, suffix)).toBe(name);
    }
  });

  it('keeps two long names that share a prefix apart', () => {
    const base = 'x'.repeat(70);
    expect(generatedName(`${base}-one`, 'affinity')).not.toBe(generatedName(`${base}-two`, 'affinity'));
  });

  it('keeps a dotted name apart from its dashed twin', () => {
    expect(generatedName('a.b', 'affinity')).not.toBe(generatedName('a-b', 'affinity'));
  });

  it('is stable across releases (sha256 of the name, checked with sha256sum)', () => {
    expect(generatedName('llama.3.70b', 'prefix-hash')).toBe('llama-3-70b-bb96b313-prefix-hash');
  });
});

describe('labelValue', () => {
  it('keeps a name of up to 63 characters', () => {
    expect(labelValue('a'.repeat(63))).toBe('a'.repeat(63));
    expect(labelValue('llama.3.70b')).toBe('llama.3.70b');
  });
  it('shortens a longer name to 63 characters with a stable hash suffix', () => {
    const long = `${'abc.'.repeat(63)}z`;
    const value = labelValue(long);
    expect(value).toHaveLength(63);
    expect(value).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    expect(labelValue(long)).toBe(value);
  });
  it('labels generated objects as managed by us and owned by the ModelService', () => {
    expect(ownershipLabels('kimi-k2')).toEqual({
      'app.kubernetes.io/managed-by': 'modelplane-affinity',
      'affinity.modelplane.ai/model-service': 'kimi-k2',
    });
  });
});

describe('crossNamespaceNames (policies in an AIGatewayRoute namespace)', () => {
  it.each([
    { name: 'a short namespace and name', namespace: 'ml', modelService: 'kimi-k2' },
    { name: 'a dotted name', namespace: 'team-a', modelService: 'llama.3.70b' },
    { name: 'a long namespace and a 253-character name', namespace: 'n'.repeat(63), modelService: `${'abc.'.repeat(63)}z` },
    { name: 'a name starting with a digit', namespace: 'ml', modelService: '3b' },
  ])('is a stable DNS-1035 label for $name', ({ namespace, modelService }) => {
    const names = crossNamespaceNames(namespace, modelService);
    for (const [suffix, name] of [['affinity', names.backendTrafficPolicy], ['prefix-hash', names.prefixHash]] as const) {
      expect(isDns1035Label(name), name).toBe(true);
      expect(name.endsWith(`-${suffix}`)).toBe(true);
    }
    expect(crossNamespaceNames(namespace, modelService)).toEqual(names);
  });

  it('reads the namespace and the name, with the hash of both: ml/kimi-k2', () => {
    const hash = createHash('sha256').update('ml.kimi-k2').digest('hex').slice(0, 8);
    expect(crossNamespaceNames('ml', 'kimi-k2')).toEqual({ backendTrafficPolicy: `ml-kimi-k2-${hash}-affinity`, prefixHash: `ml-kimi-k2-${hash}-prefix-hash` });
  });

  it('keeps apart ModelServices whose dashed namespace and name read alike (a-b/c, a/b-c) and same names in two namespaces', () => {
    const all = [crossNamespaceNames('a-b', 'c'), crossNamespaceNames('a', 'b-c'), crossNamespaceNames('a', 'b.c'), crossNamespaceNames('x', 'c')];
    expect(new Set(all.map((n) => n.backendTrafficPolicy)).size).toBe(all.length);
  });

  it('labels them with the namespace as well, since no ownerReference can', () => {
    expect(crossNamespaceLabels('ml', 'kimi-k2')).toEqual({ ...ownershipLabels('kimi-k2'), 'affinity.modelplane.ai/model-service-namespace': 'ml' });
  });
});
