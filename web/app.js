// The GePT dashboard: four pages over the JSON API and the websocket.
"use strict";
const $ = (sel, root) => (root || document).querySelector(sel);
const h = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : String(k));
  return e;
};
const gp = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));
const pct = (p) => (p === null || p === undefined ? "–" : (p * 100).toFixed(1) + "%");
const ago = (s) => (s === null || s === undefined ? "?" : s < 120 ? s + " s" : Math.round(s / 60) + " min");
const OFFSETS = [125, 150, 175, 200, 225, 250];
const HORIZONS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 20, 24, 32, 40, 48];
// As the service names targets (core/src/types.rs): 2 % is "2.0".
const targetName = (hrs, bp) => `fill_${hrs}h_${Number.isInteger(bp / 100) ? (bp / 100).toFixed(1) : bp / 100}pct`;
const buyAt = (low, bp) => Math.floor((low * (10000 - bp)) / 10000);
const sellAt = (high, bp) => Math.ceil((high * (10000 + bp)) / 10000);
// A cell colour from red (0) through amber to green (1).
const heat = (p) => `hsl(${Math.round(120 * Math.max(0, Math.min(1, p)))}, 60%, ${45 + 15 * (1 - p)}%)`;

async function api(path, init) {
  const r = await fetch("/api/v1/" + path, init);
  let body = null;
  try { body = await r.json(); } catch (_) { body = { error: `HTTP ${r.status}` }; }
  if (!r.ok) throw Object.assign(new Error(body.error || `HTTP ${r.status}`), { status: r.status, body });
  return body;
}

// One websocket for the app: the current page sets what it wants and gets
// every message; reconnects with backoff.
const Stream = {
  ws: null, want: null, offers: null, handlers: new Set(), backoff: 500,
  connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/stream");
    this.ws = ws;
    ws.onopen = () => { this.backoff = 500; this.send(); };
    ws.onmessage = (ev) => {
      let m; try { m = JSON.parse(ev.data); } catch (_) { return; }
      for (const f of this.handlers) f(m);
    };
    ws.onclose = () => { setTimeout(() => this.connect(), this.backoff); this.backoff = Math.min(this.backoff * 2, 15000); };
  },
  send() {
    if (!this.ws || this.ws.readyState !== 1) return;
    if (this.want) this.ws.send(JSON.stringify(Object.assign({ type: "subscribe" }, this.want)));
    if (this.offers) this.ws.send(JSON.stringify({ type: "offers", offers: this.offers }));
  },
  subscribe(want) { this.want = want; this.send(); },
  watchOffers(offers) { this.offers = offers; this.send(); },
  on(f) { this.handlers.add(f); return () => this.handlers.delete(f); },
};

// The header's live/stale chip, from /status; refreshed on ticks and every
// 15 s so a stopped feed shows as stale.
async function refreshLive() {
  const chip = $("#live");
  try {
    const s = await api("status");
    const age = s.data_age_seconds;
    const live = !s.stale;
    chip.className = live ? "ok" : "stale";
    chip.textContent = live ? `live · tick ${ago(age)} old` : `STALE · newest prices ${ago(age)} old`;
    return s;
  } catch (e) {
    chip.className = "stale";
    chip.textContent = "service unreachable";
  }
}

// ---------------------------------------------------------------- Flips
const OFFERS_KEY = "gept.offers";
const loadOffers = () => { try { return JSON.parse(localStorage.getItem(OFFERS_KEY)) || []; } catch (_) { return []; } };
const saveOffers = (o) => localStorage.setItem(OFFERS_KEY, JSON.stringify(o));

