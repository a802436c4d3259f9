/**
 * The value codec: MessagePack through msgpackr, hardened for input from an untrusted peer.
 *
 * Decoding is two passes. {@link validate} walks the bytes once, iteratively (no recursion, so no
 * stack to exhaust), and rejects anything msgpackr must never see: truncation, trailing bytes, the
 * unused byte 0xc1, lengths larger than what is left of the input (a "4-billion-element array" in
 * ten bytes), nesting deeper than `maxDepth`, extension types outside the list below, map keys that
 * are not strings or integers, the key `__proto__` in any string form, and timestamps outside
 * what a Date holds. Only then does msgpackr build the value, with records, structured cloning and
 * its other peer-defined structures switched off; building refuses an Error without a string
 * `name` and `message`.
 *
 * What decodes must encode again (docs/PROTOCOL.md §3.1): a value accepted into a channel is sent
 * on to every remote receiver, and one the encoder refuses would fail each of them in turn, going
 * back to the head of the channel every time. So every refusal the encoder makes has its twin here.
 *
 * Encoding walks the value first ({@link Codec.encode}): it enforces the same depth limit, turns
 * Map, Set, Error, BigInt and channel/byte-stream references into extension values, and leaves
 * everything else to msgpackr. The walk copies only the containers on the path to such a value.
 *
 * Extension types (docs/PROTOCOL.md §3 has the byte layouts and test vectors):
 *
 * | type | value | payload |
 * |---|---|---|
 * | -1 | Date | MessagePack timestamp (4, 8 or 12 bytes) |
 * | 0x00 | undefined | one byte 0x00 |
 * | 0x01 | BigInt | signed two's complement, big-endian, 1..4096 bytes |
 * | 0x02 | Map | one array `[k1, v1, k2, v2, ...]` |
 * | 0x03 | Set | one array of the members |
 * | 0x04 | Error | one map `{name, message, ...own properties, cause?}` |
 * | 0x10 | channel reference | one map (session-defined, PROTOCOL.md §5) |
 * | 0x11 | byte-stream reference | one map (session-defined, PROTOCOL.md §5) |
 *
 * Over 400 lines on purpose: every rule for hostile input is in this one file, next to the
 * validator that enforces it, so that a reviewer reads them together.
 */
import { Packr, Unpackr, addExtension } from 'msgpackr';
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';

/** The MessagePack extension type numbers netchan uses. */
export const ExtensionTypes = {
  TIMESTAMP: -1,
  UNDEFINED: 0x00,
  BIGINT: 0x01,
  MAP: 0x02,
  SET: 0x03,
  ERROR: 0x04,
  CHANNEL: 0x10,
  BYTES: 0x11,
} as const;

/** What a reference stands for: a channel, or a byte stream. */
export type ReferenceKind = 'channel' | 'bytes';

/** One reference inside a value, as {@link ReferenceHooks.checkReferences} sees it. */
export interface FoundReference {
  kind: ReferenceKind;
  /** The reference's payload map (any reference nested inside it reads as `null` here). */
  data: Record<string, unknown>;
}

/**
 * How a session turns channels and byte streams into references and back. `encodeReference`
 * is called while a value is encoded, once per channel or stream in it; `decodeReference` while
 * a value is decoded, once per reference in it. Either may throw a {@link NetchanError}.
 *
 * `checkReferences`, when present, is called once per value that holds references, before the
 * value is built and before any `decodeReference`, with every reference in it: a session checks
 * them all there and throws (an error, or to wait for streams) while nothing has been taken yet,
 * so that `decodeReference` only takes what `checkReferences` found.
 */
export interface ReferenceHooks {
  encodeReference(kind: ReferenceKind, obj: object): Record<string, unknown>;
  checkReferences?(refs: readonly FoundReference[]): void;
  decodeReference(kind: ReferenceKind, data: Record<string, unknown>): unknown;
}

/** Limits of a {@link Codec}. */
export interface CodecOptions {
  /** Largest encoded value, in bytes, accepted by `encode` and `decode`. Default 1 MiB. */
  maxValueBytes?: number;
  /** Deepest nesting of arrays, maps and extension payloads. Default 64. */
  maxDepth?: number;
  /**
   * Binary values decode as plain `Uint8Array`s, not as instances of the input's class (msgpackr
   * copies a binary with the input's `slice`: a Buffer in Node, the browser build's Buffer in a
   * page). Default false. The browser client sets it.
   */
  plainBinary?: boolean;
}

