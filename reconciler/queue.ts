// A keyed work queue: a key is queued at most once, never processed by two
// workers at once, and retried with per-key exponential backoff on failure.
export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(baseDelayMs = 200, maxDelayMs = 60_000) {
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
  }

  add(key: string): void {
    if (this.shuttingDown) return;
    if (this.processing.has(key)) {
      this.dirty.add(key); // re-queued when the current run is done
      return;
    }
    if (this.queued.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.processing.add(key);
      waiter(key);
      return;
    }
    this.queued.add(key);
    this.queue.push(key);
  }

  /** Re-adds after a backoff that doubles with each consecutive failure of this key. */
  addRateLimited(key: string): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** failures);
    clearTimeout(this.timers.get(key));
    this.timers.set(
      key,
      setTimeout(() => {
        this.timers.delete(key);
        this.add(key);
      }, delay),
    );
    return delay;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }

  /**
   * Every key waiting out a backoff is queued now, its failures forgotten:
   * after an outage of the API server, the failures were the outage's, and
   * the keys should not each wait up to maxDelayMs more. Returns how many.
   */
  retryNow(): number {
    const keys = [...this.timers.keys()];
    for (const key of keys) {
      clearTimeout(this.timers.get(key));
      this.timers.delete(key);
      this.failures.delete(key);
      this.add(key);
    }
    return keys.length;
  }

  /** Resolves with the next key, or undefined once shut down. */
  get(): Promise<string | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) {
      this.queued.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.delete(key)) this.add(key);
  }

  get length(): number {
    return this.queue.length;
  }

  shutDown(): void {
    this.shuttingDown = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const waiter of this.waiters.splice(0)) waiter(undefined);
  }
}

/**
 * Concurrent reconciles. Each one is a few sequential API requests, so the API
 * server, not this process, sets the pace: in a 1,000-ModelService create
 * storm on 2 cores, 4 workers finished sooner than 8 or 16, which competed
 * with the clients creating the ModelServices (bench/RESULTS.md).
 */
export const DEFAULT_WORKERS = 4;
