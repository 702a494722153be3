import type { Command } from 'commander';
import { exitOnSignal, parsePort } from '../bin/options.ts';
import { createLogger } from '../src/logger.ts';

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
      exitOnSignal(async () => void (await webhook.drain()));
    });
}
