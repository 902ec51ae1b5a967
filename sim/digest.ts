// A fast, deterministic 52-bit digest (two FNV-1a lanes) for the simulator's checks of
// what nodes apply. Not cryptographic: it only has to make accidental equality unlikely.

const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193

export type Digest = number

export function digestBytes(bytes: Uint8Array, seed: Digest = 0): Digest {
  let low = (FNV_OFFSET ^ seed) >>> 0
  let high = (FNV_OFFSET ^ Math.floor(seed / 2 ** 26)) >>> 0
  for (let index = 0; index < bytes.length; index++) {
    low = Math.imul(low ^ bytes[index]!, FNV_PRIME) >>> 0
    high = Math.imul(high ^ bytes[index]! ^ 0x5a, FNV_PRIME) >>> 0
  }
  return (high & 0x3ffffff) * 2 ** 26 + (low & 0x3ffffff)
}

export function digestNumbers(numbers: readonly number[], seed: Digest = 0): Digest {
  const bytes = new Uint8Array(numbers.length * 8)
  const view = new DataView(bytes.buffer)
  numbers.forEach((value, index) => view.setFloat64(index * 8, value))
  return digestBytes(bytes, seed)
}
