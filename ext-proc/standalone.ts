// Runs only the ext-proc command, with the same arguments as the full CLI
// (`standalone.ts ext-proc --port 9002 --prefix-bytes 1024`). The tests and
// the benchmark start the hasher through it.
import { Command } from 'commander';
import { registerExtProcCommand } from './command.ts';

const program = new Command('modelplane-affinity');
registerExtProcCommand(program);
await program.parseAsync(process.argv);
