// The gRPC-over-HTTP/2 wire format, as much of it as the hasher serves
// (PROTOCOL-HTTP2 in grpc/grpc): length-prefixed messages and status
// trailers. Pure; h2-connection.ts does the HTTP/2.
import type { HeaderField } from './hpack.ts';

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
 * Buffers for messages that arrive over several chunks, reused. The chunks
 * are lent (server.ts reads every connection into one buffer, which the next
 * read overwrites), so what a reader keeps of them is copied; a new buffer
 * per such message would be as much array-buffer memory per request (32 KiB)
 * as the new buffer per read that drove the 32 KiB bursts' mark-compacts
 * (bench/RESULTS.md, "one read buffer for every connection"). A
 * buffer handed out with a message goes back to the pool at the next push to
 * any reader, so a message stays whole until then. Sizes are a power of two
 * times 1, 1.25, 1.5 or 1.75 (at most a quarter wasted: a 32 KiB body's
 * message takes 40 KiB, not 64); at most MAX_POOLED_BYTES wait in the pool,
 * the rest is left to the GC.
 */
const MIN_POOLED_BYTES = 1024;
const MAX_POOLED_BYTES = 8 * 1024 * 1024;
const pooled = new Map<number, Buffer[]>();
let pooledBytes = 0;
const lent: Buffer[] = [];

/** The size of the buffer acquire gives for `bytes`. */
function pooledSize(bytes: number): number {
  if (bytes <= MIN_POOLED_BYTES) return MIN_POOLED_BYTES;
  const step = 2 ** (Math.ceil(Math.log2(bytes)) - 3);
  return Math.ceil(bytes / step) * step;
}

/** A buffer of `size` (a pooledSize), from the pool when one waits there. */
function acquire(size: number): Buffer {
  const buffer = pooled.get(size)?.pop();
  if (buffer === undefined) return Buffer.allocUnsafeSlow(size);
  pooledBytes -= buffer.length;
  return buffer;
}

/**
 * What the unfinished messages of every reader may hold together, and of the
 * readers of one connection (UnfinishedShare). Each stream's window lets a
 * client send up to a whole message (128 KiB) and stop, on up to 10,000
 * streams a connection; past these a push is refused (RESOURCE_EXHAUSTED,
 * and Envoy fails that request open) instead of the hasher outgrowing its
 * 256 MiB memory limit (its peak RSS under load is ~110 MiB), and a share
 * per connection keeps one client that stops mid-message from refusing
 * everyone else's. 32 MiB is 800 32 KiB bodies caught between two frames on
 * one connection at the same moment; 96 MiB, 2,400 over all.
 */
export const MAX_UNFINISHED_BYTES = 96 * 1024 * 1024;
export const MAX_UNFINISHED_BYTES_PER_CONNECTION = 32 * 1024 * 1024;
let unfinishedBytes = 0;

/** The unfinished-message bytes of one connection's readers. */
export class UnfinishedShare {
  bytes = 0;
}

/** The bytes unfinished messages hold now (a metric; 0 when no message is part-way in). */
export function unfinishedMessageBytes(): number {
  return unfinishedBytes;
}

/** Returns the buffers handed out with the last push's messages. */
function reclaimLent(): void {
  for (const buffer of lent) {
    if (pooledBytes + buffer.length > MAX_POOLED_BYTES) continue;
    let free = pooled.get(buffer.length);
    if (free === undefined) pooled.set(buffer.length, (free = []));
    free.push(buffer);
    pooledBytes += buffer.length;
  }
  lent.length = 0;
}

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
 * Chunks are lent: push keeps no view of one past its return. Messages are
 * views, not copies: into the chunk they arrived in, or, for a message that
 * arrived in several chunks, into a pooled buffer that the next push to any
 * reader may reuse. Use (or copy) the messages of one push before the next
 * push, and before the chunk's owner overwrites it.
 */
export class MessageReader<M extends Buffer | TruncatedMessage = Buffer> {
  private readonly maxMessageBytes: number;
  private readonly keepPrefix: boolean;
  /** The 5-byte prefix of the message being put together, and how much of it has come. */
  private readonly head = Buffer.allocUnsafe(5);
  private headBytes = 0;
  /** The message being put together (prefix excluded): its buffer, how many of its bytes are kept, how many have come. */
  private assembly: Buffer | null = null;
  private keptBytes = 0;
  private filled = 0;
  /** Its declared length. */
  private declared = 0;
  /** Bytes of a longer message still to drop, and its prefix, handed out once they are. */
  private dropping = 0;
  private truncated: TruncatedMessage | undefined;

  private readonly share: UnfinishedShare | undefined;

  /** `keepPrefix`: use keepingPrefix, which types the messages as they then are. `share`: the connection's, for its limit. */
  constructor(maxMessageBytes: number, keepPrefix = false, share?: UnfinishedShare) {
    this.maxMessageBytes = maxMessageBytes;
    this.keepPrefix = keepPrefix;
    this.share = share;
  }

  /** A reader that hands out the first maxMessageBytes bytes of a longer message instead of refusing it. */
  static keepingPrefix(maxMessageBytes: number, share?: UnfinishedShare): MessageReader<Buffer | TruncatedMessage> {
    return new MessageReader<Buffer | TruncatedMessage>(maxMessageBytes, true, share);
  }