function flipsPage(root) {
  const saved = JSON.parse(localStorage.getItem("gept.flips") || "{}");
  const form = h("form", { id: "flips-form" },
    h("label", {}, "Capital (gp)", h("input", { name: "capital", type: "number", min: 1, value: saved.capital || 10000000 })),
    h("label", {}, "Risk", h("select", { name: "risk" }, ...["low", "medium", "high"].map((r) => h("option", { value: r }, r)))),
    h("label", {}, "Style", h("select", { name: "style" }, ...["active", "hybrid", "passive"].map((r) => h("option", { value: r }, r)))),
    h("label", {}, "Slots", h("input", { name: "slots", type: "number", min: 1, max: 8, value: saved.slots || 8 })),
    h("button", { type: "submit" }, "Show flips"));
  form.risk.value = saved.risk || "medium";
  form.style.value = saved.style || "hybrid";
  const info = h("div", { id: "flips-info", class: "muted" });
  const table = h("div", { id: "flips" });
  const offersBox = h("div", { id: "offers" });
  root.append(
    h("section", { class: "panel" }, h("h2", {}, "Flips"), form, info, table),
    h("section", { class: "panel" }, h("h2", {}, "My offers"), offerForm(), offersBox));
  const load = async () => {
    const q = new URLSearchParams(new FormData(form));
    localStorage.setItem("gept.flips", JSON.stringify(Object.fromEntries(q)));
    try {
      const a = await api("recommendations?" + q);
      info.textContent = `tick ${new Date(a.tick_time * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC · data ${ago(a.data_age_seconds)} old · model ${a.model_version}`;
      table.textContent = "";
      table.dataset.tick = a.tick_time;
      if (!a.recommendations.length) {
        table.append(h("div", { class: "message" }, a.message || "no recommendation"));
        return;
      }
      table.append(h("table", {},
        h("thead", {}, h("tr", {}, ...["Item", "Buy", "Sell", "Qty", "Expected profit", "Fill probability", "Within", "Tax/unit"].map((t, i) => h("th", { class: i === 7 ? "wide" : null }, t)))),
        h("tbody", {}, ...a.recommendations.map((r) => h("tr", { "data-item": r.item_id },
          h("td", {}, h("a", { href: `#/item/${r.item_id}` }, r.name)),
          h("td", {}, gp(r.buy_price)), h("td", {}, gp(r.sell_price)), h("td", {}, gp(r.quantity)),
          h("td", { class: "profit" }, gp(r.expected_profit)), h("td", {}, pct(r.fill_probability)),
          h("td", {}, r.expected_hours + " h"), h("td", { class: "wide" }, gp(r.tax_per_item)))))));
    } catch (e) {
      info.textContent = "";
      table.textContent = "";
      table.append(h("div", { class: "message error" }, e.message));
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  load();
  renderOffers(offersBox, loadOffers().map((o) => ({ offer: o })));
  Stream.subscribe({ items: null, horizons: [1], offsets: [1.25] });
  Stream.watchOffers(loadOffers());
  const off = Stream.on((m) => {
    if (m.type === "predictions" || m.type === "lagged") load();
    if (m.type === "offers") renderOffers(offersBox, m.offers.map((x, i) => ({ offer: loadOffers()[i], check: x.check, alert: x.alert, error: x.error })));
    if (m.type === "offer_alert") {
      const row = offersBox.querySelector(`[data-offer="${CSS.escape(m.id || "")}"] .alert`);
      if (row) row.textContent = `below ${pct(m.threshold)}: ${pct(m.probability)}; relist at ${gp(m.relist_price)}`;
    }
  });
  return () => { off(); Stream.watchOffers(null); };
}

function offerForm() {
  const f = h("form", { id: "offer-form" },
    h("label", {}, "Item", h("input", { name: "item", list: "item-names", required: "", placeholder: "name" })),
    h("label", {}, "Side", h("select", { name: "side" }, h("option", { value: "buy" }, "buy"), h("option", { value: "sell" }, "sell"))),
    h("label", {}, "Price", h("input", { name: "price", type: "number", min: 1, required: "" })),
    h("label", {}, "Quantity", h("input", { name: "quantity", type: "number", min: 1, value: 1 })),
    h("label", {}, "Hours", h("input", { name: "horizon_hours", type: "number", min: 1, max: 48, value: 4 })),
    h("label", {}, "Alert below", h("input", { name: "threshold", type: "number", step: "0.05", min: 0.05, max: 0.95, value: 0.3 })),
    h("button", { type: "submit" }, "Watch"), itemList());
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const items = await Items.all();
    const it = Items.find(items, f.item.value);
    if (!it) { alert("no item named like " + f.item.value); return; }
    const offers = loadOffers();
    offers.push({ id: "o" + Date.now(), item_id: it.item_id, side: f.side.value, price: +f.price.value, quantity: +f.quantity.value,
      placed_at: Math.floor(Date.now() / 1000), horizon_hours: +f.horizon_hours.value, threshold: +f.threshold.value });
    saveOffers(offers.slice(-8));
    Stream.watchOffers(loadOffers());
  });
  return f;
}

