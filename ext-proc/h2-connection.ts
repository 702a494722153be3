// The server side of one HTTP/2 connection (RFC 9113) over a node:net
// socket: h2c with prior knowledge, no push, no HTTP/1.1 upgrade, priority
// ignored. It replaces node:http2, which makes per-stream native objects and
// turns every received header value into an external string that V8 puts in
// the old generation; under load those drove 15-60 ms mark-compacts
// (bench/RESULTS.md). So, here:
// - a stream is one plain object (H2Stream) with no closures of its own; the
//   application's callbacks are functions it shares between streams;
// - open streams are in a StreamTable, which never rehashes, and nothing
//   keeps a closed stream;
// - frames are queued and written with one socket.write per turn of the
//   event loop, so a burst of streams costs a few syscalls.
// Reading is never paused: the peer's windows bound what we queue for it,
// and ours bound what it sends us (we hand DATA on at once). Reads are lent
// (see receive): what outlives one is copied.
import type net from 'node:net';
import {
  CLIENT_PREFACE,
  DEFAULT_HEADER_TABLE_SIZE,
  DEFAULT_INITIAL_WINDOW_SIZE,
  DEFAULT_MAX_FRAME_SIZE,
  ErrorCode,
  FRAME_HEADER_LENGTH,
  Flag,
  FrameType,
  ProtocolViolation,
  MAX_MAX_FRAME_SIZE,
  MAX_WINDOW_SIZE,
  SETTINGS_ACK,
  Setting,
  errorCodeName,
  frameHeader,
  goawayFrame,
  headersFragment,
  headersFrames,
  parseFrameHeader,
  parseGoaway,
  parseSettings,
  pingAckFrame,
  rstStreamFrame,
  settingsFrame,
  unpadded,
  windowUpdateFrame,
  type FrameHeader,
} from './h2-frames.ts';
import { HpackDecoder, encodeHeaderBlock, tableSizeUpdate, type HeaderField } from './hpack.ts';
import { StreamTable } from './stream-table.ts';

export interface H2ServerOptions {
  /** Our SETTINGS_INITIAL_WINDOW_SIZE: how much of a stream's body the peer may send before our WINDOW_UPDATE. */
  initialWindowSize: number;
  /** The connection's receive window, opened right after the preface. */
  connectionWindowSize: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS; a HEADERS beyond it gets RST_STREAM(REFUSED_STREAM). */
  maxConcurrentStreams: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE and the HPACK decoder's limit; a larger request gets a 431 answer, the connection is kept. */
  maxHeaderListSize: number;
  /**
   * What may wait unsent, past the kernel's buffers: frames the peer does not
   * read, and DATA queued for windows it keeps shut. PING and SETTINGS
   * acknowledgements, resets and window updates answer frames the peer
   * sends, and answers wait in queues while it sends requests with its
   * windows shut; a peer that does either without end is cut off here.
   */
  maxUnsentBytes: number;
  onStream(stream: H2Stream): void;
  /** Connection-level protocol errors, socket errors and exceptions from the callbacks, for debug logs. */
  onError?(error: Error): void;
}

export interface H2Connection {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly openStreams: number;
  /** remoteAddress:remotePort, for logs. */
  peer(): string;
  /** Graceful: GOAWAY(NO_ERROR, last stream id processed); no new streams; the socket ends once every open stream has closed. Idempotent. */
  shutdown(): void;
  /** GOAWAY(NO_ERROR) if possible, then destroy the socket; every open stream gets onClose(true). */
  destroy(): void;
  /** Called once when the socket is closed. */
  onClose: () => void;
}

function noop(): void {}

/**
 * A field block a little larger than the header list limit may still
 * decode within it (HPACK literals can be longer than the fields they
 * carry); one far larger is refused before decoding, which would mean
 * buffering it whole.
 */
const HEADER_BLOCK_SLACK = 16_384;
/** CONTINUATION frames per field block: legitimate clients need a handful; a flood of small or empty ones (CVE-2024-27316 style) is cut off. */
const MAX_CONTINUATIONS = 128;
/**
 * What a buffer waiting in a stream's queue costs beyond its bytes (its
 * object and its slot): most answers are one shared frame, so counting their
 * bytes alone let 330,000 queued answers (~36 MB of heap) pass as 8 MB.
 */
const QUEUED_ENTRY_BYTES = 96;
/** How long a connection we have ended may stay open waiting for the peer's FIN. */
const LINGER_MS = 2000;
const REQUEST_HEADER_FIELDS_TOO_LARGE: readonly HeaderField[] = Object.freeze([Object.freeze([':status', '431'] as const)]);
const HAS_UPPERCASE = /[A-Z]/;

/** Whether a frame type needs a stream (true) or stream 0 (false); WINDOW_UPDATE and unknown types take either (§6). */
const NEEDS_STREAM: readonly (boolean | undefined)[] = [true, true, true, true, false, true, false, false, undefined, true];

