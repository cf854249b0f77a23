import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { createWebSocketStream, WebSocketServer } from 'ws'
import type { WireServer } from './server.ts'

/** Where Neon's serverless driver opens its WebSocket by default (`host + '/v2'`). */
export const WEBSOCKET_PATH = '/v2'

/**
 * The PostgreSQL protocol over a WebSocket, as Neon's proxy speaks it for `@neondatabase/serverless`'s
 * Pool and Client (and Prisma's PrismaNeon): each binary message carries protocol bytes, in order, both
 * ways. Upgrades on the HTTP port's `/v2` become sessions of the PostgreSQL front end, with its bounds
 * (wireMaxClients counts them too); a message larger than `maxBytes` closes the WebSocket.
 */
export function attachWebSockets(server: Server, wire: WireServer, maxBytes: number): { close(): void } {
  const sockets = new WebSocketServer({ noServer: true, maxPayload: maxBytes, perMessageDeflate: false })
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = new URL(request.url ?? '/', 'http://router').pathname
    if (path !== WEBSOCKET_PATH) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    sockets.handleUpgrade(request, socket, head, (ws) => {
      const stream = createWebSocketStream(ws)
      // The stream emits no 'close' of its own when the peer goes: the session listens for it.
      ws.on('close', () => stream.destroy())
      // An error of the WebSocket (a frame too large, a broken connection) ends the session.
      stream.on('error', () => stream.destroy())
      wire.accept(stream)
    })
  }
  server.on('upgrade', onUpgrade)
  return {
    close() {
      server.off('upgrade', onUpgrade)
      for (const client of sockets.clients) client.terminate()
      sockets.close()
    },
  }
}
