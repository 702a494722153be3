import { describe, expect, it } from 'vitest';
import { type InformerHealth, informerReadiness, readinessBody } from './readiness.ts';

const NOW = 1_000_000;
const ok = (kind: string): InformerHealth => ({ kind, synced: true, failingSince: undefined });

describe('informerReadiness', () => {
  it.each([
    { name: 'every informer synced and watching: ready', informers: [ok('ModelService'), ok('Service')], ready: true },
    { name: 'one informer not listed yet: not ready', informers: [ok('ModelService'), { kind: 'Service', synced: false, failingSince: undefined }], ready: false },
    { name: 'a watch failing for less than the bound: still ready (it is reconnecting)', informers: [ok('ModelService'), { kind: 'Service', synced: true, failingSince: NOW - 9_000 }], ready: true },
    { name: 'a watch failing for longer than the bound: not ready', informers: [ok('ModelService'), { kind: 'Service', synced: true, failingSince: NOW - 10_001 }], ready: false },
    { name: 'never listed and failing (a CRD not installed): not ready', informers: [{ kind: 'BackendTrafficPolicy', synced: false, failingSince: NOW - 1 }], ready: false },
    { name: 'an optional kind the cluster does not serve (AI Gateway not installed): ready', informers: [ok('ModelService'), { kind: 'AIGatewayRoute', synced: false, failingSince: undefined, notServed: true }], ready: true },
  ])('$name', ({ informers, ready }) => {
    expect(informerReadiness(informers, NOW, 10_000).ready).toBe(ready);
  });

  it('says which informer fails, and for how long, one line per check', () => {
    const r = informerReadiness([ok('ModelService'), { kind: 'Service', synced: true, failingSince: NOW - 15_000 }], NOW, 10_000);
    expect(readinessBody(r)).toBe('not ready\n[+]informer ModelService: synced\n[-]informer Service: watch failing for 15 s (bound 10 s)\n');
  });
});
