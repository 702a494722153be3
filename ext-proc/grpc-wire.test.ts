import { describe, expect, it } from 'vitest';
import { status as grpcJsStatus } from '@grpc/grpc-js';
import { GrpcStatus, MAX_UNFINISHED_BYTES, MAX_UNFINISHED_BYTES_PER_CONNECTION, MessageReader, TruncatedMessage, UnfinishedShare, encodeGrpcMessage, frameMessage, statusName, statusTrailers, unfinishedMessageBytes } from './grpc-wire.ts';

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

/**
 * Pushes a piece the way server.ts reads: copied into one read buffer that
 * the next read overwrites. The messages are taken (copied, as a caller uses
 * them) before the buffer is scribbled over, so a reader that kept a view of
 * a chunk past its push reads scribble.
 */
const readBuffer = Buffer.alloc(256 * 1024);
function pushLent<M extends Buffer | TruncatedMessage>(reader: MessageReader<M>, piece: Buffer): M[] {
  piece.copy(readBuffer);
  const out = reader.push(readBuffer.subarray(0, piece.length));
  if (!Array.isArray(out)) throw new Error(out.message);
  const taken = out.map((m) => (m instanceof TruncatedMessage ? m : Buffer.from(m))) as M[];
  readBuffer.fill(0xa5);
  return taken;
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
    for (const chunk of chunks) messages.push(...pushLent(reader, chunk).map((m) => m.toString()));
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
        const out = pushLent(readers[s] as MessageReader, piece);
        seen[s]?.push(...out.map((m) => `${m[0] === undefined ? '' : String.fromCharCode(m[0])}×${m.length}`));
      }
    }
    expect(seen).toEqual([['a×40000', 's×5', 'b×70000'], ['c×100000', 'd×3']]);
    // Every byte, not only the first: a message that spans chunks is whole.
    const reader = new MessageReader(128 * 1024);
    const whole = Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 7) & 0xff));
    const messages = cut(frameMessage(whole), [1, 20_000, 40_000]).flatMap((piece) => pushLent(reader, piece));
    expect(messages).toHaveLength(1);
    expect(messages[0]?.equals(whole)).toBe(true);
  });

  it('keeps a message it put together whole while the same push starts another one of its size', () => {
    // The first message's buffer goes back to the pool only at the next
    // push: were it reused at once, the second message would be copied over it.
    const first = Buffer.alloc(40_000, 0x41);
    const second = Buffer.alloc(40_000, 0x42);
    const stream = Buffer.concat([frameMessage(first), framed('mid'), frameMessage(second)]);
    const reader = new MessageReader(128 * 1024);
    const [start, rest] = cut(stream, [20_000]);
    expect(pushLent(reader, start as Buffer)).toEqual([]);
    const out = reader.push(Buffer.from((rest as Buffer).subarray(0, 40_005 - 20_000 + 8 + 10_000)));
    if (!Array.isArray(out)) throw new Error(out.message);
    expect(out.map((m) => [m.length, m.equals(first) || m.toString() === 'mid'])).toEqual([
      [40_000, true],
      [3, true],
    ]);
    expect(reader.pending).toBe(true);
  });

  it('holds memory for what has come of an unfinished message, not for its declared length', () => {
    // 1,000 streams each declaring 100 KB and sending 15 bytes of it.
    const start = frameMessage(Buffer.alloc(100_000, 0x61)).subarray(0, 20);
    // What readers of the tests before this one still hold.
    const held = unfinishedMessageBytes();
    const before = process.memoryUsage().arrayBuffers;
    const readers = Array.from({ length: 1000 }, () => new MessageReader(128 * 1024));
    for (const reader of readers) expect(pushLent(reader, start)).toEqual([]);
    // Allocated for the declared length this would be 1,000 × 128 KiB.
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * 1024 * 1024);
    for (const reader of readers) expect(reader.pending).toBe(true);
    for (const reader of readers) reader.discard();
    expect(unfinishedMessageBytes()).toBe(held);
  });

  it('refuses a push that would take the unfinished messages of every reader past MAX_UNFINISHED_BYTES, and takes it again once they are discarded', () => {
    // 70,000 bytes of a 100,000-byte message: an 80 KiB buffer (1.25 × 64 KiB).
    const start = frameMessage(Buffer.alloc(100_000, 0x61)).subarray(0, 70_005);
    const held = unfinishedMessageBytes();
    const readers: MessageReader[] = [];
    let refused: ReturnType<MessageReader['push']> | undefined;
    for (let i = 0; i < 2000 && refused === undefined; i++) {
      const reader = new MessageReader(128 * 1024);
      readers.push(reader);
      const out = reader.push(start);
      if (!Array.isArray(out)) refused = out;
    }
    expect(refused).toEqual({ code: GrpcStatus.RESOURCE_EXHAUSTED, message: expect.stringMatching(/^messages still arriving on this server's streams hold \d+ bytes; this one would take 81920 more, over the 100663296-byte limit$/) });
    expect(unfinishedMessageBytes()).toBeLessThanOrEqual(MAX_UNFINISHED_BYTES);
    expect(readers.length).toBe(Math.floor((MAX_UNFINISHED_BYTES - held) / 81_920) + 1);
    for (const reader of readers) reader.discard();
    expect(unfinishedMessageBytes()).toBe(held);
    const again = new MessageReader(128 * 1024);
    expect(pushLent(again, start)).toEqual([]);
    again.discard();
  });

  it("refuses a connection's readers past MAX_UNFINISHED_BYTES_PER_CONNECTION while another connection's are still taken", () => {
    const start = frameMessage(Buffer.alloc(100_000, 0x61)).subarray(0, 70_005);
    const share = new UnfinishedShare();
    const readers: MessageReader[] = [];
    let refused: ReturnType<MessageReader['push']> | undefined;
    for (let i = 0; i < 1000 && refused === undefined; i++) {
      const reader = new MessageReader(128 * 1024, false, share);
      readers.push(reader);
      const out = reader.push(start);
      if (!Array.isArray(out)) refused = out;
    }
    expect(refused).toEqual({ code: GrpcStatus.RESOURCE_EXHAUSTED, message: expect.stringMatching(/^messages still arriving on this connection's streams hold \d+ bytes; this one would take 81920 more, over the 33554432-byte limit per connection$/) });
    expect(readers.length).toBe(Math.floor(MAX_UNFINISHED_BYTES_PER_CONNECTION / 81_920) + 1);
    expect(share.bytes).toBeLessThanOrEqual(MAX_UNFINISHED_BYTES_PER_CONNECTION);
    const other = new MessageReader(128 * 1024, false, new UnfinishedShare());
    expect(pushLent(other, start)).toEqual([]);
    other.discard();
    for (const reader of readers) reader.discard();
    expect(share.bytes).toBe(0);
  });

  it('forgets an unfinished message on discard', () => {
    const reader = new MessageReader(128 * 1024);
    expect(pushLent(reader, frameMessage(Buffer.alloc(50_000)).subarray(0, 30_000))).toEqual([]);
    reader.discard();
    expect(reader.pending).toBe(false);
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
      for (const piece of cut(stream, at)) out.push(...pushLent(reader, piece));
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
