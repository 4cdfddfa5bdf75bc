// Build the browser peer: bundle src/app.js with esbuild and write app.js, app.css and
// index.html into the output directory (default: ../src/p2prtc/web/static, the copy that the
// Python package serves and that is committed).
//
//   node build.mjs [--outdir DIR]
//
// The output depends only on the sources and node_modules (no timestamps, no absolute paths),
// so scripts/check-web can rebuild into a temporary directory and compare byte for byte.
import { createHash } from 'node:crypto'
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
let outdir = join(here, '..', 'src', 'p2prtc', 'web', 'static')
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--outdir' && args[i + 1] != null) outdir = resolve(args[++i])
  else {
    console.error(`usage: node build.mjs [--outdir DIR] (unknown argument ${args[i]})`)
    process.exit(2)
  }
}

const result = await build({
  entryPoints: [join(here, 'src', 'app.js')],
  bundle: true,
  write: false,
  outfile: 'app.js',
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
  absWorkingDir: here,
  define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' }
})
if (result.outputFiles.length !== 1) throw new Error('expected exactly one output file')
const js = result.outputFiles[0].contents
const css = await readFile(join(here, 'src', 'app.css'))

// Cache busting without timestamps: the asset URLs carry a hash of their content.
const tag = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 12)
let html = await readFile(join(here, 'src', 'index.html'), 'utf8')
for (const [name, bytes] of [['app.js', js], ['app.css', css]]) {
  const ref = `"./${name}"`
  if (!html.includes(ref)) throw new Error(`src/index.html does not reference ${ref}`)
  html = html.replace(ref, `"./${name}?v=${tag(bytes)}"`)
}

await mkdir(outdir, { recursive: true })
for (const entry of await readdir(outdir)) await rm(join(outdir, entry), { recursive: true })
await writeFile(join(outdir, 'app.js'), js)
await writeFile(join(outdir, 'app.css'), css)
await writeFile(join(outdir, 'index.html'), html)
console.error(`built ${outdir}: app.js ${(js.length / 1024).toFixed(0)} KiB, ` +
  `app.css ${css.length} B, index.html ${html.length} B`)
