/**
 * A WebSocket upgrade as a browser sends it, written by hand so that every header is the test's
 * (a browser's `Origin`, a forged `Host`): over TLS unless `plain`. Resolves to the head of the
 * answer (status line and headers).
 */
import net from 'node:net';
import tls from 'node:tls';

export function rawUpgrade(port: number, path: string, headers: Record<string, string>, plain = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const options = { port, host: '127.0.0.1', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] };
    const socket = (plain ? net.connect(options) : tls.connect(options)).once(plain ? 'connect' : 'secureConnect', () => {
      const all: Record<string, string> = { host: `127.0.0.1:${port}`, upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': 'netchan.v1', ...headers };
      const lines = [`GET ${path} HTTP/1.1`, ...Object.entries(all).map(([k, v]) => `${k}: ${v}`)];
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
