// The HTTP/2 server connection against real clients (node:http2's nghttp2,
// @grpc/grpc-js, h2load) and against raw frames: the RFC 9113 errors one by
// one, then a seeded corpus of hostile frame sequences, each of which must
// leave a working connection or a GOAWAY and a close, never a throw or a hang.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { seededRandom } from '../test/testbed/conversations.ts';
import { GRPC_CONTENT_TYPE, MessageReader, frameMessage } from './grpc-wire.ts';
import { serveConnection, serveLentReads, type H2Connection, type H2ServerOptions, type H2Stream } from './h2-connection.ts';
import { CLIENT_PREFACE, ErrorCode, Flag, FrameType, SETTINGS_ACK, Setting, frameHeader, parseFrameHeader, settingsFrame } from './h2-frames.ts';
import { HpackDecoder, encodeHeaderBlock, type HeaderField } from './hpack.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(condition: () => boolean, ms: number): Promise<boolean> {
  for (const deadline = Date.now() + ms; !condition(); await sleep(2)) if (Date.now() > deadline) return false;
  return true;
}

interface Served {
  port: number;
  connections: H2Connection[];
  errors: Error[];
  closedConnections: number;
}

const servers: net.Server[] = [];
const allConnections: H2Connection[] = [];
afterEach(async () => {
  for (const connection of allConnections.splice(0)) connection.destroy();
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/**
 * How serve() hands the connection its reads: node:net's 'data' events
 * (serveConnection), or lent the way server.ts lends them
 * (shared-read-buffer.ts), here harder: every read cut into seeded pieces of
 * 1 octet to 20 KiB, each copied into one buffer and scribbled over once it
 * has been received, so a view kept past receive reads scribble. The
 * describes run with each (usingReads).
 */
type Reads = 'data events' | 'lent pieces';
const READS: Reads[] = ['data events', 'lent pieces'];
let reads: Reads = 'data events';
function usingReads(mode: Reads): void {
  beforeEach(() => {
    reads = mode;
  });
  afterEach(() => {
    reads = 'data events';
  });
}
const lentBuffer = Buffer.alloc(64 * 1024);

function lendInPieces(receive: (chunk: Buffer) => void, seed: number): (chunk: Buffer) => void {
  const random = seededRandom(seed);
  return (chunk) => {
    for (let at = 0; at < chunk.length; ) {
      const size = Math.min(chunk.length - at, random() < 0.3 ? 1 + Math.floor(random() * 12) : 1 + Math.floor(random() * 20_000));
      chunk.copy(lentBuffer, 0, at, at + size);
      receive(lentBuffer.subarray(0, size));
      lentBuffer.fill(0xa5, 0, size);
      at += size;
    }
  };
}

async function serve(onStream: (stream: H2Stream) => void, options: Partial<H2ServerOptions> = {}): Promise<Served> {
  const served: Served = { port: 0, connections: [], errors: [], closedConnections: 0 };
  const mode = reads;
  let seed = 0;
  const server = net.createServer((socket) => {
    const connectionOptions: H2ServerOptions = {
      initialWindowSize: 65_535,
      connectionWindowSize: 16 * 1024 * 1024,
      maxConcurrentStreams: 1000,
      maxHeaderListSize: 16_384,
      maxUnsentBytes: 16 * 1024 * 1024,
      onStream,
      onError: (error) => served.errors.push(error),
      ...options,
    };
    let connection: H2Connection;
    if (mode === 'data events') connection = serveConnection(socket, connectionOptions);
    else {
      const lent = serveLentReads(socket, connectionOptions);
      socket.on('data', lendInPieces((chunk) => lent.receive(chunk), ++seed));
      connection = lent;
    }
    served.connections.push(connection);
    allConnections.push(connection);
    connection.onClose = () => served.closedConnections++;
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  served.port = (server.address() as AddressInfo).port;
  return served;
}

const OK_HEADERS: readonly HeaderField[] = [
  [':status', '200'],
  ['content-type', 'application/octet-stream'],
];

/** Echoes the body as it comes; trailers say how many octets and the path. `/big/<n>` answers n octets in one write instead. */
function echo(stream: H2Stream): void {
  stream.respond(OK_HEADERS);
  const path = stream.header(':path') ?? '';
  const big = /^\/big\/(\d+)$/.exec(path);
  let bytes = 0;
  stream.onData = (chunk) => {
    bytes += chunk.length;
    // The chunk is lent (H2Stream.onData): what is written back is a copy.
    if (big === null) stream.write(Buffer.from(chunk));
  };
  stream.onEnd = () => {
    if (big !== null) stream.write(pattern(Number(big[1])));
    stream.end([
      ['x-received', String(bytes)],
      ['x-path', path],
    ]);
  };
}

function pattern(length: number): Buffer {
  const data = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) data[i] = (i * 7 + (i >>> 8)) & 0xff;
  return data;
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

interface Answer {
  status: number | undefined;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders;
}

function post(client: http2.ClientHttp2Session, path: string, body: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/octet-stream' });
    let status: number | undefined;
    const chunks: Buffer[] = [];
    let trailers: http2.IncomingHttpHeaders = {};
    request.on('response', (headers) => (status = headers[':status']));
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('trailers', (fields) => (trailers = fields));
    request.on('end', () => resolve({ status, body: Buffer.concat(chunks), trailers }));
    request.on('error', reject);
    request.end(body);
  });
}

async function connect(port: number, options: http2.ClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
  const client = http2.connect(`http://127.0.0.1:${port}`, options);
  client.on('error', () => {});
  await once(client, 'connect');
  return client;
}

describe.each(READS)('H2 connection with node:http2 as the client (reads: %s)', (mode) => {
  usingReads(mode);
  it('answers 200 sequential POSTs, then 500 concurrent ones, with their bodies and trailers', async () => {
    const served = await serve(echo);
    const client = await connect(served.port);
    for (let i = 0; i < 200; i++) {
      const body = Buffer.from(`request ${i} `.repeat(i % 17));
      const answer = await post(client, `/seq/${i}`, body);
      expect(answer.status).toBe(200);
      expect(answer.body.equals(body)).toBe(true);
      expect(answer.trailers).toMatchObject({ 'x-received': String(body.length), 'x-path': `/seq/${i}` });
    }
    const bodies = Array.from({ length: 500 }, (_, i) => pattern(i * 37));
    const answers = await Promise.all(bodies.map((body, i) => post(client, `/par/${i}`, body)));
    answers.forEach((answer, i) => {
      expect(answer.status).toBe(200);
      expect(answer.body.equals(bodies[i] as Buffer)).toBe(true);
      expect(answer.trailers['x-received']).toBe(String((bodies[i] as Buffer).length));
    });
    expect(served.connections[0]?.openStreams).toBe(0);
    client.close();
    await once(client, 'close');
    expect(await waitUntil(() => served.closedConnections === 1, 2000)).toBe(true);
    expect(served.errors).toEqual([]);
  });

  it('takes a 1 MiB body through a small window, returning credit as it goes, and echoes it', async () => {
    const served = await serve(echo, { initialWindowSize: 16_384, connectionWindowSize: 65_535 });
    const client = await connect(served.port);
    const body = pattern(1024 * 1024);
    const answer = await post(client, '/upload', body);
    expect(answer.trailers['x-received']).toBe(String(body.length));
    expect(sha(answer.body)).toBe(sha(body));
    client.close();
  });

  it("sends a 1 MiB answer written at once within the client's 65,535-octet windows", async () => {
    const served = await serve(echo);
    const client = await connect(served.port, { settings: { initialWindowSize: 65_535 } });
    const answers = await Promise.all([post(client, '/big/1048576', Buffer.alloc(0)), post(client, '/big/300000', Buffer.from('x'))]);
    expect(sha(answers[0].body)).toBe(sha(pattern(1024 * 1024)));
    expect(sha(answers[1].body)).toBe(sha(pattern(300_000)));
    expect(answers[1].trailers['x-received']).toBe('1');
    client.close();
  });

  it('lets open streams finish after shutdown(), refuses new ones and ends the socket', async () => {
    const held: H2Stream[] = [];
    const served = await serve((stream) => {
      if (stream.header(':path') === '/hold') {
        stream.respond(OK_HEADERS);
        held.push(stream);
      } else echo(stream);
    });
    const client = await connect(served.port);
    const clientClosed = once(client, 'close');
    const requests = [0, 1, 2].map(() => {
      const request = client.request({ ':method': 'POST', ':path': '/hold' });
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      return { request, done: once(request, 'end').then(() => Buffer.concat(chunks).toString()) };
    });
    expect(await waitUntil(() => held.length === 3, 2000)).toBe(true);
    const connection = served.connections[0] as H2Connection;
    connection.shutdown();
    connection.shutdown();
    await once(client, 'goaway');
    const refused = client.request({ ':method': 'POST', ':path': '/new' });
    expect(((await once(refused, 'error'))[0] as NodeJS.ErrnoException).code).toBe('ERR_HTTP2_GOAWAY_SESSION');
    for (const [i, stream] of held.entries()) {
      stream.write(Buffer.from(`answer ${i}`));
      stream.end([['x-done', 'yes']]);
      requests[i]?.request.end();
    }
    expect(await Promise.all(requests.map((request) => request.done))).toEqual(['answer 0', 'answer 1', 'answer 2']);
    await clientClosed;
    expect(await waitUntil(() => served.closedConnections === 1, 2000)).toBe(true);
  });

  it('answers PING with the same payload', async () => {
    const served = await serve(echo);
    const client = await connect(served.port);
    const payload = Buffer.from('8 octets');
    const [error, , echoed] = await new Promise<[Error | null, number, Buffer]>((resolve) => client.ping(payload, (...args) => resolve(args)));
    expect(error).toBeNull();
    expect(echoed.equals(payload)).toBe(true);
    client.close();
  });

  it('gives every open stream onClose(true) when destroy() is called', async () => {
    const closes: boolean[] = [];
    const served = await serve((stream) => {
      stream.respond(OK_HEADERS);
      stream.onClose = (reset) => closes.push(reset);
    });
    const client = await connect(served.port);
    for (let i = 0; i < 3; i++) client.request({ ':method': 'POST', ':path': '/x' }).on('error', () => {});
    expect(await waitUntil(() => served.connections[0]?.openStreams === 3, 2000)).toBe(true);
    served.connections[0]?.destroy();
    expect(closes).toEqual([true, true, true]);
    expect(await waitUntil(() => served.closedConnections === 1, 2000)).toBe(true);
    client.destroy();
  });
});

/** A gRPC echo: each message back with "echo:" before it, then grpc-status 0. */
function grpcEcho(stream: H2Stream): void {
  if (stream.header(':path') !== '/test.Echo/Unary' && stream.header(':path') !== '/test.Echo/Bidi') {
    stream.respondAndEnd([
      [':status', '200'],
      ['content-type', GRPC_CONTENT_TYPE],
      ['grpc-status', '12'],
      ['grpc-message', 'unknown method'],
    ]);
    return;
  }
  stream.respond([
    [':status', '200'],
    ['content-type', GRPC_CONTENT_TYPE],
  ]);
  const reader = new MessageReader(1 << 20);
  stream.onData = (chunk) => {
    const messages = reader.push(chunk);
    if (!Array.isArray(messages)) return stream.end([['grpc-status', String(messages.code)]]);
    for (const message of messages) stream.write(frameMessage(Buffer.concat([Buffer.from('echo:'), message])));
  };
  stream.onEnd = () => {
    if (!stream.localEnded) stream.end([['grpc-status', '0']]);
  };
}

describe.each(READS)('H2 connection with @grpc/grpc-js as the client (reads: %s)', (mode) => {
  usingReads(mode);
  const identity = (buffer: Buffer) => buffer;

  it('serves a unary call, a bidi call and an unknown method', async () => {
    const served = await serve(grpcEcho);
    const client = new grpc.Client(`127.0.0.1:${served.port}`, grpc.credentials.createInsecure());
    try {
      const unary = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest('/test.Echo/Unary', identity, identity, Buffer.from('hello'), (error, value) => (error ? reject(error) : resolve(value as Buffer))),
      );
      expect(unary.toString()).toBe('echo:hello');

      const call = client.makeBidiStreamRequest('/test.Echo/Bidi', identity, identity);
      const received: string[] = [];
      call.on('data', (message: Buffer) => received.push(message.toString()));
      const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
      for (const word of ['one', 'two', 'three']) call.write(Buffer.from(word));
      call.end();
      expect((await status).code).toBe(grpc.status.OK);
      expect(received).toEqual(['echo:one', 'echo:two', 'echo:three']);

      // Messages of 60-150 KB, each over several DATA frames and reads.
      const big = client.makeBidiStreamRequest('/test.Echo/Bidi', identity, identity);
      const bigReceived: string[] = [];
      big.on('data', (message: Buffer) => bigReceived.push(sha(message)));
      const bigStatus = new Promise<grpc.StatusObject>((resolve) => big.on('status', resolve));
      const messages = Array.from({ length: 12 }, (_, i) => pattern(60_000 + i * 8_000).subarray(i));
      for (const message of messages) big.write(message);
      big.end();
      expect((await bigStatus).code).toBe(grpc.status.OK);
      expect(bigReceived).toEqual(messages.map((message) => sha(Buffer.concat([Buffer.from('echo:'), message]))));

      const unknown = await new Promise<grpc.ServiceError>((resolve) => client.makeUnaryRequest('/test.Echo/Nope', identity, identity, Buffer.from('x'), (error) => resolve(error as grpc.ServiceError)));
      expect(unknown.code).toBe(grpc.status.UNIMPLEMENTED);
      expect(unknown.details).toBe('unknown method');
    } finally {
      client.close();
    }
  });
});

interface RawFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A client that writes frames as bytes and parses what comes back, for what no well-behaved client sends. */
class RawClient {
  readonly socket: net.Socket;
  readonly frames: RawFrame[] = [];
  closed = false;
  private received = Buffer.alloc(0);

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      while (this.received.length >= 9) {
        const header = parseFrameHeader(this.received);
        if (this.received.length < 9 + header.length) break;
        this.frames.push({ type: header.type, flags: header.flags, streamId: header.streamId, payload: this.received.subarray(9, 9 + header.length) });
        this.received = this.received.subarray(9 + header.length);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }

  static async connect(port: number, opening: Buffer = Buffer.concat([CLIENT_PREFACE, settingsFrame([])])): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const client = new RawClient(socket);
    if (opening.length > 0) socket.write(opening);
    return client;
  }

  send(...frames: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(frames));
  }

  goaway(): RawFrame | undefined {
    return this.frames.find((frame) => frame.type === FrameType.GOAWAY);
  }

  /** Whether a PING sent now is answered within ms: the connection still works. */
  async answersPing(ms = 1000): Promise<boolean> {
    const opaque = Buffer.from(Math.random().toString(16).slice(2, 10).padEnd(8, '0'));
    this.send(frame(FrameType.PING, 0, 0, opaque));
    const answered = () => this.frames.some((f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0 && f.payload.equals(opaque));
    await waitUntil(() => this.closed || answered(), ms);
    return answered();
  }

  /** Waits for the server's GOAWAY and close, and gives the GOAWAY's error code. */
  async goawayCode(ms = 1000): Promise<number | undefined> {
    await waitUntil(() => this.closed, ms);
    const goaway = this.goaway();
    return this.closed && goaway !== undefined ? goaway.payload.readUInt32BE(4) : undefined;
  }

  streamFrames(streamId: number): RawFrame[] {
    return this.frames.filter((f) => f.streamId === streamId);
  }
}

