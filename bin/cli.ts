// The `modelplane-affinity` command line (SPEC §5). Each subcommand lives with
// its I/O shell and registers itself here.
import { Command } from 'commander';
import { registerExtProcCommand } from '../ext-proc/command.ts';
import { registerReconcileCommands } from '../reconciler/command.ts';
import { registerWebhookCommand } from '../webhook/command.ts';
import { registerRenderCommand } from './render-command.ts';

export function buildProgram(): Command {
  const program = new Command('modelplane-affinity')
    .description('Cluster-granular KV-cache affinity for Modelplane ModelServices on Envoy Gateway')
    .showHelpAfterError()
    .exitOverride();
  registerWebhookCommand(program);
  registerReconcileCommands(program);
  registerRenderCommand(program);
  registerExtProcCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    const code = (error as { exitCode?: number }).exitCode;
    if (typeof code === 'number') process.exit(code);
    process.stderr.write(`modelplane-affinity: ${(error as Error).message}\n`);
    process.exit(1);
  }
}
