// How clients of the common LLM APIs serialize turn k of a conversation:
// the whole history so far plus the new user message, in each API's shape
// and in several client styles (key orders, per-request fields first,
// changing parameters, tools added mid-conversation, content parts, pretty
// printing, ASCII escaping). Shared by the Conversation key's unit tests and
// the hash stability bench, so both measure the same clients.

export interface Turn {
  user: string;
  assistant: string;
}

export interface Dialogue {
  /** The app's instructions (system prompt); empty for none. */
  system: string;
  /** An assistant message before the first user message (a greeting, or a conversation resumed mid-way); empty for none. */
  preamble?: string;
  turns: Turn[];
}

export type Api = 'chat' | 'responses' | 'anthropic' | 'completions';

export interface ClientShape {
  name: string;
  api: Api;
  /** The request body of turn `k` (0-based): turns 0..k-1 with their answers, then turn k's user message. */
  body(dialogue: Dialogue, k: number): string;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Sorted keys at every level, as Go maps, json.dumps(sort_keys=True) or a canonicalizing client write them. */
export function sortedKeys(value: Json): Json {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (value === null || typeof value !== 'object') return value;
  const out: { [key: string]: Json } = {};
  for (const key of Object.keys(value).sort()) out[key] = sortedKeys(value[key] as Json);
  return out;
}

/** Every non-ASCII UTF-16 unit as \uXXXX, as json.dumps(ensure_ascii=True) writes it. */
export function asciiEscaped(json: string): string {
  return json.replace(/[\u007f-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function chatMessages(d: Dialogue, k: number, parts: boolean, tools: boolean): Json[] {
  const text = (t: string): Json => (parts ? [{ type: 'text', text: t }] : t);
  const messages: Json[] = d.system === '' ? [] : [{ role: 'system', content: text(d.system) }];
  if (d.preamble) messages.push({ role: 'assistant', content: text(d.preamble) });
  for (let i = 0; i <= k; i++) {
    const turn = d.turns[i] as Turn;
    messages.push({ role: 'user', content: text(turn.user) });
    if (i === k) break;
    if (tools && i % 2 === 1) {
      // A tool round trip inside the history: the assistant calls, the tool answers.
      messages.push({ role: 'assistant', content: null, tool_calls: [{ id: `call_${i}`, type: 'function', function: { name: 'lookup', arguments: JSON.stringify({ q: turn.user.slice(0, 20) }) } }] });
      messages.push({ role: 'tool', tool_call_id: `call_${i}`, content: 'tool result' });
    }
    messages.push({ role: 'assistant', content: text(turn.assistant) });
  }
  return messages;
}

const TOOLS: Json = [{ type: 'function', function: { name: 'lookup', description: 'Looks things up.', parameters: { type: 'object', properties: { q: { type: 'string' } } } } }];

function responsesInput(d: Dialogue, k: number): Json {
  // Turn 1 as most Responses clients send it: a plain string.
  if (k === 0 && !d.preamble) return (d.turns[0] as Turn).user;
  const items: Json[] = d.preamble ? [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: d.preamble }] }] : [];
  for (let i = 0; i <= k; i++) {
    const turn = d.turns[i] as Turn;
    items.push({ role: 'user', content: [{ type: 'input_text', text: turn.user }] });
    if (i < k) items.push({ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: turn.assistant, annotations: [] }] });
  }
  return items;
}

function anthropicMessages(d: Dialogue, k: number): Json[] {
  const messages: Json[] = d.preamble ? [{ role: 'assistant', content: d.preamble }] : [];
  for (let i = 0; i <= k; i++) {
    const turn = d.turns[i] as Turn;
    // Turn 1 as a string, the history as content blocks (as the SDKs echo it back).
    messages.push({ role: 'user', content: i === k && k === 0 ? turn.user : [{ type: 'text', text: turn.user }] });
    if (i < k) messages.push({ role: 'assistant', content: [{ type: 'text', text: turn.assistant }] });
  }
  return messages;
}