function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([frameHeader(payload.length, type, flags, streamId), payload]);
}

const REQUEST: readonly HeaderField[] = [
  [':method', 'POST'],
  [':scheme', 'http'],
  [':path', '/raw'],
  [':authority', 'test'],
];
const requestBlock = (extra: readonly HeaderField[] = []) => encodeHeaderBlock([...REQUEST, ...extra]);
const headers = (streamId: number, flags: number = Flag.END_HEADERS, block = requestBlock()) => frame(FrameType.HEADERS, flags, streamId, block);
const data = (streamId: number, payload: Buffer, flags: number = 0) => frame(FrameType.DATA, flags, streamId, payload);
const u32 = (value: number) => {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value);
  return buffer;
};
const windowUpdate = (streamId: number, increment: number) => frame(FrameType.WINDOW_UPDATE, 0, streamId, u32(increment));
const rst = (frames: RawFrame[], streamId: number) => frames.find((f) => f.type === FrameType.RST_STREAM && f.streamId === streamId)?.payload.readUInt32BE(0);

/** Responds and holds the stream open: nothing ends it but the peer or the test. */
function hold(stream: H2Stream): void {
  stream.respond(OK_HEADERS);
}

describe.each(READS)('H2 connection errors, frame by frame (RFC 9113) (reads: %s)', (mode) => {
  usingReads(mode);
  it.each<[string, Buffer[], number]>([
    ['a connection that opens with HTTP/1.1 instead of the preface', [Buffer.from('POST / HTTP/1.1\r\nHost: x\r\n\r\n')], ErrorCode.PROTOCOL_ERROR],
    ['a frame over our 16384-octet max frame size', [data(1, Buffer.alloc(17 * 1024))], ErrorCode.FRAME_SIZE_ERROR],
    ['a connection WINDOW_UPDATE of 0', [windowUpdate(0, 0)], ErrorCode.PROTOCOL_ERROR],
    ['a connection window taken over 2^31-1', [windowUpdate(0, 2 ** 31 - 1)], ErrorCode.FLOW_CONTROL_ERROR],
    ['a stream with an even id', [headers(2)], ErrorCode.PROTOCOL_ERROR],
    ['stream ids that go down', [headers(5), headers(3)], ErrorCode.PROTOCOL_ERROR],
    ['DATA on a stream never opened', [data(7, Buffer.from('x'))], ErrorCode.PROTOCOL_ERROR],
    ['RST_STREAM on a stream never opened', [frame(FrameType.RST_STREAM, 0, 9, u32(8))], ErrorCode.PROTOCOL_ERROR],
    ['PUSH_PROMISE from a client', [frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, Buffer.alloc(4))], ErrorCode.PROTOCOL_ERROR],
    ['a PING between HEADERS and its CONTINUATION', [headers(1, 0), frame(FrameType.PING, 0, 0, Buffer.alloc(8))], ErrorCode.PROTOCOL_ERROR],
    ['CONTINUATION with no HEADERS before it', [frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, requestBlock())], ErrorCode.PROTOCOL_ERROR],
    ['a flood of empty CONTINUATIONs', [headers(1, 0), ...Array.from({ length: 1000 }, () => frame(FrameType.CONTINUATION, 0, 1))], ErrorCode.ENHANCE_YOUR_CALM],
    ['a field block growing past the limit in CONTINUATIONs', [headers(1, 0), ...Array.from({ length: 4 }, () => frame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(16_000)))], ErrorCode.ENHANCE_YOUR_CALM],
    ['a field block HPACK cannot decode', [headers(1, Flag.END_HEADERS, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))], ErrorCode.COMPRESSION_ERROR],
    ['SETTINGS_MAX_FRAME_SIZE under 16384', [settingsFrame([[Setting.MAX_FRAME_SIZE, 100]])], ErrorCode.PROTOCOL_ERROR],
    ['SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1', [settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 2 ** 31]])], ErrorCode.FLOW_CONTROL_ERROR],
    ['a SETTINGS of 5 octets', [frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5))], ErrorCode.FRAME_SIZE_ERROR],
    ['a PING of 7 octets', [frame(FrameType.PING, 0, 0, Buffer.alloc(7))], ErrorCode.FRAME_SIZE_ERROR],
    ['a SETTINGS on a stream', [frame(FrameType.SETTINGS, 0, 1)], ErrorCode.PROTOCOL_ERROR],
    ['DATA with a pad length over its payload', [headers(1), data(1, Buffer.from([9, 1, 2]), Flag.PADDED)], ErrorCode.PROTOCOL_ERROR],
  ])('answers %s with GOAWAY and a close', async (_name, frames, code) => {
    const served = await serve(hold);
    const opening = frames[0]?.toString('latin1').startsWith('POST') ? Buffer.alloc(0) : undefined;
    const client = await RawClient.connect(served.port, opening);
    client.send(...frames);
    expect(await client.goawayCode()).toBe(code);
    expect(await waitUntil(() => served.closedConnections === 1, 1000)).toBe(true);
  });

  it('refuses a first frame other than SETTINGS after the preface', async () => {
    const served = await serve(hold);
    const client = await RawClient.connect(served.port, Buffer.concat([CLIENT_PREFACE, frame(FrameType.PING, 0, 0, Buffer.alloc(8))]));
    expect(await client.goawayCode()).toBe(ErrorCode.PROTOCOL_ERROR);
  });

  it.each<[string, Partial<H2ServerOptions>, Buffer[], number, number]>([
    ['a WINDOW_UPDATE of 0 on an open stream', {}, [headers(1), windowUpdate(1, 0)], 1, ErrorCode.PROTOCOL_ERROR],
    ['a stream window taken over 2^31-1', {}, [headers(1), windowUpdate(1, 2 ** 31 - 1)], 1, ErrorCode.FLOW_CONTROL_ERROR],
    ['an uppercase header name', {}, [headers(1, Flag.END_HEADERS | Flag.END_STREAM, requestBlock([['X-Upper', 'v']]))], 1, ErrorCode.PROTOCOL_ERROR],
    ['a pseudo-header after a regular one', {}, [headers(1, Flag.END_HEADERS, encodeHeaderBlock([['x-a', 'b'], ...REQUEST]))], 1, ErrorCode.PROTOCOL_ERROR],
    ['a stream beyond MAX_CONCURRENT_STREAMS', { maxConcurrentStreams: 2 }, [headers(1), headers(3), headers(5)], 5, ErrorCode.REFUSED_STREAM],
    ['DATA after the stream was ended', {}, [headers(1, Flag.END_HEADERS | Flag.END_STREAM), data(1, Buffer.from('late'))], 1, ErrorCode.STREAM_CLOSED],
    // Our SETTINGS acknowledged, so the stream's window is our 1,000 octets, not the default 65,535.
    ['DATA beyond the stream window', { initialWindowSize: 1000 }, [SETTINGS_ACK, headers(1), data(1, Buffer.alloc(1001))], 1, ErrorCode.FLOW_CONTROL_ERROR],
    ['trailers without END_STREAM', {}, [headers(1), headers(1, Flag.END_HEADERS, encodeHeaderBlock([['x-t', 'v']]))], 1, ErrorCode.PROTOCOL_ERROR],
  ])('resets the stream for %s and keeps the connection', async (_name, options, frames, streamId, code) => {
    const served = await serve(hold, options);
    const client = await RawClient.connect(served.port);
    client.send(...frames);
    expect(await waitUntil(() => rst(client.frames, streamId) !== undefined, 1000)).toBe(true);
    expect(rst(client.frames, streamId)).toBe(code);
    expect(await client.answersPing()).toBe(true);
    expect(client.goaway()).toBeUndefined();
  });

  it('closes a stream the client resets in the middle of its body with onClose(true) and no onEnd; the connection goes on', async () => {
    const events: string[] = [];
    const served = await serve((stream) => {
      if (stream.id !== 1) return echo(stream);
      stream.respond(OK_HEADERS);
      stream.onData = (chunk) => events.push(`data ${chunk.length}`);
      stream.onEnd = () => events.push('end');
      stream.onClose = (reset) => events.push(`close(${reset})`);
    });
    const client = await RawClient.connect(served.port);
    // (node:http2's client sends END_STREAM before its RST_STREAM, so raw frames show the reset alone.)
    client.send(headers(1), data(1, Buffer.alloc(1000)), frame(FrameType.RST_STREAM, 0, 1, u32(ErrorCode.CANCEL)));
    expect(await waitUntil(() => events.length === 2, 1000)).toBe(true);
    expect(events).toEqual(['data 1000', 'close(true)']);
    expect(served.connections[0]?.openStreams).toBe(0);
    client.send(data(1, Buffer.from('crossed the reset')), headers(3, Flag.END_HEADERS), data(3, Buffer.from('next'), Flag.END_STREAM));
    expect(await waitUntil(() => client.streamFrames(3).some((f) => (f.flags & Flag.END_STREAM) !== 0), 1000)).toBe(true);
    expect(client.streamFrames(1).filter((f) => f.type === FrameType.RST_STREAM)).toEqual([]);
    expect(await client.answersPing()).toBe(true);
  });

  it('answers a header list over the limit with 431 and keeps the connection and its HPACK table', async () => {
    const served = await serve(echo, { maxHeaderListSize: 1000 });
    const client = await RawClient.connect(served.port);
    // The refused block adds x-small to the dynamic table; the next block uses it (index 62).
    const literal = (name: string) => [name.length, ...Buffer.from(name)];
    const refused = Buffer.concat([requestBlock(), Buffer.from([0x40, ...literal('x-small'), ...literal('v')]), Buffer.from([0x00, ...literal('x-big'), 0x7f, 0xcd, 0x07]), Buffer.alloc(1100, 0x61)]);
    client.send(headers(1, Flag.END_HEADERS | Flag.END_STREAM, refused), headers(3, Flag.END_HEADERS | Flag.END_STREAM, Buffer.concat([requestBlock(), Buffer.from([0xbe])])));
    expect(await waitUntil(() => client.streamFrames(3).some((f) => (f.flags & Flag.END_STREAM) !== 0), 1000)).toBe(true);
    const decoder = new HpackDecoder({ maxTableSize: 4096, maxHeaderListSize: 1 << 16 });
    const first = client.streamFrames(1)[0] as RawFrame;
    expect(decoder.decode(first.payload)).toEqual({ ok: true, fields: [[':status', '431']] });
    expect(first.flags & Flag.END_STREAM).toBe(Flag.END_STREAM);
    expect(decoder.decode((client.streamFrames(3)[0] as RawFrame).payload)).toEqual({ ok: true, fields: OK_HEADERS });
    expect(served.errors).toEqual([]);
  });

  it('puts together a request header block sent as HEADERS and two CONTINUATIONs, each in a write of its own', async () => {
    const served = await serve(echo);
    // Several connections: with lent pieces each cuts its reads elsewhere.
    for (let connection = 0; connection < 6; connection++) {
      const client = await RawClient.connect(served.port);
      const block = requestBlock([['x-long', 'v'.repeat(3000)]]);
      client.send(frame(FrameType.HEADERS, Flag.END_STREAM, 1, block.subarray(0, 1000)));
      await sleep(10);
      client.send(frame(FrameType.CONTINUATION, 0, 1, block.subarray(1000, 2000)));
      await sleep(10);
      client.send(frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, block.subarray(2000)));
      expect(await waitUntil(() => client.streamFrames(1).some((f) => (f.flags & Flag.END_STREAM) !== 0), 1000)).toBe(true);
      const decoder = new HpackDecoder({ maxTableSize: 4096, maxHeaderListSize: 1 << 16 });
      expect(decoder.decode((client.streamFrames(1)[0] as RawFrame).payload)).toEqual({ ok: true, fields: OK_HEADERS });
      const trailers = client.streamFrames(1).find((f) => f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM) !== 0) as RawFrame;
      expect(decoder.decode(trailers.payload)).toEqual({ ok: true, fields: [['x-received', '0'], ['x-path', '/raw']] });
      client.socket.destroy();
    }
    expect(served.errors).toEqual([]);
  });

  it('closes a connection whose peer sends PINGs and never reads the answers, once the unsent answers pass the limit', async () => {
    const served = await serve(echo, { maxUnsentBytes: 1024 * 1024 });
    const client = await RawClient.connect(served.port);
    client.socket.pause();
    const pings = Buffer.concat(Array.from({ length: 10_000 }, () => frame(FrameType.PING, 0, 0, Buffer.alloc(8))));
    // At most 100 × 10,000 PINGs (17 MB of answers): past 1 MiB and the kernel's buffers.
    for (let batch = 0; batch < 100 && !client.closed; batch++) {
      if (!client.socket.write(pings)) await new Promise((resolve) => client.socket.once('drain', resolve).once('close', resolve));
      await sleep(1);
    }
    expect(await waitUntil(() => client.closed, 2000)).toBe(true);
    expect(served.errors.map((error) => error.message)).toContainEqual(expect.stringMatching(/octets wait unsent \(at most 1048576\); the peer sends frames but does not read the answers or open its windows$/));
  });

  it('closes a connection whose peer keeps its windows shut while it sends requests, once the queued answers pass the limit', async () => {
    const served = await serve(echo, { maxUnsentBytes: 1024 * 1024 });
    // SETTINGS_INITIAL_WINDOW_SIZE 0: every echoed octet waits in the stream's queue.
    const client = await RawClient.connect(served.port, Buffer.concat([CLIENT_PREFACE, settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 0]])]));
    client.send(headers(1, Flag.END_HEADERS));
    const chunk = data(1, Buffer.alloc(16_000, 0x61));
    // At most 300 × 16 KB, with the stream's credit coming back as the server reads.
    for (let frame = 0; frame < 300 && !client.closed; frame++) {
      client.send(chunk);
      if (frame % 20 === 19) await sleep(2);
    }
    expect(await waitUntil(() => client.closed, 2000)).toBe(true);
    expect(served.errors.map((error) => error.message)).toContainEqual(expect.stringMatching(/octets wait unsent \(at most 1048576\); the peer sends frames but does not read the answers or open its windows$/));
  });

  it('counts what each queued answer costs, not only its octets, when the answers are one shared buffer', async () => {
    const shared = Buffer.from('answer!');
    const served = await serve(
      (stream) => {
        stream.respond(OK_HEADERS);
        stream.onData = () => stream.write(shared);
      },
      { maxUnsentBytes: 1024 * 1024 },
    );
    const client = await RawClient.connect(served.port, Buffer.concat([CLIENT_PREFACE, settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 0]])]));
    client.send(headers(1, Flag.END_HEADERS));
    // 20,000 one-octet DATA frames: 140 KB of answer octets, 20,000 queued buffers.
    const frames = Buffer.concat(Array.from({ length: 1000 }, () => data(1, Buffer.from('x'))));
    for (let batch = 0; batch < 20 && !client.closed; batch++) {
      client.send(frames);
      await sleep(2);
    }
    expect(await waitUntil(() => client.closed, 2000)).toBe(true);
    expect(served.errors.map((error) => error.message)).toContainEqual(expect.stringMatching(/octets wait unsent \(at most 1048576\)/));
  });

  it('takes PADDED HEADERS with PRIORITY, PADDED DATA, request trailers, PRIORITY frames and unknown frame types', async () => {
    const served = await serve(echo);
    const client = await RawClient.connect(served.port);
    const block = requestBlock();
    client.send(
      frame(0xfa, 0xff, 0, Buffer.from('unknown')),
      frame(FrameType.PRIORITY, 0, 1, Buffer.from([0, 0, 0, 0, 16])),
      frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.PADDED | Flag.PRIORITY, 1, Buffer.concat([Buffer.from([3, 0, 0, 0, 0, 16]), block, Buffer.alloc(3)])),
      data(1, Buffer.concat([Buffer.from([2]), Buffer.from('body'), Buffer.alloc(2)]), Flag.PADDED),
      frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1, encodeHeaderBlock([['x-trailer', 'v']])),
    );
    expect(await waitUntil(() => client.streamFrames(1).some((f) => (f.flags & Flag.END_STREAM) !== 0), 1000)).toBe(true);
    const body = client.streamFrames(1).filter((f) => f.type === FrameType.DATA);
    expect(Buffer.concat(body.map((f) => f.payload)).toString()).toBe('body');
    expect(served.connections[0]?.openStreams).toBe(0);
    expect(await client.answersPing()).toBe(true);
  });

  it('opens its next field block with a table size update after the client lowers SETTINGS_HEADER_TABLE_SIZE', async () => {
    const served = await serve(echo);
    const client = await RawClient.connect(served.port, Buffer.concat([CLIENT_PREFACE, settingsFrame([[Setting.HEADER_TABLE_SIZE, 0]])]));
    client.send(headers(1, Flag.END_HEADERS | Flag.END_STREAM), headers(3, Flag.END_HEADERS | Flag.END_STREAM));
    expect(await waitUntil(() => client.streamFrames(3).some((f) => (f.flags & Flag.END_STREAM) !== 0), 1000)).toBe(true);
    expect((client.streamFrames(1)[0] as RawFrame).payload[0]).toBe(0x20);
    expect((client.streamFrames(3)[0] as RawFrame).payload[0]).not.toBe(0x20);
  });

  it('refuses new streams after shutdown() and after a GOAWAY from the client, and closes when the open ones end', async () => {
    const held: H2Stream[] = [];
    const served = await serve((stream) => {
      hold(stream);
      held.push(stream);
    });
    const client = await RawClient.connect(served.port);
    client.send(headers(1));
    expect(await waitUntil(() => held.length === 1, 1000)).toBe(true);
    served.connections[0]?.shutdown();
    expect(await waitUntil(() => client.goaway() !== undefined, 1000)).toBe(true);
    expect((client.goaway() as RawFrame).payload.readUInt32BE(0)).toBe(1);
    client.send(headers(3));
    expect(await waitUntil(() => rst(client.frames, 3) !== undefined, 1000)).toBe(true);
    expect(rst(client.frames, 3)).toBe(ErrorCode.REFUSED_STREAM);
    expect(client.closed).toBe(false);
    held[0]?.end([['x-done', 'yes']]);
    client.send(data(1, Buffer.alloc(0), Flag.END_STREAM));
    expect(await waitUntil(() => served.closedConnections === 1 && client.closed, 1000)).toBe(true);

    const second = await RawClient.connect(served.port);
    second.send(headers(1), frame(FrameType.GOAWAY, 0, 0, Buffer.alloc(8)), headers(3));
    expect(await waitUntil(() => rst(second.frames, 3) !== undefined, 1000)).toBe(true);
    expect(rst(second.frames, 3)).toBe(ErrorCode.REFUSED_STREAM);
    held[1]?.reset(ErrorCode.CANCEL);
    expect(await waitUntil(() => served.closedConnections === 2, 1000)).toBe(true);
  });

  it('sends queued DATA and then the trailers when the client opens its windows', async () => {
    const served = await serve(echo);
    // The client's stream window is 100 octets; its connection window stays at 65,535.
    const client = await RawClient.connect(served.port, Buffer.concat([CLIENT_PREFACE, settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 100]])]));
    client.send(headers(1, Flag.END_HEADERS), data(1, Buffer.alloc(1000, 0x62), Flag.END_STREAM));
    const sent = () => client.streamFrames(1).filter((f) => f.type === FrameType.DATA).reduce((sum, f) => sum + f.payload.length, 0);
    expect(await waitUntil(() => sent() === 100, 1000)).toBe(true);
    await sleep(20);
    expect(sent()).toBe(100);
    client.send(settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 600]]));
    expect(await waitUntil(() => sent() === 600, 1000)).toBe(true);
    client.send(windowUpdate(1, 400));
    expect(await waitUntil(() => client.streamFrames(1).some((f) => f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM) !== 0), 1000)).toBe(true);
    expect(sent()).toBe(1000);
    expect(served.connections[0]?.openStreams).toBe(0);
  });
});

