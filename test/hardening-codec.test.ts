/**
 * Round-trip closure of the codec: whatever `decode` accepts, the same codec encodes again, to the
 * same value. A value that decodes but cannot be encoded is a poison pill: accepted into a channel,
 * it fails every remote receiver with ERR_ENCODE in turn and goes back to the head each time.
 * Here: the refused inputs of docs/PROTOCOL.md §3.3 (test/vectors/codec-refused.json), the
 * regressions, a property over hostile MessagePack built to reach every rule, and the same
 * poison values sent by a raw HTTP/2 client to a real server.
 */
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import fc from 'fast-check';
import { Codec, validate, type ReferenceHooks } from '../lib/wire/codec.js';
import { Channel } from '../lib/core/channel.js';
import { ErrorCodes, NetchanError, netchanError } from '../lib/core/errors.js';
import { FrameType, encodeFrame } from '../lib/wire/frames.js';
import '../lib/session/session.js'; // registers the channel and stream classes as references
import { testCertificates } from './helpers/certs.js';
import { framesOf } from './helpers/raw-stream.js';
import { onTeardown, startServer, teardown, until } from './helpers/net.js';

const codec = new Codec();
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** Hex as docs/PROTOCOL.md writes it: spaces ignored, `91×10000` repeats a byte. */
const bytes = (h: string) =>
  Uint8Array.from(Buffer.from(h.replace(/([0-9a-f]{2})×(\d+)/g, (_, b: string, n: string) => b.repeat(Number(n))).replace(/\s+/g, ''), 'hex'));

/** The codes §3.1 lets a receiver refuse a value with. */
const REFUSAL_CODES = ['ERR_VALUE_TOO_LARGE', 'ERR_DECODE', 'ERR_DEPTH_LIMIT', 'ERR_UNKNOWN_EXTENSION'];

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(NetchanError);
    return (err as NetchanError).code;
  }
  expect.fail('expected a NetchanError');
}

/** References decoded by {@link refHooks}, with the data they arrived with. */
const refData = new WeakMap<object, { kind: string; data: unknown }>();
/** A session's hooks, minus the session: references become real channels and streams and go back out as the same data. */
const refHooks: ReferenceHooks = {
  decodeReference(kind, data) {
    const obj = kind === 'channel' ? new Channel() : new PassThrough();
    refData.set(obj, { kind, data });
    return obj;
  },
  encodeReference(_kind, obj) {
    return refData.get(obj)!.data as Record<string, unknown>;
  },
};

/** Comparable form: binary as hex, Errors by name, message and fields, -0 as 0 (the encoder sends 0). */
function normalize(v: unknown): unknown {
  if (typeof v === 'number') return Object.is(v, -0) ? 0 : v;
  if (v === null || typeof v !== 'object') return v;
  const ref = refData.get(v);
  if (ref) return { ref: ref.kind, data: normalize(ref.data) };
  if (v instanceof Uint8Array) return { bin: hex(v) };
  if (v instanceof Map) return { map: [...v].map(([k, x]) => [normalize(k), normalize(x)]) };
  if (v instanceof Set) return { set: [...v].map(normalize) };
  if (v instanceof Date) return { date: v.getTime() };
  if (v instanceof Error) {
    const fields: Record<string, unknown> = { name: v.name, message: v.message, cause: normalize((v as { cause?: unknown }).cause) };
    for (const k of Object.keys(v)) fields[k] = normalize((v as unknown as Record<string, unknown>)[k]);
    return { error: fields };
  }
  if (Array.isArray(v)) return v.map(normalize);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v)) out[k] = normalize((v as Record<string, unknown>)[k]);
  return out;
}

/**
 * The closure property for one input: `c.decode` refuses it with a §3.1 code, or returns a value
 * that `c` encodes without throwing, within `c.maxValueBytes`, no larger than the bound decode
 * relies on (binary contents plus 4 times the other bytes);
 * that encoding decodes to an equal value and is a fixed point (encoding that again gives the
 * same bytes). Returns whether the input was accepted.
 */
