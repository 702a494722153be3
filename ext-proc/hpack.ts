// RFC 7541 HPACK: the decoder for the header blocks Envoy sends us and an
// encoder for our own responses. Pure: bytes in, fields out; the connection
// layer does the framing. Header strings are octets, read as latin1 so every
// byte round-trips, and built by Buffer#toString, which gives V8 ordinary
// (young-generation) strings — not the external strings node:http2 makes,
// which V8 puts straight in the old generation.
import { Buffer } from 'node:buffer';

export type HeaderField = readonly [name: string, value: string];

export interface HpackDecoderOptions {
  /** The SETTINGS_HEADER_TABLE_SIZE we advertise: the most a size update may ask for, and the size a new table starts with. */
  maxTableSize: number;
  /** The SETTINGS_MAX_HEADER_LIST_SIZE we advertise, counted as RFC 7540 §6.5.2 does (32 + name + value octets per field). */
  maxHeaderListSize: number;
}

export type DecodeResult =
  | { ok: true; fields: HeaderField[] }
  | { ok: false; kind: 'compression' | 'too-large'; message: string };

// RFC 7541 Appendix A. Each entry is one shared tuple: an indexed field hands
// out the table's own tuple, so a hit allocates nothing.
const STATIC_TABLE: readonly HeaderField[] = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];
const STATIC_COUNT = STATIC_TABLE.length;

/** RFC 7541 §4.1: an entry's size is its octets plus 32 for the implementation's overhead. */
const ENTRY_OVERHEAD = 32;

// RFC 7541 Appendix B, as code lengths in bits for symbols 0..255 and EOS
// (256). The code is canonical (shorter codes first, equal lengths in symbol
// order), so the lengths alone give every code; the load-time checks below
// catch a mistyped length.
const EOS = 256;
const HUFFMAN_LENGTHS = Uint8Array.of(
  /*   0 */ 13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
  /*  16 */ 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  /*  32 */ 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
  /*  48 */ 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  /*  64 */ 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  /*  80 */ 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  /*  96 */ 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
  /* 112 */ 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  /* 128 */ 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
  /* 144 */ 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  /* 160 */ 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
  /* 176 */ 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  /* 192 */ 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  /* 208 */ 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  /* 224 */ 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
  /* 240 */ 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  /* EOS */ 30,
);

function canonicalCodes(lengths: Uint8Array): Uint32Array {
  const symbols = Array.from(lengths.keys()).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
  const codes = new Uint32Array(lengths.length);
  let code = 0;
  let previousLength = lengths[symbols[0]!]!;
  let kraft = 0; // Σ 2^(30 - length): exactly 2^30 for a complete prefix code
  for (const symbol of symbols) {
    const length = lengths[symbol]!;
    code = (code << (length - previousLength)) >>> 0;
    codes[symbol] = code;
    code++;
    previousLength = length;
    kraft += 2 ** (30 - length);
  }
  if (kraft !== 2 ** 30) throw new Error(`the Huffman code lengths are not a complete prefix code: Kraft sum ${kraft / 2 ** 30}, not 1`);
  return codes;
}

const HUFFMAN_CODES = canonicalCodes(HUFFMAN_LENGTHS);
for (const [symbol, code, length] of [
  [0x30, 0b00000, 5], // '0'
  [0x61, 0b00011, 5], // 'a'
  [0x20, 0b010100, 6], // ' '
  [EOS, 0x3fffffff, 30],
] as const) {
  if (HUFFMAN_CODES[symbol] !== code || HUFFMAN_LENGTHS[symbol] !== length) {
    throw new Error(`the Huffman code for symbol ${symbol} is ${HUFFMAN_CODES[symbol]!.toString(2)} (${HUFFMAN_LENGTHS[symbol]} bits); RFC 7541 Appendix B has ${code.toString(2)} (${length} bits)`);
  }
}

