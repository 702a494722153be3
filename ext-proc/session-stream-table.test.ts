// StreamTable against a Map, operation by operation; and the swap on this
// Node's real node:http2, with a stream held open while 9,000 later ones wrap
// the table, so slots collide and the overflow is used by node itself.
import http2 from 'node:http2';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { StreamTable, hasStreamTable, useStreamTable } from './session-stream-table.ts';

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
      else expect(table.has(id)).toBe(map.has(id));
      expect(table.size).toBe(map.size);
      if (step % 1000 === 0) expect(sorted(table)).toEqual(sorted(map));
    }
    expect(sorted(table.entries())).toEqual(sorted(map.entries()));
    expect([...table.keys()].sort((a, b) => a - b)).toEqual([...map.keys()].sort((a, b) => a - b));
    expect([...table.values()].sort()).toEqual([...map.values()].sort());
  });

  it('visits every entry once in forEach while the callback deletes them, as node does when a session ends', () => {
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

  it('empties on clear', () => {
    const table = new StreamTable<string>();
    table.set(1, 'a').set(8193, 'b');
    table.clear();
    expect(table.size).toBe(0);
    expect(table.get(1)).toBeUndefined();
    expect([...table]).toEqual([]);
  });
});

describe('useStreamTable on this Node', () => {
  it("replaces node:http2's stream Map, and node serves through it: a stream held open while 9,000 later ones wrap the table, then a clean close", async () => {
    const server = http2.createServer();
    const swapped: boolean[] = [];
    server.on('session', (session) => swapped.push(useStreamTable(session), hasStreamTable(session)));
    let held: http2.ServerHttp2Stream | undefined;
    server.on('stream', (stream, headers) => {
      if (headers[':path'] === '/held') {
        held = stream;
        stream.respond({ ':status': 200 });
        stream.write('open');
        return;
      }
      stream.respond({ ':status': 200 });
      stream.end(String(headers[':path']));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const heldRequest = client.request({ ':path': '/held' });
      await once(heldRequest, 'response');
      const ask = (path: string) =>
        new Promise<string>((resolve, reject) => {
          const request = client.request({ ':path': path });
          let body = '';
          request.setEncoding('utf8');
          request.on('data', (chunk: string) => (body += chunk));
          request.on('end', () => resolve(body));
          request.on('error', reject);
        });
      // 9,000 streams after the held one (ids up to ~18,000: two laps of the
      // 4,096 slots), 50 in flight at a time.
      for (let batch = 0; batch < 180; batch++) {
        const paths = Array.from({ length: 50 }, (_, i) => `/r${batch * 50 + i}`);
        expect(await Promise.all(paths.map(ask))).toEqual(paths);
      }
      expect(swapped).toEqual([true, true]);
      expect(held?.closed).toBe(false);
      held?.end('done');
      let heldBody = '';
      heldRequest.setEncoding('utf8');
      heldRequest.on('data', (chunk: string) => (heldBody += chunk));
      await once(heldRequest, 'end');
      expect(heldBody).toBe('opendone');
    } finally {
      // node closes a session only once its stream table is empty: a size
      // the table got wrong would hang here.
      await new Promise<void>((resolve) => client.close(resolve));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
