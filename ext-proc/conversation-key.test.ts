// SPEC §4's properties of the Conversation key, as tables over conversations
// in every API shape and client style of bench/client-shapes.ts, checked
// through the handler the server runs (handleMessage) where the body's
// framing matters.
import { describe, expect, it } from 'vitest';
import { CLIENT_SHAPES, asciiEscaped, shape, sortedKeys, type ClientShape, type Dialogue } from '../bench/client-shapes.ts';
import { handleMessage, loadXxh64, promptHash, type HandlerConfig } from './handlers.ts';
import { referencePromptHash } from './xxh64-reference.ts';

const hash64 = await loadXxh64();
const N = 1024;
const BUFFER = 32768;
const config: HandlerConfig = { prefixBytes: N, prefixKey: 'Conversation', hash64 };

const key = (body: string | Buffer, prefixBytes = N): string => promptHash(Buffer.from(body), prefixBytes, hash64, 'Conversation');

/** What the server answers to a body message: the x-prompt-hash it sets. */
function served(body: Buffer, endOfStream: boolean): string | undefined {
  const answer = handleMessage('awaiting-body', { request: 'request_body', request_body: { body, end_of_stream: endOfStream } }, config);
  if (!answer.ok) throw new Error(answer.message);
  expect(answer.response.request_body?.response?.clear_route_cache).toBe(true);
  return answer.promptHash;
}

const words = 'cache prefill cluster token über café naïve 東京 데이터 🙂 route'.split(' ');
function text(bytes: number, salt: number): string {
  let out = '';
  for (let i = 0; Buffer.byteLength(out) < bytes; i++) out += `${words[(i * 7 + salt * 13) % words.length]} `;
  return out;
}

function dialogue(system: string, firstUser: string, turns: number, answerBytes = 300, salt = 0): Dialogue {
  return {
    system,
    turns: Array.from({ length: turns }, (_, i) => ({ user: i === 0 ? firstUser : `turn ${i}: ${text(120, salt + i)}`, assistant: text(answerBytes, salt + i + 50) })),
  };
}

const DIALOGUES: Array<{ name: string; d: Dialogue }> = [
  { name: 'a short system prompt and a short first message', d: dialogue('You are terse.', 'Why is my KV cache cold? 🙂', 6) },
  { name: 'no system prompt', d: dialogue('', 'Übersetze: 東京の天気', 5) },
  { name: 'a 16 KiB system prompt', d: dialogue(text(16384, 3), 'Summarize the contract.', 5) },
  { name: 'a first message longer than N', d: dialogue('You review code.', text(5000, 9), 4) },
];

// Completions has no turns: its prompt is text the client grows, so only its first N bytes are kept (below).
const CONVERSATIONAL = CLIENT_SHAPES.filter((s) => s.api !== 'completions');

describe('1. turn invariance', () => {
  const cases = CONVERSATIONAL.flatMap((s) => DIALOGUES.map(({ name, d }) => ({ shape: s.name, dialogue: name, s, d })));
  it.each(cases)('$shape, $dialogue: every turn gets turn 1\'s key', ({ s, d }) => {
    const first = key(s.body(d, 0));
    for (let k = 1; k < d.turns.length; k++) expect(key(s.body(d, k)), `turn ${k + 1}`).toBe(first);
  });

  it.each(DIALOGUES)('every client shape and API gives $name the same key (key order, whitespace, escaping, content parts, Responses input string)', ({ d }) => {
    const keys = new Set(CONVERSATIONAL.map((s) => key(s.body(d, 0))));
    expect(keys.size).toBe(1);
  });

  it('the Body key, for contrast, moves with per-request fields and changing parameters', () => {
    const { d } = DIALOGUES[0] as { d: Dialogue };
    for (const name of ['chat: per-request fields first', 'chat: alphabetical, max_tokens per turn']) {
      const s = shape(name);
      expect(promptHash(Buffer.from(s.body(d, 1)), N, hash64, 'Body')).not.toBe(promptHash(Buffer.from(s.body(d, 0)), N, hash64, 'Body'));
    }
  });
});

describe('2. spread', () => {
  it('conversations of one app with a 16 KiB system prompt get one key each (Body: one key for all)', () => {
    const system = text(16384, 1);
    const bodies = Array.from({ length: 200 }, (_, i) => shape('chat: model first (OpenAI SDK)').body(dialogue(system, `Question ${i}: what now?`, 1), 0));
    expect(new Set(bodies.map((b) => key(b))).size).toBe(200);
    expect(new Set(bodies.map((b) => promptHash(Buffer.from(b), N, hash64, 'Body'))).size).toBe(1);
  });

  it.each([
    { name: 'different system prompts, same first message', a: { system: 'You are A.', user: 'hi' }, b: { system: 'You are B.', user: 'hi' } },
    { name: 'same system prompt, first messages differing in their last byte before N', a: { system: 'S', user: `${'x'.repeat(N - 1)}a` }, b: { system: 'S', user: `${'x'.repeat(N - 1)}b` } },
    { name: 'a system prompt and none', a: { system: 'S', user: 'hi' }, b: { system: '', user: 'hi' } },
  ])('$name: different keys', ({ a, b }) => {
    const s = shape('chat: model first (OpenAI SDK)');
    expect(key(s.body(dialogue(a.system, a.user, 1), 0))).not.toBe(key(s.body(dialogue(b.system, b.user, 1), 0)));
  });
});

