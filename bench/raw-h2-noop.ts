// bench/noop-ext-proc.ts's do-nothing ext_proc server (CONTINUE of its own
// kind for every message, from the same answerFor) on the hasher's own
// HTTP/2 framing (ext-proc/h2-connection.ts, reading into one buffer as
// the hasher does: ext-proc/shared-read-buffer.ts) instead of node:http2:
// bench/transport-gc.ts sets the two against each other, so the difference
// is the transport alone (bench/RESULTS.md, "Issue 14: the transport's share
// of the burst tail"). Every stream is answered alike, whatever its :path.
//
//   node bench/raw-h2-noop.ts HOST PORT
import type net from 'node:net';
import { GRPC_CONTENT_TYPE, GrpcStatus, MessageReader, statusTrailers } from '../ext-proc/grpc-wire.ts';
import { serveLentReads, type H2Stream } from '../ext-proc/h2-connection.ts';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../ext-proc/handlers.ts';
import type { HeaderField } from '../ext-proc/hpack.ts';
import { connectionLimits } from '../ext-proc/server.ts';
import { createSharedReadBufferServer } from '../ext-proc/shared-read-buffer.ts';
import { answerFor } from './noop-ext-proc.ts';

// Frozen, as the hasher's are, so its HPACK encoding is made once (h2-connection.ts).
const RESPONSE_HEADERS: readonly HeaderField[] = Object.freeze([Object.freeze([':status', '200'] as const), Object.freeze(['content-type', GRPC_CONTENT_TYPE] as const)]);
const READER = Symbol('reader');
type NoopStream = H2Stream & { [READER]: MessageReader };

function onData(this: NoopStream, chunk: Buffer): void {
  if (this.localEnded) return;
  const messages = this[READER].push(chunk);
  if (!Array.isArray(messages)) {
    this.end(statusTrailers(messages.code, ''));
    return;
  }
  for (const message of messages) {
    const answer = answerFor(message);
    if (answer !== undefined) this.write(answer);
  }
}

function onEnd(this: NoopStream): void {
  if (!this.localEnded) this.end(statusTrailers(GrpcStatus.OK, ''));
}

function onClose(this: NoopStream): void {
  this[READER].discard();
}

function onStream(stream: H2Stream): void {
  (stream as NoopStream)[READER] = new MessageReader(DEFAULT_MAX_MESSAGE_BYTES);
  stream.respond(RESPONSE_HEADERS);
  stream.onData = onData;
  stream.onEnd = onEnd;
  stream.onClose = onClose;
}

/** The server, not yet listening; its connections have the hasher's settings and limits, and read into one buffer as the hasher's do. */
export function rawNoopServer(): net.Server {
  return createSharedReadBufferServer({
    onConnection(socket) {
      const connection = serveLentReads(socket, { ...connectionLimits(DEFAULT_MAX_MESSAGE_BYTES), onStream });
      return (chunk) => connection.receive(chunk);
    },
  });
}

if (import.meta.main) {
  const [host = '127.0.0.1', portText = '9002'] = process.argv.slice(2);
  const server = rawNoopServer();
  server.listen(Number(portText), host, () => process.stderr.write(`do-nothing ext_proc on the hasher's own HTTP/2 framing on ${host}:${portText}\n`));
  process.once('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
}
