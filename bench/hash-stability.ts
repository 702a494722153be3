// Hash stability report: how well x-prompt-hash keeps a multi-turn chat on one
// cluster, and how much traffic one hash draws, for several prefixBytes.
//
// A synthetic trace of OpenAI chat-completion request bodies: apps with system
// prompts of 0 B (none), 500 B, 4 KiB and 16 KiB; conversations of 2..20
// turns, each turn resending the whole history plus a new user message; and
// several client serialization orders. Every body is hashed exactly as the
// hasher does (promptHash from ext-proc/handlers.ts).
//
//   node_modules/.bin/node bench/hash-stability.ts [--conversations 2000] [--seed 1]
import { parseArgs } from 'node:util';
import { loadXxh64, promptHash } from '../ext-proc/handlers.ts';

const PREFIX_BYTES = [256, 1024, 4096];
const SYSTEM_PROMPT_BYTES = [0, 500, 4096, 16384];
const APPS_PER_SYSTEM_SIZE = 5;

/** mulberry32: a small deterministic PRNG, so every run of a seed is the same trace. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = 'the of and to in is you that it for was on are as with his they at be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part über café naïve 東京 데이터'.split(' ');

function text(random: () => number, bytes: number): string {
  let out = '';
  while (Buffer.byteLength(out) < bytes) out += `${WORDS[Math.floor(random() * WORDS.length)]} `;
  return out;
}

/** Length of a first user message: log-uniform between 20 B and 8 KiB. */
function userLength(random: () => number): number {
  return Math.round(20 * Math.pow(8192 / 20, random()));
}

interface Message {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

interface Order {
  name: string;
  /** Serializes one turn's request body the way a client of this kind does. */
  body(model: string, messages: Message[], turn: number, random: () => number): string;
}

// Key orders seen in OpenAI-compatible clients: SDKs that write `model`
// first, ones that write `messages` first, sampling parameters ahead of the
// messages, keys sorted alphabetically (e.g. Go maps, json.dumps(sort_keys)).
// The last order puts a per-request value (a request id in `metadata`) ahead
// of the messages: a prefix hash cannot be stable for such a client.
const ORDERS: Order[] = [
  { name: 'model first', body: (model, messages) => JSON.stringify({ model, messages, stream: true }) },
  { name: 'messages first', body: (model, messages) => JSON.stringify({ messages, model, stream: true, temperature: 0.7 }) },
  { name: 'parameters first', body: (model, messages) => JSON.stringify({ model, temperature: 0.2, max_tokens: 1024, stream: true, messages }) },
  { name: 'alphabetical', body: (model, messages) => JSON.stringify({ max_tokens: 512, messages, model, stream: false }) },
  {
    name: 'per-request id first',
    body: (model, messages, turn, random) =>
      JSON.stringify({ model, metadata: { request_id: `${turn}-${Math.floor(random() * 1e12).toString(36)}` }, messages }),
  },
];

interface App {
  systemBytes: number;
  system: string | undefined;
  order: Order;
  model: string;
}

interface Conversation {
  app: App;
  /** Request bodies of turns 1..K. */
  turns: Buffer[];
}

function makeTrace(conversations: number, seed: number): Conversation[] {
  const random = prng(seed);
  const apps: App[] = [];
  for (const systemBytes of SYSTEM_PROMPT_BYTES) {
    for (let i = 0; i < APPS_PER_SYSTEM_SIZE; i++) {
      apps.push({
        systemBytes,
        system: systemBytes === 0 ? undefined : text(random, systemBytes),
        order: ORDERS[(apps.length + i) % ORDERS.length] as Order,
        model: 'kimi-k2',
      });
    }
  }
  const trace: Conversation[] = [];
  for (let c = 0; c < conversations; c++) {
    const app = apps[Math.floor(random() * apps.length)] as App;
    const turnCount = 2 + Math.floor(random() * 19);
    const messages: Message[] = app.system === undefined ? [] : [{ role: 'system', content: app.system }];
    const turns: Buffer[] = [];
    for (let turn = 1; turn <= turnCount; turn++) {
      messages.push({ role: 'user', content: text(random, turn === 1 ? userLength(random) : 20 + Math.floor(random() * 400)) });
      turns.push(Buffer.from(app.order.body(app.model, messages, turn, random)));
      messages.push({ role: 'assistant', content: text(random, 50 + Math.floor(random() * 800)) });
    }
    trace.push({ app, turns });
  }
  return trace;
}

interface Row {
  label: string;
  conversations: number;
  /**
   * Per prefixBytes: turns 2..K matching turn 1; the largest share of all the
   * trace's conversations on one turn-1 hash (hot key); the share of this
   * group's conversations whose turn-1 hash another conversation shares.
   */
  cells: Array<{ stable: number; laterTurns: number; hotKeyShare: number; sharedShare: number }>;
}

function measure(label: string, trace: Conversation[], total: number, hash64: Awaited<ReturnType<typeof loadXxh64>>): Row {
  const cells = PREFIX_BYTES.map((prefixBytes) => {
    let stable = 0;
    let laterTurns = 0;
    const perHash = new Map<string, number>();
    for (const conversation of trace) {
      const [first, ...later] = conversation.turns.map((body) => promptHash(body, prefixBytes, hash64));
      if (first === undefined) continue;
      perHash.set(first, (perHash.get(first) ?? 0) + 1);
      laterTurns += later.length;
      stable += later.filter((hash) => hash === first).length;
    }
    const shared = [...perHash.values()].filter((count) => count > 1).reduce((sum, count) => sum + count, 0);
    return { stable, laterTurns, hotKeyShare: Math.max(0, ...perHash.values()) / total, sharedShare: shared / Math.max(1, trace.length) };
  });
  return { label, conversations: trace.length, cells };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

function table(title: string, rows: Row[]): string {
  const header = `| ${title} | conversations | ${['stable', 'hot key', 'shared key'].map((what) => PREFIX_BYTES.map((n) => `${what} N=${n}`).join(' | ')).join(' | ')} |`;
  const rule = `|${' --- |'.repeat(2 + 3 * PREFIX_BYTES.length)}`;
  const lines = rows.map(
    (row) =>
      `| ${row.label} | ${row.conversations} | ${row.cells.map((c) => pct(c.stable / Math.max(1, c.laterTurns))).join(' | ')} | ${row.cells.map((c) => pct(c.hotKeyShare)).join(' | ')} | ${row.cells.map((c) => pct(c.sharedShare)).join(' | ')} |`,
  );
  return [header, rule, ...lines].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { conversations: { type: 'string', default: '2000' }, seed: { type: 'string', default: '1' } } });
  const conversations = Number(values.conversations);
  const seed = Number(values.seed);
  const hash64 = await loadXxh64();
  const trace = makeTrace(conversations, seed);
  const requests = trace.reduce((sum, c) => sum + c.turns.length, 0);
  const stableOrders = trace.filter((c) => c.app.order.name !== 'per-request id first');

