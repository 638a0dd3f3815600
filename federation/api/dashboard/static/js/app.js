// The continuum dashboard: one page, views by URL fragment, every figure from /api/v1.

import { api, ApiError, follow, whenUnauthenticated } from "./api.js";
import {
  finishKeycloakLogin, forget, loadConfig, setToken, startKeycloakLogin, token, tokenFromFragment,
} from "./auth.js";
import { barChart, colours, fmt, forecastChart, ganttChart, legend, PALETTE } from "./charts.js";

// ---------------------------------------------------------------- small DOM helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const $ = (sel, root = document) => root.querySelector(sel);

/** Replace the children of `node`, leaving out null, undefined and false. */
function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
const badge = (state) => h("span", { class: `badge ${state}` }, state);

function table(columns, rows, { rowAttrs } = {}) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.label)))),
    h("tbody", {}, rows.map((r, i) => h("tr", rowAttrs ? rowAttrs(r, i) : {},
      columns.map((c) => h("td", { class: c.num ? "num" : (c.wrap ? "wrap" : "") }, c.value(r, i)))))));
}

function flash(message, kind = "error") {
  const box = $("#flash");
  const msg = h("div", { class: `msg ${kind}` }, message);
  put(box, msg);
  if (kind !== "error") setTimeout(() => msg.remove(), 6000);
}

function clearFlash() {
  $("#flash").replaceChildren();
}

const seconds = (s) => {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${fmt(s)} s`;
  if (s < 7200) return `${fmt(s / 60)} min`;
  return `${fmt(s / 3600)} h`;
};
const bytes = (n) => {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${fmt(n)} ${units[i]}`;
};
const when = (unix) => (unix ? new Date(unix * 1000).toLocaleTimeString("en-GB") : "–");

function metric(label, value) {
  return h("div", { class: "metric" }, h("div", { class: "v" }, value), h("div", { class: "k" }, label));
}

async function readFile(file) {
  const text = await file.text();
  if (/\.ya?ml$/i.test(file.name)) return window.jsyaml.load(text);
  return JSON.parse(text);
}

// ---------------------------------------------------------------- session state

const session = { config: null, me: null, projects: [], project: null };

function currentProject() {
  return session.project;
}

async function loadIdentity() {
  session.me = await api("/me");
  session.projects = await api("/projects");
  const saved = sessionStorage.getItem("continuum.project");
  const ids = session.projects.map((p) => p.id);
  session.project = ids.includes(saved) ? saved : (ids[0] || null);
  const pick = $("#project");
  put(pick, ...session.projects.map((p) => h("option", { value: p.id }, p.id)));
  if (session.project) pick.value = session.project;
  $("#project-pick").hidden = !session.projects.length;
  $("#identity").textContent = `${session.me.subject} (${session.me.roles.join(", ") || "no role"})`;
  $("#logout").hidden = false;
  $("#nav").hidden = false;
}

// ---------------------------------------------------------------- views

let stopView = () => {};

