import { describe, expect, it } from 'vitest';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { Command } from 'commander';
import { TruncatedMessage, fixedLengthValueFrames, frameMessage } from './grpc-wire.ts';
import {
  PROMPT_HASH_LENGTH,
  decodeRequest,
  decodeTruncatedRequest,
  handleMessage,
  hashedBodyAnswer,
  loadXxh64,
  promptHash,
  type HandlerConfig,
  type Phase,
  type Rejection,
} from './handlers.ts';
import { integerBetween } from '../bin/options.ts';
import { PROMPT_HASH_HEADER } from '../src/affinity.ts';
import { registerExtProcCommand } from './command.ts';
import { processMethod, type ProcessingRequest, type ProcessingResponse } from './protocol.ts';
import { referencePromptHash, referenceXxh64 } from './xxh64-reference.ts';

const hash64 = await loadXxh64();
const N = 1024;
const config: HandlerConfig = { prefixBytes: N, hash64 };

/** Deterministic bytes covering every value 0..255. */
function bytes(length: number, salt = 0): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (i * 131 + salt * 7 + (i >> 8)) & 0xff;
  return out;
}

// A JSON body whose byte N-1 is the first byte of a 3-byte UTF-8 character ("€").
const utf8Split = Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'), Buffer.from('a'.repeat(N - 40)), Buffer.from('€€€"}]}')]);

describe('XXH64', () => {
  // Published test vectors of XXH64 with seed 0 (xxHash's sanity checks and python-xxhash's README).
  it.each([
    ['', 'ef46db3751d8e999'],
    ['a', 'd24ec4f1a98c6e5b'],
    ['abc', '44bc2cf5ad770999'],
    ['Nobody inspects the spammish repetition', 'fbcea83c8a378bf1'],
  ])('hashes %j to the published value %s, in both implementations', (input, expected) => {
    expect(promptHash(Buffer.from(input), N, hash64)).toBe(expected);
    expect(referenceXxh64(Buffer.from(input)).toString(16).padStart(16, '0')).toBe(expected);
  });

  it('agrees with the BigInt reference on every length from 0 to 300 and on 32 KiB', () => {
    const data = bytes(32768, 3);
    for (let length = 0; length <= 300; length++) expect(hash64(data.subarray(0, length))).toBe(referenceXxh64(data.subarray(0, length)));
    expect(hash64(data)).toBe(referenceXxh64(data));
  });

  it('always renders 16 lowercase hex digits, leading zeros included', () => {
    // Find an input whose hash has a leading zero nibble to prove the padding.
    let i = 0;
    while (referenceXxh64(Buffer.from(String(i))) >> 60n !== 0n) i++;
    const rendered = promptHash(Buffer.from(String(i)), N, hash64);
    expect(rendered).toMatch(/^0[0-9a-f]{15}$/);
  });
});

function setHeaders(response: ProcessingResponse | undefined) {
  return response?.request_body?.response?.header_mutation?.set_headers;
}