/** RFC 7541 Appendix B as built at load: the code (right-aligned) and its length in bits for symbols 0..255 and EOS (256). For tests. */
export const huffmanCode: { readonly codes: ArrayLike<number>; readonly lengths: ArrayLike<number> } = {
  codes: HUFFMAN_CODES,
  lengths: HUFFMAN_LENGTHS,
};

// The decoder reads four bits at a time through a state machine over the
// code tree's 256 inner nodes (the same shape nghttp2 uses): one table
// lookup per nibble instead of four branches per byte. A nibble ends at most
// one symbol, as the shortest code has five bits. An entry packs the next
// state (bits 0-7), the symbol ended (bits 8-15) and three flags.
const EMITS = 1 << 16;
const HITS_EOS = 1 << 17;
/** The bits since the last symbol are all ones and fewer than eight: valid padding if the string ends here (RFC 7541 §5.2). */
const MAY_END = 1 << 18;

function huffmanStates(): Uint32Array {
  // children[2 * node + bit]: an inner node's number (> 0; the root, 0, is no one's child) or ~symbol for a leaf.
  const children = new Int16Array(2 * 256);
  let nodes = 1;
  for (let symbol = 0; symbol <= EOS; symbol++) {
    const code = HUFFMAN_CODES[symbol]!;
    let node = 0;
    for (let bit = HUFFMAN_LENGTHS[symbol]! - 1; bit > 0; bit--) {
      const slot = 2 * node + ((code >>> bit) & 1);
      if (children[slot] === 0) children[slot] = nodes++;
      node = children[slot]!;
    }
    children[2 * node + (code & 1)] = ~symbol;
  }
  const mayEnd = new Uint8Array(256);
  for (let node = 0, depth = 0; depth < 8; depth++, node = children[2 * node + 1]!) mayEnd[node] = 1;

  const states = new Uint32Array(256 * 16);
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let entry = 0;
      for (let bit = 3; bit >= 0; bit--) {
        const child = children[2 * node + ((nibble >>> bit) & 1)]!;
        if (child >= 0) {
          node = child;
          continue;
        }
        if (entry & EMITS) throw new Error(`Huffman state ${state} ends two symbols in nibble ${nibble}; a code shorter than 5 bits?`);
        entry |= ~child === EOS ? HITS_EOS : EMITS | (~child << 8);
        node = 0;
      }
      states[state * 16 + nibble] = entry | node | (mayEnd[node] ? MAY_END : 0);
    }
  }
  return states;
}

const HUFFMAN_STATES = huffmanStates();

// An integer's continuation octets carry 7 bits each; five carry any value
// up to 2^31, and more can only be zero padding or an attack.
const MAX_CONTINUATION_OCTETS = 5;
const MAX_INTEGER = 2 ** 31 - 1;

const EMPTY = Buffer.alloc(0);

/**
 * One connection's decoder: its dynamic table follows the peer's encoder
 * block by block, so every header block on the connection must pass through
 * it in order. After a 'compression' result the table is out of step and the
 * connection must end (GOAWAY with COMPRESSION_ERROR); after 'too-large' it is
 * in step and only that stream is refused.
 */
export class HpackDecoder {
  private readonly maxTableSize: number;
  private readonly maxHeaderListSize: number;
  /** The table's current limit: maxTableSize until the encoder's size updates lower it. */
  private limit: number;
  private size = 0;
  // The dynamic table as a ring, newest entry at `newest`; it grows by doubling.
  private ring: (HeaderField | undefined)[] = new Array<HeaderField | undefined>(16).fill(undefined);
  private newest = 0;
  private count = 0;
  /** Where Huffman strings are decoded before they become strings; reused, grown when a longer one comes. */
  private scratch = Buffer.allocUnsafe(1024);
  // The block being decoded and the read position: on the instance so the
  // helpers below return plain numbers (-1 or null for a failure, with the
  // reason in `failure`) instead of result objects.
  private source: Buffer = EMPTY;
  private at = 0;
  private failure = '';

