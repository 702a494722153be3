// Pure admission: AdmissionReview in, AdmissionReview out. The HTTPS shell in
// webhook/ only parses the body, calls `review`, and writes the answer.
import { isDeepStrictEqual } from 'node:util';
import jsonPatch from 'fast-json-patch';
import { z } from 'zod';
import { applyDefaults, dropStaleTypeFields, validate } from './affinity.ts';
import { withGeneratedObjectAnnotations } from './annotations.ts';
import { type FieldErrorType, fieldErrorBody, formatInvalidObject } from './field-errors.ts';
import { MODEL_SERVICE_GROUP, MODEL_SERVICE_KIND, type ModelService } from './model-service.ts';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

const groupVersionKind = z.object({ group: z.string(), version: z.string(), kind: z.string() });

/** Strict enough to refuse what is not an AdmissionReview; loose on fields we never read. */
const admissionReviewSchema = z.object({
  apiVersion: z.literal(ADMISSION_API_VERSION),
  kind: z.literal('AdmissionReview'),
  request: z.object({
    uid: z.string().min(1),
    kind: groupVersionKind,
    operation: z.enum(['CREATE', 'UPDATE', 'DELETE', 'CONNECT']),
    name: z.string().optional(),
    namespace: z.string().optional(),
    object: z.record(z.string(), z.unknown()).nullable().optional(),
    oldObject: z.record(z.string(), z.unknown()).nullable().optional(),
    dryRun: z.boolean().optional(),
  }),
});

export type AdmissionRequest = z.infer<typeof admissionReviewSchema>['request'];

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: 'JSONPatch';
  /** base64 of the RFC 6902 patch */
  patch?: string;
  warnings?: string[];
  status?: {
    code: number;
    reason: string;
    message: string;
    details?: { name?: string; group: string; kind: string; causes: { reason: string; field: string; message: string }[] };
  };
}

export interface AdmissionReviewResponse {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

export type ParseResult = { ok: true; request: AdmissionRequest } | { ok: false; error: string };

/** Parses an AdmissionReview body; the error says which field is wrong. */
export function parseAdmissionReview(body: unknown): ParseResult {
  const parsed = admissionReviewSchema.safeParse(body);
  if (parsed.success) return { ok: true, request: parsed.data.request };
  const first = parsed.error.issues[0];
  const where = first && first.path.length > 0 ? first.path.join('.') : 'body';
  return { ok: false, error: `not an admission.k8s.io/v1 AdmissionReview: ${where}: ${first?.message ?? 'invalid'}` };
}

export type AdmissionMode = 'mutate' | 'validate';

/** metav1.CauseType values for each field error type. */
const CAUSE_TYPES: Record<FieldErrorType, string> = {
  Required: 'FieldValueRequired',
  Invalid: 'FieldValueInvalid',
  NotSupported: 'FieldValueNotSupported',
  TooLong: 'FieldValueTooLong',
  Forbidden: 'FieldValueForbidden',
};

/** Why a request passes untouched, or undefined when it is ours to judge (logged by the shell). */
export function skipReason(request: AdmissionRequest): string | undefined {
  if (request.kind.group !== MODEL_SERVICE_GROUP || request.kind.kind !== MODEL_SERVICE_KIND) {
    return `not a ModelService (${request.kind.group}/${request.kind.kind})`;
  }
  if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') return `operation ${request.operation}`;
  if (request.object === null || request.object === undefined) return 'no object in request';
  return undefined;
}

/** The defaulted, annotated ModelService the mutating webhook turns into a patch. */
export function mutateModelService(ms: ModelService, old?: ModelService): ModelService {
  const defaulted = applyDefaults(old === undefined ? ms : dropStaleTypeFields(old, ms));
  // Annotations name objects that will exist; an invalid spec gets none and is denied by validation.
  return validate(defaulted).errors.length === 0 ? withGeneratedObjectAnnotations(defaulted) : defaulted;
}

/** RFC 6902 patch from original to mutated (keys with `/` escaped as `~1`). */
export function mutationPatch(original: ModelService, old?: ModelService): jsonPatch.Operation[] {
  return jsonPatch.compare(original, mutateModelService(original, old));
}

/**
 * An update that leaves a stored invalid spec as it is (metadata only: a
 * label, the reconciler's cleanup finalizer) is not judged again, as the API
 * server ratchets its own validation: refusing it would not make the spec
 * valid, and would keep a ModelService stored while the webhook was bypassed
 * from ever losing its finalizer, so it could never be deleted.
 */
function specUnchanged(request: AdmissionRequest): boolean {
  return request.operation === 'UPDATE' && request.oldObject != null && isDeepStrictEqual(request.oldObject.spec, request.object?.spec);
}

export function admit(request: AdmissionRequest, mode: AdmissionMode): AdmissionResponse {
  const allowed: AdmissionResponse = { uid: request.uid, allowed: true };
  if (skipReason(request) !== undefined) return allowed;
  const ms = request.object as unknown as ModelService;

  if (mode === 'mutate') {
    const old = request.operation === 'UPDATE' && request.oldObject ? (request.oldObject as unknown as ModelService) : undefined;
    const patch = mutationPatch(ms, old);
    if (patch.length === 0) return allowed;
    return { ...allowed, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') };
  }

  const { errors, warnings } = validate(ms);
  const withWarnings = warnings.length > 0 ? { warnings } : {};
  if (errors.length === 0 || specUnchanged(request)) return { ...allowed, ...withWarnings };
  const name = ms.metadata?.name ?? request.name ?? '';
  return {
    uid: request.uid,
    allowed: false,
    ...withWarnings,
    status: {
      code: 422,
      reason: 'Invalid',
      message: formatInvalidObject(`${MODEL_SERVICE_KIND}.${MODEL_SERVICE_GROUP}`, name, errors),
      details: {
        name,
        group: MODEL_SERVICE_GROUP,
        kind: MODEL_SERVICE_KIND,
        // As the API server does: kubectl prints each cause as `<field>: <message>`.
        causes: errors.map((e) => ({ reason: CAUSE_TYPES[e.type], field: e.path, message: fieldErrorBody(e) })),
      },
    },
  };
}

/**
 * A rule that throws on a shape it did not expect (the mutating webhook runs
 * before the API server checks the CRD schema, so `spec.endpoints` may be a
 * string) is a refusal that says so, never a 500 that tells the user nothing.
 */
function refusal(request: AdmissionRequest, error: unknown): AdmissionResponse {
  const name = (request.object as { metadata?: { name?: unknown } } | null | undefined)?.metadata?.name ?? request.name ?? '';
  const message = `${MODEL_SERVICE_KIND}.${MODEL_SERVICE_GROUP} "${String(name)}" could not be checked: ${(error as Error)?.message ?? String(error)}; check that metadata and spec are objects and spec.endpoints is a list`;
  return { uid: request.uid, allowed: false, status: { code: 400, reason: 'BadRequest', message } };
}

/** The full reply: apiVersion and kind echoed, uid echoed inside `admit`. */
export function review(request: AdmissionRequest, mode: AdmissionMode): AdmissionReviewResponse {
  let response: AdmissionResponse;
  try {
    response = admit(request, mode);
  } catch (error) {
    response = refusal(request, error);
  }
  return { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response };
}
