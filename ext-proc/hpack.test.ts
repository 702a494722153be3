// HPACK against RFC 7541's own examples, against node:http2's client (nghttp2's
// encoder: Huffman when shorter, its own dynamic table, never-indexed fields),
// malformed blocks one by one, and a corpus of random bytes.
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { seededRandom as random } from '../test/testbed/conversations.ts';
import { HpackDecoder, encodeHeaderBlock, huffmanCode, tableSizeUpdate, type DecodeResult, type HeaderField } from './hpack.ts';

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ''), 'hex');
const ascii = (text: string) => Buffer.from(text, 'latin1').toString('hex');
const newDecoder = (maxTableSize = 4096, maxHeaderListSize = 1 << 20) => new HpackDecoder({ maxTableSize, maxHeaderListSize });

function fieldsOf(result: DecodeResult): HeaderField[] {
  if (!result.ok) throw new Error(`decode failed (${result.kind}): ${result.message}`);
  return result.fields;
}

/** Test-only Huffman writer over the module's own table: codes MSB first, then `padding` (default: ones to the octet). */
function huffman(symbols: Iterable<number>, padding?: string): Buffer {
  let bits = '';
  for (const symbol of symbols) bits += huffmanCode.codes[symbol]!.toString(2).padStart(huffmanCode.lengths[symbol]!, '0');
  bits += padding ?? '1'.repeat((8 - (bits.length % 8)) % 8);
  if (bits.length % 8 !== 0) throw new Error(`padding leaves ${bits.length % 8} stray bits`);
  return Buffer.from(Array.from({ length: bits.length / 8 }, (_, i) => parseInt(bits.slice(8 * i, 8 * i + 8), 2)));
}

/** A literal without indexing, name 'x' raw, value given as a Huffman string's octets. */
function huffmanValueBlock(encoded: Buffer): Buffer {
  if (encoded.length >= 127) {
    const rest = encoded.length - 127;
    return Buffer.concat([hex('000178'), Buffer.of(0xff, ...(rest >= 128 ? [0x80 | (rest & 0x7f), rest >>> 7] : [rest])), encoded]);
  }
  return Buffer.concat([hex('000178'), Buffer.of(0x80 | encoded.length), encoded]);
}

describe('the Huffman code', () => {
  it.each([
    ['0', 0x30, '00000'],
    ['a', 0x61, '00011'],
    ['space', 0x20, '010100'],
    ['symbol 0', 0, '1111111111000'],
    ['DEL', 0x7f, '1111111111111111111111111100'],
    ['symbol 255', 0xff, '11111111111111111111101110'],
    ['EOS', 256, '1'.repeat(30)],
  ])('gives %s the code of RFC 7541 Appendix B', (_, symbol, bits) => {
    expect(huffmanCode.codes[symbol]!.toString(2).padStart(huffmanCode.lengths[symbol]!, '0')).toBe(bits);
  });

  it('decodes every symbol 0..255 alone, tripled, and all in one string', () => {
    const decoder = newDecoder();
    const all = Array.from({ length: 256 }, (_, i) => i);
    for (const symbols of [...all.map((s) => [s]), ...all.map((s) => [s, s, s]), all, all.toReversed()]) {
      expect(fieldsOf(decoder.decode(huffmanValueBlock(huffman(symbols))))).toEqual([['x', Buffer.from(symbols).toString('latin1')]]);
    }
  });

  it('decodes random strings of every length up to 300', () => {
    const next = random(7);
    const decoder = newDecoder();
    for (let length = 0; length <= 300; length++) {
      const symbols = Array.from({ length }, () => Math.floor(next() * 256));
      expect(fieldsOf(decoder.decode(huffmanValueBlock(huffman(symbols)))), `length ${length}`).toEqual([['x', Buffer.from(symbols).toString('latin1')]]);
    }
  });

  it.each([
    ['padding of zeros', huffman([0x61], '000'), /padding that is not all ones/],
    ['padding of 11 ones', huffman([0x61], '11111111111'), /longer than 7 bits/],
    ['a code cut off by the end, not on the all-ones path', huffman([0x30], '011'), /padding/],
    ['EOS between two symbols', huffman([0x61, 256, 0x62]), /EOS/],
    ['EOS as the padding', huffman([0x61, 0x62, 256], '1'.repeat(7)), /EOS/],
    ['nothing but EOS', huffman([256]), /EOS/],
  ])('refuses a string with %s', (_, encoded, message) => {
    const result = newDecoder().decode(huffmanValueBlock(encoded));
    expect(result).toMatchObject({ ok: false, kind: 'compression', message: expect.stringMatching(message) });
  });

  it('takes up to seven ones of padding, and none', () => {
    const decoder = newDecoder();
    expect(fieldsOf(decoder.decode(huffmanValueBlock(huffman([0x61], '111'))))).toEqual([['x', 'a']]);
    expect(fieldsOf(decoder.decode(huffmanValueBlock(huffman([0x30, 0x61, 0x30, 0x61, 0x30, 0x61, 0x30, 0x61], ''))))).toEqual([['x', '0a0a0a0a']]);
    expect(fieldsOf(decoder.decode(huffmanValueBlock(Buffer.alloc(0))))).toEqual([['x', '']]);
  });
});

