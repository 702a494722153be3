// A byte relay between a listening address and a target, each a TCP
// `tcp:HOST:PORT` or a filesystem unix socket `unix:PATH`. Unix sockets work
// across network namespaces, so a pair of relays joins a process in a network
// namespace of its own (Envoy AI Gateway's controller, whose ports collide
// with Envoy Gateway's) to the test bed's loopback services. Used in-process
// and as a script: `node relay.ts LISTEN TARGET`.
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';

type Address = { path: string } | { host: string; port: number };

function parse(address: string): Address {
  if (address.startsWith('unix:')) return { path: address.slice('unix:'.length) };
  const match = /^tcp:(.+):(\d+)$/.exec(address);
  if (match === null) throw new Error(`relay address ${address}: expected unix:PATH or tcp:HOST:PORT`);
  return { host: match[1] as string, port: Number(match[2]) };
}

export interface Relay {
  close(): Promise<void>;
}

export function relay(listen: string, target: string): Promise<Relay> {
  const from = parse(listen);
  const to = parse(target);
  const sockets = new Set<Socket>();
  const server: Server = createServer((downstream) => {
    const upstream = connect(to);
    for (const socket of [downstream, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        downstream.destroy();
        upstream.destroy();
      });
    }
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  if ('path' in from && existsSync(from.path)) rmSync(from.path);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(from, () => {
      server.off('error', reject);
      resolve({
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            for (const socket of sockets) socket.destroy();
          }),
      });
    });
  });
}

if (import.meta.main) {
  const [listen, target, readyFile] = process.argv.slice(2);
  if (listen === undefined || target === undefined) {
    process.stderr.write('usage: node relay.ts LISTEN TARGET [READY_FILE] (each unix:PATH or tcp:HOST:PORT; READY_FILE is created once it listens)\n');
    process.exit(2);
  }
  await relay(listen, target);
  if (readyFile !== undefined) writeFileSync(readyFile, '');
  process.stderr.write(`relay ${listen} -> ${target}\n`);
}
