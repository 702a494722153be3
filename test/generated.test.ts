import { describe, expect, it } from 'vitest';
import type { Condition, KubeObject } from '../src/model-service.ts';
import { render } from '../src/render.ts';
import { modelService } from './fixtures/model-service.ts';
import { convergence, isConverged } from './testbed/generated.ts';

const OPTIONS = { extProcImage: 'x' };
const ready = (reason = 'Applied', status: 'True' | 'False' = 'True'): { conditions: Condition[] } => ({
  conditions: [{ type: 'AffinityReady', status, reason, message: '', lastTransitionTime: '2026-01-01T00:00:00Z' }],
});
const session = modelService('a', { type: 'Session', sessionHeader: 'X-S' }, { uid: 'uid-a', status: ready() });
const prefix = modelService('b', { type: 'PrefixHash' }, { uid: 'uid-b', status: ready() });
const objectsOf = (...ms: typeof session[]) => ms.flatMap((m) => render(m, OPTIONS).objects);
const stray: KubeObject = { ...objectsOf(session)[0]!, metadata: { ...objectsOf(session)[0]!.metadata, name: 'gone-affinity' } };

describe('convergence', () => {
  it.each([
    { name: 'everything rendered exists and every ModelService is ready: converged', ms: [session, prefix], objects: objectsOf(session, prefix), converged: true, field: 'missing', count: 0 },
    { name: 'a missing object is reported', ms: [session, prefix], objects: objectsOf(session, prefix).slice(1), converged: false, field: 'missing', count: 1 },
    { name: 'an object nobody wants is an orphan', ms: [session], objects: [...objectsOf(session), stray], converged: false, field: 'orphans', count: 1 },
    { name: 'an object owned by an earlier namesake (another uid) has drifted', ms: [session], objects: objectsOf(modelService('a', { type: 'Session', sessionHeader: 'X-S' }, { uid: 'old' })), converged: false, field: 'drifted', count: 1 },
    { name: 'a ModelService without AffinityReady=True is not ready', ms: [{ ...session, status: ready('ApplyFailed', 'False') }], objects: objectsOf(session), converged: false, field: 'notReady', count: 1 },
    { name: 'an ObjectConflict condition is a conflict', ms: [{ ...session, status: ready('ObjectConflict', 'False') }], objects: objectsOf(session), converged: false, field: 'conflicts', count: 1 },
  ] as const)('$name', ({ ms, objects, converged, field, count }) => {
    const c = convergence(ms, objects, OPTIONS);
    expect(c[field]).toHaveLength(count);
    expect(isConverged(c)).toBe(converged);
  });
});