/** Default of {@link CodecOptions.maxValueBytes}. */
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;
/** Default of {@link CodecOptions.maxDepth}. */
export const DEFAULT_MAX_DEPTH = 64;
/** Largest BigInt payload accepted, in bytes (32,768 bits). */
export const MAX_BIGINT_BYTES = 4096;

/** Set (as `true`) on netchan's channel classes in every copy of the module. */
const CHANNEL_MARK = Symbol.for('netchan.channel');

type AnyClass = abstract new (...args: never[]) => object;
const referenceClasses: Array<{ cls: AnyClass; kind: ReferenceKind }> = [];

/**
 * Declares that instances of `cls` travel as references of `kind` (the session registers its
 * channel and stream classes). Instances are never walked as plain objects.
 */
export function registerReferenceClass(cls: AnyClass, kind: ReferenceKind): void {
  if (!referenceClasses.some((r) => r.cls === cls)) referenceClasses.push({ cls, kind });
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** Carries what a session's hook threw through msgpackr, to be rethrown unchanged. */
class HookFailure {
  constructor(readonly error: unknown) {}
}

/** A value the encode walk replaced; msgpackr writes it as an extension through `addExtension`. */
abstract class Box {
  constructor(readonly payload: unknown) {}
}
class BigIntBox extends Box {}
class MapBox extends Box {}
class SetBox extends Box {}
class ErrorBox extends Box {}
class ChannelRefBox extends Box {}
class BytesRefBox extends Box {}

const packOptions = {
  // prepare() calls a class instance's toJSON itself; msgpackr would call a plain object's own
  // `toJSON` property (one that decoded from `{constructor: 0, toJSON: 1}`, say) and throw.
  useToJSON: false,
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  bundleStrings: false,
  useTimestamp32: false,
} as const;
const packr = new Packr(packOptions);
/** A second packer for extension payloads, so that a payload never shares the outer buffer. */
const payloadPackr = new Packr(packOptions);

function registerNested(type: number, cls: new (payload: unknown) => Box): void {
  addExtension({
    Class: cls,
    type,
    pack: (box: Box) => Uint8Array.from(payloadPackr.pack(box.payload)),
    // The payload was validated as exactly one value; msgpackr's unpack is re-entrant.
    unpack: (data: Uint8Array) => decodeNested(type, unpackr.unpack(data)),
  });
}
addExtension({
  Class: BigIntBox,
  type: ExtensionTypes.BIGINT,
  pack: (box: BigIntBox) => bigintToBytes(box.payload as bigint),
  unpack: (data: Uint8Array) => bytesToBigint(data),
});
registerNested(ExtensionTypes.MAP, MapBox);
registerNested(ExtensionTypes.SET, SetBox);
registerNested(ExtensionTypes.ERROR, ErrorBox);
registerNested(ExtensionTypes.CHANNEL, ChannelRefBox);
registerNested(ExtensionTypes.BYTES, BytesRefBox);

/** Minimal signed two's complement, big-endian. */
export function bigintToBytes(v: bigint): Uint8Array {
  const magnitude = v < 0n ? -v - 1n : v;
  const bits = magnitude.toString(2).length + 1;
  const length = Math.ceil(bits / 8);
  if (length > MAX_BIGINT_BYTES) throw netchanError(ErrorCodes.ENCODE, `BigInt too large (${length} bytes, limit ${MAX_BIGINT_BYTES})`);
  const hex = BigInt.asUintN(length * 8, v).toString(16).padStart(length * 2, '0');
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

/** Inverse of {@link bigintToBytes}; accepts non-minimal encodings too. */
export function bytesToBigint(data: Uint8Array): bigint {
  const unsigned = BigInt('0x' + Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex'));
  return BigInt.asIntN(data.length * 8, unsigned);
}

interface EncodeState {
  hooks: ReferenceHooks | undefined;
  maxDepth: number;
}

function isBinary(v: object): boolean {
  return ArrayBuffer.isView(v) || v instanceof ArrayBuffer;
}

/**
 * Returns `v` ready for msgpackr: the same object when nothing inside needs converting,
 * otherwise a copy of the containers on the way to each converted value. `depth` is the number
 * of containers around `v`.
 */
function prepare(v: unknown, depth: number, st: EncodeState): unknown {
  switch (typeof v) {
    case 'object':
      break;
    case 'bigint':
      return new BigIntBox(v);
    case 'function':
    case 'symbol':
      throw netchanError(ErrorCodes.ENCODE, `cannot encode a ${typeof v}`);
    default:
      return v;
  }
  if (v === null || isBinary(v)) return v;
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw netchanError(ErrorCodes.ENCODE, 'cannot encode an invalid Date');
    return v;
  }
  if (depth >= st.maxDepth) {
    throw netchanError(ErrorCodes.DEPTH_LIMIT, `value nests deeper than ${st.maxDepth} levels (or contains a cycle)`);
  }
  const inner = depth + 1;
  if (Array.isArray(v)) return prepareArray(v, inner, st);
  // `constructor === Object` is an inline-cached load; getPrototypeOf is a runtime call.
  if ((v as { constructor?: unknown }).constructor === Object) return prepareObject(v as Record<string, unknown>, inner, st, false);
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) return prepareObject(v as Record<string, unknown>, inner, st, false);
  if (v instanceof Map) {
    const flat: unknown[] = [];
    for (const [k, val] of v) flat.push(prepare(k, inner, st), prepare(val, inner, st));
    return new MapBox(flat);
  }
  if (v instanceof Set) return new SetBox(Array.from(v, (m) => prepare(m, inner, st)));
  if (v instanceof Error) return new ErrorBox(prepareObject(errorFields(v), inner, st, true));
  for (const { cls, kind } of referenceClasses) {
    if (v instanceof cls) {
      if (!st.hooks) throw netchanError(ErrorCodes.ENCODE, `a ${kind === 'channel' ? 'channel' : 'byte stream'} can only be sent through a session`);
      let ref: Record<string, unknown>;
      try {
        ref = st.hooks.encodeReference(kind, v);
      } catch (err) {
        throw new HookFailure(err);
      }
      const data = prepareObject(ref, inner, st, true);
      return kind === 'channel' ? new ChannelRefBox(data) : new BytesRefBox(data);
    }
  }
  if ((v as Record<symbol, unknown>)[CHANNEL_MARK] === true) {
    throw netchanError(ErrorCodes.ENCODE, 'this channel comes from another copy of the netchan module (two versions installed, or one loaded twice): it cannot travel through this one');
  }
  const json = (v as { toJSON?: unknown }).toJSON;
  if (typeof json === 'function') return prepare(json.call(v), depth, st);
  // Any other class instance travels as a plain object of its own enumerable properties.
  return prepareObject(v as Record<string, unknown>, inner, st, true);
}

function prepareArray(v: unknown[], depth: number, st: EncodeState): unknown[] {
  let out: unknown[] | undefined;
  for (let i = 0; i < v.length; i++) {
    const item = v[i];
    const p = prepare(item, depth, st);
    if (out) out.push(p);
    else if (p !== item) {
      out = v.slice(0, i);
      out.push(p);
    }
  }
  return out ?? v;
}

function prepareObject(v: Record<string, unknown>, depth: number, st: EncodeState, copy: boolean): Record<string, unknown> {
  let out: Record<string, unknown> | undefined = copy ? {} : undefined;
  // for-in over a plain object walks V8's enum cache: no key array per object on the hot path.
  for (const key in v) {
    if (!Object.prototype.hasOwnProperty.call(v, key)) continue;
    if (key === '__proto__') throw netchanError(ErrorCodes.ENCODE, 'the key "__proto__" cannot be sent');
    const item = v[key];
    // Strings, numbers and booleans need nothing: skip the call for them.
    const t = typeof item;
    const p = t === 'string' || t === 'number' || t === 'boolean' ? item : prepare(item, depth, st);
    if (out) out[key] = p;
    else if (p !== item) {
      out = {};
      for (const k in v) {
        if (k === key) break;
        if (Object.prototype.hasOwnProperty.call(v, k)) out[k] = v[k];
      }
      out[key] = p;
    }
  }
  return out ?? v;
}

function errorFields(err: Error): Record<string, unknown> {
  const fields: Record<string, unknown> = { name: String(err.name), message: String(err.message) };
  for (const key of Object.keys(err)) {
    if (key !== 'stack' && key !== 'name' && key !== 'message' && key !== 'cause') fields[key] = (err as unknown as Record<string, unknown>)[key];
  }
  if ('cause' in err && err.cause !== undefined) fields.cause = err.cause;
  return fields;
}

// ---------------------------------------------------------------------------------------------
// Decoding

const unpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  structuredClone: false,
  moreTypes: false,
  bundleStrings: false,
  copyBuffers: true,
  // 'auto' (a number when it is safe, else a BigInt) is supported at run time but missing from the types.
  int64AsType: 'auto' as 'number',
});

