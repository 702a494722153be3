// bench/noop-ext-proc.ts's do-nothing ext_proc server (CONTINUE of its own
// kind for every message, from the same answerFor) on node:net with its own
// HTTP/2 framing: bench-only, to measure what node:http2 costs the collector.
// node:http2 turns every received header value into a V8 external string,
// which V8 allocates in the old generation, so ~5 per stream pile up for the
// mark-compacts (bench/RESULTS.md, "Issue 14: the transport's share of the
// burst tail"). This server never decodes a header block, so it creates no
// such string, and its per-stream state is one small object and a
// MessageReader that die with the stream.
//
// What it does of RFC 9113: the client preface; its SETTINGS (a 16 MiB
// window, so the peer never waits) and ACKs the peer's; PING ACKs; HEADERS
// with PADDED/PRIORITY and CONTINUATION; DATA with PADDED, split into gRPC
// messages per stream; WINDOW_UPDATE credit as data is consumed; the peer's
// send windows and MAX_FRAME_SIZE for what it sends; RST_STREAM drops a
// stream, GOAWAY closes the connection once answered. Not a general server:
// it answers every stream alike, whatever its :path.
//
// With --reuse-read-buffer every connection reads into one buffer (node:net's
// onread) instead of a new one per read: node reports each read's buffer to
// V8 as external memory, which V8 counts against the old generation's limit
// until a scavenge frees it, so at a few thousand reads a second those
// buffers alone bring on mark-compacts (bench/RESULTS.md).
//
//   node bench/raw-h2-noop.ts HOST PORT [--reuse-read-buffer]
import net from 'node:net';
import { GrpcStatus, MessageReader } from '../ext-proc/grpc-wire.ts';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../ext-proc/handlers.ts';
import { StreamTable } from '../ext-proc/stream-table.ts';
import { answerFor } from './noop-ext-proc.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;
const SETTING = { INITIAL_WINDOW_SIZE: 0x4, MAX_FRAME_SIZE: 0x5 } as const;
const ERROR = { PROTOCOL_ERROR: 0x1, FRAME_SIZE_ERROR: 0x6 } as const;
/** RFC 9113's defaults, until the peer's SETTINGS say otherwise. */
const DEFAULT_WINDOW = 65_535;
const DEFAULT_MAX_FRAME = 16_384;
/** What this server lets the peer send before credit comes back, per stream and on the connection. */
const RECEIVE_WINDOW = 16 * 1024 * 1024;

/**
 * Header blocks are never decoded, so no HPACK dynamic table is kept. That
 * is safe for a server that never reads a header value: the table is only
 * needed to resolve later blocks' references into it, and nothing here
 * resolves one, so nothing can go out of step with the peer's encoder. What
 * it sends indexes nothing (static index and literals without indexing), so
 * the peer's decoder table stays empty too. The price: no :path check, and a
 * malformed block is not the COMPRESSION_ERROR the RFC asks for.
 */
function literal(name: string, value: string): Buffer {
  // Literal without indexing, new name, no Huffman (RFC 7541 6.2.2); names and values here are under 127 bytes.
  return Buffer.concat([Buffer.of(0x00, name.length), Buffer.from(name, 'latin1'), Buffer.of(value.length), Buffer.from(value, 'latin1')]);
}
/** ':status 200' is static index 8 (0x88); content-type a literal. */
const RESPONSE_HEADERS = Buffer.concat([Buffer.of(0x88), literal('content-type', 'application/grpc')]);
const trailersFor = (status: GrpcStatus) => literal('grpc-status', String(status));
const OK_TRAILERS = trailersFor(GrpcStatus.OK);

/** One request stream: plain fields, dead once the stream ends (usually before the next scavenge). */
interface Stream {
  id: number;
  reader: MessageReader;
  /** What this server may still send on it (the peer's stream window). */
  sendWindow: number;
  /** Trailers sent or queued: no more answers. */
  answered: boolean;
  /** Reset by the peer: its queued frames are dropped. */
  gone: boolean;
}