describe('handleMessage', () => {
  interface Case {
    name: string;
    phase: Phase;
    request: ProcessingRequest;
    next: Phase;
    outcome: string;
    /** The x-prompt-hash value set, or null for none. */
    hash: string | null;
  }
  const body = (data: Uint8Array, end = true): ProcessingRequest => ({ request: 'request_body', request_body: { body: data, end_of_stream: end } });
  const cases: Case[] = [
    { name: 'a body shorter than N is hashed whole', phase: 'awaiting-body', request: body(bytes(100)), next: 'request-done', outcome: 'hashed', hash: referencePromptHash(bytes(100), N) },
    { name: 'a body of exactly N bytes is hashed whole', phase: 'awaiting-body', request: body(bytes(N)), next: 'request-done', outcome: 'hashed', hash: referencePromptHash(bytes(N), N) },
    { name: 'a body longer than N is hashed on its first N bytes only', phase: 'awaiting-body', request: body(bytes(5000)), next: 'request-done', outcome: 'hashed', hash: referencePromptHash(bytes(N), N) },
    { name: 'a UTF-8 character split at byte N is cut as bytes, not characters', phase: 'awaiting-body', request: body(utf8Split), next: 'request-done', outcome: 'hashed', hash: referencePromptHash(utf8Split.subarray(0, N), N) },
    { name: 'binary bytes (NUL, 0xff, invalid UTF-8) are hashed as they are', phase: 'awaiting-body', request: body(Buffer.from([0, 0xff, 0xfe, 0xc3, 0x28, 0, 1])), next: 'request-done', outcome: 'hashed', hash: referencePromptHash(Buffer.from([0, 0xff, 0xfe, 0xc3, 0x28, 0, 1]), N) },
    { name: 'a partial 32 KiB first message (end_of_stream false) is hashed and the request is then complete for us', phase: 'awaiting-body', request: body(bytes(32768), false), next: 'body-continues', outcome: 'hashed', hash: referencePromptHash(bytes(N), N) },
    { name: 'an empty body sets no hash', phase: 'awaiting-body', request: body(Buffer.alloc(0)), next: 'request-done', outcome: 'no-body', hash: null },
    { name: 'a body message without a body field sets no hash', phase: 'awaiting-body', request: { request: 'request_body', request_body: { end_of_stream: true } }, next: 'request-done', outcome: 'no-body', hash: null },
    { name: 'later body pieces after a partial first message change nothing', phase: 'body-continues', request: body(bytes(500, 9)), next: 'request-done', outcome: 'passed-through', hash: null },
  ];

  it.each(cases)('$name', ({ phase, request, next, outcome, hash }) => {
    const result = handleMessage(phase, request, config);
    expect(result).toMatchObject({ ok: true, phase: next, outcome });
    if (!result.ok) return;
    expect(result.response.request_body?.response?.status).toBe('CONTINUE');
    if (hash === null) {
      expect(setHeaders(result.response)).toBeUndefined();
      return;
    }
    expect(setHeaders(result.response)).toEqual([
      { header: { key: PROMPT_HASH_HEADER, raw_value: Buffer.from(hash) }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
    ]);
    // raw_value only: a `value` field would make Envoy reject the mutation.
    expect(setHeaders(result.response)?.[0]?.header).not.toHaveProperty('value');
  });

  it('clears the route cache with every hash it sets, so a weighted_clusters pick is made again from the new header', () => {
    const result = handleMessage('awaiting-body', body(Buffer.from('{"messages":[]}'), true), config);
    expect(result).toMatchObject({ ok: true, outcome: 'hashed' });
    expect(result.ok && result.response.request_body?.response?.clear_route_cache).toBe(true);
  });

  it.each([
    { name: 'lower case', headers: [{ key: 'x-prompt-hash', raw_value: Buffer.from('aaaa') }] },
    { name: 'mixed case', headers: [{ key: 'X-Prompt-Hash', raw_value: Buffer.from('aaaa') }] },
    { name: 'repeated', headers: [{ key: 'x-prompt-hash', raw_value: Buffer.from('a') }, { key: 'x-prompt-hash', raw_value: Buffer.from('b') }] },
    { name: 'empty', headers: [{ key: 'x-prompt-hash', raw_value: Buffer.alloc(0) }] },
  ])('removes a client-sent x-prompt-hash ($name) and clears the route cache the client steered', ({ headers }) => {
    for (const endOfStream of [false, true]) {
      const result = handleMessage('awaiting-headers', { request: 'request_headers', request_headers: { headers: { headers: [{ key: ':path', raw_value: Buffer.from('/v1') }, ...headers] }, end_of_stream: endOfStream } }, config);
      expect(result).toMatchObject({
        ok: true,
        response: { request_headers: { response: { status: 'CONTINUE', header_mutation: { remove_headers: ['x-prompt-hash'] }, clear_route_cache: true } } },
      });
    }
  });

  it('leaves the route cache alone when the client sent no x-prompt-hash', () => {
    const result = handleMessage('awaiting-headers', { request: 'request_headers', request_headers: { headers: { headers: [{ key: 'x-prompt-hashes', raw_value: Buffer.from('a') }] } } }, config);
    expect(result.ok && result.response.request_headers?.response).not.toHaveProperty('clear_route_cache');
  });

  it.each([
    { name: 'headers with more to come wait for the body', endOfStream: false, next: 'awaiting-body', outcome: 'headers-answered' },
    { name: 'headers with end_of_stream complete a request without a body', endOfStream: true, next: 'request-done', outcome: 'no-body' },
  ])('$name, and always remove a client-supplied x-prompt-hash', ({ endOfStream, next, outcome }) => {
    const result = handleMessage('awaiting-headers', { request: 'request_headers', request_headers: { end_of_stream: endOfStream } }, config);
    expect(result).toEqual({
      ok: true,
      response: { request_headers: { response: { status: 'CONTINUE', header_mutation: { remove_headers: ['x-prompt-hash'] } } } },
      phase: next,
      outcome,
      // Without a models table every stream is keyed with the flags.
      settings: config,
    });
  });

  it.each([
    { kind: 'response_headers', phase: 'request-done', response: { response_headers: { response: { status: 'CONTINUE' } } } },
    { kind: 'response_body', phase: 'body-continues', response: { response_body: { response: { status: 'CONTINUE' } } } },
    { kind: 'response_trailers', phase: 'request-done', response: { response_trailers: {} } },
    { kind: 'request_trailers', phase: 'awaiting-body', response: { request_trailers: {} } },
  ] as const)('answers $kind unchanged in phase $phase', ({ kind, phase, response }) => {
    const result = handleMessage(phase, { request: kind, [kind]: {} }, config);
    expect(result).toMatchObject({ ok: true, response, outcome: 'passed-through' });
  });

  it.each([
    { name: 'a body before the headers', phase: 'awaiting-headers', request: body(Buffer.from('SECRET-BODY')), expected: 'out-of-order request_body: expected request_headers first' },
    { name: 'trailers before the headers', phase: 'awaiting-headers', request: { request: 'request_trailers', request_trailers: {} }, expected: 'out-of-order request_trailers: expected request_headers first' },
    { name: 'headers twice', phase: 'awaiting-body', request: { request: 'request_headers', request_headers: {} }, expected: 'out-of-order request_headers: expected request_body or request_trailers after request_headers' },
    { name: 'a body after headers with end_of_stream', phase: 'request-done', request: body(Buffer.from('SECRET-BODY')), expected: 'out-of-order request_body: expected only response messages once the request is complete' },
  ] satisfies Array<{ name: string; phase: Phase; request: ProcessingRequest; expected: string }>)(
    'rejects $name with FAILED_PRECONDITION and a message without body bytes',
    ({ phase, request, expected }) => {
      const result = handleMessage(phase, request, config) as Rejection;
      expect(result).toEqual({ ok: false, code: GrpcStatus.FAILED_PRECONDITION, reason: 'out-of-order', message: expected });
      expect(result.message).not.toContain('SECRET');
    },
  );

  it('rejects a message with no request set with INVALID_ARGUMENT', () => {
    expect(handleMessage('awaiting-headers', {}, config)).toMatchObject({ ok: false, code: GrpcStatus.INVALID_ARGUMENT, reason: 'empty-message' });
  });
});

describe('decodeRequest', () => {
  const method = processMethod();
  const encode = (request: ProcessingRequest) => method.requestSerialize(request);

  it.each([
    {
      name: 'decodes a body message as Envoy encodes it',
      bytes: encode({ request_body: { body: Buffer.from('hello'), end_of_stream: true } }),
      expected: { ok: true, request: { request: 'request_body', request_body: { body: Buffer.from('hello'), end_of_stream: true } } },
    },
    {
      name: 'accepts a 32 KiB body message',
      bytes: encode({ request_body: { body: bytes(32768), end_of_stream: false } }),
      expected: { ok: true },
    },
    {
      name: 'turns bytes that are no protobuf into INVALID_ARGUMENT',
      bytes: Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x53, 0x45, 0x43]),
      expected: { ok: false, code: GrpcStatus.INVALID_ARGUMENT, reason: 'undecodable', message: expect.stringMatching(/^undecodable ProcessingRequest: /) },
    },
  ])('$name', ({ bytes: wire, expected }) => {
    expect(decodeRequest(wire, method.requestDeserialize)).toMatchObject(expected);
  });

  it('puts the hash on the wire in raw_value (field 3) and never in value (field 2)', () => {
    const result = handleMessage('awaiting-body', { request: 'request_body', request_body: { body: Buffer.from('abc'), end_of_stream: true } }, config);
    if (!result.ok) throw new Error(result.message);
    const wire = method.responseSerialize(result.response);
    const decoded = method.responseDeserialize(wire);
    const header = setHeaders(decoded)?.[0]?.header;
    expect(header?.value).toBeUndefined();
    expect(Buffer.from(header?.raw_value ?? []).toString()).toBe('44bc2cf5ad770999');
    expect(setHeaders(decoded)?.[0]?.append_action).toBe('OVERWRITE_IF_EXISTS_OR_ADD');
  });
});

