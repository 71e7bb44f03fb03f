import { afterAll } from 'vitest';
import { killStrayProcesses, stopStrayProcesses } from './cli.js';

// Every test file: the pgscore processes its tests started end with the file, passed or failed,
// and with the test process itself if it is torn down before its hooks run.
afterAll(async () => {
  await stopStrayProcesses();
});
process.once('exit', killStrayProcesses);
