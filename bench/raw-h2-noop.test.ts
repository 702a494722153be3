import type { AddressInfo } from 'node:net';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectExtProc, playRequest, type ExtProcClient } from '../ext-proc/envoy-harness.ts';
import { CHAT_REQUEST_HEADERS } from './h2load.ts';
import { rawNoopServer } from './raw-h2-noop.ts';

describe("the do-nothing ext_proc on the hasher's own HTTP/2 framing", () => {
  const server = rawNoopServer();
  let client: ExtProcClient;
  beforeAll(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    client = connectExtProc(`127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  afterAll(() => {
    client.close();
    server.close();
  });

  it('answers a grpc-js client\'s request headers and body with CONTINUE each and ends the call OK', async () => {
    const played = await playRequest(client, { headers: CHAT_REQUEST_HEADERS, body: Buffer.alloc(4096, 'a') });
    expect(played.answers.map((a) => [a.request_headers?.response?.status, a.request_body?.response?.status])).toEqual([['CONTINUE', undefined], [undefined, 'CONTINUE']]);
    expect(played.status.code).toBe(status.OK);
  });

  it('serves streams in parallel whose bodies span DATA frames and windows (100 × 100 KiB: past the 65,535-byte default window)', async () => {
    const played = await Promise.all(Array.from({ length: 100 }, () => playRequest(client, { headers: CHAT_REQUEST_HEADERS, body: Buffer.alloc(100 * 1024, 'b') })));
    expect(played.map((p) => p.status.code)).toEqual(played.map(() => status.OK));
    expect(played.every((p) => p.answers[1]?.request_body?.response?.status === 'CONTINUE')).toBe(true);
  });
});
