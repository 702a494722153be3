// Inference clusters played by local servers: each speaks enough of
// `POST /v1/chat/completions` (and the other LLM APIs' paths) to answer, says
// who served in a header, and keeps a prefix cache of its own, an LRU of the
// conversation openings it has served, so that locality becomes a time: a
// cold request waits a "prefill" delay, a warm one less (the seed's 800 ms
// and 150 ms, scaled down for tests). Each can be stopped, made to fail or
// made slow on demand.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export const SERVED_BY_HEADER = 'x-served-by';
export const CACHE_HEADER = 'x-prefix-cache';
/** The x-prompt-hash the cluster received (every value, comma-joined), echoed back so tests see what the hasher set. */
export const SEEN_PROMPT_HASH_HEADER = 'x-seen-prompt-hash';

export interface InferenceClusterOptions {
  name: string;
  /** A loopback address of its own, 127.0.0.x. */
  host: string;
  port?: number;
  /** Time to first token of a cold request (the opening is not cached). */
  coldMs: number;
  /** Time to first token of a warm request. */
  warmMs: number;
  /** How many conversation openings the cache holds. */
  cacheEntries?: number;
}

export type Mode = 'serving' | 'failing' | 'slow';

export interface Served {
  cluster: string;
  warm: boolean;
  opening: string;
  /** x-prompt-hash as the cluster received it ('' when absent). */
  promptHash: string;
  at: number;
}

export interface InferenceCluster {
  name: string;
  host: string;
  port: number;
  /** Every request answered, in order. */
  served: Served[];
  /** 'failing' answers 503; 'slow' adds slowMs before the first token. */
  setMode(mode: Mode, slowMs?: number): void;
  /** Closes the listener and every open connection: connections are refused until start(). */
  stop(): Promise<void>;
  /** Listens again on the same address and port, with an empty cache (a restarted cluster). */
  start(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The conversation opening a cluster's prefix cache is keyed on: the
 * messages up to and including the first user message (what every later
 * turn of the conversation resends first). A body that is not a chat
 * request is its own opening.
 */
export function conversationOpening(body: string): string {
  try {
    const request = JSON.parse(body) as { messages?: Array<{ role?: string; content?: unknown }> };
    if (Array.isArray(request.messages)) {
      const opening: unknown[] = [];
      for (const message of request.messages) {
        opening.push([message.role, message.content]);
        if (message.role === 'user') break;
      }
      return createHash('sha256').update(JSON.stringify(opening)).digest('hex');
    }
  } catch {
    /* not JSON */
  }
  return createHash('sha256').update(body).digest('hex');
}

class Lru {
  private readonly entries = new Map<string, true>();
  private readonly capacity: number;
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  /** True when the key was cached; it is cached (most recent) afterwards either way. */
  touch(key: string): boolean {
    const hit = this.entries.delete(key);
    this.entries.set(key, true);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value as string);
    return hit;
  }
  clear(): void {
    this.entries.clear();
  }
}

export async function startInferenceCluster(options: InferenceClusterOptions): Promise<InferenceCluster> {
  const cache = new Lru(options.cacheEntries ?? 10_000);
  const served: Served[] = [];
  let mode: Mode = 'serving';
  let slowMs = 0;
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (mode === 'failing') {
        res.writeHead(503, { [SERVED_BY_HEADER]: options.name, 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `${options.name} is failing on purpose` } }));
        return;
      }
      const body = Buffer.concat(chunks).toString('utf8');
      const opening = conversationOpening(body);
      const warm = cache.touch(opening);
      const promptHash = req.headersDistinct['x-prompt-hash']?.join(',') ?? '';
      served.push({ cluster: options.name, warm, opening, promptHash, at: Date.now() });
      const delay = (warm ? options.warmMs : options.coldMs) + (mode === 'slow' ? slowMs : 0);
      setTimeout(() => {
        res.writeHead(200, { [SERVED_BY_HEADER]: options.name, [CACHE_HEADER]: warm ? 'warm' : 'cold', [SEEN_PROMPT_HASH_HEADER]: promptHash, 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            id: `chatcmpl-${served.length}`,
            object: 'chat.completion',
            model: 'simulated',
            choices: [{ index: 0, message: { role: 'assistant', content: `served by ${options.name}` }, finish_reason: 'stop' }],
          }),
        );
      }, delay);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  let port = options.port ?? 0;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, options.host, () => {
        server.off('error', reject);
        port = (server.address() as AddressInfo).port;
        resolve();
      });
    });
  const stopListening = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  await listen();
  return {
    name: options.name,
    host: options.host,
    get port() {
      return port;
    },
    served,
    setMode(next, ms = 0) {
      mode = next;
      slowMs = ms;
    },
    stop: stopListening,
    async start() {
      cache.clear();
      await listen();
    },
    close: stopListening,
  };
}
