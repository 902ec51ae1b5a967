// Bounded concurrency for a known list of items: many file system calls overlap, but never
// more than the caller's named limit at once.

/**
 * Runs `work` on every item, at most `limit` at once. Every started call is awaited
 * before the first failure is thrown, so nothing is left running behind the caller.
 */
export async function forEachBounded<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0
  const failures: unknown[] = []
  const worker = async (): Promise<void> => {
    while (failures.length === 0 && next < items.length) {
      try {
        await work(items[next++]!)
      } catch (error) {
        failures.push(error)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failures.length > 0) throw failures[0]
}

/** forEachBounded() that keeps each item's result, in the items' order. */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array<R>(items.length)
  const positions = items.map((_, position) => position)
  await forEachBounded(positions, limit, async (position) => {
    results[position] = await work(items[position]!)
  })
  return results
}
