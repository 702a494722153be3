// node:http2 keeps each session's open streams in a JS Map (its internal
// session state, `streams`). Under churn (a stream per request, tens in
// flight) that Map rehashes every few dozen streams, and V8 allocates the
// new hash table in the old generation, because the session's is old. The
// old table is left as it was, still pointing at the streams it held. It is
// garbage, but a scavenge cannot know that: it keeps everything an
// old-generation object points to. So every stream in flight at a rehash
// survives the scavenges and is promoted, with its readable and writable
// state and its :authority string (an external string, the cost of
// 'clear.external_string_table'), and only a mark-compact frees it: about
// 1 KB per request at 64 streams in flight, a 20-40 ms mark-compact every
// second or so, and those pauses were the open-loop burst p99
// (bench/RESULTS.md, "Issue 14: the burst tail's cause").
//
// The table below never rehashes: a fixed array of slots indexed by the
// stream id (client streams are odd and increase by 2), with a Map only for
// a stream whose slot is taken by a live older stream (one still open 4,096
// streams later on the same connection). Deleting clears the slot, so
// nothing dead points at a stream.
//
// Swapping node's Map reaches into node:http2's internals. useStreamTable
// checks the shape it relies on and leaves the session alone when that shape
// is not there; ext-proc/session-stream-table.test.ts fails on a Node whose
// internals moved, so an upgrade that breaks the swap is seen.
import type http2 from 'node:http2';

const SLOTS = 4096;
const MASK = SLOTS - 1;
/** Stream ids are 31-bit and never 0 (0 is the connection), so 0 marks a free slot. */
const FREE = 0;

export class StreamTable<V> implements Map<number, V> {
  private readonly ids = new Int32Array(SLOTS);
  private readonly values_: (V | undefined)[] = new Array<V | undefined>(SLOTS).fill(undefined);
  /** Streams whose slot a live older stream holds. */
  private readonly overflow = new Map<number, V>();
  private inSlots = 0;

  get size(): number {
    return this.inSlots + this.overflow.size;
  }

  get [Symbol.toStringTag](): string {
    return 'StreamTable';
  }

  get(id: number): V | undefined {
    const slot = (id >>> 1) & MASK;
    if (this.ids[slot] === id) return this.values_[slot];
    return this.overflow.size === 0 ? undefined : this.overflow.get(id);
  }

  has(id: number): boolean {
    return this.ids[(id >>> 1) & MASK] === id || (this.overflow.size !== 0 && this.overflow.has(id));
  }

  set(id: number, value: V): this {
    if (!Number.isInteger(id) || id <= 0 || id > 0x7fffffff) throw new RangeError(`StreamTable: ${id} is not an HTTP/2 stream id`);
    const slot = (id >>> 1) & MASK;
    const held = this.ids[slot];
    if (held === id) this.values_[slot] = value;
    else if (held === FREE && !this.overflow.has(id)) {
      this.ids[slot] = id;
      this.values_[slot] = value;
      this.inSlots++;
    } else this.overflow.set(id, value);
    return this;
  }

  delete(id: number): boolean {
    const slot = (id >>> 1) & MASK;
    if (this.ids[slot] === id) {
      this.ids[slot] = FREE;
      this.values_[slot] = undefined;
      this.inSlots--;
      return true;
    }
    return this.overflow.size !== 0 && this.overflow.delete(id);
  }

  clear(): void {
    this.ids.fill(FREE);
    this.values_.fill(undefined);
    this.inSlots = 0;
    this.overflow.clear();
  }

  /** Each entry once; the callback may delete entries (node destroys every stream this way when a session ends). */
  forEach(callback: (value: V, id: number, table: Map<number, V>) => void, thisArg?: unknown): void {
    for (const [id, value] of this.entries()) callback.call(thisArg, value, id, this);
  }

  *entries(): MapIterator<[number, V]> {
    for (let slot = 0; slot < SLOTS && this.inSlots > 0; slot++) {
      const id = this.ids[slot] as number;
      if (id !== FREE) yield [id, this.values_[slot] as V];
    }
    if (this.overflow.size !== 0) yield* [...this.overflow.entries()];
  }

  *keys(): MapIterator<number> {
    for (const [id] of this.entries()) yield id;
  }

  *values(): MapIterator<V> {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator](): MapIterator<[number, V]> {
    return this.entries();
  }
}

/** node:http2's per-session state, as far as the swap relies on it. */
interface SessionState {
  streams: Map<number, unknown> | StreamTable<unknown>;
}

function sessionState(session: http2.Http2Session): SessionState | undefined {
  const key = Object.getOwnPropertySymbols(session).find((symbol) => symbol.description === 'state');
  const state: unknown = key === undefined ? undefined : (session as unknown as Record<symbol, unknown>)[key];
  if (typeof state !== 'object' || state === null || !('streams' in state)) return undefined;
  // node's is a SafeMap (its primordials' Map): a Map by its tag, not by instanceof.
  const { streams } = state;
  if (!(streams instanceof StreamTable) && Object.prototype.toString.call(streams) !== '[object Map]') return undefined;
  return state as SessionState;
}

/**
 * Gives a session a StreamTable in place of node:http2's stream Map, with
 * the streams it already has. False, and the session untouched, when node's
 * internals are not the shape this relies on.
 */
export function useStreamTable(session: http2.Http2Session): boolean {
  const state = sessionState(session);
  if (state === undefined) return false;
  if (state.streams instanceof StreamTable) return true;
  const table = new StreamTable<unknown>();
  for (const [id, stream] of state.streams) table.set(id, stream);
  state.streams = table;
  return true;
}

/** Whether a session's streams are in a StreamTable (for tests). */
export function hasStreamTable(session: http2.Http2Session): boolean {
  return sessionState(session)?.streams instanceof StreamTable;
}
