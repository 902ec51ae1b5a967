import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'

test('a ClusterError carries its code and a one-line message', () => {
  const error = ClusterError.badArgument('first line\n  second line')
  assert.is(error.code, 'BAD_ARGUMENT')
  assert.is(error.message, 'first line second line')
  assert.ok(isClusterError(error, 'BAD_ARGUMENT'))
  assert.not.ok(isClusterError(error, 'NOT_FOUND'))
  assert.not.ok(isClusterError(new Error('plain')))
})

test.run()
