// The prefix hasher's protocol logic, free of I/O: one ext_proc message and
// the stream's phase in, one ProcessingResponse (or a reason to end the stream
// with a gRPC error) out. The stream loop lives in server.ts.
import xxhash from 'xxhash-wasm';
import { PROMPT_HASH_HEADER } from '../src/affinity.ts';
import { MODEL_HEADER } from '../src/ai-gateway.ts';
import type { PrefixKey } from '../src/model-service.ts';
import { conversationKey } from './conversation-key.ts';
import { GrpcStatus, type TruncatedMessage } from './grpc-wire.ts';
import type { ProcessingRequest, ProcessingResponse, RequestKind } from './protocol.ts';


/**
 * The largest ProcessingRequest accepted. A BufferedPartial body message is at
 * most the connection buffer (32 KiB by default in Envoy Gateway) and a headers
 * message at most Envoy's request-header limit (60 KiB by default), each plus a
 * little protobuf framing; 128 KiB holds either with room to spare.
 */
export const DEFAULT_MAX_MESSAGE_BYTES = 128 * 1024;

/** XXH64 with seed 0 over raw bytes. */
export type Hash64 = (bytes: Uint8Array) => bigint;

export async function loadXxh64(): Promise<Hash64> {
  const { h64Raw } = await xxhash();
  return (bytes) => h64Raw(bytes, 0n);
}

/**
 * The bytes hashed for a body (SPEC §4): for Body, its first
 * min(prefixBytes, length) bytes; for Conversation, the canonical opening of
 * the conversation, or the Body key when the body is not JSON of a known
 * shape. A Conversation key is a view that the next call overwrites.
 */
export function promptKey(body: Uint8Array, prefixBytes: number, prefixKey: PrefixKey): Uint8Array {
  if (prefixKey === 'Conversation') {
    const key = conversationKey(body, prefixBytes);
    if (key !== undefined) return key;
  }
  return body.length > prefixBytes ? body.subarray(0, prefixBytes) : body;
}

/** XXH64 (seed 0) of the body's key (promptKey; Body when not given), as 16 lowercase hex digits. */
export function promptHash(body: Uint8Array, prefixBytes: number, hash64: Hash64, prefixKey: PrefixKey = 'Body'): string {
  return hash64(promptKey(body, prefixBytes, prefixKey)).toString(16).padStart(16, '0');
}

/**
 * Where a stream stands, as Envoy drives it with request headers SEND and
 * request body BufferedPartial:
 * - awaiting-headers: nothing received yet;
 * - awaiting-body: headers answered, the body message is next;
 * - body-continues: the first body message was partial (end_of_stream false);
 *   Envoy sends no more in BufferedPartial mode, but STREAMED would;
 * - request-done: nothing more is expected for the request.
 */
export type Phase = 'awaiting-headers' | 'awaiting-body' | 'body-continues' | 'request-done';

/** What an answered message did, for metrics. */
export type Outcome = 'headers-answered' | 'hashed' | 'no-body' | 'passed-through';

export type ErrorReason = 'undecodable' | 'too-large' | 'empty-message' | 'out-of-order';

export interface Answer {
  ok: true;
  response: ProcessingResponse;
  phase: Phase;
  outcome: Outcome;
  /** The x-prompt-hash value when outcome is 'hashed': response is then hashedBodyAnswer(promptHash). */
  promptHash?: string;
  /** On the answer to request_headers: the stream's key settings (keySettingsFor; null: not hashed). */
  settings?: KeySettings | null;
}

export interface Rejection {
  ok: false;
  code: GrpcStatus;
  reason: ErrorReason;
  /** Safe to log and to send as the gRPC status message: never contains body bytes. */
  message: string;
}

/** How a request's key is taken (SPEC §4). */
export interface KeySettings {
  prefixBytes: number;
  /** What the first prefixBytes bytes are taken from; Body when absent. */
  prefixKey?: PrefixKey;
}

export interface HandlerConfig extends KeySettings {
  hash64: Hash64;
  /**
   * The Gateway-level hasher's settings per model (src/gateway-hasher.ts),
   * chosen by the x-ai-eg-model header: a request of a model not listed is
   * not hashed. Absent: every request is hashed with prefixBytes/prefixKey.
   */
  models?: ReadonlyMap<string, KeySettings>;
}

/**
 * The answers to request_headers: always remove the header, whatever its
 * letter case or count, because a client must not choose its cluster and
 * Envoy hashes every value of a repeated header together. Envoy resolved the
 * route (and, with weighted_clusters + use_hash_policy, picked the cluster)
 * from the headers as the client sent them, before any filter ran: when the
 * client sent the header, removing it changes that pick only if the answer
 * also clears the route cache (SPEC §3). Frozen objects, so the server
 * encodes each once.
 */