let decodeHooks: ReferenceHooks | undefined;
/** Set while reference payloads are read for `checkReferences`: nested references read as null. */
let readingReferences = false;

/**
 * How much larger than its input a decoded value's own encoding can be: an empty fixmap (1 byte)
 * is written back as map 16 (3), an invalid UTF-8 byte as U+FFFD (3), the integer key -32 (1) as
 * the string "-32" (4). Binary contents come back as they are. Only a value whose bound
 * (binary + 4 * the rest) exceeds `maxValueBytes` is encoded again to be measured.
 */
const MAX_REENCODE_GROWTH = 4;
/** Stands in for a session's hooks when a decoded value is measured: references do not count. */
const sizingHooks: ReferenceHooks = {
  encodeReference: () => ({}),
  decodeReference: () => undefined,
};

/**
 * Small values are copied here and decoded from offset 0. msgpackr caches a DataView on the
 * buffer it reads (a new property, i.e. a hidden-class change, on every fresh subarray) and uses
 * its key cache only for inputs shorter than 180 bytes counted from the buffer's start: decoding
 * a frame's subarray, or a whole chunk with start/end, pays for both on every value.
 */
const SCRATCH_BYTES = 16 * 1024;
const scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
/** The same bytes as a plain Uint8Array, for {@link CodecOptions.plainBinary}. */
const plainScratch = new Uint8Array(scratch.buffer, scratch.byteOffset, scratch.byteLength);
/** Set while `scratch` holds the value being decoded (a reference hook could decode again). */
let scratchBusy = false;

