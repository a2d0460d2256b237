// lora-budget serve: the form -> /api/plan (plan --json's schema) -> chart, table, advice.
"use strict";
const $ = (id) => document.getElementById(id);
const GIB = 2 ** 30;
const CATS = ["weights", "quant_state", "adapter", "master_weights", "gradients", "optimizer",
  "activations", "logits", "temporaries", "overhead"];
const LABEL = { full: "full", lora: "LoRA", qlora: "QLoRA", lora8bit: "8-bit LoRA" };
const DEFAULTS = { model: "7b", gpu: "24GB", "seq-len": "2048", "batch-size": "1", optimizer: "adamw",
  rank: "16", targets: "all-linear", gpus: "1", strategy: "ddp", tokens: "", price: "" };
let colours = { categories: {}, methods: {} };
let timer = null, seq = 0;
const gib = (b) => (b / GIB).toFixed(2);

function fields() { return Array.from(document.querySelectorAll("#form [name]")).filter((e) => e.name !== "m"); }

function params() {
  // Only settings that differ from plan's defaults, so the permalink and the CLI line stay short.
  const p = new URLSearchParams();
  for (const el of fields()) {
    if (el.type === "checkbox") { if (el.checked) p.set(el.name, "1"); }
    else if (el.value.trim() !== (DEFAULTS[el.name] ?? "")) p.set(el.name, el.value.trim());
  }
  const methods = Array.from(document.querySelectorAll("[name=m]:checked")).map((e) => e.value);
  const m = methods.join(",");
  if (m !== "full,lora,qlora") p.set("method", m || "none");
  return p;
}

function restore() {
  const q = new URLSearchParams(location.search);
  for (const el of fields()) {
    if (!q.has(el.name)) continue;
    if (el.type === "checkbox") el.checked = q.get(el.name) === "1"; else el.value = q.get(el.name);
  }
  if (q.has("method")) {
    const want = q.get("method").split(",");
    for (const e of document.querySelectorAll("[name=m]")) e.checked = want.includes(e.value);
  }
}

function cli(p) {
  const parts = ["lora-budget plan"];
  for (const [k, v] of p) parts.push(v === "1" && k === "grad-ckpt" ? `--${k}` : `--${k} ${/^[\w.,:\/-]+$/.test(v) ? v : "'" + v.replace(/'/g, "'\\''") + "'"}`);
  if ($("config").value.trim()) parts.push("--model ./config.json");
  return parts.join(" ");
}

function schedule() { clearTimeout(timer); timer = setTimeout(update, 120); }