/** A DATA payload, or the trailers when `trailers` is set, waiting for the peer's window. */
interface Queued {
  stream: Stream;
  payload: Buffer | undefined;
  trailers: Buffer | undefined;
}

/**
 * Frames of one batch are written here, then copied out in one socket.write:
 * a small batch is a slice of Buffer's pool, not a buffer of its own.
 */
const scratch = Buffer.allocUnsafe(64 * 1024);

class Connection {
  private readonly socket: net.Socket;
  private readonly streams = new StreamTable<Stream>();
  /** Bytes of an incomplete frame (or preface) from earlier reads. */
  private rest: Buffer | undefined;
  /** Reads land in a buffer the next read overwrites: what outlives a read is copied. */
  private readonly sharedReads: boolean;
  private prefaceSeen = false;
  private lastStreamId = 0;
  /** The stream whose header block is still open (waiting for CONTINUATION), 0 when none; and whether its HEADERS ended the stream. */
  private continuing = 0;
  private continuingEnds = false;
  private peerMaxFrame = DEFAULT_MAX_FRAME;
  private peerInitialWindow = DEFAULT_WINDOW;
  private sendWindow = DEFAULT_WINDOW;
  /** Frames held back by the peer's windows, in the order they were made (a stream's trailers after its data). */
  private readonly queued: Queued[] = [];
  /** Connection-level credit consumed in this batch, returned at its end. */
  private consumed = 0;
  private written = 0;
  private closing = false;

  constructor(socket: net.Socket, sharedReads: boolean) {
    this.socket = socket;
    this.sharedReads = sharedReads;
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    if (!sharedReads) socket.on('data', (chunk: Buffer) => this.read(chunk));
    this.frameHeader(6, FRAME.SETTINGS, 0, 0);
    this.putSetting(SETTING.INITIAL_WINDOW_SIZE, RECEIVE_WINDOW);
    this.windowUpdate(0, RECEIVE_WINDOW - DEFAULT_WINDOW);
    this.flush();
  }

  read(chunk: Buffer): void {
    const bytes = this.rest === undefined ? chunk : Buffer.concat([this.rest, chunk]);
    let at = 0;
    if (!this.prefaceSeen) {
      if (bytes.length < PREFACE.length) {
        this.rest = this.kept(bytes);
        return;
      }
      if (!bytes.subarray(0, PREFACE.length).equals(PREFACE)) {
        this.socket.destroy();
        return;
      }
      this.prefaceSeen = true;
      at = PREFACE.length;
    }
    while (!this.closing && bytes.length - at >= 9) {
      const length = bytes.readUIntBE(at, 3);
      if (length > DEFAULT_MAX_FRAME) {
        this.fail(ERROR.FRAME_SIZE_ERROR, `a ${length}-byte frame is over the ${DEFAULT_MAX_FRAME}-byte SETTINGS_MAX_FRAME_SIZE this server keeps`);
        break;
      }
      if (bytes.length - at < 9 + length) break;
      const id = bytes.readUInt32BE(at + 5) & 0x7fffffff;
      this.frame(bytes, bytes[at + 3] as number, bytes[at + 4] as number, id, at + 9, at + 9 + length);
      at += 9 + length;
    }
    this.rest = at === bytes.length ? undefined : this.kept(bytes.subarray(at));
    if (this.consumed > 0) this.windowUpdate(0, this.consumed);
    this.consumed = 0;
    this.flush();
    if (this.closing) this.socket.end();
  }

