/** Element types. Compute is float32; int32 holds indices and integer data. */
export type DType = 'float32' | 'int32';
export type TypedArray = Float32Array | Int32Array;

export const BYTES_PER_ELEMENT: Record<DType, number> = { float32: 4, int32: 4 };

export function typedArrayFor(dtype: DType, size: number): TypedArray {
  return dtype === 'float32' ? new Float32Array(size) : new Int32Array(size);
}
