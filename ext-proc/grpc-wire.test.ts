import { describe, expect, it } from 'vitest';
import { status as grpcJsStatus } from '@grpc/grpc-js';
import { GrpcStatus, MessageReader, TruncatedMessage, encodeGrpcMessage, frameMessage, statusName, statusTrailers } from './grpc-wire.ts';

const framed = (text: string) => frameMessage(Buffer.from(text));

/** Cuts bytes into pieces at the given offsets. */
function cut(bytes: Buffer, at: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const to of [...at, bytes.length]) {
    pieces.push(bytes.subarray(from, to));
    from = to;
  }
  return pieces;
}

describe('MessageReader', () => {
  const two = Buffer.concat([framed('hello'), framed(''), framed('world!')]);
  it.each([
    { name: 'reads messages that arrive in one chunk', chunks: [two] },
    { name: 'reads messages split inside the length prefix', chunks: cut(two, [2, 7]) },
    { name: 'reads messages split inside their bodies', chunks: cut(two, [6, 9, 12, 17]) },
    { name: 'reads messages delivered one byte at a time', chunks: cut(two, Array.from({ length: two.length - 1 }, (_, i) => i + 1)) },
  ])('$name', ({ chunks }) => {
    const reader = new MessageReader(1024);
    const messages: string[] = [];
    for (const chunk of chunks) {
      const out = reader.push(chunk);
      if (!Array.isArray(out)) throw new Error(out.message);
      messages.push(...out.map((m) => m.toString()));
    }
    expect(messages).toEqual(['hello', '', 'world!']);
    expect(reader.pending).toBe(false);
  });

  it('puts together messages of two streams whose chunks interleave, each used before the next push', () => {
    // Sizes that make the shared assembly buffer grow between messages.
    const streamA = Buffer.concat([framed('a'.repeat(40_000)), framed('short'), framed('b'.repeat(70_000))]);
    const streamB = Buffer.concat([framed('c'.repeat(100_000)), framed('d'.repeat(3))]);
    const readers = [new MessageReader(128 * 1024), new MessageReader(128 * 1024)];
    const pieces = [cut(streamA, [3, 16_384, 32_768, 40_010, 60_000, 90_000]), cut(streamB, [16_384, 50_000, 99_000, 100_004])];
    const seen: string[][] = [[], []];
    for (let i = 0; i < Math.max(...pieces.map((p) => p.length)); i++) {
      for (const s of [0, 1]) {
        const piece = pieces[s]?.[i];
        if (piece === undefined) continue;
        const out = (readers[s] as MessageReader).push(piece);
        if (!Array.isArray(out)) throw new Error(out.message);
        seen[s]?.push(...out.map((m) => `${m[0] === undefined ? '' : String.fromCharCode(m[0])}×${m.length}`));
      }
    }
    expect(seen).toEqual([['a×40000', 's×5', 'b×70000'], ['c×100000', 'd×3']]);
    // Every byte, not only the first: a message that spans chunks is whole.
    const reader = new MessageReader(128 * 1024);
    const whole = Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 7) & 0xff));
    const messages = cut(frameMessage(whole), [1, 20_000, 40_000]).flatMap((piece) => reader.push(piece) as Buffer[]);
    expect(messages).toHaveLength(1);
    expect(messages[0]?.equals(whole)).toBe(true);
  });

  it('reports an unfinished message as pending', () => {
    const reader = new MessageReader(1024);
    expect(reader.push(framed('hello').subarray(0, 7))).toEqual([]);
    expect(reader.pending).toBe(true);
  });

  describe('keepingPrefix: a message longer than the limit', () => {
    const long = Buffer.from(Array.from({ length: 10_000 }, (_, i) => (i * 13) & 0xff));
    const stream = Buffer.concat([framed('before'), frameMessage(long), framed('after'), frameMessage(long.subarray(0, 1000))]);
    const describeAll = (out: Array<Buffer | TruncatedMessage>) =>
      out.map((m) => (m instanceof TruncatedMessage ? `cut ${m.prefix.length}/${m.length} ${m.prefix.equals(long.subarray(0, 1024))}` : m.length === 1000 ? `whole ${m.equals(long.subarray(0, 1000))}` : m.toString()));
    it.each([
      { name: 'in one chunk', at: [] },
      { name: 'cut inside its prefix, its kept bytes and its dropped bytes', at: [8, 13, 500, 1030, 1040, 6000, 9000] },
      { name: 'cut right after its kept bytes and right before the next message', at: [11 + 1029, 11 + 10_005] },
      { name: 'one byte at a time', at: Array.from({ length: stream.length - 1 }, (_, i) => i + 1) },
    ])('is handed out as its first bytes, the rest dropped, the messages around it intact: $name', ({ at }) => {
      const reader = MessageReader.keepingPrefix(1024);
      const out: Array<Buffer | TruncatedMessage> = [];
      for (const piece of cut(stream, at)) {
        const messages = reader.push(piece);
        if (!Array.isArray(messages)) throw new Error(messages.message);
        out.push(...messages.map((m) => (m instanceof TruncatedMessage ? m : Buffer.from(m))));
      }
      expect(describeAll(out)).toEqual(['before', 'cut 1024/10000 true', 'after', 'whole true']);
      expect(reader.pending).toBe(false);
    });
    it('is pending while its dropped bytes still arrive', () => {
      const reader = MessageReader.keepingPrefix(1024);
      expect(reader.push(frameMessage(long).subarray(0, 2000))).toEqual([]);
      expect(reader.pending).toBe(true);
    });
  });

  it.each([
    {
      name: 'refuses a message longer than the limit from its prefix alone',
      chunk: Buffer.from([0, 0, 0, 0x10, 0x01]),
      expected: { code: GrpcStatus.RESOURCE_EXHAUSTED, message: expect.stringMatching(/^ProcessingRequest of 4097 bytes exceeds the 4096-byte limit \(a BufferedPartial body message/) },
    },
    {
      name: 'refuses a compressed message',
      chunk: Buffer.from([1, 0, 0, 0, 1, 0x41]),
      expected: { code: GrpcStatus.UNIMPLEMENTED, message: expect.stringMatching(/^compressed messages are not accepted/) },
    },
  ])('$name', ({ chunk, expected }) => {
    expect(new MessageReader(4096).push(chunk)).toEqual(expected);
  });
});

describe('status codes', () => {
  it.each(Object.entries(GrpcStatus))('numbers %s as grpc-js does', (name, code) => {
    expect(grpcJsStatus[name as keyof typeof grpcJsStatus]).toBe(code);
    expect(statusName(code)).toBe(name);
  });
});

describe('status trailers', () => {
  it.each([
    { code: GrpcStatus.OK, message: '', expected: { 'grpc-status': '0' } },
    { code: GrpcStatus.FAILED_PRECONDITION, message: 'out-of-order request_body', expected: { 'grpc-status': '9', 'grpc-message': 'out-of-order request_body' } },
    { code: GrpcStatus.INTERNAL, message: '100% sure: é\n', expected: { 'grpc-status': '13', 'grpc-message': '100%25 sure: %C3%A9%0A' } },
  ])('encode status $code with message $message', ({ code, message, expected }) => {
    expect(Object.fromEntries(statusTrailers(code, message))).toEqual(expected);
    expect(decodeURIComponent(encodeGrpcMessage(message))).toBe(message);
  });
});
