// Loaded bundles: name, model family, version, schema hash, load time, offline metrics, who serves them.
import { api, el, errorText, fmt } from "./common.js";

export async function renderModels(page) {
  document.title = "Models · apprank";
  const [models, experiments] = await Promise.all([api("/models"), api("/experiments")]);
  if (!models.ok) {
    page.replaceChildren(el("div", { class: "banner error", text: errorText(models.body) }));
    return;
  }
  const servedBy = {};
  for (const experiment of experiments.ok ? experiments.body : []) {
    for (const arm of experiment.arms) (servedBy[arm.model] ||= []).push(`${experiment.name}/${arm.name} (${arm.weight} %)`);
  }
  const rows = models.body.map((model) =>
    el(
      "tr",
      { "data-model": model.name },
      el("td", { text: model.name }),
      el("td", { text: model.model }),
      el("td", { class: "version", text: model.version }),
      el("td", { class: "muted", text: model.schema_hash.slice(0, 12) }),
      el("td", { text: fmt.time(model.loaded_at) }),
      el("td", {}, metricsTable(model.metrics)),
      el("td", {}, (servedBy[model.name] || ["–"]).map((text) => el("div", { text }))),
    ),
  );
  page.replaceChildren(
    el("h1", { text: "Models" }),
    el(
      "section",
      { class: "card" },
      el(
        "table",
        { id: "models" },
        el("thead", {}, el("tr", {}, ["name", "model", "version", "schema", "loaded", "offline metrics", "served by"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows),
      ),
    ),
  );
}

function metricsTable(metrics) {
  const splits = Object.entries(metrics || {});
  if (splits.length === 0) return el("span", { class: "muted", text: "none recorded" });
  return el(
    "table",
    { class: "metrics" },
    splits.map(([split, values]) =>
      el("tr", {}, el("th", { text: split }), Object.entries(values).map(([name, value]) => el("td", { class: "num", "data-metric": `${split}.${name}`, text: `${name} ${value.toFixed(4)}` }))),
    ),
  );
}
