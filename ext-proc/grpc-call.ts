// The transport of one gRPC call on a node:http2 server stream: response
// headers at once, messages framed by grpc-wire.ts, the status in trailers.
import http2 from 'node:http2';
import { GRPC_CONTENT_TYPE, GrpcStatus, frameMessage, statusTrailers } from './grpc-wire.ts';

export interface Status {
  code: GrpcStatus;
  details: string;
}

const OK: Status = Object.freeze({ code: GrpcStatus.OK, details: '' });
// Shared by every call: node:http2 copies headers and options on each respond().
// No date header: gRPC has no use for it, and it cost a header per answer.
const RESPONSE_HEADERS = Object.freeze({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE });
const RESPONSE_OPTIONS = Object.freeze({ waitForTrailers: true, sendDate: false });

/** The call of a stream, kept on the stream so that one trailers listener serves every call (no closure per stream). */
const CALL = Symbol('grpc-call');
type CallStream = http2.ServerHttp2Stream & { [CALL]: Call };

function sendStatus(this: CallStream): void {
  const stream = this;
  const { status } = stream[CALL];
  stream.sendTrailers(statusTrailers(status.code, status.details));
  // A client that has not half-closed is told with RST_STREAM(NO_ERROR)
  // to stop sending; the answer it got is complete. One that has (the
  // usual end) needs nothing more: the trailers close the stream, and a
  // reset would cost a frame and 17-39% of the CPU per stream (bench/RESULTS.md).
  // Whether it has is known now for the usual end, so only the others
  // pay for a check on the next turn of the loop.
  if (!stream.readableEnded) {
    setImmediate(() => {
      if (!stream.closed && !stream.readableEnded) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  }
}

/** One gRPC call on an HTTP/2 stream: response headers at once, trailers when it ends. */
export class Call {
  readonly stream: http2.ServerHttp2Stream;
  /** Our status has been handed to HTTP/2. */
  ended = false;
  /** What the trailers will say (set by end). */
  status: Status = OK;

  constructor(stream: http2.ServerHttp2Stream) {
    this.stream = stream;
    (stream as CallStream)[CALL] = this;
    stream.respond(RESPONSE_HEADERS, RESPONSE_OPTIONS);
    // node:http2 asks once per stream, when the data ends.
    stream.on('wantTrailers', sendStatus);
  }

  send(payload: Uint8Array): void {
    this.sendFramed(frameMessage(payload));
  }

  /** A message already framed by frameMessage (and never changed afterwards: it may be shared). */
  sendFramed(frame: Buffer): void {
    if (!this.ended) this.stream.write(frame);
  }

  end(status: Status = OK): void {
    if (this.ended) return;
    this.ended = true;
    this.status = status;
    if (this.stream.destroyed) return;
    this.stream.end();
  }
}

/** A call that fails before any message: a trailers-only response. */
export function refuse(stream: http2.ServerHttp2Stream, code: GrpcStatus, details: string): void {
  stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE, ...statusTrailers(code, details) }, { endStream: true });
}
