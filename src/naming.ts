// The one source of generated-object names and ownership labels, shared by the
// webhook (annotations), the reconciler and `render`.
import { createHash } from 'node:crypto';

export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'modelplane-affinity';
export const MODEL_SERVICE_LABEL = 'affinity.modelplane.ai/model-service';
/** The label Crossplane puts on everything a composite resource composes, the HTTPRoute included. */
export const CROSSPLANE_COMPOSITE_LABEL = 'crossplane.io/composite';
/**
 * On objects outside the ModelService's namespace (policies beside an
 * AIGatewayRoute's HTTPRoute), which cannot carry an ownerReference to it:
 * with MODEL_SERVICE_LABEL it names the owner, for pruning and cleanup.
 */
export const MODEL_SERVICE_NAMESPACE_LABEL = 'affinity.modelplane.ai/model-service-namespace';
/** Held on a ModelService while objects in other namespaces exist, so its deletion waits until they are deleted. */
export const CLEANUP_FINALIZER = 'affinity.modelplane.ai/cleanup';

const MAX_LABEL = 63;
const HASH_LENGTH = 8;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Stable across processes and releases: the same name always shortens the same way. */
function stableHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, HASH_LENGTH);
}

export function isDns1035Label(value: string): boolean {
  return value.length <= MAX_LABEL && DNS1035_LABEL.test(value);
}

/**
 * `<modelServiceName>-<suffix>` when that is a valid DNS-1035 label (Service
 * names must be). Otherwise (a name that is too long, has dots, or starts with
 * a digit) the name is made label-safe and cut, and an 8-hex hash of the full
 * original name keeps it unique: `<cut>-<hash>-<suffix>`.
 */
export function generatedName(modelServiceName: string, suffix: string): string {
  const plain = `${modelServiceName}-${suffix}`;
  if (isDns1035Label(plain)) return plain;
  const tail = `-${stableHash(modelServiceName)}-${suffix}`;
  let safe = modelServiceName.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  if (!/^[a-z]/.test(safe)) safe = `m${safe}`;
  const cut = safe.slice(0, MAX_LABEL - tail.length).replace(/-+$/, '');
  return `${cut}${tail}`;
}

/**
 * A label value for the ModelService name: unchanged when it fits (63
 * characters), otherwise cut and given the same stable hash suffix.
 */
export function labelValue(modelServiceName: string): string {
  if (modelServiceName.length <= MAX_LABEL && LABEL_VALUE.test(modelServiceName)) return modelServiceName;
  const tail = `-${stableHash(modelServiceName)}`;
  const cut = modelServiceName.slice(0, MAX_LABEL - tail.length).replace(/[^A-Za-z0-9]+$/, '');
  return `${cut}${tail}`;
}

export interface GeneratedNames {
  /** BackendTrafficPolicy (Session and PrefixHash). */
  backendTrafficPolicy: string;
  /** EnvoyExtensionPolicy, and the ext_proc Deployment, Service and PodDisruptionBudget (PrefixHash). */
  prefixHash: string;
}

export function generatedNames(modelServiceName: string): GeneratedNames {
  return {
    backendTrafficPolicy: generatedName(modelServiceName, 'affinity'),
    prefixHash: generatedName(modelServiceName, 'prefix-hash'),
  };
}

/**
 * Names of the policies a ModelService puts in another namespace (beside an
 * AIGatewayRoute's HTTPRoute), where ModelServices of several namespaces may
 * meet: `<namespace>.<name>` is unambiguous (namespaces have no dots), and
 * the dot always gives it the stable hash suffix, so `a-b/c` and `a/b-c` stay apart.
 */
export function crossNamespaceNames(modelServiceNamespace: string, modelServiceName: string): GeneratedNames {
  return generatedNames(`${modelServiceNamespace}.${modelServiceName}`);
}

/** Labels every generated object carries. */
export function ownershipLabels(modelServiceName: string): Record<string, string> {
  return { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [MODEL_SERVICE_LABEL]: labelValue(modelServiceName) };
}

/** Labels of an object outside the ModelService's namespace: ours, and whose (it has no ownerReference). */
export function crossNamespaceLabels(modelServiceNamespace: string, modelServiceName: string): Record<string, string> {
  return { ...ownershipLabels(modelServiceName), [MODEL_SERVICE_NAMESPACE_LABEL]: modelServiceNamespace };
}
