// What a test file gets from the global setup: the running control plane's
// coordinates and a kubectl bound to it.
import { inject } from 'vitest';
import { type Kubectl, kubectlFor } from './control-plane.ts';

export interface TestbedInfo {
  dir: string;
  kubeconfig: string;
  server: string;
  kubeBin: string;
  webhookBaseUrl: string;
  webhookCertDir: string;
  webhookCaPem: string;
  webhookLog: string;
  webhookPid: number;
}

declare module 'vitest' {
  export interface ProvidedContext {
    testbed: TestbedInfo;
  }
}

export type Testbed = TestbedInfo & Kubectl;

export function testbed(): Testbed {
  const info = inject('testbed');
  return { ...info, ...kubectlFor(info.kubeBin, info.kubeconfig) };
}

let namespaceCounter = 0;

/** A fresh namespace per test file keeps tests independent on the shared control plane. */
export async function createNamespace(k: Kubectl, prefix: string): Promise<string> {
  const name = `${prefix}-${process.pid}-${++namespaceCounter}`;
  await k.kubectlOk(['create', 'namespace', name]);
  return name;
}