describe('stopRequest: a complete answer to a client that has not half-closed', () => {
  /** Answers with 1,000 octets and trailers before the request ends, then asks the client to stop. */
  function answerEarly(stream: H2Stream): void {
    stream.respond(OK_HEADERS);
    stream.write(Buffer.alloc(1000, 0x61));
    stream.end([['grpc-status', '0']]);
    stream.stopRequest();
  }

  it.each([
    ['with open windows', 65_535],
    ['with the trailers waiting for a 100-octet window', 100],
  ])('sends the DATA, then the trailers, then RST_STREAM(NO_ERROR), %s', async (_name, window) => {
    const served = await serve(answerEarly);
    const client = await RawClient.connect(served.port, Buffer.concat([CLIENT_PREFACE, settingsFrame([[Setting.INITIAL_WINDOW_SIZE, window]])]));
    client.send(headers(1, Flag.END_HEADERS));
    if (window < 1000) {
      expect(await waitUntil(() => client.streamFrames(1).some((f) => f.type === FrameType.DATA), 1000)).toBe(true);
      await sleep(20);
      expect(rst(client.streamFrames(1), 1)).toBeUndefined();
      client.send(windowUpdate(1, 1000));
    }
    expect(await waitUntil(() => rst(client.streamFrames(1), 1) !== undefined, 1000)).toBe(true);
    const frames = client.streamFrames(1);
    const kinds = frames.map((f) => (f.type === FrameType.HEADERS ? ((f.flags & Flag.END_STREAM) !== 0 ? 'trailers' : 'headers') : f.type === FrameType.DATA ? 'data' : f.type === FrameType.RST_STREAM ? 'rst' : String(f.type)));
    expect(kinds.filter((k, i) => k !== kinds[i - 1])).toEqual(['headers', 'data', 'trailers', 'rst']);
    expect(frames.filter((f) => f.type === FrameType.DATA).reduce((sum, f) => sum + f.payload.length, 0)).toBe(1000);
    expect(rst(frames, 1)).toBe(ErrorCode.NO_ERROR);
    expect(served.connections[0]?.openStreams).toBe(0);
  });

  it('refuses stopRequest before end(), naming what must come first', async () => {
    let error: unknown;
    const served = await serve((stream) => {
      stream.respond(OK_HEADERS);
      try {
        stream.stopRequest();
      } catch (thrown) {
        error = thrown;
      }
      stream.reset(ErrorCode.NO_ERROR);
    });
    const client = await RawClient.connect(served.port);
    client.send(headers(1, Flag.END_HEADERS));
    expect(await waitUntil(() => error !== undefined, 1000)).toBe(true);
    expect(String(error)).toContain('stopRequest() before end(); the response must be complete first');
  });
});