  constructor(options: HpackDecoderOptions) {
    this.maxTableSize = options.maxTableSize;
    this.maxHeaderListSize = options.maxHeaderListSize;
    this.limit = options.maxTableSize;
  }

  /** One complete header block (a HEADERS payload plus its CONTINUATIONs, padding and priority already removed). */
  decode(block: Uint8Array): DecodeResult {
    const source = Buffer.isBuffer(block) ? block : Buffer.from(block.buffer, block.byteOffset, block.byteLength);
    const end = source.length;
    this.source = source;
    this.at = 0;
    const fields: HeaderField[] = [];
    let listSize = 0;
    let tooLarge = false;
    let sawField = false;
    // Every pass consumes at least one octet, so the work is linear in the block.
    while (this.at < end) {
      const start = this.at;
      const first = source[start]!;
      let field: HeaderField | null;
      if (first & 0x80) {
        const index = this.readInteger(7);
        field = index < 0 ? null : this.lookup(index);
      } else if (first & 0x40) {
        field = this.readLiteral(6, true);
        if (field) this.insert(field);
      } else if (first & 0x20) {
        if (sawField) return this.fail(start, 'a dynamic table size update after a header field (RFC 7541 §4.2 allows them only at the start of a block)');
        const size = this.readInteger(5);
        if (size < 0) return this.fail(start, this.failure);
        if (size > this.maxTableSize) return this.fail(start, `a dynamic table size update to ${size} octets, above the ${this.maxTableSize} we allow`);
        this.resize(size);
        continue;
      } else {
        // Without indexing (0000) or never indexed (0001): the same to a decoder that forwards nothing.
        field = this.readLiteral(4, !tooLarge);
      }
      if (!field) return this.fail(start, this.failure);
      sawField = true;
      if (tooLarge) continue;
      listSize += ENTRY_OVERHEAD + field[0].length + field[1].length;
      if (listSize > this.maxHeaderListSize) tooLarge = true;
      else fields.push(field);
    }
    this.source = EMPTY;
    if (tooLarge) {
      return { ok: false, kind: 'too-large', message: `the header list is over the ${this.maxHeaderListSize} octets we allow (RFC 7540 §6.5.2 counting)` };
    }
    return { ok: true, fields };
  }

  /** The dynamic table's size in octets (RFC 7541 §4.1). For tests. */
  get tableSize(): number {
    return this.size;
  }

  /** The dynamic table, newest entry first. For tests. */
  tableEntries(): HeaderField[] {
    const entries: HeaderField[] = [];
    for (let i = 0; i < this.count; i++) entries.push(this.ring[(this.newest - i) & (this.ring.length - 1)]!);
    return entries;
  }

  private fail(start: number, reason: string): DecodeResult {
    this.source = EMPTY;
    return { ok: false, kind: 'compression', message: `header block octet ${start}: ${reason}` };
  }

  /** RFC 7541 §5.1, with the prefix in the low `prefixBits` of the current octet. */
  private readInteger(prefixBits: number): number {
    const source = this.source;
    let at = this.at;
    const all = (1 << prefixBits) - 1;
    let value = source[at++]! & all;
    if (value === all) {
      for (let octets = 0, scale = 1; ; octets++, scale *= 128) {
        if (at >= source.length) {
          this.failure = 'an integer is cut off by the end of the block';
          return -1;
        }
        if (octets === MAX_CONTINUATION_OCTETS) {
          this.failure = `an integer with more than ${MAX_CONTINUATION_OCTETS} continuation octets`;
          return -1;
        }
        const octet = source[at++]!;
        value += (octet & 0x7f) * scale;
        if (value > MAX_INTEGER) {
          this.failure = 'an integer above 2^31 - 1';
          return -1;
        }
        if (!(octet & 0x80)) break;
      }
    }
    this.at = at;
    return value;
  }

