/** Builds safetensors bytes by hand, independently of saveSafetensors, for the reader tests and the fuzzer. */

export interface HandEntry { name: string; dtype: string; shape: number[]; data: Uint8Array }

export const bytesOfArray = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));

/**
 * entries are laid out in the order given. `rawHeader` replaces the JSON (then `dataBytes` zero bytes follow);
 * `pad` appends that many spaces to the header.
 */
export function buildFile(
  entries: HandEntry[],
  opts: { metadata?: Record<string, string>; rawHeader?: string | Uint8Array; dataBytes?: number; pad?: number } = {},
): Uint8Array {
  let header: Uint8Array;
  let data: Uint8Array;
  if (opts.rawHeader !== undefined) {
    header = typeof opts.rawHeader === 'string' ? new TextEncoder().encode(opts.rawHeader) : opts.rawHeader;
    data = new Uint8Array(opts.dataBytes ?? 0);
  } else {
    const parts: string[] = [];
    if (opts.metadata) parts.push(`"__metadata__":${JSON.stringify(opts.metadata)}`);
    let off = 0;
    for (const e of entries) {
      parts.push(`${JSON.stringify(e.name)}:{"dtype":${JSON.stringify(e.dtype)},"shape":${JSON.stringify(e.shape)},"data_offsets":[${off},${off + e.data.length}]}`);
      off += e.data.length;
    }
    header = new TextEncoder().encode(`{${parts.join(',')}}${' '.repeat(opts.pad ?? 0)}`);
    data = new Uint8Array(off);
    off = 0;
    for (const e of entries) { data.set(e.data, off); off += e.data.length; }
  }
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}
