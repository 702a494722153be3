// StreamTable against a Map, operation by operation, with colliding ids.
// h2-connection.test.ts drives it through real connections.
import { describe, expect, it } from 'vitest';
import { StreamTable } from './stream-table.ts';

/** A small seeded generator (mulberry32), so a failing sequence can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sorted = (entries: Iterable<[number, string]>) => [...entries].sort(([a], [b]) => a - b);
/** The table's entries as forEach gives them. */
function entriesOf(table: StreamTable<string>): [number, string][] {
  const entries: [number, string][] = [];
  table.forEach((value, id) => entries.push([id, value]));
  return entries;
}

describe('StreamTable', () => {
  it.each([1, 2, 3])('gives what a Map gives over 20,000 random operations, with colliding ids (seed %i)', (seed) => {
    const next = random(seed);
    const table = new StreamTable<string>();
    const map = new Map<number, string>();
    // Odd ids in three bands 8,192 apart: each id shares its slot with two others.
    const pick = () => 1 + 2 * Math.floor(next() * 300) + 8192 * Math.floor(next() * 3);
    for (let step = 0; step < 20_000; step++) {
      const id = pick();
      const roll = next();
      if (roll < 0.45) {
        table.set(id, `v${step}`);
        map.set(id, `v${step}`);
      } else if (roll < 0.8) expect(table.delete(id)).toBe(map.delete(id));
      else if (roll < 0.9) expect(table.get(id)).toBe(map.get(id));
      else expect(table.get(id) !== undefined).toBe(map.has(id));
      expect(table.size).toBe(map.size);
      if (step % 1000 === 0) expect(sorted(entriesOf(table))).toEqual(sorted(map));
    }
    const entries = entriesOf(table);
    expect(sorted(entries)).toEqual(sorted(map.entries()));
    expect(entries.map(([id]) => id).sort((a, b) => a - b)).toEqual([...map.keys()].sort((a, b) => a - b));
    expect(entries.map(([, value]) => value).sort()).toEqual([...map.values()].sort());
    expect(new Set(entries.map(([id]) => id)).size).toBe(entries.length);
  });

  it('visits every entry once in forEach while the callback deletes them, as the connection does when it ends', () => {
    const table = new StreamTable<string>();
    for (const id of [1, 3, 8193, 16385, 5, 4097]) table.set(id, `s${id}`);
    const seen: number[] = [];
    table.forEach((value, id) => {
      expect(value).toBe(`s${id}`);
      seen.push(id);
      table.delete(id);
    });
    expect(seen.sort((a, b) => a - b)).toEqual([1, 3, 5, 4097, 8193, 16385]);
    expect(table.size).toBe(0);
  });

  it('refuses what is not an HTTP/2 stream id, naming it', () => {
    const table = new StreamTable<string>();
    for (const id of [0, -1, 1.5, 2 ** 31, Number.NaN]) expect(() => table.set(id, 'x')).toThrow(`StreamTable: ${id} is not an HTTP/2 stream id`);
  });
});
