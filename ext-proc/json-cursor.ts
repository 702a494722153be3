// The pull interface the conversation key reads JSON through: one token at a
// time, strings decoded only when asked, values skipped without decoding.
// Two implementations: the hand-written byte scanner (json-scanner.ts), which
// the hasher uses, and an adapter over a tokenizer library (bench/), which the
// bench measures against it.

/** Token kinds. `,` and `:` are separators the cursor consumes itself. */
export const Tok = {
  ObjectStart: 0,
  ObjectEnd: 1,
  ArrayStart: 2,
  ArrayEnd: 3,
  String: 4,
  /** A number, true, false or null: never converted. */
  Scalar: 5,
  /** The input ended (a body cut at Envoy's buffer, or an unterminated string). */
  End: 6,
  /** Bytes that cannot start a JSON token. */
  Invalid: 7,
} as const;
export type Tok = (typeof Tok)[keyof typeof Tok];

/** How reading a value ended. */
export const Read = {
  Done: 0,
  /** The input ended inside the value. */
  Cut: 1,
  /** Not JSON of the expected shape, or nested deeper than MAX_DEPTH. */
  Fail: 2,
} as const;
export type Read = (typeof Read)[keyof typeof Read];

/** Nesting deeper than this is not read (a skip counts depth; nothing recurses). */
export const MAX_DEPTH = 256;

/** A growable byte buffer the key is written into (reused: the hot path allocates only when it must grow). */
export class ByteWriter {
  bytes: Uint8Array = new Uint8Array(4096);
  length = 0;

  reserve(extra: number): void {
    if (this.length + extra <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + extra));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  byte(value: number): void {
    this.reserve(1);
    this.bytes[this.length++] = value;
  }

  append(source: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n <= 0) return;
    this.reserve(n);
    // A short run is copied faster by hand than through a subarray view.
    if (n < 32) {
      const bytes = this.bytes;
      for (let i = 0; i < n; i++) bytes[this.length + i] = source[start + i] as number;
    } else {
      this.bytes.set(source.subarray(start, end), this.length);
    }
    this.length += n;
  }
}

export interface JsonCursor {
  /** The next token; for a String, its bytes are then available to isName and readString. */
  next(): Tok;
  /** After a String token: whether the decoded string is exactly this ASCII name. */
  isName(name: string): boolean;
  /**
   * After a String token: appends its decoded UTF-8 bytes (escapes resolved,
   * surrogate pairs joined) to `out`, at most `max` bytes. Returns the bytes
   * appended, or -1 for a malformed escape.
   */
  readString(out: ByteWriter, max: number): number;
  /** Skips the rest of the value whose first token `first` was just read. */
  skip(first: Tok): Read;
}
