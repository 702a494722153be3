// `modelplane-affinity reconcile` and `manager` (webhook + reconciler in one process).
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { type Command, Option } from 'commander';
import type { Logger } from 'pino';
import { createLogger } from '../src/logger.ts';
import { DEFAULT_EXT_PROC_IMAGE } from '../src/render.ts';
import { exitOnSignal, integerBetween, parseDuration, parsePort } from '../bin/options.ts';
import { DEFAULT_WORKERS } from './queue.ts';
// The Kubernetes client and the servers load only when their command runs, so
// each process carries only the code of its own command.

interface ReconcileFlags {
  extProcImage: string;
  leaderElect: boolean;
  leaderElectionNamespace?: string;
  leaderElectionId: string;
  leaseDuration: number;
  renewDeadline: number;
  retryPeriod: number;
  workers: number;
}

function addReconcileOptions(command: Command): Command {
  return command
    .addOption(new Option('--ext-proc-image <image>', 'image for the generated ext_proc Deployments').env('MODELPLANE_AFFINITY_EXT_PROC_IMAGE').default(DEFAULT_EXT_PROC_IMAGE))
    .option('--no-leader-elect', 'run without leader election (only one replica may run)')
    .addOption(new Option('--leader-election-namespace <ns>', 'namespace of the Lease (default: the pod namespace, else default)').env('POD_NAMESPACE'))
    .option('--leader-election-id <name>', 'name of the Lease', 'modelplane-affinity')
    .option('--lease-duration <duration>', 'how long a lease is valid without renewal', parseDuration, 15_000)
    .option('--renew-deadline <duration>', 'how long the leader retries renewing before it steps down', parseDuration, 10_000)
    .option('--retry-period <duration>', 'interval between acquire/renew attempts', parseDuration, 2_000)
    .option('--workers <n>', 'concurrent reconciles', integerBetween(1, 64), DEFAULT_WORKERS);
}

function inClusterNamespace(): string | undefined {
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Starts the reconciler behind leader election; returns a stop function. */
export async function runReconciler(flags: ReconcileFlags, logger: Logger, onReady: (ready: boolean) => void = () => undefined): Promise<() => Promise<void>> {
  const [{ loadClusterAccess }, { Reconciler }, { KubeClient }, { LeaderElector }] = await Promise.all([
    import('./cluster-access.ts'),
    import('./controller.ts'),
    import('./kube.ts'),
    import('./leader.ts'),
  ]);
  const access = await loadClusterAccess();
  logger.info({ server: access.server.origin, credentials: access.source }, 'connecting to the Kubernetes API');
  const client = new KubeClient(access);
  const reconciler = new Reconciler(client, { extProcImage: flags.extProcImage, logger, workers: flags.workers });
  if (!flags.leaderElect) {
    await reconciler.start();
    onReady(true);
    return async () => {
      await reconciler.stop();
      client.close();
    };
  }
  const elector = new LeaderElector(client, {
    namespace: flags.leaderElectionNamespace ?? inClusterNamespace() ?? 'default',
    name: flags.leaderElectionId,
    identity: `${process.env.HOSTNAME ?? hostname()}_${randomBytes(4).toString('hex')}`,
    leaseDurationMs: flags.leaseDuration,
    renewDeadlineMs: flags.renewDeadline,
    retryPeriodMs: flags.retryPeriod,
    logger,
  });
  void elector.run(
    () => void reconciler.start().then(() => onReady(true)),
    () => {
      // Another replica may already be writing: stop at once, let Kubernetes restart us.
      process.exit(1);
    },
  );
  return async () => {
    await reconciler.stop();
    await elector.stop();
    client.close();
  };
}

export function registerReconcileCommands(program: Command): void {
  addReconcileOptions(program.command('reconcile').description('Run the reconciler: keep the Envoy Gateway objects of every ModelService in sync')).action(
    async (flags: ReconcileFlags) => {
      const logger = createLogger('reconciler');
      exitOnSignal(await runReconciler(flags, logger));
    },
  );

  addReconcileOptions(
    program
      .command('manager')
      .description('Run the admission webhook and the reconciler in one process (what the install runs)')
      .option('--port <port>', 'webhook HTTPS port', parsePort, 9443)
      .option('--host <address>', 'address to listen on', '0.0.0.0')
      .requiredOption('--cert-dir <dir>', 'folder with tls.crt and tls.key (reloaded when they change)'),
  ).action(async (flags: ReconcileFlags & { port: number; host: string; certDir: string }) => {
    const logger = createLogger('manager');
    // Every replica serves admission; only the leader reconciles. Readiness does not wait for leadership.
    const { startWebhookServer } = await import('../webhook/server.ts');
    const webhook = await startWebhookServer({ port: flags.port, host: flags.host, certDir: flags.certDir, logger });
    const stopReconciler = await runReconciler(flags, logger);
    exitOnSignal(async () => {
      await stopReconciler();
      await webhook.close();
    });
  });
}
