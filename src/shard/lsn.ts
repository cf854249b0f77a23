/** PostgreSQL WAL positions ('16/B374D848') as bigints, so they compare and subtract exactly. */
export function parseLsn(text: string): bigint {
  const [high, low] = text.split('/')
  if (high === undefined || low === undefined) throw new Error(`not an LSN: ${text}`)
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`)
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}

/** Fixed-width hex: string order equals WAL order (used for compare-and-set in Redis). */
export const sortableLsn = (lsn: bigint) => lsn.toString(16).padStart(16, '0')
export const fromSortableLsn = (text: string) => BigInt(`0x${text}`)
