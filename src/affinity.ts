// The `spec.affinity` rules of SPEC §1, once: shape, defaults, validation and
// warnings. The webhook, the reconciler and `render` all call these.
import { z } from 'zod';
import {
  type FieldError,
  forbidden,
  invalid,
  notSupported,
  required,
  tooLong,
} from './field-errors.ts';
import {
  AFFINITY_TYPES,
  type Affinity,
  type AffinityType,
  FALLBACKS,
  type ModelService,
  PREFIX_KEYS,
  type PrefixKey,
} from './model-service.ts';

/** Fewer bytes than this only cover the JSON envelope and put every request on one cluster. */
export const PREFIX_BYTES_MIN = 64;
/** Envoy Gateway's default connection buffer (32 KiB): BufferedPartial never sends more. */
export const PREFIX_BYTES_MAX = 32768;
export const PREFIX_BYTES_DEFAULT = 1024;
/** Also what a PrefixHash object written before prefixKey existed gets: its keys move once on upgrade. */
export const PREFIX_KEY_DEFAULT: PrefixKey = 'Conversation';
export const SESSION_HEADER_MAX = 256;
export const FALLBACK_DEFAULT = 'NextEndpoint';
/** The header the ext_proc hasher writes and the gateway hashes in PrefixHash mode. */
export const PROMPT_HASH_HEADER = 'x-prompt-hash';

const AFFINITY_PATH = 'spec.affinity';
const AFFINITY_FIELDS = ['type', 'prefixBytes', 'prefixKey', 'sessionHeader', 'fallback'] as const;

/** Headers a proxy consumes or rewrites before routing, so hashing them cannot pin a conversation. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade'];
/** RFC 9110 §5.6.2 token: tchar = letters, digits and !#$%&'*+-.^_`|~ */
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Shape only: types, enums and unknown fields. Bounds and cross-field rules are in `validateAffinity`. */
const affinityShape = z.strictObject({
  type: z.enum(AFFINITY_TYPES).optional(),
  prefixBytes: z.number().optional(),
  prefixKey: z.enum(PREFIX_KEYS).optional(),
  sessionHeader: z.string().optional(),
  fallback: z.enum(FALLBACKS).optional(),
});

/** The effective affinity type: an absent `affinity` or `type` means None. */
export function affinityType(ms: ModelService): AffinityType {
  const type = ms.spec?.affinity?.type;
  return isAffinityType(type) ? type : 'None';
}

/**
 * Returns the ModelService with SPEC §1 defaults written: `type: None` when
 * `affinity` has no type, `prefixBytes` and `prefixKey` only for PrefixHash, `fallback` only
 * when the type is not None. Fields that are present (even invalid ones) are
 * left for validation to judge; an unknown type gets no defaults.
 *
 * Like the other rules here it never writes into its argument: it returns a
 * new object and shares the parts it does not change (endpoints, labels, …)
 * with `ms`, so treat both as read-only. Deep copies were a third of the
 * CPU of a review (bench/RESULTS.md, fifth session).
 */
export function applyDefaults(ms: ModelService): ModelService {
  const affinity: unknown = ms.spec?.affinity;
  if (!isPlainObject(affinity)) return { ...ms };
  const type = affinity.type === undefined ? 'None' : affinity.type;
  const defaulted: Record<string, unknown> = { ...affinity, type };
  if (type === 'PrefixHash' && affinity.prefixBytes === undefined) defaulted.prefixBytes = PREFIX_BYTES_DEFAULT;
  if (type === 'PrefixHash' && affinity.prefixKey === undefined) defaulted.prefixKey = PREFIX_KEY_DEFAULT;
  if ((type === 'PrefixHash' || type === 'Session') && affinity.fallback === undefined) defaulted.fallback = FALLBACK_DEFAULT;
  return withAffinity(ms, defaulted);
}

