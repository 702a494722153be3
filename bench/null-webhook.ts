// The floor for the through-the-API-server measurement: an HTTPS admission
// webhook that does no work. It answers every AdmissionReview "allowed" with
// the request's uid and nothing else: no schema, no defaults, no patch, no
// logging, no metrics, no framework. Whatever two calls to it add to a create
// is the cost of the API server calling two webhooks at all, which no webhook
// implementation can remove.
// Usage: node bench/null-webhook.ts <port> <cert-dir>
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { join } from 'node:path';

const [port, certDir] = process.argv.slice(2);
if (!port || !certDir) throw new Error('usage: node bench/null-webhook.ts <port> <cert-dir>');

const server = createServer({ cert: readFileSync(join(certDir, 'tls.crt')), key: readFileSync(join(certDir, 'tls.key')) }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const { request } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { request: { uid: string } };
    const body = JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: request.uid, allowed: true } });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 90_000;
server.listen(Number(port), '127.0.0.1', () => console.log(`null webhook listening on ${port}`));