  /** The complete messages the chunk finishes, in order; an error ends the stream. */
  push(chunk: Buffer): M[] | WireError {
    reclaimLent();
    const messages: M[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.dropping > 0) {
        const dropped = Math.min(this.dropping, chunk.length - at);
        this.dropping -= dropped;
        at += dropped;
        if (this.dropping > 0) break;
        messages.push(this.truncated as M);
        this.truncated = undefined;
        continue;
      }
      if (this.headBytes === 0) {
        // Nothing is waiting (the usual case): the chunk's whole messages are
        // views into it, and only a message it does not finish is copied.
        while (chunk.length - at >= 5) {
          const length = chunk.readUInt32BE(at + 1);
          const refused = this.refusal(chunk[at] as number, length);
          if (refused !== undefined) return refused;
          if (length > this.maxMessageBytes || chunk.length - at < 5 + length) break;
          messages.push(chunk.subarray(at + 5, at + 5 + length) as M);
          at += 5 + length;
        }
        if (at === chunk.length) break;
      }
      if (this.headBytes < 5) {
        const copied = chunk.copy(this.head, this.headBytes, at, Math.min(chunk.length, at + 5 - this.headBytes));
        this.headBytes += copied;
        at += copied;
        if (this.headBytes < 5) break;
        const length = this.head.readUInt32BE(1);
        const refused = this.refusal(this.head[0] as number, length);
        if (refused !== undefined) return refused;
        this.declared = length;
        this.keptBytes = Math.min(length, this.maxMessageBytes);
        this.filled = 0;
      }
      if (this.filled < this.keptBytes) {
        if (at === chunk.length) break;
        const end = Math.min(chunk.length, at + this.keptBytes - this.filled);
        const assembly = this.room(this.filled + end - at);
        if (!Buffer.isBuffer(assembly)) return assembly;
        chunk.copy(assembly, this.filled, at, end);
        this.filled += end - at;
        at = end;
        if (this.filled < this.keptBytes) break;
      }
      this.finishMessage(messages);
    }
    return messages;
  }

  /**
   * The buffer of the message being put together, with room for `bytes`. It
   * grows with what has come (doubling, up to the kept length), not to the
   * declared length at once: a 5-byte prefix alone must not take 128 KiB.
   */
  private room(bytes: number): Buffer | WireError {
    const held = this.assembly;
    if (held !== null && held.length >= bytes) return held;
    let wanted = Math.min(this.keptBytes, Math.max(bytes, 2 * (held?.length ?? 0)));
    // Nearly all of it: take all of it, so a 32 KiB body (16 KiB frames) grows once, not twice.
    if (this.keptBytes - wanted <= wanted / 4) wanted = this.keptBytes;
    const size = pooledSize(wanted);
    const more = size - (held?.length ?? 0);
    if (this.share !== undefined && this.share.bytes + more > MAX_UNFINISHED_BYTES_PER_CONNECTION) {
      return {
        code: GrpcStatus.RESOURCE_EXHAUSTED,
        message: `messages still arriving on this connection's streams hold ${this.share.bytes} bytes; this one would take ${more} more, over the ${MAX_UNFINISHED_BYTES_PER_CONNECTION}-byte limit per connection`,
      };
    }
    if (unfinishedBytes + more > MAX_UNFINISHED_BYTES) {
      return {
        code: GrpcStatus.RESOURCE_EXHAUSTED,
        message: `messages still arriving on this server's streams hold ${unfinishedBytes} bytes; this one would take ${more} more, over the ${MAX_UNFINISHED_BYTES}-byte limit`,
      };
    }
    const grown = acquire(size);
    unfinishedBytes += more;
    if (this.share !== undefined) this.share.bytes += more;
    if (held !== null) {
      held.copy(grown, 0, 0, this.filled);
      lent.push(held);
    }
    this.assembly = grown;
    return grown;
  }

  /** The message being put together has all its kept bytes: hand it out, or, when longer than the limit, start dropping the rest. */
  private finishMessage(messages: M[]): void {
    const assembly = this.assembly;
    this.assembly = null;
    this.headBytes = 0;
    if (assembly !== null) this.giveBack(assembly);
    const bytes = assembly === null ? Buffer.alloc(0) : assembly.subarray(0, this.keptBytes);
    if (this.declared <= this.maxMessageBytes) {
      messages.push(bytes as M);
      return;
    }
    // Longer than the limit (a keepingPrefix reader): a copy of the first bytes outlives the pool's buffer.
    this.truncated = new TruncatedMessage(Buffer.from(bytes), this.declared);
    this.dropping = this.declared - this.keptBytes;
  }

  /** The buffer of a message no longer being put together goes back to the pool at the next push. */
  private giveBack(assembly: Buffer): void {
    unfinishedBytes -= assembly.length;
    if (this.share !== undefined) this.share.bytes -= assembly.length;
    lent.push(assembly);
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
    return this.headBytes > 0 || this.dropping > 0;
  }

  /** Gives the buffer of an unfinished message back to the pool: every stream's reader is discarded when the stream closes, or the bytes it held stay counted against MAX_UNFINISHED_BYTES. The reader is not used again. */
  discard(): void {
    if (this.assembly !== null) this.giveBack(this.assembly);
    this.assembly = null;
    this.headBytes = 0;
    this.dropping = 0;
    this.truncated = undefined;
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

/** The trailers of nearly every call, shared. */
const OK_TRAILERS: readonly HeaderField[] = Object.freeze([Object.freeze(['grpc-status', String(GrpcStatus.OK)] as const)]);

export function statusTrailers(code: GrpcStatus, message: string): readonly HeaderField[] {
  if (code === GrpcStatus.OK && message === '') return OK_TRAILERS;
  return message === '' ? [['grpc-status', String(code)]] : [['grpc-status', String(code)], ['grpc-message', encodeGrpcMessage(message)]];
}
