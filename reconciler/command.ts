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
import { DEFAULT_WATCH_FAILURE_BOUND_MS, type Readiness, STANDBY, STARTING } from '../src/readiness.ts';
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
  watchFailureBound: number;
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
    .option('--workers <n>', 'concurrent reconciles', integerBetween(1, 64), DEFAULT_WORKERS)
    .option('--watch-failure-bound <duration>', '/readyz turns not ready when a list or watch has failed for longer than this', parseDuration, DEFAULT_WATCH_FAILURE_BOUND_MS);
}

function inClusterNamespace(): string | undefined {
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim();
  } catch {
    return undefined;
  }
}

export interface RunningReconciler {
  stop(): Promise<void>;
  /** What /readyz says: a standby is ready; the leader (or the only replica) once its informers have synced. */
  readiness(): Readiness;
}

/** Starts the reconciler behind leader election. */
export async function runReconciler(flags: ReconcileFlags, logger: Logger): Promise<RunningReconciler> {
  const [{ loadClusterAccess }, { Reconciler }, { KubeClient }, { LeaderElector }, { Writer }] = await Promise.all([
    import('./cluster-access.ts'),
    import('./controller.ts'),
    import('./kube.ts'),
    import('./leader.ts'),
    import('./writer.ts'),
  ]);
  const access = await loadClusterAccess();
  logger.info({ server: access.server.origin, credentials: access.source }, 'connecting to the Kubernetes API');
  const client = new KubeClient(access);
  const writer = new Writer(client, { logger });
  const reconciler = new Reconciler(client, writer, { extProcImage: flags.extProcImage, logger, workers: flags.workers, watchFailureBoundMs: flags.watchFailureBound });
  if (!flags.leaderElect) {
    await reconciler.start();
    return {
      readiness: () => reconciler.readiness(),
      stop: async () => {
        await reconciler.stop();
        client.close();
      },
    };
  }
  const elector = new LeaderElector(client, writer, {
    namespace: flags.leaderElectionNamespace ?? inClusterNamespace() ?? 'default',
    name: flags.leaderElectionId,
    identity: `${process.env.HOSTNAME ?? hostname()}_${randomBytes(4).toString('hex')}`,
    leaseDurationMs: flags.leaseDuration,
    renewDeadlineMs: flags.renewDeadline,
    retryPeriodMs: flags.retryPeriod,
    logger,
  });
  void elector.run(
    () => void reconciler.start(),
    () => {
      // Another replica may already be writing: stop at once, let Kubernetes restart us.
      process.exit(1);
    },
  );
  return {
    readiness: () => (elector.isLeader() ? reconciler.readiness() : STANDBY),
    stop: async () => {
      await reconciler.stop();
      await elector.stop();
      client.close();
    },
  };
}

export function registerReconcileCommands(program: Command): void {
  addReconcileOptions(program.command('reconcile').description('Run the reconciler: keep the Envoy Gateway objects of every ModelService in sync'))
    .option('--health-port <port>', 'serve /healthz and /readyz over HTTP on this port (none when absent)', parsePort)
    .option('--health-host <address>', 'address of the health endpoints', '0.0.0.0')
    .action(async (flags: ReconcileFlags & { healthPort?: number; healthHost: string }) => {
      const logger = createLogger('reconciler');
      const reconciler = await runReconciler(flags, logger);
      const { startHealthServer } = await import('./health.ts');
      const health = flags.healthPort === undefined ? undefined : await startHealthServer({ port: flags.healthPort, host: flags.healthHost, readiness: reconciler.readiness, logger });
      exitOnSignal(async () => {
        await reconciler.stop();
        await health?.close();
      });
    });

  addReconcileOptions(
    program
      .command('manager')
      .description('Run the admission webhook and the reconciler in one process (what the install runs)')
      .option('--port <port>', 'webhook HTTPS port', parsePort, 9443)
      .option('--host <address>', 'address to listen on', '0.0.0.0')
      .requiredOption('--cert-dir <dir>', 'folder with tls.crt and tls.key (reloaded when they change)'),
  ).action(async (flags: ReconcileFlags & { port: number; host: string; certDir: string }) => {
    const logger = createLogger('manager');
    // Every replica serves admission; only the leader reconciles. A standby is
    // ready; the leader once its informers have synced and while they keep up.
    const { startWebhookServer } = await import('../webhook/server.ts');
    let reconciler: RunningReconciler | undefined;
    const webhook = await startWebhookServer({ port: flags.port, host: flags.host, certDir: flags.certDir, logger, readiness: () => reconciler?.readiness() ?? STARTING });
    reconciler = await runReconciler(flags, logger);
    // The lease is released at once (another replica takes over) while the webhook drains.
    exitOnSignal(async () => {
      await Promise.all([reconciler?.stop(), webhook.drain()]);
    });
  });
}
