// Issue 6 on a real API server: `kubectl apply -f manifests/install.yaml` is
// accepted whole (cert-manager's own CRDs installed first; the test plays
// cert-manager and writes the Secret and caBundle), the ServiceAccount may do
// what the manager needs and nothing dangerous, and the manager, started from a
// folder laid out exactly as the Dockerfile's final stage, under that
// ServiceAccount's identity and with the Certificate's Secret as its cert dir,
// serves admission for `kubectl apply` and reconciles. ext-proc starts from the
// same folder.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { GENERATED_RESOURCES } from '../src/render.ts';
import { type ImageLayout, buildImageRoot } from './install-image.ts';
import { INSTALL_YAML, MANIFESTS_DIR, type ManifestObject, installObjects } from './install-manifests.ts';
import { certManagerCrdFiles } from './testbed/cert-manager.ts';
import { aiGatewayCrdFiles, installCrds } from './testbed/crds.ts';
import { makeCa, makeLeaf } from './testbed/pki.ts';
import { type ManagedProcess, freePort, startProcess, waitFor } from './testbed/processes.ts';
import { type Testbed, createNamespace, testbed } from './testbed/testbed.ts';
import { WEBHOOK_CONFIGURATION_NAME, registerWebhooks, unregisterWebhooks, webhookConfigurations } from './testbed/webhook.ts';

const NAMESPACE = 'modelplane-affinity-system';
const SA = 'modelplane-affinity-manager';
const AS = `--as=system:serviceaccount:${NAMESPACE}:${SA}`;
const SECRET = 'modelplane-affinity-webhook-tls';
const SERVICE = 'modelplane-affinity-webhook';
const IMAGE = 'registry.example/modelplane-affinity:install-test';
/** Our own registration of the Dockerfile-shaped manager (url + caBundle), removed in afterAll. */
const TEST_CONFIGURATION_NAME = 'modelplane-affinity-install-test';

let tb: Testbed;
let work: string;
const objects = installObjects();
const processes: ManagedProcess[] = [];
/** The CA the test bed's registration trusted when this file took it down (another file may have rotated it since the bed started). */
let testbedWebhookCa: string | undefined;

const resourceOf = (o: ManifestObject) => {
  const group = o.apiVersion.includes('/') ? o.apiVersion.split('/')[0] : '';
  return `${o.kind.toLowerCase()}${group ? `.${group}` : ''}`;
};

beforeAll(async () => {
  tb = testbed();
  work = mkdtempSync(join(tmpdir(), 'mpa-install-'));
  await installCrds(tb, await certManagerCrdFiles());
  // Envoy AI Gateway's route kind, so the grant on it is checked against a served resource and used by the manager.
  await installCrds(tb, (await aiGatewayCrdFiles()).filter((f) => f.endsWith('_aigatewayroutes.yaml')));
});

afterAll(async () => {
  for (const p of processes) await p.stop();
  // Leave the shared control plane as the other test files expect it: no
  // webhook pointing at a Service without endpoints, the test bed's webhook
  // registered, and none of the install but the CRD (which everyone uses).
  await tb.kubectl(['delete', '--ignore-not-found', `mutatingwebhookconfiguration/${TEST_CONFIGURATION_NAME}`, `validatingwebhookconfiguration/${TEST_CONFIGURATION_NAME}`]);
  const removable = objects.filter((o) => o.kind !== 'CustomResourceDefinition' && !o.metadata.namespace);
  await tb.kubectl(['delete', '--ignore-not-found', '--wait=false', ...removable.map((o) => `${resourceOf(o)}/${o.metadata.name}`)]);
  if (testbedWebhookCa !== undefined) await registerWebhooks(tb, tb.webhookBaseUrl, testbedWebhookCa);
  rmSync(work, { recursive: true, force: true });
}, 120_000);

function deleteInstalledWebhookConfigurations(): Promise<string> {
  const names = objects.filter((o) => o.kind.endsWith('WebhookConfiguration')).map((o) => `${resourceOf(o)}/${o.metadata.name}`);
  return tb.kubectlOk(['delete', '--ignore-not-found', ...names]);
}