describe('the ext-proc command', () => {
  it.each([
    { raw: '64', expected: 64 },
    { raw: '32768', expected: 32768 },
    { raw: '63', expected: 'must be an integer between 64 and 32768' },
    { raw: '32769', expected: 'must be an integer between 64 and 32768' },
    { raw: '1e3', expected: 'must be an integer between 64 and 32768' },
    { raw: '-100', expected: 'must be an integer between 64 and 32768' },
    { raw: '', expected: 'must be an integer between 64 and 32768' },
  ])('reads --prefix-bytes $raw as $expected', ({ raw, expected }) => {
    const parse = integerBetween(64, 32768);
    if (typeof expected === 'number') expect(parse(raw)).toBe(expected);
    else expect(() => parse(raw)).toThrow(expected);
  });

  it('requires --prefix-bytes (or --model) and defaults the ports', () => {
    const program = new Command().exitOverride().configureOutput({ writeErr: () => {} });
    const command = registerExtProcCommand(program).exitOverride().configureOutput({ writeErr: () => {} });
    expect(() => program.parse(['ext-proc'], { from: 'user' })).toThrow(/--prefix-bytes/);
    expect(command.opts()).toMatchObject({ port: 9002, metricsPort: 9090 });
  });

  it.each([
    { args: [], prefixKey: 'Conversation' },
    { args: ['--prefix-key', 'Body'], prefixKey: 'Body' },
    { args: ['--prefix-key', 'Conversation'], prefixKey: 'Conversation' },
  ])('takes --prefix-key $args (default Conversation)', ({ args, prefixKey }) => {
    const program = new Command().exitOverride().configureOutput({ writeErr: () => {} });
    const command = registerExtProcCommand(program).exitOverride().configureOutput({ writeErr: () => {} }).action(() => {});
    program.parse(['ext-proc', '--prefix-bytes', '1024', ...args], { from: 'user' });
    expect(command.opts()).toMatchObject({ prefixKey });
  });

  it('refuses a --prefix-key that is not Conversation or Body, naming both', () => {
    let err = '';
    const program = new Command().exitOverride().configureOutput({ writeErr: (text) => void (err += text) });
    registerExtProcCommand(program).exitOverride().configureOutput({ writeErr: (text) => void (err += text) }).action(() => {});
    expect(() => program.parse(['ext-proc', '--prefix-bytes', '1024', '--prefix-key', 'body'], { from: 'user' })).toThrow();
    expect(err).toMatch(/Allowed choices are Conversation, Body/);
  });
});

