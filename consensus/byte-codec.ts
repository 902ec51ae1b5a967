// Little building blocks of the binary codec: a growable writer and a bounds-checked reader.
// Numbers are unsigned big-endian; 64-bit values are limited to safe integers (2^53 - 1)
// so that they round-trip through a JavaScript number.
import { assert } from './assert.ts'

/** Thrown only inside the codec; the public decoders turn it into `{ ok: false, error }`. */
export class DecodeFailure extends Error {}

const TWO_TO_32 = 2 ** 32
/** The high word of the largest safe integer. */
const SAFE_HIGH_WORD_MAX = 0x1fffff
const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

export class ByteWriter {
  #bytes = new Uint8Array(256)
  #view = new DataView(this.#bytes.buffer)
  #length = 0

  #reserve(count: number): void {
    if (this.#length + count <= this.#bytes.length) return
    let capacity = this.#bytes.length * 2
    while (capacity < this.#length + count) capacity *= 2
    const grown = new Uint8Array(capacity)
    grown.set(this.#bytes.subarray(0, this.#length))
    this.#bytes = grown
    this.#view = new DataView(grown.buffer)
  }

  u8(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xff, `u8 out of range: ${value}`)
    this.#reserve(1)
    this.#view.setUint8(this.#length, value)
    this.#length += 1
  }

  u16(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xffff, `u16 out of range: ${value}`)
    this.#reserve(2)
    this.#view.setUint16(this.#length, value)
    this.#length += 2
  }

  u32(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value < TWO_TO_32, `u32 out of range: ${value}`)
    this.#reserve(4)
    this.#view.setUint32(this.#length, value)
    this.#length += 4
  }

  u64(value: number): void {
    assert(Number.isSafeInteger(value) && value >= 0, `u64 out of range: ${value}`)
    this.u32(Math.floor(value / TWO_TO_32))
    this.u32(value % TWO_TO_32)
  }

  boolean(value: boolean): void {
    this.u8(value ? 1 : 0)
  }

  bytes(value: Uint8Array): void {
    this.u32(value.length)
    this.#reserve(value.length)
    this.#bytes.set(value, this.#length)
    this.#length += value.length
  }

  string(value: string): void {
    const bytes = encoder.encode(value)
    this.u16(bytes.length)
    this.#reserve(bytes.length)
    this.#bytes.set(bytes, this.#length)
    this.#length += bytes.length
  }

  finish(): Uint8Array {
    return this.#bytes.slice(0, this.#length)
  }
}

export class ByteReader {
  readonly #bytes: Uint8Array
  readonly #view: DataView
  #offset = 0

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  get remaining(): number {
    return this.#bytes.length - this.#offset
  }

  #take(count: number, field: string): number {
    if (count > this.remaining)
      throw new DecodeFailure(
        `truncated: ${field} needs ${count} bytes at offset ${this.#offset}, ${this.remaining} left`,
      )
    const start = this.#offset
    this.#offset += count
    return start
  }

  u8(field: string): number {
    return this.#view.getUint8(this.#take(1, field))
  }

  u16(field: string): number {
    return this.#view.getUint16(this.#take(2, field))
  }

  u32(field: string): number {
    return this.#view.getUint32(this.#take(4, field))
  }

  u64(field: string): number {
    const high = this.u32(field)
    const low = this.u32(field)
    if (high > SAFE_HIGH_WORD_MAX) throw new DecodeFailure(`bad field: ${field} is over 2^53`)
    return high * TWO_TO_32 + low
  }

  boolean(field: string): boolean {
    const value = this.u8(field)
    if (value > 1) throw new DecodeFailure(`bad field: ${field} is ${value}, not 0 or 1`)
    return value === 1
  }

  /** A copy, so that the value does not pin (or alias) the whole received buffer. */
  bytes(field: string, lengthMax: number): Uint8Array {
    const length = this.u32(field)
    if (length > lengthMax)
      throw new DecodeFailure(`${field} of ${length} bytes is over ${lengthMax}`)
    const start = this.#take(length, field)
    return this.#bytes.slice(start, start + length)
  }

  string(field: string, lengthMax: number): string {
    const length = this.u16(field)
    if (length > lengthMax)
      throw new DecodeFailure(`${field} of ${length} bytes is over ${lengthMax}`)
    const start = this.#take(length, field)
    try {
      return decoder.decode(this.#bytes.subarray(start, start + length))
    } catch {
      throw new DecodeFailure(`bad field: ${field} is not valid UTF-8`)
    }
  }

  /** A count of items that each take at least `itemBytesMin`, checked against what is left before anything is allocated. */
  count(field: string, countMax: number, itemBytesMin: number): number {
    const count = this.u32(field)
    if (count > countMax) throw new DecodeFailure(`${field} ${count} is over ${countMax}`)
    if (count * itemBytesMin > this.remaining)
      throw new DecodeFailure(`truncated: ${count} ${field} cannot fit in ${this.remaining} bytes`)
    return count
  }

  end(): void {
    if (this.remaining !== 0) throw new DecodeFailure(`${this.remaining} trailing bytes`)
  }
}
