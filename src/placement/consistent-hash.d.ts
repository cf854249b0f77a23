/** The parts of `consistent-hash` (1.2.x, CommonJS, untyped) that placement uses. */
declare module 'consistent-hash' {
  interface ConsistentHashOptions {
    /** Control points and hashed names live in [0, range). */
    range?: number
    /** Control points per node when none are given. */
    weight?: number
    distribution?: 'random' | 'uniform'
  }

  class ConsistentHash<Node = string> {
    constructor(options?: ConsistentHashOptions)
    readonly nodeCount: number
    readonly keyCount: number
    /** `points` are used as given; without them the package draws random ones. */
    add(node: Node, weight?: number, points?: readonly number[]): this
    remove(node: Node): this
    /** The node owning the first control point at or after the name's hash. */
    get(name: string): Node | null
    /** The first `count` distinct nodes clockwise from the name's hash. */
    get(name: string, count: number): Node[] | null
    getNodes(): Node[]
    getPoints(node: Node): number[] | undefined
  }

  export = ConsistentHash
}
