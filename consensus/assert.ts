// Assertions catch programmer errors and crash loudly (TIGER_STYLE): they are never
// used for operating errors such as bad peer input, which are returned or thrown as
// ClusterError instead.

export class AssertionFailure extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`)
    this.name = 'AssertionFailure'
  }
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailure(message)
}
