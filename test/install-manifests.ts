// Builds manifests/install.yaml from the kubebuilder-style sources under
// manifests/ (`npm run manifests`; `--check` exits non-zero when it is stale).
// It follows manifests/default/kustomization.yaml the way kustomize does for the
// subset we use (`resources:` lists of files and folders), keeps every source
// document verbatim with its comments, and sorts like kustomize's legacy order
// (Namespace, CRDs, RBAC, ... webhook configurations last), so that
// `kubectl apply -f` creates each object after what it needs.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { parse } from 'yaml';

export const REPO_ROOT = resolve(import.meta.dirname, '..');
export const MANIFESTS_DIR = join(REPO_ROOT, 'manifests');
export const INSTALL_YAML = join(MANIFESTS_DIR, 'install.yaml');

export interface ManifestObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [key: string]: unknown };
  [key: string]: unknown;
}

interface SourceDocument {
  /** Path relative to the repo root. */
  source: string;
  /** The document's own text, comments included. */
  text: string;
  object: ManifestObject;
}

const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'resources']);

// kustomize's legacy ordering (api/resid/gvk.go): these first, in this order,
// the webhook configurations last, everything else in between by kind.
const ORDER_FIRST = [
  'Namespace', 'ResourceQuota', 'StorageClass', 'CustomResourceDefinition', 'ServiceAccount', 'PodSecurityPolicy',
  'Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding', 'ConfigMap', 'Secret', 'Endpoints', 'Service',
  'LimitRange', 'PriorityClass', 'PersistentVolume', 'PersistentVolumeClaim', 'Deployment', 'StatefulSet',
  'CronJob', 'PodDisruptionBudget',
];
const ORDER_LAST = ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'];

function rank(kind: string): number {
  const first = ORDER_FIRST.indexOf(kind);
  if (first >= 0) return first;
  const last = ORDER_LAST.indexOf(kind);
  if (last >= 0) return 1000 + last;
  return ORDER_FIRST.length;
}

function compareObjects(a: ManifestObject, b: ManifestObject): number {
  const gvk = (o: ManifestObject) => `${o.apiVersion}/${o.kind}`;
  return (
    rank(a.kind) - rank(b.kind) ||
    (rank(a.kind) === ORDER_FIRST.length ? gvk(a).localeCompare(gvk(b)) : 0) ||
    (a.metadata.namespace ?? '').localeCompare(b.metadata.namespace ?? '') ||
    a.metadata.name.localeCompare(b.metadata.name)
  );
}

/** The documents of one kustomization folder, depth first, in `resources:` order. */
function loadKustomization(dir: string, seen: Set<string>): SourceDocument[] {
  const file = join(dir, 'kustomization.yaml');
  const kustomization = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const unsupported = Object.keys(kustomization).filter((k) => !KUSTOMIZATION_KEYS.has(k));
  if (unsupported.length > 0) {
    throw new Error(`${relative(REPO_ROOT, file)}: only resources: is supported by this generator, found ${unsupported.join(', ')}`);
  }
  const out: SourceDocument[] = [];
  for (const entry of (kustomization.resources as string[] | undefined) ?? []) {
    const path = resolve(dir, entry);
    if (seen.has(path)) throw new Error(`${relative(REPO_ROOT, file)}: ${entry} is included twice`);
    seen.add(path);
    if (statSync(path).isDirectory()) {
      out.push(...loadKustomization(path, seen));
      continue;
    }
    // Split on document separators ourselves, so each document's text (and comments) is kept verbatim.
    for (const chunk of readFileSync(path, 'utf8').split(/^---[ \t]*$\n?/m)) {
      const object = parse(chunk) as ManifestObject | null;
      if (object === null) continue;
      const text = chunk.endsWith('\n') ? chunk : `${chunk}\n`;
      if (!object.apiVersion || !object.kind || !object.metadata?.name) {
        throw new Error(`${relative(REPO_ROOT, path)}: every document needs apiVersion, kind and metadata.name`);
      }
      out.push({ source: relative(REPO_ROOT, path), text, object });
    }
  }
  return out;
}

/** Every object of manifests/default, in install order. */
export function loadInstallDocuments(root = join(MANIFESTS_DIR, 'default')): SourceDocument[] {
  const documents = loadKustomization(root, new Set());
  const keys = new Set<string>();
  for (const d of documents) {
    const key = `${d.object.kind}/${d.object.metadata.namespace ?? ''}/${d.object.metadata.name}`;
    if (keys.has(key)) throw new Error(`${d.source}: ${key} is defined twice`);
    keys.add(key);
  }
  return documents.sort((a, b) => compareObjects(a.object, b.object));
}

export function installObjects(): ManifestObject[] {
  return loadInstallDocuments().map((d) => d.object);
}

/** The text of manifests/install.yaml. */
export function buildInstallYaml(): string {
  const header = [
    '# modelplane-affinity: everything `kubectl apply -f` needs (cert-manager must be installed first).',
    '# GENERATED by `npm run manifests` from manifests/default; edit the sources, not this file.',
  ].join('\n');
  const documents = loadInstallDocuments().map((d) => `# Source: ${d.source}\n${d.text.replace(/^\n+/, '')}`);
  return `${header}\n---\n${documents.join('---\n')}`;
}

if (import.meta.main) {
  const text = buildInstallYaml();
  if (process.argv.includes('--check')) {
    const current = readFileSync(INSTALL_YAML, 'utf8');
    if (current !== text) {
      process.stderr.write(`${relative(process.cwd(), INSTALL_YAML)} is out of date: run npm run manifests\n`);
      process.exit(1);
    }
  } else {
    writeFileSync(INSTALL_YAML, text);
    process.stdout.write(`wrote ${relative(process.cwd(), INSTALL_YAML)} (${loadInstallDocuments().length} objects from ${relative(process.cwd(), dirname(INSTALL_YAML))}/default)\n`);
  }
}
