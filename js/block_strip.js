// DiT Layer Lab: a strip of block cells on every plan, strategy, plan grid and LoRA block node.
//
// The strip never parses a plan. It sends the node's input values to the pack's route
// (POST /dit_layer_lab/preview), which answers with the Python parser's own result, and draws
// that: the executed steps in order, the blocks that never run, or the parse error with its token
// and position. On a plan grid it draws one group per plan line: the label, then each stream's
// cells, or the line's error at its line:column.
//
// Block counts: after a run, the node reports its model's and the strip uses them. Before, the strip
// follows the node's MODEL input upstream through nodes that take a MODEL (LoRA, model sampling, the
// pack's own nodes) to a loader the pack knows (GET ROUTE lists them with their file widget) and asks
// MODEL_ROUTE for the family and counts read from that file's header. Where none is found, or the
// file cannot be read, the counts are unknown and the strip says why; it never assumes a model.
//
// The strip is a DOM widget (node.addDOMWidget), which both of the frontend's renderers show: the
// classic canvas lays the element over the node, "Nodes 2.0" mounts it inside the node. Nodes 2.0
// draws no canvas widget, so nothing here depends on a draw call: the strip follows the inputs
// through their widgets' callbacks (both renderers call them when a value changes), the classic
// edit box while it is open, and a slow sweep for values that change without an event.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const ROUTE = "/dit_layer_lab/preview";
const MODEL_ROUTE = "/dit_layer_lab/model_blocks";
const UNKNOWN = "block counts unknown until the graph runs";
const MAX_REASON = 900; // characters of a reason sent as counts_unknown (the route takes 1000)
const UI_KEY = "dit_layer_lab_blocks"; // what the nodes return in their `ui` after a run
const DEBOUNCE_MS = 150;
const RETRY_MS = 2000; // after a request that got no answer
const SWEEP_MS = 500; // how often every strip checks its inputs for changes that came without an event
const STREAM_NAMES = { double_blocks: "double", single_blocks: "single" };
const MARGIN = 4;

let NODES = {}; // node type -> {kind, inputs}, from GET ROUTE
let LIMITS = {}; // what one request may carry ({max_text}), from GET ROUTE
let LOADERS = {}; // loader node type -> its file widget, from GET ROUTE
const FILE_MODELS = new Map(); // JSON [loader, name] -> {known: {family, counts} | {error} | null, time, asking}
const FILE_TTL_MS = 10000; // a file's answer is asked again after this (the file may have been added or replaced)
const STRIPS = new Set(); // the strips of the nodes in a graph

const STYLE = `
.dll-strip { font: 10px/1.3 monospace; color: var(--input-text, #ddd); overflow: hidden; box-sizing: border-box; }
.dll-note { opacity: .65; margin-bottom: 2px; }
.dll-row { display: flex; flex-wrap: wrap; gap: 2px; align-items: center; margin-bottom: 3px; }
.dll-name { min-width: 38px; opacity: .8; }
.dll-cell { min-width: 14px; padding: 0 2px; border-radius: 2px; text-align: center; color: #111; }
.dll-run { background: #7fb77e; }
.dll-repeated { background: #e0b84f; }
.dll-reversed { background: #d98cd4; }
.dll-moved { background: #e39a6d; }
.dll-parallel { background: #6fa8dc; }
.dll-selected { background: #7fb77e; }
.dll-unselected, .dll-skipped { background: transparent; color: inherit; opacity: .45; outline: 1px dashed currentColor; }
.dll-skipped { text-decoration: line-through; }
.dll-sep { opacity: .6; margin: 0 2px; }
.dll-cell.dll-modified { background-image: repeating-linear-gradient(135deg, transparent 0 3px, rgba(0,0,0,.18) 3px 5px); }
.dll-cell.dll-outside { outline: 2px solid #ff5252; outline-offset: -1px; }
.dll-error { color: #ff8a80; white-space: pre-wrap; word-break: break-word; }
.dll-error mark { background: #ff5252; color: #fff; padding: 0 1px; }
.dll-line { margin-bottom: 4px; padding-left: 4px; border-left: 2px solid #7fb77e; }
.dll-line[data-ok="false"] { border-left-color: #ff5252; }
.dll-label { font-weight: bold; margin-bottom: 1px; }
.dll-label span { font-weight: normal; opacity: .6; }
`;

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function cell(kind, label, title, blocks, modifier = null) {
  const c = el("span", `dll-cell dll-${kind}`, label);
  c.dataset.kind = kind;
  if (modifier) {
    // a block that keeps part of its update: striped; a strength outside 0..1: outlined in red
    c.classList.add("dll-modified");
    if (modifier.outside) c.classList.add("dll-outside");
    c.dataset.part = modifier.part ?? "";
    c.dataset.strength = String(modifier.strength);
  }
  c.dataset.blocks = blocks.join(",");
  c.title = title;
  return c;
}