  private lookup(index: number): HeaderField | null {
    if (index === 0) {
      this.failure = 'index 0, which names no table entry';
      return null;
    }
    if (index <= STATIC_COUNT) return STATIC_TABLE[index - 1]!;
    const age = index - STATIC_COUNT - 1;
    if (age < this.count) return this.ring[(this.newest - age) & (this.ring.length - 1)]!;
    this.failure = `index ${index} is past the end of the table (${STATIC_COUNT} static and ${this.count} dynamic entries)`;
    return null;
  }

  /** A literal field whose name index has `prefixBits`; with `keep` false (over the list limit) its strings are checked but not built. */
  private readLiteral(prefixBits: number, keep: boolean): HeaderField | null {
    const nameIndex = this.readInteger(prefixBits);
    if (nameIndex < 0) return null;
    let name: string | null;
    if (nameIndex === 0) name = this.readString(keep);
    else name = this.lookup(nameIndex)?.[0] ?? null;
    if (name === null) return null;
    const value = this.readString(keep);
    return value === null ? null : [name, value];
  }

  /** RFC 7541 §5.2: a length with a 7-bit prefix under the Huffman flag, then the octets. */
  private readString(keep: boolean): string | null {
    const source = this.source;
    if (this.at >= source.length) {
      this.failure = 'a string is missing at the end of the block';
      return null;
    }
    const huffman = (source[this.at]! & 0x80) !== 0;
    const length = this.readInteger(7);
    if (length < 0) return null;
    const from = this.at;
    const to = from + length;
    if (to > source.length) {
      this.failure = `a string of ${length} octets runs past the end of the block (${source.length - from} left)`;
      return null;
    }
    this.at = to;
    if (!huffman) return keep ? source.toString('latin1', from, to) : '';
    const decoded = this.decodeHuffman(from, to);
    if (decoded < 0) return null;
    return keep ? this.scratch.toString('latin1', 0, decoded) : '';
  }

  /** Decodes source[from, to) into scratch; the decoded length, or -1 with `failure` set. */
  private decodeHuffman(from: number, to: number): number {
    const source = this.source;
    // The shortest code has 5 bits, so n octets hold at most 8n/5 symbols.
    const most = Math.ceil(((to - from) * 8) / 5);
    if (this.scratch.length < most) this.scratch = Buffer.allocUnsafe(Math.max(most, 2 * this.scratch.length));
    const out = this.scratch;
    let written = 0;
    let state = 0;
    let entry = MAY_END;
    for (let at = from; at < to; at++) {
      const octet = source[at]!;
      const high = HUFFMAN_STATES[state * 16 + (octet >>> 4)]!;
      const low = HUFFMAN_STATES[(high & 0xff) * 16 + (octet & 0x0f)]!;
      if ((high | low) & HITS_EOS) {
        this.failure = 'a Huffman string contains the EOS symbol';
        return -1;
      }
      if (high & EMITS) out[written++] = (high >>> 8) & 0xff;
      if (low & EMITS) out[written++] = (low >>> 8) & 0xff;
      state = low & 0xff;
      entry = low;
    }
    if (!(entry & MAY_END)) {
      this.failure = 'a Huffman string ends in padding that is not all ones or is longer than 7 bits';
      return -1;
    }
    return written;
  }

  private insert(field: HeaderField): void {
    const size = ENTRY_OVERHEAD + field[0].length + field[1].length;
    // RFC 7541 §4.4: an entry larger than the table empties it and is not added.
    if (size > this.limit) {
      this.evictTo(0);
      return;
    }
    this.evictTo(this.limit - size);
    if (this.count === this.ring.length) this.grow();
    this.newest = (this.newest + 1) & (this.ring.length - 1);
    this.ring[this.newest] = field;
    this.count++;
    this.size += size;
  }

  private resize(limit: number): void {
    this.limit = limit;
    this.evictTo(limit);
  }

