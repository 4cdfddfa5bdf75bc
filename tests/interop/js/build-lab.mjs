// Build the NAT lab's browser peer that ships inside the Python package: browser.mjs (this
// harness's js-libp2p page) bundled and minified into src/p2prtc/lab/browser/peer.js, with its
// index.html and a copy of the web app's TURN client (web/src/turn.js, loaded as is by
// src/p2prtc/lab/browser_agent.py). Run by scripts/build-lab-browser; scripts/check-lab-browser
// rebuilds into a temporary directory and compares byte for byte, so the output depends only on
// the sources and node_modules (no timestamps, no absolute paths).
//
//   node build-lab.mjs [--outdir DIR]
import { copyFile, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const repo = resolve(here, '..', '..', '..')
const args = process.argv.slice(2)
let outdir = join(repo, 'src', 'p2prtc', 'lab', 'browser')
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--outdir' && args[i + 1] != null) outdir = resolve(args[++i])
  else {
    console.error(`usage: node build-lab.mjs [--outdir DIR] (unknown argument ${args[i]})`)
    process.exit(2)
  }
}

const result = await build({
  entryPoints: [join(here, 'browser.mjs')],
  bundle: true,
  write: false,
  outfile: 'peer.js',
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
const html = `<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <title>p2prtc lab browser peer</title>
  <link rel="icon" href="data:,">
  <script type="module" src="./peer.js"></script>
</head>
<body>
  <p>p2prtc NAT lab browser peer (js-libp2p): driven through <code>window.harness</code>.</p>
</body>
</html>
`
await mkdir(outdir, { recursive: true })
for (const entry of await readdir(outdir)) await rm(join(outdir, entry), { recursive: true })
await writeFile(join(outdir, 'peer.js'), js)
await writeFile(join(outdir, 'index.html'), html)
await copyFile(join(repo, 'web', 'src', 'turn.js'), join(outdir, 'turn.js'))
console.error(`built ${outdir}: peer.js ${(js.length / 1024).toFixed(0)} KiB, index.html, turn.js`)
