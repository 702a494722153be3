// The Envoy side of ext_proc, for tests and the benchmark: a grpc-js client on
// the same proto definitions that sends what Envoy's ext_proc filter sends
// (one message, then wait for its answer) and applies header mutations the
// way Envoy does (removals first, then sets; raw_value is the value).
import * as grpc from '@grpc/grpc-js';
import { processMethod, type HeaderMutation, type ProcessingRequest, type ProcessingResponse } from './protocol.ts';

type Process = () => grpc.ClientDuplexStream<unknown, ProcessingResponse>;
export type ExtProcClient = grpc.Client & { Process: Process };

/**
 * A client for ExternalProcessor/Process. With rawRequests, what is written
 * is sent as given (a Buffer), so tests can send bytes that are no protobuf.
 */
export function connectExtProc(address: string, options: { rawRequests?: boolean; channel?: grpc.ChannelOptions } = {}): ExtProcClient {
  const method = processMethod();
  const definition = options.rawRequests ? { ...method, requestSerialize: (bytes: Buffer) => bytes } : method;
  const Client = grpc.makeGenericClientConstructor({ Process: definition }, 'ExternalProcessor');
  return new Client(address, grpc.credentials.createInsecure(), options.channel) as unknown as ExtProcClient;
}

/** One ext_proc stream driven one message at a time, as Envoy drives it. */
export class EnvoyStream {
  readonly call: grpc.ClientDuplexStream<unknown, ProcessingResponse>;
  readonly status: Promise<grpc.StatusObject>;
  private readonly answers: ProcessingResponse[] = [];
  private readonly waiting: Array<(answer: ProcessingResponse | undefined) => void> = [];
  private over = false;

  constructor(client: ExtProcClient) {
    this.call = client.Process();
    this.call.on('data', (answer: ProcessingResponse) => {
      const waiter = this.waiting.shift();
      if (waiter) waiter(answer);
      else this.answers.push(answer);
    });
    this.status = new Promise((resolve) => {
      this.call.on('status', (status: grpc.StatusObject) => {
        this.over = true;
        for (const waiter of this.waiting.splice(0)) waiter(undefined);
        resolve(status);
      });
    });
    // The status event carries errors; without this listener they would throw.
    this.call.on('error', () => {});
  }

  /** Sends one message and waits for its answer; undefined when the stream ended instead. */
  send(message: ProcessingRequest | Buffer): Promise<ProcessingResponse | undefined> {
    this.call.write(message);
    return this.next();
  }

  next(): Promise<ProcessingResponse | undefined> {
    const queued = this.answers.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.over) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Envoy closes its side once the request needs nothing more. */
  halfClose(): void {
    this.call.end();
  }

  /** Envoy resets the stream when the HTTP request is abandoned. */
  reset(): void {
    this.call.cancel();
  }
}

export type HeaderList = Array<[name: string, value: string]>;

export function headersMessage(headers: HeaderList, endOfStream: boolean): ProcessingRequest {
  return {
    request_headers: {
      // Envoy sends header values in raw_value (send_header_raw_value).
      headers: { headers: headers.map(([key, value]) => ({ key, raw_value: Buffer.from(value, 'latin1') })) },
      end_of_stream: endOfStream,
    },
  };
}

export function bodyMessage(body: Uint8Array, endOfStream: boolean): ProcessingRequest {
  return { request_body: { body, end_of_stream: endOfStream } };
}

export class MutationRejected extends Error {}

/**
 * Applies a HeaderMutation to request headers the way Envoy's ext_proc filter
 * does: removals (names lowercased), then sets, whose value is raw_value; a
 * HeaderValue with both value and raw_value is rejected.
 */
export function applyHeaderMutation(headers: HeaderList, mutation: HeaderMutation | undefined): HeaderList {
  if (mutation === undefined) return headers;
  let out = headers.map(([name, value]): [string, string] => [name.toLowerCase(), value]);
  for (const name of mutation.remove_headers ?? []) out = out.filter(([have]) => have !== name.toLowerCase());
  for (const option of mutation.set_headers ?? []) {
    const header = option.header;
    if (header === undefined) continue;
    const raw = header.raw_value === undefined ? '' : Buffer.from(header.raw_value).toString('latin1');
    if ((header.value ?? '') !== '' && raw !== '') throw new MutationRejected('Only one of value or raw_value in the HeaderValue message should be set.');
    const name = (header.key ?? '').toLowerCase();
    const exists = out.some(([have]) => have === name);
    switch (option.append_action ?? 'APPEND_IF_EXISTS_OR_ADD') {
      case 'APPEND_IF_EXISTS_OR_ADD':
        out.push([name, raw]);
        break;
      case 'ADD_IF_ABSENT':
        if (!exists) out.push([name, raw]);
        break;
      case 'OVERWRITE_IF_EXISTS_OR_ADD':
        out = [...out.filter(([have]) => have !== name), [name, raw]];
        break;
      case 'OVERWRITE_IF_EXISTS':
        if (exists) out = [...out.filter(([have]) => have !== name), [name, raw]];
        break;
    }
  }
  return out;
}

export interface PlayedRequest {
  /** The request headers as the router sees them after every mutation. */
  headers: HeaderList;
  answers: ProcessingResponse[];
  status: grpc.StatusObject;
}

/**
 * Plays one HTTP request the way Envoy Gateway's ext_proc filter does with
 * request headers SEND and body BufferedPartial: the headers (end_of_stream
 * when there is no body), the answer, then one body message and its answer,
 * then a half-close once the request needs nothing more.
 */
export async function playRequest(
  client: ExtProcClient,
  request: { headers: HeaderList; body?: Uint8Array | undefined; bodyEndOfStream?: boolean },
): Promise<PlayedRequest> {
  const stream = new EnvoyStream(client);
  const answers: ProcessingResponse[] = [];
  let headers = request.headers;
  const headersAnswer = await stream.send(headersMessage(request.headers, request.body === undefined));
  if (headersAnswer?.request_headers === undefined) throw new Error(`expected a request_headers answer, got ${JSON.stringify(headersAnswer)}`);
  answers.push(headersAnswer);
  headers = applyHeaderMutation(headers, headersAnswer.request_headers.response?.header_mutation);
  if (request.body !== undefined) {
    const bodyAnswer = await stream.send(bodyMessage(request.body, request.bodyEndOfStream ?? true));
    if (bodyAnswer?.request_body === undefined) throw new Error(`expected a request_body answer, got ${JSON.stringify(bodyAnswer)}`);
    answers.push(bodyAnswer);
    headers = applyHeaderMutation(headers, bodyAnswer.request_body.response?.header_mutation);
  }
  stream.halfClose();
  return { headers, answers, status: await stream.status };
}

/** Every value of a header, in order (names compared case-insensitively). */
export function headerValues(headers: HeaderList, name: string): string[] {
  return headers.filter(([have]) => have.toLowerCase() === name.toLowerCase()).map(([, value]) => value);
}
