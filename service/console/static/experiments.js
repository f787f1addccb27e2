// The experiments list: status, arms and weights, coverage, users per arm, SRM flag.
import { api, el, errorText, fmt } from "./common.js";

export async function renderExperiments(page) {
  document.title = "Experiments · apprank";
  const answer = await api("/ui/api/experiments");
  if (!answer.ok) {
    page.replaceChildren(el("div", { class: "banner error", text: errorText(answer.body) }));
    return;
  }
  const rows = answer.body.map(({ experiment, users, srm_flagged }) =>
    el(
      "tr",
      { "data-experiment": experiment.name },
      el("td", {}, el("a", { href: `/ui/experiments/${encodeURIComponent(experiment.name)}`, text: experiment.name })),
      el("td", {}, status(experiment)),
      el("td", {}, experiment.arms.map((arm) => el("div", { text: `${arm.name}${arm.name === experiment.control ? " (control)" : ""}: ${arm.weight} % · ${arm.model}` }))),
      el("td", { class: "num", text: `${experiment.coverage} %` }),
      el("td", {}, users === null ? "–" : Object.entries(users).map(([arm, n]) => el("div", { text: `${arm}: ${fmt.count(n)}` }))),
      el("td", {}, srm_flagged === null ? "–" : srm_flagged ? el("span", { class: "badge srm", text: "SRM" }) : el("span", { class: "muted", text: "ok" })),
      el("td", { text: experiment.objective }),
    ),
  );
  page.replaceChildren(
    el("h1", { text: "Experiments" }),
    el(
      "section",
      { class: "card" },
      rows.length === 0
        ? el("p", { class: "muted", text: "No experiments yet: PUT /experiments/{name} creates one." })
        : el(
            "table",
            { id: "experiments" },
            el("thead", {}, el("tr", {}, ["name", "status", "arms (weight · model)", "coverage", "users per arm", "split", "objective"].map((h) => el("th", { text: h })))),
            el("tbody", {}, rows),
          ),
    ),
  );
}

export function status(experiment) {
  return experiment.running
    ? el("span", { class: "badge running", text: "running" })
    : el("span", { class: "badge stopped", text: `stopped (serving ${experiment.default_arm})` });
}