/**
 * On an update that changes `type`, drops fields that only the old type used
 * and that the update left as they were (typically defaults written for the
 * old type), as the API server does for Service type changes. A field the
 * update sets anew is kept and judged (warned about) as usual. Returns a new
 * object, as `applyDefaults` does.
 */
export function dropStaleTypeFields(old: ModelService, updated: ModelService): ModelService {
  const before: unknown = old.spec?.affinity;
  const after: unknown = updated.spec?.affinity;
  if (!isPlainObject(before) || !isPlainObject(after)) return { ...updated };
  const oldType = before.type ?? 'None';
  const newType = after.type ?? 'None';
  if (oldType === newType || !isAffinityType(newType) || !isAffinityType(oldType)) return { ...updated };
  const kept: Record<string, unknown> = { ...after };
  for (const field of AFFINITY_FIELDS) {
    const staleForNew = !FIELDS_USED_BY[newType].includes(field) && FIELDS_USED_BY[oldType].includes(field);
    if (staleForNew && after[field] !== undefined && after[field] === before[field]) delete kept[field];
  }
  return withAffinity(updated, kept);
}

/** `ms` with `spec.affinity` replaced; the rest of the spec and the object is shared. */
function withAffinity(ms: ModelService, affinity: Record<string, unknown>): ModelService {
  return { ...ms, spec: { ...ms.spec, affinity: affinity as Affinity } };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isAffinityType(value: unknown): value is AffinityType {
  return (AFFINITY_TYPES as readonly unknown[]).includes(value);
}

export interface ValidationResult {
  errors: FieldError[];
  warnings: string[];
}

/** Converts zod's issues about the affinity object into Kubernetes field errors. */
function shapeErrors(affinity: unknown): FieldError[] {
  const parsed = affinityShape.safeParse(affinity);
  if (parsed.success) return [];
  const errors: FieldError[] = [];
  for (const issue of parsed.error.issues) {
    const field = issue.path.length > 0 ? `${AFFINITY_PATH}.${issue.path.join('.')}` : AFFINITY_PATH;
    const value = issue.path.reduce<unknown>((v, k) => (v as Record<PropertyKey, unknown> | undefined)?.[k], affinity);
    switch (issue.code) {
      case 'unrecognized_keys':
        for (const key of issue.keys) {
          errors.push(
            forbidden(
              `${field}.${key}`,
              `unknown field; supported fields are ${AFFINITY_FIELDS.map((f) => JSON.stringify(f)).join(', ')}`,
            ),
          );
        }
        break;
      case 'invalid_value':
        errors.push(notSupported(field, value, issue.values.map(String)));
        break;
      case 'invalid_type':
        // An enum field with a non-string value reports as invalid_type too.
        errors.push(
          issue.path.length === 0
            ? invalid(field, value, 'must be an object')
            : invalid(field, value, `must be ${issue.expected === 'number' ? 'an integer' : `a ${issue.expected}`}`),
        );
        break;
      default:
        errors.push(invalid(field, value, issue.message));
    }
  }
  return errors;
}

function validatePrefixBytes(value: number, path: string): FieldError[] {
  if (!Number.isInteger(value)) return [invalid(path, value, 'must be an integer')];
  if (value < PREFIX_BYTES_MIN || value > PREFIX_BYTES_MAX) {
    return [invalid(path, value, `must be between ${PREFIX_BYTES_MIN} and ${PREFIX_BYTES_MAX}`)];
  }
  return [];
}

/** SPEC §1 rules for `sessionHeader` when it applies (type Session). */
export function validateSessionHeader(value: string | undefined, path: string): FieldError[] {
  if (value === undefined || value === '') return [required(path, 'required when type is Session')];
  if (value.length > SESSION_HEADER_MAX) return [tooLong(path, SESSION_HEADER_MAX)];
  if (value.startsWith(':')) {
    return [invalid(path, value, 'must not be an HTTP/2 pseudo-header; name a regular request header such as X-Session-ID')];
  }
  if (!HTTP_TOKEN.test(value)) {
    return [
      invalid(path, value, "must be an HTTP header name: letters, digits and !#$%&'*+-.^_`|~ only (for example X-Session-ID)"),
    ];
  }
  const lower = value.toLowerCase();
  if (HOP_BY_HOP.includes(lower)) {
    return [invalid(path, value, `must not be a hop-by-hop header (${HOP_BY_HOP.join(', ')}): proxies drop it before routing`)];
  }
  if (lower === 'host' || lower === 'content-length') {
    return [invalid(path, value, 'must not be host or content-length: every request of a client carries the same or a varying value; name a session header such as X-Session-ID')];
  }
  if (lower === PROMPT_HASH_HEADER) {
    return [invalid(path, value, `is reserved: the prefix hasher overwrites ${PROMPT_HASH_HEADER}; use type: PrefixHash, or another header`)];
  }
  return [];
}

/** Fields set but unused by the chosen type are accepted with a warning. */
const FIELDS_USED_BY: Record<AffinityType, readonly string[]> = {
  PrefixHash: ['type', 'prefixBytes', 'prefixKey', 'fallback'],
  Session: ['type', 'sessionHeader', 'fallback'],
  None: ['type'],
};

function ignoredFieldWarnings(affinity: Affinity, type: AffinityType): string[] {
  return AFFINITY_FIELDS.filter((f) => affinity[f] !== undefined && !FIELDS_USED_BY[type].includes(f)).map(
    (f) => `${AFFINITY_PATH}.${f} is ignored when type is ${type}`,
  );
}

/**
 * With affinity, Envoy Gateway may merge the backendRefs into one Maglev
 * cluster, and Maglev then ignores their weights (envoyproxy/gateway#9775).
 */
function endpointWeightWarnings(ms: ModelService, type: AffinityType): string[] {
  if (type === 'None') return [];
  // spec.endpoints is Modelplane's field: its shape is the CRD schema's to judge (after this webhook), so
  // a value that is not a list of objects gets no warning here rather than an exception.
  const endpoints: unknown = ms.spec?.endpoints;
  const weights = Array.isArray(endpoints) ? endpoints.map((e: unknown) => (typeof e === 'object' && e !== null ? ((e as { weight?: unknown }).weight ?? 1) : 1)) : [];
  if (new Set(weights).size <= 1) return [];
  return [
    `spec.endpoints: unequal weights (${weights.join(', ')}) are not honoured exactly with affinity: ` +
      'consistent hashing spreads keys evenly, and when backendRefs collapse into one cluster Maglev ignores ' +
      'their weights (envoyproxy/gateway#9775)',
  ];
}

/**
 * Validates a (defaulted) ModelService's affinity: every violation at once, in
 * Kubernetes' format, plus warnings. Never throws.
 */
export function validate(ms: ModelService): ValidationResult {
  const affinity: unknown = ms.spec?.affinity;
  if (affinity === undefined || affinity === null) return { errors: [], warnings: [] };
  const errors = shapeErrors(affinity);
  if (!isPlainObject(affinity)) return { errors, warnings: [] };
  const a = affinity as Affinity;
  const shapeFailed = new Set(errors.map((e) => e.path));
  const type = isAffinityType(a.type) ? a.type : undefined;

  if (type === 'PrefixHash' && typeof a.prefixBytes === 'number') {
    errors.push(...validatePrefixBytes(a.prefixBytes, `${AFFINITY_PATH}.prefixBytes`));
  }
  const sessionHeaderPath = `${AFFINITY_PATH}.sessionHeader`;
  if (type === 'Session' && !shapeFailed.has(sessionHeaderPath)) {
    errors.push(...validateSessionHeader(a.sessionHeader, sessionHeaderPath));
  }
  const warnings = type === undefined ? [] : [...ignoredFieldWarnings(a, type), ...endpointWeightWarnings(ms, type)];
  return { errors, warnings };
}