describe('3. collocation', () => {
  it.each([256, 1024, 4096])('same instructions and the same first %i bytes of the first user message: the same key, whatever follows', (prefixBytes) => {
    const document = text(prefixBytes, 5);
    const cut = Buffer.from(document).subarray(0, prefixBytes).toString('latin1');
    const s = shape('chat: messages first');
    const a = s.body(dialogue('Answer from the document.', `${document} Question: who signed?`, 1), 0);
    const b = s.body(dialogue('Answer from the document.', `${document} Question: when does it end?`, 1), 0);
    expect(key(a, prefixBytes)).toBe(key(b, prefixBytes));
    expect(cut.length).toBe(prefixBytes);
  });

  it('the cut is in UTF-8 bytes: a character split at byte N keys alike whatever the rest of it', () => {
    const prefix = 'a'.repeat(N - 1);
    // "€" is E2 82 AC and "₭" is E2 82 AD: they share their first byte, the one at N-1.
    const body = (c: string) => JSON.stringify({ messages: [{ role: 'user', content: `${prefix}${c}` }] });
    expect(key(body('€'))).toBe(key(body('₭')));
    expect(key(body('€'))).not.toBe(key(body('a')));
  });
});

describe('4. unambiguous', () => {
  const chat = (messages: unknown) => JSON.stringify({ model: 'm', messages });
  it.each([
    { name: 'a role boundary moved ("ab"+"c" vs "a"+"bc")', a: chat([{ role: 'system', content: 'ab' }, { role: 'user', content: 'c' }]), b: chat([{ role: 'system', content: 'a' }, { role: 'user', content: 'bc' }]) },
    { name: 'the same text under another role', a: chat([{ role: 'system', content: 'a' }, { role: 'user', content: 'b' }]), b: chat([{ role: 'developer', content: 'a' }, { role: 'user', content: 'b' }]) },
    { name: 'a message before the first user message, or inside it', a: chat([{ role: 'assistant', content: 'x' }, { role: 'user', content: 'y' }]), b: chat([{ role: 'user', content: 'xy' }]) },
    { name: 'an image part or none', a: chat([{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:,' } }, { type: 'text', text: 'b' }] }]), b: chat([{ role: 'user', content: 'b' }]) },
    { name: 'Anthropic system and its first user message swapped', a: JSON.stringify({ system: 'a', messages: [{ role: 'user', content: 'b' }] }), b: JSON.stringify({ system: 'b', messages: [{ role: 'user', content: 'a' }] }) },
  ])('$name: different keys', ({ a, b }) => {
    expect(key(a)).not.toBe(key(b));
  });

  const user = (content: unknown) => chat([{ role: 'system', content: 'S' }, { role: 'user', content }]);
  it.each([
    { name: 'a string and one text part', a: user('hello'), b: user([{ type: 'text', text: 'hello' }]) },
    { name: 'a string and input_text parts split anywhere', a: user('hello'), b: user([{ type: 'input_text', text: 'hel' }, { text: 'lo', type: 'input_text' }]) },
    { name: 'a Responses input string and a user message', a: JSON.stringify({ instructions: 'S', input: 'hello' }), b: JSON.stringify({ input: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hello' }] }], instructions: 'S' }) },
    { name: 'Responses instructions, Anthropic system and a Chat system message', a: JSON.stringify({ instructions: 'S', input: 'hello' }), b: JSON.stringify({ system: [{ type: 'text', text: 'S' }], messages: [{ role: 'user', content: 'hello' }] }) },
    { name: 'raw UTF-8 and \\u escapes (surrogate pairs too)', a: user('東京 🙂 café'), b: asciiEscaped(user('東京 🙂 café')) },
    { name: 'escaped names and \\/', a: user('a/b'), b: '{"\\u006dessages":[{"role":"system","content":"S"},{"r\\u006fle":"user","content":"a\\/b"}]}' },
    { name: 'compact and pretty-printed, sorted and unsorted', a: user('hello'), b: JSON.stringify(sortedKeys(JSON.parse(user('hello'))), null, 4) },
    { name: 'a null system and none (Anthropic)', a: JSON.stringify({ system: null, messages: [{ role: 'user', content: 'x' }] }), b: JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }) },
    { name: 'a UTF-8 byte order mark and none', a: user('hello'), b: `\ufeff${user('hello')}` },
  ])('$name: the same key', ({ a, b }) => {
    expect(key(a)).toBe(key(b));
  });
});

describe('5. partial bodies (a later turn over 32 KiB sent as one partial message)', () => {
  // Long answers make the history outgrow Envoy's buffer by turn 4 or so.
  const long = dialogue('You are terse.', 'Tell me a long story. 🙂', 20, 3000, 4);
  const longNoSystem = dialogue('', 'Tell me a long story. 🙂', 20, 3000, 4);
  // With a key-sorting client, Anthropic's system and Responses' instructions
  // come after the messages: in a cut body they are outside the cut.
  const systemAfterMessages = new Set(['responses: alphabetical', 'anthropic: system blocks, alphabetical']);
  const cases = CONVERSATIONAL.map((s) => ({ shape: s.name, s, d: systemAfterMessages.has(s.name) ? longNoSystem : long }));

  it.each(cases)('$shape: the cut later turn gets turn 1\'s key', ({ s, d }: { s: ClientShape; d: Dialogue }) => {
    const first = served(Buffer.from(s.body(d, 0)), true);
    let cut = 0;
    for (let k = 1; k < d.turns.length; k++) {
      const body = Buffer.from(s.body(d, k));
      if (body.length <= BUFFER) continue;
      cut++;
      expect(served(body.subarray(0, BUFFER), false), `turn ${k + 1} (${body.length} bytes)`).toBe(first);
    }
    expect(cut).toBeGreaterThanOrEqual(5);
  });

  it('a system prompt after a messages array that the cut runs through is outside the opening seen (documented limit)', () => {
    const s = shape('anthropic: system blocks, alphabetical');
    const body = Buffer.from(s.body(long, 19));
    expect(body.length).toBeGreaterThan(BUFFER);
    expect(served(body.subarray(0, BUFFER), false)).not.toBe(served(Buffer.from(s.body(long, 0)), true));
    expect(served(body.subarray(0, BUFFER), false)).toBe(served(Buffer.from(s.body(longNoSystem, 0)), true));
  });

  it('a first user message the cut runs into keys on the part inside the cut, for a first turn and a later one alike', () => {
    const d = dialogue(text(31000, 2), text(4000, 8), 3);
    const s = shape('chat: model first (OpenAI SDK)');
    const [t1, t3] = [Buffer.from(s.body(d, 0)), Buffer.from(s.body(d, 2))];
    expect(served(t1.subarray(0, BUFFER), false)).toBe(served(t3.subarray(0, BUFFER), false));
  });
});

describe('6. fallback: exactly the Body key', () => {
  it.each([
    ['not JSON', 'hello world'],
    ['a JSON array', '[{"role":"user","content":"x"}]'],
    ['a JSON string', '"messages"'],
    ['an object of none of the shapes', '{"model":"m","query":"x"}'],
    ['messages that is not an array', '{"messages":"hi"}'],
    ['an empty messages array', '{"messages":[]}'],
    ['a message that is not an object', '{"messages":["hi"]}'],
    ['a role that is not a string', '{"messages":[{"role":1,"content":"x"}]}'],
    ['a malformed escape in the opening', '{"messages":[{"role":"user","content":"\\x41"}]}'],
    ['a Completions prompt of token ids', '{"prompt":[1,2,3]}'],
    ['content that is an object', '{"messages":[{"role":"user","content":{"text":"x"}}]}'],
    ['garbage where a key belongs', '{"messages":[{"role":"user","content":"x"}], 12: 3}'],
    ['binary bytes', Buffer.from([0, 0xff, 0xfe, 0x7b, 0x22])],
  ])('%s', (_name, body) => {
    const bytes = Buffer.from(body);
    expect(served(bytes, true)).toBe(referencePromptHash(bytes, N));
    expect(served(Buffer.concat([bytes, Buffer.alloc(3000, 0x20)]), true)).toBe(referencePromptHash(Buffer.concat([bytes, Buffer.alloc(3000, 0x20)]), N));
  });
});

describe('Completions', () => {
  it('keys on the first prefixBytes bytes of prompt, whatever the envelope', () => {
    const prompt = text(2000, 1);
    const other = `${prompt} and then something else`;
    expect(key(JSON.stringify({ prompt, model: 'a', max_tokens: 1 }))).toBe(key(JSON.stringify({ seed: 5, model: 'b', prompt: other })));
    expect(key(JSON.stringify({ prompt }))).not.toBe(key(JSON.stringify({ prompt: `x${prompt}` })));
  });
});

describe('the handler', () => {
  it('hashes the Conversation key into x-prompt-hash and clears the route cache', () => {
    const body = Buffer.from(shape('chat: model first (OpenAI SDK)').body(DIALOGUES[0]?.d as Dialogue, 0));
    const hash = served(body, true);
    expect(hash).toMatch(/^[0-9a-f]{16}$/);
    expect(hash).not.toBe(referencePromptHash(body, N));
    expect(handleMessage('awaiting-body', { request: 'request_body', request_body: { body, end_of_stream: true } }, { prefixBytes: N, prefixKey: 'Body', hash64 })).toMatchObject({ promptHash: referencePromptHash(body, N) });
  });
});
