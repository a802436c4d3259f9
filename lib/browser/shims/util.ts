/** `node:util` in a page: `debuglog` (NODE_DEBUG=netchan) prints nothing. */
export function debuglog(): (...args: unknown[]) => void {
  return () => undefined;
}
export default { debuglog };
