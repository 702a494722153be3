// `modelplane-affinity ext-proc`: the command that runs the prefix hasher.
import { setFlagsFromString } from 'node:v8';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { integerBetween, parsePort } from '../bin/options.ts';
import { PREFIX_BYTES_MAX, PREFIX_BYTES_MIN, PREFIX_KEY_DEFAULT } from '../src/affinity.ts';
import { PREFIX_KEYS, type PrefixKey } from '../src/model-service.ts';
import { createLogger } from '../src/logger.ts';
import { MODEL_HEADER } from '../src/ai-gateway.ts';
import { parseModelFlag } from '../src/gateway-hasher.ts';
import type { KeySettings } from './handlers.ts';

function collectModelFlag(raw: string, models: Map<string, KeySettings>): Map<string, KeySettings> {
  const parsed = parseModelFlag(raw, { min: PREFIX_BYTES_MIN, max: PREFIX_BYTES_MAX });
  if (!parsed.ok) throw new InvalidArgumentError(parsed.message);
  const { model, prefixKey, prefixBytes } = parsed.settings;
  if (models.has(model)) throw new InvalidArgumentError(`model ${model} is given twice`);
  return new Map([...models, [model, { prefixKey, prefixBytes }]]);
}

export function registerExtProcCommand(program: Command): Command {
  return program
    .command('ext-proc')
    .description('run the ext_proc prefix hasher: sets x-prompt-hash to XXH64 of the conversation\'s opening (or of the first N body bytes)')
    .requiredOption('--port <port>', 'gRPC port (plaintext HTTP/2)', parsePort, 9002)
    .option(
      '--prefix-bytes <n>',
      `bytes hashed, of the first user message or of the body (${PREFIX_BYTES_MIN}..${PREFIX_BYTES_MAX}); required unless --model is given`,
      integerBetween(PREFIX_BYTES_MIN, PREFIX_BYTES_MAX),
    )
    .option(
      '--model <model=key:bytes>',
      `a Gateway-level hasher's settings for one ${MODEL_HEADER} value, e.g. default/llama=Conversation:1024 (repeatable); with any, requests are keyed by their model's settings and other models' are not hashed`,
      collectModelFlag,
      new Map<string, KeySettings>(),
    )
    .addOption(
      new Option('--prefix-key <key>', 'Conversation: the opening of the conversation read from the JSON request; Body: the raw body bytes')
        .choices(PREFIX_KEYS)
        .default(PREFIX_KEY_DEFAULT),
    )
    .option('--metrics-port <port>', 'Prometheus /metrics port', parsePort, 9090)
    .option('--host <address>', 'address to listen on', '0.0.0.0')
    .hook('preAction', (command) => {
      const { prefixBytes, model } = command.opts<{ prefixBytes?: number; model: Map<string, KeySettings> }>();
      if (prefixBytes === undefined && model.size === 0) command.error("error: give --prefix-bytes <n>, or one --model <model=key:bytes> per model for a Gateway-level hasher");
    })
    .action(async (options: { port: number; prefixBytes?: number; prefixKey: PrefixKey; model: Map<string, KeySettings>; metricsPort: number; host: string }) => {
      const { model, ...rest } = options;
      // Streams die young, but under load V8's allocation-site pretenuring
      // sees stream objects survive a scavenge and starts allocating them in
      // the old generation, where only mark-compacts free them: 4x the bytes
      // promoted, scavenge pauses twice as long, 3x the mark-compacts
      // (bench/RESULTS.md). Node refuses this flag in NODE_OPTIONS, so the
      // command sets it before the server allocates anything.
      setFlagsFromString('--no-allocation-site-pretenuring');
      // Loaded only when this command runs: other commands need neither gRPC nor the Envoy protos.
      const { runExtProc } = await import('./signals.ts');
      await runExtProc({ ...rest, ...(model.size > 0 ? { models: model } : {}), logger: createLogger('ext-proc') });
    });
}
