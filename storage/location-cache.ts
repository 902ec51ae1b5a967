// The chunk index's memory of where recently written or read chunks lie. Chunks are read
// soon after they are written: a master serves the chunks it has just ingested, a replica's
// mirror reads the chunks it has just fetched. Without it each such read is a trip to
// classic-level (measured: 1.5–1.9 s of a node's main thread per 756 MiB replicated).
import { assert } from '../consensus/assert.ts'
import type { RecordLocation } from './pack-format.ts'

/** Entries kept: about 100 bytes each, so about 6.5 MB; a chunk averages 64 KiB or less. */
export const LOCATION_CACHE_ENTRIES_MAX = 65_536

export class LocationCache {
  // A Map iterates in insertion order: the first key is the least recently used.
  readonly #entries = new Map<string, RecordLocation>()
  readonly #entriesMax: number

  constructor(entriesMax = LOCATION_CACHE_ENTRIES_MAX) {
    assert(Number.isInteger(entriesMax) && entriesMax > 0, 'a location cache holds some entries')
    this.#entriesMax = entriesMax
  }

  get size(): number {
    return this.#entries.size
  }

  get(key: Buffer): RecordLocation | undefined {
    const name = key.toString('latin1')
    const location = this.#entries.get(name)
    if (location !== undefined) {
      this.#entries.delete(name)
      this.#entries.set(name, location)
    }
    return location
  }

  set(key: Buffer, location: RecordLocation): void {
    const name = key.toString('latin1')
    this.#entries.delete(name)
    this.#entries.set(name, location)
    if (this.#entries.size > this.#entriesMax) {
      const oldest = this.#entries.keys().next().value as string
      this.#entries.delete(oldest)
    }
  }

  delete(key: Buffer): void {
    this.#entries.delete(key.toString('latin1'))
  }
}
