// manifests/install.yaml stays generated from the sources, and the sources say
// what issue 6 and manifests/README.md promise (the API server side of it is in
// test/install.int.test.ts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { DEFAULT_EXT_PROC_IMAGE } from '../src/render.ts';
import { imageLayout } from './install-image.ts';
import { INSTALL_YAML, MANIFESTS_DIR, type ManifestObject, buildInstallYaml, installObjects } from './install-manifests.ts';

const NAMESPACE = 'modelplane-affinity-system';
const objects = installObjects();
const find = (kind: string, name?: string) => {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
  return found[0] as ManifestObject & Record<string, any>;
};

describe('manifests/install.yaml', () => {
  it('is exactly what npm run manifests generates from the sources (run it after editing manifests/)', () => {
    expect(readFileSync(INSTALL_YAML, 'utf8') === buildInstallYaml(), 'manifests/install.yaml is out of date: run npm run manifests').toBe(true);
  });

  it('parses into the same objects as the sources, namespace first and webhook configurations last', () => {
    const parsed = parseAllDocuments(readFileSync(INSTALL_YAML, 'utf8')).map((d) => d.toJS() as ManifestObject).filter(Boolean);
    expect(parsed).toEqual(objects);
    expect(parsed[0]?.kind).toBe('Namespace');
    expect(parsed.slice(-2).map((o) => o.kind)).toEqual(['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration']);
  });

  it('puts every namespaced object in modelplane-affinity-system', () => {
    const clusterScoped = new Set(['Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration']);
    for (const o of objects) expect(o.metadata.namespace, `${o.kind} ${o.metadata.name}`).toBe(clusterScoped.has(o.kind) ? undefined : NAMESPACE);
  });
});

describe('the manager Deployment', () => {
  const deployment = find('Deployment', 'modelplane-affinity-manager');
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];

  it('runs two replicas spread across nodes, with a PodDisruptionBudget that selects them', () => {
    expect(deployment.spec.replicas).toBe(2);
    expect(pod.topologySpreadConstraints[0].topologyKey).toBe('kubernetes.io/hostname');
    expect(pod.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey).toBe('kubernetes.io/hostname');
    const pdb = find('PodDisruptionBudget');
    expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
    expect(pdb.spec.minAvailable).toBe(1);
  });

  it('runs the add-on image, and hands the same image to the ext_proc Deployments it generates', () => {
    expect(container.image).toBe(DEFAULT_EXT_PROC_IMAGE);
    expect(container.args[0]).toBe('manager');
    expect(container.args).toContain(`--ext-proc-image=${DEFAULT_EXT_PROC_IMAGE}`);
    expect(container.env).toContainEqual({ name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } });
  });

  it('is hardened: non-root, seccomp RuntimeDefault, read-only root, no capabilities, limits, probes', () => {
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(Object.keys(container.resources.requests).sort()).toEqual(['cpu', 'memory']);
    expect(Object.keys(container.resources.limits).sort()).toEqual(['cpu', 'memory']);
    expect(container.readinessProbe.httpGet).toEqual({ scheme: 'HTTPS', path: '/readyz', port: 'webhook-server' });
    expect(container.livenessProbe.httpGet).toEqual({ scheme: 'HTTPS', path: '/healthz', port: 'webhook-server' });
    expect(container.ports).toContainEqual({ name: 'webhook-server', containerPort: 9443, protocol: 'TCP' });
  });

  it('mounts the Certificate Secret read-only at the folder it passes as --cert-dir', () => {
    const certificate = find('Certificate');
    const volume = pod.volumes.find((v: any) => v.secret?.secretName === certificate.spec.secretName);
    expect(volume).toBeDefined();
    const mount = container.volumeMounts.find((m: any) => m.name === volume.name);
    expect(mount.readOnly).toBe(true);
    expect(container.args).toContain(`--cert-dir=${mount.mountPath}`);
  });

  it('runs as the ServiceAccount the RBAC binds', () => {
    expect(pod.serviceAccountName).toBe(find('ServiceAccount').metadata.name);
  });
});

