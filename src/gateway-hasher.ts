// The Gateway-level hasher: one per Gateway that carries AIGatewayRoutes of
// PrefixHash ModelServices. Envoy builds a request's filter chain from the
// route the client's headers first match; with the model only in the body
// that is the catch-all of the listener's oldest AIGatewayRoute, so a
// route-targeted hasher runs only for that route (README "Envoy AI Gateway").
// A Gateway-targeted EnvoyExtensionPolicy runs for every route, and this
// hasher picks each request's key settings by the x-ai-eg-model header that
// AI Gateway's processor set before ours runs. This file holds what the
// renderer, the reconciler and the ext-proc command share about it.
import type { PrefixKey } from './model-service.ts';
import { PREFIX_KEYS } from './model-service.ts';
import { generatedName, labelValue } from './naming.ts';

/** On every object of a Gateway's hasher: the Gateway's name (shortened like a ModelService name when long). */
export const GATEWAY_LABEL = 'affinity.modelplane.ai/gateway';

export interface GatewayRef {
  namespace: string;
  name: string;
}

/** How one model's requests are keyed: its ModelService's prefixKey and prefixBytes. */
export interface ModelKeySettings {
  /** The x-ai-eg-model value (Modelplane: `<namespace>/<name>` of the ModelService). */
  model: string;
  prefixKey: PrefixKey;
  prefixBytes: number;
  /** `<namespace>/<name>` of the ModelService the settings come from. */
  modelService: string;
}

/** The hasher's Deployment, Service, PodDisruptionBudget and EnvoyExtensionPolicy share this name, in the Gateway's namespace. */
export function gatewayHasherName(gateway: GatewayRef): string {
  return generatedName(gateway.name, 'gateway-prefix-hash');
}

export function gatewayLabelValue(gateway: GatewayRef): string {
  return labelValue(gateway.name);
}

/** `--model` value: `<model>=<prefixKey>:<prefixBytes>`; the model is everything before the last `=`. */
export function formatModelFlag(settings: Pick<ModelKeySettings, 'model' | 'prefixKey' | 'prefixBytes'>): string {
  return `${settings.model}=${settings.prefixKey}:${settings.prefixBytes}`;
}

export type ParsedModelFlag = { ok: true; settings: Pick<ModelKeySettings, 'model' | 'prefixKey' | 'prefixBytes'> } | { ok: false; message: string };

export function parseModelFlag(raw: string, prefixBytesRange: { min: number; max: number }): ParsedModelFlag {
  const at = raw.lastIndexOf('=');
  const usage = `expected <model>=<${PREFIX_KEYS.join('|')}>:<prefixBytes>, for example default/llama=Conversation:1024, got ${JSON.stringify(raw)}`;
  if (at <= 0) return { ok: false, message: usage };
  const model = raw.slice(0, at);
  const match = /^([A-Za-z]+):(\d+)$/.exec(raw.slice(at + 1));
  if (!match) return { ok: false, message: usage };
  const prefixKey = PREFIX_KEYS.find((k) => k === match[1]);
  if (prefixKey === undefined) return { ok: false, message: `prefix key ${JSON.stringify(match[1])} is not one of ${PREFIX_KEYS.join(', ')}; ${usage}` };
  const prefixBytes = Number(match[2]);
  if (prefixBytes < prefixBytesRange.min || prefixBytes > prefixBytesRange.max) {
    return { ok: false, message: `prefixBytes ${prefixBytes} of model ${model} is outside ${prefixBytesRange.min}..${prefixBytesRange.max}` };
  }
  return { ok: true, settings: { model, prefixKey, prefixBytes } };
}
