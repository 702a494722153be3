import { readFileSync } from 'node:fs';
import jsonPatch from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { type AdmissionRequest, admit, parseAdmissionReview, review } from './admission.ts';
import type { ModelService } from './model-service.ts';

const fixture = JSON.parse(readFileSync(new URL('../test/fixtures/admission/create-prefixhash.json', import.meta.url), 'utf8'));

function requestWith(object: unknown, overrides: Partial<AdmissionRequest> = {}): AdmissionRequest {
  const parsed = parseAdmissionReview({ ...fixture, request: { ...fixture.request, object, ...overrides } });
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.request;
}

function modelService(affinity: unknown, annotations?: Record<string, string>): ModelService {
  return {
    apiVersion: 'modelplane.ai/v1alpha1',
    kind: 'ModelService',
    metadata: { name: 'kimi-k2', namespace: 'ml', ...(annotations ? { annotations } : {}) },
    spec: { endpoints: [{ weight: 1 }], affinity } as ModelService['spec'],
  };
}

function decodePatch(patch: string | undefined): jsonPatch.Operation[] {
  return patch === undefined ? [] : JSON.parse(Buffer.from(patch, 'base64').toString('utf8'));
}

describe('mutate', () => {
  it('defaults a PrefixHash ModelService and creates the annotations map with escaped keys', () => {
    const response = admit(requestWith(fixture.request.object), 'mutate');
    expect(response.uid).toBe('0df28fbd-5f5f-11e8-bc74-36e6bb280816');
    expect(response.patchType).toBe('JSONPatch');
    expect(decodePatch(response.patch)).toEqual(
      expect.arrayContaining([
        { op: 'add', path: '/spec/affinity/prefixBytes', value: 1024 },
        { op: 'add', path: '/spec/affinity/fallback', value: 'NextEndpoint' },
        {
          op: 'add',
          path: '/metadata/annotations',
          value: {
            'affinity.modelplane.ai/backend-traffic-policy': 'kimi-k2-affinity',
            'affinity.modelplane.ai/envoy-extension-policy': 'kimi-k2-prefix-hash',
            'affinity.modelplane.ai/ext-proc': 'kimi-k2-prefix-hash',
          },
        },
      ]),
    );
  });

  it('adds single annotations with ~1-escaped keys when the map exists', () => {
    const ms = modelService({ type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'NextEndpoint' }, { owner: 'team-a' });
    const patch = decodePatch(admit(requestWith(ms), 'mutate').patch);
    expect(patch).toEqual([
      { op: 'add', path: '/metadata/annotations/affinity.modelplane.ai~1backend-traffic-policy', value: 'kimi-k2-affinity' },
    ]);
  });

  it('removes annotations that no longer apply when switching PrefixHash to Session', () => {
    const ms = modelService(
      { type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'NextEndpoint' },
      {
        'affinity.modelplane.ai/backend-traffic-policy': 'kimi-k2-affinity',
        'affinity.modelplane.ai/envoy-extension-policy': 'kimi-k2-prefix-hash',
        'affinity.modelplane.ai/ext-proc': 'kimi-k2-prefix-hash',
        keep: 'me',
      },
    );
    const patch = decodePatch(admit(requestWith(ms), 'mutate').patch);
    expect(patch).toHaveLength(2);
    expect(patch).toEqual(
      expect.arrayContaining([
        { op: 'remove', path: '/metadata/annotations/affinity.modelplane.ai~1envoy-extension-policy' },
        { op: 'remove', path: '/metadata/annotations/affinity.modelplane.ai~1ext-proc' },
      ]),
    );
  });

  it('is idempotent: the mutated object produces no patch', () => {
    const first = admit(requestWith(fixture.request.object), 'mutate');
    const mutated = jsonPatch.applyPatch(structuredClone(fixture.request.object), decodePatch(first.patch)).newDocument;
    const second = admit(requestWith(mutated), 'mutate');
    expect(second).toEqual({ uid: fixture.request.uid, allowed: true });
  });

  it('adds no annotations to an invalid spec (validation denies it)', () => {
    const patch = decodePatch(admit(requestWith(modelService({ type: 'Session' })), 'mutate').patch);
    expect(patch).toEqual([{ op: 'add', path: '/spec/affinity/fallback', value: 'NextEndpoint' }]);
  });

  it('writes nothing into the objects of the request (the rules copy only what they change)', () => {
    const deepFreeze = <T>(value: T): T => {
      if (typeof value === 'object' && value !== null) {
        for (const child of Object.values(value)) deepFreeze(child);
        Object.freeze(value);
      }
      return value;
    };
    const annotations = { 'affinity.modelplane.ai/ext-proc': 'stale', 'team/owner': 'ml' };
    const old = modelService({ type: 'PrefixHash', prefixBytes: 1024, fallback: 'NextEndpoint' }, annotations);
    const updated = modelService({ type: 'Session', sessionHeader: 'X-Session-ID', prefixBytes: 1024, fallback: 'NextEndpoint' }, annotations);
    const request = deepFreeze(requestWith(updated, { operation: 'UPDATE', oldObject: old as unknown as Record<string, unknown> }));
    // Frozen objects throw on any write (ES modules run in strict mode).
    const patch = decodePatch(admit(request, 'mutate').patch);
    expect(patch).toContainEqual({ op: 'remove', path: '/spec/affinity/prefixBytes' });
    expect(patch).toContainEqual({ op: 'remove', path: '/metadata/annotations/affinity.modelplane.ai~1ext-proc' });
    expect(admit(request, 'validate').allowed).toBe(true);
    const create = deepFreeze(requestWith(modelService({ type: 'PrefixHash' })));
    expect(decodePatch(admit(create, 'mutate').patch)).toContainEqual({ op: 'add', path: '/spec/affinity/prefixBytes', value: 1024 });
  });

  it('leaves a ModelService without affinity untouched', () => {
    const ms = modelService(undefined);
    delete ms.spec?.affinity;
    expect(admit(requestWith(ms), 'mutate')).toEqual({ uid: fixture.request.uid, allowed: true });
  });
});

