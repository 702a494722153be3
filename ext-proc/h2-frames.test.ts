// The frame layer against the octets RFC 9113 §4 and §6 lay down, as tables.
import { describe, expect, it } from 'vitest';
import {
  CLIENT_PREFACE,
  ErrorCode,
  Flag,
  FrameType,
  ProtocolViolation,
  SETTINGS_ACK,
  Setting,
  errorCodeName,
  frameHeader,
  goawayFrame,
  headersFragment,
  headersFrames,
  parseFrameHeader,
  parseGoaway,
  parseSettings,
  pingAckFrame,
  rstStreamFrame,
  settingsFrame,
  unpadded,
  windowUpdateFrame,
} from './h2-frames.ts';

const hex = (buffer: Uint8Array) => Buffer.from(buffer).toString('hex');

/** The frames in a buffer, as [type, flags, stream id, payload hex]. */
function frames(buffer: Buffer): Array<[number, number, number, string]> {
  const out: Array<[number, number, number, string]> = [];
  for (let at = 0; at < buffer.length; ) {
    const header = parseFrameHeader(buffer, at);
    out.push([header.type, header.flags, header.streamId, hex(buffer.subarray(at + 9, at + 9 + header.length))]);
    at += 9 + header.length;
  }
  return out;
}

describe('h2-frames', () => {
  it('has the 24-octet client preface of RFC 9113 §3.4', () => {
    expect(CLIENT_PREFACE.length).toBe(24);
    expect(CLIENT_PREFACE.toString('latin1')).toBe('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
  });

  it.each([
    ['a SETTINGS ACK', '000000040100000000', { length: 0, type: 4, flags: 1, streamId: 0 }],
    ['a 16384-octet DATA on stream 1', '004000000000000001', { length: 16384, type: 0, flags: 0, streamId: 1 }],
    ['the largest length and stream id', 'ffffff09ff7fffffff', { length: 0xffffff, type: 9, flags: 0xff, streamId: 0x7fffffff }],
    ['a stream id with the reserved bit set (ignored on receipt)', '000004080080000003', { length: 4, type: 8, flags: 0, streamId: 3 }],
  ])('parses the frame header of %s', (_name, octets, expected) => {
    expect(parseFrameHeader(Buffer.from(octets, 'hex'))).toEqual(expected);
    expect(parseFrameHeader(Buffer.from(`ab${octets}`, 'hex'), 1)).toEqual(expected);
  });

  it.each([
    ['our SETTINGS', settingsFrame([[Setting.MAX_CONCURRENT_STREAMS, 100], [Setting.INITIAL_WINDOW_SIZE, 131077]]), '00000c040000000000' + '000300000064' + '000400020005'],
    ['an empty SETTINGS', settingsFrame([]), '000000040000000000'],
    ['SETTINGS ACK', SETTINGS_ACK, '000000040100000000'],
    ['a PING ACK echoing its payload', pingAckFrame(Buffer.from('0102030405060708', 'hex')), '000008060100000000' + '0102030405060708'],
    ['WINDOW_UPDATE on the connection', windowUpdateFrame(0, 16_711_681), '000004080000000000' + '00ff0001'],
    ['WINDOW_UPDATE on stream 5', windowUpdateFrame(5, 1), '000004080000000005' + '00000001'],
    ['RST_STREAM(REFUSED_STREAM)', rstStreamFrame(7, ErrorCode.REFUSED_STREAM), '000004030000000007' + '00000007'],
    ['GOAWAY(NO_ERROR) without debug data', goawayFrame(9, ErrorCode.NO_ERROR), '000008070000000000' + '00000009' + '00000000'],
    ['GOAWAY(PROTOCOL_ERROR) with its reason', goawayFrame(0, ErrorCode.PROTOCOL_ERROR, 'no'), '00000a070000000000' + '00000000' + '00000001' + '6e6f'],
    ['a DATA frame header', frameHeader(3, FrameType.DATA, Flag.END_STREAM, 1), '000003000100000001'],
  ])('serializes %s', (_name, frame, octets) => {
    expect(hex(frame)).toBe(octets);
  });

  it.each([
    ['a small block in one HEADERS with END_STREAM', 5, true, 16384, [[1, Flag.END_STREAM | Flag.END_HEADERS, 3, 'aaaaaaaaaa']]],
    ['an empty block', 0, false, 16384, [[1, Flag.END_HEADERS, 3, '']]],
    ['a block of exactly the max frame size', 4, false, 4, [[1, Flag.END_HEADERS, 3, 'aaaaaaaa']]],
    [
      'a block over the max frame size, in HEADERS and CONTINUATIONs',
      9,
      true,
      4,
      [
        [1, Flag.END_STREAM, 3, 'aaaaaaaa'],
        [9, 0, 3, 'aaaaaaaa'],
        [9, Flag.END_HEADERS, 3, 'aa'],
      ],
    ],
  ] as const)('splits a field block: %s', (_name, length, endStream, maxFrameSize, expected) => {
    expect(frames(headersFrames(3, Buffer.alloc(length, 0xaa), endStream, maxFrameSize))).toEqual(expected);
  });

  it.each([
    ['no PADDED flag: the payload as it is', '010203', 0, '010203'],
    ['padding removed', '02aabb0000', Flag.PADDED, 'aabb'],
    ['a zero pad length', '00aa', Flag.PADDED, 'aa'],
    ['only the pad length octet', '00', Flag.PADDED, ''],
    ['padding filling all after the pad length octet', '01aa', Flag.PADDED, ''],
  ])('unpads %s', (_name, payload, flags, expected) => {
    const inner = unpadded(Buffer.from(payload, 'hex'), flags);
    expect(inner).toBeInstanceOf(Buffer);
    expect(hex(inner as Buffer)).toBe(expected);
  });

  it.each([
    ['an empty PADDED payload', '', Flag.PADDED],
    ['a pad length equal to the payload', '02aa', Flag.PADDED],
    ['a pad length over the payload', '05aa', Flag.PADDED],
  ])('refuses %s as a PROTOCOL_ERROR', (_name, payload, flags) => {
    const inner = unpadded(Buffer.from(payload, 'hex'), flags);
    expect(inner).toBeInstanceOf(ProtocolViolation);
    expect((inner as ProtocolViolation).code).toBe(ErrorCode.PROTOCOL_ERROR);
  });

  it.each([
    ['neither flag', '8284', 0, '8284'],
    ['PRIORITY: 5 octets of dependency and weight dropped', '800000030f8284', Flag.PRIORITY, '8284'],
    ['PADDED and PRIORITY', '01800000030f8284ee', Flag.PRIORITY | Flag.PADDED, '8284'],
  ])('takes the field block fragment out of HEADERS with %s', (_name, payload, flags, expected) => {
    expect(hex(headersFragment(Buffer.from(payload, 'hex'), flags) as Buffer)).toBe(expected);
  });

  it('refuses a HEADERS with PRIORITY and no room for its priority fields', () => {
    expect((headersFragment(Buffer.from('0000', 'hex'), Flag.PRIORITY) as ProtocolViolation).code).toBe(ErrorCode.FRAME_SIZE_ERROR);
  });

  it.each([
    ['none', '', []],
    ['two, one unknown', '000400010000' + '00ff00000007', [[4, 65536], [0xff, 7]]],
  ])('parses SETTINGS: %s', (_name, payload, expected) => {
    expect(parseSettings(Buffer.from(payload, 'hex'))).toEqual(expected);
  });

  it('refuses a SETTINGS payload that is not a multiple of 6 as a FRAME_SIZE_ERROR', () => {
    expect((parseSettings(Buffer.alloc(7)) as ProtocolViolation).code).toBe(ErrorCode.FRAME_SIZE_ERROR);
  });

  it('parses GOAWAY, dropping the reserved bit, and refuses one under 8 octets', () => {
    expect(parseGoaway(Buffer.from('8000000b000000026869', 'hex'))).toEqual({ lastStreamId: 11, code: 2, debug: 'hi' });
    expect((parseGoaway(Buffer.alloc(7)) as ProtocolViolation).code).toBe(ErrorCode.FRAME_SIZE_ERROR);
  });

  it.each([
    [ErrorCode.ENHANCE_YOUR_CALM, 'ENHANCE_YOUR_CALM'],
    [0x55, '0x55'],
  ])('names error code %i %s', (code, name) => {
    expect(errorCodeName(code)).toBe(name);
  });
});
