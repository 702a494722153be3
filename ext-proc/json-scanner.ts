// The hand-written JSON cursor the hasher reads bodies with. It never builds
// a JavaScript value: strings it skips are found with Buffer.indexOf (memchr)
// and never decoded, numbers are never converted (1e309 is just bytes),
// nesting is counted, not recursed into, and a body that ends anywhere (cut
// at Envoy's buffer, unterminated) ends the tokens with Tok.End, after the
// string it cut, if any, as far as it goes. Lenient
// where leniency costs nothing: separators are skipped, not checked, and
// bytes inside strings are copied as they are (invalid UTF-8 included).
import { ByteWriter, MAX_DEPTH, Read, Tok, type JsonCursor } from './json-cursor.ts';

const QUOTE = 0x22;
/** How far stringEnd looks byte by byte before it calls indexOf. */
const NEAR = 24;
const BACKSLASH = 0x5c;

/** Bytes that end a number or literal. */
const DELIMITER = new Uint8Array(256);
for (const c of ' \t\r\n,:[]{}"') DELIMITER[c.charCodeAt(0)] = 1;
/** Whitespace and the separators `,` and `:`. */
const SEPARATOR = new Uint8Array(256);
for (const c of ' \t\r\n,:') SEPARATOR[c.charCodeAt(0)] = 1;

const ESCAPED: Record<number, number> = { 0x22: 0x22, 0x5c: 0x5c, 0x2f: 0x2f, 0x62: 0x08, 0x66: 0x0c, 0x6e: 0x0a, 0x72: 0x0d, 0x74: 0x09 };

export class JsonScanner implements JsonCursor {
  private b: Buffer = Buffer.alloc(0);
  private p = 0;
  /** The last String token's content: [s0, s1), quotes excluded. */
  private s0 = 0;
  private s1 = 0;
  /** The last String token runs into the end of the input (a body cut inside it). */
  private cutString = false;

  /** The index of the next byte to read (after the last token). */
  get offset(): number {
    return this.p;
  }

  /** Starts reading `body` (not copied: read it before it changes). */
  reset(body: Uint8Array): this {
    this.b = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    this.p = 0;
    // A UTF-8 byte order mark is not part of the document.
    if (this.b[0] === 0xef && this.b[1] === 0xbb && this.b[2] === 0xbf) this.p = 3;
    return this;
  }

