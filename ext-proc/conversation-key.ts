// The Conversation key (SPEC §4): the opening of a conversation read from the
// JSON request of the common LLM APIs, in a canonical encoding, so that every
// turn of a chat (which resends the history) gets turn 1's key whatever the
// client serializes around it.
//
// The opening is: the top-level `system` (Anthropic Messages) and
// `instructions` (OpenAI Responses), then every message of `messages` (Chat
// Completions, Anthropic) or `input` (Responses) up to and including the
// first user message, whose text counts for its first `prefixBytes` bytes
// only; for Completions, the first `prefixBytes` bytes of `prompt`. Reading
// stops decoding there: the rest of `messages` is skipped by the scanner
// (quotes and brackets only) to find a `system` or `instructions` that a
// client may serialize after it. A body cut at Envoy's buffer ends the read
// where it ends: whatever of the opening lies inside the cut is the key.
//
// Canonical encoding, one record per message, records self-delimiting:
//   0x1e, text length (u32 big-endian), text, role length (u8), role
// where text is the message's text parts concatenated (a string and an array
// of text parts are the same text), a non-text part is 0x1f type 0x1f, and a
// Responses item without a role has `#type` as its role; `system` and
// `instructions` are records with the role `system`, as a Chat system
// message is. The key is a 3-byte tag, then the system record, the
// instructions record, then the messages'.
// The tag starts with a NUL byte, which no JSON body does, so a Conversation
// key never equals a Body key of a JSON request.
import { ByteWriter, Read, Tok, type JsonCursor } from './json-cursor.ts';
import { JsonScanner } from './json-scanner.ts';

const KEY_TAG = Uint8Array.of(0x00, 0x43, 0x31);
const RECORD = 0x1e;
const PART = 0x1f;
/** Roles and part types longer than this are not one of the APIs' (the read fails and the Body key applies). */
const NAME_MAX = 64;

/** Where one read writes: the three segments of the key, reused from read to read. */
export class Opening {
  readonly system = new ByteWriter();
  readonly instructions = new ByteWriter();
  readonly messages = new ByteWriter();
  readonly key = new ByteWriter();
  /** Scratch for a message's role and type. */
  readonly role = new ByteWriter();
  readonly type = new ByteWriter();

  clear(): void {
    this.system.length = this.instructions.length = this.messages.length = this.key.length = 0;
  }

  /** The key: tag + system + instructions + messages (a view of a reused buffer: hash it before the next read). */
  assemble(): Uint8Array {
    const key = this.key;
    key.length = 0;
    key.append(KEY_TAG, 0, KEY_TAG.length);
    for (const segment of [this.system, this.instructions, this.messages]) key.append(segment.bytes, 0, segment.length);
    return key.bytes.subarray(0, key.length);
  }
}

const scanner = new JsonScanner();
const shared = new Opening();

/**
 * The Conversation key bytes of a request body, or undefined when the body
 * is not JSON of one of the known shapes (the caller then uses the Body key).
 * Synchronous and allocation-free once warm; the result is a view that the
 * next call overwrites.
 */
export function conversationKey(body: Uint8Array, prefixBytes: number): Uint8Array | undefined {
  return readOpening(scanner.reset(body), prefixBytes, shared) ? shared.assemble() : undefined;
}

/** Which field holds the messages: the first of them present wins. */
const Main = { none: 0, messages: 1, input: 2, prompt: 3 } as const;
// Responses `instructions` and Anthropic `system` are what a Chat system
// message is: the same record, so the same instructions key alike in every API.
const ROLE = { user: latin1('user'), prompt: latin1('prompt'), system: latin1('system'), instructions: latin1('system') };

function latin1(text: string): Uint8Array {
  return Uint8Array.from(text, (ch) => ch.charCodeAt(0));
}

