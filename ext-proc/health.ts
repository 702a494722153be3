// grpc.health.v1.Health for the hasher: Check answers once, Watch answers
// now and on every change (the kubelet's gRPC probes use Check; a drain
// turns every service NOT_SERVING).
import { Call } from './grpc-call.ts';
import type { H2Stream } from './h2-connection.ts';
import { GrpcStatus, MessageReader } from './grpc-wire.ts';
import { EXT_PROC_SERVICE, healthMethods, type ServingStatus } from './protocol.ts';

export interface HealthService {
  serve(stream: H2Stream, watch: boolean): void;
  setServing(status: ServingStatus): void;
  /** Ends every Watch (a drain: the server is going away). */
  endWatches(): void;
}

export function createHealthService(): HealthService {
  const health = healthMethods();
  const serving = new Map<string, ServingStatus>([
    ['', 'SERVING'],
    [EXT_PROC_SERVICE, 'SERVING'],
  ]);
  const watchers = new Set<{ service: string; call: Call }>();

  function serve(stream: H2Stream, watch: boolean): void {
    const call = new Call(stream);
    const reader = new MessageReader(1024);
    const m = watch ? health.Watch : health.Check;
    let watcher: { service: string; call: Call } | undefined;
    stream.onClose = () => {
      reader.discard();
      if (watcher !== undefined) watchers.delete(watcher);
    };
    // A Check or Watch that half-closes without its request is answered, not left open.
    stream.onEnd = () => {
      if (!call.ended && watcher === undefined) call.end({ code: GrpcStatus.INVALID_ARGUMENT, details: 'the stream ended before its HealthCheckRequest' });
    };
    stream.onData = (chunk: Buffer) => {
      const messages = reader.push(chunk);
      if (!Array.isArray(messages)) return call.end({ code: messages.code, details: messages.message });
      const first = messages[0];
      // One request per call: a Watch that sends more is still one watcher.
      if (first === undefined || call.ended || watcher !== undefined) return;
      let service: string;
      try {
        service = m.requestDeserialize(first).service ?? '';
      } catch (error) {
        return call.end({ code: GrpcStatus.INVALID_ARGUMENT, details: `undecodable HealthCheckRequest: ${(error as Error).message}` });
      }
      const status = serving.get(service);
      if (!watch) {
        if (status === undefined) return call.end({ code: GrpcStatus.NOT_FOUND, details: `unknown service ${service}` });
        call.send(m.responseSerialize({ status }));
        return call.end();
      }
      call.send(m.responseSerialize({ status: status ?? 'SERVICE_UNKNOWN' }));
      watcher = { service, call };
      watchers.add(watcher);
    };
  }

  function setServing(status: ServingStatus): void {
    for (const service of serving.keys()) serving.set(service, status);
    const { Watch } = health;
    for (const watcher of watchers) watcher.call.send(Watch.responseSerialize({ status: serving.get(watcher.service) ?? 'SERVICE_UNKNOWN' }));
  }

  return {
    serve,
    setServing,
    endWatches() {
      for (const watcher of watchers) watcher.call.end();
    },
  };
}
