// The ModelService as this add-on sees it. Fields Modelplane owns are kept
// loose (we read them, we never rewrite them).

export const MODEL_SERVICE_GROUP = 'modelplane.ai';
export const MODEL_SERVICE_VERSION = 'v1alpha1';
export const MODEL_SERVICE_API_VERSION = `${MODEL_SERVICE_GROUP}/${MODEL_SERVICE_VERSION}`;
export const MODEL_SERVICE_KIND = 'ModelService';
export const MODEL_SERVICE_PLURAL = 'modelservices';

export const AFFINITY_TYPES = ['PrefixHash', 'Session', 'None'] as const;
export type AffinityType = (typeof AFFINITY_TYPES)[number];
export const FALLBACKS = ['NextEndpoint', 'None'] as const;
export type Fallback = (typeof FALLBACKS)[number];
/** What PrefixHash takes its first prefixBytes bytes from (SPEC §4): the conversation's opening, or the raw body. */
export const PREFIX_KEYS = ['Conversation', 'Body'] as const;
export type PrefixKey = (typeof PREFIX_KEYS)[number];

export interface Affinity {
  type?: AffinityType;
  prefixBytes?: number;
  prefixKey?: PrefixKey;
  sessionHeader?: string;
  fallback?: Fallback;
}

export interface ModelEndpointRef {
  selector?: { matchLabels?: Record<string, string> };
  weight?: number;
}

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  generation?: number;
  [key: string]: unknown;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

export interface ModelService {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: {
    endpoints?: ModelEndpointRef[];
    affinity?: Affinity;
    [key: string]: unknown;
  };
  status?: { conditions?: Condition[]; [key: string]: unknown };
}

/** Any Kubernetes object we generate or read. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta & { ownerReferences?: OwnerReference[] };
  [key: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export function isModelService(obj: unknown): obj is ModelService {
  if (typeof obj !== 'object' || obj === null) return false;
  const o = obj as { apiVersion?: unknown; kind?: unknown };
  return o.kind === MODEL_SERVICE_KIND && typeof o.apiVersion === 'string' && o.apiVersion.startsWith(`${MODEL_SERVICE_GROUP}/`);
}