// the typed text with the offending token marked (position is 0-based), then what is wrong
function errorBox(text, position, token, message) {
  const box = el("div", "dll-error");
  box.dataset.position = position ?? "";
  box.dataset.token = token ?? "";
  if (typeof text === "string" && position != null) {
    const end = position + Math.max(token?.length ?? 0, 1);
    box.append(text.slice(0, position), el("mark", "", text.slice(position, end) || " "), text.slice(end), "\n");
  }
  box.append(message);
  return box;
}

function renderError(row, stream) {
  const { error } = stream;
  const message = error.position == null ? error.message : `${error.reason} (position ${error.position + 1})`;
  row.append(errorBox(stream.text, error.position, error.token, message + (error.hint ? "\n" + error.hint : "")));
}

// compact: a stream in its original order is one word, not a row of cells (plan grid lines)
function renderStream(stream, compact = false) {
  const row = el("div", "dll-row");
  row.dataset.stream = stream.stream;
  // the model's own list name where it differs: "double (transformer_blocks) 60"
  const own = stream.list_name ? ` (${stream.list_name})` : "";
  row.append(el("span", "dll-name", `${STREAM_NAMES[stream.stream] ?? stream.stream}${own} ${stream.blocks ?? "?"}`));
  if (!stream.ok) {
    renderError(row, stream);
    return row;
  }
  if (compact && stream.changed === false) {
    row.append(el("span", "dll-note", "original order"));
    return row;
  }
  if (stream.depends_on_counts) {
    // counts unknown and the cells depend on them ('all', a strategy's range): checked, not drawn
    row.append(el("span", "dll-note dll-pending", "valid; its blocks are drawn once the block counts are known"));
    return row;
  }
  if (stream.blocks === 0) {
    row.append(el("span", "dll-note", "this model has no such blocks"));
    return row;
  }
  for (const c of stream.cells) {
    const times = c.count > 1 ? ` x${c.count}` : "";
    const what = (c.kind === "parallel" ? `blocks ${c.blocks.join(", ")} in parallel, averaged${times}`
      : `block ${c.blocks[0]}: ${c.kind}${times}`) + (c.modifier ? `; ${c.modifier.words}` : "");
    row.append(cell(c.kind, c.label, what, c.blocks, c.modifier));
  }
  if (stream.more_cells) row.append(el("span", "dll-note", `+${stream.more_cells} more`));
  if (stream.skipped?.length) {
    row.append(el("span", "dll-sep", "skip"));
    for (const i of stream.skipped) row.append(cell("skipped", String(i), `block ${i} never runs`, [i]));
  }
  return row;
}

// one group per plan grid line: its label, then its streams or its error at line:column
function renderLine(line) {
  const group = el("div", "dll-line");
  group.dataset.line = line.number;
  group.dataset.ok = String(line.ok);
  const label = el("div", "dll-label", line.label ?? "");
  label.prepend(el("span", "", `line ${line.number} `));
  group.append(label);
  if (line.ok) {
    group.append(...line.streams.map((stream) => renderStream(stream, true)));
  } else {
    const { error } = line;
    const message = `line ${error.line}:${error.column} ${error.reason}`;
    group.append(errorBox(error.text, error.column - 1, error.token, message));
  }
  return group;
}