function expectClosed(c: Codec, input: Uint8Array, hooks?: ReferenceHooks): boolean {
  let value: unknown;
  try {
    value = c.decode(input, hooks);
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(NetchanError);
    expect(REFUSAL_CODES, `${hex(input)}: ${String(err)}`).to.include((err as NetchanError).code);
    return false;
  }
  let once: Uint8Array;
  try {
    once = c.encode(value, hooks);
  } catch (err) {
    expect.fail(`${hex(input)} decodes to ${String(value)} but does not encode again: ${String(err)}`);
  }
  const binary = validate(input, c.maxDepth);
  expect(once.length, `${hex(input)} grows past its bound`).to.be.at.most(binary + 4 * (input.length - binary));
  const again = c.decode(once, hooks);
  expect(normalize(again), hex(input)).to.deep.equal(normalize(value));
  expect(hex(c.encode(again, hooks)), hex(input)).to.equal(hex(once));
  return true;
}

// ---- hostile MessagePack, built item by item ----

type Bytes = number[];
const be = (n: bigint, width: number): Bytes => {
  const out: Bytes = [];
  for (let i = width - 1; i >= 0; i--) out.push(Number((BigInt.asUintN(width * 8, n) >> BigInt(8 * i)) & 0xffn));
  return out;
};
const utf8 = (s: string): Bytes => [...Buffer.from(s, 'utf8')];

/** A string's bytes in one of the four forms (fixstr only when it fits). */
const strItem = (content: fc.Arbitrary<Bytes>): fc.Arbitrary<Bytes> =>
  fc.tuple(content, fc.constantFrom(0, 1, 2, 3)).map(([b, form]) => {
    if (form === 0 && b.length <= 31) return [0xa0 | b.length, ...b];
    if (form <= 1 && b.length <= 255) return [0xd9, b.length, ...b];
    if (form <= 2) return [0xda, ...be(BigInt(b.length), 2), ...b];
    return [0xdb, ...be(BigInt(b.length), 4), ...b];
  });

const stringContent: fc.Arbitrary<Bytes> = fc.oneof(
  fc.constantFrom('__proto__', '__proto_', 'constructor', 'prototype', 'name', 'message', 'cause', 'stack', 'toString', 'valueOf', 'toJSON', '', '0', '-1').map(utf8),
  fc.string({ maxLength: 12, unit: 'binary' }).map(utf8),
  fc.uint8Array({ maxLength: 12 }).map((a) => [...a]), // often invalid UTF-8
  fc.constant<Bytes>([0xc1, 0x9f, 0xc1, 0x9f, ...utf8('proto'), 0xc1, 0x9f, 0xc1, 0x9f]), // "__proto__" with overlong underscores
);
const stringItem = strItem(stringContent);

const intItem: fc.Arbitrary<Bytes> = fc.oneof(
  fc.integer({ min: 0, max: 0x7f }).map((n) => [n]),
  fc.integer({ min: 0xe0, max: 0xff }).map((n) => [n]),
  fc.tuple(fc.constantFrom(0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map(([h, n]) => {
    const width = 1 << (h & 0x03);
    return [h, ...be(n, width)];
  }),
);

const scalarItem: fc.Arbitrary<Bytes> = fc.oneof(
  fc.constantFrom(0xc0, 0xc2, 0xc3).map((b) => [b]),
  intItem,
  fc.uint8Array({ minLength: 4, maxLength: 4 }).map((a) => [0xca, ...a]),
  fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => [0xcb, ...a]),
  stringItem,
  fc.tuple(fc.uint8Array({ maxLength: 8 }), fc.constantFrom(0xc4, 0xc5, 0xc6)).map(([a, h]) => [h, ...be(BigInt(a.length), 1 << (h - 0xc4)), ...a]),
);

/** An extension of `type` around `payload`, in a fixext form when the length allows it, else ext 8/16/32. */
const extItem = (type: number, payload: Bytes, form: number): Bytes => {
  const n = payload.length;
  const fixed = [1, 2, 4, 8, 16].indexOf(n);
  if (form === 0 && fixed >= 0) return [0xd4 + fixed, type & 0xff, ...payload];
  if (form <= 1 && n <= 255) return [0xc7, n, type & 0xff, ...payload];
  if (form <= 2 && n <= 0xffff) return [0xc8, ...be(BigInt(n), 2), type & 0xff, ...payload];
  return [0xc9, ...be(BigInt(n), 4), type & 0xff, ...payload];
};
const extForm = fc.constantFrom(0, 1, 2, 3);

const DATE_SECONDS = 8_640_000_000_000n;
const timestampItem: fc.Arbitrary<Bytes> = fc.oneof(
  fc.uint8Array({ minLength: 4, maxLength: 4 }).map((a) => [0xd6, 0xff, ...a]),
  fc.tuple(fc.oneof(fc.constantFrom(0n, 999_999_999n, 1_000_000_000n, 2n ** 30n - 1n), fc.bigInt({ min: 0n, max: 2n ** 30n - 1n })), fc.bigInt({ min: 0n, max: 2n ** 34n - 1n })).map(
    ([ns, s]) => [0xd7, 0xff, ...be((ns << 34n) | s, 8)],
  ),
  fc
    .tuple(
      fc.oneof(fc.constantFrom(0n, 1n, 999_999_999n, 1_000_000_000n, 2n ** 32n - 1n), fc.bigInt({ min: 0n, max: 2n ** 32n - 1n })),
      fc.oneof(
        fc.constantFrom(DATE_SECONDS, DATE_SECONDS + 1n, DATE_SECONDS - 1n, -DATE_SECONDS, -DATE_SECONDS - 1n, 2n ** 48n + 1n, -(2n ** 48n) - 1n, -1n, 0n, 2n ** 63n - 1n, -(2n ** 63n)),
        fc.bigInt({ min: -DATE_SECONDS - 10n, max: DATE_SECONDS + 10n }),
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      ),
    )
    .map(([ns, s]) => [0xc7, 0x0c, 0xff, ...be(ns, 4), ...be(s, 8)]),
);

const simpleExtItem: fc.Arbitrary<Bytes> = fc.oneof(
  timestampItem,
  fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })).map((b) => [0xd4, 0x00, b]), // undefined
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 20 }), extForm).map(([a, f]) => extItem(0x01, [...a], f)), // BigInt
  fc.tuple(fc.integer({ min: -128, max: 127 }), fc.uint8Array({ maxLength: 6 }), extForm).map(([t, a, f]) => extItem(t, [...a], f)), // any type
);

