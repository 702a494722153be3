// What the ext-proc command runs: the server, drained on SIGTERM (the
// kubelet's stop) and SIGINT, then the process exits.
import { startExtProc, type ExtProcOptions, type ExtProcServer } from './server.ts';

/** startExtProc, plus draining on SIGTERM and SIGINT: what the command runs. */
export async function runExtProc(options: ExtProcOptions): Promise<ExtProcServer> {
  const server = await startExtProc(options);
  const onSignal = (): void => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    void server.drain().then(() => process.exit(0));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return server;
}
