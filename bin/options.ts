// Option parsers and signal handling shared by every subcommand.
import { InvalidArgumentError } from 'commander';

export function integerBetween(min: number, max: number): (raw: string) => number {
  return (raw) => {
    const value = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`must be an integer between ${min} and ${max}`);
    }
    return value;
  };
}

export const parsePort = integerBetween(0, 65535);

/** `500ms`, `15s`, `1m` → milliseconds. */
export function parseDuration(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(value);
  if (!match) throw new InvalidArgumentError(`a duration such as 500ms, 15s or 1m, got ${JSON.stringify(value)}`);
  return Number(match[1]) * { ms: 1, s: 1000, m: 60_000 }[match[2] as 'ms' | 's' | 'm'];
}

/** Runs `close` on SIGTERM/SIGINT, then exits. */
export function exitOnSignal(close: () => Promise<void>): void {
  const handler = (signal: string) => {
    void close().finally(() => process.exit(signal === 'SIGINT' ? 130 : 0));
  };
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
}