  const out: string[] = [];
  out.push(`Trace: ${conversations} conversations, ${requests} requests, seed ${seed}; ${SYSTEM_PROMPT_BYTES.length * APPS_PER_SYSTEM_SIZE} apps (${APPS_PER_SYSTEM_SIZE} per system-prompt size), conversations spread uniformly over apps; first user message 20 B..8 KiB (log-uniform), 2..20 turns.`);
  out.push('stable: share of turns 2..K whose hash equals turn 1\'s. hot key: the largest share of all conversations whose turn 1 lands on one hash. shared key: share of the group\'s conversations whose turn-1 hash another conversation has too.');
  out.push('');
  out.push(table('all conversations', [measure('all', trace, conversations, hash64), measure('all but per-request id first', stableOrders, conversations, hash64)]));
  out.push('');
  out.push(table('system prompt', SYSTEM_PROMPT_BYTES.map((bytes) => measure(bytes === 0 ? 'none' : `${bytes} B`, stableOrders.filter((c) => c.app.systemBytes === bytes), conversations, hash64))));
  out.push('');
  out.push(table('client order', ORDERS.map((order) => measure(order.name, trace.filter((c) => c.app.order === order), conversations, hash64))));
  out.push('');
  // Why turns drift: a hash is stable only if turn 1 is at least N bytes long
  // and its first N bytes end before the first user message does.
  const firstTurnShort = PREFIX_BYTES.map((n) => pct(stableOrders.filter((c) => (c.turns[0]?.length ?? 0) < n).length / Math.max(1, stableOrders.length)));
  // When turn 1 drifts, does the conversation settle from turn 2 on (one cold prefill) or keep moving?
  const settled = PREFIX_BYTES.map((n) => {
    let same = 0;
    let turns = 0;
    for (const c of stableOrders) {
      const [, second, ...rest] = c.turns.map((body) => promptHash(body, n, hash64));
      turns += rest.length;
      same += rest.filter((hash) => hash === second).length;
    }
    return pct(same / Math.max(1, turns));
  });
  out.push(`Share of turns 3..K whose hash equals turn 2's (stable orders): ${PREFIX_BYTES.map((n, i) => `N=${n}: ${settled[i]}`).join(', ')}.`);
  out.push(`Share of conversations (stable orders) whose first request is shorter than N: ${PREFIX_BYTES.map((n, i) => `N=${n}: ${firstTurnShort[i]}`).join(', ')}.`);
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
