// Builds the Go binaries the test bed runs (kube-apiserver, kubectl, etcd,
// egctl, ...) from the small tools modules under tools/, and caches them under
// ~/.cache/modelplane-affinity/<module>-<hash of go.mod, go.sum and build
// recipe>/bin. A cold build of Kubernetes takes many minutes on 2 cores, so it
// prints progress; a warm one costs a hash and a stat.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
export const CACHE_ROOT = process.env.MODELPLANE_AFFINITY_CACHE ?? join(homedir(), '.cache', 'modelplane-affinity');

export interface GoBinary {
  /** File name under bin/. */
  name: string;
  /** Go package path, built from the tools module's pinned versions. */
  pkg: string;
}

export interface GoToolsModule {
  /** Folder under tools/ holding go.mod and go.sum. */
  module: string;
  binaries: GoBinary[];
  ldflags?: string;
}

const KUBE_VERSION = 'v1.36.3';

export const KUBE_TOOLS: GoToolsModule = {
  module: 'kube',
  binaries: [
    { name: 'kube-apiserver', pkg: 'k8s.io/kubernetes/cmd/kube-apiserver' },
    { name: 'kubectl', pkg: 'k8s.io/kubernetes/cmd/kubectl' },
    { name: 'kube-controller-manager', pkg: 'k8s.io/kubernetes/cmd/kube-controller-manager' },
  ],
  // Without these the binaries report v0.0.0-master and kubectl warns about version skew.
  ldflags: [
    `-X k8s.io/component-base/version.gitVersion=${KUBE_VERSION}`,
    `-X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION}`,
    '-X k8s.io/component-base/version.gitMajor=1',
    '-X k8s.io/component-base/version.gitMinor=36',
  ].join(' '),
};

export const ETCD_TOOLS: GoToolsModule = {
  module: 'etcd',
  binaries: [{ name: 'etcd', pkg: 'go.etcd.io/etcd/server/v3' }],
};

export const GATEWAY_TOOLS: GoToolsModule = {
  module: 'gateway',
  binaries: [
    { name: 'egctl', pkg: 'github.com/envoyproxy/gateway/cmd/egctl' },
    { name: 'envoy-gateway', pkg: 'github.com/envoyproxy/gateway/cmd/envoy-gateway' },
  ],
};

/**
 * Envoy AI Gateway's controller (with its Envoy Gateway extension server) and its
 * router-level ext_proc, run as host processes beside Envoy Gateway's controller
 * (tools/aigateway/RECIPE.md). The Go module proxy serves v1.0.0, not v1.1.0.
 */
export const AIGATEWAY_TOOLS: GoToolsModule = {
  module: 'aigateway',
  binaries: [
    { name: 'aigw-controller', pkg: 'github.com/envoyproxy/ai-gateway/cmd/controller' },
    { name: 'aigw-extproc', pkg: 'github.com/envoyproxy/ai-gateway/cmd/extproc' },
  ],
};

/**
 * The benchmarks' baseline, the Gateway API Inference Extension's body-based
 * router (BBR v1.5.0), and the ghz gRPC load tool (bench/ext-proc.ts,
 * bench/data-plane.ts).
 */
export const BENCH_TOOLS: GoToolsModule = {
  module: 'bench',
  binaries: [
    { name: 'bbr', pkg: 'sigs.k8s.io/gateway-api-inference-extension/cmd/bbr' },
    { name: 'ghz', pkg: 'github.com/bojand/ghz/cmd/ghz' },
  ],
};

function log(message: string): void {
  process.stderr.write(`[go-tools] ${message}\n`);
}

export function toolsModuleDir(tools: GoToolsModule): string {
  return join(REPO_ROOT, 'tools', tools.module);
}

