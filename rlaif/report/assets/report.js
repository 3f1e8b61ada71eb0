// The rlaif report page: curves, summary and trajectory browser, drawn from the JSON blocks of the page.
// Every piece of run data reaches the DOM as a text node or an attribute value (never innerHTML, never an href
// or src built from data): model text is untrusted. The view state lives in the URL hash
// (#task=add&status=ok&traj=12), so a view can be linked, reloaded, and driven by a headless browser.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PAGE_ROWS = 50;
  const FILTERS = ["task", "status", "dropped", "version", "rmin", "rmax", "sort"];
  const meta = JSON.parse(document.getElementById("rlaif-meta").textContent);
  const index = JSON.parse(document.getElementById("rlaif-index").textContent);
  const F = Object.fromEntries(meta.index_fields.map((name, n) => [name, n]));
  const blocks = new Map();
  const app = document.getElementById("app");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const fmt = (v) => v === null || v === undefined ? "-" : typeof v === "number" ?
    (Number.isInteger(v) ? String(v) : Math.abs(v) >= 1000 || Math.abs(v) < 0.001 && v !== 0 ? v.toExponential(2) :
      v.toFixed(3)) : String(v);
  const json = (v) => JSON.stringify(v, null, 2);

  // ---- view state -------------------------------------------------------------------------------------------
  function state() {
    const params = new URLSearchParams(location.hash.slice(1));
    const s = {};
    for (const key of [...FILTERS, "page", "traj", "group"]) s[key] = params.get(key) || "";
    return s;
  }

  function go(changes) {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const [key, value] of Object.entries(changes)) {
      if (value === "" || value === null || value === undefined) params.delete(key); else params.set(key, value);
    }
    location.hash = params.toString();
  }

  // A block of full trajectories is parsed the first time one of its rows is shown.
  function trajectory(i) {
    const b = Math.floor(i / meta.block_size);
    if (!blocks.has(b)) {
      const node = document.getElementById("rlaif-block-" + b);
      if (!node) return undefined;
      blocks.set(b, JSON.parse(node.textContent));
      document.documentElement.dataset.parsedBlocks = String(blocks.size);
    }
    return blocks.get(b)[i - b * meta.block_size];
  }

  // ---- curves -----------------------------------------------------------------------------------------------
  function chart(key, points) {
    const W = 300, H = 150, L = 48, R = 10, T = 24, B = 22;
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
    const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const root = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, "data-key": key,
      "data-points": points.length});
    root.append(svg("text", {x: 4, y: 15, class: "chart-title"}, key));
    const last = points[points.length - 1];
    root.append(svg("text", {x: W - 4, y: 15, class: "chart-last", "text-anchor": "end"}, fmt(last[1])));
    root.append(svg("rect", {x: L, y: T, width: W - L - R, height: H - T - B, class: "chart-frame"}));
    root.append(svg("text", {x: L - 4, y: T + 8, class: "tick", "text-anchor": "end"}, fmt(y1)));
    root.append(svg("text", {x: L - 4, y: H - B, class: "tick", "text-anchor": "end"}, fmt(y0)));
    root.append(svg("text", {x: L, y: H - 6, class: "tick"}, fmt(x0)));
    root.append(svg("text", {x: W - R, y: H - 6, class: "tick", "text-anchor": "end"}, fmt(x1)));
    const d = points.map((p, n) => (n ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join("");
    root.append(svg("path", {d, class: "line"}));
    if (points.length === 1) root.append(svg("circle", {cx: X(last[0]), cy: Y(last[1]), r: 3, class: "dot"}));
    const marker = svg("circle", {r: 3, class: "marker", visibility: "hidden"});
    const readout = svg("text", {x: L + 4, y: T + 12, class: "readout"});
    root.append(marker, readout);
    root.addEventListener("mousemove", (event) => {
      const box = root.getBoundingClientRect();
      const x = x0 + ((event.clientX - box.left) * W / box.width - L) / (W - L - R) * (x1 - x0);
      let best = points[0];
      for (const p of points) if (Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
      marker.setAttribute("cx", X(best[0]));
      marker.setAttribute("cy", Y(best[1]));
      marker.setAttribute("visibility", "visible");
      readout.textContent = `step ${best[0]}: ${fmt(best[1])}`;
    });
    root.addEventListener("mouseleave", () => {
      marker.setAttribute("visibility", "hidden");
      readout.textContent = "";
    });
    return root;
  }

  function curves() {
    const keys = Object.keys(meta.series);
    if (!keys.length) return null;
    const families = el("div", {class: "families"});
    let family = null, row = null;
    for (const key of keys) {
      const name = key.startsWith("probe/") ? "held-out probe" : key.split("/")[0];
      if (name !== family) {
        family = name;
        row = el("div", {class: "charts"});
        families.append(el("div", {class: "family", "data-family": name}, el("h3", {}, name), row));
      }
      row.append(chart(key, meta.series[key]));
    }
    return el("section", {id: "curves"}, el("h2", {}, "Curves"), families);
  }

  function summary() {
    if (!meta.summary) return null;
    const table = el("table", {class: "kv"});
    for (const [key, value] of Object.entries(meta.summary)) {
      const shown = value !== null && typeof value === "object" ? el("pre", {}, json(value)) : fmt(value);
      table.append(el("tr", {}, el("th", {}, key), el("td", {}, shown)));
    }
    return el("section", {id: "summary"}, el("h2", {}, "Summary"), table);
  }

  // ---- trajectory list --------------------------------------------------------------------------------------
  const distinct = (field) => [...new Set(index.map((row) => row[field]))]
    .filter((v) => v !== null && v !== "").sort((a, b) => a < b ? -1 : a > b ? 1 : 0);

  function filterForm() {
    const form = el("form", {id: "filters"});
    const input = (name, label, attrs) => {
      const node = el("input", {name, id: "f-" + name, ...attrs});
      form.append(el("label", {for: "f-" + name}, label, node));
    };
    const select = (name, label, options) => {
      const node = el("select", {name, id: "f-" + name}, el("option", {value: ""}, "all"));
      for (const [value, text] of options) node.append(el("option", {value}, text));
      form.append(el("label", {for: "f-" + name}, label, node));
    };
    input("task", "task contains", {type: "search", size: 16});
    select("status", "status", distinct(F.kind).map((v) => [v, v]));
    if (meta.kind === "train") {
      select("dropped", "dropped", [["-", "not dropped"], ...distinct(F.dropped).map((v) => [v, v])]);
    }
    select("version", meta.kind === "train" ? "weight version" : "version",
      distinct(F.weight_version).map((v) => [String(v), String(v)]));
    input("rmin", "reward ≥", {type: "number", step: "any", size: 6});
    input("rmax", "reward ≤", {type: "number", step: "any", size: 6});
    select("sort", "order", [["reward", "reward ascending"], ["-reward", "reward descending"]]);
    form.addEventListener("input", () => {
      const changes = {page: ""};
      for (const name of FILTERS) if (form.elements[name]) changes[name] = form.elements[name].value.trim();
      go(changes);
    });
    form.addEventListener("submit", (event) => event.preventDefault());
    return form;
  }

  function matches(row, s) {
    if (s.task && !String(row[F.task_id]).toLowerCase().includes(s.task.toLowerCase())) return false;
    if (s.status && row[F.kind] !== s.status) return false;
    if (s.dropped && (row[F.dropped] || "-") !== s.dropped) return false;
    if (s.version && String(row[F.weight_version]) !== s.version) return false;
    const total = row[F.total];
    if (s.rmin !== "" && !(total !== null && total >= Number(s.rmin))) return false;
    if (s.rmax !== "" && !(total !== null && total <= Number(s.rmax))) return false;
    return true;
  }

  function list(s) {
    const rows = index.filter((row) => matches(row, s));
    if (s.sort) {
      const sign = s.sort.startsWith("-") ? -1 : 1;
      const key = (row) => row[F.total] === null ? -Infinity : row[F.total];
      rows.sort((a, b) => sign * (key(a) - key(b)));
    }
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    const page = Math.min(pages, Math.max(1, Number(s.page) || 1));
    const body = el("tbody");
    for (const row of rows.slice((page - 1) * PAGE_ROWS, page * PAGE_ROWS)) {
      const tr = el("tr", {class: "traj-row" + (String(row[F.i]) === s.traj ? " selected" : ""), "data-i": row[F.i]},
        el("td", {}, row[F.id]), el("td", {}, fmt(row[F.weight_version])), el("td", {}, row[F.task_id]),
        el("td", {class: "num"}, fmt(row[F.total])), el("td", {class: "kind-" + row[F.kind]}, row[F.kind]),
        meta.kind === "train" ? el("td", {}, row[F.dropped] || "") : null,
        meta.kind === "train" ? el("td", {class: "num"}, fmt(row[F.staleness])) : null,
        el("td", {}, el("button", {type: "button", class: "group-link", "data-group": row[F.group]}, "group")));
      body.append(tr);
    }
    body.addEventListener("click", (event) => {
      const button = event.target.closest("button.group-link");
      if (button) return go({group: button.dataset.group, traj: ""});
      const tr = event.target.closest("tr.traj-row");
      if (tr) go({traj: tr.dataset.i, group: ""});
    });
    const head = el("tr", {}, ...["id", "version", "task", "reward", "status",
      ...(meta.kind === "train" ? ["dropped", "staleness"] : []), ""].map((h) => el("th", {}, h)));
    const pager = el("nav", {id: "pager"},
      el("button", {type: "button", id: "prev", ...(page <= 1 ? {disabled: ""} : {})}, "‹ previous"),
      ` page ${page} of ${pages} `,
      el("button", {type: "button", id: "next", ...(page >= pages ? {disabled: ""} : {})}, "next ›"));
    pager.querySelector("#prev").addEventListener("click", () => go({page: page - 1}));
    pager.querySelector("#next").addEventListener("click", () => go({page: page + 1}));
    return el("div", {id: "list"},
      el("p", {id: "count", "data-count": rows.length, "data-total": index.length},
        `${rows.length} of ${index.length} trajectories`),
      el("table", {class: "rows"}, el("thead", {}, head), body), pager);
  }

  // ---- one trajectory ---------------------------------------------------------------------------------------
  function messages(items) {
    const box = el("div", {class: "messages"});
    for (const m of items) {
      const node = el("div", {class: "msg role-" + m.role},
        el("div", {class: "role"}, m.role, m.tool_call_id ? ` (answers ${m.tool_call_id})` : ""),
        el("pre", {class: "content"}, m.content || ""));
      for (const call of m.tool_calls || []) {
        node.append(el("div", {class: "tool-call"}, `→ ${call.name} [${call.id}] `,
          el("pre", {}, typeof call.arguments === "string" ? call.arguments : json(call.arguments))));
      }
      box.append(node);
    }
    return box;
  }

  function tools(records) {
    if (!records.length) return null;
    const table = el("table", {class: "tools"}, el("tr", {}, ...["call", "arguments", "status", "seconds", "output"]
      .map((h) => el("th", {}, h))));
    for (const r of records) {
      table.append(el("tr", {}, el("td", {}, r.call.name), el("td", {}, el("pre", {}, json(r.call.arguments))),
        el("td", {}, r.status), el("td", {class: "num"}, fmt(r.duration_s)), el("td", {}, el("pre", {}, r.output))));
    }
    return el("section", {}, el("h4", {}, "Tool executions"), table);
  }

  // Graders' details: test results, logs, judge reasoning and cost get their own view; the rest is shown as JSON.
  function details(value, title) {
    const box = el("div", {class: "details"}, el("h5", {}, title));
    const rest = {};
    for (const [key, v] of Object.entries(value)) {
      if (key === "tests" && v && typeof v === "object" && Object.values(v).every((x) => typeof x !== "object")) {
        const table = el("table", {class: "tests"});
        for (const [test, outcome] of Object.entries(v)) {
          const text = typeof outcome === "string" ? outcome : json(outcome);
          table.append(el("tr", {}, el("td", {}, test), el("td", {class: "outcome-" + text.split(" ")[0]}, text)));
        }
        box.append(el("h6", {}, "tests"), table);
      } else if (key === "log" || key === "stderr" || key === "stdout") {
        box.append(el("h6", {}, key === "log" ? "grader log" : key), el("pre", {class: "log"}, String(v)));
      } else if (key === "reason") {
        box.append(el("h6", {}, "judge reasoning"), el("pre", {class: "reason"}, String(v)));
      } else if (key === "usage" && v && typeof v === "object") {
        box.append(el("p", {class: "cost"}, `judge cost: ${fmt(v.cost_usd)} USD, ${fmt(v.input_tokens)} input and ` +
          `${fmt(v.output_tokens)} output tokens`));
      } else if (v && typeof v === "object" && !Array.isArray(v)) {
        box.append(details(v, title + " / " + key));
      } else {
        rest[key] = v;
      }
    }
    if (Object.keys(rest).length) box.append(el("pre", {class: "rest"}, json(rest)));
    return box;
  }

  function facts(t) {
    const dl = el("dl", {class: "facts"});
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", {}, k), el("dd", {}, v)); };
    add("task", t.task_id);
    add("group", t.group);
    add("weight version", t.weight_version);
    add("trained at step", t.trained_step);
    add("staleness", t.staleness);
    add("status", t.status);
    add("ended as", t.kind);
    add("dropped", t.dropped);
    add("error", t.error);
    add("turns", t.turns);
    add("completion tokens", t.completion_tokens);
    for (const [phase, s] of Object.entries(t.timings || {})) add(phase + " s", fmt(s));
    const r = t.reward;
    if (r) {
      add("reward", fmt(r.total));
      add("reward status", r.status);
      for (const [name, v] of Object.entries(r.components || {})) add("reward/" + name, fmt(v));
    }
    return dl;
  }

  function detail(i) {
    const t = trajectory(i);
    if (!t) return el("section", {id: "detail"}, el("p", {}, `no trajectory ${i}`));
    const section = el("section", {id: "detail", "data-i": i},
      el("h2", {}, "Trajectory ", t.id, " ",
        el("button", {type: "button", class: "close"}, "close")), facts(t), messages(t.messages || []));
    const toolView = tools(t.tools || []);
    if (toolView) section.append(toolView);
    if (t.reward && t.reward.details && Object.keys(t.reward.details).length) {
      section.append(details(t.reward.details, "reward details"));
    }
    section.querySelector("button.close").addEventListener("click", () => go({traj: ""}));
    return section;
  }

  // All answers of one group side by side; the prompt (what comes before the first answer) shown once.
  function group(key) {
    const members = index.filter((row) => String(row[F.group]) === key).map((row) => trajectory(row[F.i]));
    const section = el("section", {id: "group", "data-group": key, "data-size": members.length},
      el("h2", {}, `Group ${key} (${members.length} answers) `, el("button", {type: "button", class: "close"}, "close")));
    section.querySelector("button.close").addEventListener("click", () => go({group: ""}));
    if (!members.length) return section;
    const start = (t) => { const n = t.messages.findIndex((m) => m.role === "assistant"); return n < 0 ? t.messages.length : n; };
    section.append(el("h4", {}, "prompt"), messages(members[0].messages.slice(0, start(members[0]))));
    const columns = el("div", {class: "columns"});
    for (const t of members) {
      const r = t.reward || {};
      const column = el("div", {class: "answer", "data-i": t.i},
        el("h4", {}, t.id), el("p", {class: "answer-facts"}, `reward ${fmt(r.total)} · ${t.kind} · version ` +
          `${fmt(t.weight_version)}` + (t.dropped ? ` · dropped: ${t.dropped}` : "")),
        messages(t.messages.slice(start(t))));
      column.querySelector("h4").addEventListener("click", () => go({traj: String(t.i), group: ""}));
      columns.append(column);
    }
    section.append(columns);
    return section;
  }

  // ---- the page ---------------------------------------------------------------------------------------------
  const form = filterForm();
  const view = el("div", {id: "view"});
  app.replaceChildren(
    el("header", {}, el("h1", {}, meta.name),
      el("p", {class: "sub"}, `${meta.kind} run · ${meta.count} trajectories · report generated ${meta.generated}`)),
    curves() || "", summary() || "",
    el("section", {id: "browser"}, el("h2", {}, "Trajectories"), form, view));

  function show() {
    const s = state();
    for (const name of FILTERS) {
      const field = form.elements[name];
      if (field && field.value !== s[name] && document.activeElement !== field) field.value = s[name];
    }
    const parts = [];
    if (s.group) parts.push(group(s.group));
    if (s.traj !== "" && Number.isInteger(Number(s.traj))) parts.push(detail(Number(s.traj)));
    parts.push(list(s));
    view.replaceChildren(...parts);
  }

  window.addEventListener("hashchange", show);
  show();
  document.documentElement.dataset.readyMs = String(Math.round(performance.now()));

  // Served by `rlaif report --serve`: reload when the server's report is newer. From a file, or from a server
  // without the version endpoint, nothing is polled.
  function poll() {
    fetch("version", {cache: "no-store"})
      .then((reply) => reply.ok ? reply.text() : Promise.reject(new Error(String(reply.status))))
      .then((version) => version === meta.version ? setTimeout(poll, 2000) : location.reload())
      .catch(() => {});
  }
  if (location.protocol === "http:" || location.protocol === "https:") poll();
})();