function renderOffers(box, rows) {
  box.textContent = "";
  if (!rows.length) { box.append(h("div", { class: "muted" }, "No offer watched. Add the offers you placed to be told when one should be relisted.")); return; }
  box.append(h("table", {},
    h("thead", {}, h("tr", {}, ...["Offer", "Side", "Price", "Qty", "Fill by deadline", "Relist at", "Alert", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, ...rows.filter((r) => r.offer).map((r) => h("tr", { "data-offer": r.offer.id },
      h("td", {}, r.check ? r.check.name || r.offer.item_id : r.offer.item_id), h("td", {}, r.offer.side), h("td", {}, gp(r.offer.price)), h("td", {}, gp(r.offer.quantity)),
      h("td", {}, r.check ? pct(r.check.deadline.probability) : r.error || "…"),
      h("td", {}, r.check ? gp(r.check.target.price) : "–"),
      h("td", { class: "alert" }, r.alert ? `below ${pct(r.alert.threshold)}` : ""),
      h("td", {}, h("button", { type: "button", onclick: () => { saveOffers(loadOffers().filter((o) => o.id !== r.offer.id)); Stream.watchOffers(loadOffers()); } }, "remove")))))));
}

// ---------------------------------------------------------------- Items
const Items = {
  list: null,
  async all() { if (!this.list) this.list = (await api("items")).items; return this.list; },
  find(items, q) {
    q = String(q).trim().toLowerCase();
    if (/^\d+$/.test(q)) return items.find((i) => i.item_id === +q);
    return items.find((i) => i.name.toLowerCase() === q) ||
      items.filter((i) => i.name.toLowerCase().includes(q)).sort((a, b) => a.name.length - b.name.length)[0];
  },
};
function itemList() {
  const dl = h("datalist", { id: "item-names" });
  Items.all().then((items) => { if (!dl.children.length) dl.append(...items.map((i) => h("option", { value: i.name }))); }).catch(() => {});
  return dl;
}

function itemPage(root, id) {
  const search = h("form", { id: "item-search" },
    h("label", {}, "Item", h("input", { name: "q", list: "item-names", placeholder: "search by name", value: "" })),
    h("button", { type: "submit" }, "Open"), itemList());
  search.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const it = Items.find(await Items.all(), search.q.value);
    if (it) location.hash = "#/item/" + it.item_id;
  });
  root.append(h("section", { class: "panel" }, search));
  if (!id) { root.append(h("div", { class: "message" }, "Search an item by name.")); return () => {}; }
  const facts = h("div", { class: "facts", id: "item-facts" });
  const chart = h("div", { id: "price-chart" });
  const steps = h("select", { id: "step" }, ...["1m", "5m", "1h"].map((s) => h("option", { value: s }, s)));
  steps.value = "1m";
  const surface = h("div", { id: "surface" });
  root.append(
    h("section", { class: "panel" }, h("h2", { id: "item-name" }, "Item " + id), facts),
    h("section", { class: "panel" }, h("h2", {}, "Price ", steps), chart),
    h("section", { class: "panel" }, h("h2", {}, "Fill probability (buy at the offset under the low, then sell at it over the high)"), surface));
  let market = null;
  const loadFacts = async () => {
    const it = await api("items/" + id);
    $("#item-name").textContent = `${it.name} (${it.item_id})`;
    market = it.latest;
    facts.textContent = "";
    const f = (k, v) => facts.append(h("div", {}, h("b", {}, k), v));
    f("Low (buy)", gp(it.latest && it.latest.low));
    f("High (sell)", gp(it.latest && it.latest.high));
    f("Buy limit / 4 h", gp(it.buy_limit));
    f("Volume last hour", gp(it.volume_1h));
    f("High alch", gp(it.highalch));
    f("Low alch", gp(it.lowalch));
    f("Members", it.members ? "yes" : "no");
  };
  const loadChart = async () => {
    const r = await api(`items/${id}/history?step=${steps.value}`);
    const hi = [], lo = [];
    for (const p of r.points) {
      const high = p.high ?? p.avg_high_price, low = p.low ?? p.avg_low_price;
      if (high) hi.push([p.timestamp, high]);
      if (low) lo.push([p.timestamp, low]);
    }
    Chart.line(chart, [{ name: "high", color: "#e3b341", points: hi }, { name: "low", color: "#58a6ff", points: lo }], { time: true, empty: "no history stored yet" });
  };
  const cells = new Map();
  const drawSurface = (probs) => {
    surface.textContent = "";
    const head = h("tr", {}, h("th", {}, "Within"), ...OFFSETS.map((bp) => h("th", {}, `${bp / 100}%`, h("br"),
      h("span", { class: "muted prices", "data-bp": bp }, ""))));
    const rows = HORIZONS.map((hr) => h("tr", {}, h("td", {}, hr + " h"), ...OFFSETS.map((bp) => {
      const t = targetName(hr, bp), p = probs[t];
      const c = h("td", { class: "cell", "data-target": t, style: `background:${heat(p || 0)}` }, pct(p));
      cells.set(t, c);
      return c;
    })));
    surface.append(h("table", {}, h("thead", {}, head), h("tbody", {}, ...rows)));
    showPrices();
  };
  // The buy → sell prices each offset means at the current market.
  const showPrices = () => {
    const low = market && market.low, high = market && market.high;
    for (const e of surface.querySelectorAll(".prices")) {
      const bp = +e.dataset.bp;
      e.textContent = low && high ? `${gp(buyAt(low, bp))} → ${gp(sellAt(high, bp))}` : "";
    }
  };
  const loadSurface = async () => {
    try {
      const p = await api("predictions/" + id);
      drawSurface(p.probabilities);
    } catch (e) { surface.textContent = ""; surface.append(h("div", { class: "message" }, e.message)); }
  };
  steps.addEventListener("change", loadChart);
  loadFacts().then(loadSurface).catch((e) => facts.append(h("div", { class: "message error" }, e.message)));
  loadChart().catch((e) => chart.append(h("div", { class: "message error" }, e.message)));
  let targets = [];
  Stream.subscribe({ items: [+id], horizons: null, offsets: null });
  const off = Stream.on((m) => {
    if (m.type === "subscribed") targets = m.targets;
    const preds = m.type === "predictions" ? m.predictions : m.type === "lagged" ? m.snapshot.predictions : null;
    if (!preds) return;
    const mine = preds.find((p) => p.item_id === +id);
    if (!mine) return;
    loadFacts().then(() => {
      if (!cells.size) return loadSurface();
      showPrices();
      mine.p.forEach((v, i) => {
        const c = cells.get(targets[i]);
        if (c) { const p = v / 10000; c.textContent = pct(p); c.style.background = heat(p); }
      });
    });
    if (steps.value === "1m") loadChart();
  });
  return off;
}

