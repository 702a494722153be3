# syntax=docker/dockerfile:1
# modelplane-affinity: one image for `manager` (webhook + reconciler) and
# `ext-proc` (the prefix hasher the reconciler deploys). Node 24 runs the
# TypeScript sources directly (type stripping): there is no build output, so the
# build stage is the gate (clean install + typecheck) and the final stage holds
# the checked sources and production dependencies only.
# test/install.int.test.ts rebuilds the final stage's file system from this file
# (its COPY and RUN lines) and runs `manager` and `ext-proc` from it.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN npm run typecheck

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/bin/ ./bin/
COPY --from=build /src/src/ ./src/
COPY --from=build /src/webhook/ ./webhook/
COPY --from=build /src/reconciler/ ./reconciler/
COPY --from=build /src/ext-proc/ ./ext-proc/
# The distroless "nonroot" uid; the manifests run as it with a read-only root file system.
USER 65532:65532
# 9443 webhook (HTTPS), 9002 ext_proc (gRPC h2c), 9090 ext_proc metrics.
EXPOSE 9443 9002 9090
ENTRYPOINT ["node", "/app/bin/modelplane-affinity.ts"]
CMD ["--help"]