function render(strip, answer) {
  if (answer.refused) {
    strip.replaceChildren(el("div", "dll-error dll-refused", `not previewed: ${answer.refused}`));
    return;
  }
  const rows = answer.lines ? answer.lines.map(renderLine)
    : answer.streams.map((stream) => renderStream(stream));
  if (answer.lines) rows.unshift(el("div", "dll-note", "the baseline (the model as received), then each line:"));
  const header = [];
  if (answer.note) header.push(el("div", "dll-note dll-counts-note", answer.note));
  if (answer.counts_source === "model") {
    // counts read from the loader's file before a run, or reported by the node after one
    const from = answer.source ? ` (read from ${answer.source}; the run's own counts replace these)` : "";
    header.push(el("div", "dll-note dll-model", `${answer.family} model${from}`));
  }
  if (answer.window_note) header.push(el("div", "dll-note", answer.window_note));
  strip.replaceChildren(...header, ...rows);
}

// A text longer than the route reads: said here, without sending a request the route would refuse.
function tooLong(inputs) {
  for (const [name, value] of Object.entries(inputs)) {
    if (typeof value === "string" && value.length > LIMITS.max_text) {
      return { ok: false, streams: [],
        refused: `input '${name}' is ${value.length} characters long; the preview reads at most ${LIMITS.max_text}` };
    }
  }
  return null;
}

function linkOf(graph, id) {
  if (id == null || !graph) return null;
  if (typeof graph.getLink === "function") return graph.getLink(id) ?? null;
  const links = graph.links;
  return (links instanceof Map ? links.get(id) : links?.[id]) ?? null;
}

// Where a link inside a subgraph starts or ends at the subgraph's own input or output (litegraph's ids).
const SUBGRAPH_INPUT_ID = -10;
const SUBGRAPH_OUTPUT_ID = -20;

// The input a node's MODEL comes in by: its first connected MODEL input (a legacy Reroute node: its input).
function modelInput(node) {
  return node.inputs?.find((i) => i.type === "MODEL" && i.link != null)
    ?? (node.comfyClass === "Reroute" ? node.inputs?.find((i) => i.link != null) : undefined);
}

function linksOf(graph) {
  const links = graph?.links;
  return links instanceof Map ? [...links.values()] : Object.values(links ?? {});
}

// The subgraph nodes, anywhere in the workflow, whose subgraph is `graph`.
function hostsOf(graph) {
  const hosts = [];
  const visit = (g, seen) => {
    if (!g || seen.has(g)) return;
    seen.add(g);
    for (const n of g.nodes ?? g._nodes ?? []) {
      if (!n.isSubgraphNode?.()) continue;
      if (n.subgraph === graph) hosts.push(n);
      visit(n.subgraph, seen);
    }
  };
  visit(app.rootGraph ?? app.graph, new Set());
  return hosts;
}

// The loader a node's MODEL comes from: {loader, name}, or {reason} where it cannot be known before a run.
// Follows the MODEL link upstream while the node there takes a MODEL itself (a legacy Reroute node too), into
// a subgraph node through its output, and out of a subgraph through its input to the subgraph node that holds
// it (where the subgraph is used by several nodes, they must agree).
function modelSource(node) {
  const graph = node.graph ?? app.graph;
  return sourceOf(graph, linkOf(graph, modelInput(node)?.link), new Set());
}

function sourceOf(graph, link, seen) {
  while (link && !seen.has(link)) {
    seen.add(link);
    if (Number(link.origin_id) === SUBGRAPH_INPUT_ID) { // ids may be numbers or strings
      const found = hostsOf(graph).map((host) => sourceOf(host.graph, linkOf(host.graph, host.inputs?.[link.origin_slot]?.link), seen));
      const names = new Set(found.map((source) => JSON.stringify(source)));
      return names.size === 1 ? found[0] : { reason: UNKNOWN };
    }
    const origin = graph.getNodeById(link.origin_id);
    if (!origin) break;
    if (origin.isSubgraphNode?.()) {
      graph = origin.subgraph;
      const slot = Number(link.origin_slot);
      link = linksOf(graph).find((l) => Number(l.target_id) === SUBGRAPH_OUTPUT_ID && Number(l.target_slot) === slot);
      continue;
    }
    const widget = LOADERS[origin.comfyClass];
    if (widget) {
      const name = widgetValue(origin, widget);
      return typeof name === "string" && name ? { loader: origin.comfyClass, name } : { reason: UNKNOWN };
    }
    link = linkOf(graph, modelInput(origin)?.link);
  }
  return { reason: UNKNOWN };
}