  next(): Tok {
    const b = this.b;
    let p = this.p;
    while (p < b.length && SEPARATOR[b[p] as number] === 1) p++;
    if (p >= b.length) {
      this.p = p;
      return Tok.End;
    }
    const c = b[p] as number;
    this.p = p + 1;
    switch (c) {
      case 0x7b:
        return Tok.ObjectStart;
      case 0x7d:
        return Tok.ObjectEnd;
      case 0x5b:
        return Tok.ArrayStart;
      case 0x5d:
        return Tok.ArrayEnd;
      case QUOTE: {
        // A string the cut runs into is given as far as it goes (the next token is End).
        const end = this.stringEnd(p + 1);
        this.cutString = end < 0;
        this.s0 = p + 1;
        this.s1 = end < 0 ? b.length : end;
        this.p = end < 0 ? b.length : end + 1;
        return Tok.String;
      }
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39) || c === 0x74 || c === 0x66 || c === 0x6e) {
      let q = p + 1;
      while (q < b.length && DELIMITER[b[q] as number] !== 1) q++;
      this.p = q;
      // A scalar that runs into the end of a cut body may be incomplete.
      return q >= b.length ? Tok.End : Tok.Scalar;
    }
    return Tok.Invalid;
  }

  /** The index of the quote closing a string whose content starts at `from`, or -1 when the input ends first. */
  private stringEnd(from: number): number {
    const b = this.b;
    let i = from;
    for (;;) {
      // Most strings (keys, roles, types) close within a few bytes, where a
      // loop beats the cost of calling indexOf; long text goes to memchr.
      let q = -1;
      const near = Math.min(b.length, i + NEAR);
      for (let j = i; j < near; j++) {
        if (b[j] === QUOTE) {
          q = j;
          break;
        }
      }
      if (q < 0 && near < b.length) q = b.indexOf(QUOTE, near);
      if (q < 0) return -1;
      // An odd run of backslashes before the quote escapes it. Runs end at a
      // quote, so all these counts together read each byte at most once.
      let k = q - 1;
      while (k >= from && b[k] === BACKSLASH) k--;
      if ((q - 1 - k) % 2 === 0) return q;
      i = q + 1;
    }
  }

  isName(name: string): boolean {
    const length = this.s1 - this.s0;
    if (length === name.length) {
      let same = true;
      for (let i = 0; i < length; i++) {
        if (this.b[this.s0 + i] !== name.charCodeAt(i)) {
          same = false;
          break;
        }
      }
      if (same) return true;
    }
    // An escaped name ("\u0072ole") decodes to at most its own length.
    if (length < name.length || length > name.length * 6) return false;
    let escaped = false;
    for (let i = this.s0; i < this.s1; i++) {
      if (this.b[i] === BACKSLASH) {
        escaped = true;
        break;
      }
    }
    if (!escaped) return false;
    nameScratch.length = 0;
    if (this.readString(nameScratch, name.length + 1) !== name.length) return false;
    for (let i = 0; i < name.length; i++) if (nameScratch.bytes[i] !== name.charCodeAt(i)) return false;
    return true;
  }

  readString(out: ByteWriter, max: number): number {
    const b = this.b;
    const end = this.s1;
    const start = out.length;
    let i = this.s0;
    while (i < end && out.length - start < max) {
      let j = i;
      while (j < end && b[j] !== BACKSLASH) j++;
      out.append(b, i, Math.min(j, i + max - (out.length - start)));
      if (j >= end || out.length - start >= max) break;
      // An escape the cut runs into ends the text; anywhere else it must be whole.
      if (this.cutString && j + (b[j + 1] === 0x75 ? 6 : 2) > end) break;
      const e = b[j + 1] as number;
      if (e === 0x75) {
        let unit = hex4(b, j + 2, end);
        if (unit < 0) return -1;
        i = j + 6;
        if (unit >= 0xd800 && unit <= 0xdbff && b[i] === BACKSLASH && b[i + 1] === 0x75) {
          const low = hex4(b, i + 2, end);
          if (low >= 0xdc00 && low <= 0xdfff) {
            unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
            i += 6;
          }
        }
        // Lone surrogates are written as their 3-byte (WTF-8) form: deterministic.
        writeCodePoint(out, unit, max - (out.length - start));
      } else {
        const decoded = ESCAPED[e];
        if (decoded === undefined) return -1;
        out.byte(decoded);
        i = j + 2;
      }
    }
    return out.length - start;
  }

  skip(first: Tok): Read {
    if (first === Tok.String || first === Tok.Scalar) return Read.Done;
    if (first === Tok.End) return Read.Cut;
    if (first !== Tok.ObjectStart && first !== Tok.ArrayStart) return Read.Fail;
    const b = this.b;
    let p = this.p;
    let depth = 1;
    while (p < b.length) {
      const c = b[p] as number;
      if (c === QUOTE) {
        const end = this.stringEnd(p + 1);
        if (end < 0) break;
        p = end + 1;
        continue;
      }
      p++;
      if (c === 0x7b || c === 0x5b) {
        if (++depth > MAX_DEPTH) {
          this.p = p;
          return Read.Fail;
        }
      } else if (c === 0x7d || c === 0x5d) {
        if (--depth === 0) {
          this.p = p;
          return Read.Done;
        }
      }
    }
    this.p = b.length;
    return Read.Cut;
  }
}

const nameScratch = new ByteWriter();

function hex4(b: Uint8Array, at: number, end: number): number {
  if (at + 4 > end) return -1;
  let value = 0;
  for (let i = at; i < at + 4; i++) {
    const c = b[i] as number;
    const digit = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

/** Writes a code point as UTF-8, at most `room` bytes of it (a cut may fall inside a character, as it does in raw bytes). */
function writeCodePoint(out: ByteWriter, cp: number, room: number): void {
  let encoded: number[];
  if (cp < 0x80) encoded = [cp];
  else if (cp < 0x800) encoded = [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)];
  else if (cp < 0x10000) encoded = [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  else encoded = [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  for (let i = 0; i < encoded.length && i < room; i++) out.byte(encoded[i] as number);
}