export const HEADERS_ANSWER: ProcessingResponse = Object.freeze({
  request_headers: Object.freeze({
    response: Object.freeze({ status: 'CONTINUE' as const, header_mutation: Object.freeze({ remove_headers: Object.freeze([PROMPT_HASH_HEADER]) as string[] }) }),
  }),
});
export const HEADERS_ANSWER_CLEARING_ROUTE: ProcessingResponse = Object.freeze({
  request_headers: Object.freeze({
    response: Object.freeze({
      status: 'CONTINUE' as const,
      header_mutation: Object.freeze({ remove_headers: Object.freeze([PROMPT_HASH_HEADER]) as string[] }),
      clear_route_cache: true,
    }),
  }),
});

/** The key settings for a request with these headers: null when it is not to be hashed (a model the Gateway-level table does not list). */
export function keySettingsFor(headers: ProcessingRequest['request_headers'], config: HandlerConfig): KeySettings | null {
  if (config.models === undefined) return config;
  const model = headerValue(headers, MODEL_HEADER);
  return (model === undefined ? undefined : config.models.get(model)) ?? null;
}

/** The first value of a header (name in lower case); Envoy sends raw_value, older Envoys value. */
function headerValue(headers: ProcessingRequest['request_headers'], name: string): string | undefined {
  for (const header of headers?.headers?.headers ?? []) {
    if (header.key?.toLowerCase() !== name) continue;
    return header.raw_value !== undefined && header.raw_value.length > 0 ? Buffer.from(header.raw_value).toString('latin1') : header.value;
  }
  return undefined;
}

/** The client sent x-prompt-hash (any letter case, any count). */
function sentPromptHash(headers: ProcessingRequest['request_headers']): boolean {
  for (const header of headers?.headers?.headers ?? []) {
    const key = header.key;
    if (key !== undefined && key.length === PROMPT_HASH_HEADER.length && key.toLowerCase() === PROMPT_HASH_HEADER) return true;
  }
  return false;
}

/**
 * One message of a stream. `settings`: what the stream's request_headers
 * chose (keySettingsFor; the answer to them carries it in `settings`), null
 * for a request that is not hashed; before the headers, the config's.
 */
export function handleMessage(phase: Phase, request: ProcessingRequest, config: HandlerConfig, settings: KeySettings | null = config): Answer | Rejection {
  const kind = request.request;
  switch (kind) {
    case 'request_headers': {
      if (phase !== 'awaiting-headers') return outOfOrder(kind, phase);
      const endOfStream = request.request_headers?.end_of_stream === true;
      return {
        ok: true,
        response: sentPromptHash(request.request_headers) ? HEADERS_ANSWER_CLEARING_ROUTE : HEADERS_ANSWER,
        phase: endOfStream ? 'request-done' : 'awaiting-body',
        outcome: endOfStream ? 'no-body' : 'headers-answered',
        settings: keySettingsFor(request.request_headers, config),
      };
    }
    case 'request_body': {
      const endOfStream = request.request_body?.end_of_stream === true;
      const next: Phase = endOfStream ? 'request-done' : 'body-continues';
      if (phase === 'body-continues') {
        // The hash was set from the first message; later pieces change nothing.
        return { ok: true, response: continueBody(), phase: next, outcome: 'passed-through' };
      }
      if (phase !== 'awaiting-body') return outOfOrder(kind, phase);
      const body = request.request_body?.body;
      if (body === undefined || body.length === 0) {
        return { ok: true, response: continueBody(), phase: next, outcome: 'no-body' };
      }
      if (settings === null) return { ok: true, response: continueBody(), phase: next, outcome: 'passed-through' };
      // Only this message: in BufferedPartial mode a longer body is cut here
      // (end_of_stream false), and the key must come from the cut alone.
      const hash = promptHash(body, settings.prefixBytes, config.hash64, settings.prefixKey);
      return { ok: true, response: hashedBodyAnswer(hash), phase: next, outcome: 'hashed', promptHash: hash };
    }
    case 'request_trailers':
      if (phase === 'awaiting-headers' || phase === 'request-done') return outOfOrder(kind, phase);
      return { ok: true, response: { request_trailers: {} }, phase: 'request-done', outcome: 'passed-through' };
    // Envoy sends response messages only if a processing mode asks for them;
    // ours does not, but answering them unchanged is always correct.
    case 'response_headers':
      return { ok: true, response: { response_headers: { response: { status: 'CONTINUE' } } }, phase, outcome: 'passed-through' };
    case 'response_body':
      return { ok: true, response: { response_body: { response: { status: 'CONTINUE' } } }, phase, outcome: 'passed-through' };
    case 'response_trailers':
      return { ok: true, response: { response_trailers: {} }, phase, outcome: 'passed-through' };
    case undefined:
      return {
        ok: false,
        code: GrpcStatus.INVALID_ARGUMENT,
        reason: 'empty-message',
        message: 'ProcessingRequest has none of request_headers, request_body, request_trailers, response_headers, response_body, response_trailers set',
      };
  }
}

