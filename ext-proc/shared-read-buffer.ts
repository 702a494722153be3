// A net.Server whose connections all read into one buffer. node:net gives
// each read a new buffer and reports it to V8 as external memory, which V8
// counts towards starting a mark-compact until a scavenge finds the buffer
// dead: at 32 KiB bodies and ~13,000 requests a second that is ~400 MB/s, and
// it drove the hasher's burst tail (bench/RESULTS.md, "one read buffer").
// node:net offers a caller's buffer (the `onread` option) only to sockets it
// did not accept, so each accepted socket's handle moves into a Socket made
// with one. That uses node:net's `_handle` field, not a documented API; where
// a Node has none, connections read as usual and onFallback says so once.
//
// One buffer serves every connection because reads are delivered one at a
// time on the event loop and each is handled before the next: receivers must
// copy what they keep (h2-connection.ts, grpc-wire.ts do).
import net from 'node:net';

/** Big enough that a burst of 32 KiB bodies takes few reads; node:net's own reads are at most 64 KiB. */
const READ_BUFFER_BYTES = 256 * 1024;

export interface SharedReadBufferOptions {
  /** A new connection: return what takes its reads (each chunk lent, valid only during the call). */
  onConnection(socket: net.Socket): (chunk: Buffer) => void;
  /** This Node's accepted sockets have no movable handle; reads use a new buffer each. Called once. */
  onFallback?(reason: string): void;
  /** Where the accepted socket's handle is found: movableHandle, unless a test stands in for a Node without one. */
  handleOf?(socket: net.Socket): object | undefined;
}

interface AcceptedSocket {
  _handle: unknown;
}

/** The accepted socket's native handle, if this Node has one where node:net keeps it. */
export function movableHandle(socket: net.Socket): object | undefined {
  const handle = (socket as unknown as AcceptedSocket)._handle;
  return typeof handle === 'object' && handle !== null && typeof (handle as { readStart?: unknown }).readStart === 'function' ? handle : undefined;
}

export function createSharedReadBufferServer(options: SharedReadBufferOptions): net.Server {
  const buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  let fellBack = false;
  return net.createServer({ pauseOnConnect: true }, (accepted) => {
    const handle = (options.handleOf ?? movableHandle)(accepted);
    if (handle === undefined) {
      if (!fellBack) options.onFallback?.("net.Socket has no _handle with readStart on this Node: each read gets a new buffer (more garbage collection under load)");
      fellBack = true;
      accepted.on('data', options.onConnection(accepted));
      accepted.resume();
      return;
    }
    // The accepted Socket keeps the server's count of connections: it is
    // destroyed (without a handle, that only counts it closed) when the new
    // one closes, so server.close() still waits for every connection.
    (accepted as unknown as AcceptedSocket)._handle = null;
    let receive: (chunk: Buffer) => void = () => {};
    const onread = {
      buffer,
      callback: (bytes: number, into: Uint8Array): boolean => {
        receive(Buffer.from(into.buffer, into.byteOffset, bytes));
        return true;
      },
    };
    const socket = new net.Socket({ handle, onread } as unknown as net.SocketConstructorOpts);
    socket.once('close', () => accepted.destroy());
    receive = options.onConnection(socket);
  });
}