describe('the hashed-body answer, encoded once with the hash written in (server.ts)', () => {
  const method = processMethod();
  const frames = fixedLengthValueFrames((hash) => method.responseSerialize(hashedBodyAnswer(hash)), PROMPT_HASH_LENGTH);
  const hashes = ['0000000000000000', 'ffffffffffffffff', '0123456789abcdef', ...[1, 2, 3, 4, 5].map((i) => referencePromptHash(bytes(100 * i, i), N))];
  it.each(hashes)('is byte for byte what encoding the answer for %s gives', (hash) => {
    expect(frames(hash).equals(frameMessage(method.responseSerialize(hashedBodyAnswer(hash))))).toBe(true);
  });
  it('hands out a new frame each time (a frame in flight is never overwritten)', () => {
    const first = frames('0123456789abcdef');
    frames('fedcba9876543210');
    expect(first.equals(frameMessage(method.responseSerialize(hashedBodyAnswer('0123456789abcdef'))))).toBe(true);
  });
  it('refuses a value of another length', () => {
    expect(() => frames('abc')).toThrow(/value of 3 characters, expected 16/);
  });
  it('refuses an answer whose value is not one run of bytes (so no wrong frame is ever built)', () => {
    // The value appears twice in this encoding.
    expect(() => fixedLengthValueFrames((v) => Buffer.from(v + v), 4)).toThrow(/not one contiguous run/);
  });
});

