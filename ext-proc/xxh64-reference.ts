// A second, deliberately plain XXH64 (BigInt arithmetic, straight from the
// algorithm's description) used only by tests, to check the WebAssembly
// implementation the server uses. Slow; never use it on a hot path.
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;
const MASK = (1n << 64n) - 1n;

const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & MASK;
const mul = (a: bigint, b: bigint): bigint => (a * b) & MASK;
const add = (a: bigint, b: bigint): bigint => (a + b) & MASK;
const round = (acc: bigint, lane: bigint): bigint => mul(rotl(add(acc, mul(lane, P2)), 31n), P1);
const merge = (acc: bigint, v: bigint): bigint => add(mul(acc ^ round(0n, v), P1), P4);

function lane64(bytes: Uint8Array, at: number): bigint {
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i] ?? 0);
  return v;
}

function lane32(bytes: Uint8Array, at: number): bigint {
  let v = 0n;
  for (let i = 3; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i] ?? 0);
  return v;
}

export function referenceXxh64(bytes: Uint8Array, seed = 0n): bigint {
  const len = bytes.length;
  let at = 0;
  let h: bigint;
  if (len >= 32) {
    let v1 = add(add(seed, P1), P2);
    let v2 = add(seed, P2);
    let v3 = seed;
    let v4 = (seed - P1) & MASK;
    for (; at + 32 <= len; at += 32) {
      v1 = round(v1, lane64(bytes, at));
      v2 = round(v2, lane64(bytes, at + 8));
      v3 = round(v3, lane64(bytes, at + 16));
      v4 = round(v4, lane64(bytes, at + 24));
    }
    h = add(add(add(rotl(v1, 1n), rotl(v2, 7n)), rotl(v3, 12n)), rotl(v4, 18n));
    h = merge(merge(merge(merge(h, v1), v2), v3), v4);
  } else {
    h = add(seed, P5);
  }
  h = add(h, BigInt(len));
  for (; at + 8 <= len; at += 8) h = add(mul(rotl(h ^ round(0n, lane64(bytes, at)), 27n), P1), P4);
  if (at + 4 <= len) {
    h = add(mul(rotl(h ^ mul(lane32(bytes, at), P1), 23n), P2), P3);
    at += 4;
  }
  for (; at < len; at++) h = mul(rotl(h ^ mul(BigInt(bytes[at] ?? 0), P5), 11n), P1);
  h = mul(h ^ (h >> 33n), P2);
  h = mul(h ^ (h >> 29n), P3);
  return h ^ (h >> 32n);
}

/** The x-prompt-hash value the reference predicts for a body. */
export function referencePromptHash(body: Uint8Array, prefixBytes: number): string {
  return referenceXxh64(body.subarray(0, Math.min(prefixBytes, body.length))).toString(16).padStart(16, '0');
}
