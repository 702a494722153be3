// The open streams of one HTTP/2 connection, by stream id, in a table that
// never rehashes: a fixed array of slots indexed by the stream id (client
// streams are odd and increase by 2), with a Map only for a stream whose
// slot a live older stream holds (one still open 4,096 streams later).
// Deleting clears the slot, so nothing dead points at a stream.
//
// Why not a Map: under churn (a stream per request, tens in flight) a Map
// rehashes every few dozen streams, and V8 allocates the new hash table in
// the old generation once the Map is old. The old table is left as it was,
// still pointing at the streams it held; it is garbage, but a scavenge keeps
// whatever an old-generation object points at. So every stream in flight at
// a rehash was promoted and freed only by a mark-compact. That was node:http2's
// own stream Map, about 1 KB per request at 64 streams in flight
// (bench/RESULTS.md, "Issue 14: the burst tail's cause").

const SLOTS = 4096;
const MASK = SLOTS - 1;
/** Stream ids are 31-bit and never 0 (0 is the connection), so 0 marks a free slot. */
const FREE = 0;

/** The subset of a Map's interface the connection uses: get, set, delete, size, forEach. */
export class StreamTable<V> {
  private readonly ids = new Int32Array(SLOTS);
  private readonly values: (V | undefined)[] = new Array<V | undefined>(SLOTS).fill(undefined);
  /** Streams whose slot a live older stream holds. */
  private readonly overflow = new Map<number, V>();
  private inSlots = 0;

  get size(): number {
    return this.inSlots + this.overflow.size;
  }

  get(id: number): V | undefined {
    const slot = (id >>> 1) & MASK;
    if (this.ids[slot] === id) return this.values[slot];
    return this.overflow.size === 0 ? undefined : this.overflow.get(id);
  }

  set(id: number, value: V): this {
    if (!Number.isInteger(id) || id <= 0 || id > 0x7fffffff) throw new RangeError(`StreamTable: ${id} is not an HTTP/2 stream id`);
    const slot = (id >>> 1) & MASK;
    const held = this.ids[slot];
    if (held === id) this.values[slot] = value;
    else if (held === FREE && !this.overflow.has(id)) {
      this.ids[slot] = id;
      this.values[slot] = value;
      this.inSlots++;
    } else this.overflow.set(id, value);
    return this;
  }

  delete(id: number): boolean {
    const slot = (id >>> 1) & MASK;
    if (this.ids[slot] === id) {
      this.ids[slot] = FREE;
      this.values[slot] = undefined;
      this.inSlots--;
      return true;
    }
    return this.overflow.size !== 0 && this.overflow.delete(id);
  }

  /**
   * Each entry once; the callback may delete entries (the connection closes
   * every stream this way when it ends). Stops once it has seen as many
   * slotted entries as there were at the start, so a connection with one
   * stream open does not walk 4,096 slots.
   */
  forEach(callback: (value: V, id: number) => void): void {
    const total = this.inSlots;
    let seen = 0;
    for (let slot = 0; slot < SLOTS && seen < total; slot++) {
      const id = this.ids[slot] as number;
      if (id !== FREE) {
        seen++;
        callback(this.values[slot] as V, id);
      }
    }
    if (this.overflow.size !== 0) this.overflow.forEach(callback);
  }
}