describe('kubectl apply -f manifests/install.yaml', () => {
  it('is accepted whole: every object is created', async () => {
    const result = await tb.kubectl(['apply', '-f', INSTALL_YAML]);
    expect(result.code, result.stderr).toBe(0);
    const live = JSON.parse(await tb.kubectlOk(['get', '-f', INSTALL_YAML, '-o', 'json'])) as { items: ManifestObject[] };
    expect(live.items.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`));
    // The API server kept what we wrote (no field dropped by a schema), for the objects whose shape matters most.
    const deployment = live.items.find((o) => o.kind === 'Deployment') as any;
    expect(deployment.spec.template.spec.containers[0].securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    const certificate = live.items.find((o) => o.kind === 'Certificate') as any;
    expect(certificate.spec.dnsNames).toEqual([`${SERVICE}.${NAMESPACE}.svc`, `${SERVICE}.${NAMESPACE}.svc.cluster.local`]);
  });

  it('matches what `kubectl kustomize manifests/default` builds from the same sources', async () => {
    const built = parseAllDocuments(await tb.kubectlOk(['kustomize', join(MANIFESTS_DIR, 'default')])).map((d) => d.toJS() as ManifestObject);
    const key = (o: ManifestObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const sorted = (list: ManifestObject[]) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
    expect(sorted(built)).toEqual(sorted(objects));
  });

  it('takes the Secret and caBundle cert-manager would write (no cert-manager controller runs here)', async () => {
    // A self-signed Issuer's Certificate: ca.crt is the issuing certificate. The
    // leaf also names 127.0.0.1, where this test's manager listens.
    const pki = join(work, 'pki');
    mkdirSync(pki);
    const ca = makeCa(pki, 'ca', 'modelplane-affinity-selfsigned');
    const leaf = makeLeaf(pki, 'tls', ca, {
      commonName: `${SERVICE}.${NAMESPACE}.svc`,
      dnsNames: [`${SERVICE}.${NAMESPACE}.svc`, `${SERVICE}.${NAMESPACE}.svc.cluster.local`],
      ipAddresses: ['127.0.0.1'],
      usage: 'server',
    });
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    await tb.kubectlOk(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'kubernetes.io/tls',
        metadata: { name: SECRET, namespace: NAMESPACE, annotations: { 'cert-manager.io/certificate-name': 'modelplane-affinity-webhook' } },
        data: { 'tls.crt': b64(leaf.certPem), 'tls.key': b64(readFileSync(leaf.keyFile, 'utf8')), 'ca.crt': b64(ca.certPem) },
      }),
    });
    // cainjector: caBundle of every webhook in the configurations that ask for it.
    for (const o of objects.filter((x) => x.kind.endsWith('WebhookConfiguration'))) {
      const annotation = (o.metadata.annotations as Record<string, string>)['cert-manager.io/inject-ca-from'];
      expect(annotation).toBe(`${NAMESPACE}/modelplane-affinity-webhook`);
      await tb.kubectlOk(['patch', resourceOf(o), o.metadata.name, '--type=json', '-p', JSON.stringify([{ op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: b64(ca.certPem) }])]);
      const live = JSON.parse(await tb.kubectlOk(['get', resourceOf(o), o.metadata.name, '-o', 'json']));
      expect(live.webhooks[0].clientConfig.caBundle).toBe(b64(ca.certPem));
    }
    // The installed configurations call a Service with no endpoints here, with
    // failurePolicy Fail: remove them before any ModelService is written.
    await deleteInstalledWebhookConfigurations();
  });
});

interface Access {
  verb: string;
  /** resource.group, as kubectl auth can-i takes it */
  resource: string;
  subresource?: string;
  name?: string;
  /** undefined: all namespaces */
  namespace?: string;
}

const GENERATED = GENERATED_RESOURCES;

/** What the manager does (reconciler/controller.ts, leader.ts, kube.ts) → must be allowed. */
const NEEDED: Access[] = [
  ...['list', 'watch', 'patch'].map((verb) => ({ verb, resource: 'modelservices.modelplane.ai' })),
  { verb: 'patch', resource: 'modelservices.modelplane.ai', subresource: 'status' },
  { verb: 'update', resource: 'modelservices.modelplane.ai', subresource: 'finalizers' },
  ...GENERATED.flatMap((resource) => ['get', 'list', 'watch', 'create', 'patch', 'delete'].map((verb) => ({ verb, resource }))),
  ...['list', 'watch'].map((verb) => ({ verb, resource: 'httproutes.gateway.networking.k8s.io' })),
  ...['list', 'watch'].map((verb) => ({ verb, resource: 'aigatewayroutes.aigateway.envoyproxy.io' })),
  { verb: 'create', resource: 'events' },
  { verb: 'create', resource: 'leases.coordination.k8s.io', namespace: NAMESPACE },
  { verb: 'get', resource: 'leases.coordination.k8s.io', name: 'modelplane-affinity', namespace: NAMESPACE },
  { verb: 'update', resource: 'leases.coordination.k8s.io', name: 'modelplane-affinity', namespace: NAMESPACE },
];

/** Dangerous or unneeded → must be refused. */
const REFUSED: Access[] = [
  { verb: 'get', resource: 'secrets' },
  { verb: 'list', resource: 'secrets' },
  { verb: 'watch', resource: 'secrets', namespace: NAMESPACE },
  { verb: 'get', resource: 'secrets', name: SECRET, namespace: NAMESPACE },
  { verb: 'list', resource: 'configmaps' },
  { verb: 'create', resource: 'pods' },
  { verb: 'create', resource: 'pods', subresource: 'exec' },
  { verb: 'list', resource: 'pods' },
  { verb: 'list', resource: 'nodes' },
  { verb: 'create', resource: 'serviceaccounts', subresource: 'token' },
  { verb: 'impersonate', resource: 'serviceaccounts' },
  { verb: 'escalate', resource: 'clusterroles.rbac.authorization.k8s.io' },
  { verb: 'bind', resource: 'clusterroles.rbac.authorization.k8s.io' },
  { verb: 'create', resource: 'clusterrolebindings.rbac.authorization.k8s.io' },
  { verb: 'create', resource: 'roles.rbac.authorization.k8s.io', namespace: NAMESPACE },
  { verb: 'patch', resource: 'mutatingwebhookconfigurations.admissionregistration.k8s.io' },
  { verb: 'delete', resource: 'customresourcedefinitions.apiextensions.k8s.io' },
  { verb: 'delete', resource: 'namespaces' },
  // ModelServices are the users': only their status and our finalizer (patch) are ours.
  { verb: 'create', resource: 'modelservices.modelplane.ai' },
  { verb: 'update', resource: 'modelservices.modelplane.ai' },
  { verb: 'delete', resource: 'modelservices.modelplane.ai' },
  { verb: 'get', resource: 'modelservices.modelplane.ai' },
  { verb: 'update', resource: 'modelservices.modelplane.ai', subresource: 'status' },
  // Generated objects are only ever applied (PATCH), never PUT, nor deleted in bulk.
  ...GENERATED.flatMap((resource) => [{ verb: 'update', resource }, { verb: 'deletecollection', resource }]),
  { verb: 'patch', resource: 'deployments.apps', subresource: 'scale' },
  { verb: 'patch', resource: 'deployments.apps', subresource: 'status' },
  // Routes and gateways are read or not touched at all.
  { verb: 'get', resource: 'httproutes.gateway.networking.k8s.io' },
  { verb: 'patch', resource: 'httproutes.gateway.networking.k8s.io' },
  { verb: 'get', resource: 'aigatewayroutes.aigateway.envoyproxy.io' },
  { verb: 'patch', resource: 'aigatewayroutes.aigateway.envoyproxy.io' },
  { verb: 'create', resource: 'gateways.gateway.networking.k8s.io' },
  { verb: 'patch', resource: 'securitypolicies.gateway.envoyproxy.io' },
  { verb: 'patch', resource: 'events' },
  // Leases: only its own, only in its namespace.
  { verb: 'create', resource: 'leases.coordination.k8s.io' },
  { verb: 'update', resource: 'leases.coordination.k8s.io', name: 'kube-controller-manager', namespace: 'kube-system' },
  { verb: 'update', resource: 'leases.coordination.k8s.io', name: 'someone-else', namespace: NAMESPACE },
  { verb: 'delete', resource: 'leases.coordination.k8s.io', name: 'modelplane-affinity', namespace: NAMESPACE },
  { verb: 'list', resource: 'leases.coordination.k8s.io', namespace: NAMESPACE },
];

const describeAccess = (a: Access) =>
  `${a.verb} ${a.resource}${a.name ? `/${a.name}` : ''}${a.subresource ? ` --subresource=${a.subresource}` : ''}${a.namespace ? ` -n ${a.namespace}` : ' -A'}`;

async function canI(a: Access): Promise<string> {
  const args = ['auth', 'can-i', a.verb, a.name ? `${a.resource}/${a.name}` : a.resource, ...(a.subresource ? [`--subresource=${a.subresource}`] : [])];
  const result = await tb.kubectl([...args, ...(a.namespace ? ['-n', a.namespace] : ['--all-namespaces']), AS]);
  return result.stdout.trim() || result.stderr.trim();
}

async function answers(list: Access[]): Promise<Record<string, string>> {
  return Object.fromEntries(await Promise.all(list.map(async (a) => [describeAccess(a), await canI(a)])));
}

describe(`RBAC: kubectl auth can-i --as=system:serviceaccount:${NAMESPACE}:${SA}`, () => {
  it('says yes to every verb the manager uses, cluster-wide except its Lease', async () => {
    const got = await answers(NEEDED);
    expect(got).toEqual(Object.fromEntries(Object.keys(got).map((k) => [k, 'yes'])));
    // Cluster-wide grants hold in any one namespace too (ModelServices live anywhere).
    expect(await canI({ verb: 'patch', resource: 'backendtrafficpolicies.gateway.envoyproxy.io', namespace: 'some-team' })).toBe('yes');
  });

  it('says no to secrets, pods/exec, other kinds, RBAC, writes to ModelServices and other Leases', async () => {
    const got = await answers(REFUSED);
    expect(got).toEqual(Object.fromEntries(Object.keys(got).map((k) => [k, 'no'])));
  });

  it('server-side apply that creates an object is checked against create as well as patch (why both are granted)', async () => {
    const ns = await createNamespace(tb, 'ssa-rbac');
    await tb.kubectlOk(['create', 'serviceaccount', 'probe', '-n', ns]);
    await tb.kubectlOk(['create', 'role', 'patch-only', '-n', ns, '--verb=patch,get', '--resource=services']);
    await tb.kubectlOk(['create', 'rolebinding', 'patch-only', '-n', ns, '--role=patch-only', `--serviceaccount=${ns}:probe`]);
    const service = stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'probe', namespace: ns }, spec: { ports: [{ port: 80 }] } });
    const as = `--as=system:serviceaccount:${ns}:probe`;
    const denied = await tb.kubectl(['apply', '--server-side', '--field-manager=probe', '-f', '-', as], { input: service });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/cannot create resource "services"/);
    await tb.kubectlOk(['create', 'role', 'create', '-n', ns, '--verb=create', '--resource=services']);
    await tb.kubectlOk(['create', 'rolebinding', 'create', '-n', ns, '--role=create', `--serviceaccount=${ns}:probe`]);
    await waitFor('patch+create allowed', async () => (await tb.kubectl(['apply', '--server-side', '--field-manager=probe', '-f', '-', as], { input: service })).code === 0, 10_000);
    await tb.kubectl(['delete', 'namespace', ns, '--wait=false']);
  });
});

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe('the manager, from the Dockerfile-shaped folder, as the ServiceAccount, with the mounted Secret', () => {
  let root: string;
  let layout: ImageLayout;
  let manager: ManagedProcess;
  let baseUrl: string;
  let caPem: string;
  let ns: string;
  // Running as root (CI, containers) we also run as the image's USER, like the pod.
  const asImageUser = process.getuid?.() === 0;
  let runAs: { uid?: number; gid?: number } = {};

  /** The entrypoint of the image, run from the folder (`/app/...` → `<root>/app/...`), with the image's env only. */
  function startFromImage(name: string, args: string[], env: Record<string, string>): ManagedProcess {
    const [program, script = ''] = layout.entrypoint;
    expect(program).toBe('node');
    // As root, drop to the image's USER the way the container runtime would (setpriv execs, so signals reach node).
    const command = runAs.uid === undefined ? [process.execPath] : ['setpriv', `--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, '--clear-groups', process.execPath];
    const [file = '', ...prefix] = command;
    const proc = startProcess(file, [...prefix, join(root, script), ...args], join(work, `${name}.log`), {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...layout.env,
      ...env,
    });
    processes.push(proc);
    return proc;
  }

  beforeAll(async () => {
    root = join(work, 'image');
    layout = await buildImageRoot(root);

    // kubelet: the Secret's keys become files in a read-only folder.
    const secret = JSON.parse(await tb.kubectlOk(['get', 'secret', SECRET, '-n', NAMESPACE, '-o', 'json'])) as { data: Record<string, string> };
    const certDir = join(work, 'serving-certs');
    mkdirSync(certDir);
    for (const [key, value] of Object.entries(secret.data)) writeFileSync(join(certDir, key), Buffer.from(value, 'base64'), { mode: 0o444 });
    caPem = readFileSync(join(certDir, 'ca.crt'), 'utf8');

    // The ServiceAccount's identity: the admin credentials impersonating it (the `as` of a kubeconfig user).
    const admin = JSON.parse(readFileSync(tb.kubeconfig, 'utf8'));
    const cluster = admin.clusters[0].cluster;
    const user = admin.users[0].user;
    const kubeconfig = join(work, 'kubeconfig-manager');
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        ...admin,
        clusters: [{ ...admin.clusters[0], cluster: { server: cluster.server, 'certificate-authority-data': readFileSync(cluster['certificate-authority']).toString('base64') } }],
        users: [{
          name: admin.users[0].name,
          user: {
            'client-certificate-data': readFileSync(user['client-certificate']).toString('base64'),
            'client-key-data': readFileSync(user['client-key']).toString('base64'),
            as: `system:serviceaccount:${NAMESPACE}:${SA}`,
          },
        }],
      }),
      { mode: 0o444 },
    );
    if (asImageUser) {
      const [uid, gid] = (layout.user ?? '').split(':').map(Number);
      runAs = { uid, gid: gid ?? uid };
      for (const dir of [work, root, certDir]) chmodSync(dir, 0o755);
    }

    const port = await freePort();
    baseUrl = `https://127.0.0.1:${port}`;
    manager = startFromImage(
      'manager',
      ['manager', `--port=${port}`, '--host=127.0.0.1', `--cert-dir=${certDir}`, `--ext-proc-image=${IMAGE}`, '--lease-duration=5s', '--renew-deadline=4s', '--retry-period=1s'],
      { KUBECONFIG: kubeconfig, POD_NAMESPACE: NAMESPACE, HOSTNAME: 'install-test-manager' },
    );
    await waitFor('manager /readyz', async () => (await httpsGet(`${baseUrl}/readyz`, caPem)).status === 200, 30_000, () => manager.tail());

    // Only this manager answers admission now: the test bed's webhook steps aside until afterAll.
    const registered = JSON.parse(await tb.kubectlOk(['get', 'mutatingwebhookconfiguration', WEBHOOK_CONFIGURATION_NAME, '-o', 'json'])) as { webhooks: { clientConfig: { caBundle: string } }[] };
    testbedWebhookCa = Buffer.from(registered.webhooks[0]?.clientConfig.caBundle ?? '', 'base64').toString('utf8');
    await unregisterWebhooks(tb);
    const configurations = JSON.parse(webhookConfigurations(baseUrl, caPem)) as { items: ManifestObject[] };
    for (const c of configurations.items) c.metadata.name = TEST_CONFIGURATION_NAME;
    await tb.kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify(configurations) });
    ns = await createNamespace(tb, 'install');
  }, 600_000);

  afterAll(async () => {
    if (ns) await tb.kubectl(['delete', 'namespace', ns, '--wait=false']);
  });

  it('runs as the image user from a folder with production dependencies only', async () => {
    expect(readFileSync(join(root, layout.workdir, 'node_modules', '.package-lock.json'), 'utf8')).not.toMatch(/"node_modules\/(vitest|typescript)"/);
    if (asImageUser) {
      const status = readFileSync(`/proc/${manager.child.pid}/status`, 'utf8');
      expect(status).toMatch(/^Uid:\s+65532\s/m);
    }
  });

  it('serves admission for kubectl apply: defaults and annotations from the mutating webhook', async () => {
    const ms = { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'kimi', namespace: ns }, spec: { endpoints: [{ weight: 1 }, { weight: 1 }], affinity: { type: 'PrefixHash' } } };
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(ms) });
    const live = JSON.parse(await tb.kubectlOk(['get', 'modelservice', 'kimi', '-n', ns, '-o', 'json']));
    expect(live.spec.affinity).toEqual({ type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Conversation', fallback: 'NextEndpoint' });
    expect(live.metadata.annotations).toMatchObject({
      'affinity.modelplane.ai/backend-traffic-policy': 'kimi-affinity',
      'affinity.modelplane.ai/envoy-extension-policy': 'kimi-prefix-hash',
      'affinity.modelplane.ai/ext-proc': 'kimi-prefix-hash',
    });
    const metrics = await httpsGet(`${baseUrl}/metrics`, caPem);
    expect(metrics.body).toMatch(/path="mutate"/);
  });

  it('serves admission for kubectl apply: the validating webhook rejects with the field, the value and the fix', async () => {
    const bad = { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'bad', namespace: ns }, spec: { affinity: { type: 'PrefixHash', prefixBytes: 10 } } };
    const result = await tb.kubectl(['apply', '-f', '-'], { input: stringify(bad) });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('spec.affinity.prefixBytes: Invalid value: 10: must be between 64 and 32768');
    // Answered by this manager (the test bed's webhook is unregistered): its log has the denial.
    await waitFor('denial logged', async () => /"name":"bad".*"result":"denied"/.test(readFileSync(manager.logFile, 'utf8')), 5_000);
  });

  it('leads through its Lease in its own namespace and reconciles: objects, condition, Event', async () => {
    await waitFor('lease', async () => {
      const r = await tb.kubectl(['get', 'lease', 'modelplane-affinity', '-n', NAMESPACE, '-o', 'jsonpath={.spec.holderIdentity}']);
      return r.stdout.startsWith('install-test-manager');
    }, 30_000, () => manager.tail());
    const owned = async () => {
      const out = await tb.kubectlOk(['get', 'backendtrafficpolicies.gateway.envoyproxy.io,envoyextensionpolicies.gateway.envoyproxy.io,deployments.apps,services,poddisruptionbudgets.policy', '-n', ns, '-l', 'affinity.modelplane.ai/model-service=kimi', '-o', 'json']);
      return (JSON.parse(out) as { items: ManifestObject[] }).items;
    };
    await waitFor('generated objects', async () => (await owned()).length === 5, 30_000, () => manager.tail());
    const items = await owned();
    expect(items.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'BackendTrafficPolicy/kimi-affinity',
      'Deployment/kimi-prefix-hash',
      'EnvoyExtensionPolicy/kimi-prefix-hash',
      'PodDisruptionBudget/kimi-prefix-hash',
      'Service/kimi-prefix-hash',
    ]);
    const deployment = items.find((o) => o.kind === 'Deployment') as any;
    expect(deployment.spec.template.spec.containers[0].image).toBe(IMAGE);
    await waitFor('AffinityReady', async () => {
      const ms = JSON.parse(await tb.kubectlOk(['get', 'modelservice', 'kimi', '-n', ns, '-o', 'json']));
      return (ms.status?.conditions ?? []).some((c: { type: string; status: string }) => c.type === 'AffinityReady' && c.status === 'True');
    }, 30_000, () => manager.tail());
    const events = JSON.parse(await tb.kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=kimi', '-o', 'json']));
    expect(events.items.map((e: { reason: string }) => e.reason)).toContain('Applied');
  });

  it('prunes what is no longer needed (delete) when the type changes to None', async () => {
    const ms = { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'kimi', namespace: ns }, spec: { endpoints: [{ weight: 1 }, { weight: 1 }], affinity: { type: 'None' } } };
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(ms) });
    await waitFor('pruned', async () => {
      const r = await tb.kubectlOk(['get', 'backendtrafficpolicies.gateway.envoyproxy.io,deployments.apps', '-n', ns, '-l', 'affinity.modelplane.ai/model-service=kimi', '-o', 'name']);
      return r.trim() === '';
    }, 30_000, () => manager.tail());
  });

  it('was never refused anything by RBAC on the way', () => {
    expect(readFileSync(manager.logFile, 'utf8')).not.toMatch(/forbidden|cannot (get|list|watch|create|patch|update|delete)/i);
  });

  it('starts ext-proc from the same folder, serving gRPC health', async () => {
    const [port, metricsPort] = [await freePort(), await freePort()];
    const proc = startFromImage('ext-proc', ['ext-proc', `--port=${port}`, `--metrics-port=${metricsPort}`, '--host=127.0.0.1', '--prefix-bytes=1024'], {});
    const health = grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, { enums: String })) as unknown as {
      grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    };
    const client = new health.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      Check(request: { service: string }, callback: (error: grpc.ServiceError | null, response?: { status: string }) => void): void;
    };
    try {
      await waitFor(
        'ext-proc health SERVING',
        () => new Promise<boolean>((resolve) => client.Check({ service: '' }, (error, response) => resolve(!error && response?.status === 'SERVING'))),
        30_000,
        () => proc.tail(),
      );
      const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      expect(metrics.status).toBe(200);
    } finally {
      client.close();
    }
  });
});
