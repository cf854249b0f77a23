import type { StatementResult } from '../result.ts'
import type { CachedAnswer } from './store.ts'

/** What the local copy holds of one answer: its encoded bytes, in a buffer of their own. */
export interface Entry {
  encoded: Buffer
  /** What it counts against `localBytes`: the bytes, its key and the Map's own share. */
  bytes: number
  /** When it leaves Redis (Date.now() milliseconds): the local copy goes then too. */
  expiresAt: number
}

/** A Map entry, its key string and the Entry object, roughly (V8 on 64-bit). */
const ENTRY_OVERHEAD = 160

/**
 * An entry whose buffer is exactly its bytes: `Buffer.from` and ioredis hand out views of a larger
 * slab or socket chunk, and a view keeps all of it alive (measured: a 100-byte answer holding 60 KB).
 */
export function entryOf(key: string, encoded: Buffer, expiresAt: number): Entry {
  const own = Buffer.allocUnsafeSlow(encoded.length)
  encoded.copy(own)
  return { encoded: own, bytes: own.length + key.length * 2 + ENTRY_OVERHEAD, expiresAt }
}

/** Least recently used out first once the entries' bytes pass `maxBytes` (a Map keeps insertion order). */
export function createByteLru(maxBytes: number, evicted: (bytes: number) => void) {
  const entries = new Map<string, Entry>()
  let bytes = 0
  return {
    get(key: string): Entry | undefined {
      const entry = entries.get(key)
      if (entry) {
        entries.delete(key)
        entries.set(key, entry)
      }
      return entry
    },
    set(key: string, entry: Entry) {
      if (entry.bytes > maxBytes) return
      const old = entries.get(key)
      if (old) {
        bytes -= old.bytes
        entries.delete(key)
      }
      entries.set(key, entry)
      bytes += entry.bytes
      for (const [oldest, value] of entries) {
        if (bytes <= maxBytes) break
        entries.delete(oldest)
        bytes -= value.bytes
        evicted(value.bytes)
      }
    },
  }
}

/** A lower bound of an answer's encoded size, cheap: its values' and raw rows' lengths. */
export function roughBytes(result: StatementResult): number {
  let bytes = 0
  for (const row of result.raw ?? []) bytes += row.length
  for (const row of result.rows) for (const value of row) bytes += value?.length ?? 0
  return bytes
}

/** JSON, with the PostgreSQL front end's raw DataRow bodies as base64. */
export function encode(answer: CachedAnswer): Buffer {
  const { raw, ...result } = answer.result
  return Buffer.from(
    JSON.stringify({ ...answer, result, raw: raw?.map((row) => row.toString('base64')) ?? null }),
  )
}

export function decode(bytes: Buffer): CachedAnswer | undefined {
  try {
    const parsed = JSON.parse(bytes.toString()) as CachedAnswer & { raw: string[] | null }
    const { raw, ...answer } = parsed
    if (raw) answer.result.raw = raw.map((row) => Buffer.from(row, 'base64'))
    return answer
  } catch {
    return undefined
  }
}
