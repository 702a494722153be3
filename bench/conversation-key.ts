// What reading the Conversation key costs per body, by parser: the
// hand-written scanner the hasher uses (ext-proc/json-scanner.ts), the same
// reading of the opening over @streamparser/json's tokenizer
// (bench/streamparser-cursor.ts), and, as lower bounds for parsers that
// build the whole document, partial-json's parse and JSON.parse of the body
// (decoding it to a string first). Bodies from bench/client-shapes.ts.
//
//   node_modules/.bin/node bench/conversation-key.ts [--rounds 5] [--ms 300]
import { parseArgs } from 'node:util';
import { parse as partialParse } from 'partial-json';
import { CLIENT_SHAPES, shape, type Dialogue } from './client-shapes.ts';
import { StreamparserCursor } from './streamparser-cursor.ts';
import { Opening, conversationKey, readOpening } from '../ext-proc/conversation-key.ts';
import { loadXxh64 } from '../ext-proc/handlers.ts';
import { median } from './stats.ts';

const N = 1024;
const BUFFER = 32768;

const words = 'the of and to in is you that it for was on are as with cache cluster über 東京'.split(' ');
function text(bytes: number, salt: number): string {
  let out = '';
  for (let i = 0; Buffer.byteLength(out) < bytes; i++) out += `${words[(i * 7 + salt) % words.length]} `;
  return out;
}
function dialogue(system: number, first: number, turns: number, answer: number): Dialogue {
  return { system: text(system, 1), turns: Array.from({ length: turns }, (_, i) => ({ user: text(i === 0 ? first : 200, i + 2), assistant: text(answer, i + 3) })) };
}

interface Body {
  name: string;
  bytes: Buffer;
  /** The whole document is there (JSON.parse can read it). */
  whole: boolean;
}

function cut(name: string, json: string): Body {
  const bytes = Buffer.from(json);
  return { name: `${name} (${bytes.length > BUFFER ? `${Math.round(bytes.length / 1024)} KiB cut at 32 KiB` : `${(bytes.length / 1024).toFixed(1)} KiB`})`, bytes: bytes.subarray(0, BUFFER), whole: bytes.length <= BUFFER };
}

const short = dialogue(500, 300, 3, 900);
const long = dialogue(500, 300, 14, 3000);
const BODIES: Body[] = [
  cut('chat, turn 3', shape('chat: model first (OpenAI SDK)').body(short, 2)),
  cut('chat, turn 14', shape('chat: model first (OpenAI SDK)').body(long, 13)),
  cut('chat with 8 KiB of tools first, turn 3', JSON.stringify({ tools: Array.from({ length: 16 }, (_, i) => ({ type: 'function', function: { name: `f${i}`, description: text(400, i), parameters: { type: 'object' } } })), ...JSON.parse(shape('chat: model first (OpenAI SDK)').body(short, 2)) })),
  cut('anthropic, system after messages, turn 14', shape('anthropic: system blocks, alphabetical').body(long, 13)),
];

type Reader = (body: Body) => unknown;

const opening = new Opening();
const library = new StreamparserCursor();
const decoder = new TextDecoder();
const READERS: Array<{ name: string; read: Reader }> = [
  { name: 'hand-written scanner (the hasher)', read: (b) => conversationKey(b.bytes, N) },
  { name: '@streamparser/json tokenizer', read: (b) => readOpening(library.reset(b.bytes), N, opening) },
  { name: 'partial-json parse (whole body, lower bound)', read: (b) => partialParse(decoder.decode(b.bytes)) },
  { name: 'JSON.parse (whole body, lower bound; a cut body fails)', read: (b) => (b.whole ? JSON.parse(decoder.decode(b.bytes)) : undefined) },
];

/** Microseconds per call of `read` on `body`, over `ms` milliseconds. */
function time(read: Reader, body: Body, ms: number): number {
  let calls = 0;
  const started = performance.now();
  let now = started;
  while (now - started < ms) {
    for (let i = 0; i < 50; i++) read(body);
    calls += 50;
    now = performance.now();
  }
  return ((now - started) * 1000) / calls;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, ms: { type: 'string', default: '300' } } });
  const rounds = Number(values.rounds);
  const ms = Number(values.ms);
  const hash64 = await loadXxh64();

  // Both cursors must read the same key (whole bodies; on a cut string the library emits nothing).
  for (const s of CLIENT_SHAPES) {
    for (let k = 0; k < 3; k++) {
      const body = Buffer.from(s.body(short, k));
      const ours = conversationKey(body, N);
      const a = ours === undefined ? 'body' : hash64(ours).toString(16);
      const theirs = readOpening(library.reset(body), N, opening) ? hash64(opening.assemble()).toString(16) : 'body';
      if (a !== theirs) throw new Error(`the cursors disagree on ${s.name} turn ${k + 1}`);
    }
  }

  const out: string[] = [`Microseconds per body (median of ${rounds} rounds of ${ms} ms each, readers interleaved), prefixBytes ${N}:`, ''];
  out.push(`| body | ${READERS.map((r) => r.name).join(' | ')} |`);
  out.push(`|${' --- |'.repeat(READERS.length + 1)}`);
  for (const body of BODIES) {
    for (const r of READERS) time(r.read, body, 50); // warm up
    const samples = READERS.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) READERS.forEach((r, i) => samples[i]?.push(time(r.read, body, ms)));
    out.push(`| ${body.name} | ${samples.map((s, i) => (READERS[i]?.name.startsWith('JSON.parse') && !body.whole ? 'fails' : median(s).toFixed(1))).join(' | ')} |`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
