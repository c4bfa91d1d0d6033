/** Typed errors. Each names the op (or file/key) and the shapes involved in its message. */
export class LatentdemError extends Error {
  constructor(readonly op: string, detail: string) {
    super(`${op}: ${detail}`);
    this.name = new.target.name;
  }
}
/** Shapes that do not fit the op (broadcasting, inner dimensions, sizes). */
export class ShapeError extends LatentdemError {}
/** An axis out of range or repeated. */
export class AxisError extends LatentdemError {}
/** A dtype the op does not accept, or two inputs of different dtypes. */
export class DTypeError extends LatentdemError {}
/** A tensor used after dispose(). */
export class DisposedError extends LatentdemError {}
/** Inputs that live on different backends. */
export class BackendMismatchError extends LatentdemError {}
/** A tensor or dispatch beyond what the device allows. */
export class DeviceLimitError extends LatentdemError {}
/** The device reported an error (e.g. a kernel failed validation); its later results are not trusted. */
export class DeviceError extends LatentdemError {}
/** No backend of the requested kind can be created (e.g. no WebGPU adapter). */
export class BackendUnavailableError extends LatentdemError {}
/** An image file that cannot be read, decoded or written. */
export class ImageError extends LatentdemError {}
/** A gradient asked for where none can be computed. */
export class GradientError extends LatentdemError {}

export const fmtShape = (s: readonly number[]): string => `[${s.join(',')}]`;
