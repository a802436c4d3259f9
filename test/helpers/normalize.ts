/**
 * A decoded value as plain data, for comparing it with what was encoded: any binary as its bytes
 * in hex, Maps, Sets, Dates, BigInts and `undefined` tagged, Errors by name, message and fields.
 * Plain JSON comes out, so it also compares inside a page (test/browser/vectors.ts).
 */
export function normalize(v: unknown): unknown {
  if (v instanceof Uint8Array) return { bin: Array.from(v, (x) => x.toString(16).padStart(2, '0')).join('') };
  if (v instanceof Map) return { map: [...v].map(([k, x]) => [normalize(k), normalize(x)]) };
  if (v instanceof Set) return { set: [...v].map(normalize) };
  if (v instanceof Date) return { date: v.getTime() };
  if (typeof v === 'bigint') return { bigint: v.toString() };
  if (v === undefined) return { undefined: true };
  if (v instanceof Error) {
    const fields: Record<string, unknown> = { name: v.name, message: v.message, cause: normalize((v as { cause?: unknown }).cause) };
    for (const k of Object.keys(v)) fields[k] = normalize((v as unknown as Record<string, unknown>)[k]);
    return { error: fields };
  }
  if (Array.isArray(v)) return Array.from(v, normalize);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) out[k] = normalize((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}