/** Reads the opening into `o`; false when the body is none of the shapes. */
export function readOpening(c: JsonCursor, prefixBytes: number, o: Opening): boolean {
  o.clear();
  if (c.next() !== Tok.ObjectStart) return false;
  let main: number = Main.none;
  let system = false;
  let instructions = false;
  for (;;) {
    const t = c.next();
    if (t === Tok.ObjectEnd || t === Tok.End) break;
    if (t !== Tok.String) return false;
    // Duplicate keys: the first occurrence counts, later ones are skipped.
    const field =
      main === Main.none && c.isName('messages') ? Main.messages
      : main === Main.none && c.isName('input') ? Main.input
      : main === Main.none && c.isName('prompt') ? Main.prompt
      : !system && c.isName('system') ? 'system'
      : !instructions && c.isName('instructions') ? 'instructions'
      : undefined;
    const v = c.next();
    if (v === Tok.End) break;
    let read: Read;
    if (field === Main.messages || (field === Main.input && v === Tok.ArrayStart)) {
      main = field;
      read = readMessages(c, v, prefixBytes, o);
    } else if (field === Main.input || field === Main.prompt) {
      // A Responses `input` string is one user message; a Completions prompt is capped the same way.
      main = field;
      read = readRecord(c, v, prefixBytes, o.messages, field === Main.input ? ROLE.user : ROLE.prompt);
    } else if (field === 'system' || field === 'instructions') {
      if (field === 'system') system = true;
      else instructions = true;
      read = v === Tok.Scalar ? Read.Done : readRecord(c, v, Number.MAX_SAFE_INTEGER, field === 'system' ? o.system : o.instructions, ROLE[field]);
    } else {
      read = c.skip(v);
    }
    if (read === Read.Fail) return false;
    if (read === Read.Cut) break;
  }
  return o.messages.length > 0;
}

/** `messages` or a Responses `input` array (its `[` read): records up to the first user message, then a skip. */
function readMessages(c: JsonCursor, first: Tok, prefixBytes: number, o: Opening): Read {
  if (first !== Tok.ArrayStart) return Read.Fail;
  for (;;) {
    const t = c.next();
    if (t === Tok.ArrayEnd) return Read.Done;
    if (t === Tok.End) return Read.Cut;
    if (t !== Tok.ObjectStart) return Read.Fail;
    const read = readMessage(c, prefixBytes, o);
    if (read !== Read.Done) return read;
    if (isUser(o.role)) return c.skip(Tok.ArrayStart);
  }
}

function isUser(role: ByteWriter): boolean {
  const b = role.bytes;
  return role.length === 4 && b[0] === 0x75 && b[1] === 0x73 && b[2] === 0x65 && b[3] === 0x72;
}

/** One record whose content is the value just read (a string, text parts, null), with a fixed role. */
function readRecord(c: JsonCursor, first: Tok, cap: number, out: ByteWriter, role: Uint8Array): Read {
  const at = beginRecord(out);
  const read = readContent(c, first, out, at + 4, cap);
  endRecord(out, at, cap, role, 0, role.length);
  return read;
}

/** One message object (its `{` read), any key order; leaves its role in o.role. */
function readMessage(c: JsonCursor, prefixBytes: number, o: Opening): Read {
  const out = o.messages;
  const at = beginRecord(out);
  o.role.length = 0;
  o.type.length = 0;
  let role = false;
  let type = false;
  let content = false;
  let read: Read = Read.Done;
  for (;;) {
    const t = c.next();
    if (t === Tok.ObjectEnd) break;
    if (t === Tok.End) {
      read = Read.Cut;
      break;
    }
    if (t !== Tok.String) {
      read = Read.Fail;
      break;
    }
    const field = !role && c.isName('role') ? 'role' : !type && c.isName('type') ? 'type' : !content && c.isName('content') ? 'content' : undefined;
    const v = c.next();
    if (field === 'role' || field === 'type') {
      if (v !== Tok.String) {
        read = v === Tok.End ? Read.Cut : Read.Fail;
        break;
      }
      const into = field === 'role' ? o.role : o.type;
      if (field === 'role') role = true;
      else type = true;
      const n = c.readString(into, NAME_MAX + 1);
      if (n < 0 || n > NAME_MAX) {
        read = Read.Fail;
        break;
      }
    } else if (field === 'content') {
      content = true;
      // The first user message counts for its first prefixBytes bytes; when
      // the role comes after the content, the text is cut at the end instead.
      read = readContent(c, v, out, at + 4, role && isUser(o.role) ? prefixBytes : Number.MAX_SAFE_INTEGER);
    } else {
      read = c.skip(v);
    }
    if (read !== Read.Done) break;
  }
  if (!role && type) {
    // A Responses item that is not a message (function_call, reasoning, …).
    o.role.byte(0x23);
    o.role.append(o.type.bytes, 0, o.type.length);
  }
  endRecord(out, at, isUser(o.role) ? prefixBytes : Number.MAX_SAFE_INTEGER, o.role.bytes, 0, o.role.length);
  return read;
}

