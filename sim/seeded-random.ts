// The simulator's only source of randomness: one seed, split into independent streams
// (network, disks, each node's core, the scenario) so that a run replays exactly.
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus'
import { uniformInt } from 'pure-rand/distribution/uniformInt'
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64'
import type { RandomGenerator } from 'pure-rand/types/RandomGenerator'
import type { Random } from '../consensus/types.ts'
import { assert } from '../consensus/assert.ts'

export class SeededRandom implements Random {
  readonly #generator: RandomGenerator

  constructor(seed: number) {
    assert(Number.isSafeInteger(seed), `seed must be an integer, got ${seed}`)
    // Fold a 53-bit seed into the generator's 32-bit seed without losing the high bits.
    const high = Math.floor(seed / 2 ** 32)
    this.#generator = xoroshiro128plus(((seed % 2 ** 32) ^ Math.imul(high, 0x9e3779b1)) | 0)
  }

  /** An independent stream, derived deterministically from this one. */
  fork(): SeededRandom {
    return new SeededRandom(
      uniformInt(this.#generator, 0, 2 ** 31 - 1) * 2 ** 20 +
        uniformInt(this.#generator, 0, 2 ** 20 - 1),
    )
  }

  nextInt(maxExclusive: number): number {
    assert(
      Number.isInteger(maxExclusive) && maxExclusive > 0,
      `nextInt bound must be a positive integer, got ${maxExclusive}`,
    )
    return uniformInt(this.#generator, 0, maxExclusive - 1)
  }

  /** An integer in [min, max], both included. */
  between(min: number, max: number): number {
    assert(min <= max, `empty range ${min}..${max}`)
    return uniformInt(this.#generator, min, max)
  }

  /** A float in [0, 1). */
  float(): number {
    return uniformFloat64(this.#generator)
  }

  chance(probability: number): boolean {
    return probability > 0 && this.float() < probability
  }

  pick<T>(items: readonly T[]): T {
    assert(items.length > 0, 'pick from an empty list')
    return items[this.nextInt(items.length)]!
  }

  shuffle<T>(items: readonly T[]): T[] {
    const result = [...items]
    for (let index = result.length - 1; index > 0; index--) {
      const other = this.nextInt(index + 1)
      ;[result[index], result[other]] = [result[other]!, result[index]!]
    }
    return result
  }
}
