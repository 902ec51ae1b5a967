// libp2p 3 (through it-queue and its own streams) calls Promise.withResolvers, which Node
// has only from 22; this project supports Node 20 too (DEPENDENCIES.md). Every entry
// point imports this module first, before anything that loads libp2p.

interface Resolvers<T> {
  promise: Promise<T>
  resolve: (value: T | PromiseLike<T>) => void
  reject: (reason?: unknown) => void
}

declare global {
  interface PromiseConstructor {
    withResolvers<T>(): Resolvers<T>
  }
}

if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers<T>(): Resolvers<T> {
    let resolve!: Resolvers<T>['resolve']
    let reject!: Resolvers<T>['reject']
    const promise = new Promise<T>((resolveWith, rejectWith) => {
      resolve = resolveWith
      reject = rejectWith
    })
    return { promise, resolve, reject }
  }
}

export {}
