// The gRPC-over-HTTP/2 wire format, as much of it as the hasher serves
// (PROTOCOL-HTTP2 in grpc/grpc): length-prefixed messages and status
// trailers. Pure; h2-connection.ts does the HTTP/2.
export const GRPC_CONTENT_TYPE = 'application/grpc';

/** The gRPC status codes this server sends (the numbering is fixed by the gRPC spec). */
export const GrpcStatus = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
} as const;
export type GrpcStatus = (typeof GrpcStatus)[keyof typeof GrpcStatus];

/** The name of a status code, for logs. */
export function statusName(code: GrpcStatus): string {
  return Object.entries(GrpcStatus).find(([, value]) => value === code)?.[0] ?? String(code);
}

/** Frames one serialized message: a 0 flag byte (not compressed), a 4-byte big-endian length, the bytes. */
export function frameMessage(payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + payload.length);
  frame[0] = 0;
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, 5);
  return frame;
}

/**
 * Framed answers that differ only in one ASCII value of a fixed length, such
 * as the hashed-body answer with its 16 hex digits. The answer is encoded
 * twice, with two placeholders; the bytes where the two differ are where the
 * value goes. Protobuf lengths depend on the value's length only, so writing
 * a value there gives exactly the bytes that encoding the answer anew would,
 * for a fraction of the work (a copy instead of building and encoding ~10
 * objects per stream).
 */
export function fixedLengthValueFrames(encode: (value: string) => Uint8Array, valueLength: number): (value: string) => Buffer {
  const first = frameMessage(encode('a'.repeat(valueLength)));
  const second = frameMessage(encode('b'.repeat(valueLength)));
  const differing = [...first.keys()].filter((i) => first[i] !== second[i]);
  const offset = differing[0] ?? -1;
  if (first.length !== second.length || differing.length !== valueLength || differing.some((at, k) => at !== offset + k)) {
    throw new Error('fixedLengthValueFrames: the value is not one contiguous run of its bytes in the encoded answer');
  }
  return (value) => {
    if (value.length !== valueLength) throw new Error(`fixedLengthValueFrames: value of ${value.length} characters, expected ${valueLength}`);
    const frame = Buffer.allocUnsafe(first.length);
    first.copy(frame);
    frame.write(value, offset, 'latin1');
    return frame;
  };
}

export interface WireError {
  code: GrpcStatus;
  message: string;
}

/**
 * Where a message that arrived in several chunks is put together: one buffer
 * for every reader, grown to the largest such message. A 32 KiB body comes in
 * 16 KiB DATA frames, and a fresh 32 KiB buffer per request made every
 * scavenge slower (bench/RESULTS.md). Readers run one at a time on the event
 * loop, and each message is used before the next push, so one buffer serves all.
 */
let assembly = Buffer.allocUnsafe(0);
const prefix = Buffer.allocUnsafe(5);

/**
 * The first maxMessageBytes bytes of a longer message, whose remaining bytes
 * were read and dropped (MessageReader.keepingPrefix): behind Envoy AI
 * Gateway, whose processor buffers whole bodies under a large connection
 * buffer limit (50Mi in its examples), our BufferedPartial filter is handed
 * the whole body in one message.
 */
export class TruncatedMessage {
  readonly prefix: Buffer;
  /** The declared length of the whole message. */
  readonly length: number;

  constructor(prefix: Buffer, length: number) {
    this.prefix = prefix;
    this.length = length;
  }
}

/**
 * Splits a request stream into messages as its bytes arrive. A message whose
 * declared length is over maxMessageBytes is refused from its 5-byte prefix,
 * before any of it is buffered, or, by a reader made with keepingPrefix,
 * handed out as a TruncatedMessage of its first maxMessageBytes bytes (the
 * rest is dropped as it arrives, never buffered). Compressed messages are refused: the server
 * advertises no grpc-accept-encoding, so a client has no reason to send one.
 *
 * Messages are views, not copies: into the chunk they arrived in, or, for a
 * message that arrived in several chunks, into a buffer shared by all readers
 * that the next push to any reader may overwrite. Use (or copy) the messages
 * of one push before the next.
 */
export class MessageReader<M extends Buffer | TruncatedMessage = Buffer> {
  private readonly maxMessageBytes: number;
  private readonly keepPrefix: boolean;
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes of a longer message still to drop, and its prefix, handed out once they are. */
  private dropping = 0;
  private truncated: TruncatedMessage | undefined;

  /** `keepPrefix`: use keepingPrefix, which types the messages as they then are. */
  constructor(maxMessageBytes: number, keepPrefix = false) {
    this.maxMessageBytes = maxMessageBytes;
    this.keepPrefix = keepPrefix;
  }

  /** A reader that hands out the first maxMessageBytes bytes of a longer message instead of refusing it. */
  static keepingPrefix(maxMessageBytes: number): MessageReader<Buffer | TruncatedMessage> {
    return new MessageReader<Buffer | TruncatedMessage>(maxMessageBytes, true);
  }

