// Golden files: testdata/render/<case>.in.yaml → <case>.out.yaml. A missing
// or different golden fails; regenerate with
// `UPDATE_GOLDEN=1 npx vitest run src/render.test.ts` and review the diff.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { renderDocuments } from '../bin/render-command.ts';
import { formatFieldError } from './field-errors.ts';
import type { ModelService } from './model-service.ts';
import { GENERATED_RESOURCES, MANIFEST_YAML_OPTIONS, desiredObjects, render, routeSelectors } from './render.ts';

const DIR = join(import.meta.dirname, 'testdata', 'render');
const IMAGE = 'ghcr.io/modelplane/modelplane-affinity:golden';
const cases = readdirSync(DIR).filter((f) => f.endsWith('.in.yaml')).map((f) => f.replace(/\.in\.yaml$/, '')).sort();

describe('render golden files', () => {
  it('has cases', () => expect(cases.length).toBeGreaterThanOrEqual(6));

  it.each(cases)('%s', (name) => {
    const text = readFileSync(join(DIR, `${name}.in.yaml`), 'utf8');
    const input = parse(text, { strict: true }) as ModelService;
    const result = render(input, { extProcImage: IMAGE });
    // One defaulted ModelService: `render -f` prints exactly the one in the golden (valid cases; an invalid one prints nothing).
    const printed = renderDocuments(text, IMAGE).yaml.split('---\n').filter(Boolean).map((d) => parse(d) as unknown);
    if (result.errors.length === 0) expect(printed).toEqual([result.modelService, ...result.objects]);
    const output = stringify(
      { warnings: result.warnings, errors: result.errors.map(formatFieldError), modelService: result.modelService, objects: result.objects },
      MANIFEST_YAML_OPTIONS,
    );
    // Objects share label maps in memory; printed manifests must spell them out.
    expect(output).not.toMatch(/[&*]a\d+\b/);
    const goldenFile = join(DIR, `${name}.out.yaml`);
    if (process.env.UPDATE_GOLDEN) writeFileSync(goldenFile, output);
    // A missing golden is a failure, not a pass that writes one: a new case must be reviewed like a changed one.
    if (!existsSync(goldenFile)) expect.fail(`${goldenFile} is missing: run UPDATE_GOLDEN=1 npx vitest run src/render.test.ts and review it`);
    expect(output).toBe(readFileSync(goldenFile, 'utf8'));
  });
});

describe('render', () => {
  const ms = (affinity: unknown): ModelService => ({
    apiVersion: 'modelplane.ai/v1alpha1',
    kind: 'ModelService',
    metadata: { name: 'm', namespace: 'n' },
    spec: { affinity } as ModelService['spec'],
  });

  it('adds health checks and a retry only for fallback NextEndpoint', () => {
    const [withFallback] = render(ms({ type: 'Session', sessionHeader: 'x-s' }), { extProcImage: IMAGE }).objects;
    const [without] = render(ms({ type: 'Session', sessionHeader: 'x-s', fallback: 'None' }), { extProcImage: IMAGE }).objects;
    expect(withFallback?.spec).toHaveProperty('healthCheck.passive');
    expect(withFallback?.spec).toHaveProperty('retry.retryOn.triggers', ['connect-failure', 'reset']);
    expect(without?.spec).not.toHaveProperty('healthCheck');
    expect(without?.spec).not.toHaveProperty('retry');
  });

  it('names every generated kind as kubectl and RBAC do', () => {
    expect(GENERATED_RESOURCES).toEqual([
      'services',
      'deployments.apps',
      'poddisruptionbudgets.policy',
      'envoyextensionpolicies.gateway.envoyproxy.io',
      'backendtrafficpolicies.gateway.envoyproxy.io',
    ]);
  });

  it('targets routes by the Crossplane composite label and by our own label', () => {
    expect(routeSelectors('m').map((s) => s.matchLabels)).toEqual([{ 'crossplane.io/composite': 'm' }, { 'affinity.modelplane.ai/model-service': 'm' }]);
  });

  it('renders nothing for an invalid spec', () => {
    expect(render(ms({ type: 'Session' }), { extProcImage: IMAGE }).objects).toEqual([]);
  });

  it('renders nothing for None', () => {
    expect(desiredObjects(ms({ type: 'None' }), { extProcImage: IMAGE })).toEqual([]);
  });

  it('runs the hasher with the configured prefixBytes', () => {
    const deployment = render(ms({ type: 'PrefixHash', prefixBytes: 777 }), { extProcImage: IMAGE }).objects.find((o) => o.kind === 'Deployment');
    expect(JSON.stringify(deployment)).toContain('"--prefix-bytes","777"');
  });
});
