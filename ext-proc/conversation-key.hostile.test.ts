// SPEC §4 property 7: any body is answered with a key within a bounded time,
// never ends the stream or the server, never recurses without bound and
// never touches prototypes. The corpus goes through the key function alone
// (timed), then through the real server as Envoy drives it.
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { connectExtProc, headerValues, playRequest, type HeaderList } from './envoy-harness.ts';
import { conversationKey } from './conversation-key.ts';
import { loadXxh64, promptHash } from './handlers.ts';
import { startExtProc } from './server.ts';

const hash64 = await loadXxh64();
const N = 1024;
const BUFFER = 32768;

const user = (content: string) => `{"model":"m","messages":[{"role":"system","content":"S"},{"role":"user","content":${content}}]}`;
const fill = (unit: string, bytes = BUFFER) => unit.repeat(Math.ceil(bytes / unit.length)).slice(0, bytes);

const CORPUS: Array<[name: string, body: Buffer]> = [
  ['128 KiB of [', Buffer.alloc(128 * 1024, '[')],
  ['deep objects', Buffer.from(fill('{"a":'))],
  ['deep nesting inside tools before the messages', Buffer.from(`{"tools":${'['.repeat(20000)}${']'.repeat(20000)},"messages":[{"role":"user","content":"x"}]}`)],
  ['deep nesting inside the first user message', Buffer.from(user(`[${'['.repeat(30000)}`))],
  ['deep nesting after the opening', Buffer.from(`{"messages":[{"role":"user","content":"x"},${'{"a":['.repeat(5000)}`)],
  ['an unterminated string as the whole body', Buffer.from(`"${fill('a', 30000)}`)],
  ['an unterminated key', Buffer.from(`{"messa${fill('a', 30000)}`)],
  ['an unterminated first user message', Buffer.from(user(`"${fill('b', 30000)}`).slice(0, -3))],
  ['quotes only', Buffer.alloc(BUFFER, '"')],
  ['a run of backslashes', Buffer.from(user(`"${'\\'.repeat(30001)}"`))],
  ['backslash-quote runs', Buffer.from(user(`"${fill('\\\\\\"', 30000)}"`))],
  ['a truncated \\u escape', Buffer.from(user('"abc\\u12"'))],
  ['lone surrogates', Buffer.from(user('"\\ud800 \\udc00 \\udbff\\u0041"'))],
  ['invalid UTF-8 in the text', Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'), Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80]), Buffer.from('"}]}')])],
  ['invalid UTF-8 in a key', Buffer.concat([Buffer.from('{"'), Buffer.from([0xff, 0xc0]), Buffer.from('":1,"messages":[{"role":"user","content":"x"}]}')])],
  ['__proto__ and constructor keys', Buffer.from('{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}},"messages":[{"__proto__":{"role":"system"},"role":"user","content":"x","constructor":1}]}')],
  ['__proto__ as a role and a part type', Buffer.from('{"messages":[{"role":"__proto__","content":[{"type":"__proto__"}]},{"role":"user","content":"x"}]}')],
  ['1e309 and other numbers no double holds', Buffer.from(`{"temperature":1e309,"seed":-1e309,"n":${'9'.repeat(20000)},"x":1e99999999999,"messages":[{"role":"user","content":"x"}]}`)],
  ['a number where the content belongs', Buffer.from(user('1e309'))],
  ['duplicate keys', Buffer.from('{"messages":[{"role":"user","content":"a","content":"b","role":"system"}],"messages":[{"role":"user","content":"c"}],"system":"s","system":"t"}')],
  ['32 KiB of tiny keys', Buffer.from(`{${fill('"a":"",', BUFFER - 20)}"messages":[]}`)],
  ['32 KiB of tiny messages before the user', Buffer.from(`{"messages":[${fill('{"role":"system","content":""},', BUFFER)}`)],
  ['32 KiB of tiny content parts', Buffer.from(user(`[${fill('{"type":"text","text":"a"},', BUFFER)}`))],
  ['NUL bytes and control characters', Buffer.from(`{"messages":[{"role":"user","content":"${'\u0000\u0001\u001f'.repeat(1000)}"}]}`)],
  ['mismatched brackets', Buffer.from('{"messages":[{"role":"user","content":"x"}}],"system":]"s"}')],
  ['random bytes', Buffer.from(Array.from({ length: BUFFER }, (_, i) => (i * 2654435761) >>> 24))],
];

describe('the hostile corpus', () => {
  it.each(CORPUS)('%s: a 16-digit key within the time bound, and no prototype touched', (_name, body) => {
    for (const cut of [body, body.subarray(0, Math.min(body.length, BUFFER))]) {
      // The best of 3 calls: a busy, shared machine can stall any one of them.
      let ms = Infinity;
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        expect(promptHash(cut, N, hash64, 'Conversation')).toMatch(/^[0-9a-f]{16}$/);
        ms = Math.min(ms, performance.now() - started);
      }
      // Microseconds normally; 50 ms leaves room for that machine and still
      // catches anything quadratic in 32-128 KiB.
      expect(ms).toBeLessThan(50);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  it('reads the first of duplicate keys', () => {
    const [, body] = CORPUS.find(([name]) => name === 'duplicate keys') as [string, Buffer];
    const same = Buffer.from('{"system":"s","messages":[{"role":"user","content":"a"}]}');
    expect(Buffer.from(conversationKey(body, N) as Uint8Array)).toEqual(Buffer.from(conversationKey(same, N) as Uint8Array));
  });

  it('gives nesting deeper than the bound the Body key, and a skip nothing recurses in', () => {
    const [, body] = CORPUS.find(([name]) => name === 'deep nesting inside tools before the messages') as [string, Buffer];
    expect(conversationKey(body, N)).toBeUndefined();
    const shallow = Buffer.from(`{"tools":${'['.repeat(200)}${']'.repeat(200)},"messages":[{"role":"user","content":"x"}]}`);
    expect(conversationKey(shallow, N)).toBeDefined();
  });

  it('the time grows linearly: 4x the worst bodies take at most 8x the time (quadratic would be 16x)', () => {
    const best = (body: Buffer): number => {
      let ms = Infinity;
      for (let i = 0; i < 5; i++) {
        const started = performance.now();
        promptHash(body, N, hash64, 'Conversation');
        ms = Math.min(ms, performance.now() - started);
      }
      return ms;
    };
    for (const unit of ['"', '\\\\\\"', '{"a":"",', '[', '{"type":"text","text":"a"},', '{"role":"system","content":""},']) {
      const at = (bytes: number) => best(Buffer.from(user(`[${fill(unit, bytes)}`)));
      const [small, large] = [at(32 * 1024), at(128 * 1024)];
      // Below 5 ms the timer's noise outweighs the ratio.
      expect(large, unit).toBeLessThan(Math.max(8 * small, 5));
    }
  });
});

describe('the real server on the hostile corpus', () => {
  const logs: string[] = [];
  const serving = startExtProc({ port: 0, host: '127.0.0.1', prefixBytes: N, prefixKey: 'Conversation', logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) }) });
  afterAll(async () => (await serving).drain());
  const headers: HeaderList = [[':method', 'POST'], [':path', '/v1/chat/completions'], ['content-type', 'application/json']];

  it('answers every body, whole or as a partial first message, with its key, and keeps serving', async () => {
    const server = await serving;
    const client = connectExtProc(`127.0.0.1:${server.port}`);
    try {
      for (const [name, body] of CORPUS) {
        const first = body.subarray(0, Math.min(body.length, BUFFER));
        const partial = body.length > BUFFER;
        const played = await playRequest(client, { headers, body: first, bodyEndOfStream: !partial });
        expect(played.status.code, name).toBe(grpc.status.OK);
        expect(headerValues(played.headers, 'x-prompt-hash'), name).toEqual([promptHash(first, N, hash64, 'Conversation')]);
      }
      const chat = Buffer.from(user('"still here"'));
      const after = await playRequest(client, { headers, body: chat });
      expect(headerValues(after.headers, 'x-prompt-hash')).toEqual([promptHash(chat, N, hash64, 'Conversation')]);
      expect(logs.join('\n')).not.toContain('still here');
    } finally {
      client.close();
    }
  });
});