/** Length of every x-prompt-hash value: XXH64 as 16 hex digits. */
export const PROMPT_HASH_LENGTH = 16;

/**
 * The answer to a body that was hashed: set x-prompt-hash and clear the
 * route cache. raw_value only: Envoy reads raw_value and rejects a
 * HeaderValue with both fields set. Envoy resolved the route before any
 * filter ran, and with weighted_clusters + use_hash_policy that resolution
 * already picked the cluster from the headers the client sent; only a
 * cleared route cache makes the router resolve again with this header
 * (SPEC §3). On one Maglev cluster the load balancer hashes the live headers
 * anyway, and the flag costs one route lookup.
 */
export function hashedBodyAnswer(hash: string): ProcessingResponse {
  return {
    request_body: {
      response: {
        status: 'CONTINUE',
        header_mutation: {
          set_headers: [{ header: { key: PROMPT_HASH_HEADER, raw_value: Buffer.from(hash, 'latin1') }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
        },
        clear_route_cache: true,
      },
    },
  };
}

function continueBody(): ProcessingResponse {
  return { request_body: { response: { status: 'CONTINUE' } } };
}

const EXPECTED: Record<Phase, string> = {
  'awaiting-headers': 'request_headers first',
  'awaiting-body': 'request_body or request_trailers after request_headers',
  'body-continues': 'more request_body or request_trailers',
  'request-done': 'only response messages once the request is complete',
};

function outOfOrder(kind: RequestKind, phase: Phase): Rejection {
  return {
    ok: false,
    code: GrpcStatus.FAILED_PRECONDITION,
    reason: 'out-of-order',
    message: `out-of-order ${kind}: expected ${EXPECTED[phase]}`,
  };
}

export type Decoded = { ok: true; request: ProcessingRequest } | Rejection;

/**
 * Decodes one ProcessingRequest. Never throws: garbage becomes a Rejection
 * the stream loop reports as that stream's gRPC status. (Size is checked
 * earlier, from the message's length prefix: grpc-wire.ts.)
 */
export function decodeRequest(bytes: Buffer, deserialize: (bytes: Buffer) => ProcessingRequest): Decoded {
  try {
    return { ok: true, request: deserialize(bytes) };
  } catch (error) {
    // protobufjs messages name the wire problem (offsets, wire types), never the payload.
    const detail = error instanceof Error ? error.message : String(error);
    return { ok: false, code: GrpcStatus.INVALID_ARGUMENT, reason: 'undecodable', message: `undecodable ProcessingRequest: ${detail}` };
  }
}

/** A protobuf varint at `at`: its value and where it ends, or undefined when the bytes end inside it (or it exceeds 2^53). */
function readVarint(bytes: Buffer, at: number): { value: number; end: number } | undefined {
  let value = 0;
  for (let i = 0, scale = 1; at + i < bytes.length && i < 8; i++, scale *= 128) {
    const byte = bytes[at + i] as number;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return { value, end: at + i + 1 };
  }
  return undefined;
}

/** ProcessingRequest.request_body (field 4) and HttpBody.body (field 1), length-delimited: their tags. */
const REQUEST_BODY_TAG = (4 << 3) | 2;
const BODY_TAG = (1 << 3) | 2;

/**
 * The request_body of a ProcessingRequest longer than the limit, from its
 * first bytes (grpc-wire.ts TruncatedMessage): the body's first bytes, as a
 * cut body (end_of_stream false), which is all a key needs (SPEC §4: a cut
 * body keys like the whole). Envoy writes fields in number order, so
 * request_body (4) and its body (1) come first. Any other long message is
 * refused as before.
 */
export function decodeTruncatedRequest(message: TruncatedMessage): Decoded {
  const tooLarge: Rejection = {
    ok: false,
    code: GrpcStatus.RESOURCE_EXHAUSTED,
    reason: 'too-large',
    message: `ProcessingRequest of ${message.length} bytes exceeds the ${message.prefix.length}-byte limit and is not a request body`,
  };
  const bytes = message.prefix;
  if (bytes[0] !== REQUEST_BODY_TAG) return tooLarge;
  const outer = readVarint(bytes, 1);
  if (outer === undefined || bytes[outer.end] !== BODY_TAG) return tooLarge;
  const inner = readVarint(bytes, outer.end + 1);
  if (inner === undefined) return tooLarge;
  return { ok: true, request: { request: 'request_body', request_body: { body: bytes.subarray(inner.end, Math.min(bytes.length, inner.end + inner.value)), end_of_stream: false } } };
}