// The family and counts read from a loader's file (cached per file name), or null while the route is asked;
// `then` runs when a new answer arrives.
function fileModel(source, then) {
  const key = JSON.stringify([source.loader, source.name]);
  const entry = FILE_MODELS.get(key) ?? { known: null, time: 0, asking: false };
  FILE_MODELS.set(key, entry);
  if (entry.asking || Date.now() - entry.time < FILE_TTL_MS) return entry.known;
  entry.asking = true; // the last answer stays shown until the new one comes
  (async () => {
    let known;
    try {
      const response = await api.fetchApi(MODEL_ROUTE, { method: "POST",
        body: JSON.stringify({ loader: source.loader, name: source.name }) });
      const answer = await response.json();
      known = response.ok && answer.known ? { family: answer.family, counts: answer.counts, name: source.name }
        : { error: answer.error ?? response.statusText };
    } catch (error) {
      known = { error: `the model route did not answer: ${error.message}` };
    }
    Object.assign(entry, { known, time: Date.now(), asking: false });
    then();
  })();
  return entry.known;
}

function unknownReason(error) {
  const reason = error.startsWith("not a supported model") ? error : `${UNKNOWN} (${error})`;
  return reason.length > MAX_REASON ? reason.slice(0, MAX_REASON) + "..." : reason;
}

class Strip {
  constructor(node, spec) {
    this.node = node;
    this.spec = spec;
    this.model = null; // {family, counts} once the node has run
    this.overrides = {}; // text typed into an open classic edit box, not yet committed
    this.sent = null;
    this.timer = null;
    this.element = el("div", "dll-strip");
    this.content = el("div"); // measured: the element itself is as tall as the node makes it
    this.element.append(this.content);
    this.widget = node.addDOMWidget("block_strip", "dll_block_strip", this.element, {
      serialize: false, // not a node input: never part of the prompt
      margin: MARGIN,
      getMinHeight: () => Math.max(24, this.content.offsetHeight + 2 * MARGIN),
    });
    this.widget.serialize = false; // and not saved in the workflow's widgets_values
    for (const widget of node.widgets ?? []) {
      if (spec.inputs.includes(widget.name)) this.follow(widget);
    }
  }

  values() {
    const inputs = {};
    for (const name of this.spec.inputs) inputs[name] = this.overrides[name] ?? widgetValue(this.node, name);
    return inputs;
  }

  // What the strip knows of the model, as request fields, and the file it was read from: the run's report;
  // else the loader's file; else why it cannot know.
  modelFields() {
    if (this.model) return { fields: this.model };
    const source = modelSource(this.node);
    if (source.reason) return { fields: { counts_unknown: source.reason } };
    const known = fileModel(source, () => this.schedule());
    if (!known) return { fields: { counts_unknown: `${UNKNOWN} (reading ${source.name})` } };
    if (known.error) return { fields: { counts_unknown: unknownReason(known.error) } };
    return { fields: { family: known.family, counts: known.counts }, source: known.name };
  }

