// Drives ComfyUI's web UI in the system Chromium for tests/comfy/test_frontend.py.
//
//   node drive.mjs job.json     (prints one JSON object with what it saw)
//
// job.json: {url, chromium, screenshots (folder or null), plans: {name: {double_blocks, single_blocks}},
//            workflows: {name: workflow JSON}}
// It never downloads a browser: playwright-core drives the Chromium at `chromium`.

import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const EXTENSION = "dit_layer_lab.block_strip";
const result = { console: [], extensions: [], plans: {}, typing: null, workflows: {}, screenshots: [] };

const browser = await chromium.launch({
  executablePath: job.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 2 });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") {
      result.console.push({ type: m.type(), text: m.text(), url: m.location()?.url ?? "" });
    }
  });
  page.on("pageerror", (e) => result.console.push({ type: "pageerror", text: String(e.stack ?? e), url: "" }));

  await page.goto(job.url, { waitUntil: "load" });
  await page.waitForFunction(() => window.app?.graph && window.app.canvas && window.LiteGraph, null, { timeout: 60000 });
  await page.waitForTimeout(2000); // the app finishes its setup after the graph exists
  result.extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name));
  result.extension_files = await page.evaluate(
    () => performance.getEntriesByType("resource").map((r) => r.name).filter((n) => n.includes("/extensions/")));

  // A Plan node on an empty canvas, typed into through its edit box as a user does.
  await page.evaluate(() => {
    window.app.graph.clear();
    const node = window.LiteGraph.createNode("LayerLabPlan");
    node.pos = [240, 160];
    window.app.graph.add(node);
    window.app.canvas.ds.offset = [0, 0];
    window.app.canvas.ds.scale = 1;
    window.app.canvas.setDirty(true, true);
    window.layerLabNode = node;
  });
  await page.waitForSelector(".dll-strip .dll-row", { timeout: 15000 });

  const stripState = () => page.evaluate(() => {
    const strip = window.layerLabNode.layerLabStrip.element;
    return {
      ok: strip.dataset.ok,
      note: [...strip.querySelectorAll(".dll-note")].map((n) => n.textContent),
      rows: [...strip.querySelectorAll(".dll-row")].map((row) => ({
        stream: row.dataset.stream,
        cells: [...row.querySelectorAll(".dll-cell")].map((c) => ({ kind: c.dataset.kind, label: c.textContent, blocks: c.dataset.blocks })),
        error: row.querySelector(".dll-error") && {
          text: row.querySelector(".dll-error").textContent,
          marked: row.querySelector(".dll-error mark")?.textContent ?? null,
          position: row.querySelector(".dll-error").dataset.position,
          token: row.querySelector(".dll-error").dataset.token,
        },
      })),
    };
  });
  const waitForStrip = (inputs) => page.waitForFunction((inputs) => {
    const strip = window.layerLabNode.layerLabStrip;
    const sent = strip.sent && JSON.parse(strip.sent).inputs;
    return sent && Object.entries(inputs).every(([k, v]) => sent[k] === v) && strip.shown === strip.sent;
  }, inputs, { timeout: 15000 });

  // Typing: click the double_blocks widget, type into the edit box; the strip follows before Enter.
  if (job.typing) {
    const point = await page.evaluate(() => {
      const node = window.layerLabNode;
      const widget = node.widgets.find((w) => w.name === "double_blocks");
      const [x, y] = window.app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + 10]);
      const rect = window.app.canvas.canvas.getBoundingClientRect();
      return [rect.left + x, rect.top + y];
    });
    await page.mouse.click(point[0], point[1]);
    const box = await page.waitForSelector(".graphdialog input.value", { timeout: 5000 });
    await box.fill("");
    await box.type(job.typing, { delay: 20 });
    await page.waitForTimeout(600);
    const live = await stripState();
    await box.press("Enter");
    await page.waitForTimeout(600);
    const value = await page.evaluate(() => window.layerLabNode.widgets.find((w) => w.name === "double_blocks").value);
    result.typing = { live, committed: value, after: await stripState() };
  }

  for (const [name, plan] of Object.entries(job.plans ?? {})) {
    await page.evaluate((plan) => {
      for (const [k, v] of Object.entries(plan)) window.layerLabNode.widgets.find((w) => w.name === k).value = v;
      window.app.canvas.setDirty(true, true);
    }, plan);
    await waitForStrip(plan);
    await page.waitForTimeout(500);
    result.plans[name] = await stripState();
    if (job.screenshots) {
      const clip = await page.evaluate(() => {
        const node = window.layerLabNode;
        const rect = window.app.canvas.canvas.getBoundingClientRect();
        const [x, y] = window.app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - 30]);
        return { x: rect.left + x - 10, y: rect.top + y - 10, width: node.size[0] * window.app.canvas.ds.scale + 20,
          height: (node.size[1] + 30) * window.app.canvas.ds.scale + 20 };
      });
      const path = `${job.screenshots}/${name}.png`;
      await page.screenshot({ path, clip });
      result.screenshots.push(path);
    }
  }

  // Example workflows: load each without dialogs, list missing node types, convert to a prompt.
  await page.evaluate(() => {
    window.layerLabMissing = [];
    window.app.registerExtension({
      name: "dit_layer_lab.test.missing_nodes",
      beforeConfigureGraph(graphData, missingNodeTypes) { window.layerLabMissing = missingNodeTypes; },
    });
  });
  for (const [name, workflow] of Object.entries(job.workflows ?? {})) {
    result.workflows[name] = await page.evaluate(async (workflow) => {
      const { app, LiteGraph } = window;
      await app.loadGraphData(workflow, true, true, null,
        { showMissingModelsDialog: false, showMissingNodesDialog: false });
      await new Promise((r) => setTimeout(r, 300));
      const unregistered = app.graph.nodes.filter((n) => !(n.type in LiteGraph.registered_node_types)).map((n) => n.type);
      const { output } = await app.graphToPrompt();
      const strips = app.graph.nodes.filter((n) => n.layerLabStrip).map((n) => n.type);
      return {
        missing: window.layerLabMissing.map((m) => (typeof m === "string" ? m : m.type)),
        unregistered, prompt: output, nodes: app.graph.nodes.length, strips,
      };
    }, workflow);
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));