// RFC 7541 Appendix C; each step's table is newest entry first.
type Step = { block: string; fields: HeaderField[]; table: HeaderField[]; size: number };
const C3_C4_FIELDS: HeaderField[][] = [
  [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']],
  [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'], ['cache-control', 'no-cache']],
  [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']],
];
const C3_C4_TABLES: { table: HeaderField[]; size: number }[] = [
  { table: [[':authority', 'www.example.com']], size: 57 },
  { table: [['cache-control', 'no-cache'], [':authority', 'www.example.com']], size: 110 },
  { table: [['custom-key', 'custom-value'], ['cache-control', 'no-cache'], [':authority', 'www.example.com']], size: 164 },
];
const C5_C6_FIELDS: HeaderField[][] = [
  [[':status', '302'], ['cache-control', 'private'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['location', 'https://www.example.com']],
  [[':status', '307'], ['cache-control', 'private'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['location', 'https://www.example.com']],
  [
    [':status', '200'],
    ['cache-control', 'private'],
    ['date', 'Mon, 21 Oct 2013 20:13:22 GMT'],
    ['location', 'https://www.example.com'],
    ['content-encoding', 'gzip'],
    ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'],
  ],
];
const C5_C6_TABLES: { table: HeaderField[]; size: number }[] = [
  { table: [['location', 'https://www.example.com'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['cache-control', 'private'], [':status', '302']], size: 222 },
  { table: [[':status', '307'], ['location', 'https://www.example.com'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['cache-control', 'private']], size: 222 },
  {
    table: [['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'], ['content-encoding', 'gzip'], ['date', 'Mon, 21 Oct 2013 20:13:22 GMT']],
    size: 215,
  },
];
const steps = (blocks: string[], fields: HeaderField[][], tables: { table: HeaderField[]; size: number }[]): Step[] =>
  blocks.map((block, i) => ({ block, fields: fields[i]!, ...tables[i]! }));

const APPENDIX_C: { section: string; tableSize: number; steps: Step[] }[] = [
  {
    section: 'C.2.1 literal with indexing',
    tableSize: 4096,
    steps: [{ block: '400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572', fields: [['custom-key', 'custom-header']], table: [['custom-key', 'custom-header']], size: 55 }],
  },
  { section: 'C.2.2 literal without indexing', tableSize: 4096, steps: [{ block: '040c 2f73 616d 706c 652f 7061 7468', fields: [[':path', '/sample/path']], table: [], size: 0 }] },
  { section: 'C.2.3 literal never indexed', tableSize: 4096, steps: [{ block: '1008 7061 7373 776f 7264 0673 6563 7265 74', fields: [['password', 'secret']], table: [], size: 0 }] },
  { section: 'C.2.4 indexed field', tableSize: 4096, steps: [{ block: '82', fields: [[':method', 'GET']], table: [], size: 0 }] },
  {
    section: 'C.3 requests without Huffman',
    tableSize: 4096,
    steps: steps(
      ['8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', '8286 84be 5808 6e6f 2d63 6163 6865', '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65'],
      C3_C4_FIELDS,
      C3_C4_TABLES,
    ),
  },
  {
    section: 'C.4 requests with Huffman',
    tableSize: 4096,
    steps: steps(['8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', '8286 84be 5886 a8eb 1064 9cbf', '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'], C3_C4_FIELDS, C3_C4_TABLES),
  },
  {
    section: 'C.5 responses without Huffman, 256-octet table',
    tableSize: 256,
    steps: steps(
      [
        `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768
         7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`,
        '4803 3330 37c1 c0bf',
        `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153
         444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`,
      ],
      C5_C6_FIELDS,
      C5_C6_TABLES,
    ),
  },
  {
    section: 'C.6 responses with Huffman, 256-octet table',
    tableSize: 256,
    steps: steps(
      [
        `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8
         e9ae 82ae 43d3`,
        '4883 640e ffc1 c0bf',
        `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b
         3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
      ],
      C5_C6_FIELDS,
      C5_C6_TABLES,
    ),
  },
];

describe('HpackDecoder on RFC 7541 Appendix C', () => {
  it.each(APPENDIX_C)('decodes $section with the dynamic table the RFC shows after each block', ({ tableSize, steps }) => {
    const decoder = newDecoder(tableSize);
    for (const [i, step] of steps.entries()) {
      expect(fieldsOf(decoder.decode(hex(step.block))), `block ${i + 1}`).toEqual(step.fields);
      expect(decoder.tableEntries(), `table after block ${i + 1}`).toEqual(step.table);
      expect(decoder.tableSize, `table size after block ${i + 1}`).toBe(step.size);
    }
  });
});

describe('HpackDecoder', () => {
  it.each([
    ['an integer cut off by the end of the block', 'ff', /octet 0: an integer is cut off/],
    ['an integer with six continuation octets', 'ff 80 80 80 80 80 00', /more than 5 continuation octets/],
    ['an integer above 2^31 - 1', 'ff ff ff ff ff 0f', /above 2\^31 - 1/],
    ['index 0', '80', /index 0/],
    ['an index past the empty dynamic table', 'be', /index 62 is past the end of the table \(61 static and 0 dynamic entries\)/],
    ['a name index past the table', '7e 01 61', /index 62 is past the end/],
    ['a never-indexed name index past the table', '1f 2f 01 61', /index 62 is past the end/],
    ['a size update above the maximum', '3f e2 1f', /size update to 4097 octets, above the 4096 we allow/],
    ['a size update after a field', '82 20', /octet 1: a dynamic table size update after a header field/],
    ['a string running past the end', '00 05 6162', /a string of 5 octets runs past the end of the block \(2 left\)/],
    ['a literal with no name string', '40', /a string is missing/],
    ['a literal with a name and no value', '00 01 61', /a string is missing/],
    ['a Huffman string with zero padding', '00 01 78 81 18', /padding that is not all ones/],
  ])('refuses %s as a compression error', (_, block, message) => {
    expect(newDecoder().decode(hex(block))).toMatchObject({ ok: false, kind: 'compression', message: expect.stringMatching(message) });
  });

  it('takes size updates at the start of a block, down to 0, which empties the table', () => {
    const decoder = newDecoder();
    fieldsOf(decoder.decode(hex(`40 01 61 01 62   40 01 63 01 64`)));
    expect(decoder.tableEntries()).toEqual([['c', 'd'], ['a', 'b']]);
    // Two updates (RFC 7541 §4.2: the smallest, then the final one), then a field.
    expect(fieldsOf(decoder.decode(hex('20 3f e1 1f 82')))).toEqual([[':method', 'GET']]);
    expect(decoder.tableEntries()).toEqual([]);
    expect(decoder.decode(hex('be'))).toMatchObject({ ok: false, message: expect.stringMatching(/0 dynamic entries/) });
    expect(fieldsOf(decoder.decode(hex('3f 11')))).toEqual([]); // an update to 48 octets and nothing else
    fieldsOf(decoder.decode(hex('40 01 61 01 62   40 01 63 01 64')));
    expect(decoder.tableEntries()).toEqual([['c', 'd']]); // 34 + 34 > 48: 'a' went
  });

  it('empties the table for an entry larger than the table, and does not add it', () => {
    const decoder = newDecoder(100);
    fieldsOf(decoder.decode(hex('40 01 61 01 62')));
    const big = 'v'.repeat(70);
    expect(fieldsOf(decoder.decode(Buffer.concat([hex('40 01 61 46'), Buffer.from(big)])))).toEqual([['a', big]]);
    expect(decoder.tableEntries()).toEqual([]);
    expect(decoder.tableSize).toBe(0);
  });

  it('keeps 1,000 entries in order as its ring grows, and indexes the oldest', () => {
    const decoder = newDecoder(1000 * 36);
    for (let i = 0; i < 1000; i++) fieldsOf(decoder.decode(Buffer.concat([hex('40 02'), Buffer.from(String(i).padStart(2, '0').slice(-2)), hex('02'), Buffer.from(String(i % 100).padStart(2, '0'))])));
    expect(decoder.tableSize).toBe(1000 * 36);
    expect(decoder.tableEntries()[0]).toEqual(['99', '99']);
    // The oldest is index 61 + 1000 = 1061: 0xff then 1061 - 127 = 934 in two continuation octets.
    expect(fieldsOf(decoder.decode(hex('ff a6 07')))).toEqual([['00', '00']]);
    expect(decoder.decode(hex('ff a7 07'))).toMatchObject({ ok: false, message: expect.stringMatching(/index 1062 is past the end/) });
  });

  it('decodes a header list over the limit to the end, so the table stays in step, then says too-large', () => {
    const decoder = newDecoder(4096, 120);
    const name = 'n'.repeat(30);
    const value = 'v'.repeat(30);
    // Two indexed literals of 92 octets each (RFC 7540 counting), then a never-indexed one, then an indexed static field.
    const block = Buffer.concat([hex('40 1e'), Buffer.from(name), hex('1e'), Buffer.from(value), hex('40 01 61 1e'), Buffer.from(value), hex('10 01 62 01 63 82')]);
    expect(decoder.decode(block)).toMatchObject({ ok: false, kind: 'too-large', message: expect.stringMatching(/over the 120 octets/) });
    expect(decoder.tableEntries()).toEqual([['a', value], [name, value]]);
    expect(fieldsOf(decoder.decode(hex('be')))).toEqual([['a', value]]);
    expect(fieldsOf(decoder.decode(hex('bf')))).toEqual([[name, value]]);
  });

  it('still refuses a malformed string after the list went over the limit', () => {
    const decoder = newDecoder(4096, 40);
    expect(decoder.decode(hex('00 01 61 0a 76767676767676767676  00 01 78 81 18'))).toMatchObject({ ok: false, kind: 'compression' });
  });

  it('reads a block from any Uint8Array view, not only a Buffer', () => {
    const backing = new Uint8Array([0xff, 0xff, 0x82, 0x86, 0xff]);
    expect(fieldsOf(newDecoder().decode(backing.subarray(2, 4)))).toEqual([[':method', 'GET'], [':scheme', 'http']]);
  });

  it('gives back every octet of a raw string as the latin1 character of that code', () => {
    const octets = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const block = Buffer.concat([hex('00 01 78 7f 81 01'), octets]);
    expect(fieldsOf(newDecoder().decode(block))).toEqual([['x', octets.toString('latin1')]]);
  });

  it('returns ok or an error for 10,000 blocks of random bytes and 10,000 mutated RFC blocks, never throwing', () => {
    const next = random(42);
    const decoder = newDecoder(4096, 16384);
    const tally = { ok: 0, compression: 0, 'too-large': 0 };
    const count = (result: DecodeResult) => tally[result.ok ? 'ok' : result.kind]++;
    for (let i = 0; i < 10_000; i++) {
      const block = Buffer.from(Array.from({ length: Math.floor(next() * 96) }, () => Math.floor(next() * 256)));
      count(decoder.decode(block));
    }
    const rfcBlocks = APPENDIX_C.flatMap(({ steps }) => steps.map(({ block }) => hex(block)));
    for (let i = 0; i < 10_000; i++) {
      const block = Buffer.from(rfcBlocks[i % rfcBlocks.length]!);
      for (let flips = 1 + Math.floor(next() * 3); flips > 0; flips--) block[Math.floor(next() * block.length)] = Math.floor(next() * 256);
      count(decoder.decode(block));
    }
    expect(tally.ok + tally.compression + tally['too-large']).toBe(20_000);
    expect(tally.compression).toBeGreaterThan(0);
    expect(tally.ok).toBeGreaterThan(0);
    expect(decoder.tableSize).toBeLessThanOrEqual(4096);
  });
});

describe('encodeHeaderBlock', () => {
  it.each<[string, HeaderField[], string]>([
    [':status 200 as static index 8', [[':status', '200']], '88'],
    ['a static name with its own value (index 31, two prefix octets)', [['content-type', 'application/grpc']], `0f10 10 ${ascii('application/grpc')}`],
    ['a name the static table lacks as a literal name', [['grpc-status', '0']], `00 0b ${ascii('grpc-status')} 01 30`],
    ['a value of 200 octets with a two-octet length', [['grpc-message', 'm'.repeat(200)]], `00 0c ${ascii('grpc-message')} 7f 49 ${'6d'.repeat(200)}`],
    ['an empty value', [[':authority', '']], '81'],
    ['a static name with another value', [[':status', '431']], `08 03 ${ascii('431')}`],
    ['a response with trailers-only fields', [[':status', '200'], ['content-type', 'application/grpc'], ['grpc-status', '13']], `88 0f10 10 ${ascii('application/grpc')} 00 0b ${ascii('grpc-status')} 02 3133`],
  ])('encodes %s', (_, fields, expected) => {
    expect(encodeHeaderBlock(fields).toString('hex')).toBe(hex(expected).toString('hex'));
  });

  it('round-trips through the decoder, any octet in names and values, leaving the table empty', () => {
    const next = random(3);
    const decoder = newDecoder();
    const text = (length: number) => String.fromCharCode(...Array.from({ length }, () => Math.floor(next() * 256)));
    for (let i = 0; i < 500; i++) {
      const fields: HeaderField[] = Array.from({ length: Math.floor(next() * 8) }, () => [text(1 + Math.floor(next() * 20)), text(Math.floor(next() * 300))]);
      fields.push([':status', '200'], ['content-type', text(3)]);
      expect(fieldsOf(decoder.decode(encodeHeaderBlock(fields)))).toEqual(fields);
    }
    expect(decoder.tableSize).toBe(0);
  });

  it('refuses a character above U+00FF, naming the header', () => {
    expect(() => encodeHeaderBlock([['grpc-message', 'caf\u20ac']])).toThrow(/header "grpc-message" has a character above U\+00FF/);
  });
});

// A plain TCP server speaking just enough HTTP/2 to collect what node's client
// sends: it answers the preface with an empty SETTINGS and ACKs the client's,
// joins HEADERS and CONTINUATION payloads (PADDED and PRIORITY stripped),
// decodes each block with one decoder for the connection, and answers each
// stream with a HEADERS frame from encodeHeaderBlock, ending the stream.
const FRAME = { HEADERS: 1, SETTINGS: 4, CONTINUATION: 9 } as const;
const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(stream, 5);
  return Buffer.concat([header, payload]);
}

interface Captured {
  stream: number;
  block: Buffer;
  result: DecodeResult;
  tableSize: number;
  table: HeaderField[];
}

async function captureServer(respond: (fields: HeaderField[]) => HeaderField[]) {
  const captured: Captured[] = [];
  let continuations = 0;
  const server = net.createServer((socket) => {
    const decoder = newDecoder();
    let pending = Buffer.alloc(0);
    let prefaceSeen = false;
    let block: { stream: number; parts: Buffer[] } | null = null;
    socket.write(frame(FRAME.SETTINGS, 0, 0));
    socket.on('data', (data: Buffer) => {
      pending = Buffer.concat([pending, data]);
      if (!prefaceSeen) {
        if (pending.length < 24) return;
        pending = pending.subarray(24);
        prefaceSeen = true;
      }
      while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
        const length = pending.readUIntBE(0, 3);
        const [type, flags] = [pending[3]!, pending[4]!];
        const stream = pending.readUInt32BE(5) & 0x7fffffff;
        let payload = pending.subarray(9, 9 + length);
        pending = pending.subarray(9 + length);
        if (type === FRAME.SETTINGS && !(flags & FLAG.ACK)) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        if (type !== FRAME.HEADERS && type !== FRAME.CONTINUATION) continue;
        if (type === FRAME.HEADERS) {
          if (flags & FLAG.PADDED) payload = payload.subarray(1, payload.length - payload[0]!);
          if (flags & FLAG.PRIORITY) payload = payload.subarray(5);
          block = { stream, parts: [] };
        } else continuations++;
        block!.parts.push(payload);
        if (!(flags & FLAG.END_HEADERS)) continue;
        const whole = Buffer.concat(block!.parts);
        const result = decoder.decode(whole);
        captured.push({ stream, block: whole, result, tableSize: decoder.tableSize, table: decoder.tableEntries() });
        const answer = result.ok ? respond(result.fields) : [[':status', '431'] as const];
        socket.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, stream, encodeHeaderBlock(answer)));
        block = null;
      }
    });
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return { port, captured, continuations: () => continuations, close: () => server.close() };
}

type Request = http2.OutgoingHttpHeaders & { [http2.sensitiveHeaders]?: string[] };

/** What node puts on the wire for `headers`: its pseudo-headers, names lowercased, one field per array element. */
function expectedFields(headers: Request, authority: string): HeaderField[] {
  const fields: HeaderField[] = [[':method', 'GET'], [':scheme', 'http'], [':authority', authority]];
  for (const [name, value] of Object.entries(headers)) {
    for (const one of Array.isArray(value) ? value : [value]) fields.push([name.toLowerCase(), String(one)]);
  }
  return fields;
}

const sortFields = (fields: readonly HeaderField[]) => [...fields].sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));

const PRINTABLE = String.fromCharCode(...Array.from({ length: 0x7f - 0x20 }, (_, i) => 0x20 + i));
const HIGH_LATIN1 = String.fromCharCode(...Array.from({ length: 0x80 }, (_, i) => 0x80 + i));
// Node refuses no octet in a value, but it joins headers with NUL inside, so a
// NUL in a value garbles the whole block: 0x00 is the one octet left out.
const CONTROLS = String.fromCharCode(...Array.from({ length: 0x1f }, (_, i) => 0x01 + i), 0x7f);

function requestHeaders(i: number): Request {
  const headers: Request = {
    ':path': `/envoy.service.ext_proc.v3.ExternalProcessor/Process?n=${i}`,
    'x-seq': String(i),
    'user-agent': 'grpc-node-js/1.14.7',
    'content-type': 'application/grpc',
    te: 'trailers',
    'x-request-id': `${(i * 2654435761) >>> 0}-${i}`,
  };
  if (i % 3 === 0) headers['X-Mixed-Case'] = `Value ${i % 5}`;
  if (i % 7 === 0) headers['x-ascii'] = PRINTABLE;
  if (i % 11 === 0) headers['x-latin1'] = HIGH_LATIN1 + String(i);
  if (i % 13 === 0) headers['x-controls'] = CONTROLS;
  // Values of ~1 KB: each enters nghttp2's 4 KB table and four evict the oldest.
  if (i % 4 === 1) headers[`x-long-${i % 12}`] = String.fromCharCode(0x61 + (i % 26)).repeat(900 + i);
  if (i % 5 === 2) headers['x-multi'] = ['one', `two-${i % 4}`, 'three'];
  if (i % 6 === 0) {
    headers['x-secret'] = `token-${i % 2}`;
    headers.authorization = `Bearer ${i % 2}`;
    headers[http2.sensitiveHeaders] = ['x-secret'];
  }
  if (i === 150) headers['x-big'] = 'B'.repeat(40_000); // past one 16 KB frame: CONTINUATION
  return headers;
}

describe('HpackDecoder against node:http2 (nghttp2) as the encoder', () => {
  it('decodes 300 requests on one connection as sent, and node reads our encoded answers', async () => {
    const server = await captureServer((fields) => {
      const seq = fields.find(([name]) => name === 'x-seq')?.[1] ?? '?';
      return [[':status', '200'], ['content-type', 'application/grpc'], ['grpc-status', String(Number(seq) % 17)], ['grpc-message', `r%C3%A9sum%C3%A9 ${seq} ${HIGH_LATIN1}`], ['x-seq', seq]];
    });
    const client = http2.connect(`http://127.0.0.1:${server.port}`);
    const authority = `127.0.0.1:${server.port}`;
    try {
      const sent = new Map<string, Request>();
      for (let batch = 0; batch < 300; batch += 50) {
        await Promise.all(
          Array.from({ length: 50 }, async (_, k) => {
            const i = batch + k;
            const headers = requestHeaders(i);
            sent.set(String(i), headers);
            const request = client.request(headers, { endStream: true });
            const [response] = (await once(request, 'response')) as [http2.IncomingHttpHeaders];
            expect(response).toMatchObject({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(i % 17), 'grpc-message': `r%C3%A9sum%C3%A9 ${i} ${HIGH_LATIN1}`, 'x-seq': String(i) });
            request.resume();
            await once(request, 'close');
          }),
        );
      }
      expect(server.captured).toHaveLength(300);
      for (const { result, tableSize, table } of server.captured) {
        const fields = fieldsOf(result);
        const seq = fields.find(([name]) => name === 'x-seq')![1];
        expect(sortFields(fields), `request ${seq}`).toEqual(sortFields(expectedFields(sent.get(seq)!, authority)));
        expect(tableSize).toBeLessThanOrEqual(4096);
        expect(tableSize).toBe(table.reduce((sum, [name, value]) => sum + 32 + name.length + value.length, 0));
        // Never-indexed fields (ours, and nghttp2's own choice for authorization) stay out of the table.
        expect(table.filter(([name]) => name === 'x-secret' || name === 'authorization')).toEqual([]);
      }
      // The encoder used what it had taught the table: a late block is under half its headers' octets.
      const steady = server.captured.find(({ result }) => result.ok && result.fields.some(([n, v]) => n === 'x-seq' && v === '298'))!;
      expect(steady.block.length).toBeLessThan(fieldsOf(steady.result).reduce((sum, [name, value]) => sum + name.length + value.length, 0) / 2);
      // nghttp2 filled its 4 KB table and evicted: long values it indexed are gone by the end.
      const longNames = (table: HeaderField[]) => table.filter(([name]) => name.startsWith('x-long-')).map(([name, value]) => name + value.length);
      const everIndexed = new Set(server.captured.flatMap(({ table }) => longNames(table)));
      const atEnd = new Set(longNames(server.captured.at(-1)!.table));
      expect(everIndexed.size).toBeGreaterThan(atEnd.size + 10);
      expect(server.continuations()).toBeGreaterThan(0);
    } finally {
      client.destroy();
      server.close();
    }
  });
});

describe('dynamic table size updates', () => {
  it.each([
    [0, '20'],
    [30, '3e'],
    [31, '3f00'],
    [4096, '3fe11f'],
  ])('encodes a dynamic table size update to %i as RFC 7541 §6.3 does', (size, octets) => {
    expect(tableSizeUpdate(size).toString('hex')).toBe(octets);
  });
});
