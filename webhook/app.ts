// The thin HTTP layer: check the path, cap the body, parse strictly, hand the
// request to the pure `review`, log uid/kind/operation and the outcome.
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { type AdmissionMode, parseAdmissionReview, review, skipReason } from '../src/admission.ts';
import { type Readiness, readinessBody } from '../src/readiness.ts';
import type { WebhookMetrics } from './metrics.ts';

/** The API server sends at most ~3 MiB per object; anything larger is not an AdmissionReview we want. */
export const MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface WebhookAppOptions {
  logger: Logger;
  metrics: WebhookMetrics;
  /** Readiness beyond serving (the reconciler's informers in `manager`); the webhook alone is ready once it listens. */
  readiness?: () => Readiness;
}

export function createWebhookApp({ logger, metrics, readiness }: WebhookAppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  const admissionHandler = (mode: AdmissionMode) => (req: Request, res: Response) => {
    const stopTimer = metrics.duration.startTimer({ path: mode });
    const parsed = parseAdmissionReview(req.body);
    if (!parsed.ok) {
      metrics.requests.inc({ path: mode, result: 'malformed' });
      logger.warn({ path: req.path, error: parsed.error }, 'malformed AdmissionReview');
      res.status(400).json({ error: parsed.error });
      stopTimer();
      return;
    }
    const { request } = parsed;
    const reply = review(request, mode);
    const skipped = skipReason(request);
    const result =
      skipped !== undefined ? 'skipped' : !reply.response.allowed ? 'denied' : reply.response.patch ? 'patched' : 'allowed';
    metrics.requests.inc({ path: mode, result });
    const context = { uid: request.uid, kind: request.kind.kind, operation: request.operation, name: request.name, namespace: request.namespace, mode, result };
    if (result === 'denied') logger.info({ ...context, message: reply.response.status?.message }, 'admission denied');
    else logger.debug({ ...context, reason: skipped }, 'admission answered');
    res.json(reply);
    stopTimer();
  };

  app.post('/mutate', express.json({ limit: MAX_BODY_BYTES }), admissionHandler('mutate'));
  app.post('/validate', express.json({ limit: MAX_BODY_BYTES }), admissionHandler('validate'));
  app.get('/healthz', (_req, res) => void res.type('text/plain').send('ok'));
  app.get('/readyz', (_req, res) => {
    const r = readiness?.() ?? { ready: true, checks: [] };
    res.status(r.ready ? 200 : 503).type('text/plain').send(readinessBody(r));
  });
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.use((_req, res) => void res.status(404).json({ error: 'not found: use POST /mutate, POST /validate, GET /healthz, /readyz or /metrics' }));

  // body-parser errors (bad JSON, too large, wrong charset) become JSON 4xx answers, never a crash.
  app.use((error: Error & { status?: number; type?: string }, req: Request, res: Response, _next: NextFunction) => {
    const status = error.status !== undefined && error.status >= 400 && error.status < 500 ? error.status : 500;
    const message = status === 413 ? `body larger than ${MAX_BODY_BYTES} bytes` : error.message;
    metrics.requests.inc({ path: req.path.replace(/^\//, ''), result: 'malformed' });
    logger.warn({ path: req.path, status, error: message }, 'rejected request');
    res.status(status).json({ error: status === 500 ? 'internal error' : message });
  });
  return app;
}