/** An open stream. The application sets onData/onEnd/onClose inside onStream, to functions shared by every stream (`this` is the stream). */
export class H2Stream {
  readonly id: number;
  readonly connection: H2Connection;
  readonly fields: readonly HeaderField[];
  /** A DATA frame's payload, lent: valid only during the call (copy to keep it, or to write it back). */
  onData: (chunk: Buffer) => void = noop;
  onEnd: () => void = noop;
  onClose: (reset: boolean) => void = noop;
  remoteEnded = false;
  localEnded = false;
  closed = false;
  /** Internal state of the connection: not part of the API. */
  responded = false;
  endSent = false;
  sendWindow: number;
  recvWindow: number;
  /** Octets handed on and not yet returned by WINDOW_UPDATE. */
  recvUnacked = 0;
  /** DATA waiting for the peer's windows, and the trailers to send after it (null: end() not called). */
  queue: Buffer[] | null = null;
  trailers: readonly HeaderField[] | null = null;
  /** stopRequest() came before the trailers could go. */
  stopAfterEnd = false;
  /** The connection's list of streams waiting for its send window. */
  blockedPrev: H2Stream | null = null;
  blockedNext: H2Stream | null = null;
  blocked = false;

  private owner(): ServerConnection {
    return this.connection as ServerConnection;
  }

  constructor(owner: ServerConnection, id: number, fields: readonly HeaderField[], sendWindow: number, recvWindow: number) {
    this.connection = owner;
    this.id = id;
    this.fields = fields;
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }

  /** The first value of a field. */
  header(name: string): string | undefined {
    for (const [fieldName, value] of this.fields) if (fieldName === name) return value;
    return undefined;
  }

  /** Response HEADERS, once, without END_STREAM. */
  respond(fields: readonly HeaderField[]): void {
    if (this.closed) return;
    if (this.responded) throw new Error(`stream ${this.id}: respond() called twice; response headers go once, then write() and end(trailers)`);
    this.responded = true;
    this.owner().sendHeaders(this, fields, false);
  }

  /** DATA, sent as the peer's flow-control windows allow. No-op on a closed stream (the peer reset it). */
  write(data: Buffer): void {
    if (this.closed) return;
    if (!this.responded || this.localEnded) throw new Error(`stream ${this.id}: write() ${this.localEnded ? 'after end()' : 'before respond()'}; DATA goes between the response headers and the trailers`);
    if (data.length > 0) this.owner().sendData(this, data);
  }

  /** Trailers with END_STREAM, after the queued DATA. */
  end(trailers: readonly HeaderField[]): void {
    if (this.closed) return;
    if (!this.responded || this.localEnded) throw new Error(`stream ${this.id}: end() ${this.localEnded ? 'called twice' : 'before respond() (use respondAndEnd for a trailers-only response)'}`);
    this.localEnded = true;
    if (this.queue === null) this.owner().sendEnd(this, trailers);
    else this.trailers = trailers;
  }

  /** A trailers-only response: one HEADERS with END_STREAM. */
  respondAndEnd(fields: readonly HeaderField[]): void {
    if (this.closed) return;
    if (this.responded) throw new Error(`stream ${this.id}: respondAndEnd() after respond(); use end(trailers)`);
    this.responded = true;
    this.localEnded = true;
    this.endSent = true;
    this.owner().sendHeaders(this, fields, true);
    // The answer is complete; a client still sending is told to stop (§8.1), as grpc-go does.
    if (!this.remoteEnded) this.owner().resetStream(this, ErrorCode.NO_ERROR);
    else this.owner().closeIfDone(this);
  }

  /**
   * After end(), for a client that has not half-closed: RST_STREAM(NO_ERROR)
   * once the trailers are out, telling it to stop sending; the response it
   * got is complete (RFC 9113 §8.1). Trailers still waiting for the peer's
   * window go first, where reset() would drop them.
   */
  stopRequest(): void {
    if (this.closed || this.remoteEnded) return;
    if (!this.localEnded) throw new Error(`stream ${this.id}: stopRequest() before end(); the response must be complete first`);
    if (this.endSent) this.owner().resetStream(this, ErrorCode.NO_ERROR);
    else this.stopAfterEnd = true;
  }

  /** RST_STREAM with this error code (ErrorCode); the stream closes (onClose(true)) and queued DATA is dropped. */
  reset(code: number): void {
    if (this.closed) return;
    this.owner().resetStream(this, code);
  }
}

/**
 * Frozen field lists are the shared ones (the gRPC response headers, the OK
 * trailers) that every stream sends: they are HPACK-encoded once. We never
 * index, so a block does not depend on the connection.
 */
const sharedBlocks = new WeakMap<readonly HeaderField[], Buffer>();
function encodedBlock(fields: readonly HeaderField[]): Buffer {
  if (!Object.isFrozen(fields)) return encodeHeaderBlock(fields);
  let block = sharedBlocks.get(fields);
  if (block === undefined) sharedBlocks.set(fields, (block = encodeHeaderBlock(fields)));
  return block;
}

type Phase = 'preface' | 'open' | 'ended';

class ServerConnection implements H2Connection {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  onClose: () => void = noop;
  private readonly socket: net.Socket;
  private readonly options: H2ServerOptions;
  private readonly decoder: HpackDecoder;
  private readonly streams = new StreamTable<H2Stream>();
  /** preface: reading the client preface; open; ended: GOAWAY sent for an error, or the socket is going — input is dropped. */
  private phase: Phase = 'preface';
  private prefaceMatched = 0;
  private sawSettings = false;
  /**
   * A frame that has not all arrived, copied: reads are lent (receive), and
   * a frame is at most 9 + DEFAULT_MAX_FRAME_SIZE octets. Made at the first
   * frame that spans two reads.
   */
  private held: Buffer | null = null;
  private heldBytes = 0;
  private lastStreamId = 0;
  /** The last stream id our first GOAWAY named (undefined: none sent); a later GOAWAY must not name a higher one (§6.8). */
  private goawayLastStreamId: number | undefined = undefined;
  private goawayReceived = false;
  private lingerTimer: NodeJS.Timeout | undefined;

