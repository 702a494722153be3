// `modelplane-affinity render -f FILE`: what the webhook stores and what the
// reconciler applies, from the same functions, without a cluster.
import { readFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { parseAllDocuments, stringify } from 'yaml';
import { formatInvalidObject } from '../src/field-errors.ts';
import { MODEL_SERVICE_GROUP, MODEL_SERVICE_KIND, type ModelService, isModelService } from '../src/model-service.ts';
import { DEFAULT_EXT_PROC_IMAGE, MANIFEST_YAML_OPTIONS, render } from '../src/render.ts';

export interface RenderOutput {
  yaml: string;
  warnings: string[];
  errors: string[];
}

/** Renders every ModelService document of a YAML text. Pure apart from nothing: used by the CLI and tests. */
export function renderDocuments(text: string, extProcImage: string): RenderOutput {
  const documents = parseAllDocuments(text);
  const out: unknown[] = [];
  const warnings: string[] = [];
  const errors: string[] = [];
  for (const doc of documents) {
    if (doc.errors.length > 0) {
      errors.push(`invalid YAML: ${doc.errors[0]?.message}`);
      continue;
    }
    const value: unknown = doc.toJSON();
    if (value === null || value === undefined) continue;
    if (!isModelService(value)) {
      errors.push(`not a ${MODEL_SERVICE_KIND} (apiVersion ${MODEL_SERVICE_GROUP}/…): ${JSON.stringify((value as { kind?: unknown }).kind ?? value).slice(0, 80)}`);
      continue;
    }
    const ms = value as ModelService;
    const result = render(ms, { extProcImage });
    warnings.push(...result.warnings.map((w) => `Warning: ${ms.metadata?.name}: ${w}`));
    if (result.errors.length > 0) {
      errors.push(formatInvalidObject(`${MODEL_SERVICE_KIND}.${MODEL_SERVICE_GROUP}`, ms.metadata?.name ?? '', result.errors));
      continue;
    }
    out.push(result.modelService, ...result.objects);
  }
  return { yaml: out.map((o) => `---\n${stringify(o, MANIFEST_YAML_OPTIONS)}`).join(''), warnings, errors };
}

export function registerRenderCommand(program: Command): void {
  program
    .command('render')
    .description('Print the defaulted ModelService and every object the reconciler would create for it (multi-document YAML)')
    .requiredOption('-f, --filename <file>', 'ModelService manifest (YAML or JSON; - for standard input)')
    .addOption(new Option('--ext-proc-image <image>', 'image for the ext_proc Deployment').env('MODELPLANE_AFFINITY_EXT_PROC_IMAGE').default(DEFAULT_EXT_PROC_IMAGE))
    .action((opts: { filename: string; extProcImage: string }) => {
      const text = readFileSync(opts.filename === '-' ? 0 : opts.filename, 'utf8');
      const { yaml, warnings, errors } = renderDocuments(text, opts.extProcImage);
      for (const w of warnings) process.stderr.write(`${w}\n`);
      if (errors.length > 0) {
        for (const e of errors) process.stderr.write(`${e}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(yaml);
    });
}
