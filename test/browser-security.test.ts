/**
 * What the browser support lets a hostile page or client do on the server side: the Origin
 * policy, the bearer token offered as a WebSocket subprotocol, and web streams joined to byte
 * streams. Real TLS servers and raw requests; the page's side is test/browser.test.ts.
 */
import tls from 'node:tls';
import { expect } from 'chai';
import { rejection } from './helpers/assert.js';
import { startServer, teardown } from './helpers/net.js';

/** A raw WebSocket upgrade over TLS: the answer's head (status line and headers). */
function rawUpgrade(port: number, path: string, headers: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const lines = [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='];
      if (!('sec-websocket-protocol' in headers)) lines.push('Sec-WebSocket-Protocol: netchan.v1');
      for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
      socket.write(lines.join('\r\n') + '\r\n\r\n');
    });
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end >= 0) {
        socket.destroy();
        resolve(text.slice(0, end));
      }
    });
    socket.on('error', reject);
  });
}

describe('browser support against hostile input', function () {
  this.timeout(20_000);
  afterEach(teardown);

  describe('allowedOrigins', () => {
    it('a function that throws on an Origin refuses it (403 ERR_FORBIDDEN_ORIGIN), on a WebSocket upgrade and on an HTTP/2 stream', async () => {
      // `new URL('null')` throws: an ordinary policy meets a sandboxed frame's Origin
      const started = await startServer({ allowedOrigins: (origin) => new URL(origin).hostname === 'app.example' });
      const answer = await rawUpgrade(started.port, '/', { origin: 'null' });
      expect(answer).to.match(/^HTTP\/1\.1 403 /);
      expect(answer).to.match(/netchan-error: ERR_FORBIDDEN_ORIGIN/i);
      const err = await rejection(started.client({ transport: 'h2', headers: { origin: 'null' }, reconnect: false }));
      expect(err.code).to.equal('ERR_FORBIDDEN_ORIGIN');
      // the server still serves
      const session = await started.client({ transport: 'ws', headers: { origin: 'https://app.example' } });
      expect(session.transport).to.equal('ws');
    });
  });
});
