/** `NODE_DEBUG=netchan` output, for every layer. */
import { debuglog } from 'node:util';

export const debug = debuglog('netchan');