describe('the Gateway-level hasher: key settings per x-ai-eg-model (src/gateway-hasher.ts)', () => {
  const models = new Map([
    ['team-a/llama', { prefixKey: 'Conversation' as const, prefixBytes: 256 }],
    ['team-b/qwen', { prefixKey: 'Body' as const, prefixBytes: 64 }],
  ]);
  const table: HandlerConfig = { prefixBytes: N, hash64, models };
  const body = Buffer.from(JSON.stringify({ model: 'x', messages: [{ role: 'user', content: 'hello '.repeat(100) }] }));
  const headers = (model?: string, raw = true): ProcessingRequest => ({
    request: 'request_headers',
    request_headers: {
      headers: { headers: model === undefined ? [{ key: ':path', raw_value: Buffer.from('/v1/chat/completions') }] : [raw ? { key: 'X-AI-EG-Model', raw_value: Buffer.from(model) } : { key: 'x-ai-eg-model', value: model }] },
    },
  });
  const bodyMessage: ProcessingRequest = { request: 'request_body', request_body: { body, end_of_stream: true } };

  function run(request: ProcessingRequest): { hash?: string; outcome: string } {
    const first = handleMessage('awaiting-headers', request, table);
    if (!first.ok) throw new Error(first.message);
    const second = handleMessage(first.phase, bodyMessage, table, first.settings);
    if (!second.ok) throw new Error(second.message);
    return { outcome: second.outcome, ...(second.promptHash === undefined ? {} : { hash: second.promptHash }) };
  }

  it.each([
    { model: 'team-a/llama', raw: true, expected: promptHash(body, 256, hash64, 'Conversation') },
    { model: 'team-a/llama', raw: false, expected: promptHash(body, 256, hash64, 'Conversation') },
    { model: 'team-b/qwen', raw: true, expected: promptHash(body, 64, hash64, 'Body') },
  ])('hashes a request of $model (raw_value $raw) with that model\'s settings', ({ model, raw, expected }) => {
    expect(run(headers(model, raw))).toEqual({ outcome: 'hashed', hash: expected });
  });

  it('leaves a request of a model not listed, or without the header, unhashed (its BackendTrafficPolicy does not read the header)', () => {
    expect(run(headers('team-c/other'))).toEqual({ outcome: 'passed-through' });
    expect(run(headers(undefined))).toEqual({ outcome: 'passed-through' });
  });

  it('still removes a client-sent x-prompt-hash from every request', () => {
    const spoofed: ProcessingRequest = { request: 'request_headers', request_headers: { headers: { headers: [{ key: 'X-Prompt-Hash', raw_value: Buffer.from('0123456789abcdef') }] } } };
    const answer = handleMessage('awaiting-headers', spoofed, table);
    expect(answer.ok && answer.response.request_headers?.response?.header_mutation?.remove_headers).toEqual([PROMPT_HASH_HEADER]);
    expect(answer.ok && answer.settings).toBeNull();
  });

  it('without a table, gives every stream the flags\' settings (every request hashed with them)', () => {
    const answer = handleMessage('awaiting-headers', headers('team-a/llama'), config);
    expect(answer.ok && answer.settings).toBe(config);
  });
});

