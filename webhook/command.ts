import { type Command, InvalidArgumentError } from 'commander';
import { createLogger } from '../src/logger.ts';

export function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`port must be 0..65535, got ${JSON.stringify(value)}`);
  return port;
}

/** Stops `close` on SIGTERM/SIGINT, then exits. */
export function exitOnSignal(close: () => Promise<void>): void {
  const handler = (signal: string) => {
    void close().finally(() => process.exit(signal === 'SIGINT' ? 130 : 0));
  };
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
}

export function registerWebhookCommand(program: Command): void {
  program
    .command('webhook')
    .description('Serve the admission webhook (HTTPS; /mutate, /validate, /healthz, /readyz, /metrics)')
    .option('--port <port>', 'HTTPS port', parsePort, 9443)
    .option('--host <address>', 'address to listen on', '0.0.0.0')
    .requiredOption('--cert-dir <dir>', 'folder with tls.crt and tls.key (reloaded when they change)')
    .action(async (opts: { port: number; host: string; certDir: string }) => {
      const logger = createLogger('webhook');
      const { startWebhookServer } = await import('./server.ts');
      const webhook = await startWebhookServer({ port: opts.port, host: opts.host, certDir: opts.certDir, logger });
      exitOnSignal(() => webhook.close());
    });
}