function decodeNested(type: number, payload: unknown): unknown {
  switch (type) {
    case ExtensionTypes.MAP: {
      const flat = payload as unknown[];
      const map = new Map<unknown, unknown>();
      for (let i = 0; i < flat.length; i += 2) map.set(flat[i], flat[i + 1]);
      return map;
    }
    case ExtensionTypes.SET:
      return new Set(payload as unknown[]);
    case ExtensionTypes.ERROR:
      return errorFromFields(payload as Record<string, unknown>);
    default: {
      if (readingReferences) return null;
      const hooks = decodeHooks;
      const kind: ReferenceKind = type === ExtensionTypes.CHANNEL ? 'channel' : 'bytes';
      if (!hooks) throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `a ${kind} reference can only be decoded by a session`);
      try {
        return hooks.decodeReference(kind, payload as Record<string, unknown>);
      } catch (err) {
        throw new HookFailure(err);
      }
    }
  }
}

function errorFromFields(fields: Record<string, unknown>): Error {
  // The encoder always writes both as strings; any other name would be sent on as String(name),
  // which may throw (a map with a `toString` key) or change the value.
  if (typeof fields.name !== 'string' || typeof fields.message !== 'string') {
    throw decodeError('an Error extension needs a string "name" and a string "message"');
  }
  const err = new Error(fields.message);
  // A local stack would show the decoder, not where the error happened; the peer's is never sent.
  err.stack = `${fields.name}: ${err.message}\n    at <remote>`;
  for (const key of Object.keys(fields)) {
    if (key === 'message' || key === 'stack') continue;
    Object.defineProperty(err, key, { value: fields[key], writable: true, enumerable: key !== 'name' && key !== 'cause', configurable: true });
  }
  return err;
}

// The validator's view of each first byte: how the value it starts is laid out.
const FIXED = 0; // header plus SIZE[b] bytes, nothing nested
const STR8 = 1; // str8 / bin8: 1-byte length, then the bytes
const STR16 = 2;
const STR32 = 3;
const ARRAY = 4; // fixarray, array16, array32
const MAP = 5; // fixmap, map16, map32
const EXT = 6; // fixext1..16, ext8/16/32
const NEVER = 7; // 0xc1

