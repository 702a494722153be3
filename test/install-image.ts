// There is no container engine here, so the tests rebuild the final stage of
// the Dockerfile as a folder: its COPY lines (from the build context or from the
// build stage, which holds the checkout as the context gives it, less
// .dockerignore) and its RUN line (the production-only `npm ci`), into an empty
// directory. Anything the Dockerfile does that this does not understand is an
// error, so the folder cannot silently differ from the image.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, matchesGlob, posix, relative } from 'node:path';
import { REPO_ROOT } from './install-manifests.ts';

export const DOCKERFILE = join(REPO_ROOT, 'Dockerfile');

export interface Instruction {
  op: string;
  args: string;
}

export interface Stage {
  name?: string;
  base: string;
  instructions: Instruction[];
}

/** Stages with their instructions; comments, blank lines and line continuations handled. */
export function parseDockerfile(text: string): { args: Instruction[]; stages: Stage[] } {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    if (current === '' && /^\s*(#|$)/.test(raw)) continue;
    if (/^\s*#/.test(raw)) continue; // a comment inside a continuation
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push((current + line).trim());
    current = '';
  }
  const args: Instruction[] = [];
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, op = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const instruction = { op: op.toUpperCase(), args: rest };
    if (instruction.op === 'FROM') {
      const [base = '', as, name] = rest.split(/\s+/);
      stages.push({ base, instructions: [], ...(as?.toUpperCase() === 'AS' && name ? { name } : {}) });
    } else if (stages.length === 0) {
      if (instruction.op !== 'ARG') throw new Error(`Dockerfile: ${op} before the first FROM`);
      args.push(instruction);
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return { args, stages };
}

export interface ImageLayout {
  /** Final stage WORKDIR, e.g. /app. */
  workdir: string;
  /** Files copied: [repo-relative source, image destination]. */
  copies: [string, string][];
  /** Shell commands of the final stage's RUN lines. */
  runs: string[];
  /** Shell commands of the build stages' RUN lines (they run in the checkout). */
  buildRuns: string[];
  env: Record<string, string>;
  user?: string;
  entrypoint: string[];
}

function stageWorkdir(stage: Stage): string {
  const workdirs = stage.instructions.filter((i) => i.op === 'WORKDIR').map((i) => i.args);
  if (workdirs.length !== 1) throw new Error(`Dockerfile: stage ${stage.name ?? stage.base} needs exactly one WORKDIR`);
  return workdirs[0] as string;
}

/** What the final stage holds, as paths of this checkout. */
export function imageLayout(text = readFileSync(DOCKERFILE, 'utf8')): ImageLayout {
  const { stages } = parseDockerfile(text);
  const final = stages.at(-1);
  if (!final) throw new Error('Dockerfile: no stage');
  const buildRoots = new Map<string, string>();
  const buildRuns: string[] = [];
  for (const stage of stages.slice(0, -1)) {
    // A build stage must hold the whole context at its WORKDIR for `--from=` paths to map onto the checkout.
    if (!stage.name || !stage.instructions.some((i) => i.op === 'COPY' && i.args === '. .')) {
      throw new Error(`Dockerfile: build stage ${stage.name ?? stage.base} must be named and COPY . .`);
    }
    buildRoots.set(stage.name, stageWorkdir(stage));
    buildRuns.push(...stage.instructions.filter((i) => i.op === 'RUN').map((i) => i.args));
  }
  const workdir = stageWorkdir(final);
  const layout: ImageLayout = { workdir, copies: [], runs: [], buildRuns, env: {}, entrypoint: [] };
  for (const { op, args } of final.instructions) {
    switch (op) {
      case 'WORKDIR':
      case 'EXPOSE':
      case 'CMD':
        break;
      case 'ENV': {
        const match = /^([A-Za-z_][A-Za-z0-9_]*)[= ](.*)$/.exec(args);
        if (!match) throw new Error(`Dockerfile: ENV ${args} (use one NAME=value per line)`);
        layout.env[match[1] as string] = match[2] as string;
        break;
      }
      case 'USER':
        layout.user = args;
        break;
      case 'ENTRYPOINT':
        layout.entrypoint = JSON.parse(args) as string[];
        break;
      case 'RUN':
        layout.runs.push(args);
        break;
      case 'COPY': {
        const words = args.split(/\s+/);
        const flags = words.filter((w) => w.startsWith('--'));
        const paths = words.filter((w) => !w.startsWith('--'));
        const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
        const unknown = flags.filter((f) => !f.startsWith('--from='));
        if (unknown.length > 0) throw new Error(`Dockerfile: COPY ${unknown.join(' ')} is not reproduced by the test`);
        const dest = paths.pop() ?? '';
        const destAbs = posix.isAbsolute(dest) ? dest : posix.join(workdir, dest);
        if (paths.length > 1 && !dest.endsWith('/')) throw new Error(`Dockerfile: COPY of several sources needs a folder destination: ${args}`);
        for (const source of paths) {
          let repoPath: string;
          if (from === undefined) repoPath = source;
          else {
            const root = buildRoots.get(from);
            if (root === undefined) throw new Error(`Dockerfile: COPY --from=${from}: no such build stage`);
            repoPath = posix.relative(root, source);
            if (repoPath.startsWith('..')) throw new Error(`Dockerfile: COPY --from=${from} ${source} is outside ${root}`);
          }
          // A source written with a trailing slash is a folder even before a build stage has made it (dist/).
          const isDir = source.endsWith('/') || statSync(join(REPO_ROOT, repoPath)).isDirectory();
          repoPath = repoPath.replace(/\/$/, '') || '.';
          // A folder's contents go into dest; a file goes into dest/ or becomes dest.
          const target = isDir || !dest.endsWith('/') ? destAbs : posix.join(destAbs, posix.basename(repoPath));
          layout.copies.push([repoPath, target]);
        }
        break;
      }
      default:
        throw new Error(`Dockerfile: ${op} in the final stage is not reproduced by the test`);
    }
  }
  return layout;
}

/** .dockerignore patterns (Docker's syntax, the subset without `!` exceptions). */
export function dockerIgnore(): string[] {
  const file = join(REPO_ROOT, '.dockerignore');
  if (!existsSync(file)) return [];
  const patterns = readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (patterns.some((p) => p.startsWith('!'))) throw new Error('.dockerignore: ! exceptions are not reproduced by the test');
  return patterns.map((p) => p.replace(/^\/+/, '').replace(/\/+$/, ''));
}

function ignored(repoPath: string, patterns: string[]): boolean {
  return patterns.some((p) => matchesGlob(repoPath, p) || matchesGlob(repoPath, `${p}/**`));
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} failed (exit ${code}):\n${output.slice(-4000)}`))));
  });
}

/**
 * Lays the final stage out under `root` (standing for `/`): RUN lines run in
 * order, interleaved with the COPY lines exactly as the Dockerfile orders them.
 * `npm ci` gets --prefer-offline (the npm cache, not a fresh download);
 * `npm cache clean` is skipped, as it would empty the developer's cache.
 */
export async function buildImageRoot(root: string, text = readFileSync(DOCKERFILE, 'utf8')): Promise<ImageLayout> {
  const layout = imageLayout(text);
  const patterns = dockerIgnore();
  const onImage = (p: string) => join(root, p);
  mkdirSync(onImage(layout.workdir), { recursive: true });
  // The build stage is the checkout itself (COPY . .): its `npm run` steps run
  // here, so `COPY --from=build` finds their output (dist/); its `npm ci` is
  // the checkout's own install.
  for (const command of layout.buildRuns.flatMap((r) => r.split('&&').map((c) => c.trim()))) {
    const words = command.split(/\s+/);
    if (words[0] === 'npm' && words[1] === 'ci') continue;
    if (!(words[0] === 'npm' && words[1] === 'run')) throw new Error(`Dockerfile: build-stage RUN ${command} is not reproduced by the test`);
    const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` };
    await run('npm', words.slice(1), REPO_ROOT, env);
  }
  // Replay in Dockerfile order: copies and runs interleave (package files, npm ci, then the sources).
  const { stages } = parseDockerfile(text);
  let copyIndex = 0;
  for (const { op, args } of stages.at(-1)?.instructions ?? []) {
    if (op === 'COPY') {
      const next = layout.copies.filter((_, i) => i >= copyIndex);
      const count = args.split(/\s+/).filter((w) => !w.startsWith('--')).length - 1;
      for (const [source, target] of next.slice(0, count)) {
        mkdirSync(dirname(onImage(target)), { recursive: true });
        // A path .dockerignore keeps out of the context can only be in a build
        // stage because one of its RUN lines made it (dist/): copied whole.
        const builtInStage = source !== '.' && ignored(source, patterns);
        if (builtInStage && !existsSync(join(REPO_ROOT, source))) throw new Error(`Dockerfile: COPY ${source}: no build-stage RUN made it`);
        cpSync(join(REPO_ROOT, source), onImage(target), {
          recursive: true,
          filter: (from) => {
            const rel = relative(REPO_ROOT, from);
            return rel === '' || builtInStage || !ignored(rel, patterns);
          },
        });
      }
      copyIndex += count;
    } else if (op === 'RUN') {
      for (const command of args.split('&&').map((c) => c.trim())) {
        const words = command.split(/\s+/);
        if (words[0] === 'npm' && words[1] === 'ci') {
          // npm's own shebang finds node on PATH: put this Node 24 first, as in the node:24 image.
          const env = { ...process.env, ...layout.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` };
          await run('npm', [...words.slice(1), '--prefer-offline', '--no-audit', '--no-fund'], onImage(layout.workdir), env);
        } else if (!(words[0] === 'npm' && words[1] === 'cache' && words[2] === 'clean')) {
          throw new Error(`Dockerfile: RUN ${command} is not reproduced by the test`);
        }
      }
    }
  }
  return layout;
}
