// One experiment: its settings, the live report (both kinds of intervals, decisions, SRM, chart, daily
// decisions), the change form and the audit trail.
import { api, el, errorText, fmt } from "./common.js";
import { changeForm } from "./change_form.js";
import { status } from "./experiments.js";
import { analysisNote, armsTable, dailyTable, liftsTable, srmBanner } from "./report_view.js";

export async function renderExperiment(page, name) {
  document.title = `${name} · apprank`;
  const path = `/experiments/${encodeURIComponent(name)}`;
  const [experiment, report, audit] = await Promise.all([api(path), api(`${path}/report`), api(`${path}/audit`)]);
  if (!experiment.ok) {
    page.replaceChildren(el("h1", { text: name }), el("div", { class: "banner error", text: errorText(experiment.body) }));
    return;
  }
  const exp = experiment.body;
  page.replaceChildren(
    el("p", {}, el("a", { href: "/ui", text: "← experiments" })),
    el("h1", { id: "experiment-name", text: exp.name }),
    el("p", {}, status(exp), ` control ${exp.control} · objective ${exp.objective} · coverage ${exp.coverage} % · version ${exp.version} · updated ${fmt.time(exp.updated_at)}`),
    reportSection(path, report),
    el("section", { class: "card" }, el("h2", { text: "Change" }), changeForm(exp, () => renderExperiment(page, name))),
    el("section", { class: "card" }, el("h2", { text: "Audit trail" }), audit.ok ? auditTable(audit.body) : el("p", { class: "banner error", text: errorText(audit.body) })),
  );
}

function reportSection(path, report) {
  if (!report.ok) {
    return el("section", { class: "card", id: "report" }, el("h2", { text: "Report" }), el("p", { class: "muted", text: `No report: ${errorText(report.body)}` }));
  }
  const body = report.body;
  return el(
    "section",
    { class: "card", id: "report", "data-generated-at": body.generated_at },
    el("h2", { text: "Report" }),
    srmBanner(body.srm),
    armsTable(body),
    el("h2", { text: `Lift over ${body.control}` }),
    liftsTable(body.lifts),
    analysisNote(body),
    el("h2", { text: "Daily" }),
    el("img", { class: "chart", id: "chart", alt: "daily lift chart", src: `${path}/report.svg`, width: 900, height: 600 }),
    dailyTable(body),
  );
}

const TRACKED = ["arms", "coverage", "objective", "running", "default_arm", "control", "salt"];

function describe(config) {
  if (!config) return {};
  return {
    arms: config.arms.map((arm) => `${arm.name} ${arm.weight} % (${arm.model})`).join(", "),
    coverage: `${config.coverage} %`,
    objective: config.objective,
    running: config.running ? "running" : "stopped",
    default_arm: config.default_arm,
    control: config.control,
    salt: config.salt,
  };
}

function changes(entry) {
  const before = describe(entry.before);
  const after = describe(entry.after);
  const lines = TRACKED.filter((key) => before[key] !== after[key]).map((key) =>
    before[key] === undefined ? `${key}: ${after[key]}` : after[key] === undefined ? `${key}: ${before[key]} → (deleted)` : `${key}: ${before[key]} → ${after[key]}`,
  );
  return el("pre", { class: "diff", text: lines.join("\n") || "no change" });
}

function auditTable(entries) {
  if (entries.length === 0) return el("p", { class: "muted", text: "No changes recorded." });
  return el(
    "table",
    { id: "audit" },
    el("thead", {}, el("tr", {}, ["when", "who", "action", "what changed"].map((h) => el("th", { text: h })))),
    el(
      "tbody",
      {},
      [...entries].reverse().map((entry) =>
        el("tr", { "data-audit": entry.id }, el("td", { text: fmt.time(entry.at) }), el("td", { class: "actor", text: entry.actor }), el("td", { text: entry.action }), el("td", {}, changes(entry))),
      ),
    ),
  );
}
