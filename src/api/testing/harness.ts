/**
 * The API's unit-test harness: the native API, or the E2B API and its envd proxy, served on
 * loopback in-process over src/daemon/testing's fake-driver service. Test code only.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { nullLogger } from '../../core/log.ts';
import { ApiKeyService } from '../../daemon/api-keys.ts';
import type { SandboxServiceDeps } from '../../daemon/sandbox-service.ts';
import { TemplateBuildService } from '../../daemon/templates/build-service.ts';
import { FAKE_IMAGE, ServiceFixture } from '../../daemon/testing/fixtures.ts';
import { e2bRouterOpts, e2bRoutes } from '../e2b.ts';
import { createEnvdProxy } from '../envd-proxy.ts';
import { createRouter } from '../http.ts';
import { nativeRoutes } from '../native.ts';

/** Serves `handler` on a loopback port (or the unix socket `socket`); answers its base URL. */
export async function listen(
  handler: RequestListener,
  socket?: string,
): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  if (socket !== undefined) {
    await new Promise<void>((r) => server.listen(socket, r));
    return { server, url: '' };
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function closeServer(s: Server): void {
  s.closeAllConnections();
  s.close();
}

/** A JSON request: the body is sent as is when a string, else as JSON. */
async function request(
  url: string,
  method: string,
  body: unknown,
  headers: Record<string, string>,
): Promise<{ status: number; headers: Headers; text: string }> {
  const r = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

/** What a template build was asked for, in order. */
export type BuildCall = { name: string; memoryMiB: number; vcpus: number };

/** The service's fixture, plus every template build the API asked for. */
abstract class ApiHarness {
  readonly builds: BuildCall[] = [];
  readonly fx: ServiceFixture;
  constructor(fx: ServiceFixture) {
    this.fx = fx;
  }
  get svc(): ServiceFixture['svc'] {
    return this.fx.svc;
  }
  get store(): ServiceFixture['store'] {
    return this.fx.store;
  }
  get driver(): ServiceFixture['driver'] {
    return this.fx.driver;
  }
  protected readonly buildTemplate = (name: string, r: { memoryMiB: number; vcpus: number }) => {
    this.builds.push({ name, ...r });
    return this.fx.svc.buildTemplate(name, FAKE_IMAGE, r);
  };
}

/** The native API on loopback. */
export class NativeHarness extends ApiHarness {
  url = '';
  private server?: Server;

  /**
   * `base`: build the template `base` first; `version`: what /v1/health reports; `socket`: serve
   * on that unix socket (as kilnd does, for the CLI) instead of a loopback port; `builds`: serve
   * template builds (and template garbage collection) too.
   */
  static async start(
    o: {
      base?: boolean;
      version?: string;
      deps?: Partial<SandboxServiceDeps>;
      socket?: string;
      builds?: boolean;
    } = {},
  ): Promise<NativeHarness> {
    const h = new NativeHarness(
      await ServiceFixture.start({ base: o.base ?? false, ...(o.deps ? { deps: o.deps } : {}) }),
    );
    const routes = nativeRoutes({
      svc: h.svc,
      version: o.version ?? '',
      buildTemplate: h.buildTemplate,
      keys: new ApiKeyService({ store: h.store }),
      e2bEnv: () =>
        Promise.resolve({ apiUrl: 'http://127.0.0.1:1', sandboxUrl: 'http://127.0.0.1:2', apiKey: 'k' }),
      sandboxDomain: 'localhost:2',
      ...(o.builds ? { builds: h.templateBuilds() } : {}),
    });
    ({ server: h.server, url: h.url } = await listen(createRouter(routes, nullLogger), o.socket));
    return h;
  }

  /** The template build service over this harness's service (no OCI images). */
  templateBuilds(): TemplateBuildService {
    return new TemplateBuildService({
      svc: this.svc,
      store: this.store,
      dataDir: this.fx.dir,
      log: nullLogger,
      ensureTemplate: () => Promise.resolve(),
    });
  }

  /** A request: status, op id, the JSON body when the answer is JSON, and the raw text. */
  readonly call = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const r = await request(this.url + path, method, body, headers);
    const isJson = (r.headers.get('content-type') ?? '').startsWith('application/json');
    return {
      status: r.status,
      opId: r.headers.get('x-kiln-op-id'),
      json: isJson ? (JSON.parse(r.text) as Record<string, unknown>) : undefined,
      text: r.text,
    };
  };

  async close(): Promise<void> {
    if (this.server) closeServer(this.server);
    await this.fx.close();
  }
}

/** The E2B API and the envd proxy on loopback, with one API key made. */
export class E2bHarness extends ApiHarness {
  apiUrl = '';
  sandboxUrl = '';
  apiKey = '';
  readonly keys: ApiKeyService;
  private servers: Server[] = [];
  private closeProxy = (): void => undefined;

  private constructor(fx: ServiceFixture) {
    super(fx);
    this.keys = new ApiKeyService({ store: fx.store });
  }

  /** `deps`: more of the service's dependencies (a fake network layer, ...). */
  static async start(o: { deps?: Partial<SandboxServiceDeps> } = {}): Promise<E2bHarness> {
    const h = new E2bHarness(await ServiceFixture.start(o.deps ? { deps: o.deps } : {}));
    h.apiKey = h.keys.create('test').key;
    // The domain names the envd proxy's port, known once it listens (before any request).
    let domain = 'localhost';
    const routes = e2bRoutes({
      svc: h.svc,
      keys: h.keys,
      buildTemplate: h.buildTemplate,
      sandboxDomain: () => domain,
    });
    const api = await listen(createRouter(routes, nullLogger, e2bRouterOpts(h.keys)));
    const p = createEnvdProxy({ svc: h.svc, log: nullLogger });
    h.closeProxy = p.close;
    const prox = await listen(p.handle);
    prox.server.on('upgrade', p.upgrade);
    h.servers = [api.server, prox.server];
    [h.apiUrl, h.sandboxUrl] = [api.url, prox.url];
    domain = `localhost:${new URL(prox.url).port}`;
    return h;
  }

  /** The SDK's connection options with this harness's key. */
  readonly opts = (): { apiUrl: string; sandboxUrl: string; apiKey: string } => ({
    apiUrl: this.apiUrl,
    sandboxUrl: this.sandboxUrl,
    apiKey: this.apiKey,
  });

  /** A raw request to the E2B API with `key` (null: none) as X-API-KEY. */
  readonly raw = async (method: string, path: string, body?: unknown, key: string | null = this.apiKey) => {
    const r = await request(this.apiUrl + path, method, body, key === null ? {} : { 'x-api-key': key });
    return {
      status: r.status,
      headers: r.headers,
      json: r.text ? (JSON.parse(r.text) as unknown) : undefined,
    };
  };

  async close(): Promise<void> {
    this.servers.forEach(closeServer);
    this.closeProxy();
    await this.fx.close();
  }
}
