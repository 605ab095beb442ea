// DiT Layer Lab: a strip of block cells on every plan, strategy, plan grid and LoRA block node.
//
// The strip never parses a plan. It sends the node's input values to the pack's route
// (POST /dit_layer_lab/preview), which answers with the Python parser's own result, and draws
// that: the executed steps in order, the blocks that never run, or the parse error with its token
// and position. On a plan grid it draws one group per plan line: the label, then each stream's
// cells, or the line's error at its line:column. After a run, the node reports its model's block
// counts and the strip uses them.
//
// The strip is a DOM widget (node.addDOMWidget), which both of the frontend's renderers show: the
// classic canvas lays the element over the node, "Nodes 2.0" mounts it inside the node. Nodes 2.0
// draws no canvas widget, so nothing here depends on a draw call: the strip follows the inputs
// through their widgets' callbacks (both renderers call them when a value changes), the classic
// edit box while it is open, and a slow sweep for values that change without an event.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const ROUTE = "/dit_layer_lab/preview";
const UI_KEY = "dit_layer_lab_blocks"; // what the nodes return in their `ui` after a run
const DEBOUNCE_MS = 150;
const RETRY_MS = 2000; // after a request that got no answer
const SWEEP_MS = 500; // how often every strip checks its inputs for changes that came without an event
const STREAM_NAMES = { double_blocks: "double", single_blocks: "single" };
const MARGIN = 4;

let NODES = {}; // node type -> {kind, inputs}, from GET ROUTE
let LIMITS = {}; // what one request may carry ({max_text}), from GET ROUTE
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
  row.append(el("span", "dll-name", `${STREAM_NAMES[stream.stream] ?? stream.stream}${own} ${stream.blocks}`));
  if (!stream.ok) {
    renderError(row, stream);
    return row;
  }
  if (stream.blocks === 0) {
    row.append(el("span", "dll-note", "this model has no such blocks"));
    return row;
  }
  if (compact && !stream.changed) {
    row.append(el("span", "dll-note", "original order"));
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
  if (answer.counts_source === "default") header.push(el("div", "dll-note", "Flux.1 block counts until the graph runs"));
  else if (answer.note) header.push(el("div", "dll-note", answer.note));
  if (answer.counts_source === "model") header.push(el("div", "dll-note", `${answer.family} model`));
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

  schedule() {
    const body = { node_type: this.node.comfyClass, inputs: this.values() };
    if (this.model) Object.assign(body, this.model);
    const key = JSON.stringify(body);
    if (key === this.sent) return;
    this.sent = key;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fetch(body, key), DEBOUNCE_MS);
  }

  async fetch(body, key) {
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