const views = [
  [/^#\/?$/, federationView],
  [/^#\/sites\/([^/?]+)$/, siteView],
  [/^#\/workflows$/, workflowsView],
  [/^#\/plan\?(.*)$/, newPlanView],
  [/^#\/plans$/, plansView],
  [/^#\/plans\/([0-9a-f-]+)$/, planView],
  [/^#\/runs\/([0-9a-f]+)$/, runView],
  [/^#\/simulations$/, simulationsView],
  [/^#\/simulations\/([0-9a-f-]+)$/, simulationView],
];

async function route() {
  stopView();
  stopView = () => {};
  clearFlash();
  const main = $("#view");
  if (!token()) {
    loginView(main);
    return;
  }
  if (!session.me) {
    try {
      await loadIdentity();
    } catch (err) {
      if (!token()) return loginView(main);
      put(main, h("p", { class: "error" }, `cannot reach the API: ${err.message}`));
      return;
    }
  }
  const hash = location.hash || "#/";
  for (const a of document.querySelectorAll("#nav a[data-nav]")) {
    const name = a.dataset.nav;
    const active = (name === "federation" && (hash === "#/" || hash.startsWith("#/sites")))
      || (name !== "federation" && hash.startsWith(`#/${name}`))
      || (name === "plans" && (hash.startsWith("#/plan") || hash.startsWith("#/runs")));
    a.classList.toggle("active", active);
  }
  for (const [pattern, view] of views) {
    const m = pattern.exec(hash);
    if (m) {
      put(main, h("p", { class: "muted" }, "Loading…"));
      const controller = new AbortController();
      const timers = [];
      stopView = () => {
        controller.abort();
        timers.forEach(clearInterval);
      };
      try {
        await view(main, { args: m.slice(1), signal: controller.signal, every: (fn, ms) => timers.push(setInterval(fn, ms)) });
      } catch (err) {
        if (err.name === "AbortError") return;
        put(main, h("p", {}, h("strong", {}, "error: "), err.message));
      }
      return;
    }
  }
  put(main, h("p", {}, "No such page. ", h("a", { href: "#/" }, "Back to the federation")));
}

function loginView(main) {
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#project-pick").hidden = true;
  $("#identity").textContent = "";
  const cfg = session.config;
  if (cfg.mode === "keycloak") {
    put(main, h("div", { class: "card login" },
      h("h1", {}, "Log in"),
      h("p", {}, "This federation's service uses its Keycloak realm. You will come back here once logged in."),
      h("button", { id: "login-keycloak", onclick: () => startKeycloakLogin(cfg.keycloak).catch((e) => flash(e.message)) },
        "Log in with Keycloak")));
    return;
  }
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "the token printed by continuum serve" });
  put(main, h("form", {
    class: "card login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      setToken(input.value.trim());
      session.me = null;
      try {
        await loadIdentity();
        route();
      } catch (err) {
        forget();
        flash(err instanceof ApiError && err.status === 401 ? "this token is not the service's: copy the one `continuum serve` printed" : err.message);
      }
    },
  },
  h("h1", {}, "Log in"),
  h("p", {}, "Local mode: paste the admin token that ", h("code", {}, "continuum serve"), " printed when it started."),
  h("label", {}, "token", input),
  h("p", {}, h("button", { type: "submit", id: "login-local" }, "Log in"))));
  input.focus();
}

// -- the federation: sites, links, status and forecasts from the twin

async function federationView(main, { signal, every }) {
  const [fed, states] = await Promise.all([api("/federation", { signal }), api("/twin/states", { signal })]);
  const statusBox = h("div");
  const forecasts = h("div", { class: "grid three" });
  const draw = (st) => {
    put(statusBox, table([
      { label: "site", value: (s) => h("a", { href: `#/sites/${s.id}` }, s.id) },
      { label: "kind", value: (s) => s.kind },
      { label: "jurisdiction", value: (s) => s.jurisdiction },
      { label: "cores", num: true, value: (s) => s.cores },
      { label: "status", value: (s) => badge(st[s.id] ? st[s.id].status : "unknown") },
      { label: "health", num: true, value: (s) => (st[s.id] ? fmt(st[s.id].health, 2) : "–") },
      { label: "free cores now", num: true, value: (s) => (st[s.id] ? `${fmt(st[s.id].available_cores.mean[0])} ± ${fmt(st[s.id].available_cores.std[0], 2)}` : "–") },
      { label: "expected wait", num: true, value: (s) => (st[s.id] ? seconds(st[s.id].expected_wait_s) : "–") },
      { label: "EUR / core-h", num: true, value: (s) => fmt(s.price_per_core_hour) },
      { label: "gCO2e / kWh", num: true, value: (s) => fmt(s.carbon_intensity_g_per_kwh) },
    ], fed.sites));
    const colour = colours(fed.sites.map((s) => s.id));
    put(forecasts, ...[
      ["available_cores", "free cores", "cores"],
      ["power_price", "power price", "EUR/kWh"],
      ["carbon_intensity", "carbon intensity", "gCO2e/kWh"],
    ].map(([key, label, unit]) => {
      const box = h("div", { class: "chart" });
      const series = fed.sites.filter((s) => st[s.id] && st[s.id][key]).map((s) => {
        const f = st[s.id][key];
        const slot = st[s.id].slot_seconds / 3600;
        return { label: s.id, color: colour[s.id], x: f.mean.map((_, k) => k * slot), mean: f.mean, std: f.std };
      });
      forecastChart(box, { series, xLabel: "hours ahead", yLabel: unit, yMin: 0 });
      return h("div", { class: "card" }, h("h3", {}, `${label} (${unit})`, h("span", { class: "muted small" }, " — mean and ±2 sd band")),
        box, legend(series.map((s) => [s.label, s.color])));
    }));
  };
  put(main, 
    h("h1", {}, `Federation ${fed.name}`),
    fed.description ? h("p", { class: "muted" }, fed.description) : null,
    h("div", { class: "card", id: "sites" }, h("h2", {}, "Sites"), statusBox),
    h("h2", {}, "Forecasts of the twin"),
    forecasts,
    h("div", { class: "grid two" },
      h("div", { class: "card", id: "links" }, h("h2", {}, "Links"), table([
        { label: "from", value: (l) => l.src },
        { label: "to", value: (l) => l.dst },
        { label: "bandwidth", num: true, value: (l) => `${bytes(l.bandwidth)}/s` },
        { label: "latency", num: true, value: (l) => `${fmt(l.latency * 1000)} ms` },
        { label: "EUR / GB", num: true, value: (l) => fmt(l.cost_per_gb) },
      ], fed.links)),
      h("div", { class: "card", id: "projects" }, h("h2", {}, "Projects"), table([
        { label: "project", value: (p) => p.id },
        { label: "organisation", value: (p) => p.organisation },
        { label: "may use", wrap: true, value: (p) => (p.sites ? p.sites.join(", ") : "every site") },
      ], session.projects))));
  draw(states);
  every(async () => {
    try { draw(await api("/twin/states", { signal })); } catch (e) { if (e.name !== "AbortError") flash(e.message); }
  }, 10000);
}

async function siteView(main, { args: [siteId], signal }) {
  const [site, state] = await Promise.all([api(`/sites/${siteId}`, { signal }), api(`/twin/states/${siteId}`, { signal })]);
  const slot = state.slot_seconds / 3600;
  const chart = (key, label, unit) => {
    const box = h("div", { class: "chart" });
    const f = state[key];
    if (!f) return h("div", { class: "card" }, h("h3", {}, label), h("p", { class: "muted" }, "withheld by the site's disclosure policy"));
    forecastChart(box, {
      series: [{ label, color: PALETTE[0], x: f.mean.map((_, k) => k * slot), mean: f.mean, std: f.std }],
      xLabel: "hours ahead", yLabel: unit, width: 620, height: 230, yMin: 0,
    });
    return h("div", { class: "card" }, h("h3", {}, `${label} (${unit})`, h("span", { class: "muted small" }, " — mean and ±2 sd band")), box);
  };
  put(main, 
    h("h1", {}, `Site ${site.id} `, badge(state.status)),
    h("div", { class: "metrics" },
      metric("kind", site.kind), metric("cores", site.cores), metric("health", fmt(state.health, 2)),
      metric("expected wait", seconds(state.expected_wait_s)), metric("jurisdiction", site.jurisdiction),
      metric("forecast issued", new Date(state.issued_at * 1000).toLocaleString())),
    h("div", { class: "grid two" },
      chart("available_cores", "free cores", "cores"), chart("power_price", "power price", "EUR/kWh"),
      chart("carbon_intensity", "carbon intensity", "gCO2e/kWh")));
}

// -- workflows: submit, list, plan

async function workflowsView(main, { signal }) {
  const project = currentProject();
  if (!project) {
    put(main, h("p", {}, "You may read no project of this federation."));
    return;
  }
  const list = await api(`/projects/${project}/workflows`, { signal });
  const wfFile = h("input", { type: "file", name: "workflow", accept: ".json,.yaml,.yml", required: true });
  const dmpFile = h("input", { type: "file", name: "madpp", accept: ".json,.yaml,.yml" });
  const form = h("form", {
    class: "inline",
    id: "submit-workflow",
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const body = { workflow: await readFile(wfFile.files[0]) };
        if (dmpFile.files.length) body.madpp = await readFile(dmpFile.files[0]);
        const wf = await api(`/projects/${project}/workflows`, { method: "POST", body });
        flash(`workflow ${wf.name} stored (${wf.summary.tasks} steps)`, "info");
        location.hash = `#/plan?workflow=${wf.id}`;
      } catch (err) {
        flash(err.message);
      }
    },
  },
  h("label", {}, "workflow (native YAML/JSON or WfCommons WfFormat)", wfFile),
  h("label", {}, "data project plan (maDMP 1.2, optional)", dmpFile),
  h("button", { type: "submit" }, "Submit"));
  put(main, 
    h("h1", {}, `Workflows of ${project}`),
    h("div", { class: "card" }, h("h2", {}, "Submit a workflow"), form),
    h("div", { class: "card", id: "workflows" }, h("h2", {}, "Stored workflows"), list.length ? table([
      { label: "name", value: (w) => w.name },
      { label: "format", value: (w) => w.format },
      { label: "steps", num: true, value: (w) => w.summary.tasks },
      { label: "critical path", num: true, value: (w) => seconds(w.summary.critical_path_s) },
      { label: "data plan", value: (w) => (w.madpp_id ? "yes" : "–") },
      { label: "submitted", value: (w) => `${new Date(w.created_at).toLocaleString()} by ${w.submitted_by}` },
      { label: "", value: (w) => h("a", { href: `#/plan?workflow=${w.id}` }, "plan…") },
    ], list) : h("p", { class: "muted" }, "none yet")));
}

async function newPlanView(main, { args: [query], signal }) {
  const params = new URLSearchParams(query);
  const wf = await api(`/workflows/${params.get("workflow")}`, { signal });
  const field = (name, node) => h("label", {}, name, node);
  const planner = h("select", { name: "planner" }, ["ilp", "heft", "greedy", "market"].map((p) => h("option", { value: p }, p)));
  const objective = h("select", { name: "objective" }, ["weighted", "time", "cost", "energy", "carbon"].map((o) => h("option", { value: o }, o)));
  const deadline = h("input", { name: "deadline", type: "number", min: 0, step: "any", placeholder: "none" });
  const budget = h("input", { name: "budget", type: "number", min: 0, step: "any", placeholder: "none" });
  const limit = h("input", { name: "time_limit", type: "number", min: 1, max: 600, step: "any", placeholder: "auto (20-60 s by size)" });
  const compareBox = h("div", { id: "compare" });
  const request = () => {
    const body = { workflow_id: wf.id, objective: objective.value };
    if (limit.value) body.time_limit_s = Number(limit.value);
    if (deadline.value) body.deadline_s = Number(deadline.value);
    if (budget.value) body.budget_eur = Number(budget.value);
    return body;
  };
  const compareButton = h("button", {
    type: "button", class: "secondary", id: "compare-planners",
    onclick: async () => {
      compareButton.disabled = true;
      put(compareBox, h("p", { class: "muted" }, "planning with every planner…"));
      try {
        const out = await api(`/projects/${wf.project}/plans/compare`, { method: "POST", body: request() });
        drawComparison(compareBox, out);
      } catch (err) {
        put(compareBox);
        flash(err.message);
      } finally {
        compareButton.disabled = false;
      }
    },
  }, "Compare planners");
  const form = h("form", {
    class: "inline",
    id: "plan-form",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const button = $("button[type=submit]", form);
      button.disabled = true;
      try {
        const plan = await api(`/projects/${wf.project}/plans`, { method: "POST", body: { ...request(), planner: planner.value } });
        location.hash = `#/plans/${plan.id}`;
      } catch (err) {
        flash(err.message);
        button.disabled = false;
      }
    },
  },
  field("planner", planner), field("objective", objective), field("deadline (s)", deadline),
  field("budget (EUR)", budget), field("optimiser time limit (s)", limit),
  h("button", { type: "submit" }, "Preview plan"), compareButton);
  put(main, 
    h("h1", {}, `Plan ${wf.name}`),
    h("p", { class: "muted" }, `${wf.summary.tasks} steps in project ${wf.project}; the plan is a preview until approved.`),
    h("div", { class: "card" }, form),
    compareBox);
}

function drawComparison(box, out) {
  const names = Object.keys(out);
  const figures = [
    ["makespan_s", "makespan (s)"], ["cost_eur", "cost (EUR)"],
    ["energy_kwh", "energy (kWh)"], ["carbon_kg", "carbon (kgCO2e)"], ["wall_s", "planning time (s)"],
  ];
  const charts = figures.map(([key, label]) => {
    const c = h("div", { class: "chart" });
    barChart(c, { categories: names, series: [{ label, color: PALETTE[0], values: names.map((n) => out[n][key]) }], yLabel: label, width: 330, height: 190 });
    return h("div", { class: "card" }, h("h3", {}, label), c);
  });
  put(box, h("div", { class: "card" }, h("h2", {}, "Planners compared on the same inputs"), table([
    { label: "planner", value: (n) => n },
    { label: "makespan", num: true, value: (n) => seconds(out[n].makespan_s) },
    { label: "cost EUR", num: true, value: (n) => fmt(out[n].cost_eur) },
    { label: "energy kWh", num: true, value: (n) => fmt(out[n].energy_kwh) },
    { label: "carbon kgCO2e", num: true, value: (n) => fmt(out[n].carbon_kg) },
    { label: "moved", num: true, value: (n) => bytes(out[n].bytes_moved) },
    { label: "status", value: (n) => out[n].status },
    { label: "planning time", num: true, value: (n) => seconds(out[n].wall_s) },
  ], names)), h("div", { class: "grid three" }, charts));
}

// -- plans: preview, approve within a budget, run

async function plansView(main, { signal, every }) {
  const project = currentProject();
  if (!project) {
    put(main, h("p", {}, "You may read no project of this federation."));
    return;
  }
  const box = h("div", { class: "card", id: "plans" });
  const draw = (plans) => put(box, h("h2", {}, "Plans and their runs"), plans.length ? table([
    { label: "plan", value: (p) => h("a", { href: `#/plans/${p.id}` }, p.id.slice(0, 8)) },
    { label: "created", value: (p) => new Date(p.created_at).toLocaleString() },
    { label: "planner", value: (p) => `${p.planner} / ${p.objective}` },
    { label: "makespan", num: true, value: (p) => seconds(p.metrics.makespan_s) },
    { label: "cost EUR", num: true, value: (p) => fmt(p.metrics.cost_eur) },
    { label: "state", value: (p) => badge(p.state) },
    { label: "run", value: (p) => (p.run_id ? h("a", { href: `#/runs/${p.run_id}` }, p.run_id.slice(0, 10)) : "–") },
  ], [...plans].reverse()) : h("p", { class: "muted" }, "No plan yet: submit a workflow and preview a plan."));
  put(main, h("h1", {}, `Plans of ${project}`), box);
  draw(await api(`/projects/${project}/plans`, { signal }));
  every(async () => {
    try { draw(await api(`/projects/${project}/plans`, { signal })); } catch (e) { if (e.name !== "AbortError") flash(e.message); }
  }, 5000);
}

function planPanel(plan, title) {
  const cat = colours(plan.assignments.map((a) => a.category || "step"));
  return {
    title,
    bars: plan.assignments.map((a) => ({
      label: a.step, site: a.site, start: a.start_s, end: a.end_s, color: cat[a.category || "step"],
      title: `${a.step} (${a.category || "step"}) on ${a.site}: ${seconds(a.start_s)} to ${seconds(a.end_s)}`,
    })),
    categories: cat,
  };
}

function sitesOf(plan, extra = []) {
  return [...new Set([...plan.assignments.map((a) => a.site), ...(plan.metrics.transfers || []).flatMap((t) => [t.src, t.dst]), ...extra])].sort();
}

async function planView(main, { args: [planId], signal }) {
  const plan = await api(`/plans/${planId}`, { signal });
  const m = plan.metrics;
  const panel = planPanel(plan, `planned: ${plan.planner}, objective ${plan.objective}`);
  const chart = h("div", { class: "chart", id: "plan-gantt" });
  const transfers = (m.transfers || []).map((t) => ({ ...t, start: t.start_s, end: t.end_s, label: `${t.item} (${bytes(t.bytes)})` }));
  const budget = h("input", { id: "budget", type: "number", min: 0, step: "any", value: Math.max(0.01, +(m.cost_eur * 1.2).toPrecision(2)) });
  const synthetic = h("input", { type: "checkbox", id: "synthetic" });
  const onError = h("select", { id: "on-error" }, ["cancel-job", "pause-task", "pause-job", "continue"].map((o) => h("option", { value: o }, o)));
  const act = async (fn) => {
    try { await fn(); } catch (err) { flash(err.message); }
  };
  const approve = h("form", {
    class: "inline", id: "approve",
    onsubmit: (ev) => {
      ev.preventDefault();
      act(async () => {
        await api(`/plans/${plan.id}/approve`, { method: "POST", body: { budget_eur: Number(budget.value) } });
        flash(`approved within ${budget.value} EUR`, "info");
        route();
      });
    },
  }, h("label", {}, "budget (EUR)", budget), h("button", { type: "submit", disabled: !["preview", "approved"].includes(plan.state) }, "Approve"));
  const run = h("form", {
    class: "inline", id: "run",
    onsubmit: (ev) => {
      ev.preventDefault();
      act(async () => {
        const started = await api(`/plans/${plan.id}/run`, { method: "POST", body: { synthetic: synthetic.checked, on_error: onError.value } });
        location.hash = `#/runs/${started.run_id}`;
      });
    },
  },
  h("label", {}, "on error", onError),
  h("label", { class: "row" }, h("span", {}, "synthetic steps (no commands)"), synthetic),
  h("button", { type: "submit", disabled: plan.state !== "approved" }, "Run"));
  put(main, 
    h("h1", {}, `Plan ${plan.id.slice(0, 8)} `, badge(plan.state)),
    h("div", { class: "metrics", id: "plan-metrics" },
      metric("makespan", seconds(m.makespan_s)), metric("cost", `${fmt(m.cost_eur)} EUR`),
      metric("energy", `${fmt(m.energy_kwh)} kWh`), metric("carbon", `${fmt(m.carbon_kg)} kgCO2e`),
      metric("data moved", bytes(m.bytes_moved)), metric("solver", `${m.status}${m.gap !== null && m.gap !== undefined ? `, gap ${fmt(100 * m.gap, 2)} %` : ""}`),
      metric("planning time", seconds(m.wall_s))),
    h("div", { class: "card" }, h("h2", {}, "Gantt chart"),
      h("p", { class: "muted small" }, "Steps by site (coloured by category); arrows are data transfers between sites."),
      legend(Object.entries(panel.categories)), chart),
    h("div", { class: "grid two" },
      h("div", { class: "card", id: "explanations" }, h("h2", {}, "Why this placement"),
        (m.notes || []).length ? h("ul", { class: "why" }, m.notes.map((n) => h("li", {}, n))) : null,
        h("ul", { class: "why" }, [...plan.assignments].sort((a, z) => a.start_s - z.start_s).map((a) => h("li", {}, h("strong", {}, a.step), ` → ${a.site}: ${a.why || "no explanation given"}`)))),
      h("div", { class: "card" }, h("h2", {}, "Approve and run"),
        h("p", { class: "muted" }, "Approval checks the plan's cost against your budget (refused when it costs more)."),
        approve, h("hr"), run,
        plan.run_id ? h("p", {}, "Run: ", h("a", { href: `#/runs/${plan.run_id}`, id: "run-link" }, plan.run_id)) : null)));
  ganttChart(chart, { panels: [panel], sites: sitesOf(plan), transfers });
}

async function findPlanOfRun(project, runId, signal) {
  const plans = await api(`/projects/${project}/plans?limit=1000`, { signal });
  return plans.find((p) => p.run_id === runId) || null;
}

async function runView(main, { args: [runId], signal, every }) {
  let status = await api(`/runs/${runId}`, { signal });
  const plan = await findPlanOfRun(status.project, runId, signal).catch(() => null);
  const head = h("div");
  const steps = h("div");
  const chart = h("div", { class: "chart", id: "run-gantt" });
  const logTitle = h("h3", {}, "Step logs: choose a step");
  const logOut = h("pre", { class: "log", id: "log" }, "");
  const logErr = h("pre", { class: "log", id: "log-stderr", hidden: true }, "");
  let following = null;
  let selected = null;
  const showLogs = async (step) => {
    if (following) following.abort();
    following = new AbortController();
    selected = step;
    logTitle.textContent = `Logs of ${step}`;
    logOut.textContent = "";
    logErr.hidden = true;
    const rec = status.steps.find((s) => s.step === step);
    try {
      if (rec && ["running", "staging", "ready", "pending"].includes(rec.state)) {
        await follow(`/runs/${runId}/steps/${encodeURIComponent(step)}/logs?follow=true&stream=stdout`, (t) => {
          logOut.textContent += t;
          logOut.scrollTop = logOut.scrollHeight;
        }, following.signal);
      }
      const logs = await api(`/runs/${runId}/steps/${encodeURIComponent(step)}/logs`, { signal: following.signal });
      logOut.textContent = logs.stdout || "(no output on stdout)";
      if (logs.stderr) {
        logErr.hidden = false;
        logErr.textContent = `stderr:\n${logs.stderr}`;
      }
    } catch (err) {
      if (err.name !== "AbortError") flash(err.message);
    }
    draw();
  };
  const control = (action) => async () => {
    try {
      await api(`/runs/${runId}/${action}`, { method: "POST" });
      status = await api(`/runs/${runId}`, { signal });
      draw();
    } catch (err) { flash(err.message); }
  };
  const planned = Object.fromEntries((plan ? plan.assignments : []).map((a) => [a.step, a.start_s]));
  const orderedSteps = () => [...status.steps].sort((a, z) => ((planned[a.step] ?? 1e18) - (planned[z.step] ?? 1e18))
    || (a.started_at ?? 1e18) - (z.started_at ?? 1e18) || a.step.localeCompare(z.step));
  const draw = () => {
    const p = status.progress;
    const finished = ["done", "failed", "cancelled"].includes(status.state);
    put(head, 
      h("h1", {}, `Run ${runId} `, h("span", { id: "run-state" }, badge(status.state))),
      h("p", { class: "muted" }, `workflow ${status.workflow} in project ${status.project}; launch: ${status.launch.kind}`,
        plan ? [" — plan ", h("a", { href: `#/plans/${plan.id}` }, plan.id.slice(0, 8))] : null),
      h("div", { class: "row" },
        h("div", { class: "progress", title: `${p.done} of ${p.total} steps done` }, h("div", { style: null, id: "progress-bar" })),
        h("span", { id: "progress-text" }, `${p.done} / ${p.total} steps done`),
        h("button", { class: "secondary", onclick: control("pause"), disabled: finished }, "Pause"),
        h("button", { class: "secondary", onclick: control("resume"), disabled: finished }, "Resume"),
        h("button", { class: "secondary", onclick: control("restart"), disabled: status.state === "done" }, "Restart failed"),
        h("button", { class: "danger", onclick: control("kill"), disabled: finished }, "Kill")));
    $("#progress-bar", head).style.width = `${p.total ? (100 * p.done) / p.total : 0}%`;
    put(steps, table([
      { label: "step", value: (s) => s.step },
      { label: "state", value: (s) => badge(s.state) },
      { label: "site", value: (s) => s.site || "–" },
      { label: "attempts", num: true, value: (s) => s.attempts },
      { label: "exit", num: true, value: (s) => (s.exit_code ?? "–") },
      { label: "started", value: (s) => when(s.started_at) },
      { label: "ended", value: (s) => when(s.ended_at) },
      { label: "message", wrap: true, value: (s) => s.message || "" },
    ], orderedSteps(), { rowAttrs: (s) => ({ class: `clickable${s.step === selected ? " selected" : ""}`, "data-step": s.step, onclick: () => showLogs(s.step) }) }));
    drawActual();
  };
  const drawActual = () => {
    const t0 = Math.min(...status.steps.map((s) => s.started_at).filter(Boolean), status.created_at);
    const now = Date.now() / 1000;
    const cat = plan ? colours(plan.assignments.map((a) => a.category || "step")) : { step: PALETTE[0] };
    const catOf = Object.fromEntries((plan ? plan.assignments : []).map((a) => [a.step, a.category || "step"]));
    const actual = status.steps.filter((s) => s.started_at).map((s) => ({
      label: s.step, site: s.site, start: s.started_at - t0, end: (s.ended_at || now) - t0,
      color: cat[catOf[s.step] || "step"] || PALETTE[0], hatch: s.attempts > 1 || s.state === "failed",
      title: `${s.step} on ${s.site}: ${s.state}, attempt ${s.attempts}`,
    }));
    const panels = [];
    if (plan) panels.push(planPanel(plan, `planned (${plan.planner}): seconds of plan time`));
    panels.push({ title: "actual: seconds of wall time since the run started (hatched: retried or failed)", bars: actual });
    const faults = status.events.filter((e) => /fault|down|replan/i.test(e.kind));
    const marks = faults.slice(0, 1).map((e) => ({ panel: panels.length - 1, t: e.at - t0, label: `${e.kind}${e.step ? ` (${e.step})` : ""}` }));
    const sites = [...new Set([...(plan ? sitesOf(plan) : []), ...actual.map((b) => b.site)])].filter(Boolean).sort();
    const transfers = plan ? (plan.metrics.transfers || []).map((t) => ({ ...t, panel: 0, start: t.start_s, end: t.end_s, label: t.item })) : [];
    ganttChart(chart, { panels, sites, transfers, marks });
  };
  put(main, head,
    h("div", { class: "card" }, h("h2", {}, "Planned and actual"), chart),
    h("div", { class: "grid two" },
      h("div", { class: "card", id: "steps" }, h("h2", {}, "Steps"), steps),
      h("div", { class: "card" }, logTitle, logOut, logErr)));
  draw();
  every(async () => {
    if (["done", "failed", "cancelled"].includes(status.state)) return;
    try {
      status = await api(`/runs/${runId}`, { signal });
      draw();
    } catch (e) { if (e.name !== "AbortError") flash(e.message); }
  }, 1000);
  const stop = () => following && following.abort();
  signal.addEventListener("abort", stop);
}

// -- simulations: launch a what-if scenario, watch it, compare planners

const EXAMPLE_SCENARIO = `# A what-if: the power price doubles at gpu-centre for half a day,
# and national-hpc is down for six hours, on the embedded demo federation.
name: dashboard-what-if
federation: demo
start: 2023-01-09T00:00:00Z
horizon: 1 d
step: 1 h
routing: cheapest
workload:
  synthetic: {jobs: 3000, arrival_rate_per_h: 150, max_cores: 256, mean_runtime: 2 h}
series:
  default:
    price: {daily: {mean: 0.14, amplitude: 0.06, peak_hour: 19}}
    carbon: {daily: {mean: 60, amplitude: 25, peak_hour: 18}}
events:
  - {at: 6 h, kind: price_spike, site: gpu-centre, factor: 2, duration: 12 h}
  - {at: 8 h, kind: outage, site: national-hpc, duration: 6 h}
planners: [heft, greedy]
seeds: [1]
`;

async function simulationsView(main, { signal, every }) {
  const project = currentProject();
  if (!project) {
    put(main, h("p", {}, "You may read no project of this federation."));
    return;
  }
  const text = h("textarea", { rows: 18, id: "scenario" }, EXAMPLE_SCENARIO);
  const form = h("form", {
    id: "launch-simulation",
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const sim = await api(`/projects/${project}/simulations`, { method: "POST", body: { scenario: window.jsyaml.load(text.value) } });
        location.hash = `#/simulations/${sim.id}`;
      } catch (err) { flash(err.message); }
    },
  }, text, h("p", {}, h("button", { type: "submit" }, "Launch")));
  const box = h("div", { id: "simulations" });
  const draw = (sims) => put(box, sims.length ? table([
    { label: "simulation", value: (s) => h("a", { href: `#/simulations/${s.id}` }, s.name) },
    { label: "created", value: (s) => new Date(s.created_at).toLocaleString() },
    { label: "state", value: (s) => badge(s.state) },
    { label: "progress", num: true, value: (s) => `${Math.round(100 * s.progress)} %` },
  ], [...sims].reverse()) : h("p", { class: "muted" }, "none yet"));
  put(main, h("h1", {}, `Simulations of ${project}`),
    h("div", { class: "grid two" },
      h("div", { class: "card" }, h("h2", {}, "Launch a what-if scenario (YAML, as for continuum simulate)"), form),
      h("div", { class: "card" }, h("h2", {}, "Launched"), box)));
  draw(await api(`/projects/${project}/simulations`, { signal }));
  every(async () => {
    try { draw(await api(`/projects/${project}/simulations`, { signal })); } catch (e) { if (e.name !== "AbortError") flash(e.message); }
  }, 3000);
}

async function simulationView(main, { args: [simId], signal, every }) {
  const body = h("div");
  const draw = (sim) => {
    const rows = sim.results || [];
    const labels = rows.map((r) => `${r.planner} s${r.seed}`);
    const figures = [
      ["mean_wait_s", "mean wait (s)"], ["p95_wait_s", "95th percentile wait (s)"],
      ["cost_eur", "cost (EUR)"], ["energy_kwh", "energy (kWh)"], ["carbon_kg", "carbon (kgCO2e)"],
      ["utilisation", "utilisation"], ["workflow_mean_makespan_s", "workflow makespan (s)"],
      ["deadline_misses", "deadline misses"],
    ].filter(([k]) => rows.some((r) => r[k] !== null && r[k] !== undefined));
    put(body, 
      h("h1", {}, `Simulation ${sim.name} `, badge(sim.state)),
      h("div", { class: "row" }, h("div", { class: "progress" }, h("div", { id: "sim-progress" })), `${Math.round(100 * sim.progress)} %`),
      sim.error ? h("pre", { class: "log" }, sim.error) : null,
      rows.length ? h("div", { class: "card" }, h("h2", {}, "Results by planner and seed"), table([
        { label: "run", value: (_, i) => labels[i] },
        { label: "jobs done", num: true, value: (r) => `${r.jobs_done} / ${r.jobs}` },
        { label: "mean wait", num: true, value: (r) => seconds(r.mean_wait_s) },
        { label: "cost EUR", num: true, value: (r) => fmt(r.cost_eur) },
        { label: "energy kWh", num: true, value: (r) => fmt(r.energy_kwh) },
        { label: "carbon kgCO2e", num: true, value: (r) => fmt(r.carbon_kg) },
        { label: "utilisation", num: true, value: (r) => fmt(r.utilisation, 2) },
        { label: "deadline misses", num: true, value: (r) => r.deadline_misses ?? "–" },
      ], rows)) : null,
      rows.length ? h("div", { class: "grid three", id: "sim-charts" }, figures.map(([key, label]) => {
        const c = h("div", { class: "chart" });
        barChart(c, { categories: labels, series: [{ label, color: PALETTE[2], values: rows.map((r) => r[key]) }], yLabel: label, width: 330, height: 200 });
        return h("div", { class: "card" }, h("h3", {}, label), c);
      })) : null);
    $("#sim-progress", body).style.width = `${100 * sim.progress}%`;
  };
  put(main, body);
  let sim = await api(`/simulations/${simId}`, { signal });
  draw(sim);
  every(async () => {
    if (["done", "failed"].includes(sim.state)) return;
    try { sim = await api(`/simulations/${simId}`, { signal }); draw(sim); } catch (e) { if (e.name !== "AbortError") flash(e.message); }
  }, 1500);
}

// ---------------------------------------------------------------- start

async function start() {
  session.config = await loadConfig();
  whenUnauthenticated(() => {
    session.me = null;
    flash("your session ended: log in again");
    route();
  });
  $("#logout").addEventListener("click", () => {
    forget();
    session.me = null;
    location.hash = "#/";
    route();
  });
  $("#project").addEventListener("change", (ev) => {
    session.project = ev.target.value;
    sessionStorage.setItem("continuum.project", session.project);
    route();
  });
  if (session.config.mode === "local") {
    const fromUrl = tokenFromFragment();
    if (fromUrl) setToken(fromUrl);
  } else {
    try {
      await finishKeycloakLogin(session.config.keycloak);
    } catch (err) {
      flash(err.message);
    }
  }
  window.addEventListener("hashchange", route);
  await route();
}

start().catch((err) => {
  $("#view").replaceChildren(h("p", {}, `The dashboard could not start: ${err.message}`));
});