describe('the ext-proc command: --model', () => {
  function parse(args: string[]): { opts: Record<string, unknown>; err: string; thrown: boolean } {
    let err = '';
    const program = new Command().exitOverride().configureOutput({ writeErr: (text) => void (err += text) });
    const command = registerExtProcCommand(program).exitOverride().configureOutput({ writeErr: (text) => void (err += text) }).action(() => {});
    let thrown = false;
    try {
      program.parse(['ext-proc', ...args], { from: 'user' });
    } catch {
      thrown = true;
    }
    return { opts: command.opts(), err, thrown };
  }

  it('collects one entry per --model, without --prefix-bytes', () => {
    const { opts, thrown } = parse(['--model', 'team-a/llama=Conversation:256', '--model', 'x=y=Body:64']);
    expect(thrown).toBe(false);
    expect([...(opts.model as Map<string, unknown>)]).toEqual([
      ['team-a/llama', { prefixKey: 'Conversation', prefixBytes: 256 }],
      ['x=y', { prefixKey: 'Body', prefixBytes: 64 }],
    ]);
  });

  it.each([
    { value: 'team-a/llama', message: /expected <model>=<Conversation\|Body>:<prefixBytes>/ },
    { value: 'team-a/llama=Tokens:256', message: /prefix key "Tokens" is not one of Conversation, Body/ },
    { value: 'team-a/llama=Body:63', message: /prefixBytes 63 of model team-a\/llama is outside 64\.\.32768/ },
    { value: '=Body:64', message: /expected <model>=/ },
  ])('refuses --model $value, saying what is wrong', ({ value, message }) => {
    const { err, thrown } = parse(['--model', value]);
    expect(thrown).toBe(true);
    expect(err).toMatch(message);
  });

  it('refuses the same model twice', () => {
    expect(parse(['--model', 'a=Body:64', '--model', 'a=Body:128']).err).toMatch(/model a is given twice/);
  });

  it('asks for --prefix-bytes or --model when neither is given', () => {
    const { err, thrown } = parse([]);
    expect(thrown).toBe(true);
    expect(err).toMatch(/give --prefix-bytes <n>, or one --model/);
  });
});

describe('decodeTruncatedRequest: the first bytes of a ProcessingRequest over the limit', () => {
  const method = processMethod();
  const big = Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'opening words' }, { role: 'assistant', content: 'x'.repeat(300_000) }] }));
  const cutAt = (message: Buffer, bytes: number) => new TruncatedMessage(Buffer.from(message.subarray(0, bytes)), message.length);

  it.each([1024, 131072])('gives the body cut where the message was cut (%i bytes kept), end_of_stream false, keyed like the whole body', (kept) => {
    const serialized = method.requestSerialize({ request: 'request_body', request_body: { body: big, end_of_stream: true } });
    const decoded = decodeTruncatedRequest(cutAt(serialized, kept));
    if (!decoded.ok) throw new Error(decoded.message);
    const body = decoded.request.request_body?.body as Uint8Array;
    expect(decoded.request.request_body?.end_of_stream).toBe(false);
    expect(Buffer.from(body).equals(big.subarray(0, body.length))).toBe(true);
    expect(body.length).toBeGreaterThan(kept - 10);
    expect(promptHash(body, N, hash64, 'Conversation')).toBe(promptHash(big, N, hash64, 'Conversation'));
  });

  it('refuses anything but a request body, naming the sizes', () => {
    const headers = method.requestSerialize({ request: 'request_headers', request_headers: { headers: { headers: [{ key: 'x-big', raw_value: Buffer.alloc(200_000, 'a') }] } } });
    expect(decodeTruncatedRequest(cutAt(headers, 131072))).toMatchObject({ ok: false, reason: 'too-large', message: `ProcessingRequest of ${headers.length} bytes exceeds the 131072-byte limit and is not a request body` });
    expect(decodeTruncatedRequest(new TruncatedMessage(Buffer.from([0x22, 0xff]), 1_000_000))).toMatchObject({ ok: false, reason: 'too-large' });
  });
});