  /** Drops the oldest entries until the table holds at most `size` octets. */
  private evictTo(size: number): void {
    const mask = this.ring.length - 1;
    while (this.size > size) {
      const oldest = (this.newest - this.count + 1) & mask;
      const entry = this.ring[oldest]!;
      this.ring[oldest] = undefined;
      this.count--;
      this.size -= ENTRY_OVERHEAD + entry[0].length + entry[1].length;
    }
  }

  private grow(): void {
    const ring = new Array<HeaderField | undefined>(2 * this.ring.length).fill(undefined);
    // Oldest first from slot 0, so the newest lands at count - 1.
    for (let age = this.count - 1, slot = 0; age >= 0; age--, slot++) ring[slot] = this.ring[(this.newest - age) & (this.ring.length - 1)];
    this.ring = ring;
    this.newest = this.count - 1;
  }
}

// The encoder's view of the static table: the first index for a name, and
// for a name and value.
const STATIC_NAME_INDEX = new Map<string, number>();
const STATIC_FIELD_INDEX = new Map<string, Map<string, number>>();
STATIC_TABLE.forEach(([name, value], i) => {
  if (!STATIC_NAME_INDEX.has(name)) STATIC_NAME_INDEX.set(name, i + 1);
  let values = STATIC_FIELD_INDEX.get(name);
  if (!values) STATIC_FIELD_INDEX.set(name, (values = new Map()));
  if (!values.has(value)) values.set(value, i + 1);
});

const NOT_LATIN1 = /[^\u0000-\u00ff]/;

/** Writes `value` with a `prefixBits` prefix under `flags` (RFC 7541 §5.1); the position after it. */
function writeInteger(out: Buffer, at: number, prefixBits: number, flags: number, value: number): number {
  const all = (1 << prefixBits) - 1;
  if (value < all) {
    out[at++] = flags | value;
    return at;
  }
  out[at++] = flags | all;
  let rest = value - all;
  while (rest >= 0x80) {
    out[at++] = 0x80 | (rest & 0x7f);
    rest >>>= 7;
  }
  out[at++] = rest;
  return at;
}

/**
 * An HPACK dynamic table size update (RFC 7541 §6.3), to open the first field
 * block after a peer lowers SETTINGS_HEADER_TABLE_SIZE below what our encoder
 * last announced: a decoder such as nghttp2's refuses the block without it.
 */
export function tableSizeUpdate(size: number): Buffer {
  const out = Buffer.allocUnsafe(6);
  return out.subarray(0, writeInteger(out, 0, 5, 0x20, size));
}

function writeString(out: Buffer, at: number, text: string, field: HeaderField): number {
  if (NOT_LATIN1.test(text)) {
    throw new TypeError(`header ${JSON.stringify(field[0])} has a character above U+00FF; header strings are octets, so encode it (gRPC percent-encodes grpc-message) first`);
  }
  at = writeInteger(out, at, 7, 0, text.length);
  return at + out.write(text, at, 'latin1');
}

/** A header block using no dynamic table and no Huffman coding: an indexed static entry where name and value match one, else a literal without indexing (with an indexed name when the static table has the name). */
export function encodeHeaderBlock(fields: readonly HeaderField[]): Buffer {
  // Each field costs at most a 6-octet index and two strings with 6-octet lengths.
  let most = 0;
  for (const [name, value] of fields) most += 18 + name.length + value.length;
  const out = Buffer.allocUnsafe(most);
  let at = 0;
  for (const field of fields) {
    const [name, value] = field;
    const index = STATIC_FIELD_INDEX.get(name)?.get(value);
    if (index !== undefined) {
      at = writeInteger(out, at, 7, 0x80, index);
      continue;
    }
    const nameIndex = STATIC_NAME_INDEX.get(name);
    if (nameIndex !== undefined) at = writeInteger(out, at, 4, 0x00, nameIndex);
    else {
      out[at++] = 0x00;
      at = writeString(out, at, name, field);
    }
    at = writeString(out, at, value, field);
  }
  return out.subarray(0, at);
}