const KIND = new Uint8Array(256);
const SIZE = new Uint8Array(256); // FIXED: bytes after the header byte
const KEY_OK = new Uint8Array(256); // 1 where a map key may start: strings and integers
(() => {
  const set = (from: number, to: number, kind: number, size = 0) => {
    for (let b = from; b <= to; b++) {
      KIND[b] = kind;
      SIZE[b] = size;
    }
  };
  set(0x00, 0x7f, FIXED);
  set(0x80, 0x8f, MAP);
  set(0x90, 0x9f, ARRAY);
  for (let b = 0xa0; b <= 0xbf; b++) set(b, b, FIXED, b - 0xa0); // fixstr
  set(0xc0, 0xc0, FIXED);
  set(0xc1, 0xc1, NEVER);
  set(0xc2, 0xc3, FIXED);
  set(0xc4, 0xc4, STR8);
  set(0xc5, 0xc5, STR16);
  set(0xc6, 0xc6, STR32);
  set(0xc7, 0xc9, EXT);
  set(0xca, 0xca, FIXED, 4);
  set(0xcb, 0xcb, FIXED, 8);
  set(0xcc, 0xcc, FIXED, 1);
  set(0xcd, 0xcd, FIXED, 2);
  set(0xce, 0xce, FIXED, 4);
  set(0xcf, 0xcf, FIXED, 8);
  set(0xd0, 0xd0, FIXED, 1);
  set(0xd1, 0xd1, FIXED, 2);
  set(0xd2, 0xd2, FIXED, 4);
  set(0xd3, 0xd3, FIXED, 8);
  set(0xd4, 0xd8, EXT);
  set(0xd9, 0xd9, STR8);
  set(0xda, 0xda, STR16);
  set(0xdb, 0xdb, STR32);
  set(0xdc, 0xdd, ARRAY);
  set(0xde, 0xdf, MAP);
  set(0xe0, 0xff, FIXED);
  for (let b = 0; b < 256; b++) {
    KEY_OK[b] = b <= 0x7f || (b >= 0xa0 && b <= 0xbf) || b >= 0xe0 || (b >= 0xd9 && b <= 0xdb) || (b >= 0xcc && b <= 0xd3) ? 1 : 0;
  }
})();

// What the one value inside an extension payload must be.
const EXPECT_ANY = 0;
const EXPECT_ARRAY_EVEN = 1; // Map
const EXPECT_ARRAY = 2; // Set
const EXPECT_MAP = 3; // Error and references

// Frame kinds on the validator's stack.
const IN_ARRAY = 0;
const IN_MAP = 1;
const IN_PAYLOAD = 2;

// The stack, reused across calls (validate is synchronous and never re-entered). Containers and
// payloads alternate at worst, so 2 * maxDepth + 2 frames always suffice.
// Int32 counters: inputs are below 2^31 bytes and a container never holds more values than
// bytes follow it, so every count fits, and parity and decrement stay integer operations.
let stackKind = new Uint8Array(130);
let stackLeft = new Int32Array(130); // values still expected in each open container
let stackEnd = new Int32Array(130); // where a payload must end

function decodeError(message: string): NetchanError {
  return netchanError(ErrorCodes.DECODE, message);
}

function truncated(pos: number, needed: number, end: number): NetchanError {
  return decodeError(`truncated value: needs ${needed} more bytes at offset ${pos}, ${end - pos} left`);
}

function depthError(maxDepth: number): NetchanError {
  return netchanError(ErrorCodes.DEPTH_LIMIT, `value nests deeper than ${maxDepth} levels`);
}

/**
 * The string "__proto__" at `pos`, as fixstr, str8, str16 or str32 (`first` is `b[pos]`)? msgpackr
 * would silently rename that key `__proto_`. Its UTF-8 decoder turns overlong forms into U+FFFD,
 * so these nine ASCII bytes are the only way to spell it.
 */
function isProtoKey(b: Uint8Array, pos: number, first: number): boolean {
  let at: number;
  if (first === 0xa9) at = pos + 1;
  else if (first === 0xd9) {
    if (b[pos + 1] !== 9) return false;
    at = pos + 2;
  } else if (first === 0xda) {
    if (b[pos + 1] !== 0 || b[pos + 2] !== 9) return false;
    at = pos + 3;
  } else {
    if (b[pos + 1] !== 0 || b[pos + 2] !== 0 || b[pos + 3] !== 0 || b[pos + 4] !== 9) return false;
    at = pos + 5;
  }
  return (
    b[at] === 0x5f && b[at + 1] === 0x5f && b[at + 2] === 0x70 && b[at + 3] === 0x72 && b[at + 4] === 0x6f &&
    b[at + 5] === 0x74 && b[at + 6] === 0x6f && b[at + 7] === 0x5f && b[at + 8] === 0x5f
  );
}

/** The range of a JavaScript Date: ±8.64e15 ms around the epoch, here in whole seconds. */
const MAX_DATE_SECONDS = 8.64e12;

/**
 * Checks a timestamp payload of 4, 8 or 12 bytes at `pos`: nanoseconds below 10^9, and an instant
 * a Date can hold (msgpackr would build an Invalid Date, which no encoder sends on).
 */