/** Cache folder for this exact recipe: changing a pin or a flag builds anew. */
export function cacheDir(tools: GoToolsModule): string {
  const dir = toolsModuleDir(tools);
  const hash = createHash('sha256');
  hash.update(readFileSync(join(dir, 'go.mod')));
  hash.update(readFileSync(join(dir, 'go.sum')));
  hash.update(JSON.stringify({ binaries: tools.binaries, ldflags: tools.ldflags ?? '' }));
  return join(CACHE_ROOT, `${tools.module}-${hash.digest('hex').slice(0, 16)}`);
}

function goBuild(tools: GoToolsModule, binary: GoBinary, outFile: string): Promise<void> {
  const args = ['build', '-v', '-o', outFile];
  if (tools.ldflags) args.push('-ldflags', tools.ldflags);
  args.push(binary.pkg);
  const started = Date.now();
  let compiled = 0;
  let output = '';
  return new Promise((resolvePromise, reject) => {
    const child = spawn('go', args, {
      cwd: toolsModuleDir(tools),
      env: { ...process.env, CGO_ENABLED: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const progress = setInterval(() => {
      log(`${binary.name}: ${compiled} packages compiled, ${Math.round((Date.now() - started) / 1000)}s`);
    }, 20_000);
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      const text = d.toString();
      compiled += text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('go: ')).length;
      output = (output + text).slice(-20_000);
    });
    child.on('error', (error) => {
      clearInterval(progress);
      reject(new Error(`cannot run go (is Go installed and on PATH?): ${error.message}`));
    });
    child.on('close', (code) => {
      clearInterval(progress);
      if (code === 0) {
        log(`${binary.name}: built in ${Math.round((Date.now() - started) / 1000)}s`);
        resolvePromise();
      } else {
        reject(new Error(`go build ${binary.pkg} failed (exit ${code}):\n${output.slice(-4000)}`));
      }
    });
  });
}

/** A cross-process lock (mkdir is atomic), so two test runs never build into the same folder. */
export async function withLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 60 * 60_000;
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(join(lockDir, 'pid'), String(process.pid));
      break;
    } catch {
      let holder = Number.NaN;
      try {
        holder = Number(readFileSync(join(lockDir, 'pid'), 'utf8'));
      } catch {
        /* the holder is between mkdir and writing its pid */
      }
      const alive = Number.isFinite(holder) && holder > 0 && (() => { try { process.kill(holder, 0); return true; } catch { return false; } })();
      if (Number.isFinite(holder) && !alive) rmSync(lockDir, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockDir}`);
      else await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}

/** Returns the bin folder holding every binary of `tools`, building what is missing. */
export async function ensureGoTools(tools: GoToolsModule): Promise<string> {
  const dir = cacheDir(tools);
  const bin = join(dir, 'bin');
  const missing = () => tools.binaries.filter((b) => !existsSync(join(bin, b.name)));
  if (missing().length === 0) return bin;
  mkdirSync(CACHE_ROOT, { recursive: true });
  await withLock(`${dir}.lock`, async () => {
    for (const binary of missing()) {
      log(`building ${binary.name} from tools/${tools.module} (first run only; cached in ${dir})`);
      mkdirSync(bin, { recursive: true });
      const partial = join(bin, `.${binary.name}.partial`);
      await goBuild(tools, binary, partial);
      renameSync(partial, join(bin, binary.name));
    }
  });
  return bin;
}

/** The folder of a module in the Go module cache (downloaded if needed): CRDs ship inside module zips. */
export async function goModuleDir(tools: GoToolsModule, modulePath: string): Promise<string> {
  const out = await new Promise<string>((resolvePromise, reject) => {
    const child = spawn('go', ['mod', 'download', '-json', modulePath], {
      cwd: toolsModuleDir(tools),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolvePromise(stdout) : reject(new Error(`go mod download ${modulePath}: ${stderr}`))));
  });
  const dir = (JSON.parse(out) as { Dir?: string }).Dir;
  if (!dir) throw new Error(`go mod download ${modulePath} named no folder`);
  return dir;
}
