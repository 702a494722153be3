// cert-manager's CRDs (Issuer, Certificate, ...) straight from the module zip
// pinned by tools/cert-manager (deploy/crds/), never copied into this repo. No
// cert-manager controller runs in the test bed: tests that need its Secret or
// caBundle write them themselves.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type GoToolsModule, goModuleDir } from './go-tools.ts';

export const CERT_MANAGER_TOOLS: GoToolsModule = { module: 'cert-manager', binaries: [] };

/** The CRD files of the pinned cert-manager release, sorted by name. */
export async function certManagerCrdFiles(): Promise<string[]> {
  const dir = join(await goModuleDir(CERT_MANAGER_TOOLS, 'github.com/cert-manager/cert-manager'), 'deploy', 'crds');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
  if (files.length === 0) throw new Error(`no CRD files in ${dir}`);
  return files.map((f) => join(dir, f));
}