describe('validate', () => {
  it('lets an update through that leaves a stored invalid spec unchanged (a finalizer removed), and judges one that changes it', () => {
    const invalid = modelService({ type: 'Session', sessionHeader: 'Connection' });
    const withFinalizer = { ...invalid, metadata: { ...invalid.metadata, finalizers: ['affinity.modelplane.ai/cleanup'] } };
    const update = (object: ModelService, old: ModelService) => admit(requestWith(object, { operation: 'UPDATE', oldObject: old as unknown as Record<string, unknown> }), 'validate');
    expect(update(invalid, withFinalizer).allowed).toBe(true);
    expect(update(modelService({ type: 'Session', sessionHeader: 'Upgrade' }), withFinalizer).allowed).toBe(false);
    expect(admit(requestWith(invalid), 'validate').allowed).toBe(false);
  });

  it('denies with every error in Kubernetes format and names the fields in the causes', () => {
    const response = admit(requestWith(modelService({ type: 'Session', prefixBytes: 5, fallback: 'Next' })), 'validate');
    expect(response.allowed).toBe(false);
    expect(response.status?.code).toBe(422);
    expect(response.status?.message).toBe(
      'ModelService.modelplane.ai "kimi-k2" is invalid: [spec.affinity.fallback: Unsupported value: "Next": supported values: "NextEndpoint", "None", ' +
        'spec.affinity.sessionHeader: Required value: required when type is Session]',
    );
    expect(response.status?.details?.causes.map((c) => c.field)).toEqual(['spec.affinity.fallback', 'spec.affinity.sessionHeader']);
    expect(response.warnings).toEqual(['spec.affinity.prefixBytes is ignored when type is Session']);
  });

  it('allows a valid spec with warnings for ignored fields', () => {
    const response = admit(requestWith(modelService({ type: 'PrefixHash', prefixBytes: 2048, sessionHeader: 'x-s', fallback: 'None' })), 'validate');
    expect(response).toEqual({ uid: fixture.request.uid, allowed: true, warnings: ['spec.affinity.sessionHeader is ignored when type is PrefixHash'] });
  });
});

