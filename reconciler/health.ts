// /healthz and /readyz of `reconcile` over plain HTTP (the kubelet's probes;
// `manager` answers them on the webhook's HTTPS port instead).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { type Readiness, readinessBody } from '../src/readiness.ts';

export interface HealthServer {
  port: number;
  close(): Promise<void>;
}

export async function startHealthServer(options: { port: number; host: string; readiness: () => Readiness; logger: Logger }): Promise<HealthServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method === 'GET' && path === '/healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    if (req.method === 'GET' && path === '/readyz') {
      const r = options.readiness();
      return void res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(readinessBody(r));
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: use GET /healthz or /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  options.logger.info({ port, host: options.host }, 'health endpoints listening (HTTP): /healthz, /readyz');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
