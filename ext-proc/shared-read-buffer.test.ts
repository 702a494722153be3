// Connections of a shared-read-buffer server read into one buffer, lose no
// byte, and still count as the server's connections (server.close waits).
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createSharedReadBufferServer, movableHandle } from './shared-read-buffer.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a server whose connections read into one buffer', () => {
  it('hands every connection its bytes in views of one buffer, in order, and closes only after its connections', async () => {
    const backing = new Set<ArrayBufferLike>();
    const received = new Map<number, Buffer[]>();
    const fallbacks: string[] = [];
    let next = 0;
    const server = createSharedReadBufferServer({
      onConnection(socket) {
        const id = next++;
        received.set(id, []);
        socket.on('end', () => socket.end(`${id}`));
        return (chunk) => {
          backing.add(chunk.buffer);
          // Lent: copied, as receivers must.
          received.get(id)?.push(Buffer.from(chunk));
        };
      },
      onFallback: (reason) => fallbacks.push(reason),
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;

    const bodies = [0, 1, 2].map((c) => Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * (c + 3)) & 0xff)));
    const clients = await Promise.all(
      bodies.map(async () => {
        const socket = net.connect(port, '127.0.0.1');
        await once(socket, 'connect');
        return socket;
      }),
    );
    // Interleaved writes, so reads of different connections alternate.
    for (let at = 0; at < 300_000; at += 25_000) for (const [c, socket] of clients.entries()) socket.write((bodies[c] as Buffer).subarray(at, at + 25_000));
    const answers = await Promise.all(
      clients.map(async (socket) => {
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.end();
        await once(socket, 'close');
        return Buffer.concat(chunks).toString();
      }),
    );
    expect(answers.sort()).toEqual(['0', '1', '2']);
    expect(fallbacks).toEqual([]);
    expect(backing.size).toBe(1);
    const byConnection = [...received.values()].map((chunks) => Buffer.concat(chunks));
    expect(byConnection.map((bytes) => bodies.findIndex((body) => body.equals(bytes))).sort()).toEqual([0, 1, 2]);

    // server.close() waits for open connections, as with node:net's own sockets.
    const open = net.connect(port, '127.0.0.1');
    await once(open, 'connect');
    await sleep(20);
    let closed = false;
    server.close(() => (closed = true));
    await sleep(50);
    expect(closed).toBe(false);
    open.resume();
    open.end();
    await once(open, 'close');
    for (let i = 0; i < 100 && !closed; i++) await sleep(10);
    expect(closed).toBe(true);
  });

  it('reads as node:net does, and says so once, on a Node whose sockets have no movable handle', async () => {
    const fallbacks: string[] = [];
    const received: Buffer[] = [];
    const server = createSharedReadBufferServer({
      onConnection(socket) {
        socket.on('end', () => socket.end('done'));
        return (chunk) => received.push(Buffer.from(chunk));
      },
      onFallback: (reason) => fallbacks.push(reason),
      handleOf: () => undefined,
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    for (const text of ['first', 'second']) {
      const socket = net.connect(port, '127.0.0.1');
      const answer: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => answer.push(chunk));
      socket.end(text);
      await once(socket, 'close');
      expect(Buffer.concat(answer).toString()).toBe('done');
    }
    expect(Buffer.concat(received).toString()).toBe('firstsecond');
    expect(fallbacks).toEqual([expect.stringMatching(/^net.Socket has no _handle with readStart on this Node: each read gets a new buffer/)]);
    await new Promise((resolve) => server.close(resolve));
  });

  it('finds no movable handle on a socket that has none', () => {
    expect(movableHandle(new net.Socket())).toBeUndefined();
  });
});
