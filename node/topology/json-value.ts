// An opaque JSON value (a retention policy) checked without trusting where it came from:
// only JSON types, a bounded depth and a bounded size in canonical form (RFC 8785, so that
// every node stores and serialises it byte for byte the same).
import canonicalize from 'canonicalize'
import { assert } from '../../consensus/assert.ts'

export type JsonValue =
  null | boolean | number | string | readonly JsonValue[] | { readonly [key: string]: JsonValue }

const utf8Encoder = new TextEncoder()
// In `u` mode, \p{Cs} matches only a lone surrogate, which UTF-8 cannot carry.
const LONE_SURROGATE = /\p{Cs}/u

/** The canonical JSON text of a value already known to be JSON. */
export function canonicalJson(value: unknown): string {
  const text = canonicalize(value)
  assert(text !== undefined, 'a JSON value has a canonical form')
  return text
}

/**
 * Null when `value` is JSON no deeper than `depthMax` whose canonical form has at most
 * `bytesMax` bytes, else why not. Walks with an explicit stack: hostile nesting cannot
 * exhaust the call stack, and the walk stops at the first value past either bound.
 */
export function jsonValueProblem(
  value: unknown,
  depthMax: number,
  bytesMax: number,
): string | null {
  const stack: { value: unknown; depth: number }[] = [{ value, depth: 0 }]
  let visited = 0
  while (stack.length > 0) {
    const { value: current, depth } = stack.pop()!
    // Every value costs at least one byte of canonical text, so this bounds the walk.
    if (++visited > bytesMax) return `is over ${bytesMax} bytes`
    if (depth > depthMax) return `is nested deeper than ${depthMax}`
    const problem = scalarProblem(current)
    if (problem !== null) return problem
    if (typeof current !== 'object' || current === null) continue
    const children = Array.isArray(current) ? current : Object.values(current)
    for (const child of children) stack.push({ value: child, depth: depth + 1 })
  }
  const bytes = utf8Encoder.encode(canonicalJson(value)).length
  return bytes > bytesMax ? `is ${bytes} bytes, over ${bytesMax}` : null
}

function scalarProblem(value: unknown): string | null {
  switch (typeof value) {
    case 'boolean':
      return null
    case 'number':
      return Number.isFinite(value) ? null : 'holds a number JSON cannot carry'
    case 'string':
      return LONE_SURROGATE.test(value) ? 'holds text that is not well-formed Unicode' : null
    case 'object':
      if (value === null || Array.isArray(value)) return null
      return Object.getPrototypeOf(value) === Object.prototype ||
        Object.getPrototypeOf(value) === null
        ? keysProblem(value)
        : 'holds an object that is not plain JSON'
    default:
      return `holds a value of type ${typeof value}, which JSON cannot carry`
  }
}

function keysProblem(value: object): string | null {
  for (const key of Object.keys(value))
    if (LONE_SURROGATE.test(key)) return 'holds a key that is not well-formed Unicode'
  return null
}

/** A deep copy in canonical form, frozen: the stored value shares nothing with the caller's. */
export function canonicalCopy(value: JsonValue): JsonValue {
  return deepFreeze(JSON.parse(canonicalJson(value)) as JsonValue)
}

function deepFreeze(value: JsonValue): JsonValue {
  if (typeof value === 'object' && value !== null)
    for (const child of Object.values(value)) deepFreeze(child as JsonValue)
  return Object.freeze(value)
}
