// The AffinityReady condition: reasons are constants so users and alerts can
// match on them; computing the next conditions list is pure.
import type { Condition } from './model-service.ts';

export const AFFINITY_READY = 'AffinityReady';

export const Reasons = {
  /** Every generated object is applied and nothing stale remains. */
  Applied: 'Applied',
  /**
   * Applied, but a selected HTTPRoute's shape limits what the gateway can do
   * (fallback NextEndpoint cannot move keys, or the route is rejected); the message says how to fix it.
   */
  FailoverLimited: 'FailoverLimited',
  /** The spec breaks a rule of SPEC §1 (the webhook was bypassed or not installed). */
  InvalidSpec: 'InvalidSpec',
  /** The API server refused an apply or delete; retried with backoff. */
  ApplyFailed: 'ApplyFailed',
  /** BackendTrafficPolicy/EnvoyExtensionPolicy kinds are not served: install Envoy Gateway >= v1.9.0. */
  GatewayCRDsMissing: 'GatewayCRDsMissing',
  /** An object with a generated name exists but is not controlled by this ModelService; it is left untouched. */
  ObjectConflict: 'ObjectConflict',
  /** type None: nothing to generate, earlier objects removed. */
  AffinityDisabled: 'AffinityDisabled',
  /**
   * Applied, but a rule of an AIGatewayRoute found for this model routes to
   * an InferencePool: AI Gateway replaces the load-balancing policy of that
   * rule's cluster, so affinity cannot apply there (its endpoint picker chooses).
   */
  InferencePoolBackend: 'InferencePoolBackend',
  /**
   * Applied, but an AIGatewayRoute in another namespace that routes this model
   * also routes other traffic: a policy on its HTTPRoute would hash that
   * traffic too, so nothing is attached to it.
   */
  RouteShared: 'RouteShared',
  /** Applied, but an AIGatewayRoute of this namespace routes this model without the label our policies select. */
  RouteNotSelected: 'RouteNotSelected',
} as const;
export type Reason = (typeof Reasons)[keyof typeof Reasons];

/** Reasons of Events that report an action or a route, not a condition. */
export const EventReasons = {
  /** Generated objects no longer needed were deleted. */
  Pruned: 'Pruned',
  /** A route was found and our policies attach to it; the message says where and what the route shape allows. */
  RouteAttached: 'RouteAttached',
} as const;

export interface ConditionInput {
  status: 'True' | 'False';
  reason: Reason;
  message: string;
  observedGeneration?: number;
}

/**
 * Returns the conditions with AffinityReady set, or undefined when nothing
 * changed (so the reconciler writes status only on a real change, and its own
 * write does not trigger endless reconciles). lastTransitionTime moves only
 * when the status flips.
 */
export function setAffinityReady(current: readonly Condition[] | undefined, input: ConditionInput, now: Date): Condition | undefined {
  const existing = (current ?? []).find((c) => c.type === AFFINITY_READY);
  if (
    existing &&
    existing.status === input.status &&
    existing.reason === input.reason &&
    existing.message === input.message &&
    existing.observedGeneration === input.observedGeneration
  ) {
    return undefined;
  }
  return {
    type: AFFINITY_READY,
    status: input.status,
    reason: input.reason,
    message: input.message,
    ...(input.observedGeneration !== undefined ? { observedGeneration: input.observedGeneration } : {}),
    lastTransitionTime: existing && existing.status === input.status ? existing.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
}