const arrayHeader = (n: number, form: number): Bytes => (form === 0 && n <= 15 ? [0x90 | n] : form <= 1 ? [0xdc, ...be(BigInt(n), 2)] : [0xdd, ...be(BigInt(n), 4)]);
const mapHeader = (n: number, form: number): Bytes => (form === 0 && n <= 15 ? [0x80 | n] : form <= 1 ? [0xde, ...be(BigInt(n), 2)] : [0xdf, ...be(BigInt(n), 4)]);
const containerForm = fc.constantFrom(0, 1, 2);

const { item } = fc.letrec<{ item: Bytes; array: Bytes; map: Bytes; key: Bytes; ext: Bytes; errorMap: Bytes }>((tie) => ({
  item: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalarItem, simpleExtItem, tie('array'), tie('map'), tie('ext')),
  array: fc.tuple(fc.array(tie('item'), { maxLength: 4 }), containerForm).map(([items, f]) => [...arrayHeader(items.length, f), ...items.flat()]),
  key: fc.oneof({ arbitrary: stringItem, weight: 6 }, { arbitrary: intItem, weight: 3 }, { arbitrary: tie('item'), weight: 1 }),
  map: fc.tuple(fc.array(fc.tuple(tie('key'), tie('item')), { maxLength: 4 }), containerForm).map(([entries, f]) => [...mapHeader(entries.length, f), ...entries.flat(2)]),
  // an Error's map: usually name and message, of any type, then other fields
  errorMap: fc
    .tuple(
      fc.option(fc.oneof({ arbitrary: stringItem, weight: 4 }, { arbitrary: tie('item'), weight: 1 }), { freq: 5 }),
      fc.option(fc.oneof({ arbitrary: stringItem, weight: 4 }, { arbitrary: tie('item'), weight: 1 }), { freq: 5 }),
      fc.array(fc.tuple(tie('key'), tie('item')), { maxLength: 2 }),
      containerForm,
    )
    .map(([name, message, rest, f]) => {
      const entries: Bytes[] = [];
      if (name) entries.push([...utf8str('name'), ...name]);
      if (message) entries.push([...utf8str('message'), ...message]);
      for (const [k, v] of rest) entries.push([...k, ...v]);
      return [...mapHeader(entries.length, f), ...entries.flat()];
    }),
  ext: fc.oneof(
    // Map: an array, of even length more often than not
    fc.tuple(fc.array(tie('item'), { maxLength: 6 }), fc.boolean(), containerForm, extForm).map(([items, even, cf, ef]) => {
      const list = even && items.length % 2 ? items.slice(1) : items;
      return extItem(0x02, [...arrayHeader(list.length, cf), ...list.flat()], ef);
    }),
    fc.tuple(tie('array'), extForm).map(([a, f]) => extItem(0x03, a, f)), // Set
    fc.tuple(tie('errorMap'), extForm).map(([m, f]) => extItem(0x04, m, f)), // Error
    fc.tuple(fc.constantFrom(0x10, 0x11), tie('map'), extForm).map(([t, m, f]) => extItem(t, m, f)), // references
    fc.tuple(fc.constantFrom(0x02, 0x03, 0x04), tie('item'), extForm).map(([t, v, f]) => extItem(t, v, f)), // any payload
  ),
}));
function utf8str(s: string): Bytes {
  const b = utf8(s);
  return [0xa0 | b.length, ...b];
}

