// Field errors in the shape and wording Kubernetes itself uses
// (k8s.io/apimachinery/pkg/util/validation/field), so a user who runs
// `kubectl apply` reads our messages exactly like the API server's own.

export type FieldErrorType = 'Required' | 'Invalid' | 'NotSupported' | 'TooLong' | 'Forbidden';

export interface FieldError {
  type: FieldErrorType;
  /** Dotted field path, e.g. `spec.affinity.prefixBytes`. */
  path: string;
  /** The offending value (Invalid, NotSupported). */
  value?: unknown;
  /** What is wrong and, where users slip, how to fix it. */
  message: string;
  /** Allowed values (NotSupported only). */
  supported?: readonly string[];
}

export const required = (path: string, message: string): FieldError => ({ type: 'Required', path, message });

export const invalid = (path: string, value: unknown, message: string): FieldError => ({
  type: 'Invalid',
  path,
  value,
  message,
});

export const notSupported = (path: string, value: unknown, supported: readonly string[]): FieldError => ({
  type: 'NotSupported',
  path,
  value,
  supported,
  message: `supported values: ${supported.map((s) => JSON.stringify(s)).join(', ')}`,
});

export const tooLong = (path: string, maxLength: number): FieldError => ({
  type: 'TooLong',
  path,
  message: `may not be more than ${maxLength} bytes`,
});

export const forbidden = (path: string, message: string): FieldError => ({ type: 'Forbidden', path, message });

const TYPE_LABELS: Record<FieldErrorType, string> = {
  Required: 'Required value',
  Invalid: 'Invalid value',
  NotSupported: 'Unsupported value',
  TooLong: 'Too long',
  Forbidden: 'Forbidden',
};

/** Renders a value the way Go's `%#v` does for JSON-like data: strings quoted, numbers bare. */
function formatValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === undefined) return 'null';
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return String(value);
}

/** The part after the field: `Invalid value: 10: must be between 64 and 32768` */
export function fieldErrorBody(error: FieldError): string {
  const label = TYPE_LABELS[error.type];
  const hasValue = error.type === 'Invalid' || error.type === 'NotSupported';
  return hasValue ? `${label}: ${formatValue(error.value)}: ${error.message}` : `${label}: ${error.message}`;
}

/** `spec.affinity.prefixBytes: Invalid value: 10: must be between 64 and 32768` */
export function formatFieldError(error: FieldError): string {
  return `${error.path}: ${fieldErrorBody(error)}`;
}

/**
 * The summary line the API server prints for an invalid object:
 * `ModelService.modelplane.ai "kimi" is invalid: [a, b]` (brackets only when
 * there is more than one error).
 */
export function formatInvalidObject(kindGroup: string, name: string, errors: readonly FieldError[]): string {
  const messages = errors.map(formatFieldError);
  const body = messages.length === 1 ? messages[0] : `[${messages.join(', ')}]`;
  return `${kindGroup} ${JSON.stringify(name)} is invalid: ${body}`;
}
