import { describe, expect, it } from 'vitest';
import { alternatingPair, median, sampleSum } from './stats.ts';

describe('alternatingPair', () => {
  it('runs a first at even indexes and b first at odd ones, and returns the results in [a, b] order', () => {
    for (const [index, order] of [[0, ['a', 'b']], [1, ['b', 'a']], [2, ['a', 'b']]] as const) {
      const ran: string[] = [];
      const results = alternatingPair(index, 'a', 'b', (target) => {
        ran.push(target);
        return `${target}!`;
      });
      expect(ran).toEqual(order);
      expect(results).toEqual(['a!', 'b!']);
    }
  });
});

describe('median and sampleSum', () => {
  it('takes the middle value, or the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });

  it('sums the samples of one series whose labels match', () => {
    const text = ['# HELP x_total x', 'x_total{path="mutate",result="patched"} 3', 'x_total{path="validate",result="allowed"} 4', 'x_total_other 9'].join('\n');
    expect(sampleSum(text, 'x_total')).toBe(7);
    expect(sampleSum(text, 'x_total', { path: 'mutate' })).toBe(3);
  });
});
