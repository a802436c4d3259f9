/** `node:diagnostics_channel` in a page: channels nobody subscribes to (netchan publishes only when someone does). */
const silent = { hasSubscribers: false, publish(): void {}, subscribe(): void {}, unsubscribe(): boolean { return false; } };
export function channel(): typeof silent {
  return silent;
}
export default { channel };
