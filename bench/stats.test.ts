import { describe, expect, it } from 'vitest';
import { alternatingPair, alternatingRuns, alternatingRunsAsync, cpuSeconds, median, runQueueWaitSeconds, sampleSum } from './stats.ts';

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

describe('alternatingRuns', () => {
  it('runs the targets in order at even indexes and in reverse at odd ones, and returns each result at its target\'s position', () => {
    for (const [index, order] of [[0, ['a', 'b', 'c']], [1, ['c', 'b', 'a']], [2, ['a', 'b', 'c']], [3, ['c', 'b', 'a']]] as const) {
      const ran: string[] = [];
      const results = alternatingRuns(index, ['a', 'b', 'c'], (target, position) => {
        ran.push(target);
        return `${target}${position}#${ran.length}`;
      });
      expect(ran).toEqual(order);
      // Each result is its own target's (name and position), whatever the order it ran in.
      expect(results.map((r) => r.slice(0, 2))).toEqual(['a0', 'b1', 'c2']);
      expect(results.map((r) => Number(r.split('#')[1]))).toEqual(index % 2 === 0 ? [1, 2, 3] : [3, 2, 1]);
    }
  });

  it('over two rounds runs every target as often before as after each other one', () => {
    const before = new Map<string, number>();
    for (const index of [0, 1]) {
      const ran: string[] = [];
      alternatingRuns(index, ['a', 'b', 'c'], (target) => ran.push(target));
      for (const [i, x] of ran.entries()) for (const y of ran.slice(i + 1)) before.set(`${x}<${y}`, (before.get(`${x}<${y}`) ?? 0) + 1);
    }
    for (const [x, y] of [['a', 'b'], ['a', 'c'], ['b', 'c']]) expect([before.get(`${x}<${y}`), before.get(`${y}<${x}`)]).toEqual([1, 1]);
  });
});

describe('alternatingRunsAsync', () => {
  it('awaits each run before starting the next, in alternatingRuns\' order, and returns the results in targets order', async () => {
    for (const [index, order] of [[0, ['a', 'b']], [1, ['b', 'a']]] as const) {
      const events: string[] = [];
      const results = await alternatingRunsAsync(index, ['a', 'b'], async (target, position) => {
        events.push(`start ${target}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
        events.push(`end ${target}`);
        return `${target}${position}`;
      });
      expect(events).toEqual([`start ${order[0]}`, `end ${order[0]}`, `start ${order[1]}`, `end ${order[1]}`]);
      expect(results).toEqual(['a0', 'b1']);
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

describe('runQueueWaitSeconds', () => {
  it('reads a live process\'s run-queue wait, which only grows', () => {
    const before = runQueueWaitSeconds(process.pid);
    const end = cpuSeconds(process.pid) + 0.05;
    while (cpuSeconds(process.pid) < end) {
      /* keep the thread runnable */
    }
    const after = runQueueWaitSeconds(process.pid);
    expect(Number.isFinite(before)).toBe(true);
    expect(after).toBeGreaterThanOrEqual(before);
  });
});
