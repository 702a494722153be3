// Multi-turn chat traffic for the data plane: conversations whose every turn
// resends the history (as clients do), sent through the gateway turn after
// turn, many conversations at once, recording which inference cluster served
// each turn, whether its prefix cache was warm, and the time to the answer.
import http from 'node:http';
import { CACHE_HEADER, SEEN_PROMPT_HASH_HEADER, SERVED_BY_HEADER } from './inference-cluster.ts';

export interface Conversation {
  id: string;
  system: string;
  /** The user's messages, one per turn. */
  users: string[];
}

export interface TurnResult {
  status: number;
  /** x-served-by, or '' when the request failed before a cluster answered. */
  cluster: string;
  warm: boolean;
  /** The x-prompt-hash the cluster received. */
  promptHash: string;
  ms: number;
}

/** A small deterministic generator (mulberry32), so every run sends the same trace. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ['cluster', 'cache', 'prefill', 'token', 'model', 'gateway', 'latency', 'replica', 'prompt', 'session', 'route', 'budget', 'summary', 'invoice', 'poem', 'recipe'];

/**
 * `count` conversations of `turns` turns. Apps share system prompts (four of
 * them, one longer than a typical prefixBytes), as real fleets do; the first
 * user message differs per conversation.
 */
export function syntheticConversations(count: number, turns: number, seed = 1): Conversation[] {
  const random = seededRandom(seed);
  const word = () => WORDS[Math.floor(random() * WORDS.length)] as string;
  const systems = [
    'You are a helpful assistant.',
    'You are a support agent for a cloud provider. Answer briefly.',
    `You are a contract reviewer. ${'Follow the firm style guide in every answer. '.repeat(40)}`,
    'Translate everything the user says into French.',
  ];
  return Array.from({ length: count }, (_, i) => ({
    id: `conv-${seed}-${i}`,
    system: systems[i % systems.length] as string,
    users: Array.from({ length: turns }, (_, t) => `${t === 0 ? `Question ${i}: ` : ''}${Array.from({ length: 12 }, word).join(' ')}?`),
  }));
}

/** The Chat Completions body of turn `turn` (0-based): the whole history so far, then the new user message. */
export function chatBody(conversation: Conversation, turn: number, model = 'simulated'): string {
  const messages: Array<{ role: string; content: string }> = [{ role: 'system', content: conversation.system }];
  for (let t = 0; t <= turn; t++) {
    messages.push({ role: 'user', content: conversation.users[t] as string });
    if (t < turn) messages.push({ role: 'assistant', content: `answer ${t}` });
  }
  return JSON.stringify({ model, messages, stream: false, max_tokens: 64 });
}

export interface SendOptions {
  url: string;
  /** Extra headers per request (a session header, a spoofed hash). */
  headers?: (conversation: Conversation, turn: number) => Record<string, string>;
  /** Conversations in flight at once; their turns go one after another. */
  concurrency?: number;
  timeoutMs?: number;
  /** The request body of a turn; chatBody when absent. */
  body?: (conversation: Conversation, turn: number) => string;
}

let agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/**
 * Closes every kept-alive connection to the gateway. Envoy applies a new
 * filter chain (an ext_proc filter added or removed) as a new listener and
 * drains the old one: requests on connections opened before keep the old
 * filters until the drain ends, so a run that must see the new ones starts
 * on new connections.
 */
export function resetConnections(): void {
  agent.destroy();
  agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
}

function header(response: http.IncomingMessage, name: string): string {
  const value = response.headers[name];
  return Array.isArray(value) ? value.join(', ') : (value ?? '');
}

/** One request through the gateway (kept-alive connections); a failure is status 0. A header given as a list is sent repeated. */
export function send(url: string, body: string | undefined, headers: Record<string, string | string[]> = {}, timeoutMs = 10_000): Promise<TurnResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const failed = () => resolve({ status: 0, cluster: '', warm: false, promptHash: '', ms: performance.now() - started });
    const request = http.request(
      url,
      { method: body === undefined ? 'GET' : 'POST', agent, timeout: timeoutMs, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers } },
      (response) => {
        response.resume();
        response.on('error', failed);
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            cluster: header(response, SERVED_BY_HEADER),
            warm: header(response, CACHE_HEADER) === 'warm',
            promptHash: header(response, SEEN_PROMPT_HASH_HEADER),
            ms: performance.now() - started,
          }),
        );
      },
    );
    request.on('timeout', () => request.destroy());
    request.on('error', failed);
    request.end(body);
  });
}

/** Sends every turn of every conversation; results[i][t] is turn t of conversation i. */
export async function runConversations(conversations: readonly Conversation[], options: SendOptions): Promise<TurnResult[][]> {
  const results: TurnResult[][] = conversations.map(() => []);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      const conversation = conversations[i];
      if (conversation === undefined) return;
      for (let t = 0; t < conversation.users.length; t++) {
        (results[i] as TurnResult[]).push(await send(options.url, (options.body ?? chatBody)(conversation, t), options.headers?.(conversation, t), options.timeoutMs));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 16, conversations.length) }, worker));
  return results;
}

export interface Locality {
  requests: number;
  failed: number;
  /** Later turns (2..N) that reached turn 1's cluster. */
  laterTurns: number;
  laterOnFirstCluster: number;
  /** Share of later turns served from a warm prefix cache. */
  laterWarm: number;
  /** Conversations per turn-1 cluster. */
  split: Record<string, number>;
  meanMs: number;
  p99Ms: number;
}

export function locality(results: readonly TurnResult[][]): Locality {
  let failed = 0;
  let later = 0;
  let onFirst = 0;
  let warm = 0;
  const split: Record<string, number> = {};
  const times: number[] = [];
  for (const turns of results) {
    const first = turns[0]?.cluster ?? '';
    split[first] = (split[first] ?? 0) + 1;
    turns.forEach((turn, t) => {
      times.push(turn.ms);
      if (turn.status !== 200) failed++;
      if (t === 0) return;
      later++;
      if (turn.cluster === first && first !== '') onFirst++;
      if (turn.warm) warm++;
    });
  }
  times.sort((a, b) => a - b);
  return {
    requests: times.length,
    failed,
    laterTurns: later,
    laterOnFirstCluster: onFirst,
    laterWarm: later === 0 ? 0 : warm / later,
    split,
    meanMs: times.reduce((a, b) => a + b, 0) / Math.max(1, times.length),
    p99Ms: times[Math.min(times.length - 1, Math.floor(times.length * 0.99))] ?? 0,
  };
}
