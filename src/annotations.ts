// The `affinity.modelplane.ai/*` annotations that tell a user which objects
// were generated for a ModelService. Informational only: the reconciler never
// reads them (it derives names itself).
import { affinityType } from './affinity.ts';
import type { ModelService } from './model-service.ts';
import { generatedNames } from './naming.ts';

export const BACKEND_TRAFFIC_POLICY_ANNOTATION = 'affinity.modelplane.ai/backend-traffic-policy';
export const ENVOY_EXTENSION_POLICY_ANNOTATION = 'affinity.modelplane.ai/envoy-extension-policy';
export const EXT_PROC_ANNOTATION = 'affinity.modelplane.ai/ext-proc';
export const GENERATED_OBJECT_ANNOTATIONS = [
  BACKEND_TRAFFIC_POLICY_ANNOTATION,
  ENVOY_EXTENSION_POLICY_ANNOTATION,
  EXT_PROC_ANNOTATION,
] as const;

/** The annotations that apply to this (defaulted, valid) ModelService. */
export function generatedObjectAnnotations(ms: ModelService): Record<string, string> {
  const names = generatedNames(ms.metadata.name ?? '');
  switch (affinityType(ms)) {
    case 'Session':
      return { [BACKEND_TRAFFIC_POLICY_ANNOTATION]: names.backendTrafficPolicy };
    case 'PrefixHash':
      return {
        [BACKEND_TRAFFIC_POLICY_ANNOTATION]: names.backendTrafficPolicy,
        [ENVOY_EXTENSION_POLICY_ANNOTATION]: names.prefixHash,
        [EXT_PROC_ANNOTATION]: names.prefixHash,
      };
    case 'None':
      return {};
  }
}

/**
 * Returns the ModelService with exactly the generated-object annotations that
 * apply; others are removed. A new object: only `metadata` and its
 * `annotations` are new, the rest is shared with `ms` (see `applyDefaults`).
 */
export function withGeneratedObjectAnnotations(ms: ModelService): ModelService {
  const wanted = generatedObjectAnnotations(ms);
  // Keys keep their place (delete, then assign), so an unchanged object diffs to an empty patch.
  const next: Record<string, string> = { ...ms.metadata.annotations };
  for (const key of GENERATED_OBJECT_ANNOTATIONS) if (!(key in wanted)) delete next[key];
  Object.assign(next, wanted);
  if (Object.keys(next).length === 0 && ms.metadata.annotations === undefined) return { ...ms };
  return { ...ms, metadata: { ...ms.metadata, annotations: next } };
}
