// Certificates for the test bed, made with the openssl CLI (Debian's): a CA per
// run, serving certificates with IP SAN 127.0.0.1, and client certificates.
// EC P-256 keys keep generation fast.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertificateFiles {
  certFile: string;
  keyFile: string;
  certPem: string;
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeCa(dir: string, name: string, commonName: string): CertificateFiles {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  openssl([
    'req', '-x509', ...EC_KEY, '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { certFile, keyFile, certPem: readFileSync(certFile, 'utf8') };
}

export interface LeafOptions {
  commonName: string;
  organization?: string;
  dnsNames?: string[];
  ipAddresses?: string[];
  usage: 'server' | 'client';
}

export function makeLeaf(dir: string, name: string, ca: CertificateFiles, options: LeafOptions): CertificateFiles {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const subject = `/CN=${options.commonName}${options.organization ? `/O=${options.organization}` : ''}`;
  const sans = [...(options.dnsNames ?? []).map((d) => `DNS:${d}`), ...(options.ipAddresses ?? []).map((ip) => `IP:${ip}`)];
  const extensions = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${options.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
    ...(sans.length > 0 ? [`subjectAltName=${sans.join(',')}`] : []),
  ];
  openssl([
    'req', '-x509', ...EC_KEY, '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', subject,
    '-CA', ca.certFile, '-CAkey', ca.keyFile, ...extensions.flatMap((e) => ['-addext', e]),
  ]);
  return { certFile, keyFile, certPem: readFileSync(certFile, 'utf8') };
}

/** A key pair for service-account tokens (the API server insists on one). */
export function makeServiceAccountKey(dir: string): { keyFile: string; pubFile: string } {
  const keyFile = join(dir, 'sa.key');
  const pubFile = join(dir, 'sa.pub');
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', keyFile]);
  openssl(['pkey', '-in', keyFile, '-pubout', '-out', pubFile]);
  return { keyFile, pubFile };
}
