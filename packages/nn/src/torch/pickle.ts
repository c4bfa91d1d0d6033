/**
 * A restricted pickle virtual machine. It decodes the opcodes into inert JavaScript values and never
 * calls anything: a GLOBAL becomes a `GlobalRef` only if the policy admits the name, and a call opcode
 * (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST) is resolved only against the policy's table of pure data
 * builders (OrderedDict, set, tensor rebuilds) or, when module records are allowed, turned into an inert
 * `PyRecord` for class-like globals. Everything else throws, naming the global.
 */

/** A reference to `module.name`, as GLOBAL / STACK_GLOBAL push it. Never resolved to code. */
export class GlobalRef {
  constructor(readonly module: string, readonly name: string) {}
  get full(): string { return `${this.module}.${this.name}`; }
}
export class PyTuple { constructor(readonly items: PyValue[]) {} }
export class PyDict {
  readonly map = new Map<unknown, PyValue>();
  /** State given by BUILD (e.g. an OrderedDict's `_metadata`); kept, never applied. */
  attrs: PyValue = null;
}
export class PySet { constructor(readonly items: PyValue[]) {} }
/** An object of a class that is only ever recorded: its class name, NEWOBJ args and BUILD state. */
export class PyRecord {
  state: PyValue = null;
  constructor(readonly cls: GlobalRef, readonly args: PyValue[]) {}
}
/** Opaque values the loader creates (storages, tensors) through persistent ids and the call table. */
export abstract class PyOpaque {}

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | PyTuple | PyDict | PySet | PyRecord | GlobalRef | PyOpaque;

/** What the VM may reference and call. */
export interface PicklePolicy {
  /** Throws (naming the global) when `module.name` may not even be referenced. */
  checkGlobal(module: string, name: string): void;
  /** A call of `fn(...args)` (REDUCE) -> its inert result, or throws naming the callable. */
  call(fn: PyValue, args: PyValue[]): PyValue;
  /** `cls.__new__(cls, *args)` (NEWOBJ) -> its inert result, or throws naming the class. */
  construct(cls: PyValue, args: PyValue[]): PyValue;
  /** A persistent id -> the object it stands for (a storage). */
  persistentLoad(pid: PyValue): PyValue;
  /** Throws with the file name prefixed. */
  fail(detail: string): never;
}

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

export const describe = (v: PyValue): string => {
  if (v === null) return 'None';
  if (v instanceof GlobalRef) return v.full;
  if (v instanceof PyRecord) return `a ${v.cls.full} record`;
  if (v instanceof PyTuple) return 'a tuple';
  if (v instanceof PyDict) return 'a dict';
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PyOpaque) return v.constructor.name;
  return typeof v;
};

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes Python's raw-unicode-escape (protocol 0 UNICODE) and the repr of a str (STRING). */
function unescape(s: string, policy: PicklePolicy): string {
  return s.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[\\'"nrt0abfv])/g, (_, e: string) => {
    switch (e[0]) {
      case 'x': case 'u': case 'U': {
        const cp = parseInt(e.slice(1), 16);
        if (cp > 0x10ffff) policy.fail(`pickle: invalid escape \\${e}`);
        return String.fromCodePoint(cp);
      }
      case 'n': return '\n'; case 'r': return '\r'; case 't': return '\t'; case '0': return '\0';
      case 'a': return '\x07'; case 'b': return '\b'; case 'f': return '\f'; case 'v': return '\v';
      default: return e;
    }
  });
}

function intValue(b: bigint): number | bigint {
  return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
}

/** Little-endian two's-complement integer of `bytes` (LONG1 / LONG4). */
function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  if (bytes[bytes.length - 1] & 0x80) v -= 1n << BigInt(bytes.length * 8);
  return intValue(v);
}

const MAX_DEPTH_ITEMS = 1 << 26;

/**
 * Runs one pickle starting at `start` and returns the value and the offset just past STOP.
 */
