// Serving certificate that follows the files in --cert-dir: cert-manager and
// kubelet rotate them in place (an atomic symlink swap), and new TLS
// handshakes pick up the new pair without a restart. Connections already open
// keep the pair they started with, so no request is dropped.
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';

export interface CertificatePair {
  cert: Buffer;
  key: Buffer;
}

export async function readCertificatePair(certDir: string): Promise<CertificatePair> {
  const [cert, key] = await Promise.all([readFile(join(certDir, 'tls.crt')), readFile(join(certDir, 'tls.key'))]);
  // Throws on a half-written pair (key and certificate that do not match), which the caller retries.
  createSecureContext({ cert, key });
  return { cert, key };
}

export interface CertificateWatcher {
  close(): void;
}

/**
 * Calls `onChange` with each new valid pair after files in `certDir` change.
 * A pair that does not load (one file written, the other not yet) is retried
 * shortly; the old pair stays in use meanwhile.
 */
export function watchCertificates(
  certDir: string,
  onChange: (pair: CertificatePair) => void,
  onError: (error: Error) => void,
): CertificateWatcher {
  let timer: NodeJS.Timeout | undefined;
  let retries = 0;
  const reload = (): void => {
    timer = undefined;
    readCertificatePair(certDir).then(
      (pair) => {
        retries = 0;
        onChange(pair);
      },
      (error: Error) => {
        if (retries++ < 20) schedule(250);
        else onError(error);
      },
    );
  };
  const schedule = (delayMs: number): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(reload, delayMs);
  };
  const watcher: FSWatcher = watch(certDir, () => schedule(50));
  watcher.on('error', onError);
  return {
    close() {
      watcher.close();
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}