async function update() {
  const p = params(), mine = ++seq, t0 = performance.now();
  history.replaceState(null, "", "?" + p.toString());
  $("permalink").href = location.href;
  $("cli").textContent = cli(p);
  const body = $("config").value.trim();
  const res = await fetch("/api/plan?" + p.toString(), body ? { method: "POST", body } : {});
  const data = await res.json();
  if (mine !== seq) return;  // a newer change is on its way
  const ms = performance.now() - t0;
  document.body.dataset.ms = ms.toFixed(1);
  document.body.dataset.query = p.toString();
  if (!res.ok) { $("error").textContent = data.error; $("error").hidden = false; document.body.dataset.state = "error"; return; }
  $("error").hidden = true;
  render(data);
  $("timing").textContent = `answered in ${ms.toFixed(0)} ms`;
  document.body.dataset.state = "ok";
  document.body.dataset.seq = String(mine);
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function chart(data) {
  const ms = data.methods, cap = data.gpu.memory_bytes;
  const top = Math.max(cap, ...ms.map((m) => m.peak_bytes)) * 1.08;
  const W = 560, H = 300, L = 50, B = 40, bw = Math.min(90, (W - L - 20) / ms.length * 0.6);
  const y = (b) => H - B - (b / top) * (H - B - 10);
  const svg = svgEl("svg", { viewBox: `0 0 ${W + 150} ${H}`, width: W + 150, height: H, role: "img",
    "aria-label": "memory per method, stacked by category, against the GPU's memory" });
  for (let g = 0; g <= top / GIB; g += Math.max(1, Math.ceil(top / GIB / 6))) {
    svg.append(svgEl("line", { x1: L, x2: W, y1: y(g * GIB), y2: y(g * GIB), stroke: "#eee" }));
    svg.append(svgEl("text", { x: L - 6, y: y(g * GIB) + 4, "text-anchor": "end", "font-size": 11 }, String(g)));
  }
  svg.append(svgEl("text", { x: 12, y: 14, "font-size": 11 }, "GiB"));
  ms.forEach((m, i) => {
    const x = L + 20 + i * ((W - L - 20) / ms.length);
    let acc = 0;
    for (const c of CATS) {
      const b = m[c + "_bytes"] || 0;
      if (!b) continue;
      const r = svgEl("rect", { x, width: bw, y: y(acc + b), height: y(acc) - y(acc + b),
        fill: colours.categories[c] || "#999", stroke: "#fff", "stroke-width": 0.5 });
      r.append(svgEl("title", {}, `${LABEL[m.method] || m.method} ${c}: ${gib(b)} GiB`));
      svg.append(r); acc += b;
    }
    svg.append(svgEl("text", { x: x + bw / 2, y: H - B + 16, "text-anchor": "middle", "font-size": 12 }, LABEL[m.method] || m.method));
    svg.append(svgEl("text", { x: x + bw / 2, y: y(acc) - 4, "text-anchor": "middle", "font-size": 11 }, gib(m.peak_bytes)));
  });
  svg.append(svgEl("line", { x1: L, x2: W, y1: y(cap), y2: y(cap), stroke: "#000", "stroke-dasharray": "6 3", "stroke-width": 1.5 }));
  svg.append(svgEl("text", { x: W, y: y(cap) - 4, "text-anchor": "end", "font-size": 11 }, `${data.gpu.name}: ${gib(cap)} GiB`));
  CATS.filter((c) => ms.some((m) => m[c + "_bytes"])).forEach((c, i) => {
    svg.append(svgEl("rect", { x: W + 15, y: 20 + i * 18, width: 12, height: 12, fill: colours.categories[c] || "#999" }));
    svg.append(svgEl("text", { x: W + 32, y: 30 + i * 18, "font-size": 11 }, c));
  });
  $("chart").replaceChildren(svg);
}

function row(label, cells, id) {
  const tr = document.createElement("tr");
  const th = document.createElement("th"); th.textContent = label; tr.append(th);
  cells.forEach(([m, v, cls]) => { const td = document.createElement("td"); td.textContent = v; td.id = `${id}-${m}`; if (cls) td.className = cls; tr.append(td); });
  return tr;
}

function render(data) {
  const ms = data.methods;
  $("head").textContent = `${data.model.name} (${(data.model.param_count / 1e9).toFixed(2)}B parameters) on ${data.gpu.name}: ${gib(data.gpu.memory_bytes)} GiB`;
  chart(data);
  const t = $("table"); t.replaceChildren();
  const hr = document.createElement("tr"); hr.append(document.createElement("th"));
  for (const m of ms) { const th = document.createElement("th"); th.textContent = LABEL[m.method] || m.method; hr.append(th); }
  t.append(hr);
  const each = (f) => ms.map((m) => [m.method, ...[].concat(f(m))]);
  t.append(row("peak (GiB)", each((m) => gib(m.peak_bytes)), "peak"));
  t.append(row("verdict", each((m) => [m.fits ? "FITS" : "NO FIT", m.fits ? "fits" : "nofit"]), "verdict"));
  t.append(row("headroom (GiB)", each((m) => gib(m.headroom_bytes)), "headroom"));
  t.append(row("max batch", each((m) => m.max_batch_size ? String(m.max_batch_size) : "none"), "maxbatch"));
  t.append(row("max seq len", each((m) => m.max_seq_len ? String(m.max_seq_len) : "none"), "maxseq"));
  t.append(row("tokens/s", each((m) => m.tokens_per_s == null ? "-" : Math.round(m.tokens_per_s).toLocaleString("en-US")), "tps"));
  t.append(row("step (s)", each((m) => m.step_s == null ? "-" : m.step_s.toFixed(3)), "step"));
  t.append(row("cost (USD)", each((m) => m.cost_usd == null ? "-" : m.cost_usd.toFixed(2)), "cost"));
  const ul = $("advice"); ul.replaceChildren();
  for (const m of ms) {
    if (m.fits || !m.suggestions.length) continue;
    const li = document.createElement("li");
    li.textContent = `${LABEL[m.method] || m.method} to fit: ` + m.suggestions.map((s) => `${s.change} (${gib(s.peak_bytes)} GiB)`).join("; or ");
    ul.append(li);
  }
  for (const n of data.notes || []) { const li = document.createElement("li"); li.textContent = "note: " + n; ul.append(li); }
}

async function init() {
  restore();
  const cat = await (await fetch("/api/models")).json();
  colours = cat.colours;
  $("models").replaceChildren(...cat.models.map((m) => { const o = document.createElement("option"); o.value = m.name; o.label = `${m.family} · ${(m.param_count / 1e9).toFixed(2)}B · ${m.aliases.join(", ")}`; return o; }));
  $("gpus").replaceChildren(...cat.gpus.map((g) => { const o = document.createElement("option"); o.value = g.name; o.label = `${gib(g.memory_bytes)} GiB`; return o; }));
  $("form").addEventListener("input", schedule);
  $("form").addEventListener("change", schedule);
  $("form").addEventListener("submit", (e) => { e.preventDefault(); update(); });
  $("copy").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("cli").textContent));
  update();
}
init();