// ---------------------------------------------------------------- Accuracy
function accuracyPage(root) {
  const box = h("div", { id: "accuracy" });
  const bt = h("div", { id: "backtest" });
  root.append(h("section", { class: "panel" }, h("h2", {}, "Live accuracy"), box),
    h("section", { class: "panel" }, h("h2", {}, "Backtest of the serving model"), bt));
  api("backtest").then((b) => {
    const r = b.report;
    if (!r) { bt.append(h("div", { class: "message" }, b.message)); return; }
    const day = (t) => new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
    bt.append(h("div", { class: "muted" }, `Model ${b.model_version}: ${r.ticks} ticks from ${day(r.from)} to ${day(r.until)} UTC, simulated with the serving code beside the heuristics players use.`));
    for (const run of r.runs) {
      const s = run.settings;
      bt.append(h("h2", {}, `${gp(s.capital)} gp · ${s.risk} risk · ${s.style} · ${s.slots} slots`), h("table", {},
        h("thead", {}, h("tr", {}, ...["Strategy", "Profit", "ROI", "gp / slot-hour", "Fill rate", "Round trips", "Max drawdown", "Predicted / happened / completed"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...run.strategies.map((x) => h("tr", {},
          h("td", {}, x.strategy), h("td", {}, gp(x.profit)), h("td", {}, (x.roi * 100).toFixed(2) + "%"),
          h("td", {}, gp(x.profit_per_slot_hour)), h("td", {}, pct(x.fill_rate)), h("td", {}, x.completed),
          h("td", {}, pct(x.max_drawdown)),
          h("td", {}, x.calibration ? `${pct(x.calibration.mean_predicted)} / ${pct(x.calibration.labelled)} / ${pct(x.calibration.realised)}` : "–"))))));
    }
  }).catch((e) => bt.append(h("div", { class: "message" }, e.message)));
  const load = async () => {
    box.textContent = "";
    let r;
    try { r = await api("accuracy"); } catch (e) { box.append(h("div", { class: "message error" }, e.message)); return; }
    if (!r.enabled) { box.append(h("div", { class: "message" }, r.message)); return; }
    box.append(h("div", { class: "muted" }, `One predicted tick per ${r.sample_seconds / 60} min is followed until its outcome is known; figures over the last ${r.window_seconds / 3600} h, against the model's validation figures. ${r.open_rows} rows awaiting outcomes.`));
    if (!r.models.length) {
      box.append(h("div", { class: "message" }, "No outcome is known yet: the first labels arrive an hour after the first sampled tick."));
      return;
    }
    for (const m of r.models) {
      box.append(h("h2", {}, `Model ${m.version}${m.drift ? " · DRIFT" : ""}`), h("div", { class: "muted" }, `${m.rows} rows, ${m.items} items`));
      box.append(h("table", { class: "groups" },
        h("thead", {}, h("tr", {}, ...["Horizons", "Labels", "Brier", "Brier (validation)", "AUC", "AUC (validation)", "ECE", "Drift"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...m.groups.map((g) => h("tr", {},
          h("td", {}, g.group), h("td", {}, gp(g.labels)),
          h("td", {}, fmt(g.brier)), h("td", {}, fmt(g.validation && g.validation.brier)),
          h("td", {}, fmt(g.auc)), h("td", {}, fmt(g.validation && g.validation.auc)),
          h("td", {}, fmt(g.ece)), h("td", {}, g.drift ? "yes" : "no"))))));
      const colors = ["#e3b341", "#58a6ff", "#3fb950", "#f85149", "#bc8cff"];
      const c = h("div", { class: "reliability" });
      box.append(h("h2", {}, "Reliability (observed fill rate against predicted)"), c);
      Chart.line(c, m.groups.map((g, i) => ({ name: g.group, color: colors[i % colors.length], dots: true,
        points: g.reliability.filter((b) => b.n > 0 && b.mean_predicted !== null).map((b) => [b.mean_predicted, b.observed_rate]) })),
        { yMin: 0, yMax: 1, diagonal: true, xLabel: "predicted", height: 320, empty: "no labelled rows yet" });
    }
  };
  load();
  return () => {};
}
const fmt = (v) => (v === null || v === undefined ? "–" : v.toFixed(4));

// ---------------------------------------------------------------- Status
function statusPage(root) {
  const box = h("div", { id: "status" });
  root.append(h("section", { class: "panel" }, h("h2", {}, "Status"), box));
  const load = async () => {
    const s = await refreshLive();
    box.textContent = "";
    if (!s) { box.append(h("div", { class: "message error" }, "The service does not answer.")); return; }
    const f = (k, v) => h("div", {}, h("b", {}, k), v ?? "–");
    box.append(h("div", { class: "facts" },
      f("Data", s.stale ? "STALE" : "live"),
      f("Last tick", s.last_tick ? new Date(s.last_tick * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "none"),
      f("Newest prices", s.received_at ? "arrived " + ago(s.data_age_seconds) + " ago" : "none yet"),
      f("Model", s.model.version || "none active"),
      f("Device", s.model.device),
      f("Items predicted", gp(s.items_predicted)),
      f("Inference", s.model.last_latency_ms !== null && s.model.last_latency_ms !== undefined ? s.model.last_latency_ms.toFixed(1) + " ms" : "–"),
      f("Role", s.role)));
    if (s.model.message) box.append(h("div", { class: "message" }, s.model.message));
    box.append(h("h2", {}, "Collectors"), h("table", {},
      h("thead", {}, h("tr", {}, ...["Feed", "Last success", "Failures in a row", "Restarts", "Rows", "Last error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...s.collectors.map((c) => h("tr", {},
        h("td", {}, c.collector), h("td", {}, c.last_success ? ago(s.now - c.last_success) + " ago" : "never"),
        h("td", {}, c.consecutive_failures), h("td", {}, c.restarts), h("td", {}, gp(c.rows_written)), h("td", {}, c.last_error || ""))))));
    if (s.trainer) box.append(h("h2", {}, "Trainer"), h("pre", {}, JSON.stringify(s.trainer, null, 2)));
  };
  load();
  const off = Stream.on((m) => { if (m.type === "predictions") load(); });
  return off;
}

// ---------------------------------------------------------------- router
let leave = () => {};
function route() {
  leave();
  const [, page, arg] = (location.hash || "#/flips").split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  const root = $("#page");
  root.textContent = "";
  const pages = { flips: flipsPage, item: itemPage, accuracy: accuracyPage, status: statusPage };
  leave = (pages[page] || flipsPage)(root, arg) || (() => {});
}
window.addEventListener("hashchange", route);
Stream.on((m) => { if (m.type === "predictions") refreshLive(); });
Stream.connect();
refreshLive();
setInterval(refreshLive, 15000);
route();
