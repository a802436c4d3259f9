/** `node:v8` and `node:vm` in a page: no forced collection (the page's own GC releases dropped handles). */
export function setFlagsFromString(): never {
  throw new Error('no V8 flags in a browser');
}
export function runInNewContext(): never {
  throw new Error('no vm in a browser');
}
export default { setFlagsFromString, runInNewContext };