  private peerMaxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  private peerInitialWindow = DEFAULT_INITIAL_WINDOW_SIZE;
  private sendWindow = DEFAULT_INITIAL_WINDOW_SIZE;
  private recvWindow = DEFAULT_INITIAL_WINDOW_SIZE;
  private readonly connectionWindow: number;
  private recvUnacked = 0;
  private settingsAcked = false;
  /** The largest table size our encoder has announced, and an update still to announce (-1: none). */
  private encoderTableSize = DEFAULT_HEADER_TABLE_SIZE;
  private pendingTableSizeUpdate = -1;

  /** A field block whose CONTINUATIONs are still coming (stream 0: none). */
  private blockStream = 0;
  private blockEndStream = false;
  private readonly blockChunks: Buffer[] = [];
  private blockBytes = 0;

  private readonly out: Buffer[] = [];
  private outBytes = 0;
  /** DATA waiting in streams' queues for the peer's windows, QUEUED_ENTRY_BYTES per buffer included: unsent output too (maxUnsentBytes). */
  private queuedBytes = 0;
  private flushScheduled = false;
  private blockedHead: H2Stream | null = null;
  private blockedTail: H2Stream | null = null;

  constructor(socket: net.Socket, options: H2ServerOptions) {
    this.socket = socket;
    this.options = options;
    this.remoteAddress = socket.remoteAddress;
    this.remotePort = socket.remotePort;
    this.decoder = new HpackDecoder({ maxTableSize: DEFAULT_HEADER_TABLE_SIZE, maxHeaderListSize: options.maxHeaderListSize });
    this.connectionWindow = Math.max(DEFAULT_INITIAL_WINDOW_SIZE, Math.min(options.connectionWindowSize, MAX_WINDOW_SIZE));
    socket.setNoDelay(true);
    socket.on('error', (error: Error) => this.report(error));
    socket.on('close', () => this.socketClosed());
    // The server preface may go before the client's arrives (§3.4).
    this.push(
      settingsFrame([
        [Setting.MAX_CONCURRENT_STREAMS, options.maxConcurrentStreams],
        [Setting.INITIAL_WINDOW_SIZE, options.initialWindowSize],
        [Setting.MAX_HEADER_LIST_SIZE, options.maxHeaderListSize],
        [Setting.ENABLE_PUSH, 0],
      ]),
    );
    if (this.connectionWindow > DEFAULT_INITIAL_WINDOW_SIZE) {
      this.push(windowUpdateFrame(0, this.connectionWindow - DEFAULT_INITIAL_WINDOW_SIZE));
      this.recvWindow = this.connectionWindow;
    }
  }

  private get goawaySent(): boolean {
    return this.goawayLastStreamId !== undefined;
  }

  /** Narrowing-proof: callbacks change the phase under a loop. */
  private get ended(): boolean {
    return this.phase === 'ended';
  }

  get openStreams(): number {
    return this.streams.size;
  }

  shutdown(): void {
    if (this.goawaySent || this.phase === 'ended') return;
    this.goawayLastStreamId = this.lastStreamId;
    this.push(goawayFrame(this.lastStreamId, ErrorCode.NO_ERROR));
    if (this.streams.size === 0) this.endSocket();
  }

  destroy(): void {
    if (this.socket.destroyed) return;
    if (this.phase !== 'ended' && !this.goawaySent) this.push(goawayFrame(this.lastStreamId, ErrorCode.NO_ERROR));
    this.phase = 'ended';
    this.flush();
    this.closeAllStreams();
    this.socket.destroy();
  }

  // ---- reading ----

  /**
   * Reads one chunk of the socket. The chunk is lent: it is valid only during
   * the call (server.ts reads every connection into one buffer), so nothing
   * here, and no onData, keeps a view of it past the call.
   */
  receive(chunk: Buffer): void {
    if (this.phase === 'ended') return;
    let at = 0;
    if (this.phase === 'preface') {
      at = this.matchPreface(chunk);
      if (at < 0 || this.phase === 'preface') return;
    }
    if (this.heldBytes > 0) {
      at = this.completeHeld(chunk, at);
      if (at < 0 || this.ended) return;
    }
    while (chunk.length - at >= FRAME_HEADER_LENGTH) {
      const header = parseFrameHeader(chunk, at);
      if (header.length > DEFAULT_MAX_FRAME_SIZE) return this.frameTooLarge(header);
      const end = at + FRAME_HEADER_LENGTH + header.length;
      if (end > chunk.length) break;
      this.frame(header, chunk.subarray(at + FRAME_HEADER_LENGTH, end));
      at = end;
      if (this.ended) return;
    }
    if (at < chunk.length) {
      this.held ??= Buffer.allocUnsafeSlow(FRAME_HEADER_LENGTH + DEFAULT_MAX_FRAME_SIZE);
      this.heldBytes = chunk.copy(this.held, 0, at);
    }
  }

