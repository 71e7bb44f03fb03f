# The pgscore worker image used by docker-compose.yml.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY src ./src
COPY sql ./sql
COPY examples/models ./examples/models
COPY tsconfig.json ./
USER node
# glibc gives each thread that allocates its own malloc arena (up to 8 per core), and the worker's
# V8 and libuv helper threads kept ~13 MiB in them; two arenas held 5 MiB (RSS ~176 instead of
# ~185 MiB under load, bench scenario 7's traffic). Read when the process starts, so it is set here.
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT ["node", "bin/pgscore.js"]
CMD ["worker"]
