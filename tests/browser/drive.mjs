// Drives ComfyUI's web UI in the system Chromium for tests/comfy/test_browser.py: one page of one
// cell of the browser matrix (one frontend, one renderer), kept open while the tests of that cell
// run their parts in it.
//
//   node drive.mjs     reads one JSON command per line on stdin, answers each with one JSON line
//
// Commands ({part, ...}), in the order the tests send them:
//   open      {url, chromium, renderer: "classic" | "nodes2", screenshots: {folder, suffix} or null}
//   plans     {plans: [{name, inputs: {double_blocks, single_blocks}}]} typed in turn into a Plan node
//   set_by_code {set_by_code: [...]} then set on that node's widgets with no event
//   switched  {switched: [...]} typed after switching the renderer with that node on the canvas
//   lora      {lora: [...]} typed into a LoRA block node;  grid {grid: [{name, plans}]} into a Plan Grid
//   images    {images: {node type: filename in the server's temp folder}}
//   docs      {node: node type, text} opens that node's page in the node docs panel
//   model_paths {workflow, grid_type, files: {workflow, other}} traces a MODEL through subgraphs and two inputs
//   workflows {workflows: {name: workflow}} loads each workflow: what is missing, its prompt, and its strips once
//     settled (the test wrote every loader's file with its model's real header first)
//   model_source {workflow, grid_type, lone: {inputs}} loads a workflow whose loader's file the test wrote,
//             and reads the strip of its node of grid_type; then a Plan node alone, its inputs set
//   console   what the page logged so far;  close
// The plans, set_by_code, switched, lora and grid parts report a Flux.1 run to their node first, as
// ComfyUI delivers a run's output, so that their strips draw Flux.1's block counts.
// Everything is typed the way a user types it in that renderer. It never downloads a browser:
// playwright-core drives the Chromium at `chromium`.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const VUE_SETTING = "Comfy.VueNodes.Enabled";

let job = {}; // the open command: url, chromium, renderer, screenshots
let browser, page;
const consoleEntries = [];
const screenshots = [];