  /** The complete messages the chunk finishes, in order; an error ends the stream. */
  push(chunk: Buffer): M[] | WireError {
    const messages: M[] = [];
    if (this.dropping > 0) {
      const dropped = Math.min(this.dropping, chunk.length);
      this.dropping -= dropped;
      if (this.dropping > 0) return messages;
      messages.push(this.truncated as M);
      this.truncated = undefined;
      chunk = chunk.subarray(dropped);
      if (chunk.length === 0) return messages;
    }
    if (this.buffered === 0) {
      // Nothing is waiting (the usual case): the chunk's whole messages are
      // views into it, and only a message it does not finish is kept.
      let at = 0;
      while (chunk.length - at >= 5) {
        const length = chunk.readUInt32BE(at + 1);
        const refused = this.refusal(chunk[at] as number, length);
        if (refused !== undefined) return refused;
        if (length > this.maxMessageBytes || chunk.length - at < 5 + length) break;
        messages.push(chunk.subarray(at + 5, at + 5 + length) as M);
        at += 5 + length;
      }
      if (at === chunk.length) return messages;
      if (at > 0) chunk = chunk.subarray(at);
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= 5) {
      const first = this.chunks[0] as Buffer;
      const head = first.length >= 5 ? first : this.gather(5, prefix);
      const length = head.readUInt32BE(1);
      const refused = this.refusal(head[0] as number, length);
      if (refused !== undefined) return refused;
      if (length <= this.maxMessageBytes) {
        if (this.buffered < 5 + length) break;
        messages.push(this.take(5 + length).subarray(5) as M);
        continue;
      }
      // Longer than the limit (a keepingPrefix reader): keep a copy of the first bytes, drop the rest.
      if (this.buffered < 5 + this.maxMessageBytes) break;
      const kept = new TruncatedMessage(Buffer.from(this.take(5 + this.maxMessageBytes).subarray(5)), length);
      const rest = length - this.maxMessageBytes;
      const buffered = Math.min(rest, this.buffered);
      this.drop(buffered);
      if (buffered < rest) {
        this.dropping = rest - buffered;
        this.truncated = kept;
        return messages;
      }
      messages.push(kept as M);
    }
    return messages;
  }

  /** Why a message with this flag byte and declared length is refused, if it is. */
  private refusal(flag: number, length: number): WireError | undefined {
    if (flag !== 0) {
      return { code: GrpcStatus.UNIMPLEMENTED, message: 'compressed messages are not accepted (no grpc-accept-encoding was offered)' };
    }
    if (length > this.maxMessageBytes && !this.keepPrefix) {
      return {
        code: GrpcStatus.RESOURCE_EXHAUSTED,
        message:
          `ProcessingRequest of ${length} bytes exceeds the ${this.maxMessageBytes}-byte limit ` +
          '(a BufferedPartial body message is at most the connection buffer limit, 32 KiB by default in Envoy Gateway)',
      };
    }
    return undefined;
  }

  /** True when bytes of an unfinished message are waiting. */
  get pending(): boolean {
    return this.buffered > 0 || this.dropping > 0;
  }

  /** The first `bytes` buffered bytes copied into `into`, without consuming them. */
  private gather(bytes: number, into: Buffer): Buffer {
    let filled = 0;
    for (const chunk of this.chunks) {
      filled += chunk.copy(into, filled, 0, Math.min(chunk.length, bytes - filled));
      if (filled === bytes) break;
    }
    return into.subarray(0, bytes);
  }

  /** Consumes the first `bytes` buffered bytes (all of them buffered): a view into their chunk, or a copy in the shared assembly buffer when they span chunks. */
  private take(bytes: number): Buffer {
    const first = this.chunks[0] as Buffer;
    let message: Buffer;
    if (first.length >= bytes) message = first.subarray(0, bytes);
    else {
      if (assembly.length < bytes) assembly = Buffer.allocUnsafe(Math.max(bytes, 2 * assembly.length));
      message = this.gather(bytes, assembly);
    }
    this.drop(bytes);
    return message;
  }

  /** Forgets the first `bytes` buffered bytes. Views already handed out stay valid: chunks are sliced, never changed. */
  private drop(bytes: number): void {
    this.buffered -= bytes;
    while (bytes > 0) {
      const chunk = this.chunks[0] as Buffer;
      if (chunk.length > bytes) {
        this.chunks[0] = chunk.subarray(bytes);
        return;
      }
      this.chunks.shift();
      bytes -= chunk.length;
    }
  }
}

/**
 * grpc-message is percent-encoded: bytes outside printable ASCII, and '%'
 * itself, become %XX of their UTF-8 bytes.
 */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** A header field as the HTTP/2 layer takes it (name, value). */
export type TrailerField = readonly [name: string, value: string];

/** The trailers of nearly every call, shared. */
const OK_TRAILERS: readonly TrailerField[] = Object.freeze([Object.freeze(['grpc-status', String(GrpcStatus.OK)] as const)]);

export function statusTrailers(code: GrpcStatus, message: string): readonly TrailerField[] {
  if (code === GrpcStatus.OK && message === '') return OK_TRAILERS;
  return message === '' ? [['grpc-status', String(code)]] : [['grpc-status', String(code)], ['grpc-message', encodeGrpcMessage(message)]];
}
