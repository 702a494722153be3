// The README's main command must work: run the quickstart end to end.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT } from './testbed/go-tools.ts';

it('the quickstart runs end to end and shows every step', async () => {
  const { code, stdout } = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'quickstart', 'quickstart.ts')], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 }, (error, out) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout: out }),
    );
  });
  expect(code, stdout).toBe(0);
  for (const text of [
    'REJECTED examples/invalid.yaml',
    'spec.affinity.sessionHeader: Required value: required when type is Session',
    'ACCEPTED examples/prefix-hash.yaml',
    'affinity.modelplane.ai/ext-proc: kimi-k2-prefix-hash',
    'FailoverLimited',
    'envoyExtensionPolicies/kimi-k2-prefix-hash: Accepted=True',
    'hashes header: x-prompt-hash',
    'hashes header: X-Session-ID',
    'request body BUFFERED_PARTIAL, fail open: true',
    'after the hasher: x-prompt-hash: 2d3936b6776207ef',
    "kimi-k2 (PrefixHash): 20 conversations x 5 turns: 80/80 later turns on turn 1's cluster, 100% warm",
    "llama-70b (Session): 20 conversations x 5 turns: 80/80 later turns on turn 1's cluster, 100% warm",
    'a client-sent x-prompt-hash: client-chosen changes nothing',
    'everything started here has been stopped and removed',
  ]) {
    expect(stdout).toContain(text);
  }
}, 660_000);
