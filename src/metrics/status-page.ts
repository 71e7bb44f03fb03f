import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log-limit.js';
import type { StatusReader } from './status-reader.js';

/** Everything the page shows but live quality: one document (sql/functions/080_status_page.sql). */
const READ_PAGE = 'SELECT ml._status_page() AS page';

/** Live quality of each version over the last day, as ml.performance has it, as JSON numbers. */
const READ_QUALITY = `
  SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.deployment, p.model), '[]') AS rows
    FROM (SELECT deployment, model, role, labelled, accuracy, auc, log_loss, mae, rmse, validation, degraded
            FROM ml._performance(ARRAY['1 day'])) p`;

/**
 * ml.performance joins the prediction log to the labels: read at most this often, as the
 * metrics do, while the rest of the page is read on every refresh (5 s).
 */
const QUALITY_EVERY_MS = 60_000;

const PAGE_DIR = fileURLToPath(new URL('./page/', import.meta.url));

/** The page may load its own scripts and styles and fetch its own data, nothing else. */
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface Asset {
  readonly type: string;
  readonly body: Buffer;
  readonly etag: string;
}

type Quality = { readonly at: string; readonly rows: unknown } | { readonly at: string; readonly error: string };

/**
 * The status page: GET / (the page), /status.json (what it shows, read once per request) and
 * /assets/… (its script, its styles and Chart.js). Everything is read from disk once, at start,
 * so an install without Chart.js fails when the server starts, not when someone looks.
 */
export class StatusPage {
  readonly #assets: ReadonlyMap<string, Asset>;
  readonly #reader: StatusReader;
  readonly #log: RateLimitedLog;
  #pageInFlight: Promise<unknown> | undefined;
  #quality: { readonly at: number; readonly value: Quality } | undefined;
  #qualityInFlight: Promise<Quality> | undefined;

  private constructor(assets: ReadonlyMap<string, Asset>, reader: StatusReader, log: Logger) {
    this.#assets = assets;
    this.#reader = reader;
    this.#log = new RateLimitedLog(log, { intervalMs: 60_000 });
  }

  static async load(reader: StatusReader, log: Logger): Promise<StatusPage> {
    // The browser build of Chart.js, served as it is installed: no bundler, no build step. The
    // package exports no path to it, so it is found beside the entry point `require` resolves.
    const chartJs = path.join(path.dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.min.js');
    const files: [string, string, string][] = [
      ['/', path.join(PAGE_DIR, 'index.html'), 'text/html; charset=utf-8'],
      ['/assets/page.js', path.join(PAGE_DIR, 'page.js'), 'text/javascript; charset=utf-8'],
      ['/assets/page.css', path.join(PAGE_DIR, 'page.css'), 'text/css; charset=utf-8'],
      ['/assets/chart.umd.min.js', chartJs, 'text/javascript; charset=utf-8'],
    ];
    const assets = new Map<string, Asset>();
    for (const [route, file, type] of files) {
      const body = await readFile(file);
      assets.set(route, { type, body, etag: `"${createHash('sha1').update(body).digest('base64url')}"` });
    }
    assets.set('/index.html', assets.get('/')!);
    return new StatusPage(assets, reader, log);
  }

  /** Whether route (a request's path) is one of the page's. */
  serves(route: string): boolean {
    return route === '/status.json' || this.#assets.has(route);
  }

  async respond(route: string, request: IncomingMessage, response: ServerResponse): Promise<void> {
    const head = request.method === 'HEAD';
    if (route === '/status.json') {
      try {
        const body = JSON.stringify(await this.read());
        response.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(head ? undefined : body);
      } catch (error) {
        this.#log.warn('page', { err: error }, 'status page: cannot read ml._status_page()');
        const body = JSON.stringify({ error: describe(error) });
        response.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(head ? undefined : body);
      }
      return;
    }
    const asset = this.#assets.get(route)!;
    const headers: Record<string, string> = {
      'content-type': asset.type,
      'cache-control': 'no-cache',
      etag: asset.etag,
      'x-content-type-options': 'nosniff',
    };
    if (asset.type.startsWith('text/html')) {
      headers['content-security-policy'] = CONTENT_SECURITY_POLICY;
      headers['referrer-policy'] = 'no-referrer';
    }
    if (request.headers['if-none-match'] === asset.etag) {
      response.writeHead(304, headers).end();
      return;
    }
    response.writeHead(200, headers).end(head ? undefined : asset.body);
  }

  /**
   * What /status.json serves: ml._status_page()'s document with `quality` added (its rows, or
   * why they could not be read, and when). Requests that arrive together share one read.
   */
  async read(): Promise<Record<string, unknown>> {
    this.#pageInFlight ??= this.#reader
      .query<{ page: unknown }>(READ_PAGE)
      .then((rows) => rows[0]?.page)
      .finally(() => (this.#pageInFlight = undefined));
    const [page, quality] = await Promise.all([this.#pageInFlight, this.#readQuality()]);
    if (typeof page !== 'object' || page === null) throw new Error('ml._status_page() returned no document');
    return { ...page, quality };
  }

  /** The last reading of ml.performance, refreshed once a minute; a failure is kept as long. */
  #readQuality(): Promise<Quality> {
    if (this.#quality && Date.now() - this.#quality.at < QUALITY_EVERY_MS) return Promise.resolve(this.#quality.value);
    this.#qualityInFlight ??= this.#reader
      .query<{ rows: unknown }>(READ_QUALITY)
      .then((rows): Quality => ({ at: new Date().toISOString(), rows: rows[0]?.rows ?? [] }))
      .catch((error: unknown): Quality => {
        this.#log.warn('quality', { err: error }, 'status page: cannot read ml.performance');
        return { at: new Date().toISOString(), error: describe(error) };
      })
      .then((value) => {
        this.#quality = { at: Date.now(), value };
        return value;
      })
      .finally(() => (this.#qualityInFlight = undefined));
    return this.#qualityInFlight;
  }
}