function checkTimestamp(b: Uint8Array, pos: number, length: number): void {
  if (length === 4) return; // u32 seconds: up to 2106
  const ns = length === 8 ? b[pos]! * 0x400000 + (b[pos + 1]! << 14) + (b[pos + 2]! << 6) + (b[pos + 3]! >> 2) : readLength(b, pos, 4);
  if (ns >= 1e9) throw decodeError(`timestamp with ${ns} nanoseconds at offset ${pos}`);
  if (length === 8) return; // u34 seconds: up to 2514
  // i64 seconds: the high half is signed; within ±2^53 the sum is exact, and far outside it the
  // rounding cannot bring the value back into range
  const seconds = ((b[pos + 4]! << 24) | (b[pos + 5]! << 16) | (b[pos + 6]! << 8) | b[pos + 7]!) * 0x100000000 + readLength(b, pos + 8, 4);
  if (seconds < -MAX_DATE_SECONDS || seconds > MAX_DATE_SECONDS || (seconds === MAX_DATE_SECONDS && ns !== 0)) {
    throw decodeError(`timestamp of ${seconds} seconds at offset ${pos} is outside the range of a Date`);
  }
}

function readLength(bytes: Uint8Array, pos: number, width: number): number {
  return width === 1 ? bytes[pos]! : width === 2 ? (bytes[pos]! << 8) | bytes[pos + 1]! : bytes[pos]! * 0x1000000 + ((bytes[pos + 1]! << 16) | (bytes[pos + 2]! << 8) | bytes[pos + 3]!);
}

/**
 * Checks that `bytes` hold exactly one MessagePack value netchan accepts, without building it and
 * without recursion. Throws `ERR_DECODE`, `ERR_DEPTH_LIMIT` or `ERR_UNKNOWN_EXTENSION`. With
 * `references`, appends `type, start, end` of every channel and byte-stream reference payload.
 * Returns how many of the bytes are binary (`bin 8/16/32`) contents: those are written back as
 * they are.
 */
