/**
 * What the browser bundle has for the Node modules a page cannot have (`node:net`, `node:tls`,
 * …): parts of the shared layers import them for what only Node does (TCP tunnels, TLS), and a
 * page never calls it. Anything taken from here throws a clear error instead.
 */
function unavailable(): never {
  throw Object.assign(new Error('not available in a browser'), { code: 'ERR_INVALID_ARGUMENT' });
}
const module = new Proxy({}, { get: () => unavailable });
export default module;
export const isIP = unavailable, isIPv4 = unavailable, isIPv6 = unavailable, createServer = unavailable, connect = unavailable;
