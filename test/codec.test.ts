import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import fc from 'fast-check';
import { Codec, ExtensionTypes, validate, type ReferenceHooks, type ReferenceKind } from '../lib/wire/codec.js';
import { Channel } from '../lib/core/channel.js';
import { NetchanError } from '../lib/core/errors.js';
import '../lib/session/session.js'; // registers the channel and stream classes as references
import { normalize } from './helpers/normalize.js';
import { fromTagged } from './helpers/tagged.js';

const codec = new Codec();
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (h: string) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

/** Runs `fn` and returns the NetchanError code it threw (fails the test on any other outcome). */
function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(NetchanError);
    return (err as NetchanError).code;
  }
  expect.fail('expected a NetchanError');
}

interface Vector {
  name: string;
  value: unknown;
  hex: string;
}
const vectors = JSON.parse(readFileSync(new URL('./vectors/codec.json', import.meta.url), 'utf8')) as Vector[];

describe('codec', () => {
  describe('test vectors (test/vectors/codec.json, docs/PROTOCOL.md §3)', () => {
    for (const v of vectors) {
      it(`${v.name}: encodes to ${v.hex.length > 40 ? v.hex.slice(0, 40) + '…' : v.hex} and decodes back`, () => {
        const value = fromTagged(v.value);
        expect(hex(codec.encode(value))).to.equal(v.hex);
        expect(normalize(codec.decode(bytes(v.hex)))).to.deep.equal(normalize(value));
      });
    }

    it('decodes encodings another implementation may choose (fixmap, int keys, str8)', () => {
      expect(codec.decode(bytes('82 a1 61 01 a1 62 02'))).to.deep.equal({ a: 1, b: 2 });
      expect(codec.decode(bytes('81 07 a1 78'))).to.deep.equal({ 7: 'x' });
      expect(codec.decode(bytes('d9 03 616263'))).to.equal('abc');
      // BigInt need not be minimal: 0x0000ff is 255.
      expect(codec.decode(bytes('c7 03 01 0000ff'))).to.equal(255n);
    });
  });

  describe('round trips', () => {
    it('plainBinary: binaries decode as plain Uint8Arrays (the browser client), small and past the scratch buffer', () => {
      const plain = new Codec({ plainBinary: true });
      for (const size of [3, 40_000]) {
        const encoded = codec.encode({ b: Buffer.alloc(size, 7) });
        const out = plain.decode(Buffer.from(encoded)) as { b: Uint8Array };
        expect(Object.getPrototypeOf(out.b), `${size} bytes`).to.equal(Uint8Array.prototype);
        expect(out.b.length).to.equal(size);
        expect(out.b[size - 1]).to.equal(7);
        expect(Buffer.isBuffer((codec.decode(Buffer.from(encoded)) as { b: Uint8Array }).b), 'Node default').to.equal(true);
      }
    });
    it('keeps Date, BigInt, binary, Map, Set, undefined and Error-as-data', () => {
      const cause = new Error('inner');
      const err = Object.assign(new RangeError('outer', { cause }), { code: 'E_OUTER', details: { retry: true } });
      const value = {
        when: new Date(1700000000123),
        big: -(2n ** 200n),
        bin: Buffer.from([0, 1, 255]),
        map: new Map<unknown, unknown>([[1, 'one'], ['set', new Set([1n, 'x'])], [{ k: 1 }, [null]]]),
        u: undefined,
        err,
      };
      const out = codec.decode(codec.encode(value)) as typeof value;
      expect(normalize(out)).to.deep.equal(normalize(value));
      expect(out.map).to.be.instanceOf(Map);
      expect(out.err).to.be.instanceOf(Error);
      expect(out.err.name).to.equal('RangeError');
      expect(out.err.code).to.equal('E_OUTER');
      expect((out.err.cause as Error).message).to.equal('inner');
      expect(out.err.stack).to.match(/^RangeError: outer\n {4}at <remote>$/);
    });

    it('property: any mix of supported values survives encode + decode', () => {
      const key = fc.string({ maxLength: 8 }).filter((k) => k !== '__proto__');
      const leaf = fc.oneof(
        fc.integer(),
        fc.double().filter((d) => !Object.is(d, -0)),
        fc.string(),
        fc.boolean(),
        fc.constant(null),
        fc.constant(undefined),
        fc.bigInt({ min: -(2n ** 300n), max: 2n ** 300n }),
        fc.date({ noInvalidDate: true }),
        fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
      );
      const { value } = fc.letrec((tie) => ({
        value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('array'), tie('object'), tie('map'), tie('set')),
        array: fc.array(tie('value'), { maxLength: 5 }),
        object: fc.dictionary(key, tie('value'), { maxKeys: 5 }),
        map: fc.array(fc.tuple(leaf, tie('value')), { maxLength: 4 }).map((e) => new Map(e)),
        set: fc.array(leaf, { maxLength: 4 }).map((e) => new Set(e)),
      }));
      fc.assert(
        fc.property(value, (v) => {
          expect(normalize(codec.decode(codec.encode(v)))).to.deep.equal(normalize(v));
        }),
        { numRuns: 500 },
      );
    });

    it('copies only what it must: a plain value is handed to msgpackr as it is', () => {
      const shared = { deep: { list: [1, 2, 3] } };
      const out = codec.decode(codec.encode({ a: shared, b: new Map([[1, shared]]) })) as { a: unknown; b: Map<number, unknown> };
      expect(out.a).to.deep.equal(shared);
      expect(out.b.get(1)).to.deep.equal(shared);
    });
  });

  describe('what cannot be encoded', () => {
    it('rejects functions, symbols, invalid dates and the key __proto__ with ERR_ENCODE', () => {
      expect(codeOf(() => codec.encode({ f: () => 1 }))).to.equal('ERR_ENCODE');
      expect(codeOf(() => codec.encode([Symbol('s')]))).to.equal('ERR_ENCODE');
      expect(codeOf(() => codec.encode(new Date(Number.NaN)))).to.equal('ERR_ENCODE');
      expect(codeOf(() => codec.encode(JSON.parse('{"__proto__": {"x": 1}}')))).to.equal('ERR_ENCODE');
    });

    it('rejects a cycle or a value nested deeper than maxDepth with ERR_DEPTH_LIMIT', () => {
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      expect(codeOf(() => codec.encode(cyclic))).to.equal('ERR_DEPTH_LIMIT');
      let deep: unknown = 1;
      for (let i = 0; i < 65; i++) deep = [deep];
      expect(codeOf(() => codec.encode(deep))).to.equal('ERR_DEPTH_LIMIT');
      let ok: unknown = 1;
      for (let i = 0; i < 64; i++) ok = [ok];
      expect(codec.decode(codec.encode(ok))).to.deep.equal(ok);
    });

    it('rejects a value larger than maxValueBytes with ERR_VALUE_TOO_LARGE', () => {
      const small = new Codec({ maxValueBytes: 100 });
      expect(codeOf(() => small.encode('x'.repeat(200)))).to.equal('ERR_VALUE_TOO_LARGE');
      expect(small.decode(small.encode('x'.repeat(90)))).to.have.length(90);
    });

    it('rejects a channel outside a session with ERR_ENCODE', () => {
      expect(codeOf(() => codec.encode({ reply: new Channel() }))).to.equal('ERR_ENCODE');
    });

    it('rejects a channel from a second copy of the module with ERR_ENCODE instead of sending it as a plain object', async () => {
      // a real second copy: the same file loaded again under another URL, as two installed versions would be
      const copy = (await import(`../lib/core/channel.js?copy=${Date.now()}`)) as typeof import('../lib/core/channel.js');
      const foreign = new copy.Channel<number>(1);
      expect(foreign).to.not.be.instanceOf(Channel);
      let error: unknown;
      try {
        codec.encode({ reply: foreign });
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(NetchanError);
      expect((error as NetchanError).code).to.equal('ERR_ENCODE');
      expect((error as Error).message).to.match(/another copy of the netchan module/);
    });
  });

  describe('hostile input', () => {
    afterEach(() => {
      expect(({} as Record<string, unknown>).polluted, 'Object.prototype was polluted').to.equal(undefined);
    });

    it('refuses the key __proto__ anywhere, including inside extension payloads', () => {
      // {"__proto__": {"polluted": true}}
      expect(codeOf(() => codec.decode(bytes('81 a9 5f5f70726f746f5f5f 81 a8 706f6c6c75746564 c3')))).to.equal('ERR_DECODE');
      // Error ext whose payload map has a __proto__ key
      expect(codeOf(() => codec.decode(bytes('c7 0d 04 81 a9 5f5f70726f746f5f5f 80')))).to.equal('ERR_DECODE');
    });

    it('decodes "constructor" and "prototype" keys as plain own data', () => {
      // {"constructor": {"prototype": {"polluted": true}}}
      const out = codec.decode(bytes('81 ab 636f6e7374727563746f72 81 a9 70726f746f74797065 81 a8 706f6c6c75746564 c3')) as Record<string, unknown>;
      expect(Object.getPrototypeOf(out)).to.equal(Object.prototype);
      expect(Object.keys(out)).to.deep.equal(['constructor']);
      expect(out.constructor).to.deep.equal({ prototype: { polluted: true } });
    });

    it('stops 10,000-deep nesting with ERR_DEPTH_LIMIT, without recursion', () => {
      const deepArrays = new Uint8Array(10_001).fill(0x91);
      deepArrays[10_000] = 0xc0;
      expect(codeOf(() => codec.decode(deepArrays))).to.equal('ERR_DEPTH_LIMIT');
      // {"a": {"a": ...}} 10,000 deep
      const deepMaps = Buffer.concat([Buffer.from('81a161'.repeat(10_000), 'hex'), Buffer.from([0xc0])]);
      expect(codeOf(() => codec.decode(deepMaps))).to.equal('ERR_DEPTH_LIMIT');
      // Sets inside Sets: ext payloads count as nesting too
      let nested = Buffer.from([0x90]);
      for (let i = 0; i < 100; i++) {
        const payload = Buffer.concat([Buffer.from([0x91]), nested]);
        nested = Buffer.concat([Buffer.from([0xc9, 0, 0, 0, 0, ExtensionTypes.SET]), payload]);
        nested.writeUInt32BE(payload.length, 1);
        nested = Buffer.concat([Buffer.from([0x91]), nested]);
      }
      expect(codeOf(() => codec.decode(nested))).to.equal('ERR_DEPTH_LIMIT');
    });

    it('refuses containers that declare more entries than bytes follow (a 4-billion-element array)', () => {
      expect(codeOf(() => codec.decode(bytes('dd ffffffff 00 00 00')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('df ffffffff a1 61 00')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('db ffffffff 61 62')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c9 ffffffff 02 90')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('dc ffff')))).to.equal('ERR_DECODE');
    });

    it('refuses unknown extension types with ERR_UNKNOWN_EXTENSION (msgpackr records, clones, typed arrays)', () => {
      for (const h of ['d4 72 00', 'd4 65 00 93 a1 61 a1 62 c0', 'd6 69 00000001', 'd6 70 00000001', 'd4 73 00 90', 'c7 02 74 01 00', 'd4 05 00', 'd4 7f 00', 'd4 fe 00', 'd4 42 01', 'd4 62 00']) {
        expect(codeOf(() => codec.decode(bytes(h))), h).to.equal('ERR_UNKNOWN_EXTENSION');
      }
    });

    it('refuses malformed extension payloads', () => {
      expect(codeOf(() => codec.decode(bytes('d4 ff 00'))), 'timestamp of 1 byte').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 00 01'))), 'empty BigInt').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('d5 00 0000'))), 'undefined of 2 bytes').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 02 02 91 01'))), 'Map with an odd count').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 01 03 80'))), 'Set of a map').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 01 04 90'))), 'Error of an array').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 04 03 d4 00 00 00'))), 'Set of an extension').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 06 03 d6 ff 00000000'))), 'Set of a timestamp').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 02 02 a1 61'))), 'Map of a string').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 03 03 91 01 01'))), 'payload longer than its value').to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c7 02 03 92 01 01'))), 'value longer than its payload').to.equal('ERR_DECODE');
      const hugeBigInt = Buffer.concat([Buffer.from([0xc8, 0x10, 0x01, 0x01]), Buffer.alloc(4097)]);
      expect(codeOf(() => codec.decode(hugeBigInt)), 'BigInt over 4096 bytes').to.equal('ERR_DECODE');
    });

    it('refuses truncation, trailing bytes, 0xc1, empty input and non-scalar map keys', () => {
      const good = codec.encode({ list: [1, 'two', new Map([[3, new Set([4])]])], when: new Date(5) });
      for (let n = 0; n < good.length; n++) {
        expect(codeOf(() => codec.decode(good.subarray(0, n))), `prefix of ${n} bytes`).to.equal('ERR_DECODE');
      }
      expect(codeOf(() => codec.decode(bytes('01 02')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('c1')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('91 c1')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('81 91 01 02')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('81 cb 3ff8000000000000 01')))).to.equal('ERR_DECODE');
      expect(codeOf(() => codec.decode(bytes('81 c0 01')))).to.equal('ERR_DECODE');
    });

    it('checks the size before looking at the bytes', () => {
      const small = new Codec({ maxValueBytes: 8 });
      expect(codeOf(() => small.decode(new Uint8Array(9).fill(0xc1)))).to.equal('ERR_VALUE_TOO_LARGE');
    });

    it('refuses a reference outside a session, and hands one inside a session to the hooks', () => {
      const ref = bytes('c7 0c 10 82 a1 6f a1 63 a2 6964 a3 616263'); // channel ref {o: "c", id: "abc"}
      expect(codeOf(() => codec.decode(ref))).to.equal('ERR_UNKNOWN_REFERENCE');
      const seen: Array<[ReferenceKind, Record<string, unknown>]> = [];
      const hooks: ReferenceHooks = {
        encodeReference: () => ({}),
        decodeReference: (kind, data) => {
          seen.push([kind, data]);
          return `resolved ${kind}`;
        },
      };
      expect(codec.decode(ref, hooks)).to.equal('resolved channel');
      expect(seen).to.deep.equal([['channel', { o: 'c', id: 'abc' }]]);
      // Whatever a hook throws comes out unchanged (the session relies on it to wait for streams).
      const marker = { pending: true };
      const throwing: ReferenceHooks = { encodeReference: () => { throw marker; }, decodeReference: () => { throw marker; } };
      expect(() => codec.decode(ref, throwing)).to.throw().that.equals(marker);
      expect(() => codec.encode({ c: new Channel() }, throwing)).to.throw().that.equals(marker);
    });

    it('property: random bytes decode or fail with a NetchanError, never anything else', () => {
      const small = new Codec({ maxDepth: 8, maxValueBytes: 4096 });
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 256 }), (input) => {
          try {
            small.decode(input);
          } catch (err) {
            expect(err).to.be.instanceOf(NetchanError);
          }
        }),
        { numRuns: 3000 },
      );
    });

    it('property: corrupting a valid encoding gives a value or a NetchanError', () => {
      const sample = codec.encode({ a: [1, 2, { b: new Map([['c', new Set([1n, new Date(9)])]]) }], e: new Error('x'), s: 'str' });
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.nat(sample.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (edits) => {
          const copy = Uint8Array.from(sample);
          for (const [i, b] of edits) copy[i] = b;
          try {
            codec.decode(copy);
          } catch (err) {
            expect(err).to.be.instanceOf(NetchanError);
          }
        }),
        { numRuns: 3000 },
      );
    });

    it('validate() alone accepts exactly what decode() accepts', () => {
      for (const v of vectors) expect(() => validate(bytes(v.hex))).not.to.throw();
      expect(() => validate(bytes('91'))).to.throw(NetchanError);
    });
  });
});