export function validate(bytes: Uint8Array, maxDepth: number = DEFAULT_MAX_DEPTH, references?: number[]): number {
  const end = bytes.length;
  if (end === 0) throw decodeError('empty value');
  if (end > 0x7fffffff) throw netchanError(ErrorCodes.VALUE_TOO_LARGE, `value is ${end} bytes, at most 2^31 - 1 can be checked`);
  if (stackKind.length < 2 * maxDepth + 2) {
    stackKind = new Uint8Array(2 * maxDepth + 2);
    stackLeft = new Int32Array(2 * maxDepth + 2);
    stackEnd = new Int32Array(2 * maxDepth + 2);
  }
  const kinds = stackKind;
  const left = stackLeft;
  const ends = stackEnd;
  let sp = 0; // frames on the stack
  let depth = 0; // arrays and maps among them
  let expect = EXPECT_ANY;
  let pos = 0;
  let binary = 0;

  for (;;) {
    // ---- one value starts at `pos` ----
    if (pos >= end) throw truncated(pos, 1, end);
    const b = bytes[pos]!;
    if (sp > 0 && kinds[sp - 1] === IN_MAP && (left[sp - 1]! & 1) === 0) {
      if (KEY_OK[b] === 0) throw decodeError(`map key at offset ${pos} is not a string or an integer`);
      if ((b === 0xa9 || (b >= 0xd9 && b <= 0xdb)) && isProtoKey(bytes, pos, b)) throw decodeError(`the key "__proto__" is not accepted (offset ${pos})`);
    }
    const kind = KIND[b]!;
    let count = -1; // >= 0: this value is an array or map with that many values
    pos++;
    if (kind === FIXED) {
      pos += SIZE[b]!;
      if (pos > end) throw truncated(pos - SIZE[b]!, SIZE[b]!, end);
    } else if (kind === ARRAY || kind === MAP) {
      let n: number;
      if (b <= 0x9f) n = b & 0x0f;
      else {
        const width = b === 0xdc || b === 0xde ? 2 : 4;
        if (pos + width > end) throw truncated(pos, width, end);
        n = readLength(bytes, pos, width);
        pos += width;
      }
      count = kind === MAP ? 2 * n : n;
      if (count > end - pos) throw decodeError(`container at offset ${pos} declares ${n} entries but only ${end - pos} bytes follow`);
      if (expect !== EXPECT_ANY) {
        if (expect === EXPECT_MAP ? kind !== MAP : kind !== ARRAY) throw decodeError(`malformed extension payload at offset ${pos}`);
        if (expect === EXPECT_ARRAY_EVEN && n % 2 !== 0) throw decodeError(`Map payload with an odd number of values at offset ${pos}`);
        expect = EXPECT_ANY;
      }
      if (++depth > maxDepth) throw depthError(maxDepth);
      if (count > 0) {
        kinds[sp] = kind === MAP ? IN_MAP : IN_ARRAY;
        left[sp] = count;
        sp++;
        continue;
      }
      depth--;
    } else if (kind === STR8 || kind === STR16 || kind === STR32) {
      const width = kind === STR8 ? 1 : kind === STR16 ? 2 : 4;
      if (pos + width > end) throw truncated(pos, width, end);
      const n = readLength(bytes, pos, width);
      pos += width;
      if (n > end - pos) throw truncated(pos, n, end);
      pos += n;
      if (b <= 0xc6) binary += n;
    } else if (kind === EXT) {
      if (expect !== EXPECT_ANY) throw decodeError(`malformed extension payload at offset ${pos - 1}`);
      let length: number;
      if (b >= 0xd4) length = 1 << (b - 0xd4);
      else {
        const width = b === 0xc7 ? 1 : b === 0xc8 ? 2 : 4;
        if (pos + width > end) throw truncated(pos, width, end);
        length = readLength(bytes, pos, width);
        pos += width;
      }
      if (pos >= end) throw truncated(pos, 1, end);
      const type = (bytes[pos]! << 24) >> 24;
      pos++;
      if (length > end - pos) throw truncated(pos, length, end);
      switch (type) {
        case ExtensionTypes.TIMESTAMP:
          if (length !== 4 && length !== 8 && length !== 12) throw decodeError(`timestamp of ${length} bytes at offset ${pos}`);
          checkTimestamp(bytes, pos, length);
          break;
        case ExtensionTypes.UNDEFINED:
          if (length !== 1 || bytes[pos] !== 0) throw decodeError(`undefined extension other than the one byte 0x00 at offset ${pos}`);
          break;
        case ExtensionTypes.BIGINT:
          if (length < 1 || length > MAX_BIGINT_BYTES) throw decodeError(`BigInt of ${length} bytes at offset ${pos}`);
          break;
        case ExtensionTypes.MAP:
        case ExtensionTypes.SET:
        case ExtensionTypes.ERROR:
        case ExtensionTypes.CHANNEL:
        case ExtensionTypes.BYTES:
          // The payload is exactly one nested value of a given shape, ending at the payload's end.
          if (references && (type === ExtensionTypes.CHANNEL || type === ExtensionTypes.BYTES)) references.push(type, pos, pos + length);
          kinds[sp] = IN_PAYLOAD;
          left[sp] = 1;
          ends[sp] = pos + length;
          sp++;
          expect = type === ExtensionTypes.MAP ? EXPECT_ARRAY_EVEN : type === ExtensionTypes.SET ? EXPECT_ARRAY : EXPECT_MAP;
          continue;
        default:
          throw netchanError(ErrorCodes.UNKNOWN_EXTENSION, `unknown extension type ${type} at offset ${pos - 1}`);
      }
      pos += length;
    } else {
      throw decodeError(`byte 0xc1 (never used) at offset ${pos - 1}`);
    }
    if (expect !== EXPECT_ANY) throw decodeError(`malformed extension payload at offset ${pos}`);
    // ---- a value is complete: close every frame it completes ----
    for (;;) {
      if (sp === 0) {
        if (pos !== end) throw decodeError(`${end - pos} trailing bytes after the value`);
        return binary;
      }
      if (--left[sp - 1]! > 0) break;
      sp--;
      if (kinds[sp] === IN_PAYLOAD) {
        if (pos !== ends[sp]) throw decodeError(`extension payload does not end where its length says (offset ${pos})`);
      } else depth--;
    }
  }
}

/** `type, start, end` triples from {@link validate}, reused across decodes. */
const foundOffsets: number[] = [];