  /** Copies the held frame's missing octets from the chunk and handles the frame once whole; where the chunk's next frame starts, or -1 after an error. */
  private completeHeld(chunk: Buffer, at: number): number {
    const held = this.held as Buffer;
    if (this.heldBytes < FRAME_HEADER_LENGTH) {
      const copied = chunk.copy(held, this.heldBytes, at, Math.min(chunk.length, at + FRAME_HEADER_LENGTH - this.heldBytes));
      this.heldBytes += copied;
      at += copied;
      if (this.heldBytes < FRAME_HEADER_LENGTH) return at;
    }
    const header = parseFrameHeader(held);
    if (header.length > DEFAULT_MAX_FRAME_SIZE) {
      this.frameTooLarge(header);
      return -1;
    }
    const size = FRAME_HEADER_LENGTH + header.length;
    const copied = chunk.copy(held, this.heldBytes, at, Math.min(chunk.length, at + size - this.heldBytes));
    this.heldBytes += copied;
    at += copied;
    if (this.heldBytes < size) return at;
    this.heldBytes = 0;
    this.frame(header, held.subarray(FRAME_HEADER_LENGTH, size));
    return at;
  }

  private frameTooLarge(header: FrameHeader): void {
    this.fail(ErrorCode.FRAME_SIZE_ERROR, `a ${header.length}-octet frame (type ${header.type}) is over our SETTINGS_MAX_FRAME_SIZE of ${DEFAULT_MAX_FRAME_SIZE}`);
  }

  /** Where the frames start in the chunk, once the whole preface has matched; -1 after a mismatch. */
  private matchPreface(chunk: Buffer): number {
    let at = 0;
    while (at < chunk.length && this.prefaceMatched < CLIENT_PREFACE.length) {
      if (chunk[at] !== CLIENT_PREFACE[this.prefaceMatched]) {
        this.fail(ErrorCode.PROTOCOL_ERROR, 'the connection did not start with the HTTP/2 client preface; this server speaks h2c with prior knowledge only (no HTTP/1.1, no Upgrade, no TLS)');
        return -1;
      }
      at++;
      this.prefaceMatched++;
    }
    if (this.prefaceMatched === CLIENT_PREFACE.length) this.phase = 'open';
    return at;
  }

  private frame(header: FrameHeader, payload: Buffer): void {
    const { type, streamId } = header;
    if (this.blockStream !== 0 && type !== FrameType.CONTINUATION) {
      return this.fail(ErrorCode.PROTOCOL_ERROR, `a frame of type ${type} came between HEADERS and CONTINUATION on stream ${this.blockStream} (RFC 9113 §6.10)`);
    }
    if (!this.sawSettings) {
      if (type !== FrameType.SETTINGS || (header.flags & Flag.ACK) !== 0) return this.fail(ErrorCode.PROTOCOL_ERROR, `the client preface must be followed by a SETTINGS frame, not a frame of type ${type}`);
      this.sawSettings = true;
    }
    const needsStream = NEEDS_STREAM[type];
    if (needsStream !== undefined && needsStream !== (streamId !== 0)) {
      return this.fail(ErrorCode.PROTOCOL_ERROR, needsStream ? `a frame of type ${type} on stream 0: it belongs to a stream` : `a frame of type ${type} on stream ${streamId}: it belongs to stream 0`);
    }
    switch (type) {
      case FrameType.DATA:
        return this.onDataFrame(header, payload);
      case FrameType.HEADERS:
        return this.onHeadersFrame(header, payload);
      case FrameType.CONTINUATION:
        return this.onContinuation(header, payload);
      case FrameType.RST_STREAM:
        return this.onRstStream(header, payload);
      case FrameType.SETTINGS:
        return this.onSettings(header, payload);
      case FrameType.PING:
        if (payload.length !== 8) return this.fail(ErrorCode.FRAME_SIZE_ERROR, `a PING of ${payload.length} octets; PING carries 8`);
        if ((header.flags & Flag.ACK) === 0) this.push(pingAckFrame(payload));
        return;
      case FrameType.GOAWAY:
        return this.onGoaway(payload);
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(header, payload);
      case FrameType.PRIORITY:
        // Ignored (RFC 9113 deprecates the scheme); only its size is checked.
        if (payload.length !== 5) this.streamError(streamId, ErrorCode.FRAME_SIZE_ERROR);
        return;
      case FrameType.PUSH_PROMISE:
        return this.fail(ErrorCode.PROTOCOL_ERROR, 'PUSH_PROMISE from a client (only servers push, and we disabled it)');
      default:
        // Unknown frame types are ignored (§4.1, §5.5).
        return;
    }
  }

  /** A stream that is not open: idle (never opened: above the last id, or even), or closed. */
  private isIdle(streamId: number): boolean {
    return streamId > this.lastStreamId || streamId % 2 === 0;
  }