export function unpickle(buf: Uint8Array, start: number, policy: PicklePolicy): { value: PyValue; end: number } {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = start;
  const stack: StackItem[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();

  const need = (n: number): void => {
    if (n < 0 || pos + n > buf.length) policy.fail(`pickle: truncated data at byte ${pos} (needs ${n} more bytes)`);
  };
  const u8 = (): number => { need(1); return buf[pos++]; };
  const u16 = (): number => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const i32 = (): number => { need(4); const v = dv.getInt32(pos, true); pos += 4; return v; };
  const u32 = (): number => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const u64 = (): number => {
    need(8); const v = dv.getBigUint64(pos, true); pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) policy.fail('pickle: length out of range');
    return Number(v);
  };
  const bytes = (n: number): Uint8Array => { need(n); const b = buf.subarray(pos, pos + n); pos += n; return b; };
  const line = (): string => {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0) policy.fail(`pickle: unterminated line at byte ${pos}`);
    const s = latin1.decode(buf.subarray(pos, nl));
    pos = nl + 1;
    return s;
  };
  const str = (b: Uint8Array): string => {
    try { return utf8.decode(b); } catch { return policy.fail('pickle: invalid UTF-8 in a string'); }
  };
  const push = (v: PyValue): void => {
    if (stack.length > MAX_DEPTH_ITEMS) policy.fail('pickle: stack too deep');
    stack.push(v);
  };
  const pop = (): PyValue => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) policy.fail(`pickle: stack underflow at byte ${pos - 1}`);
    const v = stack.pop()!;
    if (v === MARK) policy.fail('pickle: unexpected mark');
    return v as PyValue;
  };
  const top = (): PyValue => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) policy.fail(`pickle: empty stack at byte ${pos - 1}`);
    return stack[stack.length - 1] as PyValue;
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) policy.fail(`pickle: no mark at byte ${pos - 1}`);
    const items = stack.splice(m) as PyValue[];
    return items;
  };
  const get = (i: number): PyValue => {
    if (!memo.has(i)) policy.fail(`pickle: memo key ${i} missing`);
    return memo.get(i)!;
  };
  const put = (i: number): void => { memo.set(i, top()); };
  const global = (module: string, name: string): void => {
    policy.checkGlobal(module, name);
    push(new GlobalRef(module, name));
  };
  const tupleArgs = (v: PyValue, what: string): PyValue[] => {
    if (v instanceof PyTuple) return v.items;
    return policy.fail(`pickle: ${what} arguments must be a tuple, got ${describe(v)}`);
  };
  const setItems = (target: PyValue, items: PyValue[]): void => {
    if (!(target instanceof PyDict)) policy.fail(`pickle: SETITEMS on ${describe(target)} would call its __setitem__; refused`);
    if (items.length % 2) policy.fail('pickle: odd number of items for SETITEMS');
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i];
      if (k instanceof PyDict || Array.isArray(k)) policy.fail(`pickle: unhashable dict key ${describe(k)}`);
      target.map.set(k, items[i + 1]);
    }
  };
  const appendItems = (target: PyValue, items: PyValue[]): void => {
    if (!Array.isArray(target)) policy.fail(`pickle: APPENDS on ${describe(target)} would call its extend(); refused`);
    for (const it of items) target.push(it);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: { const proto = u8(); if (proto > 5) policy.fail(`pickle: unsupported protocol ${proto}`); break; } // PROTO
      case 0x95: u64(); break; // FRAME
      case 0x2e: { // STOP
        const v = pop();
        return { value: v, end: pos };
      }
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      // numbers
      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: { const n = u8(); push(decodeLong(bytes(n))); break; } // LONG1
      case 0x8b: { const n = i32(); if (n < 0) policy.fail('pickle: negative LONG4 length'); push(decodeLong(bytes(n))); break; } // LONG4
      case 0x49: { // INT
        const s = line().trim();
        if (s === '00') push(false); else if (s === '01') push(true);
        else { if (!/^[-+]?\d+$/.test(s)) policy.fail(`pickle: bad INT ${JSON.stringify(s)}`); push(intValue(BigInt(s))); }
        break;
      }
      case 0x4c: { // LONG
        const s = line().trim().replace(/L$/, '');
        if (!/^[-+]?\d+$/.test(s)) policy.fail(`pickle: bad LONG ${JSON.stringify(s)}`);
        push(intValue(BigInt(s)));
        break;
      }
      case 0x46: { const s = line().trim(); const v = Number(s); if (Number.isNaN(v) && !/nan/i.test(s)) policy.fail(`pickle: bad FLOAT ${JSON.stringify(s)}`); push(v); break; } // FLOAT
      case 0x47: { need(8); push(dv.getFloat64(pos, false)); pos += 8; break; } // BINFLOAT (big-endian)
      // strings and bytes
      case 0x53: { // STRING (repr)
        const s = line().trim();
        const q = s[0];
        if (s.length < 2 || (q !== '"' && q !== "'") || s[s.length - 1] !== q) policy.fail('pickle: bad STRING quoting');
        push(unescape(s.slice(1, -1), policy));
        break;
      }
      case 0x54: { const n = i32(); if (n < 0) policy.fail('pickle: negative BINSTRING length'); push(latin1.decode(bytes(n))); break; } // BINSTRING
      case 0x55: push(latin1.decode(bytes(u8()))); break; // SHORT_BINSTRING
      case 0x56: push(unescape(line(), policy)); break; // UNICODE
      case 0x58: push(str(bytes(u32()))); break; // BINUNICODE
      case 0x8c: push(str(bytes(u8()))); break; // SHORT_BINUNICODE
      case 0x8d: push(str(bytes(u64()))); break; // BINUNICODE8
      case 0x42: push(bytes(u32()).slice()); break; // BINBYTES
      case 0x43: push(bytes(u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: push(bytes(u64()).slice()); break; // BINBYTES8
      case 0x96: push(bytes(u64()).slice()); break; // BYTEARRAY8
      // containers
      case 0x29: push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: push(new PyTuple(popMark())); break; // TUPLE
      case 0x85: { const a = pop(); push(new PyTuple([a])); break; } // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); push(new PyTuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); push(new PyTuple([a, b, c])); break; } // TUPLE3
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x6c: push(popMark()); break; // LIST
      case 0x61: { const v = pop(); appendItems(top(), [v]); break; } // APPEND
      case 0x65: { const items = popMark(); appendItems(top(), items); break; } // APPENDS
      case 0x7d: push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const items = popMark(); const d = new PyDict(); setItems(d, items); push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x8f: push(new PySet([])); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark(); const s = top();
        if (!(s instanceof PySet)) policy.fail(`pickle: ADDITEMS on ${describe(s)}; refused`);
        s.items.push(...items);
        break;
      }
      case 0x91: push(new PySet(popMark())); break; // FROZENSET
      // memo
      case 0x67: push(get(Number(line()))); break; // GET
      case 0x68: push(get(u8())); break; // BINGET
      case 0x6a: push(get(u32())); break; // LONG_BINGET
      case 0x70: put(Number(line())); break; // PUT
      case 0x71: put(u8()); break; // BINPUT
      case 0x72: put(u32()); break; // LONG_BINPUT
      case 0x94: put(memo.size); break; // MEMOIZE
      // references to code: only names, checked by the policy
      case 0x63: { const module = line(); const name = line(); global(module, name); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(); const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') policy.fail('pickle: STACK_GLOBAL needs two strings');
        global(module, name);
        break;
      }
      // calls: resolved only by the policy, which never runs code
      case 0x52: { const args = pop(); const fn = pop(); push(policy.call(fn, tupleArgs(args, 'REDUCE'))); break; } // REDUCE
      case 0x81: { const args = pop(); const cls = pop(); push(policy.construct(cls, tupleArgs(args, 'NEWOBJ'))); break; } // NEWOBJ
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop(); const args = pop(); const cls = pop();
        if (!(kwargs instanceof PyDict) || kwargs.map.size) policy.fail(`pickle: NEWOBJ_EX with keyword arguments for ${describe(cls)}; refused`);
        push(policy.construct(cls, tupleArgs(args, 'NEWOBJ_EX')));
        break;
      }
      case 0x6f: { // OBJ: cls(*args) -- a call; same rule as REDUCE on a class
        const items = popMark();
        if (items.length === 0) policy.fail('pickle: OBJ without a class');
        push(policy.call(items[0], items.slice(1)));
        break;
      }
      case 0x69: { // INST
        const module = line(); const name = line();
        policy.checkGlobal(module, name);
        push(policy.call(new GlobalRef(module, name), popMark()));
        break;
      }
      case 0x62: { // BUILD: obj.__setstate__(state) or obj.__dict__.update(state); only recorded
        const state = pop(); const obj = top();
        if (obj instanceof PyRecord) obj.state = state;
        else if (obj instanceof PyDict) obj.attrs = state;
        else if (obj instanceof PyOpaque) { /* tensor / parameter state: ignored */ }
        else policy.fail(`pickle: BUILD on ${describe(obj)}; refused`);
        break;
      }
      case 0x50: push(policy.persistentLoad(line())); break; // PERSID
      case 0x51: push(policy.persistentLoad(pop())); break; // BINPERSID
      case 0x82: case 0x83: case 0x84: policy.fail('pickle: extension registry opcodes (EXT1/2/4) refused');
      // falls through (fail never returns)
      case 0x97: case 0x98: policy.fail('pickle: out-of-band buffers refused');
      // falls through
      default: policy.fail(`pickle: unknown opcode 0x${op.toString(16)} at byte ${pos - 1}`);
    }
  }
}