/** The payloads of the references `validate` found, read on their own (no hooks involved). */
function readReferences(bytes: Uint8Array, offsets: number[]): FoundReference[] {
  const out: FoundReference[] = [];
  const outer = readingReferences;
  readingReferences = true;
  try {
    for (let i = 0; i < offsets.length; i += 3) {
      const data = unpackr.unpack(bytes.subarray(offsets[i + 1]!, offsets[i + 2]!)) as Record<string, unknown>;
      out.push({ kind: offsets[i] === ExtensionTypes.CHANNEL ? 'channel' : 'bytes', data });
    }
  } catch (err) {
    if (err instanceof NetchanError) throw err;
    throw netchanError(ErrorCodes.DECODE, `cannot decode reference: ${(err as Error).message}`, { cause: err });
  } finally {
    readingReferences = outer;
    offsets.length = 0;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

/** Encodes and decodes values with netchan's limits and extension types. Not re-entrant per value. */
export class Codec {
  /** See {@link CodecOptions.maxValueBytes}. */
  readonly maxValueBytes: number;
  /** See {@link CodecOptions.maxDepth}. */
  readonly maxDepth: number;
  private readonly plainBinary: boolean;

  constructor(options: CodecOptions = {}) {
    this.maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
    this.maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.plainBinary = options.plainBinary === true;
  }

  /**
   * Encodes `value`. Throws `ERR_ENCODE` (unsupported value), `ERR_DEPTH_LIMIT`, or
   * `ERR_VALUE_TOO_LARGE` when the encoding exceeds `maxValueBytes`.
   */
  encode(value: unknown, hooks?: ReferenceHooks): Uint8Array {
    let bytes: Uint8Array;
    try {
      bytes = packr.pack(prepare(value, 0, { hooks, maxDepth: this.maxDepth }));
    } catch (err) {
      if (err instanceof HookFailure) throw err.error;
      if (err instanceof NetchanError) throw err;
      throw netchanError(ErrorCodes.ENCODE, `cannot encode value: ${(err as Error).message}`, { cause: err });
    }
    if (bytes.length > this.maxValueBytes) {
      throw netchanError(ErrorCodes.VALUE_TOO_LARGE, `encoded value is ${bytes.length} bytes, limit ${this.maxValueBytes}`);
    }
    return bytes;
  }

  /**
   * Decodes one value. Checks the size first, then the structure ({@link validate}), then hands
   * every reference to `hooks.checkReferences`, then builds the value; one that might outgrow
   * `maxValueBytes` when encoded again (see `MAX_REENCODE_GROWTH`) is measured as this codec
   * would encode it. Throws `ERR_VALUE_TOO_LARGE`, `ERR_DECODE`, `ERR_DEPTH_LIMIT`,
   * `ERR_UNKNOWN_EXTENSION`, or what the hooks throw.
   */
  decode(bytes: Uint8Array, hooks?: ReferenceHooks): unknown {
    if (bytes.length > this.maxValueBytes) {
      throw netchanError(ErrorCodes.VALUE_TOO_LARGE, `value is ${bytes.length} bytes, limit ${this.maxValueBytes}`);
    }
    const refs = hooks?.checkReferences ? foundOffsets : undefined;
    if (refs) refs.length = 0;
    const binary = validate(bytes, this.maxDepth, refs);
    if (refs && refs.length > 0) hooks!.checkReferences!(readReferences(bytes, refs));
    const outer = decodeHooks;
    decodeHooks = hooks;
    // msgpackr reads no further than the length given: the validator checked that exactly
    // `bytes.length` bytes hold one value, so what an earlier value left behind is never read
    const useScratch = !scratchBusy && bytes.length <= SCRATCH_BYTES;
    let value: unknown;
    try {
      if (useScratch) {
        scratchBusy = true;
        scratch.set(bytes);
        value = unpackr.unpack(this.plainBinary ? plainScratch : scratch, bytes.length);
      } else value = unpackr.unpack(this.plainBinary ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes);
    } catch (err) {
      if (err instanceof HookFailure) throw err.error;
      if (err instanceof NetchanError) throw err;
      throw netchanError(ErrorCodes.DECODE, `cannot decode value: ${(err as Error).message}`, { cause: err });
    } finally {
      decodeHooks = outer;
      if (useScratch) scratchBusy = false;
    }
    if (binary + MAX_REENCODE_GROWTH * (bytes.length - binary) > this.maxValueBytes) this.checkReencodedSize(value, bytes.length);
    return value;
  }

  /**
   * Refuses a value whose encoding by this codec would exceed `maxValueBytes`: another peer's
   * compact forms (fixmap, integer keys, float 32, invalid UTF-8) may grow when written again.
   * References count as empty maps; their size is the session's business.
   */
  private checkReencodedSize(value: unknown, received: number): void {
    let length: number;
    try {
      length = packr.pack(prepare(value, 0, { hooks: sizingHooks, maxDepth: this.maxDepth })).length;
    } catch (err) {
      // Whatever decodes must encode: reaching this is a bug in the decoder's rules, not the peer's.
      throw netchanError(ErrorCodes.DECODE, `the value decodes but cannot be encoded again: ${(err as Error).message}`, { cause: err });
    }
    if (length > this.maxValueBytes) {
      throw netchanError(ErrorCodes.VALUE_TOO_LARGE, `value of ${received} bytes would be ${length} bytes when sent on, limit ${this.maxValueBytes}`);
    }
  }
}
