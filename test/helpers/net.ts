/**
 * Test helpers: a real TLS HTTP/2 netchan server on 127.0.0.1 port 0, clients that trust the
 * generated test CA, and one teardown that closes everything a test opened.
 */
import { connect, connectInMemory, createServer, type ConnectOptions, type NetchanServer, type ServerOptions, type Session } from '../../lib/index.js';
import { testCertificates } from './certs.js';

const cleanups: (() => Promise<void> | void)[] = [];

/** The transports a suite can run over: the network's, and the in-memory one. */
export type TestTransport = NonNullable<ConnectOptions['transport']> | 'memory';

let defaultTransport: TestTransport = 'h2';

/**
 * Makes `startServer().client()` use this transport unless a test says otherwise; for running one
 * suite over HTTP/2, over the WebSocket fallback, and in memory (`connectInMemory`: same server,
 * no sockets, anonymous).
 */
export function useTransport(transport: TestTransport): void {
  defaultTransport = transport;
}

/** Registers something to close after the current test. */
export function onTeardown(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/** Closes everything registered, newest first. Call from an afterEach hook. */
export async function teardown(): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop() as () => Promise<void> | void;
    await fn();
  }
}

export interface Started {
  server: NetchanServer;
  url: string;
  port: number;
  /** Connects a client session to the server (closed on teardown). */
  client(options?: ConnectOptions): Promise<Session>;
}

export async function startServer(options: ServerOptions = {}): Promise<Started> {
  const certs = await testCertificates();
  const server = createServer({ key: certs.key, cert: certs.cert, ...options });
  const { port } = await server.listen(0, '127.0.0.1');
  onTeardown(() => server.close());
  const url = `https://localhost:${port}${options.path ?? '/'}`;
  return {
    server,
    url,
    port,
    async client(clientOptions: ConnectOptions = {}) {
      const transport = clientOptions.transport ?? defaultTransport;
      const session =
        transport === 'memory'
          ? (await connectInMemory(server, clientOptions)).session
          : await connect(url, { ca: certs.caCert, ...clientOptions, transport });
      onTeardown(() => session.close());
      return session;
    },
  };
}

/** Resolves when `predicate` holds, polling on the event loop (bounded by `timeoutMs`). */
export async function until(predicate: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Lets pending I/O and timers of this turn run. */
export function tick(ms = 20): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