describe('found in review: the connection survives what crosses our resets, and GOAWAY ids do not go up', () => {
  it('ignores trailers that crossed our RST_STREAM (stopRequest) and keeps serving the connection', async () => {
    const served = await serve((stream) => {
      stream.respond(OK_HEADERS);
      stream.end([['grpc-status', '0']]);
      stream.stopRequest();
    });
    const client = await RawClient.connect(served.port);
    client.send(headers(1, Flag.END_HEADERS));
    expect(await waitUntil(() => rst(client.streamFrames(1), 1) === ErrorCode.NO_ERROR, 1000)).toBe(true);
    // The client's trailers, sent before it saw the reset.
    client.send(frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1, encodeHeaderBlock([['x-late', 'trailer']])));
    expect(await client.answersPing()).toBe(true);
    client.send(headers(3, Flag.END_HEADERS));
    expect(await waitUntil(() => rst(client.streamFrames(3), 3) === ErrorCode.NO_ERROR, 1000)).toBe(true);
    expect(client.goaway()).toBeUndefined();
  });

  it('names the same last stream id in a GOAWAY after shutdown() even when refused streams came after it', async () => {
    const served = await serve(hold);
    const client = await RawClient.connect(served.port);
    client.send(headers(1, Flag.END_HEADERS));
    expect(await waitUntil(() => served.connections.length === 1 && served.connections[0]!.openStreams === 1, 1000)).toBe(true);
    served.connections[0]!.shutdown();
    expect(await waitUntil(() => client.goaway() !== undefined, 1000)).toBe(true);
    client.send(headers(3, Flag.END_HEADERS), headers(5, Flag.END_HEADERS), frame(FrameType.PING, 0, 0, Buffer.alloc(7)));
    expect(await waitUntil(() => client.frames.filter((f) => f.type === FrameType.GOAWAY).length === 2, 1000)).toBe(true);
    const ids = client.frames.filter((f) => f.type === FrameType.GOAWAY).map((f) => f.payload.readUInt32BE(0) & 0x7fffffff);
    expect(ids).toEqual([1, 1]);
  });

  it("applies only a SETTINGS frame's last INITIAL_WINDOW_SIZE", async () => {
    const served = await serve(echo);
    const client = await RawClient.connect(served.port);
    const flips: [number, number][] = Array.from({ length: 2000 }, (_, i) => [Setting.INITIAL_WINDOW_SIZE, i % 2 === 0 ? 5000 : 9000]);
    client.send(settingsFrame([...flips, [Setting.INITIAL_WINDOW_SIZE, 100]]));
    client.send(headers(1, Flag.END_HEADERS), data(1, Buffer.alloc(1000, 0x62), Flag.END_STREAM));
    const sent = () => client.streamFrames(1).filter((f) => f.type === FrameType.DATA).reduce((sum, f) => sum + f.payload.length, 0);
    expect(await waitUntil(() => sent() === 100, 1000)).toBe(true);
    await sleep(20);
    expect(sent()).toBe(100);
  });

  it('resets a trailers-only answer to a client that has not half-closed (RST_STREAM NO_ERROR after the HEADERS)', async () => {
    const served = await serve((stream) => stream.respondAndEnd([[':status', '415']]));
    const client = await RawClient.connect(served.port);
    client.send(headers(1, Flag.END_HEADERS));
    expect(await waitUntil(() => rst(client.streamFrames(1), 1) !== undefined, 1000)).toBe(true);
    expect(client.streamFrames(1).map((f) => f.type)).toEqual([FrameType.HEADERS, FrameType.RST_STREAM]);
    expect(rst(client.streamFrames(1), 1)).toBe(ErrorCode.NO_ERROR);
    expect(served.connections[0]?.openStreams).toBe(0);
  });
});

