// Envoy's ext_proc protocol, loaded from Envoy's own proto definitions as the
// npm package @grpc/grpc-js-xds ships them (nothing is copied into this repo).
// The server and the Envoy-side test harness load the same definitions.
import { createRequire } from 'node:module';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';

const require = createRequire(import.meta.url);
const xdsDeps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');

export const EXT_PROC_SERVICE = 'envoy.service.ext_proc.v3.ExternalProcessor';
export const PROCESS_METHOD_PATH = `/${EXT_PROC_SERVICE}/Process`;

// keepCase: field names exactly as in the proto (request_body, raw_value), so
// code and SPEC read alike. oneofs: a virtual `request`/`response` field names
// the member of the oneof that is set. defaults: false, so an absent
// end_of_stream is undefined rather than false; callers treat both alike.
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
  includeDirs: ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((dir) => path.join(xdsDeps, dir)),
};

let cached: protoLoader.MethodDefinition<ProcessingRequest, ProcessingResponse> | undefined;

/** The method definition of ExternalProcessor/Process (serializers included). */
export function processMethod(): protoLoader.MethodDefinition<ProcessingRequest, ProcessingResponse> {
  if (cached === undefined) {
    const pkg = protoLoader.loadSync('envoy/service/ext_proc/v3/external_processor.proto', LOADER_OPTIONS);
    const service = pkg[EXT_PROC_SERVICE] as protoLoader.ServiceDefinition;
    cached = service['Process'] as protoLoader.MethodDefinition<ProcessingRequest, ProcessingResponse>;
  }
  return cached;
}

// The subset of the messages this product reads or writes, as proto-loader
// decodes them with the options above.

export interface HeaderValue {
  key?: string;
  value?: string;
  raw_value?: Uint8Array;
}

export type HeaderAppendAction =
  | 'APPEND_IF_EXISTS_OR_ADD'
  | 'ADD_IF_ABSENT'
  | 'OVERWRITE_IF_EXISTS_OR_ADD'
  | 'OVERWRITE_IF_EXISTS';

export interface HeaderValueOption {
  header?: HeaderValue;
  append_action?: HeaderAppendAction;
}

export interface HeaderMutation {
  set_headers?: HeaderValueOption[];
  remove_headers?: string[];
}

export interface CommonResponse {
  status?: 'CONTINUE' | 'CONTINUE_AND_REPLACE';
  header_mutation?: HeaderMutation;
  clear_route_cache?: boolean;
}

export interface HttpHeaders {
  headers?: { headers?: HeaderValue[] };
  end_of_stream?: boolean;
}

export interface HttpBody {
  body?: Uint8Array;
  end_of_stream?: boolean;
}

export interface HttpTrailers {
  trailers?: { headers?: HeaderValue[] };
}

export const REQUEST_KINDS = [
  'request_headers',
  'response_headers',
  'request_body',
  'response_body',
  'request_trailers',
  'response_trailers',
] as const;
export type RequestKind = (typeof REQUEST_KINDS)[number];

export interface ProcessingRequest {
  request?: RequestKind;
  request_headers?: HttpHeaders;
  response_headers?: HttpHeaders;
  request_body?: HttpBody;
  response_body?: HttpBody;
  request_trailers?: HttpTrailers;
  response_trailers?: HttpTrailers;
  observability_mode?: boolean;
}

export interface ProcessingResponse {
  response?: RequestKind | 'immediate_response';
  request_headers?: { response?: CommonResponse };
  response_headers?: { response?: CommonResponse };
  request_body?: { response?: CommonResponse };
  response_body?: { response?: CommonResponse };
  request_trailers?: { header_mutation?: HeaderMutation };
  response_trailers?: { header_mutation?: HeaderMutation };
}

export const HEALTH_SERVICE = 'grpc.health.v1.Health';
export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
export interface HealthCheckRequest {
  service?: string;
}
export interface HealthCheckResponse {
  status: ServingStatus;
}
type HealthMethod = protoLoader.MethodDefinition<HealthCheckRequest, HealthCheckResponse>;

let health: { Check: HealthMethod; Watch: HealthMethod } | undefined;

/** grpc.health.v1.Health's methods, from the proto file the grpc-health-check package ships. */
export function healthMethods(): { Check: HealthMethod; Watch: HealthMethod } {
  if (health === undefined) {
    const protoPath = path.join(path.dirname(require.resolve('grpc-health-check/package.json')), 'proto', 'health', 'v1', 'health.proto');
    const pkg = protoLoader.loadSync(protoPath, { keepCase: true, enums: String, defaults: true });
    const service = pkg[HEALTH_SERVICE] as protoLoader.ServiceDefinition;
    health = { Check: service['Check'] as HealthMethod, Watch: service['Watch'] as HealthMethod };
  }
  return health;
}