  private onDataFrame(header: FrameHeader, payload: Buffer): void {
    const { streamId, length } = header;
    // Counted against the connection window whatever happens to the stream (§6.9).
    if (length > this.recvWindow) return this.fail(ErrorCode.FLOW_CONTROL_ERROR, `DATA of ${length} octets on stream ${streamId} with ${this.recvWindow} left in the connection window`);
    this.recvWindow -= length;
    this.creditConnection(length);
    const stream = this.streams.get(streamId);
    if (stream === undefined) {
      if (this.isIdle(streamId)) return this.fail(ErrorCode.PROTOCOL_ERROR, `DATA on stream ${streamId}, which was never opened`);
      // Closed: we reset it, or it ended, and the peer's DATA crossed our frame. Dropped (§5.1).
      return;
    }
    if (stream.remoteEnded) return this.resetStream(stream, ErrorCode.STREAM_CLOSED);
    if (length > stream.recvWindow) return this.resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
    stream.recvWindow -= length;
    const data = unpadded(payload, header.flags);
    if (data instanceof ProtocolViolation) return this.fail(data.code, `DATA on stream ${streamId}: ${data.message}`);
    const endStream = (header.flags & Flag.END_STREAM) !== 0;
    if (data.length > 0) {
      try {
        stream.onData(data);
      } catch (error) {
        return this.callbackFailed(stream, 'onData', error);
      }
      if (stream.closed) return;
    }
    if (endStream) return this.remoteEnd(stream);
    stream.recvUnacked += length;
    if (stream.recvUnacked >= this.options.initialWindowSize / 2) {
      this.push(windowUpdateFrame(streamId, stream.recvUnacked));
      stream.recvWindow += stream.recvUnacked;
      stream.recvUnacked = 0;
    }
  }

  private creditConnection(length: number): void {
    this.recvUnacked += length;
    if (this.recvUnacked >= this.connectionWindow / 2) {
      this.push(windowUpdateFrame(0, this.recvUnacked));
      this.recvWindow += this.recvUnacked;
      this.recvUnacked = 0;
    }
  }

  private onHeadersFrame(header: FrameHeader, payload: Buffer): void {
    const fragment = headersFragment(payload, header.flags);
    if (fragment instanceof ProtocolViolation) return this.fail(fragment.code, `HEADERS on stream ${header.streamId}: ${fragment.message}`);
    const endStream = (header.flags & Flag.END_STREAM) !== 0;
    if ((header.flags & Flag.END_HEADERS) !== 0) return this.fieldBlock(header.streamId, endStream, fragment);
    this.blockStream = header.streamId;
    this.blockEndStream = endStream;
    // Kept until the CONTINUATIONs come, so copied out of the lent read.
    this.blockChunks.push(Buffer.from(fragment));
    this.blockBytes = fragment.length;
  }

  private onContinuation(header: FrameHeader, payload: Buffer): void {
    if (this.blockStream === 0 || header.streamId !== this.blockStream) {
      return this.fail(ErrorCode.PROTOCOL_ERROR, `CONTINUATION on stream ${header.streamId} with no field block of that stream in progress (RFC 9113 §6.10)`);
    }
    this.blockChunks.push(Buffer.from(payload));
    this.blockBytes += payload.length;
    if (this.blockBytes > this.options.maxHeaderListSize + HEADER_BLOCK_SLACK || this.blockChunks.length > MAX_CONTINUATIONS) {
      return this.fail(
        ErrorCode.ENHANCE_YOUR_CALM,
        `the field block of stream ${this.blockStream} reached ${this.blockBytes} octets in ${this.blockChunks.length} frames; we take at most ${this.options.maxHeaderListSize + HEADER_BLOCK_SLACK} octets in ${MAX_CONTINUATIONS} frames`,
      );
    }
    if ((header.flags & Flag.END_HEADERS) === 0) return;
    const block = Buffer.concat(this.blockChunks, this.blockBytes);
    const streamId = this.blockStream;
    this.blockStream = 0;
    this.blockChunks.length = 0;
    this.blockBytes = 0;
    this.fieldBlock(streamId, this.blockEndStream, block);
  }

  /** A complete field block: a new stream's request headers, or an open stream's trailers. */
  private fieldBlock(streamId: number, endStream: boolean, block: Buffer): void {
    // Decoded even for a stream we refuse: the HPACK table is the connection's.
    const decoded = this.decoder.decode(block);
    if (!decoded.ok && decoded.kind === 'compression') return this.fail(ErrorCode.COMPRESSION_ERROR, `HEADERS on stream ${streamId}: ${decoded.message}`);
    const open = this.streams.get(streamId);
    if (open !== undefined) {
      // Trailers: they must end the stream and carry no pseudo-headers (§8.1).
      if (open.remoteEnded) return this.resetStream(open, ErrorCode.STREAM_CLOSED);
      if (!decoded.ok || !endStream || fieldsViolation(decoded.fields, true)) return this.resetStream(open, ErrorCode.PROTOCOL_ERROR);
      return this.remoteEnd(open);
    }
    if (streamId % 2 === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, `HEADERS on stream ${streamId}: client streams have odd ids`);
    // Trailers that crossed our RST_STREAM (stopRequest, a refusal, a 431):
    // frames on a stream we reset are ignored (§5.1). A block without
    // END_STREAM below the last id is no trailers: a stream id reused.
    if (streamId <= this.lastStreamId && endStream) return;
    if (streamId <= this.lastStreamId) return this.fail(ErrorCode.PROTOCOL_ERROR, `HEADERS on stream ${streamId}, not above the last stream opened (${this.lastStreamId}): stream ids must increase`);
    this.lastStreamId = streamId;
    if (this.goawaySent || this.goawayReceived || this.streams.size >= this.options.maxConcurrentStreams) {
      this.push(rstStreamFrame(streamId, ErrorCode.REFUSED_STREAM));
      return;
    }
    if (!decoded.ok) {
      // Too large: a definite answer, where REFUSED_STREAM would invite a retry that fails the same way.
      this.pushHeaders(streamId, REQUEST_HEADER_FIELDS_TOO_LARGE, true);
      if (!endStream) this.push(rstStreamFrame(streamId, ErrorCode.NO_ERROR));
      return;
    }
    if (fieldsViolation(decoded.fields, false)) {
      this.push(rstStreamFrame(streamId, ErrorCode.PROTOCOL_ERROR));
      return;
    }
    const recvWindow = this.settingsAcked ? this.options.initialWindowSize : Math.max(this.options.initialWindowSize, DEFAULT_INITIAL_WINDOW_SIZE);
    const stream = new H2Stream(this, streamId, decoded.fields, this.peerInitialWindow, recvWindow);
    this.streams.set(streamId, stream);
    try {
      this.options.onStream(stream);
    } catch (error) {
      return this.callbackFailed(stream, 'onStream', error);
    }
    if (endStream && !stream.closed) this.remoteEnd(stream);
  }