describe('requests that are not ours', () => {
  const cases: { name: string; overrides: Partial<AdmissionRequest>; object: unknown }[] = [
    { name: 'a DELETE', overrides: { operation: 'DELETE' }, object: null },
    { name: 'a ConfigMap', overrides: { kind: { group: '', version: 'v1', kind: 'ConfigMap' } }, object: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } } },
    { name: 'a CONNECT', overrides: { operation: 'CONNECT' }, object: null },
  ];
  it.each(cases)('allows $name untouched in both modes', ({ overrides, object }) => {
    for (const mode of ['mutate', 'validate'] as const) {
      expect(admit(requestWith(object, overrides), mode)).toEqual({ uid: fixture.request.uid, allowed: true });
    }
  });
});

describe('a ModelService of a shape the rules do not expect', () => {
  // The mutating webhook runs before the API server checks the CRD schema, so the rules see these first.
  const odd = { ...modelService({ type: 'Session', sessionHeader: 'X-Session-ID' }), spec: { endpoints: 'many', affinity: { type: 'Session', sessionHeader: 'X-Session-ID' } } };
  it('leaves a spec.endpoints that is not a list to the CRD schema: defaulted and allowed, no warning', () => {
    const { response } = review(requestWith(odd), 'mutate');
    expect(response).toMatchObject({ uid: fixture.request.uid, allowed: true, patchType: 'JSONPatch' });
    expect(response.warnings).toBeUndefined();
  });
  // A rule that throws on an input nobody foresaw (here: a spec that throws when read) is a refusal, not a 500.
  it.each(['mutate', 'validate'] as const)('is refused by %s with a message that says what to check when a rule throws, never thrown', (mode) => {
    const request = requestWith(modelService({ type: 'Session', sessionHeader: 'X-Session-ID' }));
    Object.defineProperty(request.object, 'spec', { enumerable: true, get: () => { throw new Error('unreadable spec'); } });
    const { response } = review(request, mode);
    expect(response).toMatchObject({ uid: fixture.request.uid, allowed: false, status: { code: 400, reason: 'BadRequest' } });
    expect(response.status?.message).toMatch(/^ModelService\.modelplane\.ai "kimi-k2" could not be checked: unreadable spec; check that metadata and spec are objects and spec\.endpoints is a list$/);
  });
});

describe('parseAdmissionReview', () => {
  const malformed: { name: string; body: unknown; error: RegExp }[] = [
    { name: 'a string', body: 'hello', error: /body/ },
    { name: 'null', body: null, error: /body/ },
    { name: 'v1beta1', body: { ...fixture, apiVersion: 'admission.k8s.io/v1beta1' }, error: /apiVersion/ },
    { name: 'a missing request', body: { apiVersion: fixture.apiVersion, kind: 'AdmissionReview' }, error: /request/ },
    { name: 'an empty uid', body: { ...fixture, request: { ...fixture.request, uid: '' } }, error: /request\.uid/ },
    { name: 'an unknown operation', body: { ...fixture, request: { ...fixture.request, operation: 'PATCH' } }, error: /request\.operation/ },
    { name: 'an object that is an array', body: { ...fixture, request: { ...fixture.request, object: [] } }, error: /request\.object/ },
  ];
  it.each(malformed)('refuses $name and says where', ({ body, error }) => {
    const parsed = parseAdmissionReview(body);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.error).toMatch(error);
  });

  it('echoes apiVersion, kind and uid in the reply', () => {
    const reply = review(requestWith(fixture.request.object), 'validate');
    expect(reply).toMatchObject({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: fixture.request.uid, allowed: true } });
  });
});
