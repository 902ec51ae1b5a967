// One error class for the whole program, with a stable code per kind (in the manner of
// hypercore-errors): callers and tests match on `code`, users read `message`, which is
// always one line. It lives in consensus/ because that is the one folder every other
// folder may import; consensus/ itself returns result codes and never throws these.

export type ClusterErrorCode =
  | 'BAD_ARGUMENT'
  | 'BAD_MESSAGE'
  | 'CORRUPT_STORE'
  | 'NOT_FOUND'
  | 'PRUNED'
  | 'UNSAFE_PATH'
  | 'FILE_UNSTABLE'
  | 'HASH_MISMATCH'
  | 'NOT_LEADER'
  | 'REFUSED'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'IO_ERROR'

export class ClusterError extends Error {
  readonly code: ClusterErrorCode

  constructor(code: ClusterErrorCode, message: string, options?: { cause?: unknown }) {
    super(message.replace(/\s*\n\s*/g, ' '), options)
    this.name = 'ClusterError'
    this.code = code
  }

  static badArgument(message: string): ClusterError {
    return new ClusterError('BAD_ARGUMENT', message)
  }
  static badMessage(message: string): ClusterError {
    return new ClusterError('BAD_MESSAGE', message)
  }
  static corruptStore(message: string, cause?: unknown): ClusterError {
    return new ClusterError('CORRUPT_STORE', message, { cause })
  }
  static notFound(message: string): ClusterError {
    return new ClusterError('NOT_FOUND', message)
  }
  static pruned(message: string): ClusterError {
    return new ClusterError('PRUNED', message)
  }
  static unsafePath(message: string): ClusterError {
    return new ClusterError('UNSAFE_PATH', message)
  }
  static fileUnstable(message: string): ClusterError {
    return new ClusterError('FILE_UNSTABLE', message)
  }
  static hashMismatch(message: string): ClusterError {
    return new ClusterError('HASH_MISMATCH', message)
  }
  static notLeader(message: string): ClusterError {
    return new ClusterError('NOT_LEADER', message)
  }
  static refused(message: string): ClusterError {
    return new ClusterError('REFUSED', message)
  }
  static timeout(message: string): ClusterError {
    return new ClusterError('TIMEOUT', message)
  }
  static closed(message: string): ClusterError {
    return new ClusterError('CLOSED', message)
  }
  static io(message: string, cause?: unknown): ClusterError {
    return new ClusterError('IO_ERROR', message, { cause })
  }
}

export function isClusterError(error: unknown, code?: ClusterErrorCode): error is ClusterError {
  return error instanceof ClusterError && (code === undefined || error.code === code)
}
