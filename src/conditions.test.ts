import { describe, expect, it } from 'vitest';
import { Reasons, setAffinityReady } from './conditions.ts';

const t0 = new Date('2026-01-01T00:00:00.000Z');
const t1 = new Date('2026-01-02T00:00:00.000Z');

describe('setAffinityReady', () => {
  it('creates the condition with a transition time', () => {
    expect(setAffinityReady(undefined, { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t0)).toEqual({
      type: 'AffinityReady', status: 'True', reason: 'Applied', message: 'm', observedGeneration: 1, lastTransitionTime: '2026-01-01T00:00:00Z',
    });
  });

  it('returns undefined when nothing changed, so no status write happens', () => {
    const first = setAffinityReady(undefined, { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t0);
    expect(setAffinityReady([first!], { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t1)).toBeUndefined();
  });

  it('keeps the transition time when only the message changes, and moves it when the status flips', () => {
    const first = setAffinityReady(undefined, { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t0)!;
    expect(setAffinityReady([first], { status: 'True', reason: Reasons.Applied, message: 'n', observedGeneration: 2 }, t1)?.lastTransitionTime).toBe('2026-01-01T00:00:00Z');
    expect(setAffinityReady([first], { status: 'False', reason: Reasons.ApplyFailed, message: 'x' }, t1)?.lastTransitionTime).toBe('2026-01-02T00:00:00Z');
  });
});
