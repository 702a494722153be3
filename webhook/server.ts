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
  /** Stops at once: open connections are cut (tests, and after a drain). */
  close(): Promise<void>;
  /**
   * The SIGTERM path: /readyz fails and every answer says `Connection: close`,
   * so the balancer (kube-proxy, haproxy) moves new connections elsewhere and
   * kept-alive ones end after their current review; once no review has
   * arrived for DRAIN_QUIET_MS the listener closes, in-flight reviews finish
   * (at most DRAIN_TIMEOUT_MS), and then everything closes. Idempotent.
   */
  drain(): Promise<DrainOutcome>;
}

export interface DrainOutcome {
  /** 'quiet': reviews stopped coming; 'bound': DRAIN_TIMEOUT_MS passed first. */
  ended: 'quiet' | 'bound';
  servedWhileDraining: number;
  /** Reviews still unanswered when the drain closed their connections (0 unless the bound was hit). */
  cutInFlight: number;
}

/** A second without a new review: the balancer has noticed /readyz failing and sends nothing more here. */
export const DRAIN_QUIET_MS = 1_000;
/** Bound on the whole drain; the Deployment's grace period (30 s) is longer. */
export const DRAIN_TIMEOUT_MS = 10_000;
const DRAINING: Readiness = { ready: false, checks: ['[-]draining: shutting down, send reviews elsewhere'] };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startWebhookServer(options: WebhookServerOptions): Promise<RunningWebhook> {
  const { logger, certDir } = options;
  const metrics = options.metrics ?? createWebhookMetrics();
  let draining = false;
  let inFlight = 0;
  let lastRequestAt = 0;
  const readiness = options.readiness;
  const app = createWebhookApp({ logger, metrics, readiness: () => (draining ? DRAINING : (readiness?.() ?? { ready: true, checks: [] })) });
  const pair = await readCertificatePair(certDir);
  const server = createServer({ ...pair, minVersion: 'TLSv1.2' }, (req, res) => {
    inFlight++;
    // Only reviews keep a drain open: the balancer's health checks keep coming until the process exits.
    if (req.method === 'POST') lastRequestAt = Date.now();
    res.once('close', () => inFlight--);
    // While draining, each kept-alive connection ends after this answer, so the client's next review opens a connection the balancer sends elsewhere.
    if (draining) res.setHeader('connection', 'close');
    app(req, res);
  });
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
  const close = () =>
    new Promise<void>((resolve) => {
      watcher.close();
      server.close(() => resolve());
      server.closeAllConnections();
    });
  let drained: Promise<DrainOutcome> | undefined;
  const drain = async (): Promise<DrainOutcome> => {
    draining = true;
    const started = Date.now();
    lastRequestAt = Math.max(lastRequestAt, started);
    logger.info({ inFlight }, 'draining: /readyz fails, answers close their connection');
    let served = 0;
    server.on('request', (req: { method?: string }) => void (req.method === 'POST' && served++));
    while (Date.now() - lastRequestAt < DRAIN_QUIET_MS && Date.now() - started < DRAIN_TIMEOUT_MS) await sleep(100);
    const ended = Date.now() - lastRequestAt >= DRAIN_QUIET_MS ? 'quiet' : 'bound';
    // No new connections; idle kept-alive ones closed; the in-flight reviews still get their answers.
    server.close();
    server.closeIdleConnections();
    while (inFlight > 0 && Date.now() - started < DRAIN_TIMEOUT_MS) await sleep(20);
    const outcome: DrainOutcome = { ended, servedWhileDraining: served, cutInFlight: inFlight };
    logger.info({ ...outcome, ms: Date.now() - started }, 'drained');
    await close();
    return outcome;
  };
  return { server, port, close, drain: () => (drained ??= drain()) };
}
