// The Conversation key's JsonCursor over a well-kept tokenizer library,
// @streamparser/json's Tokenizer, so the bench can weigh it against the
// hand-written scanner with the same reading of the opening on top. The
// tokenizer cannot be paused mid-chunk, so the body is fed in 1 KiB chunks
// as tokens are pulled: reading still stops soon after the opening ends.
// Every string is decoded to a JavaScript string (the library's only way),
// and re-encoded to UTF-8 when the key needs its bytes.
import { Tokenizer, TokenType } from '@streamparser/json';
import { ByteWriter, Read, Tok, type JsonCursor } from '../ext-proc/json-cursor.ts';

const CHUNK = 1024;

const KIND: Record<number, Tok> = {
  [TokenType.LEFT_BRACE]: Tok.ObjectStart,
  [TokenType.RIGHT_BRACE]: Tok.ObjectEnd,
  [TokenType.LEFT_BRACKET]: Tok.ArrayStart,
  [TokenType.RIGHT_BRACKET]: Tok.ArrayEnd,
  [TokenType.STRING]: Tok.String,
  [TokenType.NUMBER]: Tok.Scalar,
  [TokenType.TRUE]: Tok.Scalar,
  [TokenType.FALSE]: Tok.Scalar,
  [TokenType.NULL]: Tok.Scalar,
};

export class StreamparserCursor implements JsonCursor {
  private kinds: Tok[] = [];
  private strings: string[] = [];
  private head = 0;
  private body: Uint8Array = new Uint8Array(0);
  private fed = 0;
  private failed = false;
  private tokenizer = new Tokenizer();
  private string = '';

  reset(body: Uint8Array): this {
    this.body = body;
    this.fed = 0;
    this.failed = false;
    this.kinds.length = 0;
    this.strings.length = 0;
    this.head = 0;
    const tokenizer = new Tokenizer();
    tokenizer.onToken = ({ token, value }) => {
      const kind = KIND[token];
      if (kind === undefined) return; // `,` and `:`
      this.kinds.push(kind);
      this.strings.push(kind === Tok.String ? (value as string) : '');
    };
    tokenizer.onError = () => {
      this.failed = true;
    };
    this.tokenizer = tokenizer;
    return this;
  }

  next(): Tok {
    while (this.head >= this.kinds.length) {
      if (this.failed) return Tok.Invalid;
      if (this.fed >= this.body.length) return Tok.End;
      this.kinds.length = 0;
      this.strings.length = 0;
      this.head = 0;
      const end = Math.min(this.body.length, this.fed + CHUNK);
      this.tokenizer.write(this.body.subarray(this.fed, end));
      this.fed = end;
    }
    const kind = this.kinds[this.head] as Tok;
    this.string = this.strings[this.head] as string;
    this.head++;
    return kind;
  }

  isName(name: string): boolean {
    return this.string === name;
  }

  readString(out: ByteWriter, max: number): number {
    const bytes = Buffer.from(this.string, 'utf8');
    const n = Math.min(max, bytes.length);
    out.append(bytes, 0, n);
    return n;
  }

  skip(first: Tok): Read {
    if (first === Tok.String || first === Tok.Scalar) return Read.Done;
    if (first !== Tok.ObjectStart && first !== Tok.ArrayStart) return first === Tok.End ? Read.Cut : Read.Fail;
    let depth = 1;
    for (;;) {
      const t = this.next();
      if (t === Tok.End) return Read.Cut;
      if (t === Tok.Invalid) return Read.Fail;
      if (t === Tok.ObjectStart || t === Tok.ArrayStart) depth++;
      else if ((t === Tok.ObjectEnd || t === Tok.ArrayEnd) && --depth === 0) return Read.Done;
    }
  }
}
