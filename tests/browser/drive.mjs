// Drives ComfyUI's web UI in the system Chromium for tests/comfy/test_browser.py.
//
//   node drive.mjs job.json     (prints one JSON object with what it saw)
//
// job.json: {url, chromium, screenshots (folder or null), plans: {name: {double_blocks, single_blocks}},
//            typing, grid: {plans}, probe: {filename (an image in the server's temp folder)},
//            workflows: {name: workflow JSON}}
// It never downloads a browser: playwright-core drives the Chromium at `chromium`.

import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const EXTENSION = "dit_layer_lab.block_strip";
const result = { console: [], extensions: [], plans: {}, typing: null, grid: null, probe: null, workflows: {},
  screenshots: [] };

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
  if (job.screenshots) { // no badge naming the folder the test installs the pack under
    await page.evaluate(() => window.app.extensionManager.setting.set("Comfy.NodeBadge.NodeSourceBadgeMode", "None"));
  }
  result.extension_files = await page.evaluate(
    () => performance.getEntriesByType("resource").map((r) => r.name).filter((n) => n.includes("/extensions/")));

  // One node of `type` alone on the canvas, as window.layerLabNode.
  const addNode = (type, pos, size) => page.evaluate(([type, pos, size]) => {
    window.app.graph.clear();
    const node = window.LiteGraph.createNode(type);
    node.pos = pos;
    if (size) node.setSize(size);
    window.app.graph.add(node);
    window.app.canvas.ds.offset = [0, 0];
    window.app.canvas.ds.scale = 1;
    window.app.canvas.setDirty(true, true);
    window.layerLabNode = node;
  }, [type, pos, size]);

  const screenshotNode = async (name) => {
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
  };

  // A Plan node on an empty canvas, typed into through its edit box as a user does.
  await addNode("LayerLabPlan", [240, 160]);
  await page.waitForSelector(".dll-strip .dll-row", { timeout: 15000 });

  const stripState = () => page.evaluate(() => {
    const strip = window.layerLabNode.layerLabStrip.element;
    const error = (box) => box && {
      text: box.textContent,
      marked: box.querySelector("mark")?.textContent ?? null,
      position: box.dataset.position,
      token: box.dataset.token,
    };
    return {
      ok: strip.dataset.ok,
      note: [...strip.querySelectorAll(".dll-note")].map((n) => n.textContent),
      rows: [...strip.querySelectorAll(".dll-row")].map((row) => ({
        stream: row.dataset.stream,
        line: row.closest(".dll-line")?.dataset.line ?? null,
        note: row.querySelector(".dll-note")?.textContent ?? null,
        cells: [...row.querySelectorAll(".dll-cell")].map((c) => ({ kind: c.dataset.kind, label: c.textContent, blocks: c.dataset.blocks })),
        error: error(row.querySelector(".dll-error")),
      })),
      lines: [...strip.querySelectorAll(".dll-line")].map((group) => ({
        number: group.dataset.line,
        ok: group.dataset.ok,
        label: group.querySelector(".dll-label").textContent,
        error: error(group.querySelector(":scope > .dll-error")),
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
    await waitForStrip({ double_blocks: job.typing }); // drawn from the edit box, before Enter
    const live = await stripState();
    await box.press("Enter");
    await waitForStrip({ double_blocks: job.typing });
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
    if (job.screenshots) await screenshotNode(name);
  }

  // A Plan Grid node: plans typed into its multiline box; the strip draws one group per line.
  await page.setViewportSize({ width: 1280, height: 1400 }); // room for the tall nodes below
  await page.waitForTimeout(300);
  if (job.grid) {
    await addNode("LayerLabPlanGrid", [240, 200], [560, 200]);
    const box = await page.waitForSelector("textarea.comfy-multiline-input", { timeout: 5000 });
    await box.fill(job.grid.plans); // an input event, as each keystroke gives
    await waitForStrip({ plans: job.grid.plans });
    await page.waitForTimeout(500);
    result.grid = await stripState();
    if (job.screenshots) {
      await page.evaluate(() => { // room for the whole text in the box, above the strip
        const node = window.layerLabNode;
        node.setSize([node.size[0], node.size[1] + 100]);
        window.app.canvas.setDirty(true, true);
      });
      await page.waitForTimeout(500);
      await screenshotNode("strip_grid");
    }
  }

  // The probe node showing its heatmap. No model can run here, so the image (made earlier by the probe
  // node itself, copied into the server's temp folder by the test) reaches the node the way ComfyUI
  // delivers every run's output: an `executed` event, as the server's websocket message dispatches it.
  if (job.probe) {
    const views = [];
    page.on("response", (response) => {
      const url = new URL(response.url());
      if (!url.pathname.endsWith("/view")) return;
      views.push({ filename: url.searchParams.get("filename"), type: url.searchParams.get("type"),
        status: response.status() });
    });
    await addNode("LayerLabSimilarityProbe", [240, 200], [640, 940]);
    await page.evaluate((filename) => {
      const id = String(window.layerLabNode.id);
      window.app.api.dispatchCustomEvent("executed", { node: id, display_node: id, prompt_id: "layer-lab-test",
        output: { images: [{ filename, subfolder: "", type: "temp" }] } });
      window.app.canvas.setDirty(true, true);
    }, job.probe.filename);
    await page.waitForFunction(() => window.layerLabNode.imgs?.[0]?.complete
      && window.layerLabNode.imgs[0].naturalWidth > 0, null, { timeout: 15000 });
    await page.waitForTimeout(500);
    result.probe = await page.evaluate(() => {
      const image = window.layerLabNode.imgs[0];
      return { width: image.naturalWidth, height: image.naturalHeight, src: image.src };
    });
    result.probe.views = views;
    if (job.screenshots) await screenshotNode("probe_node");
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
