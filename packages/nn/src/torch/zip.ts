/**
 * A minimal zip reader for torch.save archives: end of central directory (zip64 too), central directory,
 * local headers, stored entries (deflated ones through node:zlib), CRC-32 checked. Reads byte ranges
 * from an open file, so multi-GiB checkpoints are never loaded whole.
 */
import type { FileHandle } from 'node:fs/promises';
import * as zlib from 'node:zlib';

export interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  crc: number;
  localHeaderOffset: number;
}

export class ZipArchive {
  private constructor(private readonly fh: FileHandle, readonly fileSize: number, readonly entries: Map<string, ZipEntry>, private readonly fail: (d: string) => never) {}

  static async open(fh: FileHandle, fail: (detail: string) => never): Promise<ZipArchive> {
    const size = (await fh.stat()).size;
    const readAt = async (offset: number, n: number): Promise<Buffer> => {
      if (offset < 0 || n < 0 || offset + n > size) fail(`zip: range [${offset}, ${offset + n}) is outside the ${size}-byte file (truncated?)`);
      const b = Buffer.alloc(n);
      const { bytesRead } = await fh.read(b, 0, n, offset);
      if (bytesRead !== n) fail('zip: short read');
      return b;
    };
    if (size < 22) fail('zip: file too small to be a zip archive');
    const tailLen = Math.min(size, 22 + 65535);
    const tail = await readAt(size - tailLen, tailLen);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === 0x06054b50 && i + 22 + tail.readUInt16LE(i + 20) <= tailLen) { eocd = i; break; }
    }
    if (eocd < 0) fail('zip: no end-of-central-directory record (truncated or not a zip)');
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      const locAt = size - tailLen + eocd - 20;
      const loc = await readAt(locAt, 20);
      if (loc.readUInt32LE(0) !== 0x07064b50) fail('zip: zip64 locator missing');
      const recAt = Number(loc.readBigUInt64LE(8));
      const rec = await readAt(recAt, 56);
      if (rec.readUInt32LE(0) !== 0x06064b50) fail('zip: zip64 end-of-central-directory record missing');
      count = Number(rec.readBigUInt64LE(32));
      cdSize = Number(rec.readBigUInt64LE(40));
      cdOffset = Number(rec.readBigUInt64LE(48));
    }
    const cd = await readAt(cdOffset, cdSize);
    const entries = new Map<string, ZipEntry>();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) fail(`zip: central directory entry ${i} is corrupted`);
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      let compressedSize = cd.readUInt32LE(p + 20);
      let usize = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      let localHeaderOffset = cd.readUInt32LE(p + 42);
      if (p + 46 + nameLen + extraLen + commentLen > cd.length) fail(`zip: central directory entry ${i} overruns the directory`);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
      // zip64 extended information: the 0xffffffff fields, in order usize, csize, offset
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      while (e + 4 <= eEnd) {
        const id = cd.readUInt16LE(e); const len = cd.readUInt16LE(e + 2);
        if (id === 0x0001) {
          let q = e + 4;
          const next = (): number => { if (q + 8 > e + 4 + len) fail(`zip: bad zip64 field for ${name}`); const v = Number(cd.readBigUInt64LE(q)); q += 8; return v; };
          if (usize === 0xffffffff) usize = next();
          if (compressedSize === 0xffffffff) compressedSize = next();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
        }
        e += 4 + len;
      }
      entries.set(name, { name, method, compressedSize, size: usize, crc, localHeaderOffset });
      p += 46 + nameLen + extraLen + commentLen;
    }
    return new ZipArchive(fh, size, entries, fail);
  }

  /** The bytes of one entry, decompressed and CRC-checked. */
  async read(name: string): Promise<Uint8Array> {
    const ent = this.entries.get(name);
    if (!ent) this.fail(`zip: no entry ${name}`);
    const hdr = Buffer.alloc(30);
    if (ent.localHeaderOffset + 30 > this.fileSize) this.fail(`zip: local header of ${name} is outside the file (truncated?)`);
    await this.fh.read(hdr, 0, 30, ent.localHeaderOffset);
    if (hdr.readUInt32LE(0) !== 0x04034b50) this.fail(`zip: local header of ${name} is corrupted`);
    const dataAt = ent.localHeaderOffset + 30 + hdr.readUInt16LE(26) + hdr.readUInt16LE(28);
    if (dataAt + ent.compressedSize > this.fileSize) this.fail(`zip: data of ${name} runs past the end of the file (truncated?)`);
    const raw = Buffer.alloc(ent.compressedSize);
    const { bytesRead } = await this.fh.read(raw, 0, ent.compressedSize, dataAt);
    if (bytesRead !== ent.compressedSize) this.fail(`zip: short read of ${name}`);
    let data: Buffer;
    if (ent.method === 0) data = raw;
    else if (ent.method === 8) {
      try { data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, ent.size) }); } catch (err) { return this.fail(`zip: cannot inflate ${name}: ${(err as Error).message}`); }
    } else return this.fail(`zip: ${name} uses unsupported compression method ${ent.method}`);
    if (data.length !== ent.size) this.fail(`zip: ${name} has ${data.length} bytes, the directory says ${ent.size}`);
    if (zlib.crc32(data) >>> 0 !== ent.crc >>> 0) this.fail(`zip: CRC mismatch in ${name} (corrupted)`);
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
}
