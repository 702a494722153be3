// A do-nothing ext_proc server for bench/data-plane.ts: every message Envoy
// sends gets CONTINUE of its own kind and nothing else (no header mutation,
// no route-cache clearing). What Envoy and a Node gRPC server spend on an
// ext_proc hop when the processor does no work: the floor under the hasher.
// Served on node:http2, as the hasher was until it got its own HTTP/2
// framing (ext-proc/h2-connection.ts), gRPC framed by ext-proc/grpc-wire.ts;
// bench/transport-gc.ts sets it against bench/raw-h2-noop.ts. The message kind is read from the first field tag
// of the ProcessingRequest, so the body is never decoded. answerFor is shared
// with bench/raw-h2-noop.ts, the same noop on its own HTTP/2 framing.
//
//   node bench/noop-ext-proc.ts HOST PORT
import http2 from 'node:http2';
import { GRPC_CONTENT_TYPE, GrpcStatus, MessageReader, frameMessage, statusTrailers } from '../ext-proc/grpc-wire.ts';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../ext-proc/handlers.ts';
import { PROCESS_METHOD_PATH, REQUEST_KINDS, processMethod, type ProcessingResponse } from '../ext-proc/protocol.ts';

const [host = '127.0.0.1', portText = '9002'] = process.argv.slice(2);

// ProcessingRequest's oneof fields are numbered 2..7 in REQUEST_KINDS order
// (envoy/service/ext_proc/v3/external_processor.proto); each answer is framed once.
const { responseSerialize } = processMethod();
const answers = REQUEST_KINDS.map((kind) => frameMessage(responseSerialize({ [kind]: kind.endsWith('trailers') ? {} : { response: { status: 'CONTINUE' } } } as ProcessingResponse)));

function varint(bytes: Buffer, at: number): [value: number, next: number] {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[at++];
    if (byte === undefined) return [-1, at];
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, at];
    shift += 7;
  }
}

/** The answer to one ProcessingRequest: the kind of its first oneof field, undefined when it has none. */
export function answerFor(message: Buffer): Buffer | undefined {
  let at = 0;
  while (at < message.length) {
    const [tag, afterTag] = varint(message, at);
    const field = Math.floor(tag / 8);
    if (field >= 2 && field <= 7) return answers[field - 2];
    const wire = tag & 7;
    if (wire === 0) at = varint(message, afterTag)[1];
    else if (wire === 1) at = afterTag + 8;
    else if (wire === 5) at = afterTag + 4;
    else if (wire === 2) {
      const [length, afterLength] = varint(message, afterTag);
      at = afterLength + length;
    } else return undefined;
  }
  return undefined;
}

/** The trailers of nearly every stream, built once (as the hasher shares its own). */
const OK_TRAILERS = Object.fromEntries(statusTrailers(GrpcStatus.OK, ''));

// Serves only when run; bench/raw-h2-noop.ts imports answerFor.
if (import.meta.main) {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    if (headers[':path'] !== PROCESS_METHOD_PATH) {
      stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE, ...Object.fromEntries(statusTrailers(GrpcStatus.UNIMPLEMENTED, 'only ExternalProcessor/Process')) }, { endStream: true });
      return;
    }
    let status: GrpcStatus = GrpcStatus.OK;
    stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers(status === GrpcStatus.OK ? OK_TRAILERS : Object.fromEntries(statusTrailers(status, ''))));
    const reader = new MessageReader(DEFAULT_MAX_MESSAGE_BYTES);
    stream.on('data', (chunk: Buffer) => {
      const messages = reader.push(chunk);
      if (!Array.isArray(messages)) {
        status = messages.code;
        stream.end();
        return;
      }
      for (const message of messages) {
        const answer = answerFor(message);
        if (answer === undefined) {
          status = GrpcStatus.INVALID_ARGUMENT;
          stream.end();
          return;
        }
        stream.write(answer);
      }
    });
    stream.on('end', () => {
      if (!stream.writableEnded) stream.end();
    });
    stream.on('close', () => reader.discard());
  });
  server.listen(Number(portText), host, () => process.stderr.write(`do-nothing ext_proc on ${host}:${portText}\n`));
  process.once('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
}
