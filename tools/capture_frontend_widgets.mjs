#!/usr/bin/env node
// Record how the REAL ComfyUI front end lays out each node's widgets (dev tool; the tier-1 tests
// read its output, they never run it). Starts ComfyUI (with this pack) on a free loopback port,
// opens the front end in headless Chromium, creates one node of every registered core type and
// writes tests/data/schemas/frontend_widgets.json: {"frontend": version, "nodes": {type: [[widget name,
// widget type, saved in widgets_values (widget.serialize !== false), sent in the API prompt
// (widget.options.serialize !== false)], ...]}} in widget order. The pack's own nodes are left
// out (workflow_format derives their layout from their schema, by the same rules).
// Uses playwright-core from ../shared/tools/frontend_check (run its wrapper once to install it).
//
//   node tools/capture_frontend_widgets.mjs --comfyui /work/ComfyUI --python /work/venv/bin/python
import { createRequire } from 'node:module';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.dirname(here);
const { values: o } = parseArgs({ options: {
  comfyui: { type: 'string' }, python: { type: 'string', default: 'python3' },
  out: { type: 'string', default: path.join(repo, 'tests', 'data', 'schemas', 'frontend_widgets.json') },
  chromium: { type: 'string', default: '/usr/bin/chromium' },
  tool: { type: 'string', default: path.join(path.dirname(repo), 'shared', 'tools', 'frontend_check') },
} });
if (!o.comfyui) { console.error('usage: capture_frontend_widgets.mjs --comfyui DIR [--python PY] [--out FILE]'); process.exit(2); }
const { chromium } = createRequire(path.join(o.tool, 'package.json'))('playwright-core');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'capture_widgets-'));
let server = null, browser = null;
const alive = () => server && server.exitCode === null && server.signalCode === null;

async function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer().once('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

async function main() {
  const mk = (...p) => { const d = path.join(tmp, ...p); fs.mkdirSync(d, { recursive: true }); return d; };
  fs.writeFileSync(path.join(mk('user', 'default'), 'comfy.settings.json'), '{"Comfy.TutorialCompleted": true}');
  const nodesDir = mk('custom_nodes'), name = path.basename(repo);
  fs.symlinkSync(repo, path.join(nodesDir, name));
  fs.writeFileSync(path.join(tmp, 'extra.yaml'), `capture:\n  base_path: ${JSON.stringify(tmp)}\n  custom_nodes: ${JSON.stringify(nodesDir)}\n`);
  const port = await freePort();
  const log = fs.openSync(path.join(tmp, 'server.log'), 'w');
  server = spawn(o.python, ['main.py', '--cpu', '--listen', '127.0.0.1', '--port', String(port), '--disable-api-nodes',
    '--dont-print-server', '--verbose', 'WARNING', '--disable-auto-launch', '--database-url', `sqlite:///${tmp}/c.db`,
    '--extra-model-paths-config', path.join(tmp, 'extra.yaml'), '--user-directory', path.join(tmp, 'user'),
    '--input-directory', mk('input'), '--output-directory', mk('output'), '--temp-directory', tmp,
    '--disable-all-custom-nodes', '--whitelist-custom-nodes', name], { cwd: o.comfyui, stdio: ['ignore', log, log] });
  const base = `http://127.0.0.1:${port}`;
  for (let t0 = Date.now(); ; await sleep(250)) {
    if (!alive()) throw new Error('server exited: ' + fs.readFileSync(path.join(tmp, 'server.log'), 'utf8').slice(-3000));
    if (Date.now() - t0 > 180e3) throw new Error('server not ready');
    try { if ((await fetch(`${base}/system_stats`)).ok) break; } catch { }
  }
  browser = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
    executablePath: o.chromium, headless: true, viewport: { width: 1600, height: 1000 },
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
  const page = browser.pages()[0] ?? await browser.newPage();
  await page.goto(`${base}/`);
  await page.waitForFunction(() => window.app?.vueAppReady && window.app.graph?.nodes?.length > 0, null, { timeout: 120e3 });
  const result = await page.evaluate(() => {
    const nodes = {}, errors = {};
    const types = Object.keys(window.LiteGraph.registered_node_types).sort();
    for (const type of types) {
      try {
        const node = window.LiteGraph.createNode(type);
        if (!node) continue;
        window.app.graph.add(node);
        nodes[type] = (node.widgets ?? []).map((w) => [w.name, w.type, w.serialize !== false, w.options?.serialize !== false]);
        window.app.graph.remove(node);
      } catch (e) { errors[type] = String(e.message ?? e).split('\n')[0]; }
    }
    return { frontend: window.__COMFYUI_FRONTEND_VERSION__, nodes, errors };
  });
  const info = await (await fetch(`${base}/object_info`)).json();
  result.comfyui = (await (await fetch(`${base}/system_stats`)).json()).system?.comfyui_version;
  // keep ComfyUI's core node types and the front end's own virtual ones (not the pack's)
  const core = (t) => (t in info && !String(info[t].python_module).startsWith('custom_nodes.'))
    || ['Note', 'MarkdownNote', 'Reroute', 'PrimitiveNode'].includes(t);
  const keep = Object.fromEntries(Object.entries(result.nodes).filter(([t]) => core(t)));
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  const lines = Object.entries(keep).map(([t, w]) => `  ${JSON.stringify(t)}: ${JSON.stringify(w)}`);
  fs.writeFileSync(o.out, `{"frontend": ${JSON.stringify(result.frontend)}, "comfyui": ${JSON.stringify(result.comfyui)}, "nodes": {\n${lines.join(',\n')}\n}}\n`);
  console.log(`front end ${result.frontend}: ${Object.keys(keep).length} node types written to ${o.out}`);
  for (const [t, e] of Object.entries(result.errors)) console.log(`  could not create ${t}: ${e}`);
}

let code = 1;
try { await main(); code = 0; } catch (e) { console.error(`capture_frontend_widgets: ${e.message}`); }
await browser?.close().catch(() => {});
if (alive()) { server.kill('SIGTERM'); for (let i = 0; i < 100 && alive(); i++) await sleep(100); if (alive()) server.kill('SIGKILL'); }
fs.rmSync(tmp, { recursive: true, force: true });
process.exit(code);