describe('codec hardening: what decodes encodes again', () => {
  afterEach(() => {
    expect(({} as Record<string, unknown>).polluted, 'Object.prototype was polluted').to.equal(undefined);
  });

  describe('refused inputs (test/vectors/codec-refused.json, docs/PROTOCOL.md §3.3)', () => {
    const refused = JSON.parse(readFileSync(new URL('./vectors/codec-refused.json', import.meta.url), 'utf8')) as Array<{ hex: string; why: string; code: string }>;
    const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');

    for (const r of refused) {
      it(`${r.why}: ${r.hex.length > 40 ? r.hex.slice(0, 40) + '…' : r.hex} is refused with ${r.code}`, () => {
        expect(codeOf(() => codec.decode(bytes(r.hex)))).to.equal(r.code);
        // and without a session's hooks too, where references would be resolved
        expect(codeOf(() => codec.decode(bytes(r.hex), refHooks))).to.equal(r.code);
      });
    }

    it('the table in docs/PROTOCOL.md §3.3 is the vectors file, row for row', () => {
      const section = doc.slice(doc.indexOf('Refused inputs'), doc.indexOf('## 4.'));
      const rows = section.split('\n').filter((l) => l.startsWith('| `'));
      expect(rows).to.deep.equal(refused.map((r) => `| \`${r.hex}\` | ${r.why} | \`${r.code}\` |`));
    });
  });

  describe('timestamps', () => {
    it('regression: a timestamp that decodes to an Invalid Date is refused with ERR_DECODE', () => {
      // 12 bytes: i64 seconds far beyond what a Date holds (msgpackr built new Date(NaN))
      expect(codeOf(() => codec.decode(bytes('c7 0c ff 00000000 7fffffffffffffff')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 0c ff 00000000 8000000000000000')))).to.equal('ERR_DECODE');
      // inside a container, as a Map key, as an Error field
      expect(codeOf(() => codec.decode(bytes('91 c7 0c ff 00000000 7fffffffffffffff')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 11 02 92 c7 0c ff 00000000 7fffffffffffffff c0')))).to.equal('ERR_DECODE');
    });

    it('regression: a timestamp just outside ±8.64e15 ms is refused, the last representable instants are accepted', () => {
      const input = (ns: bigint, s: bigint) => Uint8Array.from([0xc7, 0x0c, 0xff, ...be(ns, 4), ...be(s, 8)]);
      const at = (ns: bigint, s: bigint) => codec.decode(input(ns, s)) as Date;
      expect(at(0n, DATE_SECONDS).getTime()).to.equal(8.64e15);
      expect(at(0n, -DATE_SECONDS).getTime()).to.equal(-8.64e15);
      for (const [ns, s] of [[0n, DATE_SECONDS], [0n, -DATE_SECONDS], [999_999_999n, -DATE_SECONDS], [999_999_999n, DATE_SECONDS - 1n]] as const) {
        expect(expectClosed(codec, input(ns, s)), `${ns} ns, ${s} s`).to.equal(true);
      }
      expect(codeOf(() => at(1n, DATE_SECONDS))).to.equal('ERR_DECODE');
      expect(codeOf(() => at(0n, DATE_SECONDS + 1n))).to.equal('ERR_DECODE');
      expect(codeOf(() => at(999_999_999n, -DATE_SECONDS - 1n))).to.equal('ERR_DECODE');
      for (const t of [8.64e15, -8.64e15, 8.64e15 - 1, -8.64e15 + 1]) expect((codec.decode(codec.encode(new Date(t))) as Date).getTime()).to.equal(t);
    });

    it('regression: a timestamp with 10^9 nanoseconds or more is refused with ERR_DECODE (it decoded to another instant than the one sent)', () => {
      expect(codeOf(() => codec.decode(bytes('d7 ff ffffffff 00000001')))).to.equal('ERR_DECODE'); // 2^30 - 1 ns
      expect(codeOf(() => codec.decode(bytes('c7 0c ff ffffffff 0000000000000000')))).to.equal('ERR_DECODE');
      expect((codec.decode(Uint8Array.from([0xd7, 0xff, ...be((999_999_999n << 34n) | 5n, 8)])) as Date).getTime()).to.equal(5999);
      expect(expectClosed(codec, bytes('c7 0c ff 3b9ac9ff ffffffffffffffff')), '1 ns before 1970').to.equal(true);
    });

    it('regression: a 12-byte timestamp beyond ±2^48 seconds is refused instead of read as another, valid Date', () => {
      // msgpackr reads only the low 48 bits and the sign: 2^48 + 1 seconds came out as 1 second
      expect(codeOf(() => codec.decode(bytes('c7 0c ff 00000000 0001000000000001')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 0c ff 00000000 fffeffffffffffff')))).to.equal('ERR_DECODE');
    });
  });

  describe('Errors', () => {
    it('regression: an Error whose name is not a string is refused with ERR_DECODE (it failed every remote receiver with ERR_ENCODE)', () => {
      // {name: {toString: 1}, message: ""}: String(name) threw "Cannot convert object to primitive value"
      expect(codeOf(() => codec.decode(bytes('c7 1a 04 82 a4 6e616d65 81 a8 746f537472696e67 01 a7 6d657373616765 a0')))).to.equal('ERR_DECODE');
      for (const name of ['01', 'c0', '90', 'c3', 'd4 00 00', 'c4 01 41']) {
        const payload = bytes(`82 a4 6e616d65 ${name} a7 6d657373616765 a0`);
        expect(codeOf(() => codec.decode(Uint8Array.from([0xc7, payload.length, 0x04, ...payload]))), name).to.equal('ERR_DECODE');
      }
    });

    it('regression: an Error whose message is not a string, or without a name or a message, is refused with ERR_DECODE', () => {
      for (const payload of ['82 a4 6e616d65 a0 a7 6d657373616765 01', '81 a7 6d657373616765 a0', '81 a4 6e616d65 a0', '80']) {
        const p = bytes(payload);
        expect(codeOf(() => codec.decode(Uint8Array.from([0xc7, p.length, 0x04, ...p]))), payload).to.equal('ERR_DECODE');
      }
      // the smallest Error accepted: {name: "", message: ""}
      const ok = codec.decode(bytes('c7 10 04 82 a4 6e616d65 a0 a7 6d657373616765 a0')) as Error;
      expect(ok).to.be.instanceOf(Error);
      expect(hex(codec.encode(codec.decode(codec.encode(ok))))).to.equal(hex(codec.encode(ok)));
    });

    it('a refusal while msgpackr is building the value leaves the codec able to decode the next one', () => {
      const bad = bytes('c7 10 04 82 a4 6e616d65 01 a7 6d657373616765 a0');
      const good = codec.encode({ list: [1, new Map([['k', new Set([2])]]), new Error('fine')] });
      for (let i = 0; i < 3; i++) {
        expect(codeOf(() => codec.decode(Uint8Array.from([0x92, 0x01, ...bad])))).to.equal('ERR_DECODE');
        expect(hex(codec.encode(codec.decode(good)))).to.equal(hex(good));
      }
    });
  });

  describe('the key __proto__', () => {
    it('regression: __proto__ as a str8, str16 or str32 key is refused with ERR_DECODE, not renamed __proto_', () => {
      for (const key of ['d9 09', 'da 0009', 'db 00000009']) {
        expect(codeOf(() => codec.decode(bytes(`81 ${key} 5f5f70726f746f5f5f 81 a8 706f6c6c75746564 c3`))), key).to.equal('ERR_DECODE');
      }
    });

    it('regression: __proto__ in any string form is refused inside Error, Map, Set and reference payloads', () => {
      for (const key of ['a9', 'd9 09', 'da 0009', 'db 00000009']) {
        const obj = bytes(`81 ${key} 5f5f70726f746f5f5f 01`);
        const error = bytes(`83 a4 6e616d65 a0 a7 6d657373616765 a0`);
        const inError = Uint8Array.from([...error, ...obj.subarray(1)]); // a third field
        inError[0] = 0x83;
        const cases = {
          'Error field': [0xc7, inError.length, 0x04, ...inError],
          'Map value': [0xc7, obj.length + 2, 0x02, 0x92, 0x01, ...obj],
          'Map key': [0xc7, obj.length + 2, 0x02, 0x92, ...obj, 0x01],
          'Set member': [0xc7, obj.length + 1, 0x03, 0x91, ...obj],
          'channel reference': [0xc7, obj.length, 0x10, ...obj],
          'byte-stream reference': [0xc7, obj.length, 0x11, ...obj],
        };
        for (const [where, input] of Object.entries(cases)) {
          expect(codeOf(() => codec.decode(Uint8Array.from(input), refHooks)), `${key} in ${where}`).to.equal('ERR_DECODE');
        }
      }
    });

    it('regression: __proto__ is refused in long inputs too, where msgpackr reads strings through its native extractor', () => {
      const padding = 'ab'.repeat(200);
      for (const key of ['a9', 'd9 09', 'da 0009', 'db 00000009']) {
        expect(codeOf(() => codec.decode(bytes(`82 a1 70 da 00c8 ${padding} ${key} 5f5f70726f746f5f5f 01`))), key).to.equal('ERR_DECODE');
      }
    });

    it('no other bytes turn into the key __proto__ or __proto_: overlong UTF-8 becomes U+FFFD, and "__proto_" is kept as sent', () => {
      const overlong = 'c19fc19f70726f746fc19fc19f';
      for (const pad of ['', `a1 70 da 00c8 ${'ab'.repeat(200)}`]) {
        const out = codec.decode(bytes(`8${pad ? 2 : 1} ${pad} ad ${overlong} 01`)) as Record<string, unknown>;
        const key = Object.keys(out).find((k) => k !== 'p')!;
        expect(key).to.not.be.oneOf(['__proto__', '__proto_']);
        expect(key).to.include('\ufffd');
        expect(Object.getPrototypeOf(out)).to.equal(Object.prototype);
      }
      const kept = codec.decode(bytes('81 d9 08 5f5f70726f746f5f 01')) as Record<string, unknown>;
      expect(Object.keys(kept)).to.deep.equal(['__proto_']);
    });

    it('a Map may hold the key "__proto__" (it is a Map entry, not a property): accepted and sent on unchanged', () => {
      const input = bytes('c7 0c 02 92 a9 5f5f70726f746f5f5f 01');
      const out = codec.decode(input) as Map<unknown, unknown>;
      expect(out).to.be.instanceOf(Map);
      expect([...out]).to.deep.equal([['__proto__', 1]]);
      expect(hex(codec.encode(out))).to.equal(hex(input));
      expect(hex(codec.encode(new Map([['__proto__', { x: 1 }]])))).to.equal(hex(codec.encode(codec.decode(codec.encode(new Map([['__proto__', { x: 1 }]]))))));
    });
  });

  describe('plain objects', () => {
    it('regression: an object with own keys "constructor" and "toJSON" encodes again (msgpackr called its toJSON property and threw)', () => {
      // {constructor: 0, toJSON: 1}
      const input = bytes('82 ab 636f6e7374727563746f72 00 a6 746f4a534f4e 01');
      const out = codec.decode(input) as Record<string, unknown>;
      expect(out).to.deep.equal({ constructor: 0, toJSON: 1 });
      expect(expectClosed(codec, input)).to.equal(true);
      // the same inside an Error's fields, and sent by a local program
      const err = Object.assign(new Error('x'), { constructor: 'y', toJSON: true });
      expect(normalize(codec.decode(codec.encode(err)))).to.deep.equal(normalize(err));
      expect(codec.decode(codec.encode({ constructor: [1], toJSON: 'z' }))).to.deep.equal({ constructor: [1], toJSON: 'z' });
    });
  });

  describe('other payloads', () => {
    it('regression: undefined with a payload byte other than 0x00 is refused with ERR_DECODE', () => {
      for (let b = 1; b < 256; b++) expect(codeOf(() => codec.decode(Uint8Array.from([0xd4, 0x00, b]))), String(b)).to.equal('ERR_DECODE');
      expect(codec.decode(bytes('d4 00 00'))).to.equal(undefined);
    });

    it('every BigInt payload of 1 to 4,096 bytes encodes again (within the sender limit, in its shortest form)', () => {
      for (const payload of [Buffer.alloc(4096, 0x00), Buffer.alloc(4096, 0xff), Buffer.concat([Buffer.from([0x7f]), Buffer.alloc(4095, 0xff)]), Buffer.concat([Buffer.from([0x80]), Buffer.alloc(4095, 0x00)])]) {
        const input = Uint8Array.from([0xc8, 0x10, 0x00, 0x01, ...payload]);
        expect(expectClosed(codec, input)).to.equal(true);
      }
      fc.assert(
        fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (a) => {
          expect(expectClosed(codec, Uint8Array.from([0xc7, a.length, 0x01, ...a]))).to.equal(true);
        }),
        { numRuns: 500 },
      );
    });

    it('regression: a value that grows past maxValueBytes when encoded again is refused with ERR_VALUE_TOO_LARGE (it failed every receiver)', () => {
      const small = new Codec({ maxValueBytes: 4096 });
      // 4,093 empty fixmaps (1 byte each) come back as map 16 headers (3 bytes each)
      const maps = Uint8Array.from([0xdc, ...be(4093n, 2), ...new Array<number>(4093).fill(0x80)]);
      expect(maps.length).to.equal(4096);
      expect(codeOf(() => small.decode(maps))).to.equal('ERR_VALUE_TOO_LARGE');
      // 4,091 bytes of invalid UTF-8 come back as U+FFFD, 3 bytes each
      const text = Uint8Array.from([0xda, ...be(4091n, 2), ...new Array<number>(4091).fill(0xff), 0xc0, 0xc0]);
      expect(codeOf(() => small.decode(Uint8Array.from([0x93, ...text.subarray(0, text.length - 2), 0xc0, 0xc0])))).to.equal('ERR_VALUE_TOO_LARGE');
      // integer keys come back as strings: {-32: nil, -31: nil, ...}
      const keys = Uint8Array.from([0x8f, ...Array.from({ length: 15 }, (_, i) => [0xe0 + i, 0xc0]).flat()]);
      expect(codeOf(() => new Codec({ maxValueBytes: keys.length * 2 }).decode(keys))).to.equal('ERR_VALUE_TOO_LARGE');
      // the same bytes that fit once encoded again are accepted
      const fits = Uint8Array.from([0xdc, ...be(1364n, 2), ...new Array<number>(1364).fill(0x80)]);
      expect((small.decode(fits) as unknown[]).length).to.equal(1364);
      expect(small.encode(small.decode(fits)).length).to.be.at.most(4096);
    });
  });

  describe('property: hostile MessagePack either is refused or encodes again to the same value', () => {
    const tight = new Codec({ maxDepth: 8 });
    const tiny = new Codec({ maxDepth: 8, maxValueBytes: 96 });
    // The size rule counts references as empty maps (what a session writes for them is its own
    // business), so the tiny codec is held to it on values without references.
    const noRefs: ReferenceHooks = {
      encodeReference: () => expect.fail('no references here'),
      decodeReference: () => {
        throw netchanError(ErrorCodes.DECODE, 'no references here');
      },
    };

    it('structured hostile values (every string, integer, map and extension form; Invalid Dates, bad Errors, __proto__ keys)', () => {
      let accepted = 0;
      fc.assert(
        fc.property(item, (b) => {
          const input = Uint8Array.from(b);
          if (expectClosed(tight, input, refHooks)) accepted++;
          expectClosed(tiny, input, noRefs);
        }),
        { numRuns: 4000 },
      );
      // the generator reaches accepted values as well as refused ones
      expect(accepted).to.be.greaterThan(500);
    });

    it('random bytes, and valid encodings with a few bytes changed', () => {
      const sample = codec.encode({ a: [1, -2, { b: new Map<unknown, unknown>([['c', new Set([1n, new Date(9)])], [{}, -0.5]]) }], e: new RangeError('x', { cause: new Error('y') }), s: 'str', u: undefined });
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 128 }), (input) => {
          expectClosed(tight, input, refHooks);
        }),
        { numRuns: 2000 },
      );
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.nat(sample.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (edits) => {
          const copy = Uint8Array.from(sample);
          for (const [i, b] of edits) copy[i] = b;
          expectClosed(codec, copy, refHooks);
        }),
        { numRuns: 2000 },
      );
    });
  });
});

// ---- over the network ----

/** A raw HTTP/2 client's channel stream: the frames it got back and how it ended. */
interface RawStream {
  stream: http2.ClientHttp2Stream;
  frames(): Array<{ type: number; payload: Buffer }>;
  closed: Promise<void>;
}

function rawStream(stream: http2.ClientHttp2Stream): RawStream {
  const chunks: Buffer[] = [];
  stream.on('error', () => undefined);
  stream.on('data', (c: Buffer) => chunks.push(c));
  return {
    stream,
    closed: new Promise((resolve) => stream.once('close', () => resolve())),
    frames: () => framesOf(Buffer.concat(chunks)),
  };
}

describe('codec hardening over the network', function () {
  this.timeout(20_000);
  afterEach(teardown);

  const poison: Array<[what: string, payload: string, code: string]> = [
    ['a timestamp that decodes to an Invalid Date', 'c7 0c ff 00000000 7fffffffffffffff', 'ERR_DECODE'],
    ['a timestamp with 2^30 - 1 nanoseconds', 'd7 ff ffffffff 00000001', 'ERR_DECODE'],
    ['an Error whose name is {toString: 1}', 'c7 1a 04 82 a4 6e616d65 81 a8 746f537472696e67 01 a7 6d657373616765 a0', 'ERR_DECODE'],
    ['an Error whose message is nil', 'c7 10 04 82 a4 6e616d65 a0 a7 6d657373616765 c0', 'ERR_DECODE'],
    ['the key __proto__ as str8', '81 d9 09 5f5f70726f746f5f5f 81 a8 706f6c6c75746564 c3', 'ERR_DECODE'],
    ['the key __proto__ as str32 inside a Map', 'c7 11 02 92 01 81 db 00000009 5f5f70726f746f5f5f 01', 'ERR_DECODE'],
    ['8,000 empty fixmaps, 24,000 bytes when sent on', `dc 1f40 ${'80'.repeat(8000)}`, 'ERR_VALUE_TOO_LARGE'],
  ];

  it('regression: a poison value sent by a raw client gets ERROR with the codec code on its stream, and the channel keeps delivering the next good values to remote receivers', async () => {
    const s = await startServer({ maxFrameBytes: 16_384 });
    const feed = s.server.channel<unknown>('feed', 8);
    const receiver = await s.client();
    const inbox = receiver.channel<unknown>('feed');

    const sender = await s.client();
    const outbox = sender.channel<unknown>('feed');
    const { caCert } = await testCertificates();

    /** A raw client's channel stream to `feed`, on a connection and session of its own. */
    const rawSender = async (): Promise<RawStream> => {
      const h2 = http2.connect(s.url, { ca: caCert });
      h2.on('error', () => undefined);
      onTeardown(() => new Promise<void>((resolve) => (h2.destroyed ? resolve() : (h2.once('close', () => resolve()), h2.destroy()))));
      const request = (headers: Record<string, string>) => h2.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', ...headers }, { endStream: false });
      const responded = (rs: RawStream) => new Promise<http2.IncomingHttpHeaders>((resolve) => rs.stream.once('response', resolve));
      const control = rawStream(request({ 'netchan-kind': 'session' }));
      const id = (await responded(control))['netchan-session'] as string;
      const rs = rawStream(request({ 'netchan-kind': 'channel', 'netchan-session': id, 'netchan-stream': 'c1', 'netchan-name': 'feed' }));
      expect((await responded(rs))[':status']).to.equal(200);
      return rs;
    };

    const good = new Date(Date.UTC(2026, 0, 1));
    const received: unknown[] = [];
    for (const [i, [what, payload, code]] of poison.entries()) {
      const bad = await rawSender();
      bad.stream.write(encodeFrame(FrameType.VALUE, bytes(payload)));
      await bad.closed;
      const errors = bad.frames().filter((f) => f.type === FrameType.ERROR);
      expect(errors, what).to.have.length(1);
      expect((codec.decode(errors[0]!.payload) as { code: string }).code, what).to.equal(code);
      expect(feed.length, `nothing entered the channel after ${what}`).to.equal(0);

      // the next good values reach the remote receiver
      const values = [i, { when: good, n: i + 1 }, new Map([['__proto__', i + 1]])];
      for (const v of values) await outbox.send(v);
      for (let k = 0; k < values.length; k++) received.push(await inbox.receive());
    }
    expect(received).to.have.length(3 * poison.length);
    for (let i = 0; i < poison.length; i++) {
      expect(received[3 * i]).to.equal(i);
      expect((received[3 * i + 1] as { when: Date }).when.getTime()).to.equal(good.getTime());
      expect([...(received[3 * i + 2] as Map<string, number>)]).to.deep.equal([['__proto__', i + 1]]);
    }
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
    await until(() => feed.length === 0, 5000, 'the channel to drain');
    expect(receiver.closed).to.equal(false);
  });
});