  private frame(bytes: Buffer, type: number, flags: number, id: number, start: number, end: number): void {
    if (this.continuing !== 0 && (type !== FRAME.CONTINUATION || id !== this.continuing)) {
      this.fail(ERROR.PROTOCOL_ERROR, `a frame of type ${type} on stream ${id} inside stream ${this.continuing}'s header block (only CONTINUATION may follow)`);
      return;
    }
    switch (type) {
      case FRAME.DATA:
        this.data(bytes, flags, id, start, end);
        return;
      case FRAME.HEADERS: {
        const padding = flags & FLAG.PADDED ? 1 + (bytes[start] as number) : 0;
        const priority = flags & FLAG.PRIORITY ? 5 : 0;
        if (id === 0 || id % 2 === 0 || padding + priority > end - start) {
          this.fail(ERROR.PROTOCOL_ERROR, `HEADERS on stream ${id}: not a client stream, or padding longer than the frame`);
          return;
        }
        if (flags & FLAG.END_HEADERS) this.headersDone(id, (flags & FLAG.END_STREAM) !== 0);
        else {
          this.continuing = id;
          this.continuingEnds = (flags & FLAG.END_STREAM) !== 0;
        }
        return;
      }
      case FRAME.CONTINUATION:
        if (id !== this.continuing) {
          this.fail(ERROR.PROTOCOL_ERROR, `CONTINUATION on stream ${id} with no header block open there`);
          return;
        }
        if (flags & FLAG.END_HEADERS) {
          this.continuing = 0;
          this.headersDone(id, this.continuingEnds);
        }
        return;
      case FRAME.RST_STREAM: {
        const stream = this.streams.get(id);
        if (stream !== undefined) this.drop(stream);
        return;
      }
      case FRAME.SETTINGS:
        if (!(flags & FLAG.ACK)) this.settings(bytes, start, end);
        return;
      case FRAME.PING:
        if (!(flags & FLAG.ACK)) {
          this.frameHeader(8, FRAME.PING, FLAG.ACK, 0);
          this.put(bytes, start, end);
        }
        return;
      case FRAME.GOAWAY:
        this.closing = true;
        return;
      case FRAME.WINDOW_UPDATE: {
        const increment = bytes.readUInt32BE(start) & 0x7fffffff;
        if (id === 0) this.sendWindow += increment;
        else {
          const stream = this.streams.get(id);
          if (stream !== undefined) stream.sendWindow += increment;
        }
        this.drain();
        return;
      }
      default:
        // PRIORITY is ignored; PUSH_PROMISE never comes from a client; unknown types are ignored (RFC 9113 4.1).
        return;
    }
  }

  private headersDone(id: number, endStream: boolean): void {
    const stream = this.streams.get(id);
    if (stream !== undefined) {
      // A second header block on an open stream is the request's trailers.
      if (endStream) this.finish(stream, OK_TRAILERS);
      return;
    }
    // A block on a stream that has ended (its trailers, after a reset) needs nothing.
    if (id <= this.lastStreamId) return;
    this.lastStreamId = id;
    const fresh: Stream = { id, reader: new MessageReader(DEFAULT_MAX_MESSAGE_BYTES), sendWindow: this.peerInitialWindow, answered: false, gone: false };
    this.streams.set(id, fresh);
    this.frameHeader(RESPONSE_HEADERS.length, FRAME.HEADERS, FLAG.END_HEADERS, id);
    this.put(RESPONSE_HEADERS, 0, RESPONSE_HEADERS.length);
    if (endStream) this.finish(fresh, OK_TRAILERS);
  }

  private data(bytes: Buffer, flags: number, id: number, start: number, end: number): void {
    // Flow control counts the whole payload, padding included (RFC 9113 6.9.1).
    this.consumed += end - start;
    const from = flags & FLAG.PADDED ? start + 1 : start;
    const to = flags & FLAG.PADDED ? end - (bytes[start] as number) : end;
    if (id === 0 || to < from) {
      this.fail(ERROR.PROTOCOL_ERROR, `DATA on stream ${id}: on the connection, or padding longer than the frame`);
      return;
    }
    // An unknown stream was reset, or answered early and dropped: its data is credited and ignored.
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    const endStream = (flags & FLAG.END_STREAM) !== 0;
    if (!stream.answered && to > from) {
      const payload = bytes.subarray(from, to);
      // The reader keeps views of a message it has not all of yet: those must not be of the shared read buffer.
      const messages = stream.reader.push(this.sharedReads && (stream.reader.pending || !wholeMessages(payload)) ? Buffer.from(payload) : payload);
      if (!Array.isArray(messages)) {
        this.finish(stream, trailersFor(messages.code));
        return;
      }
      for (const message of messages) {
        const answer = answerFor(message);
        if (answer === undefined) {
          this.finish(stream, trailersFor(GrpcStatus.INVALID_ARGUMENT));
          return;
        }
        this.send(stream, answer);
      }
    }
    if (endStream) this.finish(stream, OK_TRAILERS);
    else if (end > start) this.windowUpdate(id, end - start);
  }

