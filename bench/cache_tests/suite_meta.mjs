// Prints, as JSON, what run.py needs from the suite and can only get by evaluating its modules:
// every test's id, suite, name, kind and flags, the request header names it sends,
// and the published implementations (results/index.mjs). Counting is done in Python from this.
// usage: node suite_meta.mjs SUITE_DIR
import path from 'path'
import { pathToFileURL } from 'url'

const suite = path.resolve(process.argv[2])
const load = async rel => (await import(pathToFileURL(path.join(suite, rel)).href)).default
const suites = await load('tests/index.mjs')
const implementations = await load('results/index.mjs')

const tests = []
for (const s of suites) {
  for (const t of s.tests) {
    const headers = new Set()
    for (const r of t.requests || []) {
      for (const [name] of r.request_headers || []) headers.add(name)
    }
    tests.push({
      id: t.id,
      suite: s.id,
      name: t.name,
      kind: t.kind || 'required',
      browser_only: t.browser_only === true,
      cdn_only: t.cdn_only === true,
      depends_on: t.depends_on || [],
      request_headers: [...headers].sort()
    })
  }
}
console.log(JSON.stringify({ tests, implementations }))