  private remoteEnd(stream: H2Stream): void {
    stream.remoteEnded = true;
    try {
      stream.onEnd();
    } catch (error) {
      return this.callbackFailed(stream, 'onEnd', error);
    }
    this.closeIfDone(stream);
  }

  private onRstStream(header: FrameHeader, payload: Buffer): void {
    if (payload.length !== 4) return this.fail(ErrorCode.FRAME_SIZE_ERROR, `RST_STREAM of ${payload.length} octets on stream ${header.streamId}; it carries 4`);
    if (this.isIdle(header.streamId)) return this.fail(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on stream ${header.streamId}, which was never opened`);
    const stream = this.streams.get(header.streamId);
    if (stream !== undefined) this.closeStream(stream, true);
  }

  private onSettings(header: FrameHeader, payload: Buffer): void {
    if ((header.flags & Flag.ACK) !== 0) {
      if (payload.length !== 0) return this.fail(ErrorCode.FRAME_SIZE_ERROR, `a SETTINGS ACK with a ${payload.length}-octet payload; an ACK is empty`);
      this.settingsAcked = true;
      return;
    }
    const settings = parseSettings(payload);
    if (settings instanceof ProtocolViolation) return this.fail(settings.code, settings.message);
    // Only a frame's last INITIAL_WINDOW_SIZE counts, applied once: each
    // change walks every open stream, and one frame can carry 2,730 of them.
    let initialWindow: number | undefined;
    for (const [id, value] of settings) {
      if (id === Setting.ENABLE_PUSH && value > 1) return this.fail(ErrorCode.PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH of ${value}; it is 0 or 1`);
      if (id === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW_SIZE) return this.fail(ErrorCode.FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE of ${value} is over 2^31-1`);
        initialWindow = value;
      } else if (id === Setting.MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) return this.fail(ErrorCode.PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE of ${value} is outside 16384..16777215`);
        this.peerMaxFrameSize = value;
      } else if (id === Setting.HEADER_TABLE_SIZE && value < this.encoderTableSize) {
        // We never index, but a decoder lowering its table expects our next block to say we follow (RFC 7541 §4.2).
        this.encoderTableSize = value;
        this.pendingTableSizeUpdate = value;
      }
    }
    if (initialWindow !== undefined && !this.changeInitialWindow(initialWindow)) return;
    this.push(SETTINGS_ACK);
  }

  /** Applies a new SETTINGS_INITIAL_WINDOW_SIZE to every open stream's send window (§6.9.2); false after a connection error. */
  private changeInitialWindow(value: number): boolean {
    const delta = value - this.peerInitialWindow;
    this.peerInitialWindow = value;
    if (delta === 0) return true;
    let overflow = 0;
    this.streams.forEach((stream) => {
      stream.sendWindow += delta;
      if (stream.sendWindow > MAX_WINDOW_SIZE) overflow = stream.id;
    });
    if (overflow !== 0) {
      this.fail(ErrorCode.FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE of ${value} takes stream ${overflow}'s window over 2^31-1`);
      return false;
    }
    if (delta > 0) this.streams.forEach((stream) => this.pump(stream));
    return true;
  }

  private onGoaway(payload: Buffer): void {
    const goaway = parseGoaway(payload);
    if (goaway instanceof ProtocolViolation) return this.fail(goaway.code, goaway.message);
    this.goawayReceived = true;
    if (goaway.code !== ErrorCode.NO_ERROR) this.report(new Error(`the peer ${this.peer()} sent GOAWAY(${errorCodeName(goaway.code)}): ${goaway.debug}`));
    if (this.streams.size === 0) this.endSocket();
  }

  private onWindowUpdate(header: FrameHeader, payload: Buffer): void {
    const { streamId } = header;
    if (payload.length !== 4) return this.fail(ErrorCode.FRAME_SIZE_ERROR, `WINDOW_UPDATE of ${payload.length} octets; it carries 4`);
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (streamId === 0) {
      if (increment === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0 on the connection');
      if (this.sendWindow + increment > MAX_WINDOW_SIZE) return this.fail(ErrorCode.FLOW_CONTROL_ERROR, `WINDOW_UPDATE of ${increment} takes the connection window over 2^31-1`);
      this.sendWindow += increment;
      return this.pumpBlocked();
    }
    if (this.isIdle(streamId)) return this.fail(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on stream ${streamId}, which was never opened`);
    const stream = this.streams.get(streamId);
    if (stream === undefined) return;
    if (increment === 0) return this.resetStream(stream, ErrorCode.PROTOCOL_ERROR);
    if (stream.sendWindow + increment > MAX_WINDOW_SIZE) return this.resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
    stream.sendWindow += increment;
    this.pump(stream);
  }

  // ---- writing (called by H2Stream) ----

  sendHeaders(stream: H2Stream, fields: readonly HeaderField[], endStream: boolean): void {
    this.pushHeaders(stream.id, fields, endStream);
  }

  /** A field block that fits one frame goes as a frame header and the block itself (often the shared encoding of a frozen list), as DATA does; a longer one as HEADERS and CONTINUATIONs. */
  private pushHeaders(streamId: number, fields: readonly HeaderField[], endStream: boolean): void {
    let block = encodedBlock(fields);
    if (this.pendingTableSizeUpdate >= 0) {
      block = Buffer.concat([tableSizeUpdate(this.pendingTableSizeUpdate), block]);
      this.pendingTableSizeUpdate = -1;
    }
    if (block.length > this.peerMaxFrameSize) return this.push(headersFrames(streamId, block, endStream, this.peerMaxFrameSize));
    this.push(frameHeader(block.length, FrameType.HEADERS, Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0), streamId));
    this.push(block);
  }

  sendData(stream: H2Stream, data: Buffer): void {
    if (stream.queue !== null) {
      stream.queue.push(data);
      this.queued(QUEUED_ENTRY_BYTES + data.length);
      return;
    }
    const sent = this.sendAllowed(stream, data);
    if (sent < data.length) {
      stream.queue = [sent === 0 ? data : data.subarray(sent)];
      this.queued(QUEUED_ENTRY_BYTES + data.length - sent);
      this.waitForWindow(stream);
    }
  }

  /** Counts DATA that waits for the peer's windows; the next flush checks it against maxUnsentBytes. */
  private queued(bytes: number): void {
    this.queuedBytes += bytes;
    this.scheduleFlush();
  }

  /** Sends as much of data as the windows allow, in frames of the peer's max frame size; how much it sent. */
  private sendAllowed(stream: H2Stream, data: Buffer): number {
    let from = 0;
    while (from < data.length) {
      const length = Math.min(data.length - from, stream.sendWindow, this.sendWindow, this.peerMaxFrameSize);
      if (length <= 0) break;
      this.push(frameHeader(length, FrameType.DATA, 0, stream.id));
      this.push(from === 0 && length === data.length ? data : data.subarray(from, from + length));
      stream.sendWindow -= length;
      this.sendWindow -= length;
      from += length;
    }
    return from;
  }

  /** A stream with queued DATA whose own window is open waits in line for the connection's. */
  private waitForWindow(stream: H2Stream): void {
    if (stream.blocked || stream.sendWindow <= 0) return;
    stream.blocked = true;
    stream.blockedPrev = this.blockedTail;
    if (this.blockedTail !== null) this.blockedTail.blockedNext = stream;
    else this.blockedHead = stream;
    this.blockedTail = stream;
  }

  private unblock(stream: H2Stream): void {
    if (!stream.blocked) return;
    if (stream.blockedPrev !== null) stream.blockedPrev.blockedNext = stream.blockedNext;
    else this.blockedHead = stream.blockedNext;
    if (stream.blockedNext !== null) stream.blockedNext.blockedPrev = stream.blockedPrev;
    else this.blockedTail = stream.blockedPrev;
    stream.blockedPrev = stream.blockedNext = null;
    stream.blocked = false;
  }

  /** Sends a stream's queued DATA as its windows allow, then its trailers. */
  private pump(stream: H2Stream): void {
    const queue = stream.queue;
    if (queue === null || stream.closed) return;
    this.unblock(stream);
    while (queue.length > 0) {
      const data = queue[0] as Buffer;
      const sent = this.sendAllowed(stream, data);
      this.queuedBytes -= sent;
      if (sent < data.length) {
        queue[0] = data.subarray(sent);
        this.waitForWindow(stream);
        return;
      }
      this.queuedBytes -= QUEUED_ENTRY_BYTES;
      queue.shift();
    }
    stream.queue = null;
    if (stream.trailers !== null) {
      const trailers = stream.trailers;
      stream.trailers = null;
      this.sendEnd(stream, trailers);
    }
  }

  private pumpBlocked(): void {
    while (this.blockedHead !== null && this.sendWindow > 0) this.pump(this.blockedHead);
  }

  sendEnd(stream: H2Stream, trailers: readonly HeaderField[]): void {
    // Empty trailers: an empty DATA frame ends the stream (a HEADERS with no fields would do, but says less).
    if (trailers.length === 0) this.push(frameHeader(0, FrameType.DATA, Flag.END_STREAM, stream.id));
    else this.pushHeaders(stream.id, trailers, true);
    stream.endSent = true;
    if (stream.stopAfterEnd && !stream.remoteEnded) this.resetStream(stream, ErrorCode.NO_ERROR);
    else this.closeIfDone(stream);
  }

  closeIfDone(stream: H2Stream): void {
    if (stream.remoteEnded && stream.endSent) this.closeStream(stream, false);
  }

  resetStream(stream: H2Stream, code: number): void {
    this.push(rstStreamFrame(stream.id, code));
    this.closeStream(stream, true);
  }

  /** A stream error on a stream that may not be open. */
  private streamError(streamId: number, code: number): void {
    const stream = this.streams.get(streamId);
    if (stream !== undefined) this.resetStream(stream, code);
    else this.push(rstStreamFrame(streamId, code));
  }

  private closeStream(stream: H2Stream, reset: boolean): void {
    if (stream.closed) return;
    stream.closed = true;
    this.streams.delete(stream.id);
    this.unblock(stream);
    if (stream.queue !== null) for (const data of stream.queue) this.queuedBytes -= QUEUED_ENTRY_BYTES + data.length;
    stream.queue = null;
    stream.trailers = null;
    try {
      stream.onClose(reset);
    } catch (error) {
      this.report(new Error(`stream ${stream.id}: onClose threw: ${(error as Error).message}`));
    }
    if ((this.goawaySent || this.goawayReceived) && this.streams.size === 0 && this.phase !== 'ended') this.endSocket();
  }

  private callbackFailed(stream: H2Stream, callback: string, error: unknown): void {
    this.report(new Error(`stream ${stream.id}: ${callback} threw, so the stream was reset (INTERNAL_ERROR): ${(error as Error)?.message ?? String(error)}`));
    if (!stream.closed) this.resetStream(stream, ErrorCode.INTERNAL_ERROR);
  }

  private closeAllStreams(): void {
    this.streams.forEach((stream) => this.closeStream(stream, true));
  }

  // ---- the socket ----

  private push(frame: Buffer): void {
    this.out.push(frame);
    this.outBytes += frame.length;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(flushConnection, this);
    }
  }

  /** Writes every queued frame in one socket.write. */
  flush(): void {
    this.flushScheduled = false;
    if (this.socket.destroyed || !this.socket.writable) {
      this.out.length = 0;
      this.outBytes = 0;
      return;
    }
    if (this.out.length > 0) {
      const data = this.out.length === 1 ? (this.out[0] as Buffer) : Buffer.concat(this.out, this.outBytes);
      this.out.length = 0;
      this.outBytes = 0;
      this.socket.write(data);
    }
    const unsent = this.socket.writableLength + this.queuedBytes;
    if (unsent > this.options.maxUnsentBytes) {
      // No GOAWAY could reach a peer that does not read.
      this.report(new Error(`HTTP/2 connection from ${this.peer()} closed: ${unsent} octets wait unsent (at most ${this.options.maxUnsentBytes}); the peer sends frames but does not read the answers or open its windows`));
      this.phase = 'ended';
      this.closeAllStreams();
      this.socket.destroy();
    }
  }

  /** A connection error (§5.4.1): GOAWAY with the reason, every stream closed, the socket ended. */
  private fail(code: number, message: string): void {
    if (this.phase === 'ended') return;
    this.phase = 'ended';
    this.report(new Error(`HTTP/2 connection error ${errorCodeName(code)} from ${this.peer()}: ${message}`));
    this.push(goawayFrame(this.goawayLastStreamId ?? this.lastStreamId, code, message));
    this.closeAllStreams();
    this.endSocket();
  }

  /** Writes what is queued, ends our side, and destroys the socket if the peer has not closed its side soon after. */
  private endSocket(): void {
    if (this.lingerTimer !== undefined) return;
    this.phase = 'ended';
    this.heldBytes = 0;
    this.blockChunks.length = 0;
    this.flush();
    this.socket.end();
    this.lingerTimer = setTimeout(destroySocket, LINGER_MS, this.socket);
    this.lingerTimer.unref();
  }

  private socketClosed(): void {
    this.phase = 'ended';
    if (this.lingerTimer !== undefined) clearTimeout(this.lingerTimer);
    this.out.length = 0;
    this.heldBytes = 0;
    this.closeAllStreams();
    this.onClose();
  }

  private report(error: Error): void {
    this.options.onError?.(error);
  }

  peer(): string {
    return `${this.remoteAddress ?? 'unknown'}:${this.remotePort ?? ''}`;
  }
}

function flushConnection(connection: ServerConnection): void {
  connection.flush();
}

function destroySocket(socket: net.Socket): void {
  socket.destroy();
}

/** Why a request's (or trailers') fields are malformed for us: uppercase names, pseudo-headers after regular fields or in trailers (§8.2, §8.3). */
function fieldsViolation(fields: readonly HeaderField[], trailers: boolean): boolean {
  let regular = false;
  for (const [name] of fields) {
    if (HAS_UPPERCASE.test(name)) return true;
    if (name.charCodeAt(0) === 0x3a) {
      if (regular || trailers) return true;
    } else regular = true;
  }
  return false;
}

/** Serves HTTP/2 (h2c with prior knowledge) on an accepted socket, reading its 'data' events. */
export function serveConnection(socket: net.Socket, options: H2ServerOptions): H2Connection {
  const connection = new ServerConnection(socket, options);
  socket.on('data', (chunk: Buffer) => connection.receive(chunk));
  return connection;
}

/**
 * The same on a socket whose reads the caller hands on (net.Socket's onread:
 * shared-read-buffer.ts): receive takes a chunk valid only during the call.
 */
export function serveLentReads(socket: net.Socket, options: H2ServerOptions): H2Connection & { receive(chunk: Buffer): void } {
  return new ServerConnection(socket, options);
}
