/**
 * The credit windows of a channel stream (docs/PROTOCOL.md §5.2), in one place because both
 * ends compute them from the capacity alone: the owner to grant and to enforce, the remote to
 * check what it was granted and to bound the demand it asks for.
 */

/** Most values a remote receiver prefetches, whatever the capacity. */
export const MAX_PREFETCH = 4096;
/** Most receives of one remote handle the owner serves at once, beyond the prefetch window. */
export const MAX_PENDING_RECEIVES = 4096;

/**
 * Send credits an owner grants at open (`netchan-credit`, docs/PROTOCOL.md §5.2): the capacity,
 * at least one, at most {@link MAX_PREFETCH}. A remote never has more values unacknowledged.
 */
export function sendWindow(capacity: number): number {
  return Math.max(1, Math.min(capacity, MAX_PREFETCH));
}

/**
 * The most receive demand a remote may have outstanding on a channel of this capacity: values
 * asked for with CREDIT and not yet acknowledged with ACK (docs/PROTOCOL.md §5.2). Room for the
 * prefetch window and {@link MAX_PENDING_RECEIVES} receives; the owner refuses more with
 * `ERR_PROTOCOL`, so that no remote can make it take a channel's values without end.
 */
export function receiveWindow(capacity: number): number {
  return Math.min(capacity, MAX_PREFETCH) + MAX_PENDING_RECEIVES;
}