  /**
   * Ends the stream with these trailers, once, after its queued data. A
   * stream answered early (an error) while the peer still sends is dropped
   * too: what else comes on it is credited and ignored.
   */
  private finish(stream: Stream, trailers: Buffer): void {
    if (stream.answered) return;
    stream.answered = true;
    if (this.queued.length > 0) this.queued.push({ stream, payload: undefined, trailers });
    else this.trailers(stream, trailers);
  }

  private drop(stream: Stream): void {
    stream.gone = true;
    this.streams.delete(stream.id);
  }

  /** Bytes kept past this read: a copy when the read buffer is shared. */
  private kept(bytes: Buffer): Buffer {
    return this.sharedReads ? Buffer.from(bytes) : bytes;
  }

  private settings(bytes: Buffer, start: number, end: number): void {
    if ((end - start) % 6 !== 0) {
      this.fail(ERROR.FRAME_SIZE_ERROR, `a SETTINGS frame of ${end - start} bytes (a multiple of 6 was expected)`);
      return;
    }
    for (let at = start; at < end; at += 6) {
      const value = bytes.readUInt32BE(at + 2);
      switch (bytes.readUInt16BE(at)) {
        case SETTING.INITIAL_WINDOW_SIZE: {
          const delta = value - this.peerInitialWindow;
          this.peerInitialWindow = value;
          this.streams.forEach((stream) => {
            stream.sendWindow += delta;
          });
          break;
        }
        case SETTING.MAX_FRAME_SIZE:
          // Outside RFC 9113's range (16,384 to 2^24-1) it is a protocol error; kept at what it was instead.
          if (value >= DEFAULT_MAX_FRAME && value < 2 ** 24) this.peerMaxFrame = value;
          break;
      }
    }
    this.frameHeader(0, FRAME.SETTINGS, FLAG.ACK, 0);
    this.drain();
  }

  /** A DATA payload for the stream, now or once the peer's windows allow it. */
  private send(stream: Stream, payload: Buffer): void {
    if (this.queued.length === 0 && payload.length <= this.sendWindow && payload.length <= stream.sendWindow) this.dataFrames(stream, payload);
    else this.queued.push({ stream, payload, trailers: undefined });
  }

  /** Sends what the windows now allow, in order. */
  private drain(): void {
    while (this.queued.length > 0) {
      const next = this.queued[0] as Queued;
      if (!next.stream.gone) {
        if (next.payload === undefined) this.trailers(next.stream, next.trailers as Buffer);
        else if (next.payload.length <= this.sendWindow && next.payload.length <= next.stream.sendWindow) this.dataFrames(next.stream, next.payload);
        else return;
      }
      this.queued.shift();
    }
  }

  private dataFrames(stream: Stream, payload: Buffer): void {
    this.sendWindow -= payload.length;
    stream.sendWindow -= payload.length;
    for (let at = 0; at < payload.length; at += this.peerMaxFrame) {
      const size = Math.min(this.peerMaxFrame, payload.length - at);
      this.frameHeader(size, FRAME.DATA, 0, stream.id);
      this.put(payload, at, at + size);
    }
  }

  /** The stream's last frame: it is forgotten, so what the peer still sends on it is ignored. */
  private trailers(stream: Stream, block: Buffer): void {
    // Trailers are a few bytes, far under any MAX_FRAME_SIZE (at least 16,384), so never CONTINUATION.
    this.frameHeader(block.length, FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, stream.id);
    this.put(block, 0, block.length);
    this.streams.delete(stream.id);
  }

