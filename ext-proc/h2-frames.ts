// HTTP/2 framing (RFC 9113 §4, §6) as much of it as a server for h2c with
// prior knowledge needs: the constants, the frame header, the payloads a
// server reads, and the frames it writes. Pure: h2-connection.ts does the I/O.

export const CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FRAME_HEADER_LENGTH = 9;
/** The smallest SETTINGS_MAX_FRAME_SIZE and the default; ours, as we never raise it. */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
export const MAX_MAX_FRAME_SIZE = 2 ** 24 - 1;
export const DEFAULT_INITIAL_WINDOW_SIZE = 65_535;
/** The largest flow-control window (§6.9.1). */
export const MAX_WINDOW_SIZE = 2 ** 31 - 1;
/** HPACK's default dynamic table size (SETTINGS_HEADER_TABLE_SIZE). */
export const DEFAULT_HEADER_TABLE_SIZE = 4096;

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const Flag = {
  END_STREAM: 0x1,
  /** SETTINGS and PING. */
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The name of an error code, for messages (codes outside RFC 9113 §7 by number). */
export function errorCodeName(code: number): string {
  return Object.entries(ErrorCode).find(([, value]) => value === code)?.[0] ?? `0x${code.toString(16)}`;
}

export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

export interface FrameHeader {
  /** Payload length (24 bits). */
  length: number;
  type: number;
  flags: number;
  /** The reserved bit is dropped (§4.1: it is ignored on receipt). */
  streamId: number;
}

/** The frame header at `at` (FRAME_HEADER_LENGTH bytes must be there). */
export function parseFrameHeader(buffer: Uint8Array, at = 0): FrameHeader {
  return {
    length: ((buffer[at] as number) << 16) | ((buffer[at + 1] as number) << 8) | (buffer[at + 2] as number),
    type: buffer[at + 3] as number,
    flags: buffer[at + 4] as number,
    streamId: (((buffer[at + 5] as number) & 0x7f) * 2 ** 24) + (((buffer[at + 6] as number) << 16) | ((buffer[at + 7] as number) << 8) | (buffer[at + 8] as number)),
  };
}

function writeFrameHeader(into: Buffer, at: number, length: number, type: number, flags: number, streamId: number): void {
  into[at] = length >>> 16;
  into[at + 1] = (length >>> 8) & 0xff;
  into[at + 2] = length & 0xff;
  into[at + 3] = type;
  into[at + 4] = flags;
  into.writeUInt32BE(streamId, at + 5);
}

/** A frame header alone, for a payload written after it (DATA, without copying the payload). */
export function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.allocUnsafe(FRAME_HEADER_LENGTH);
  writeFrameHeader(header, 0, length, type, flags, streamId);
  return header;
}

/** What a payload parser found wrong, with the error code RFC 9113 gives it. */
export class ProtocolViolation {
  readonly code: ErrorCode;
  readonly message: string;

  constructor(code: ErrorCode, message: string) {
    this.code = code;
    this.message = message;
  }
}

/**
 * The part of a DATA or HEADERS payload inside its padding (§6.1). A pad
 * length that leaves no room is a PROTOCOL_ERROR.
 */
export function unpadded(payload: Buffer, flags: number): Buffer | ProtocolViolation {
  if ((flags & Flag.PADDED) === 0) return payload;
  if (payload.length < 1) return new ProtocolViolation(ErrorCode.PROTOCOL_ERROR, 'a PADDED frame has no pad length octet');
  const padLength = payload[0] as number;
  if (padLength >= payload.length) {
    return new ProtocolViolation(ErrorCode.PROTOCOL_ERROR, `pad length ${padLength} is not less than the ${payload.length}-octet payload (RFC 9113 §6.1)`);
  }
  return payload.subarray(1, payload.length - padLength);
}

/** A HEADERS payload's field block fragment: padding and the priority fields (which we ignore) removed (§6.2). */
export function headersFragment(payload: Buffer, flags: number): Buffer | ProtocolViolation {
  const inner = unpadded(payload, flags);
  if (inner instanceof ProtocolViolation || (flags & Flag.PRIORITY) === 0) return inner;
  if (inner.length < 5) return new ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, `a HEADERS frame with PRIORITY has ${inner.length} octets for the 5 of its priority fields`);
  return inner.subarray(5);
}

