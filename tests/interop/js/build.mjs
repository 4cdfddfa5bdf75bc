// Bundle browser.mjs (js-libp2p for the browser) into dist/browser.js with esbuild.
import { mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
await mkdir(join(here, 'dist'), { recursive: true })
const result = await build({
  entryPoints: [join(here, 'browser.mjs')],
  outfile: join(here, 'dist', 'browser.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  sourcemap: true,
  minify: false,
  metafile: true,
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' }
})
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0)
console.error(`built dist/browser.js (${(bytes / 1024).toFixed(0)} KiB incl. source map)`)
