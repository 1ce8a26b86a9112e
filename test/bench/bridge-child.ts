/**
 * The bridge bench's child processes (bridge.ts `startOurBridge`), run from a bundle: `link
 * <localUrl> <upstreamPort> [direction]` or `fabric <upstreamPort> [colocated]`.
 */
import { runFabric, runLink, type Direction } from './bridge.ts'

const [role, a, b, c] = process.argv.slice(2)
if (role === 'link') await runLink(a!, Number(b), (c ?? 'out') as Direction)
else if (role === 'fabric') await runFabric(Number(a), b === 'colocated')
else throw new Error(`bridge-child: unknown role ${role}`)
