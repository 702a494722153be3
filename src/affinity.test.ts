import { describe, expect, it } from 'vitest';
import { applyDefaults, dropStaleTypeFields, validate } from './affinity.ts';
import { formatFieldError } from './field-errors.ts';
import type { ModelService } from './model-service.ts';

function modelService(affinity: unknown, endpoints: unknown[] = [{ weight: 1 }]): ModelService {
  return {
    apiVersion: 'modelplane.ai/v1alpha1',
    kind: 'ModelService',
    metadata: { name: 'kimi-k2', namespace: 'ml' },
    spec: { endpoints, affinity } as ModelService['spec'],
  };
}

function messages(affinity: unknown): string[] {
  return validate(applyDefaults(modelService(affinity))).errors.map(formatFieldError);
}

describe('applyDefaults', () => {
  const cases: { name: string; affinity: unknown; expected: unknown }[] = [
    { name: 'an absent affinity stays absent', affinity: undefined, expected: undefined },
    { name: 'an empty affinity becomes type None and nothing else', affinity: {}, expected: { type: 'None' } },
    {
      name: 'PrefixHash gets prefixBytes 1024, prefixKey Conversation and fallback NextEndpoint',
      affinity: { type: 'PrefixHash' },
      expected: { type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Conversation', fallback: 'NextEndpoint' },
    },
    {
      name: 'a PrefixHash object written before prefixKey existed is read as Conversation',
      affinity: { type: 'PrefixHash', prefixBytes: 1024, fallback: 'NextEndpoint' },
      expected: { type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Conversation', fallback: 'NextEndpoint' },
    },
    {
      name: 'prefixKey Body is kept',
      affinity: { type: 'PrefixHash', prefixKey: 'Body' },
      expected: { type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Body', fallback: 'NextEndpoint' },
    },
    {
      name: 'an invalid prefixKey is left for validation to judge',
      affinity: { type: 'PrefixHash', prefixKey: 'body' },
      expected: { type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'body', fallback: 'NextEndpoint' },
    },
    {
      name: 'Session gets fallback NextEndpoint but no prefixBytes or prefixKey',
      affinity: { type: 'Session', sessionHeader: 'X-Session-ID' },
      expected: { type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'NextEndpoint' },
    },
    { name: 'None gets no fallback', affinity: { type: 'None' }, expected: { type: 'None' } },
    {
      name: 'explicit values are kept',
      affinity: { type: 'PrefixHash', prefixBytes: 4096, prefixKey: 'Body', fallback: 'None' },
      expected: { type: 'PrefixHash', prefixBytes: 4096, prefixKey: 'Body', fallback: 'None' },
    },
    { name: 'an unknown type gets no defaults', affinity: { type: 'prefixhash' }, expected: { type: 'prefixhash' } },
  ];
  it.each(cases)('$name', ({ affinity, expected }) => {
    expect(applyDefaults(modelService(affinity)).spec?.affinity).toEqual(expected);
  });

  it('does not modify its input', () => {
    const input = modelService({ type: 'PrefixHash' });
    applyDefaults(input);
    expect(input.spec?.affinity).toEqual({ type: 'PrefixHash' });
  });

  it('is idempotent', () => {
    const once = applyDefaults(modelService({ type: 'PrefixHash' }));
    expect(applyDefaults(once)).toEqual(once);
  });
});

describe('validate', () => {
  const valid: { name: string; affinity: unknown }[] = [
    { name: 'no affinity', affinity: undefined },
    { name: 'type None', affinity: { type: 'None' } },
    { name: 'PrefixHash at the lower bound', affinity: { type: 'PrefixHash', prefixBytes: 64 } },
    { name: 'PrefixHash at the upper bound', affinity: { type: 'PrefixHash', prefixBytes: 32768 } },
    { name: 'Session with X-Session-ID', affinity: { type: 'Session', sessionHeader: 'X-Session-ID' } },
    { name: 'Session with every tchar', affinity: { type: 'Session', sessionHeader: "a0!#$%&'*+-.^_`|~Z" } },
    { name: 'Session with a 256-character header', affinity: { type: 'Session', sessionHeader: 'x'.repeat(256) } },
    { name: 'fallback None', affinity: { type: 'Session', sessionHeader: 'x-user', fallback: 'None' } },
  ];
  it.each(valid)('accepts $name', ({ affinity }) => {
    expect(messages(affinity)).toEqual([]);
  });

  const invalidCases: { name: string; affinity: unknown; expected: string[] }[] = [
    {
      name: 'prefixBytes below 64',
      affinity: { type: 'PrefixHash', prefixBytes: 10 },
      expected: ['spec.affinity.prefixBytes: Invalid value: 10: must be between 64 and 32768'],
    },
    {
      name: 'prefixBytes one below the lower bound',
      affinity: { type: 'PrefixHash', prefixBytes: 63 },
      expected: ['spec.affinity.prefixBytes: Invalid value: 63: must be between 64 and 32768'],
    },
    {
      name: 'prefixBytes one above the upper bound',
      affinity: { type: 'PrefixHash', prefixBytes: 32769 },
      expected: ['spec.affinity.prefixBytes: Invalid value: 32769: must be between 64 and 32768'],
    },
    {
      name: 'prefixBytes that is not whole',
      affinity: { type: 'PrefixHash', prefixBytes: 100.5 },
      expected: ['spec.affinity.prefixBytes: Invalid value: 100.5: must be an integer'],
    },
    {
      name: 'prefixBytes as a string',
      affinity: { type: 'PrefixHash', prefixBytes: '1024' },
      expected: ['spec.affinity.prefixBytes: Invalid value: "1024": must be an integer'],
    },
    {
      name: 'Session without sessionHeader',
      affinity: { type: 'Session' },
      expected: ['spec.affinity.sessionHeader: Required value: required when type is Session'],
    },
    {
      name: 'Session with an empty sessionHeader',
      affinity: { type: 'Session', sessionHeader: '' },
      expected: ['spec.affinity.sessionHeader: Required value: required when type is Session'],
    },
    {
      name: 'a fallback in the wrong spelling',
      affinity: { type: 'Session', sessionHeader: 'x-s', fallback: 'Next' },
      expected: ['spec.affinity.fallback: Unsupported value: "Next": supported values: "NextEndpoint", "None"'],
    },
    {
      name: 'a prefixKey in the wrong case',
      affinity: { type: 'PrefixHash', prefixKey: 'conversation' },
      expected: ['spec.affinity.prefixKey: Unsupported value: "conversation": supported values: "Conversation", "Body"'],
    },
    {
      name: 'a prefixKey that is not a string',
      affinity: { type: 'PrefixHash', prefixKey: 1 },
      expected: ['spec.affinity.prefixKey: Unsupported value: 1: supported values: "Conversation", "Body"'],
    },
    {
      name: 'a type in the wrong case',
      affinity: { type: 'prefixhash' },
      expected: ['spec.affinity.type: Unsupported value: "prefixhash": supported values: "PrefixHash", "Session", "None"'],
    },
    {
      name: 'an unknown field',
      affinity: { type: 'None', weight: 3 },
      expected: [
        'spec.affinity.weight: Forbidden: unknown field; supported fields are "type", "prefixBytes", "prefixKey", "sessionHeader", "fallback"',
      ],
    },
    {
      name: 'a header with a space',
      affinity: { type: 'Session', sessionHeader: 'X Session' },
      expected: [
        "spec.affinity.sessionHeader: Invalid value: \"X Session\": must be an HTTP header name: letters, digits and !#$%&'*+-.^_`|~ only (for example X-Session-ID)",
      ],
    },
    {
      name: 'a 257-character header',
      affinity: { type: 'Session', sessionHeader: 'x'.repeat(257) },
      expected: ['spec.affinity.sessionHeader: Too long: may not be more than 256 bytes'],
    },
    {
      name: 'a pseudo-header',
      affinity: { type: 'Session', sessionHeader: ':authority' },
      expected: [
        'spec.affinity.sessionHeader: Invalid value: ":authority": must not be an HTTP/2 pseudo-header; name a regular request header such as X-Session-ID',
      ],
    },
    ...['Connection', 'keep-alive', 'Proxy-Connection', 'transfer-encoding', 'TE', 'trailer', 'Upgrade'].map((h) => ({
      name: `hop-by-hop header ${h}`,
      affinity: { type: 'Session', sessionHeader: h },
      expected: [
        `spec.affinity.sessionHeader: Invalid value: "${h}": must not be a hop-by-hop header (connection, keep-alive, proxy-connection, transfer-encoding, te, trailer, upgrade): proxies drop it before routing`,
      ],
    })),
    {
      name: 'the reserved hash header in any case',
      affinity: { type: 'Session', sessionHeader: 'X-Prompt-Hash' },
      expected: [
        'spec.affinity.sessionHeader: Invalid value: "X-Prompt-Hash": is reserved: the prefix hasher overwrites x-prompt-hash; use type: PrefixHash, or another header',
      ],
    },
    {
      name: 'several errors at once',
      affinity: { type: 'Session', fallback: 'none', extra: true },
      expected: [
        'spec.affinity.fallback: Unsupported value: "none": supported values: "NextEndpoint", "None"',
        'spec.affinity.extra: Forbidden: unknown field; supported fields are "type", "prefixBytes", "prefixKey", "sessionHeader", "fallback"',
        'spec.affinity.sessionHeader: Required value: required when type is Session',
      ],
    },
    {
      name: 'affinity that is not an object',
      affinity: 'PrefixHash',
      expected: ['spec.affinity: Invalid value: "PrefixHash": must be an object'],
    },
  ];
  it.each(invalidCases)('rejects $name', ({ affinity, expected }) => {
    expect(messages(affinity).sort()).toEqual([...expected].sort());
  });

  it.each(['host', 'Content-Length'])('rejects the %s header', (header) => {
    expect(messages({ type: 'Session', sessionHeader: header })[0]).toMatch(/^spec\.affinity\.sessionHeader: Invalid value: .*must not be host or content-length/);
  });

  const warnings: { name: string; affinity: unknown; endpoints?: unknown[]; expected: string[] }[] = [
    {
      name: 'sessionHeader with PrefixHash',
      affinity: { type: 'PrefixHash', sessionHeader: 'X-Session-ID' },
      expected: ['spec.affinity.sessionHeader is ignored when type is PrefixHash'],
    },
    {
      name: 'prefixBytes with Session, even out of bounds',
      affinity: { type: 'Session', sessionHeader: 'x-s', prefixBytes: 5 },
      expected: ['spec.affinity.prefixBytes is ignored when type is Session'],
    },
    {
      name: 'prefixKey with Session',
      affinity: { type: 'Session', sessionHeader: 'x-s', prefixKey: 'Body' },
      expected: ['spec.affinity.prefixKey is ignored when type is Session'],
    },
    {
      name: 'every field with None',
      affinity: { type: 'None', prefixBytes: 100, prefixKey: 'Conversation', sessionHeader: 'x', fallback: 'None' },
      expected: [
        'spec.affinity.prefixBytes is ignored when type is None',
        'spec.affinity.prefixKey is ignored when type is None',
        'spec.affinity.sessionHeader is ignored when type is None',
        'spec.affinity.fallback is ignored when type is None',
      ],
    },
    { name: 'nothing for equal weights', affinity: { type: 'PrefixHash' }, endpoints: [{ weight: 2 }, { weight: 2 }], expected: [] },
    { name: 'nothing for unequal weights without affinity', affinity: { type: 'None' }, endpoints: [{ weight: 1 }, { weight: 3 }], expected: [] },
    // The CRD schema rejects these after the webhooks; the rules must not throw on them first.
    { name: 'nothing when spec.endpoints is not a list', affinity: { type: 'PrefixHash' }, endpoints: 'three' as unknown as [], expected: [] },
    { name: 'nothing for endpoints that are not objects', affinity: { type: 'Session', sessionHeader: 'X-Session-ID' }, endpoints: [null, 7] as unknown as [], expected: [] },
  ];
  it.each(warnings)('warns about $name', ({ affinity, endpoints, expected }) => {
    const result = validate(applyDefaults(modelService(affinity, endpoints)));
    expect(result.errors).toEqual([]);
    expect(result.warnings).toEqual(expected);
  });

  it('warns that Maglev ignores unequal endpoint weights with affinity (envoyproxy/gateway#9775)', () => {
    const result = validate(applyDefaults(modelService({ type: 'PrefixHash' }, [{ weight: 1 }, { weight: 3 }, {}])));
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toMatch(/^spec\.endpoints: unequal weights \(1, 3, 1\).*#9775/);
  });
});

describe('dropStaleTypeFields', () => {
  const cases: { name: string; old: unknown; updated: unknown; expected: unknown }[] = [
    {
      name: 'drops the defaulted prefixBytes when PrefixHash becomes Session',
      old: { type: 'PrefixHash', prefixBytes: 1024, fallback: 'NextEndpoint' },
      updated: { type: 'Session', sessionHeader: 'x-s', prefixBytes: 1024, fallback: 'NextEndpoint' },
      expected: { type: 'Session', sessionHeader: 'x-s', fallback: 'NextEndpoint' },
    },
    {
      name: 'drops the defaulted prefixKey when PrefixHash becomes Session',
      old: { type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Conversation', fallback: 'NextEndpoint' },
      updated: { type: 'Session', sessionHeader: 'x-s', prefixBytes: 1024, prefixKey: 'Conversation', fallback: 'NextEndpoint' },
      expected: { type: 'Session', sessionHeader: 'x-s', fallback: 'NextEndpoint' },
    },
    {
      name: 'keeps a prefixBytes the update changes (it is warned about instead)',
      old: { type: 'PrefixHash', prefixBytes: 1024 },
      updated: { type: 'Session', sessionHeader: 'x-s', prefixBytes: 2048 },
      expected: { type: 'Session', sessionHeader: 'x-s', prefixBytes: 2048 },
    },
    {
      name: 'drops fallback and sessionHeader when Session becomes None',
      old: { type: 'Session', sessionHeader: 'x-s', fallback: 'NextEndpoint' },
      updated: { type: 'None', sessionHeader: 'x-s', fallback: 'NextEndpoint' },
      expected: { type: 'None' },
    },
    {
      name: 'changes nothing when the type stays',
      old: { type: 'PrefixHash', prefixBytes: 1024, sessionHeader: 'x' },
      updated: { type: 'PrefixHash', prefixBytes: 1024, sessionHeader: 'x' },
      expected: { type: 'PrefixHash', prefixBytes: 1024, sessionHeader: 'x' },
    },
  ];
  it.each(cases)('$name', ({ old, updated, expected }) => {
    expect(dropStaleTypeFields(modelService(old), modelService(updated)).spec?.affinity).toEqual(expected);
  });
});