describe('shared header blocks', () => {
  it('encodes a frozen field list once and still sends a changed unfrozen one as it is now', async () => {
    const frozen: readonly HeaderField[] = Object.freeze([Object.freeze([':status', '200'] as const), Object.freeze(['x-kind', 'frozen'] as const)]);
    const mutable: [string, string][] = [[':status', '200'], ['x-kind', 'first']];
    let n = 0;
    const served = await serve((stream) => {
      n++;
      if (n === 2) mutable[1] = ['x-kind', 'second'];
      stream.respondAndEnd(n === 3 ? frozen : mutable);
    });
    const client = await connect(served.port);
    const kinds: string[] = [];
    for (let i = 0; i < 4; i++) {
      const request = client.request({ ':path': '/' }, { endStream: true });
      const [headers] = (await once(request, 'response')) as [http2.IncomingHttpHeaders];
      kinds.push(String(headers['x-kind']));
      request.resume();
      await once(request, 'close');
    }
    expect(kinds).toEqual(['first', 'second', 'frozen', 'second']);
    client.close();
  });
});

/** One random hostile frame sequence, seeded. The last element may be a truncated frame. */
function hostileSequence(seed: number): { bytes: Buffer; truncated: boolean; goaway: boolean } {
  const next = seededRandom(seed);
  const int = (n: number) => Math.floor(next() * n);
  const parts: Buffer[] = [];
  let stream = 1;
  let truncated = false;
  let goaway = false;
  const anyFrame = (type: number, flags: number, id: number, payload: Buffer) => {
    // A client's GOAWAY lets the server close without one of its own.
    if (type === FrameType.GOAWAY) goaway = true;
    return frame(type, flags, id, payload);
  };
  const streamId = () => [0, stream, stream + 2, 2, int(2 ** 31), 1 + 2 * int(8)][int(6)] as number;
  const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  for (let i = 0, count = 1 + int(12); i < count; i++) {
    const kind = int(14);
    if (kind <= 2) {
      // A valid request, sometimes with a body: the connection should go on serving.
      parts.push(headers(stream, Flag.END_HEADERS | (next() < 0.5 ? Flag.END_STREAM : 0)));
      if (next() < 0.5) parts.push(data(stream, randomBytes(int(3000)), next() < 0.5 ? Flag.END_STREAM : 0));
      stream += 2;
    } else if (kind <= 5) parts.push(anyFrame(int(12), int(256), streamId(), randomBytes(int(40))));
    else if (kind === 6) parts.push(frame(FrameType.HEADERS, int(256), streamId(), randomBytes(int(60))));
    else if (kind === 7) {
      parts.push(headers(stream, 0));
      for (let c = 0, n = int(300); c < n; c++) parts.push(frame(FrameType.CONTINUATION, next() < 0.98 ? 0 : Flag.END_HEADERS, stream, randomBytes(int(4))));
      stream += 2;
    } else if (kind === 8) parts.push(windowUpdate(next() < 0.5 ? 0 : streamId(), [0, 1, 2 ** 31 - 1, int(2 ** 31)][int(4)] as number));
    else if (kind === 9) parts.push(anyFrame(int(10), int(256), streamId(), randomBytes(17 * 1024)));
    else if (kind === 10) {
      const settings = Array.from({ length: int(4) }, () => [1 + int(7), [0, 1, 16_383, 16_384, 2 ** 24, 2 ** 31 - 1, 2 ** 32 - 1, int(2 ** 32)][int(8)] as number] as [number, number]);
      parts.push(settingsFrame(settings));
    } else if (kind === 11) {
      for (let d = 0, n = int(8); d < n; d++) parts.push(data(stream - 2 > 0 ? stream - 2 : 1, randomBytes(int(2) === 0 ? 16_384 : int(100)), next() < 0.2 ? Flag.PADDED : 0));
    } else if (kind === 12) parts.push(frame(FrameType.RST_STREAM, 0, streamId(), u32(int(14))));
    else {
      const whole = anyFrame(int(10), int(256), streamId(), randomBytes(1 + int(100)));
      parts.push(whole.subarray(0, int(whole.length)));
      truncated = true;
      break;
    }
  }
  return { bytes: Buffer.concat(parts), truncated, goaway };
}