/** The (identifier, value) pairs of a SETTINGS payload (§6.5.1), in order; unknown identifiers included. */
export function parseSettings(payload: Buffer): Array<[id: number, value: number]> | ProtocolViolation {
  if (payload.length % 6 !== 0) return new ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, `a SETTINGS payload of ${payload.length} octets is not a multiple of 6`);
  const settings: Array<[number, number]> = [];
  for (let at = 0; at < payload.length; at += 6) settings.push([payload.readUInt16BE(at), payload.readUInt32BE(at + 2)]);
  return settings;
}

/** A SETTINGS frame with these (identifier, value) pairs. */
export function settingsFrame(settings: ReadonlyArray<readonly [id: number, value: number]>): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 6 * settings.length);
  writeFrameHeader(frame, 0, 6 * settings.length, FrameType.SETTINGS, 0, 0);
  settings.forEach(([id, value], i) => {
    frame.writeUInt16BE(id, FRAME_HEADER_LENGTH + 6 * i);
    frame.writeUInt32BE(value, FRAME_HEADER_LENGTH + 6 * i + 2);
  });
  return frame;
}

/** Shared: a frame handed to the socket is never changed. */
export const SETTINGS_ACK: Buffer = frameHeader(0, FrameType.SETTINGS, Flag.ACK, 0);

export function pingAckFrame(opaque: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 8);
  writeFrameHeader(frame, 0, 8, FrameType.PING, Flag.ACK, 0);
  frame.set(opaque.subarray(0, 8), FRAME_HEADER_LENGTH);
  return frame;
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 4);
  writeFrameHeader(frame, 0, 4, FrameType.WINDOW_UPDATE, 0, streamId);
  frame.writeUInt32BE(increment, FRAME_HEADER_LENGTH);
  return frame;
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 4);
  writeFrameHeader(frame, 0, 4, FrameType.RST_STREAM, 0, streamId);
  frame.writeUInt32BE(code, FRAME_HEADER_LENGTH);
  return frame;
}

/** GOAWAY (§6.8); the debug data is the reason in ASCII, for whoever reads the peer's logs. */
export function goawayFrame(lastStreamId: number, code: number, debug = ''): Buffer {
  const data = Buffer.from(debug, 'latin1');
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 8 + data.length);
  writeFrameHeader(frame, 0, 8 + data.length, FrameType.GOAWAY, 0, 0);
  frame.writeUInt32BE(lastStreamId, FRAME_HEADER_LENGTH);
  frame.writeUInt32BE(code, FRAME_HEADER_LENGTH + 4);
  data.copy(frame, FRAME_HEADER_LENGTH + 8);
  return frame;
}

/** The parts of a GOAWAY payload (§6.8); under 8 octets is a FRAME_SIZE_ERROR. */
export function parseGoaway(payload: Buffer): { lastStreamId: number; code: number; debug: string } | ProtocolViolation {
  if (payload.length < 8) return new ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, `a GOAWAY payload of ${payload.length} octets is under its 8`);
  return { lastStreamId: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4), debug: payload.toString('latin1', 8) };
}

/**
 * A field block as one HEADERS frame and as many CONTINUATION frames as the
 * peer's max frame size needs (§6.10), in one buffer. END_STREAM goes on the
 * HEADERS frame, END_HEADERS on the last.
 */
export function headersFrames(streamId: number, block: Uint8Array, endStream: boolean, maxFrameSize: number): Buffer {
  const frames = Math.max(1, Math.ceil(block.length / maxFrameSize));
  const out = Buffer.allocUnsafe(frames * FRAME_HEADER_LENGTH + block.length);
  let at = 0;
  for (let i = 0, from = 0; i < frames; i++, from += maxFrameSize) {
    const length = Math.min(maxFrameSize, block.length - from);
    const flags = (i === 0 && endStream ? Flag.END_STREAM : 0) | (i === frames - 1 ? Flag.END_HEADERS : 0);
    writeFrameHeader(out, at, length, i === 0 ? FrameType.HEADERS : FrameType.CONTINUATION, flags, streamId);
    out.set(block.subarray(from, from + length), at + FRAME_HEADER_LENGTH);
    at += FRAME_HEADER_LENGTH + length;
  }
  return out;
}
