// The retention policy as a value: durations in text or milliseconds, counts, defaults,
// and a one-line BAD_ARGUMENT for each kind of nonsense; the stored form reads back equal,
// and a damaged one is CORRUPT_STORE.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { isClusterError, type ClusterErrorCode } from '../../consensus/cluster-error.ts'
import {
  RETENTION_COUNT_MAX,
  RETENTION_DURATION_MS_MAX,
  decodeRetentionPolicy,
  durationMs,
  encodeRetentionPolicy,
  retentionPolicy,
  type RetentionPolicyInput,
} from '../../storage/retention-policy.ts'

const HOUR_MS = 3_600_000

function assertRefused(
  make: () => unknown,
  pattern: RegExp,
  code: ClusterErrorCode = 'BAD_ARGUMENT',
): void {
  try {
    make()
  } catch (error) {
    assert.ok(isClusterError(error, code), `${code}: ${String(error)}`)
    assert.match(error.message, pattern)
    assert.not.match(error.message, /\n/)
    return
  }
  assert.unreachable(`refused with ${pattern}`)
}

test('durations: units, compound text, milliseconds', () => {
  assert.is(durationMs('24h', 'window'), 24 * HOUR_MS)
  assert.is(durationMs('90m', 'window'), 90 * 60_000)
  assert.is(durationMs('7d', 'window'), 7 * 24 * HOUR_MS)
  assert.is(durationMs('2w', 'window'), 14 * 24 * HOUR_MS)
  assert.is(durationMs('1d12h', 'window'), 36 * HOUR_MS)
  assert.is(durationMs('1500ms', 'window'), 1500)
  assert.is(durationMs('30s', 'window'), 30_000)
  assert.is(durationMs(0, 'window'), 0)
  assert.is(durationMs(12_345, 'window'), 12_345)
})

test('a window that is not a duration is refused, naming the field and the value', () => {
  for (const bad of ['', '24', 'h', '24 h', '1.5h', '-1h', '3y', 'forever', '24H', '1d 2h'])
    assertRefused(() => retentionPolicy({ keepAllWithin: bad }), /keepAllWithin .* not a duration/)
  assertRefused(() => retentionPolicy({ keepAllWithin: -1 }), /keepAllWithin -1 must be 0 to/)
  assertRefused(() => retentionPolicy({ keepAllWithin: 1.5 }), /must be 0 to/)
  assertRefused(() => retentionPolicy({ keepAllWithin: Number.NaN }), /must be 0 to/)
  assertRefused(
    () => retentionPolicy({ keepAllWithin: RETENTION_DURATION_MS_MAX + 1 }),
    /must be 0 to/,
  )
  assertRefused(() => retentionPolicy({ keepAllWithin: '99999999w' }), /must be 0 to/)
  assertRefused(
    () => retentionPolicy({ keepAllWithin: true } as unknown as RetentionPolicyInput),
    /not a duration/,
  )
  assertRefused(
    () => retentionPolicy({ keepAllWithin: '1d', maxAge: 'soon' }),
    /maxAge "soon" is not a duration/,
  )
})

test('negative, fractional, huge and non-numeric counts are refused', () => {
  for (const bad of [-1, 0.5, Number.NaN, Infinity, RETENTION_COUNT_MAX + 1, '3'])
    assertRefused(
      () => retentionPolicy({ keepAllWithin: '1d', keepDaily: bad as number }),
      /keepDaily must be a whole number/,
    )
  assertRefused(
    () => retentionPolicy({ keepAllWithin: '1d', keepHourly: -24 }),
    /keepHourly must be a whole number from 0 to 1000000, not -24/,
  )
})

test('a maximum age shorter than the window, unknown fields and non-objects are refused', () => {
  assertRefused(
    () => retentionPolicy({ keepAllWithin: '2d', maxAge: '1d' }),
    /maxAge .* is shorter than keepAllWithin/,
  )
  assertRefused(
    () =>
      retentionPolicy({ keepAllWithin: '1d', keepYearly: 3 } as unknown as RetentionPolicyInput),
    /unknown retention policy field "keepYearly"/,
  )
  assertRefused(() => retentionPolicy(null as unknown as RetentionPolicyInput), /is an object/)
})

test('absent counts are zero and absent maxAge is none; the stored form reads back equal', () => {
  const plain = retentionPolicy({ keepAllWithin: '24h' })
  assert.equal(
    { ...plain },
    {
      keepAllWithinMs: 24 * HOUR_MS,
      keepHourly: 0,
      keepDaily: 0,
      keepWeekly: 0,
      keepMonthly: 0,
      maxAgeMs: null,
    },
  )
  const full = retentionPolicy({
    keepAllWithin: '1d',
    keepHourly: 24,
    keepDaily: 7,
    keepWeekly: 4,
    keepMonthly: 12,
    maxAge: '400d',
  })
  assert.is(full.maxAgeMs, 400 * 24 * HOUR_MS)
  for (const policy of [plain, full])
    assert.equal(decodeRetentionPolicy(encodeRetentionPolicy(policy), 'dataset x'), policy)
})

test('a damaged stored policy is CORRUPT_STORE, not a crash', () => {
  for (const damaged of ['', '{"keepAllWithin":', '{"keepAllWithin":-5}', '[]', 'null'])
    assertRefused(
      () => decodeRetentionPolicy(damaged, 'dataset x'),
      /retention policy of dataset x is damaged/,
      'CORRUPT_STORE',
    )
})

test.run()