describe.each(READS)('H2 connection under hostile frame sequences (reads: %s)', (mode) => {
  usingReads(mode);
  it('ends each of 500 seeded sequences with a working connection or a GOAWAY and a close', async () => {
    const served = await serve(echo);
    const outcomes = { working: 0, goaway: 0, truncated: 0 };
    const failures: string[] = [];
    async function run(seed: number): Promise<void> {
      const { bytes, truncated, goaway } = hostileSequence(seed);
      const client = await RawClient.connect(served.port);
      client.send(bytes);
      // Generous bounds: 50 connections share the CPU with the other test files.
      if (await client.answersPing(1000)) outcomes.working++;
      else if (client.closed) {
        if (client.goaway() === undefined && !goaway) failures.push(`seed ${seed}: closed without a GOAWAY`);
        else outcomes.goaway++;
      } else if (truncated) {
        // The server waits for the rest of a frame; our FIN must close it.
        client.socket.end();
        if (await waitUntil(() => client.closed, 2000)) outcomes.truncated++;
        else failures.push(`seed ${seed}: a truncated frame and our FIN did not close the connection`);
      } else if (await waitUntil(() => client.closed, 2000)) outcomes.goaway++;
      else failures.push(`seed ${seed}: neither a PING answer nor a close within 3 s`);
      client.socket.destroy();
    }
    const seeds = Array.from({ length: 500 }, (_, i) => i + 1);
    // 50 connections at a time, each starting as another ends.
    let nextSeed = 0;
    const worker = async () => {
      while (nextSeed < seeds.length) await run(seeds[nextSeed++] as number);
    };
    await Promise.all(Array.from({ length: 50 }, worker));
    expect(failures).toEqual([]);
    // The application's callbacks never threw, and neither did the connection (vitest fails on an uncaught exception).
    expect(served.errors.filter((error) => error.message.includes('threw'))).toEqual([]);
    expect(outcomes.working + outcomes.goaway + outcomes.truncated).toBe(seeds.length);
    // Both ends of the corpus are exercised.
    expect(outcomes.working).toBeGreaterThan(20);
    expect(outcomes.goaway).toBeGreaterThan(100);
    expect(await waitUntil(() => served.closedConnections === seeds.length, 3000)).toBe(true);
  }, 60_000);
});

describe.each(READS)('H2 connection with h2load as the client (reads: %s)', (mode) => {
  usingReads(mode);
  it('serves 2,000 POSTs over 2 connections, 32 streams each at once, all succeeded', async () => {
    const served = await serve(echo);
    const file = join(mkdtempSync(join(tmpdir(), 'h2load-')), 'body');
    writeFileSync(file, pattern(3000));
    const output = await new Promise<string>((resolve, reject) =>
      execFile('h2load', ['-n', '2000', '-c', '2', '-m', '32', '-d', file, `http://127.0.0.1:${served.port}/x`], { timeout: 10_000 }, (error, stdout, stderr) => {
        if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') reject(new Error('h2load is not installed: apt-get install nghttp2-client'));
        else if (error) reject(new Error(`h2load failed: ${error.message}\n${stdout}\n${stderr}`));
        else resolve(stdout);
      }),
    );
    expect(output).toMatch(/requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/);
    expect(output).toMatch(/status codes: 2000 2xx/);
  });
});
