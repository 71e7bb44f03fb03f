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
ENTRYPOINT ["node", "bin/pgscore.js"]
CMD ["worker"]
