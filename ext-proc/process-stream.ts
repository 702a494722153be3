// The Process loop of the hasher: one ext_proc stream per HTTP request;
// receive, decode, hand the message to handlers.ts, send its answer, end the
// stream with a gRPC status when the handlers reject a message. Answers are
// encoded once where they can be (the headers answers are constant, the
// hashed-body answers differ only in the hash).
import type { Logger } from 'pino';
import { Call } from './grpc-call.ts';
import type { H2Connection, H2Stream } from './h2-connection.ts';
import { GrpcStatus, MessageReader, TruncatedMessage, UnfinishedShare, fixedLengthValueFrames, frameMessage, statusName } from './grpc-wire.ts';
import { HEADERS_ANSWER, HEADERS_ANSWER_CLEARING_ROUTE, PROMPT_HASH_LENGTH, decodeRequest, decodeTruncatedRequest, handleMessage, hashedBodyAnswer, type Answer, type ErrorReason, type HandlerConfig, type KeySettings, type Phase } from './handlers.ts';
import type { ExtProcMetrics } from './metrics.ts';
import { processMethod } from './protocol.ts';

export interface LiveStream {
  call: Call;
  phase: Phase;
}

/** Each connection's part of the unfinished-message budget (grpc-wire.ts), gone with the connection. */
const shares = new WeakMap<H2Connection, UnfinishedShare>();
function shareOf(connection: H2Connection): UnfinishedShare {
  let share = shares.get(connection);
  if (share === undefined) shares.set(connection, (share = new UnfinishedShare()));
  return share;
}

/** One Process stream: its call, where it stands, its message reader, its place in LiveStreams. */
class ProcessStream implements LiveStream {
  readonly call: Call;
  phase: Phase = 'awaiting-headers';
  /** The request's key settings, chosen by its headers (handlers.ts keySettingsFor); a body never comes first. */
  settings: KeySettings | null = null;
  readonly reader: MessageReader<Buffer | TruncatedMessage>;
  prev: ProcessStream | undefined = undefined;
  next: ProcessStream | undefined = undefined;
  listed = false;

  constructor(stream: H2Stream, maxMessageBytes: number) {
    this.call = new Call(stream);
    this.reader = MessageReader.keepingPrefix(maxMessageBytes, shareOf(stream.connection));
  }
}

/**
 * The open Process streams, as a list threaded through the streams
 * themselves: adding and removing one allocates nothing. A Set's table was
 * reallocated each time a burst grew it and as it drained, and under bursts
 * those tables were promoted with the streams (bench/RESULTS.md).
 */
export class LiveStreams implements Iterable<LiveStream> {
  private head: ProcessStream | undefined = undefined;
  size = 0;

  add(stream: ProcessStream): void {
    stream.next = this.head;
    if (this.head !== undefined) this.head.prev = stream;
    this.head = stream;
    stream.listed = true;
    this.size++;
  }

  delete(stream: ProcessStream): void {
    if (!stream.listed) return;
    if (stream.prev !== undefined) stream.prev.next = stream.next;
    else this.head = stream.next;
    if (stream.next !== undefined) stream.next.prev = stream.prev;
    stream.prev = stream.next = undefined;
    stream.listed = false;
    this.size--;
  }

  /** Each open stream; the loop may remove the stream it is at. */
  *[Symbol.iterator](): Iterator<LiveStream> {
    for (let stream = this.head; stream !== undefined; ) {
      const next = stream.next;
      yield stream;
      stream = next;
    }
  }
}

/**
 * A stream's state is kept on the stream, so one set of callbacks serves
 * every stream: closures per stream lived as long as the stream and, under
 * bursts, were promoted with it to the old generation (bench/RESULTS.md).
 */
const STATE = Symbol('process-stream');
type ProcessH2Stream = H2Stream & { [STATE]: ProcessStream };

/** The client's address, for logs: computed only when a line is written. */
function peerOf(stream: H2Stream): string {
  return stream.connection.peer();
}

export interface ProcessLoopOptions {
  config: HandlerConfig;
  maxMessageBytes: number;
  metrics: ExtProcMetrics;
  log: Logger;
  /** Every open Process stream; the loop adds and removes them, the server drains them. */
  live: LiveStreams;
  /** A draining server ends each stream as soon as it owes Envoy nothing. */
  isDraining(): boolean;
}

