import { defineConfig } from 'vitest/config';

// Two projects: `unit` (pure code and in-process servers, seconds) and
// `integration` (a real etcd + kube-apiserver started once by the global setup).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['{src,webhook,ext-proc,reconciler,bin,bench,test}/**/*.test.ts'],
          exclude: ['**/*.int.test.ts', 'node_modules/**'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.int.test.ts'],
          globalSetup: ['test/testbed/global-setup.ts'],
          testTimeout: 120_000,
          // The global setup may build the Go tools cold (35-40 min on 2 cores).
          hookTimeout: 3_600_000,
          // One control plane is shared; files run one after another.
          fileParallelism: false,
        },
      },
    ],
  },
});
