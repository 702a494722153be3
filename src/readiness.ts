// What /readyz answers, decided without I/O, for `manager` (on the webhook's
// port) and `reconcile` (on --health-port). A reconciler is ready once every
// informer has listed, and stops being ready when one of them has been unable
// to list or watch for longer than a bound: its caches are then stale, and a
// probe that says so lets an operator (or an alert) see an outage that the
// process itself rides out by re-listing.

/**
 * Longer than a leader's renew deadline (10 s), so a leader cut off from the
 * API server steps down before its probe fails, and long enough for watches
 * to reconnect after an API server restart; short enough that a stale cache shows.
 */
export const DEFAULT_WATCH_FAILURE_BOUND_MS = 30_000;

export interface InformerHealth {
  kind: string;
  /** Has listed at least once. */
  synced: boolean;
  /** When its list or watch started failing (ms since the epoch); undefined while it works. */
  failingSince: number | undefined;
  /** An optional kind (AIGatewayRoute) the cluster does not serve: nothing to list, so nothing to wait for. */
  notServed?: boolean;
}

export interface Readiness {
  ready: boolean;
  /** One line per check, `[+]` passing or `[-]` failing, as the API server's own /readyz?verbose prints them. */
  checks: string[];
}

export function informerReadiness(informers: readonly InformerHealth[], now: number, failureBoundMs: number): Readiness {
  const checks = informers.map((i) => {
    if (i.notServed) return `[+]informer ${i.kind}: not served by this cluster (optional)`;
    const failingMs = i.failingSince === undefined ? 0 : now - i.failingSince;
    if (!i.synced) return `[-]informer ${i.kind}: not synced yet${i.failingSince === undefined ? '' : ` (failing for ${Math.round(failingMs / 1000)} s)`}`;
    if (failingMs > failureBoundMs) return `[-]informer ${i.kind}: watch failing for ${Math.round(failingMs / 1000)} s (bound ${failureBoundMs / 1000} s)`;
    return `[+]informer ${i.kind}: synced${i.failingSince === undefined ? '' : `, watch failing for ${Math.round(failingMs / 1000)} s`}`;
  });
  return { ready: checks.every((c) => c.startsWith('[+]')), checks };
}

/** A standby replica runs no informers: nothing to sync, so nothing keeps it from being ready. */
export const STANDBY: Readiness = { ready: true, checks: ['[+]leader election: standby, not reconciling'] };

/** Not started yet (e.g. a leader still listing). */
export const STARTING: Readiness = { ready: false, checks: ['[-]reconciler: starting'] };

/** The text of a /readyz answer: `ok` or `not ready`, then the checks, one a line. */
export function readinessBody(r: Readiness): string {
  const status = r.ready ? 'ok' : 'not ready';
  return r.checks.length === 0 ? status : `${[status, ...r.checks].join('\n')}\n`;
}
