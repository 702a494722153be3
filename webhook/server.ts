// HTTPS only: the API server calls webhooks over TLS, and the serving pair is
// reloaded from --cert-dir whenever it changes.
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Readiness } from '../src/readiness.ts';
import { createWebhookApp } from './app.ts';
import { readCertificatePair, watchCertificates } from './certificates.ts';
import { createWebhookMetrics, type WebhookMetrics } from './metrics.ts';

export interface WebhookServerOptions {
  port: number;
  host?: string;
  certDir: string;
  logger: Logger;
  metrics?: WebhookMetrics;
  readiness?: () => Readiness;
}

export interface RunningWebhook {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<RunningWebhook> {
  const { logger, certDir } = options;
  const metrics = options.metrics ?? createWebhookMetrics();
  const app = createWebhookApp({ logger, metrics, ...(options.readiness ? { readiness: options.readiness } : {}) });
  const pair = await readCertificatePair(certDir);
  const server = createServer({ ...pair, minVersion: 'TLSv1.2' }, app);
  // The API server keeps connections open between admissions; keep them longer than its idle timeout.
  server.keepAliveTimeout = 90_000;
  server.on('secureConnection', () => metrics.connections.inc());
  const watcher = watchCertificates(
    certDir,
    (next) => {
      server.setSecureContext({ ...next, minVersion: 'TLSv1.2' });
      logger.info({ certDir }, 'serving certificate reloaded');
    },
    (error) => logger.error({ certDir, error: error.message }, 'serving certificate could not be reloaded; keeping the previous one'),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  logger.info({ port, certDir }, 'admission webhook listening (HTTPS)');
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        watcher.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
