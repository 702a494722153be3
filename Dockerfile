# syntax=docker/dockerfile:1
# modelplane-affinity: one image for `manager` (webhook + reconciler) and
# `ext-proc` (the prefix hasher the reconciler deploys). The build stage is the
# gate (clean install + typecheck) and compiles the runtime code to dist/; the
# final stage holds that JavaScript and the production dependencies only.
# (Node 24 could run the .ts sources, but type stripping costs each process
# ~20-30 MB of RSS; see bench/RESULTS.md.)
# test/install.int.test.ts rebuilds the final stage's file system from this file
# (its COPY and RUN lines) and runs `manager` and `ext-proc` from it.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN npm run typecheck && npm run build

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/dist/ ./dist/
# The distroless "nonroot" uid; the manifests run as it with a read-only root file system.
USER 65532:65532
# 9443 webhook (HTTPS), 9002 ext_proc (gRPC h2c), 9090 ext_proc metrics.
EXPOSE 9443 9002 9090
ENTRYPOINT ["node", "/app/dist/bin/modelplane-affinity.js"]
CMD ["--help"]
