import pino from 'pino'

/** The one logger: JSON lines on stdout. LOG_LEVEL sets the level (default info; silent in tests). */
export const logger = pino({
  level: process.env.LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info'),
  base: { service: 'switchyard' },
})

export type Logger = pino.Logger
