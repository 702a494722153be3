// `modelplane-affinity ext-proc`: the command that runs the prefix hasher.
import { setFlagsFromString } from 'node:v8';
import { Option, type Command } from 'commander';
import { integerBetween, parsePort } from '../bin/options.ts';
import { PREFIX_BYTES_MAX, PREFIX_BYTES_MIN, PREFIX_KEY_DEFAULT } from '../src/affinity.ts';
import { PREFIX_KEYS, type PrefixKey } from '../src/model-service.ts';
import { createLogger } from '../src/logger.ts';

export function registerExtProcCommand(program: Command): Command {
  return program
    .command('ext-proc')
    .description('run the ext_proc prefix hasher: sets x-prompt-hash to XXH64 of the conversation\'s opening (or of the first N body bytes)')
    .requiredOption('--port <port>', 'gRPC port (plaintext HTTP/2)', parsePort, 9002)
    .requiredOption(
      '--prefix-bytes <n>',
      `bytes hashed, of the first user message or of the body (${PREFIX_BYTES_MIN}..${PREFIX_BYTES_MAX})`,
      integerBetween(PREFIX_BYTES_MIN, PREFIX_BYTES_MAX),
    )
    .addOption(
      new Option('--prefix-key <key>', 'Conversation: the opening of the conversation read from the JSON request; Body: the raw body bytes')
        .choices(PREFIX_KEYS)
        .default(PREFIX_KEY_DEFAULT),
    )
    .option('--metrics-port <port>', 'Prometheus /metrics port', parsePort, 9090)
    .option('--host <address>', 'address to listen on', '0.0.0.0')
    .action(async (options: { port: number; prefixBytes: number; prefixKey: PrefixKey; metricsPort: number; host: string }) => {
      // Streams die young, but under load V8's allocation-site pretenuring
      // sees stream objects survive a scavenge and starts allocating them in
      // the old generation, where only mark-compacts free them: 4x the bytes
      // promoted, scavenge pauses twice as long, 3x the mark-compacts
      // (bench/RESULTS.md). Node refuses this flag in NODE_OPTIONS, so the
      // command sets it before the server allocates anything.
      setFlagsFromString('--no-allocation-site-pretenuring');
      // Loaded only when this command runs: other commands need neither gRPC nor the Envoy protos.
      const { runExtProc } = await import('./signals.ts');
      await runExtProc({ ...options, logger: createLogger('ext-proc') });
    });
}