function completionsPrompt(d: Dialogue, k: number): string {
  let prompt = d.system === '' ? '' : `${d.system}\n\n`;
  if (d.preamble) prompt += `Assistant: ${d.preamble}\n`;
  for (let i = 0; i <= k; i++) {
    const turn = d.turns[i] as Turn;
    prompt += `User: ${turn.user}\nAssistant:`;
    if (i < k) prompt += ` ${turn.assistant}\n`;
  }
  return prompt;
}

/** A per-request value: different on every call, as request ids and timestamps are. */
let requestCounter = 0;
const requestId = (): string => `req-${(++requestCounter).toString(36)}-${Date.now().toString(36)}`;

export const CLIENT_SHAPES: ClientShape[] = [
  { name: 'chat: model first (OpenAI SDK)', api: 'chat', body: (d, k) => JSON.stringify({ model: 'kimi-k2', messages: chatMessages(d, k, false, false), stream: true }) },
  { name: 'chat: messages first', api: 'chat', body: (d, k) => JSON.stringify({ messages: chatMessages(d, k, false, false), model: 'kimi-k2', temperature: 0.7 }) },
  {
    name: 'chat: per-request fields first',
    api: 'chat',
    body: (d, k) => JSON.stringify({ metadata: { request_id: requestId() }, user: `u-${k}`, seed: k * 7919, model: 'kimi-k2', messages: chatMessages(d, k, false, false) }),
  },
  {
    name: 'chat: alphabetical, max_tokens per turn',
    api: 'chat',
    body: (d, k) => JSON.stringify(sortedKeys({ max_tokens: 256 + 64 * k, messages: chatMessages(d, k, false, false), model: 'kimi-k2', stream: false })),
  },
  { name: 'chat: content parts', api: 'chat', body: (d, k) => JSON.stringify({ model: 'kimi-k2', messages: chatMessages(d, k, true, false) }) },
  {
    name: 'chat: tools added mid-conversation',
    api: 'chat',
    body: (d, k) => JSON.stringify({ model: 'kimi-k2', ...(k > 0 ? { tools: TOOLS, tool_choice: 'auto' } : {}), messages: chatMessages(d, k, false, k > 0) }),
  },
  { name: 'chat: pretty-printed', api: 'chat', body: (d, k) => JSON.stringify({ model: 'kimi-k2', messages: chatMessages(d, k, false, false), stream: true }, null, 2) },
  { name: 'chat: ASCII-escaped', api: 'chat', body: (d, k) => asciiEscaped(JSON.stringify({ model: 'kimi-k2', messages: chatMessages(d, k, false, false) })) },
  {
    name: 'responses: input string on turn 1',
    api: 'responses',
    body: (d, k) => JSON.stringify({ model: 'kimi-k2', ...(d.system === '' ? {} : { instructions: d.system }), input: responsesInput(d, k), store: false }),
  },
  {
    name: 'responses: alphabetical',
    api: 'responses',
    body: (d, k) => JSON.stringify(sortedKeys({ model: 'kimi-k2', ...(d.system === '' ? {} : { instructions: d.system }), input: responsesInput(d, k), max_output_tokens: 100 + k })),
  },
  {
    name: 'anthropic: system first',
    api: 'anthropic',
    body: (d, k) => JSON.stringify({ model: 'claude', max_tokens: 1024, ...(d.system === '' ? {} : { system: d.system }), messages: anthropicMessages(d, k) }),
  },
  {
    name: 'anthropic: system blocks, alphabetical',
    api: 'anthropic',
    body: (d, k) =>
      JSON.stringify(sortedKeys({ max_tokens: 1024, messages: anthropicMessages(d, k), model: 'claude', ...(d.system === '' ? {} : { system: [{ type: 'text', text: d.system, cache_control: { type: 'ephemeral' } }] }) })),
  },
  { name: 'completions: prompt', api: 'completions', body: (d, k) => JSON.stringify({ model: 'kimi-k2', prompt: completionsPrompt(d, k), max_tokens: 128 }) },
];

export function shape(name: string): ClientShape {
  const found = CLIENT_SHAPES.find((s) => s.name === name);
  if (found === undefined) throw new Error(`no client shape ${name}`);
  return found;
}