/** Returns the handler of one ExternalProcessor/Process stream. */
export function createProcessLoop(options: ProcessLoopOptions): (stream: H2Stream) => void {
  const { config, maxMessageBytes, metrics, log, live } = options;
  const method = processMethod();
  // Every stream gets the same headers answer: encode it once. Hashed-body
  // answers differ only in the hash: encode them once, write the hash in.
  const headersAnswerFrame = frameMessage(method.responseSerialize(HEADERS_ANSWER));
  const headersClearingFrame = frameMessage(method.responseSerialize(HEADERS_ANSWER_CLEARING_ROUTE));
  const hashedAnswerFrame = fixedLengthValueFrames((hash) => method.responseSerialize(hashedBodyAnswer(hash)), PROMPT_HASH_LENGTH);
  const answerFrame = (answer: Answer): Buffer =>
    answer.response === HEADERS_ANSWER
      ? headersAnswerFrame
      : answer.response === HEADERS_ANSWER_CLEARING_ROUTE
        ? headersClearingFrame
        : answer.promptHash !== undefined
        ? hashedAnswerFrame(answer.promptHash)
        : frameMessage(method.responseSerialize(answer.response));

  const fail = (entry: ProcessStream, reason: ErrorReason, code: GrpcStatus, message: string): void => {
    metrics.errors.inc({ reason });
    // message never contains body bytes (see handlers.ts and grpc-wire.ts).
    log.warn({ peer: peerOf(entry.call.stream), reason, code: statusName(code), error: message }, 'ending ext_proc stream with an error');
    entry.call.end({ code, details: message });
  };

  function onData(this: ProcessH2Stream, chunk: Buffer): void {
    const entry = this[STATE];
    const { call } = entry;
    if (call.ended) return;
    const messages = entry.reader.push(chunk);
    if (!Array.isArray(messages)) {
      fail(entry, messages.code === GrpcStatus.RESOURCE_EXHAUSTED ? 'too-large' : 'undecodable', messages.code, messages.message);
      return;
    }
    for (const bytes of messages) {
      const started = performance.now();
      const decoded = bytes instanceof TruncatedMessage ? decodeTruncatedRequest(bytes) : decodeRequest(bytes, method.requestDeserialize);
      const result = decoded.ok ? handleMessage(entry.phase, decoded.request, config, entry.settings) : decoded;
      if (!result.ok) {
        fail(entry, result.reason, result.code, result.message);
        return;
      }
      entry.phase = result.phase;
      if (result.settings !== undefined) entry.settings = result.settings;
      call.sendFramed(answerFrame(result));
      metrics.answered(result.outcome, decoded.ok ? (decoded.request.request ?? 'none') : 'none', (performance.now() - started) / 1000);
      if (options.isDraining() && isIdle(entry.phase)) call.end();
    }
  }

  // The request side ended. A client that cancels may half-close first:
  // node's http2 client (and grpc-js on it) sends END_STREAM and RST_STREAM
  // in one write (bench/RELIABILITY.md, finding 6). The reset comes in the
  // same read, so by the next turn of the loop a cancel has closed the
  // stream, and a cancel in the middle of a message is not a malformed message.
  function onEnd(this: ProcessH2Stream): void {
    if (this[STATE].call.ended) return;
    setImmediate(afterEnd, this);
  }

  // Envoy half-closed: nothing more will come, so close our side cleanly. A reset is onClose's.
  function afterEnd(stream: ProcessH2Stream): void {
    const entry = stream[STATE];
    if (entry.call.ended || stream.closed) return;
    if (entry.reader.pending) fail(entry, 'undecodable', GrpcStatus.INTERNAL, 'the stream ended inside a message');
    else entry.call.end();
  }

  // A reset is routine (the HTTP request ended), so it is not an error.
  function onClose(this: ProcessH2Stream, reset: boolean): void {
    const entry = this[STATE];
    if (reset && !entry.call.ended && log.isLevelEnabled('debug')) log.debug({ peer: peerOf(this), phase: entry.phase }, 'ext_proc stream reset by the client');
    entry.call.ended = true;
    entry.reader.discard();
    live.delete(entry);
  }

  return function serveProcess(stream: H2Stream): void {
    const entry = new ProcessStream(stream, maxMessageBytes);
    (stream as ProcessH2Stream)[STATE] = entry;
    live.add(entry);
    metrics.streamStarted();
    stream.onData = onData;
    stream.onEnd = onEnd;
    stream.onClose = onClose;
  };
}

/** Nothing more of the request is owed to this stream in BufferedPartial mode. */
export function isIdle(phase: Phase): boolean {
  return phase === 'request-done' || phase === 'body-continues';
}
