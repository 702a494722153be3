import { describe, expect, it } from 'vitest';
import { WorkQueue } from './queue.ts';

describe('WorkQueue', () => {
  it('queues a key once however often it is added', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('a');
    q.add('b');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
  });

  it('never hands a key to two workers at once, and re-queues it when it changed meanwhile', async () => {
    const q = new WorkQueue();
    q.add('a');
    const key = await q.get();
    q.add('a'); // changed while being processed
    expect(q.length).toBe(0);
    q.done(key as string);
    expect(q.length).toBe(1);
  });

  it('backs off exponentially per key and resets on forget', () => {
    const q = new WorkQueue(100, 1000);
    expect([q.addRateLimited('a'), q.addRateLimited('a'), q.addRateLimited('a'), q.addRateLimited('a'), q.addRateLimited('a')]).toEqual([100, 200, 400, 800, 1000]);
    q.forget('a');
    expect(q.addRateLimited('a')).toBe(100);
    q.shutDown();
  });

  it('queues every key in backoff at once, with its failures forgotten, when asked to retry now', async () => {
    const q = new WorkQueue(60_000, 60_000);
    q.addRateLimited('a');
    q.addRateLimited('b');
    q.addRateLimited('b');
    expect(q.length).toBe(0);
    expect(q.retryNow()).toBe(2);
    expect([await q.get(), await q.get()]).toEqual(['a', 'b']);
    expect(q.addRateLimited('b')).toBe(60_000);
    expect(q.retryNow()).toBe(1);
    q.shutDown();
  });

  it('wakes waiting workers with undefined on shut down', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.shutDown();
    expect(await waiting).toBeUndefined();
  });
});