const PARTS = {
  async open(command) {
    job = command;
    browser = await chromium.launch({
      executablePath: job.chromium,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, deviceScaleFactor: 2 });
    await recordConsole(page);
    await page.goto(job.url, { waitUntil: "load" });
    await page.waitForFunction(() => window.app?.graph && window.app.canvas && window.LiteGraph
      && window.app.extensionManager?.setting, null, { timeout: 60000 });
    await page.waitForTimeout(1000); // the app finishes its setup after the graph exists
    const extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name));
    const extension_files = await page.evaluate(
      () => performance.getEntriesByType("resource").map((r) => r.name).filter((n) => n.includes("/extensions/")));
    if (job.screenshots) { // no badge naming the folder the test installs the pack under
      await page.evaluate(() => window.app.extensionManager.setting.set("Comfy.NodeBadge.NodeSourceBadgeMode", "None"));
    }
    await setRenderer(page, job.renderer);
    return { extensions, extension_files, renderer: await renderer(page) };
  },

  // A Plan node, typed into as a user does: valid, invalid, valid again.
  async plans({ plans }) {
    const seen = {};
    await addNode(page, "LayerLabPlan", [240, 160]);
    await reportFluxRun(page);
    await waitForStrip(page, {});
    for (const { name, inputs } of plans) {
      seen[name] = await typeAll(page, inputs);
      if (job.screenshots && ["strip", "strip_error"].includes(name)) await screenshotNode(page, name);
    }
    return seen;
  },

  // Values set by code, with no event (as undo or another extension sets them): the strip follows too.
  async set_by_code({ set_by_code }) {
    const seen = {};
    for (const { name, inputs } of set_by_code) {
      await page.evaluate((inputs) => {
        for (const [k, v] of Object.entries(inputs)) window.layerLabNode.widgets.find((w) => w.name === k).value = v;
      }, inputs);
      seen[name] = await waitForStrip(page, inputs);
    }
    return seen;
  },

  // The same node after switching the renderer with it on the canvas, then after switching back.
  async switched({ switched }) {
    const seen = {};
    const other = job.renderer === "nodes2" ? "classic" : "nodes2";
    for (const to of [other, job.renderer]) {
      await setRenderer(page, to);
      for (const { name, inputs } of switched) seen[`${to}:${name}`] = await typeAll(page, inputs);
    }
    return seen;
  },

  // A LoRA block node: the selected blocks of each stream.
  async lora({ lora }) {
    const seen = {};
    await addNode(page, "LayerLabLoraBlocks", [240, 160], [420, 300]);
    await reportFluxRun(page);
    await waitForStrip(page, {});
    for (const { name, inputs } of lora) seen[name] = await typeAll(page, inputs);
    return seen;
  },

  // A Plan Grid node: its multiline box, one group per plan line.
  async grid({ grid }) {
    const seen = {};
    await addNode(page, "LayerLabPlanGrid", [240, 160], [560, 360]);
    await reportFluxRun(page);
    await waitForStrip(page, {});
    for (const { name, plans } of grid) {
      await fillTextarea(page, "plans", plans);
      seen[name] = await waitForStrip(page, { plans });
      if (job.screenshots && name === "strip_grid") await screenshotNode(page, "strip_grid");
    }
    return seen;
  },

  // The probe, the grid and the sweep show their image after a run. No model can run here, so the
  // image (copied into the server's temp folder by the test) reaches the node the way ComfyUI delivers
  // every run's output: an `executed` event, as the server's websocket message dispatches it.
  async images({ images }) {
    const shown = {};
    const views = [];
    const onResponse = (response) => {
      const url = new URL(response.url());
      if (url.pathname.endsWith("/view")) {
        views.push({ filename: url.searchParams.get("filename"), type: url.searchParams.get("type"),
          status: response.status() });
      }
    };
    page.on("response", onResponse);
    for (const [type, filename] of Object.entries(images)) {
      await addNode(page, type, [240, 120], [640, 940]);
      await page.evaluate((filename) => {
        const id = String(window.layerLabNode.id);
        window.app.api.dispatchCustomEvent("executed", { node: id, display_node: id, prompt_id: "layer-lab-test",
          output: { images: [{ filename, subfolder: "", type: "temp" }] } });
        window.app.canvas.setDirty(true, true);
      }, filename);
      shown[type] = await shownImage(page);
      if (job.screenshots && type === "LayerLabSimilarityProbe") await screenshotNode(page, "probe_node");
    }
    page.off("response", onResponse);
    return { shown, views };
  },

  // Example workflows: load each without dialogs, list missing node types, convert to a prompt.
  async workflows({ workflows }) {
    const seen = {};
    await page.evaluate(() => {
      window.layerLabMissing = [];
      if (window.layerLabMissingHook) return;
      window.layerLabMissingHook = true;
      window.app.registerExtension({
        name: "dit_layer_lab.test.missing_nodes",
        beforeConfigureGraph(graphData, missingNodeTypes) { window.layerLabMissing = missingNodeTypes; },
      });
    });
    for (const [name, workflow] of Object.entries(workflows)) {
      seen[name] = await page.evaluate(async (workflow) => {
        const { app, LiteGraph } = window;
        await app.loadGraphData(workflow, true, true, null,
          { showMissingModelsDialog: false, showMissingNodesDialog: false });
        await new Promise((r) => setTimeout(r, 100));
        const unregistered = app.graph.nodes.filter((n) => !(n.type in LiteGraph.registered_node_types)).map((n) => n.type);
        const { output } = await app.graphToPrompt();
        const strips = app.graph.nodes.filter((n) => n.layerLabStrip).map((n) => n.type);
        return {
          missing: window.layerLabMissing.map((m) => (typeof m === "string" ? m : m.type)),
          unregistered, prompt: output, nodes: app.graph.nodes.length, strips,
        };
      }, workflow);
      seen[name].shown = await settledStrips(page);
    }
    return seen;
  },

  // Before any run: a workflow whose MODEL comes from a loader (the test wrote the file with a real
  // header), then a Plan node with no model at all.
  async model_source({ workflow, grid_type, lone }) {
    await page.evaluate(() => window.app.graph.clear());
    await page.evaluate(async (workflow) => {
      await window.app.loadGraphData(workflow, true, true, null,
        { showMissingModelsDialog: false, showMissingNodesDialog: false });
      window.app.canvas.ds.offset = [0, 0];
      window.app.canvas.ds.scale = 0.5;
    }, workflow);
    await page.evaluate((type) => { window.layerLabNode = window.app.graph.nodes.find((n) => n.type === type); },
      grid_type);
    let timedOut = false;
    try { // the strip asks for the file's counts, then for the preview with them
      await page.waitForFunction(() => {
        const strip = window.layerLabNode.layerLabStrip;
        return strip.sent && strip.shown === strip.sent && JSON.parse(strip.sent).counts;
      }, null, { timeout: 30000 });
    } catch {
      timedOut = true;
    }
    const loaded = await stripState(page);
    loaded.timed_out = timedOut;
    await addNode(page, "LayerLabPlan", [240, 160]);
    await page.evaluate((inputs) => {
      for (const [k, v] of Object.entries(inputs)) window.layerLabNode.widgets.find((w) => w.name === k).value = v;
    }, lone.inputs);
    const alone = await waitForStrip(page, lone.inputs);
    return { loaded, alone };
  },

  // The MODEL traced through subgraphs (into one by its output, out of one by its input) and through a node
  // with two MODEL inputs; each step changes which file the strip must name.
  async model_paths({ workflow, grid_type, files }) {
    const seen = {};
    const settled = async (label) => {
      let timedOut = false;
      try {
        await page.waitForFunction((file) => {
          const strip = window.layerLabNode?.layerLabStrip;
          const sent = strip?.sent && JSON.parse(strip.sent);
          return sent && strip.shown === strip.sent && strip.element.textContent.includes(`read from ${file};`);
        }, seen.expect, { timeout: 20000 });
      } catch {
        timedOut = true;
      }
      seen[label] = await page.evaluate((timedOut) => {
        const strip = window.layerLabNode.layerLabStrip;
        const { inputs, ...model } = JSON.parse(strip.sent ?? "{}");
        return { timed_out: timedOut, model, note: [...strip.element.querySelectorAll(".dll-note")].map((e) => e.textContent).join(" | ") };
      }, timedOut);
    };
    const expect = (file) => { seen.expect = file; };
    await page.evaluate(() => window.app.graph.clear());
    await page.evaluate(async (workflow) => {
      await window.app.loadGraphData(workflow, true, true, null,
        { showMissingModelsDialog: false, showMissingNodesDialog: false });
    }, workflow);
    // the loader and the model sampling node become a subgraph: the grid's MODEL comes out of it
    await page.evaluate(([gridType, file]) => {
      const { app } = window;
      const grid = app.graph.nodes.find((n) => n.type === gridType);
      const upstream = app.graph.nodes.filter((n) => n.type === "UNETLoader" || n.type === "ModelSamplingSD3");
      const { node } = app.graph.convertToSubgraph(new Set(upstream));
      window.layerLabSources = node;
      window.layerLabNode = grid;
      node.subgraph.nodes.find((n) => n.type === "UNETLoader").widgets.find((w) => w.name === "unet_name").value = file;
    }, [grid_type, files.other]);
    expect(files.other);
    await settled("from_a_subgraph");
    // the grid itself becomes a subgraph: its MODEL comes in by the subgraph's input
    await page.evaluate(([gridType, file]) => {
      const { app } = window;
      const { node } = app.graph.convertToSubgraph(new Set([window.layerLabNode]));
      window.layerLabNode = node.subgraph.nodes.find((n) => n.type === gridType);
      window.layerLabSources.subgraph.nodes.find((n) => n.type === "UNETLoader").widgets
        .find((w) => w.name === "unet_name").value = file;
    }, [grid_type, files.workflow]);
    expect(files.workflow);
    await settled("inside_a_subgraph");
    // two MODEL inputs: the first connected one is followed
    await page.evaluate(([first, second]) => {
      const { app, LiteGraph } = window;
      app.graph.clear();
      const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
      const a = add("UNETLoader", [0, 0]), b = add("UNETLoader", [0, 200]);
      a.widgets.find((w) => w.name === "unet_name").value = first;
      b.widgets.find((w) => w.name === "unet_name").value = second;
      const merge = add("ModelMergeSimple", [300, 0]), plan = add("LayerLabPlan", [600, 0]);
      a.connect(0, merge, 0);
      b.connect(0, merge, 1);
      merge.connect(0, plan, 0);
      window.layerLabMerge = merge;
      window.layerLabNode = plan;
    }, [files.workflow, files.other]);
    expect(files.workflow);
    await settled("two_inputs");
    await page.evaluate(() => window.layerLabMerge.disconnectInput(0));
    expect(files.other);
    await settled("first_disconnected");
    return seen;
  },

  async docs(command) {
    return nodeDocs(page, command);
  },

  async console() {
    await page.waitForTimeout(300); // late messages
    return { entries: consoleEntries, screenshots };
  },

  async close() {
    await browser?.close();
    browser = null;
    return {};
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  let answer;
  try {
    answer = { ok: true, result: await PARTS[command.part](command) };
  } catch (error) {
    answer = { ok: false, error: String(error?.stack ?? error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (command.part === "close") break;
}
await browser?.close();
process.exit(0);

// ------------------------------------------------------------------------------------------ helpers

// Every console error and warning and every uncaught exception, with the URLs of the frames that
// logged it (from the DevTools protocol), so that the test can tell the pack's messages from others.
async function recordConsole(page) {
  const cdp = await page.context().newCDPSession(page);
  const frames = (trace) => {
    const urls = [];
    for (let t = trace; t; t = t.parent) urls.push(...t.callFrames.map((f) => f.url));
    return urls;
  };
  const text = (arg) => arg.value ?? arg.description ?? arg.unserializableValue ?? "";
  cdp.on("Runtime.consoleAPICalled", (e) => {
    if (e.type !== "error" && e.type !== "warning" && e.type !== "assert") return;
    const stack = frames(e.stackTrace);
    consoleEntries.push({ type: e.type === "warning" ? "warning" : "error", text: e.args.map(text).join(" "),
      url: stack[0] ?? "", stack });
  });
  cdp.on("Runtime.exceptionThrown", (e) => {
    const d = e.exceptionDetails;
    const stack = frames(d.stackTrace);
    consoleEntries.push({ type: "pageerror", text: d.exception?.description ?? d.text, url: d.url ?? stack[0] ?? "",
      stack });
  });
  cdp.on("Log.entryAdded", ({ entry }) => { // the browser's own: failed requests, violations
    if (entry.level !== "error" && entry.level !== "warning") return;
    consoleEntries.push({ type: entry.level === "warning" ? "warning" : "error", text: entry.text,
      url: entry.url ?? "", stack: frames(entry.stackTrace) });
  });
  await cdp.send("Runtime.enable");
  await cdp.send("Log.enable");
}

function renderer(page) {
  return page.evaluate((key) => (window.app.extensionManager.setting.get(key) ? "nodes2" : "classic"), VUE_SETTING);
}

async function setRenderer(page, name) {
  await page.evaluate(([key, on]) => window.app.extensionManager.setting.set(key, on), [VUE_SETTING, name === "nodes2"]);
  await page.waitForTimeout(1500); // the graph is drawn anew by the other renderer
}

// A Flux.1 run reported to window.layerLabNode, as ComfyUI delivers a run's output (the pack's nodes
// return their model's block counts in their `ui`).
async function reportFluxRun(page) {
  await page.evaluate(() => {
    const id = String(window.layerLabNode.id);
    window.app.api.dispatchCustomEvent("executed", { node: id, display_node: id, prompt_id: "layer-lab-test",
      output: { dit_layer_lab_blocks: [{ family: "Flux", counts: { double_blocks: 19, single_blocks: 38 } }] } });
  });
}

// One node of `type` alone on the canvas, as window.layerLabNode.
async function addNode(page, type, pos, size) {
  // Cleared first and added later: frontend 1.49.6's Nodes 2.0 keeps the element of a node removed in
  // the same task as a node with the same id is added, without the new node's DOM widgets.
  await page.evaluate(() => window.app.graph.clear());
  await page.waitForTimeout(300);
  await page.evaluate(([type, pos, size]) => {
    const node = window.LiteGraph.createNode(type);
    node.pos = pos;
    if (size) node.setSize(size);
    window.app.graph.add(node);
    window.app.canvas.ds.offset = [0, 0];
    window.app.canvas.ds.scale = 1;
    window.app.canvas.setDirty(true, true);
    window.layerLabNode = node;
  }, [type, pos, size]);
  await page.waitForTimeout(500);
}

function nodeSelector(id) {
  return `[data-node-id="${id}"]`;
}

function nodeId(page) {
  return page.evaluate(() => window.layerLabNode.id);
}

// The node on screen: in Nodes 2.0 its element, on the classic canvas its box (title included).
async function nodeRect(page) {
  const id = await nodeId(page);
  const element = await page.$(nodeSelector(id));
  if (element && await element.isVisible()) return element.boundingBox();
  return page.evaluate(() => {
    const node = window.layerLabNode;
    const rect = window.app.canvas.canvas.getBoundingClientRect();
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const [x, y] = window.app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
    const scale = window.app.canvas.ds.scale;
    return { x: rect.left + x, y: rect.top + y, width: node.size[0] * scale, height: (node.size[1] + title) * scale };
  });
}

async function screenshotNode(page, name) {
  await page.mouse.move(1, 1); // no hover effects on the node
  await page.waitForTimeout(300);
  const box = await nodeRect(page);
  const path = `${job.screenshots.folder}/${name}${job.screenshots.suffix}.png`;
  await page.screenshot({ path, clip: { x: box.x - 10, y: box.y - 10, width: box.width + 20, height: box.height + 20 } });
  screenshots.push(path);
}

// Type each input whose value differs, then wait for the strip to show exactly these inputs.
async function typeAll(page, inputs) {
  const live = {};
  for (const [name, text] of Object.entries(inputs)) {
    const current = await page.evaluate((name) => window.layerLabNode.widgets.find((w) => w.name === name).value, name);
    if (current !== text) live[name] = await typeInto(page, name, text);
  }
  const state = await waitForStrip(page, inputs);
  state.live = live; // what the strip showed while the text was typed, before it was committed
  state.committed = await page.evaluate((names) => Object.fromEntries(names.map(
    (n) => [n, window.layerLabNode.widgets.find((w) => w.name === n).value])), Object.keys(inputs));
  return state;
}

// Type `text` into a one-line text input the way a user does in the current renderer, and return the
// strip as it was after the last keystroke and before the edit was committed (Enter).
async function typeInto(page, name, text) {
  const id = await nodeId(page);
  let box;
  if (await renderer(page) === "nodes2") {
    box = page.locator(`${nodeSelector(id)} input[aria-label="${name}"]`);
    await box.click();
  } else { // the canvas widget opens an edit box when clicked
    const point = await page.evaluate((name) => {
      const node = window.layerLabNode;
      const widget = node.widgets.find((w) => w.name === name);
      const [x, y] = window.app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + 10]);
      const rect = window.app.canvas.canvas.getBoundingClientRect();
      return [rect.left + x, rect.top + y];
    }, name);
    await page.mouse.click(point[0], point[1]);
    box = page.locator(".graphdialog input.value");
  }
  await box.fill("");
  await box.pressSequentially(text, { delay: 15 });
  const live = await waitForStrip(page, { [name]: text }, false);
  await box.press("Enter");
  if (await box.count() && await box.isVisible()) await box.blur();
  return live;
}

// A multiline input: its textarea, in either renderer.
async function fillTextarea(page, name, text) {
  const id = await nodeId(page);
  let box = page.locator(`${nodeSelector(id)} textarea`);
  if (!(await box.count())) { // classic: the DOM widget's own textarea, laid over the canvas
    const handle = await page.evaluateHandle((name) => {
      const widget = window.layerLabNode.widgets.find((w) => w.name === name);
      return widget.element ?? widget.inputEl;
    }, name);
    box = handle.asElement();
  }
  await box.click();
  await box.fill(text); // an input event, as each keystroke gives
}

// Wait until the strip shows the answer for `inputs` (or `inputs` typed but not committed when
// `committed` is false); then read the strip. A strip that never gets there is reported, not thrown.
async function waitForStrip(page, inputs, committed = true) {
  let timedOut = false;
  try {
    await page.waitForFunction(([inputs, committed]) => {
      const node = window.layerLabNode;
      const strip = node.layerLabStrip;
      const sent = strip.sent && JSON.parse(strip.sent).inputs;
      const values = Object.fromEntries(node.widgets.map((w) => [w.name, w.value]));
      return sent && strip.shown === strip.sent && Object.entries(inputs).every(
        ([k, v]) => sent[k] === v && (!committed || values[k] === v));
    }, [inputs, committed], { timeout: 15000 });
    await page.waitForTimeout(200);
  } catch {
    timedOut = true;
  }
  const state = await stripState(page);
  state.timed_out = timedOut;
  return state;
}

// What the strip shows, read from its DOM, and where it is on the screen.
// Every strip of the graph once it shows the answer for what it last sent, and that request is not waiting for
// a model file's header (at most 20 s): per node, what it sent besides its inputs, its notes and its rows (stream, note, cells).
async function settledStrips(page) {
  const settled = () => window.app.graph.nodes.filter((n) => n.layerLabStrip).every((n) => {
    const strip = n.layerLabStrip;
    return strip.sent && strip.shown === strip.sent && !/\(reading /.test(JSON.parse(strip.sent).counts_unknown ?? "");
  });
  let timedOut = false;
  try {
    await page.waitForFunction(settled, null, { timeout: 20000 });
  } catch {
    timedOut = true;
  }
  return page.evaluate((timedOut) => window.app.graph.nodes.filter((n) => n.layerLabStrip).map((n) => {
    const { inputs, ...model } = JSON.parse(n.layerLabStrip.sent ?? "{}");
    const strip = n.layerLabStrip.element;
    return {
      type: n.type, id: n.id, timed_out: timedOut, model,
      note: [...strip.querySelectorAll(".dll-note")].map((e) => e.textContent).join(" | "),
      rows: [...strip.querySelectorAll(".dll-row")].map((row) => ({
        stream: row.dataset.stream, note: row.querySelector(".dll-note")?.textContent ?? null,
        cells: row.querySelectorAll(".dll-cell").length })),
    };
  }), timedOut);
}

async function stripState(page) {
  const box = await nodeRect(page);
  const state = await page.evaluate(() => {
    const node = window.layerLabNode;
    const strip = node.layerLabStrip.element;
    const error = (box) => box && {
      text: box.textContent,
      marked: box.querySelector("mark")?.textContent ?? null,
      position: box.dataset.position,
      token: box.dataset.token,
    };
    const rect = strip.getBoundingClientRect();
    const style = getComputedStyle(strip);
    return {
      ok: strip.dataset.ok,
      sent: node.layerLabStrip.sent && JSON.parse(node.layerLabStrip.sent).inputs,
      note: [...strip.querySelectorAll(".dll-note")].map((n) => n.textContent),
      refused: strip.querySelector(".dll-refused")?.textContent ?? null,
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
      in_node_element: Boolean(strip.closest(`[data-node-id="${node.id}"]`)),
      rect: { x: rect.x, y: rect.y, width: rect.width, height: rect.height },
      shown: strip.isConnected && style.display !== "none" && style.visibility !== "hidden" && rect.width > 0
        && rect.height > 0,
    };
  });
  state.node_rect = box;
  return state;
}

// The image a node shows after an `executed` event: on the classic canvas node.imgs, in Nodes 2.0 an
// <img> inside the node's element.
async function shownImage(page) {
  const id = await nodeId(page);
  try {
    await page.waitForFunction((selector) => {
      const node = window.layerLabNode;
      const img = document.querySelector(`${selector} img`) ?? node.imgs?.[0];
      return img?.complete && img.naturalWidth > 0;
    }, nodeSelector(id), { timeout: 15000 });
  } catch {
    return null;
  }
  await page.waitForTimeout(500);
  const box = await nodeRect(page);
  const image = await page.evaluate((selector) => {
    const element = document.querySelector(`${selector} img`);
    const img = element ?? window.layerLabNode.imgs[0];
    const rect = element?.getBoundingClientRect();
    return { width: img.naturalWidth, height: img.naturalHeight, src: img.src, in_node_element: Boolean(element),
      rect: rect ? { x: rect.x, y: rect.y, width: rect.width, height: rect.height } : null };
  }, nodeSelector(id));
  image.node_rect = box;
  return image;
}

// The node's page in the node docs panel, as a user opens it: the node selected, then the selection
// toolbox's "Node Info" button. Returns whether `text` appeared, and the docs requests the page made.
async function nodeDocs(page, { node, text }) {
  const docs = [];
  const onResponse = (response) => {
    if (new URL(response.url()).pathname.includes("/docs/")) docs.push({ url: response.url(), status: response.status() });
  };
  page.on("response", onResponse);
  await addNode(page, node, [240, 160]);
  await page.evaluate(() => window.app.canvas.selectNode(window.layerLabNode));
  await page.evaluate(() => window.app.canvas.setDirty(true, true));
  const button = page.locator('[data-testid="info-button"]');
  await button.waitFor({ state: "visible", timeout: 15000 });
  await button.click();
  let shown = true;
  try {
    await page.waitForFunction((text) => document.body.innerText.includes(text), text, { timeout: 15000 });
  } catch {
    shown = false;
  }
  page.off("response", onResponse);
  return { shown, docs };
}