  schedule() {
    const { fields, source } = this.modelFields();
    const body = { node_type: this.node.comfyClass, inputs: this.values(), ...fields };
    const key = JSON.stringify({ ...body, source }); // another file of the same model is named anew
    if (key === this.sent) return;
    this.sent = key;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fetch(body, key, source), DEBOUNCE_MS);
  }

  async fetch(body, key, source) {
    let answer = tooLong(body.inputs);
    if (!answer) try {
      const response = await api.fetchApi(ROUTE, { method: "POST", body: JSON.stringify(body) });
      answer = await response.json();
      // 400: the route refused the request and says why; asking again would not change that
      if (response.status === 400) answer = { ok: false, streams: [], refused: answer.error ?? response.statusText };
      else if (!response.ok) throw new Error(answer.error ?? response.statusText);
    } catch (error) {
      answer = { ok: false, streams: [], note: `Layer Lab preview unavailable: ${error.message}` };
      // ask again after a pause (the next sweep sends it), not only when an input changes
      setTimeout(() => { if (this.sent === key) this.sent = null; }, RETRY_MS);
    }
    if (key !== this.sent) return; // a newer request is on its way
    if (source && answer.counts_source === "model") answer.source = source;
    render(this.content, answer);
    this.element.dataset.ok = String(answer.ok);
    this.shown = key;
    this.fit();
  }

  fit() {
    const [width, height] = this.node.size;
    const needed = this.node.computeSize([width, height])[1];
    if (needed > height) this.node.setSize([width, needed]);
    this.node.setDirtyCanvas(true, true);
  }

  // Every edit of an input, in either renderer: the widget's callback (the classic canvas calls it
  // when an edit is committed, Nodes 2.0 on every keystroke), a multiline box's own input events,
  // and the classic edit box while the user types, before Enter commits it.
  follow(widget) {
    const strip = this;
    const callback = widget.callback;
    widget.callback = function () {
      const result = callback?.apply(this, arguments);
      strip.schedule();
      return result;
    };
    widget.element?.addEventListener?.("input", () => this.schedule());
    if (["text", "string"].includes(widget.type)) this.watchTyping(widget);
  }

  watchTyping(widget) {
    const onClick = widget.onClick;
    if (typeof onClick !== "function") return;
    const strip = this;
    widget.onClick = function (options) {
      const result = onClick.apply(this, arguments);
      const input = options?.canvas?.prompt_box?.querySelector(".value");
      if (input) {
        input.addEventListener("input", () => { strip.overrides[widget.name] = input.value; strip.schedule(); });
        const observer = new MutationObserver(() => {
          if (input.isConnected) return;
          observer.disconnect();
          delete strip.overrides[widget.name];
          strip.schedule();
        });
        observer.observe(options.canvas.prompt_box.parentNode, { childList: true });
      }
      return result;
    };
  }
}

// Values can also change without an event (undo, a workflow loaded into existing nodes, another
// extension setting a widget): every strip compares its inputs with what it last sent, which costs
// nothing when they are unchanged.
function sweep() {
  for (const strip of STRIPS) strip.schedule();
}

app.registerExtension({
  name: "dit_layer_lab.block_strip",

  async init() {
    const style = el("style", "", STYLE);
    document.head.append(style);
    try {
      const described = await (await api.fetchApi(ROUTE)).json();
      NODES = described.nodes ?? {};
      LIMITS = described.limits ?? {};
      LOADERS = described.loaders ?? {};
    } catch (error) {
      console.warn("DiT Layer Lab: the block strip is off, the preview route did not answer:", error);
      return;
    }
    setInterval(sweep, SWEEP_MS);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const spec = NODES[nodeData.name];
    if (!spec) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.layerLabStrip = new Strip(this, spec);
      this.layerLabStrip.schedule();
      return result;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      this.layerLabStrip?.schedule(); // a loaded workflow's values
      return result;
    };
    const onAdded = nodeType.prototype.onAdded;
    nodeType.prototype.onAdded = function () {
      if (this.layerLabStrip) STRIPS.add(this.layerLabStrip);
      return onAdded?.apply(this, arguments);
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      if (this.layerLabStrip) STRIPS.delete(this.layerLabStrip);
      return onRemoved?.apply(this, arguments);
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      const reported = output?.[UI_KEY]?.[0];
      if (reported && this.layerLabStrip) {
        this.layerLabStrip.model = { family: reported.family, counts: reported.counts };
        this.layerLabStrip.schedule();
      }
      return result;
    };
  },
});