function beginRecord(out: ByteWriter): number {
  out.byte(RECORD);
  const at = out.length;
  out.reserve(4);
  out.length += 4;
  return at;
}

/** Cuts the text to `cap` bytes, writes its length, then the role. */
function endRecord(out: ByteWriter, at: number, cap: number, role: Uint8Array, start: number, end: number): void {
  let length = out.length - (at + 4);
  if (length > cap) {
    length = cap;
    out.length = at + 4 + cap;
  }
  const b = out.bytes;
  b[at] = length >>> 24;
  b[at + 1] = (length >>> 16) & 0xff;
  b[at + 2] = (length >>> 8) & 0xff;
  b[at + 3] = length & 0xff;
  out.byte(end - start);
  out.append(role, start, end);
}

/**
 * A content value (its first token read): a string, null, or an array of
 * strings and parts. Text goes to `out` until the text (from `textStart`)
 * holds `cap` bytes; the rest is skipped.
 */
function readContent(c: JsonCursor, first: Tok, out: ByteWriter, textStart: number, cap: number): Read {
  if (first === Tok.String) return c.readString(out, cap - (out.length - textStart)) < 0 ? Read.Fail : Read.Done;
  if (first === Tok.Scalar) return Read.Done; // null (no text); a number is rare enough to treat alike
  if (first === Tok.End) return Read.Cut;
  if (first !== Tok.ArrayStart) return Read.Fail;
  for (;;) {
    if (out.length - textStart >= cap) return c.skip(Tok.ArrayStart);
    const t = c.next();
    if (t === Tok.ArrayEnd) return Read.Done;
    if (t === Tok.End) return Read.Cut;
    let read: Read;
    if (t === Tok.String) read = c.readString(out, cap - (out.length - textStart)) < 0 ? Read.Fail : Read.Done;
    else if (t === Tok.ObjectStart) read = readPart(c, out, textStart, cap);
    else read = Read.Fail;
    if (read !== Read.Done) return read;
  }
}

const partType = new ByteWriter();

/** One content part (its `{` read): its `text`, or 0x1f type 0x1f when it has none (an image, a tool call…). */
function readPart(c: JsonCursor, out: ByteWriter, textStart: number, cap: number): Read {
  partType.length = 0;
  let text = false;
  let type = false;
  for (;;) {
    const t = c.next();
    if (t === Tok.ObjectEnd) break;
    if (t === Tok.End) return Read.Cut;
    if (t !== Tok.String) return Read.Fail;
    const field = !text && c.isName('text') ? 'text' : !type && c.isName('type') ? 'type' : undefined;
    const v = c.next();
    let read: Read;
    if (field !== undefined && v === Tok.String) {
      if (field === 'text') text = true;
      else type = true;
      const n = field === 'text' ? c.readString(out, cap - (out.length - textStart)) : c.readString(partType, NAME_MAX + 1);
      read = n < 0 || (field === 'type' && n > NAME_MAX) ? Read.Fail : Read.Done;
    } else {
      read = c.skip(v);
    }
    if (read !== Read.Done) return read;
  }
  if (!text) {
    out.byte(PART);
    out.append(partType.bytes, 0, partType.length);
    out.byte(PART);
  }
  return Read.Done;
}
