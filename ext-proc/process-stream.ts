// The Process loop of the hasher: one ext_proc stream per HTTP request;
// receive, decode, hand the message to handlers.ts, send its answer, end the
// stream with a gRPC status when the handlers reject a message. Answers are
// encoded once where they can be (the headers answers are constant, the
// hashed-body answers differ only in the hash).
import type http2 from 'node:http2';
import type { Logger } from 'pino';
import { Call } from './grpc-call.ts';
import { GrpcStatus, MessageReader, fixedLengthValueFrames, frameMessage, statusName } from './grpc-wire.ts';
import { HEADERS_ANSWER, HEADERS_ANSWER_CLEARING_ROUTE, PROMPT_HASH_LENGTH, decodeRequest, handleMessage, hashedBodyAnswer, type Answer, type ErrorReason, type HandlerConfig, type Phase } from './handlers.ts';
import type { ExtProcMetrics } from './metrics.ts';
import { processMethod } from './protocol.ts';

export interface LiveStream {
  call: Call;
  phase: Phase;
}

export interface ProcessLoopOptions {
  config: HandlerConfig;
  maxMessageBytes: number;
  metrics: ExtProcMetrics;
  log: Logger;
  /** Every open Process stream; the loop adds and removes them, the server drains them. */
  live: Set<LiveStream>;
  /** A draining server ends each stream as soon as it owes Envoy nothing. */
  isDraining(): boolean;
}

/** Returns the handler of one ExternalProcessor/Process stream. */
export function createProcessLoop(options: ProcessLoopOptions): (stream: http2.ServerHttp2Stream) => void {
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

  return function serveProcess(stream: http2.ServerHttp2Stream): void {
    const call = new Call(stream);
    const entry: LiveStream = { call, phase: 'awaiting-headers' };
    const reader = new MessageReader(maxMessageBytes);
    const peer = `${stream.session?.socket?.remoteAddress ?? 'unknown'}:${stream.session?.socket?.remotePort ?? ''}`;
    live.add(entry);
    metrics.streamStarted();

    const fail = (reason: ErrorReason, code: GrpcStatus, message: string): void => {
      metrics.errors.inc({ reason });
      // message never contains body bytes (see handlers.ts and grpc-wire.ts).
      log.warn({ peer, reason, code: statusName(code), error: message }, 'ending ext_proc stream with an error');
      call.end({ code, details: message });
    };

    stream.on('data', (chunk: Buffer) => {
      if (call.ended) return;
      const messages = reader.push(chunk);
      if (!Array.isArray(messages)) {
        fail(messages.code === GrpcStatus.RESOURCE_EXHAUSTED ? 'too-large' : 'undecodable', messages.code, messages.message);
        return;
      }
      for (const bytes of messages) {
        const started = performance.now();
        const decoded = decodeRequest(bytes, method.requestDeserialize);
        const result = decoded.ok ? handleMessage(entry.phase, decoded.request, config) : decoded;
        if (!result.ok) {
          fail(result.reason, result.code, result.message);
          return;
        }
        entry.phase = result.phase;
        call.sendFramed(answerFrame(result));
        metrics.answered(result.outcome, decoded.ok ? (decoded.request.request ?? 'none') : 'none', (performance.now() - started) / 1000);
        if (options.isDraining() && isIdle(entry.phase)) call.end();
      }
    });
    // Envoy half-closed: nothing more will come, so close our side cleanly.
    stream.on('end', () => {
      if (call.ended) return;
      if (reader.pending) fail('undecodable', GrpcStatus.INTERNAL, 'the stream ended inside a message');
      else call.end();
    });
    // A reset is routine (the HTTP request ended), so it is not an error.
    stream.on('close', () => {
      if (!call.ended) log.debug({ peer, phase: entry.phase }, 'ext_proc stream reset by the client');
      call.ended = true;
      live.delete(entry);
    });
    stream.on('error', (error: Error) => log.debug({ peer, error: error.message }, 'ext_proc stream error'));
  };
}

/** Nothing more of the request is owed to this stream in BufferedPartial mode. */
export function isIdle(phase: Phase): boolean {
  return phase === 'request-done' || phase === 'body-continues';
}
