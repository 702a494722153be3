// The transport of one gRPC call on an HTTP/2 stream (h2-connection.ts):
// response headers at once, messages framed by grpc-wire.ts, the status in
// trailers.
import type { H2Stream } from './h2-connection.ts';
import type { HeaderField } from './hpack.ts';
import { GRPC_CONTENT_TYPE, GrpcStatus, frameMessage, statusTrailers } from './grpc-wire.ts';

export interface Status {
  code: GrpcStatus;
  details: string;
}

const OK: Status = Object.freeze({ code: GrpcStatus.OK, details: '' });
// Shared by every call. No date header: gRPC has no use for it.
const RESPONSE_HEADERS: readonly HeaderField[] = Object.freeze([Object.freeze([':status', '200'] as const), Object.freeze(['content-type', GRPC_CONTENT_TYPE] as const)]);

/** One gRPC call on an HTTP/2 stream: response headers at once, trailers when it ends. */
export class Call {
  readonly stream: H2Stream;
  /** Our status has been handed to HTTP/2. */
  ended = false;

  constructor(stream: H2Stream) {
    this.stream = stream;
    stream.respond(RESPONSE_HEADERS);
  }

  send(payload: Uint8Array): void {
    this.sendFramed(frameMessage(payload));
  }

  /** A message already framed by frameMessage (and never changed afterwards: it may be shared). */
  sendFramed(frame: Buffer): void {
    if (!this.ended && !this.stream.closed) this.stream.write(frame);
  }

  end(status: Status = OK): void {
    if (this.ended) return;
    this.ended = true;
    if (this.stream.closed) return;
    this.stream.end(statusTrailers(status.code, status.details));
    // The usual end comes after the client's half-close and needs nothing
    // more. Otherwise the answer it got is complete: RST_STREAM(NO_ERROR)
    // after the trailers tells it to stop sending.
    this.stream.stopRequest();
  }
}

/** A call that fails before any message: a trailers-only response. */
export function refuse(stream: H2Stream, code: GrpcStatus, details: string): void {
  stream.respondAndEnd([...RESPONSE_HEADERS, ...statusTrailers(code, details)]);
}