describe('webhook wiring', () => {
  const service = find('Service', 'modelplane-affinity-webhook');
  const certificate = find('Certificate');

  it('the Service sends 443 to the manager pods port 9443', () => {
    expect(service.spec.ports).toEqual([{ name: 'https', port: 443, targetPort: 'webhook-server', protocol: 'TCP' }]);
    expect(service.spec.selector).toEqual(find('Deployment').spec.selector.matchLabels);
  });

  it('the Certificate names the Service, issued by the self-signed Issuer', () => {
    expect(certificate.spec.dnsNames).toEqual([`${service.metadata.name}.${NAMESPACE}.svc`, `${service.metadata.name}.${NAMESPACE}.svc.cluster.local`]);
    const issuer = find('Issuer');
    expect(issuer.spec).toEqual({ selfSigned: {} });
    expect(certificate.spec.issuerRef).toEqual({ kind: 'Issuer', name: issuer.metadata.name });
  });

  for (const [kind, name, path] of [
    ['MutatingWebhookConfiguration', 'mutate.affinity.modelplane.ai', '/mutate'],
    ['ValidatingWebhookConfiguration', 'validate.affinity.modelplane.ai', '/validate'],
  ] as const) {
    it(`${kind} ${name}: ${path} through the Service, CA injected by cert-manager, strict and scoped`, () => {
      const configuration = find(kind) as any;
      expect(configuration.metadata.annotations['cert-manager.io/inject-ca-from']).toBe(`${NAMESPACE}/${certificate.metadata.name}`);
      expect(configuration.webhooks).toHaveLength(1);
      const webhook = configuration.webhooks[0];
      expect(webhook).toMatchObject({
        name,
        admissionReviewVersions: ['v1'],
        sideEffects: 'None',
        failurePolicy: 'Fail',
        timeoutSeconds: 5,
        matchPolicy: 'Equivalent',
        clientConfig: { service: { name: service.metadata.name, namespace: NAMESPACE, path, port: 443 } },
        rules: [{ apiGroups: ['modelplane.ai'], apiVersions: ['v1alpha1'], operations: ['CREATE', 'UPDATE'], resources: ['modelservices'], scope: 'Namespaced' }],
        namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', NAMESPACE] }] },
      });
    });
  }
});

interface Grant {
  group: string;
  resource: string;
  resourceNames?: string[];
  verbs: string[];
  namespace?: string;
}

/** Every (group, resource, names) the RBAC grants, with its verbs. */
function grants(): Grant[] {
  const out: Grant[] = [];
  for (const role of objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role') as any[]) {
    for (const rule of role.rules) {
      for (const group of rule.apiGroups) {
        for (const resource of rule.resources) {
          out.push({ group, resource, verbs: rule.verbs, ...(rule.resourceNames ? { resourceNames: rule.resourceNames } : {}), ...(role.metadata.namespace ? { namespace: role.metadata.namespace } : {}) });
        }
      }
    }
  }
  return out;
}

/** The rows of the RBAC table in manifests/README.md. */
function readmeGrants(): Grant[] {
  const readme = readFileSync(join(MANIFESTS_DIR, 'README.md'), 'utf8');
  const table = readme.split('<!-- rbac-table')[1]?.split('\n\n')[0] ?? '';
  const rows = table.split('\n').filter((l) => l.startsWith('| `'));
  return rows.map((row) => {
    const [group = '', resource = '', verbs = '', scope = ''] = row.split('|').slice(1).map((c) => c.trim());
    const name = / named `([^`]+)`/.exec(resource)?.[1];
    return {
      group: /`([^`]*)`/.exec(group)?.[1]?.replace(/^""$/, '') ?? '',
      resource: /`([^`]+)`/.exec(resource)?.[1] ?? '',
      verbs: verbs.split(',').map((v) => v.trim()),
      ...(name ? { resourceNames: [name] } : {}),
      ...(scope === 'cluster' ? {} : { namespace: scope.replaceAll('`', '') }),
    };
  });
}

describe('RBAC', () => {
  it('grants exactly what manifests/README.md lists, verb for verb', () => {
    const key = (g: Grant) => JSON.stringify([g.group, g.resource, g.resourceNames ?? [], g.namespace ?? '', [...g.verbs].sort()]);
    expect(readmeGrants().map(key).sort()).toEqual(grants().map(key).sort());
  });

  it('never grants wildcards, secrets, pods, update on generated objects, or RBAC verbs', () => {
    for (const g of grants()) {
      expect(g.group).not.toBe('*');
      expect(g.resource).not.toBe('*');
      expect(g.verbs).not.toContain('*');
      expect(['secrets', 'configmaps', 'pods', 'pods/exec', 'nodes', 'serviceaccounts/token']).not.toContain(g.resource);
      for (const verb of ['bind', 'escalate', 'impersonate', 'deletecollection']) expect(g.verbs).not.toContain(verb);
      if (g.resource !== 'leases' && g.resource !== 'modelservices/finalizers') expect(g.verbs).not.toContain('update');
    }
  });

  it('binds the ClusterRole and the leader-election Role to the manager ServiceAccount only', () => {
    const sa = find('ServiceAccount');
    for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
      const binding = find(kind);
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: NAMESPACE }]);
      expect(find(binding.roleRef.kind, binding.roleRef.name)).toBeDefined();
    }
    expect(find('Role').metadata.namespace).toBe(NAMESPACE);
  });
});

describe('the Dockerfile', () => {
  const layout = imageLayout();

  it('ships the compiled CLI and production dependencies only, from a typechecked build stage', () => {
    expect(layout.copies.map(([source]) => source).sort()).toEqual(['dist', 'package-lock.json', 'package.json']);
    expect(layout.runs).toEqual(['npm ci --omit=dev --ignore-scripts && npm cache clean --force']);
    expect(layout.buildRuns).toEqual(['npm ci', 'npm run typecheck && npm run build']);
  });

  it('runs modelplane-affinity as uid 65532, the user the manifests run as', () => {
    expect(layout.user).toBe('65532:65532');
    expect(layout.entrypoint).toEqual(['node', `${layout.workdir}/dist/bin/modelplane-affinity.js`]);
    expect(find('Deployment').spec.template.spec.securityContext.runAsUser).toBe(65532);
  });
});