  private windowUpdate(id: number, increment: number): void {
    this.frameHeader(4, FRAME.WINDOW_UPDATE, 0, id);
    this.room(4);
    scratch.writeUInt32BE(increment, this.written);
    this.written += 4;
  }

  private fail(code: number, why: string): void {
    const debug = Buffer.from(why, 'utf8').subarray(0, 256);
    this.frameHeader(8 + debug.length, FRAME.GOAWAY, 0, 0);
    this.room(8);
    scratch.writeUInt32BE(this.lastStreamId, this.written);
    scratch.writeUInt32BE(code, this.written + 4);
    this.written += 8;
    this.put(debug, 0, debug.length);
    this.closing = true;
  }

  private frameHeader(length: number, type: number, flags: number, id: number): void {
    this.room(9);
    const at = this.written;
    scratch.writeUIntBE(length, at, 3);
    scratch[at + 3] = type;
    scratch[at + 4] = flags;
    scratch.writeUInt32BE(id, at + 5);
    this.written += 9;
  }

  private putSetting(id: number, value: number): void {
    this.room(6);
    scratch.writeUInt16BE(id, this.written);
    scratch.writeUInt32BE(value, this.written + 2);
    this.written += 6;
  }

  private put(source: Buffer, start: number, end: number): void {
    this.room(end - start);
    source.copy(scratch, this.written, start, end);
    this.written += end - start;
  }

  /** Flushes first when `bytes` more would not fit in the scratch buffer. */
  private room(bytes: number): void {
    if (this.written + bytes > scratch.length) this.flush();
  }

  private flush(): void {
    if (this.written === 0 || this.socket.destroyed) {
      this.written = 0;
      return;
    }
    this.socket.write(Buffer.from(scratch.subarray(0, this.written)));
    this.written = 0;
  }
}

/** True when the bytes are whole gRPC messages, none cut off at the end. */
function wholeMessages(bytes: Buffer): boolean {
  let at = 0;
  while (bytes.length - at >= 5) at += 5 + bytes.readUInt32BE(at + 1);
  return at === bytes.length;
}

/**
 * The server, not yet listening. reuseReadBuffer: every connection reads into
 * one buffer. node:net offers that (onread) only to sockets it did not
 * accept, so each accepted socket's handle moves to a Socket made with it.
 */
export function rawNoopServer(options: { reuseReadBuffer?: boolean } = {}): net.Server {
  if (options.reuseReadBuffer !== true) return net.createServer((socket) => new Connection(socket, false));
  const readBuffer = Buffer.allocUnsafe(256 * 1024);
  return net.createServer({ pauseOnConnect: true }, (accepted) => {
    const internal = accepted as unknown as { _handle: unknown };
    const handle = internal._handle;
    if (handle === null || handle === undefined) throw new Error('--reuse-read-buffer: the accepted socket has no _handle; this Node moved net.Socket internals, run without the flag');
    internal._handle = null;
    let connection: Connection | undefined;
    const onread = {
      buffer: readBuffer,
      callback: (bytes: number, buffer: Uint8Array) => {
        connection?.read(Buffer.from(buffer.buffer, buffer.byteOffset, bytes));
        return true;
      },
    };
    const socket = new net.Socket({ handle, onread } as unknown as net.SocketConstructorOpts);
    connection = new Connection(socket, true);
    socket.resume();
  });
}

if (import.meta.main) {
  const [host = '127.0.0.1', portText = '9002', flag] = process.argv.slice(2);
  if (flag !== undefined && flag !== '--reuse-read-buffer') throw new Error(`unknown option ${flag}: the only one is --reuse-read-buffer`);
  const server = rawNoopServer({ reuseReadBuffer: flag !== undefined });
  server.listen(Number(portText), host, () => process.stderr.write(`do-nothing ext_proc on its own HTTP/2 framing on ${host}:${portText}${flag === undefined ? '' : ', one read buffer'}\n`));
  process.once('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
}
